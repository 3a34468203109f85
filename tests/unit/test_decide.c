/* The verdict of a call (core/verdict.h), one row per behaviour: what the
 * shim and the BPF programs must both answer.  The first table asks the
 * core directly; the second asks through pf_decide with a real policy,
 * so that the facts the shim gathers (rules, other apps' ranges) are
 * judged as SPEC says. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/verdict.h"
#include "core/decide.h"

struct row {
	const char *name;
	struct pf_core_question q;
	unsigned verdict, event, error;
	unsigned tcp_client, shares_port, exhausted;
};

#define V4 .family = PF_CORE_AF_INET
#define V6 .family = PF_CORE_AF_INET6
#define TCP .udp = 0
#define UDP .udp = 1
#define APP .policy = PF_CORE_POLICY_APP, .protocol_managed = 1
#define SHIM .defers_port = 1
#define BPF .late_udp_send = 1
#define CONNECT .call = PF_CORE_CALL_CONNECT
#define BIND0 .call = PF_CORE_CALL_BIND_ANY
#define BINDP .call = PF_CORE_CALL_BIND_PORT
#define SEND .call = PF_CORE_CALL_SEND
#define LISTEN .call = PF_CORE_CALL_LISTEN
#define NAME .call = PF_CORE_CALL_NAME

#define PASS_ PF_CORE_PASS, PF_CORE_EVENT_ASSIGN, 0, 0, 0, 0
#define CALL_ PF_CORE_CALL, PF_CORE_EVENT_ASSIGN, 0, 0, 0, 0
#define BIND_ PF_CORE_CALL, PF_CORE_EVENT_BIND, 0, 0, 0, 0
#define DEFER_ PF_CORE_DEFER, PF_CORE_EVENT_ASSIGN, 0, 0, 0, 0
#define DENY_(e) PF_CORE_REFUSE, PF_CORE_EVENT_DENY, e, 0, 0, 0
#define ERROR_EPERM PF_CORE_REFUSE, PF_CORE_EVENT_ERROR, EPERM, 0, 0, 0
#define AUDIT_(e) PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, e, 0, 0, 0
/* A port from the range: the TCP-client rule and the exhaustion errno. */
#define TCP_CLIENT(kind, ev) kind, ev, 0, 1, 1, EADDRNOTAVAIL
#define ASSIGN_TCP_CLIENT TCP_CLIENT(PF_CORE_ASSIGN, PF_CORE_EVENT_ASSIGN)
#define ASSIGN_UDP PF_CORE_ASSIGN, PF_CORE_EVENT_ASSIGN, 0, 0, 0, EAGAIN
#define ASSIGN_BIND PF_CORE_ASSIGN, PF_CORE_EVENT_ASSIGN, 0, 0, 0, EADDRINUSE

static const struct row rows[] = {
	/* connect */
	{"tcp4 connect, fresh socket", {V4, TCP, APP, SHIM, CONNECT}, ASSIGN_TCP_CLIENT},
	{"tcp6 connect, fresh socket", {V6, TCP, APP, SHIM, CONNECT}, ASSIGN_TCP_CLIENT},
	{"tcp4 connect from bpf", {V4, TCP, APP, BPF, CONNECT}, ASSIGN_TCP_CLIENT},
	{"udp4 connect, fresh socket", {V4, UDP, APP, SHIM, CONNECT}, ASSIGN_UDP},
	{"udp6 connect, fresh socket", {V6, UDP, APP, BPF, CONNECT}, ASSIGN_UDP},
	{"tcp4 connect, socket already bound", {V4, TCP, APP, CONNECT, .has_port = 1}, CALL_},
	{"udp6 connect, socket already bound", {V6, UDP, APP, CONNECT, .has_port = 1}, CALL_},
	{"tcp4 connect, denied destination", {V4, TCP, APP, CONNECT, .dest_denied = 1}, DENY_(EPERM)},
	{"udp6 connect, denied destination", {V6, UDP, APP, CONNECT, .dest_denied = 1}, DENY_(EPERM)},
	{"tcp6 connect, denied, bound but idle", {V6, TCP, APP, CONNECT, .dest_denied = 1, .has_port = 1},
	 DENY_(EPERM)},
	{"tcp4 connect, denied, connected socket: the kernel's EISCONN",
	 {V4, TCP, APP, CONNECT, .dest_denied = 1, .has_port = 1, .tcp_busy = 1}, CALL_},
	{"tcp6 connect, denied, connected socket", {V6, TCP, APP, CONNECT, .dest_denied = 1,
	 .has_port = 1, .tcp_busy = 1}, CALL_},
	{"udp4 connect, denied, connected socket: UDP may reconnect",
	 {V4, UDP, APP, CONNECT, .dest_denied = 1, .has_port = 1, .tcp_busy = 1}, DENY_(EPERM)},
	{"tcp4 connect, fresh, audit mode", {V4, TCP, APP, CONNECT, .audit = 1},
	 TCP_CLIENT(PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT)},
	{"udp6 connect, fresh, audit mode", {V6, UDP, APP, CONNECT, .audit = 1},
	 PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, 0, 0, 0, EAGAIN},
	{"tcp4 connect, denied, audit mode", {V4, TCP, APP, CONNECT, .audit = 1, .dest_denied = 1},
	 AUDIT_(EPERM)},
	{"tcp6 connect, denied, connected, audit mode",
	 {V6, TCP, APP, CONNECT, .audit = 1, .dest_denied = 1, .has_port = 1, .tcp_busy = 1},
	 AUDIT_(EPERM)},
	{"tcp4 connect, bound, audit mode", {V4, TCP, APP, CONNECT, .audit = 1, .has_port = 1}, CALL_},
	{"tcp4 connect, no app", {V4, TCP, .policy = PF_CORE_POLICY_NONE, CONNECT}, PASS_},
	{"udp4 connect, app manages tcp only", {V4, UDP, .policy = PF_CORE_POLICY_APP, CONNECT}, PASS_},
	{"tcp4 connect, policy unusable", {V4, TCP, .policy = PF_CORE_POLICY_UNUSABLE, CONNECT},
	 ERROR_EPERM},
	{"udp6 connect, policy unusable, bound", {V6, UDP, .policy = PF_CORE_POLICY_UNUSABLE, CONNECT,
	 .has_port = 1}, ERROR_EPERM},
	{"tcp4 connect, policy unusable, connected socket",
	 {V4, TCP, .policy = PF_CORE_POLICY_UNUSABLE, CONNECT, .has_port = 1, .tcp_busy = 1}, CALL_},
	/* bind(addr, 0) */
	{"udp4 bind(0)", {V4, UDP, APP, SHIM, BIND0}, ASSIGN_BIND},
	{"udp6 bind(0) from bpf", {V6, UDP, APP, BPF, BIND0}, ASSIGN_BIND},
	{"tcp4 bind(0) in the shim: the port comes at the next call", {V4, TCP, APP, SHIM, BIND0}, DEFER_},
	{"tcp6 bind(0) in the shim, audit mode", {V6, TCP, APP, SHIM, BIND0, .audit = 1}, DEFER_},
	{"tcp4 bind(0) from bpf", {V4, TCP, APP, BPF, BIND0}, ASSIGN_BIND},
	{"tcp6 bind(0) from bpf, audit mode", {V6, TCP, APP, BPF, BIND0, .audit = 1},
	 PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, 0, 0, 0, EADDRINUSE},
	{"tcp4 bind(0) on a bound socket: the kernel's EINVAL", {V4, TCP, APP, BIND0, .has_port = 1},
	 PASS_},
	{"udp4 bind(0), policy unusable", {V4, UDP, .policy = PF_CORE_POLICY_UNUSABLE, BIND0},
	 ERROR_EPERM},
	{"tcp6 bind(0), policy unusable", {V6, TCP, .policy = PF_CORE_POLICY_UNUSABLE, SHIM, BIND0},
	 ERROR_EPERM},
	/* bind(addr, port) */
	{"tcp4 bind inside the range, explicit_bind deny", {V4, TCP, APP, BINDP,
	 .deny_explicit_bind = 1, .port_place = PF_CORE_PORT_OWN}, BIND_},
	{"tcp4 bind outside, explicit_bind allow", {V4, TCP, APP, BINDP,
	 .port_place = PF_CORE_PORT_OUTSIDE}, BIND_},
	{"udp6 bind outside, explicit_bind allow", {V6, UDP, APP, BINDP,
	 .port_place = PF_CORE_PORT_OUTSIDE}, BIND_},
	{"tcp4 bind outside, explicit_bind deny, port in bind_allow", {V4, TCP, APP, BINDP,
	 .deny_explicit_bind = 1, .bind_allowed = 1, .port_place = PF_CORE_PORT_OUTSIDE}, BIND_},
	{"udp4 bind in another app's range, bind_allow lists it: still refused", {V4, UDP, APP, BINDP,
	 .deny_explicit_bind = 1, .bind_allowed = 1, .port_place = PF_CORE_PORT_OTHER_APP}, DENY_(EACCES)},
	{"tcp4 bind outside, explicit_bind deny", {V4, TCP, APP, BINDP, .deny_explicit_bind = 1,
	 .port_place = PF_CORE_PORT_OUTSIDE}, DENY_(EACCES)},
	{"tcp6 bind outside, explicit_bind deny, audit", {V6, TCP, APP, BINDP, .audit = 1,
	 .deny_explicit_bind = 1, .port_place = PF_CORE_PORT_OUTSIDE}, AUDIT_(EACCES)},
	{"tcp4 bind in another app's range, explicit_bind allow", {V4, TCP, APP, BINDP,
	 .port_place = PF_CORE_PORT_OTHER_APP}, DENY_(EACCES)},
	{"udp6 bind in another app's range, explicit_bind allow", {V6, UDP, APP, BINDP,
	 .port_place = PF_CORE_PORT_OTHER_APP}, DENY_(EACCES)},
	{"udp4 bind in another app's range, audit", {V4, UDP, APP, BINDP, .audit = 1,
	 .port_place = PF_CORE_PORT_OTHER_APP}, AUDIT_(EACCES)},
	{"tcp4 bind in another app's range, protocol not the app's", {V4, TCP,
	 .policy = PF_CORE_POLICY_APP, BINDP, .port_place = PF_CORE_PORT_OTHER_APP}, PASS_},
	{"tcp4 bind outside, no app", {V4, TCP, .policy = PF_CORE_POLICY_NONE, BINDP,
	 .port_place = PF_CORE_PORT_OUTSIDE}, PASS_},
	{"udp4 bind a port, policy unusable", {V4, UDP, .policy = PF_CORE_POLICY_UNUSABLE, BINDP}, PASS_},
	/* sendto, sendmsg, sendmmsg */
	{"udp4 send, unbound socket", {V4, UDP, APP, SHIM, SEND}, ASSIGN_UDP},
	{"udp6 send, bound socket", {V6, UDP, APP, SEND, .has_port = 1}, CALL_},
	{"udp4 send, denied destination", {V4, UDP, APP, SEND, .dest_denied = 1}, DENY_(EPERM)},
	{"udp6 send, denied destination, audit", {V6, UDP, APP, SEND, .audit = 1, .dest_denied = 1},
	 AUDIT_(EPERM)},
	{"tcp4 send with an address, no fast open: the kernel's", {V4, TCP, APP, SEND, .dest_denied = 1},
	 PASS_},
	{"tcp4 send, policy unusable, no fast open", {V4, TCP, .policy = PF_CORE_POLICY_UNUSABLE, SEND},
	 PASS_},
	{"tcp6 fast open send, fresh socket", {V6, TCP, APP, SEND, .fastopen = 1}, ASSIGN_TCP_CLIENT},
	{"tcp4 fast open send, connected socket", {V4, TCP, APP, SEND, .fastopen = 1, .has_port = 1},
	 PASS_},
	{"udp4 unbound send from bpf, udp_unbound deny", {V4, UDP, APP, BPF, SEND}, DENY_(EPERM)},
	{"udp6 unbound send from bpf, udp_unbound audit", {V6, UDP, APP, BPF, SEND,
	 .udp_unbound_audit = 1}, AUDIT_(EPERM)},
	{"udp4 unbound send from bpf, already recorded", {V4, UDP, APP, BPF, SEND,
	 .udp_unbound_audit = 1, .unbound_recorded = 1}, CALL_},
	{"udp4 unbound send from bpf, audit mode", {V4, UDP, APP, BPF, SEND, .audit = 1}, AUDIT_(EPERM)},
	{"udp6 send from bpf, bound socket", {V6, UDP, APP, BPF, SEND, .has_port = 1}, CALL_},
	{"udp4 unbound send from bpf, denied destination", {V4, UDP, APP, BPF, SEND,
	 .udp_unbound_audit = 1, .dest_denied = 1}, DENY_(EPERM)},
	/* listen, and the shim's early name */
	{"tcp4 listen, unbound socket", {V4, TCP, APP, LISTEN}, ASSIGN_BIND},
	{"tcp6 listen, bound socket", {V6, TCP, APP, LISTEN, .has_port = 1}, PASS_},
	{"udp4 listen: the kernel's", {V4, UDP, APP, LISTEN}, PASS_},
	{"tcp4 listen, policy unusable", {V4, TCP, .policy = PF_CORE_POLICY_UNUSABLE, LISTEN}, ERROR_EPERM},
	{"tcp6 getsockname of a deferred port", {V6, TCP, APP, NAME}, PF_CORE_ASSIGN,
	 PF_CORE_EVENT_ASSIGN, 0, 0, 1, EADDRINUSE},
};

#define ROW_COUNT (sizeof(rows) / sizeof(rows[0]))

/* Criterion runs each test in a fresh worker: its parameters are the
 * rows' indices, never pointers into this process. */
ParameterizedTestParameters(decide, core_rows)
{
	static size_t index[ROW_COUNT];
	for (size_t i = 0; i < ROW_COUNT; i++)
		index[i] = i;
	return cr_make_param_array(size_t, index, ROW_COUNT);
}

ParameterizedTest(size_t *i, decide, core_rows)
{
	const struct row *r = &rows[*i];
	struct pf_core_answer a = pf_core_decide(&r->q);

	cr_expect_eq(a.verdict, r->verdict, "%s: verdict %u, expected %u", r->name, a.verdict, r->verdict);
	cr_expect_eq(a.error, r->error, "%s: error %u, expected %u", r->name, a.error, r->error);
	if (a.verdict == PF_CORE_REFUSE || a.verdict == PF_CORE_AUDIT || r->q.call == PF_CORE_CALL_BIND_PORT)
		cr_expect_eq(a.event, r->event, "%s: event %u, expected %u", r->name, a.event, r->event);
	if (a.verdict == PF_CORE_ASSIGN || a.verdict == PF_CORE_AUDIT) {
		cr_expect_eq(a.tcp_client, r->tcp_client, "%s: tcp_client", r->name);
		cr_expect_eq(a.shares_port, r->shares_port, "%s: shares_port", r->name);
		cr_expect_eq(a.exhausted, r->exhausted, "%s: exhaustion errno %u, expected %u", r->name,
			     a.exhausted, r->exhausted);
	}
}

Test(decide, the_table_covers_every_verdict)
{
	unsigned seen[PF_CORE_REFUSE + 1] = {0}, v4 = 0, v6 = 0, udp = 0, tcp = 0;

	for (size_t i = 0; i < ROW_COUNT; i++) {
		seen[rows[i].verdict]++;
		v4 += rows[i].q.family == PF_CORE_AF_INET;
		v6 += rows[i].q.family == PF_CORE_AF_INET6;
		udp += rows[i].q.udp;
		tcp += !rows[i].q.udp;
	}
	cr_expect_geq(ROW_COUNT, 30);
	for (unsigned v = 0; v <= PF_CORE_REFUSE; v++)
		cr_expect_gt(seen[v], 0, "no row answers verdict %u", v);
	cr_expect(v4 && v6 && udp && tcp);
}

Test(decide, exhaustion_errnos_are_the_kernels)
{
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_CONNECT, 0), EADDRNOTAVAIL);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_SEND, 0), EADDRNOTAVAIL);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_CONNECT, 1), EAGAIN);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_SEND, 1), EAGAIN);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_BIND_ANY, 0), EADDRINUSE);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_BIND_ANY, 1), EADDRINUSE);
	cr_expect_eq(pf_core_exhaustion_errno(PF_CORE_CALL_LISTEN, 0), EADDRINUSE);
}

/* ---- through pf_decide, with a real policy ---- */

static const char policy_text[] =
	"version = 1;\n"
	"apps = (\n"
	"  { name = \"web\"; range = [61000, 61099]; deny = [ \"0.0.0.0/0:25\", \"[2001:db8::/32]\" ]; },\n"
	"  { name = \"db\"; range = [62000, 62099]; protocols = [ \"tcp\" ]; explicit_bind = \"deny\";\n"
	"    bind_allow = [ 21, \"5300-5309\" ];\n"
	"    allow = [ \"127.0.0.0/8\" ]; },\n"
	"  { name = \"watch\"; range = [63000, 63099]; mode = \"audit\"; deny = [ \"0.0.0.0/0:25\" ]; }\n"
	");\n";

struct policy_row {
	const char *name;
	const char *app;
	unsigned call;
	bool udp, needs_port;
	const char *dest;	/* "ADDR PORT", IPv4 or IPv6, or NULL */
	uint16_t bind_port;
	unsigned verdict, error;
};

static const struct policy_row policy_rows[] = {
	{"web tcp connect to 127.0.0.1:80", "web", PF_CORE_CALL_CONNECT, 0, 1, "127.0.0.1 80", 0,
	 PF_CORE_ASSIGN, 0},
	{"web tcp connect to a denied port", "web", PF_CORE_CALL_CONNECT, 0, 1, "127.0.0.1 25", 0,
	 PF_CORE_REFUSE, EPERM},
	{"web connect to a v4-mapped denied port, judged as IPv4", "web", PF_CORE_CALL_CONNECT, 0, 1,
	 "::ffff:127.0.0.1 25", 0, PF_CORE_REFUSE, EPERM},
	{"web connect to ::1:25, no v6 rule", "web", PF_CORE_CALL_CONNECT, 0, 1, "::1 25", 0,
	 PF_CORE_ASSIGN, 0},
	{"web udp send into a denied v6 prefix", "web", PF_CORE_CALL_SEND, 1, 1, "2001:db8::1 53", 0,
	 PF_CORE_REFUSE, EPERM},
	{"web binds a port of db's range", "web", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 62005,
	 PF_CORE_REFUSE, EACCES},
	{"web udp binds a port of watch's range", "web", PF_CORE_CALL_BIND_PORT, 1, 0, NULL, 63005,
	 PF_CORE_REFUSE, EACCES},
	{"web binds a port in no range", "web", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 40000, PF_CORE_CALL, 0},
	{"web binds its own port", "web", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 61005, PF_CORE_CALL, 0},
	{"db binds a port in no range, explicit_bind deny", "db", PF_CORE_CALL_BIND_PORT, 0, 0, NULL,
	 40000, PF_CORE_REFUSE, EACCES},
	{"db binds its own port", "db", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 62005, PF_CORE_CALL, 0},
	{"db binds 21, in bind_allow", "db", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 21, PF_CORE_CALL, 0},
	{"db binds 5309, in bind_allow's range", "db", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 5309, PF_CORE_CALL, 0},
	{"db binds 5310, past bind_allow", "db", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 5310, PF_CORE_REFUSE,
	 EACCES},
	{"db udp binds web's port: udp is not db's", "db", PF_CORE_CALL_BIND_PORT, 1, 0, NULL, 61005,
	 PF_CORE_PASS, 0},
	{"db connect outside its allow list", "db", PF_CORE_CALL_CONNECT, 0, 1, "10.0.0.1 80", 0,
	 PF_CORE_REFUSE, EPERM},
	{"db connect to 0.0.0.0, judged as loopback", "db", PF_CORE_CALL_CONNECT, 0, 1, "0.0.0.0 80", 0,
	 PF_CORE_ASSIGN, 0},
	{"watch (audit) connect to a denied port", "watch", PF_CORE_CALL_CONNECT, 0, 1, "127.0.0.1 25", 0,
	 PF_CORE_AUDIT, EPERM},
	{"watch (audit) binds web's port", "watch", PF_CORE_CALL_BIND_PORT, 0, 0, NULL, 61005,
	 PF_CORE_AUDIT, EACCES},
};

static socklen_t parse_dest(const char *text, struct sockaddr_storage *ss)
{
	char addr[64];
	unsigned port;

	memset(ss, 0, sizeof(*ss));
	cr_assert_eq(sscanf(text, "%63s %u", addr, &port), 2);
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return sizeof(*sin);
	}
	cr_assert_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1, "%s", addr);
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)port);
	return sizeof(*sin6);
}

Test(decide, policy_rows)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_assert_eq(pf_policy_load_text("decide.conf", policy_text, &policy, &diags), PF_LOAD_OK, "%s",
		     diags.count ? diags.lines[0] : "");
	for (size_t i = 0; i < sizeof(policy_rows) / sizeof(policy_rows[0]); i++) {
		const struct policy_row *r = &policy_rows[i];
		int app = pf_policy_find_app(&policy, r->app);
		cr_assert_geq(app, 0, "%s", r->app);
		struct sockaddr_storage dest;
		struct pf_question q = {
			.policy_usable = true, .app = &policy.apps[app], .mode = policy.apps[app].mode,
			.udp = r->udp, .needs_port = r->needs_port, .call = r->call,
			.bind_port = r->bind_port, .policy = &policy,
		};
		if (r->dest) {
			q.dest_len = parse_dest(r->dest, &dest);
			q.dest = (struct sockaddr *)&dest;
		}
		struct pf_decision d = pf_decide(&q);
		cr_expect_eq((unsigned)d.verdict, r->verdict, "%s: verdict %u, expected %u", r->name,
			     d.verdict, r->verdict);
		cr_expect_eq((unsigned)d.error, r->error, "%s: error %d, expected %u", r->name, d.error,
			     r->error);
	}
	pf_policy_free(&policy);
	pf_diags_free(&diags);
}

/* The deny record's "rule": the deny rule that matches, or the allow
 * list none matches, with its file and line. */
Test(decide, refusal_names_its_rule)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	struct sockaddr_storage dest;
	char rule[200];

	cr_assert_eq(pf_policy_load_text("decide.conf", policy_text, &policy, &diags), PF_LOAD_OK);
	const struct pf_app *web = &policy.apps[pf_policy_find_app(&policy, "web")];
	const struct pf_app *db = &policy.apps[pf_policy_find_app(&policy, "db")];
	socklen_t len = parse_dest("::ffff:127.0.0.1 25", &dest);
	pf_app_refusal_rule(web, (struct sockaddr *)&dest, len, rule, sizeof(rule));
	cr_expect_str_eq(rule, "deny \"0.0.0.0/0:25\" decide.conf:3");
	len = parse_dest("10.0.0.1 80", &dest);
	pf_app_refusal_rule(db, (struct sockaddr *)&dest, len, rule, sizeof(rule));
	cr_expect_str_eq(rule, "allow (no rule matches) decide.conf:6");
	len = parse_dest("127.0.0.1 80", &dest);
	pf_app_refusal_rule(db, (struct sockaddr *)&dest, len, rule, sizeof(rule));
	cr_expect_str_eq(rule, "");
	cr_expect_eq(db->bind_allow_count, 2);
	pf_policy_free(&policy);
}

/* What a record says why, whichever writes it (shim, BPF records,
 * collector): pf_app_explain picks the bind rule, the destination rule
 * or the error's reason on the record's event and errno. */
Test(decide, explain_picks_rule_or_reason)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	struct sockaddr_storage dest;
	char text[300];

	cr_assert_eq(pf_policy_load_text("decide.conf", policy_text, &policy, &diags), PF_LOAD_OK);
	const struct pf_app *web = &policy.apps[pf_policy_find_app(&policy, "web")];
	const struct pf_app *db = &policy.apps[pf_policy_find_app(&policy, "db")];
	parse_dest("10.0.0.1 25", &dest);
	const struct sockaddr *remote = (const struct sockaddr *)&dest;

	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_DENY, EPERM, 0, remote, text, sizeof(text)),
		     PF_EXPLAINS_RULE);
	cr_expect_str_eq(text, "deny \"0.0.0.0/0:25\" decide.conf:3");
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_AUDIT, EPERM, 0, remote, text, sizeof(text)),
		     PF_EXPLAINS_RULE);
	cr_expect_str_eq(text, "deny \"0.0.0.0/0:25\" decide.conf:3");
	/* An audit record without an error, an assignment: nothing. */
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_AUDIT, 0, 0, remote, text, sizeof(text)),
		     PF_EXPLAINS_NOTHING);
	cr_expect_str_eq(text, "");
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_ASSIGN, 0, 61000, remote, text, sizeof(text)),
		     PF_EXPLAINS_NOTHING);
	/* A bind: another app's range, or explicit_bind = "deny". */
	cr_expect_eq(pf_app_explain(&policy, db, PF_EVENT_DENY, EACCES, 61005, NULL, text, sizeof(text)),
		     PF_EXPLAINS_RULE);
	cr_expect(strstr(text, "range 61000-61099 of app 'web'"), "%s", text);
	cr_expect_eq(pf_app_explain(&policy, db, PF_EVENT_DENY, EACCES, 7000, NULL, text, sizeof(text)),
		     PF_EXPLAINS_RULE);
	cr_expect(strstr(text, "explicit_bind = \"deny\" decide.conf:"), "%s", text);
	/* EACCES with no port (the kernel's, in audit mode): the destination. */
	parse_dest("127.0.0.1 80", &dest);
	cr_expect_eq(pf_app_explain(&policy, db, PF_EVENT_AUDIT, EACCES, 0, remote, text, sizeof(text)),
		     PF_EXPLAINS_NOTHING);
	/* Errors: the exhausted range, else the errno. */
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_ERROR, EADDRNOTAVAIL, 0, NULL, text, sizeof(text)),
		     PF_EXPLAINS_REASON);
	cr_expect_str_eq(text, "no free port in range 61000-61099 of app 'web' (decide.conf:3)");
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_ERROR, EMFILE, 0, NULL, text, sizeof(text)),
		     PF_EXPLAINS_REASON);
	cr_expect_str_eq(text, "cannot give a port of range 61000-61099: EMFILE");
	/* An errno no BPF hook saw: the call failed after its port was given. */
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_ERROR, PF_CORE_ERROR_UNSEEN, 61005, NULL, text,
				    sizeof(text)),
		     PF_EXPLAINS_REASON);
	cr_expect_str_eq(text, "the call failed in the kernel after port 61005 of range 61000-61099 was given to it "
			       "(which errno the program saw, no hook can tell)");
	/* The same for a connect's assignment that failed after the hook. */
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_ASSIGN, PF_CORE_ERROR_UNSEEN, 61006, NULL, text,
				    sizeof(text)),
		     PF_EXPLAINS_REASON);
	cr_expect_str_eq(text, "the call failed in the kernel after port 61006 of range 61000-61099 was given to it "
			       "(which errno the program saw, no hook can tell)");
	/* An explicit bind the kernel refused after the hook. */
	cr_expect_eq(pf_app_explain(&policy, web, PF_EVENT_BIND, PF_CORE_ERROR_UNSEEN, 8080, NULL, text,
				    sizeof(text)),
		     PF_EXPLAINS_REASON);
	cr_expect_str_eq(text, "the kernel refused the bind of port 8080 (which errno the program saw, no hook can tell)");
	pf_policy_free(&policy);
}
