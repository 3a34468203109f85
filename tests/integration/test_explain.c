/* Saying what happened (issue 20): `run` checks the policy before it
 * starts anything (exit 125), tells which app matched (-v), prints a
 * notice on the program's stderr when portfence acts (notify = "stderr"
 * or -v), deny records name their rule and error records their reason,
 * and an explicit bind is recorded (event "bind") and may be allowed by
 * bind_allow.  Real curl, Python and dnsmasq, against real servers in the
 * suite's private network namespace.
 *
 * The sandbox's policy file has version, log and state_dir on lines 1-3:
 * the apps text starts on line 4. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define PYTHON "/usr/bin/python3"

static bool exists(const char *path)
{
	struct stat info;
	return stat(path, &info) == 0;
}

/* The lines of text holding every one of the needles (NULL-terminated). */
static unsigned lines_holding(const char *text, const char *const needles[])
{
	unsigned count = 0;
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		bool all = true;
		for (int i = 0; needles[i] && all; i++) {
			const char *at = memmem(line, len, needles[i], strlen(needles[i]));
			all = at != NULL;
		}
		count += all;
		line = end ? end + 1 : NULL;
	}
	return count;
}

/* portfence run [-v] [--bpf] -c POLICY [-a APP] -- argv... */
static void run_tool(struct run_result *r, const struct sandbox *sb, bool verbose, bool bpf, const char *app,
		     char *const argv[])
{
	char *options[3] = {NULL};
	int n = 0;
	if (verbose)
		options[n++] = "-v";
	if (bpf)
		options[n++] = "--bpf";
	run_under_with(r, options, sb, app, argv);
}

/* python3 -c script PORT under run, against a server of mode on 127.0.0.1. */
static void python_against(struct run_result *r, const struct sandbox *sb, enum server_mode mode, const char *script,
			   bool verbose, bool bpf)
{
	struct server srv;
	char port[16];

	server_start(&srv, "127.0.0.1", mode);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {PYTHON, "-c", (char *)script, port, NULL};
	run_tool(r, sb, verbose, bpf, "t", argv);
	server_stop(&srv);
}

/* The text of field in the first record of event (malloc'd), or NULL. */
static char *record_field(const struct sandbox *sb, const char *event, const char *field)
{
	json_t *records = audit_records(sb->log);
	json_t *record = audit_find(records, event, 0);
	const char *value = record ? json_string_value(json_object_get(record, field)) : NULL;
	char *copy = value ? strdup(value) : NULL;
	json_decref(records);
	return copy;
}

/* ---- Fail early ---- */

static void expect_not_started(bool bpf, const char *apps, const char *app, const char *where)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	char marker[160];

	sandbox_init(&sb, apps);
	snprintf(marker, sizeof(marker), "%s/started", sb.dir);
	char *argv[] = {"/usr/bin/touch", marker, NULL};
	run_tool(r, &sb, false, bpf, app, argv);
	cr_expect_eq(r->status, 125, "status %d, stderr: %s", r->status, r->err);
	cr_expect(!exists(marker), "COMMAND was started with an unusable policy");
	cr_expect(strstr(r->err, where) != NULL, "stderr does not name %s: %s", where, r->err);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain, run_refuses_an_invalid_policy_with_125)
{
	/* A typo'd key on line 4. */
	expect_not_started(false, "apps = ( { name = \"t\"; rnage = [ 63200, 63209 ]; } );", "t",
			   "policy.conf:4");
}

Test(explain, run_refuses_an_unknown_app_with_125)
{
	expect_not_started(false, "apps = ( { name = \"t\"; range = [ 63200, 63209 ]; } );", "nosuchapp",
			   "nosuchapp");
}

Test(explain, run_refuses_an_unknown_portfence_app_with_125)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63200, 63209 ]; } );");
	char *env[] = {"PORTFENCE_APP=nosuchapp", NULL};
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--", "/bin/true", NULL};
	run_program(r, argv, NULL, env);
	cr_expect_eq(r->status, 125, "status %d, stderr: %s", r->status, r->err);
	cr_expect(strstr(r->err, "nosuchapp") != NULL, "stderr: %s", r->err);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain, run_refuses_a_missing_policy_with_125)
{
	struct run_result *r = malloc(sizeof(*r));
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", "/nonexistent.conf", "--", "/bin/true", NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 125, "status %d, stderr: %s", r->status, r->err);
	cr_expect(strstr(r->err, "/nonexistent.conf") != NULL, "stderr: %s", r->err);
	free(r);
}

Test(explain, run_bpf_refuses_an_invalid_policy_with_125)
{
	skip_unless_bpf_machine();
	expect_not_started(true, "apps = ( { name = \"t\"; rnage = [ 63200, 63209 ]; } );", "t", "policy.conf:4");
	expect_not_started(true, "apps = ( { name = \"t\"; range = [ 63200, 63209 ]; } );", "nosuchapp",
			   "nosuchapp");
}

/* on_error = "pass": one warning line, then COMMAND runs unconfined. */
Test(explain, run_with_on_error_pass_warns_once_and_runs)
{
	struct sandbox sb;
	struct server srv;
	struct run_result *r = malloc(sizeof(*r));
	char url[128];

	skip_if_sanitized("curl");
	sandbox_init(&sb, "on_error = \"pass\";\napps = ( { name = \"t\"; rnage = [ 63200, 63209 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv.port);
	char *argv[] = {"curl", "-sS", "-o", "/dev/null", "--max-time", "10", url, NULL};
	run_tool(r, &sb, false, false, "t", argv);
	server_stop(&srv);
	cr_expect_eq(r->status, 0, "curl did not run: %d %s", r->status, r->err);
	cr_expect_eq(atomic_load(&srv.count), 1);
	cr_expect_eq(count_lines_starting(r->err, "portfence:"), 1, "expected one warning line: %s", r->err);
	cr_expect(strstr(r->err, "unconfined") != NULL, "stderr: %s", r->err);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain, run_verbose_says_which_app_matched)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));

	sandbox_init(&sb, "apps = ( { name = \"t\"; match = { exe = [ \"/usr/bin/touch\" ]; }; "
			  "range = [ 63200, 63209 ]; } );");
	char *none[] = {"/bin/true", NULL};
	run_tool(r, &sb, true, false, NULL, none);
	cr_expect_eq(r->status, 0, "%s", r->err);
	const char *no_app[] = {"portfence:", "no app", NULL};
	cr_expect_eq(lines_holding(r->err, no_app), 1, "-v did not say that no app matched: %s", r->err);

	char marker[160];
	snprintf(marker, sizeof(marker), "%s/m", sb.dir);
	char *touch[] = {"/usr/bin/touch", marker, NULL};
	run_tool(r, &sb, true, false, NULL, touch);
	cr_expect_eq(r->status, 0, "%s", r->err);
	const char *app_t[] = {"portfence:", "app 't'", NULL};
	cr_expect_eq(lines_holding(r->err, app_t), 1, "-v did not name app t: %s", r->err);
	free(r);
	sandbox_cleanup(&sb);
}

/* run -v and explain cite the line of the glob that matched (line 8),
 * not the app's opening line. */
Test(explain, match_cited_at_the_glob_that_matched)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	char marker[160], wanted[300];

	sandbox_init(&sb, "apps = ( { name = \"t\";\n  range = [ 63200, 63209 ];\n"
			  "  match = { comm = [ \"nothing\" ];\n    exe = [ \"/nowhere\",\n"
			  "            \"/usr/bin/touch\" ]; }; } );");
	snprintf(marker, sizeof(marker), "%s/m", sb.dir);
	char *touch[] = {"/usr/bin/touch", marker, NULL};
	run_tool(r, &sb, true, false, NULL, touch);
	cr_expect_eq(r->status, 0, "%s", r->err);
	snprintf(wanted, sizeof(wanted), "runs as app 't' (its match; %s:8)", sb.policy);
	cr_expect(strstr(r->err, wanted) != NULL, "want \"%s\": %s", wanted, r->err);

	char *argv[] = {(char *)build_path("portfence"), "explain", "-c", sb.policy, "--", "/usr/bin/touch", NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "%s", r->err);
	snprintf(wanted, sizeof(wanted), "matches the glob \"/usr/bin/touch\" of app t (%s:8)", sb.policy);
	cr_expect(strstr(r->out, wanted) != NULL, "want \"%s\": %s", wanted, r->out);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- Notices and records that explain ---- */

static void curl_denied(bool verbose, const char *notify, bool expect_notice)
{
	struct sandbox sb;
	struct server srv;
	struct run_result *r = malloc(sizeof(*r));
	char apps[512], url[128], dest[64];

	skip_if_sanitized("curl");
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"t\"; range = [ 63200, 63209 ]; %s\n"
		 "  deny = [ \"127.0.0.2/32\" ]; } );",
		 notify);
	sandbox_init(&sb, apps);
	server_start(&srv, "127.0.0.2", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.2:%u/", srv.port);
	snprintf(dest, sizeof(dest), "127.0.0.2:%u", srv.port);
	char *argv[] = {"curl", "-sS", "-o", "/dev/null", "--max-time", "10", url, NULL};
	run_tool(r, &sb, verbose, false, "t", argv);
	server_stop(&srv);
	cr_expect_eq(r->status, 7, "curl: %d %s", r->status, r->err);
	cr_expect_eq(atomic_load(&srv.count), 0, "the denied server was reached");
	/* The rule is on line 5. */
	const char *notice[] = {"portfence:", dest, "127.0.0.2/32", "policy.conf:5", NULL};
	if (expect_notice)
		cr_expect_eq(lines_holding(r->err, notice), 1, "no deny notice (or more than one): %s", r->err);
	else
		cr_expect_eq(count_lines_starting(r->err, "portfence:"), 0, "a notice without notify: %s", r->err);

	json_t *records = audit_records(sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert_not_null(deny, "no deny record");
	const char *rule = json_string_value(json_object_get(deny, "rule"));
	cr_assert_not_null(rule, "the deny record has no \"rule\"");
	cr_expect(strstr(rule, "127.0.0.2/32") && strstr(rule, "policy.conf:5"), "rule: %s", rule);
	json_decref(records);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain, curl_deny_notice_with_notify_stderr)
{
	curl_denied(false, "notify = \"stderr\";", true);
}

Test(explain, curl_deny_notice_with_run_v)
{
	curl_denied(true, "", true);
}

Test(explain, curl_deny_without_notify_prints_nothing)
{
	curl_denied(false, "", false);
}

/* A range of one port, held by the first connection: the next connects
 * fail with EADDRNOTAVAIL, and one notice (at most one per second) says
 * which app and range. */
Test(explain, python_exhaustion_notice_and_reason)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	static const char script[] =
		"import socket, sys\n"
		"port = int(sys.argv[1])\n"
		"held = socket.create_connection(('127.0.0.1', port))\n"
		"for i in range(3):\n"
		"    try:\n"
		"        socket.create_connection(('127.0.0.1', port))\n"
		"        print('connected')\n"
		"    except OSError as e:\n"
		"        print('errno', e.errno)\n";

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63210, 63210 ]; notify = \"stderr\"; } );");
	python_against(r, &sb, SERVE_DRAIN, script, false, false);
	cr_expect_eq(r->status, 0, "python: %d %s", r->status, r->err);
	cr_expect_str_eq(r->out, "errno 99\nerrno 99\nerrno 99\n");
	const char *notice[] = {"portfence:", "'t'", "63210-63210", "EADDRNOTAVAIL", NULL};
	cr_expect_eq(lines_holding(r->err, notice), 1, "expected one exhaustion notice: %s", r->err);

	char *reason = record_field(&sb, "error", "reason");
	cr_expect(reason && strstr(reason, "63210-63210"), "the error record's reason: %s", reason ? reason : "(none)");
	free(reason);
	free(r);
	sandbox_cleanup(&sb);
}

/* A policy the shim cannot use (preloaded by hand, as `run` now refuses
 * it): the error record's reason names the file and line. */
Test(explain, unusable_policy_error_record_has_reason)
{
	struct sandbox sb;
	struct server srv;
	struct run_result *r = malloc(sizeof(*r));
	char config[200], log[200], port[16];

	sandbox_init(&sb, "apps = ( { name = \"t\"; rnage = [ 63200, 63209 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", sb.policy);
	snprintf(log, sizeof(log), "PORTFENCE_LOG=%s", sb.log);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *env[] = {(char *)shim_preload_env(), config, log, NULL};
	char *argv[] = {PYTHON, "-c",
			"import socket, sys\n"
			"try:\n"
			"    socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
			"except OSError as e:\n"
			"    print('errno', e.errno)\n",
			port, NULL};
	run_program(r, argv, NULL, env);
	server_stop(&srv);
	cr_expect_str_eq(r->out, "errno 1\n", "%s", r->err);
	json_t *records = audit_records(sb.log);
	json_t *error = audit_find(records, "error", 0);
	cr_assert_not_null(error, "no error record");
	const char *reason = json_string_value(json_object_get(error, "reason"));
	cr_assert_not_null(reason, "the error record has no \"reason\"");
	cr_expect(strstr(reason, "policy.conf:4") != NULL, "reason: %s", reason);
	json_decref(records);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- Ports the program chooses: the bind event and bind_allow ---- */


/* dnsmasq under explicit_bind = "deny": its own listen port only with
 * bind_allow.  Returns dnsmasq's exit status; *pid its daemon's. */
static int start_dnsmasq(struct sandbox *sb, uint16_t port, const char *bind_allow, struct run_result *r)
{
	char apps[512], port_opt[32], pid_opt[200];
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"dns\"; range = [ 63220, 63229 ]; explicit_bind = \"deny\"; %s } );",
		 bind_allow);
	sandbox_init(sb, apps);
	snprintf(port_opt, sizeof(port_opt), "--port=%u", port);
	snprintf(pid_opt, sizeof(pid_opt), "--pid-file=%s/dnsmasq.pid", sb->dir);
	char *dnsmasq[] = {"/usr/sbin/dnsmasq", port_opt, "--listen-address=127.0.0.1", "--bind-interfaces",
			   "--no-resolv", "--no-hosts", "--address=/portfence.test/127.0.0.9", pid_opt,
			   "--user=root", NULL};
	run_tool(r, sb, false, false, "dns", dnsmasq);
	return r->status;
}

static void stop_dnsmasq(const struct sandbox *sb)
{
	char path[200];
	int pid = 0;
	snprintf(path, sizeof(path), "%s/dnsmasq.pid", sb->dir);
	FILE *f = fopen(path, "r");
	if (f && fscanf(f, "%d", &pid) == 1 && pid > 0)
		kill(pid, SIGTERM);
	if (f)
		fclose(f);
}

Test(explain, dnsmasq_runs_with_explicit_bind_deny_and_bind_allow)
{
	/* Its daemon child hangs at start with the runtime preloaded. */
	skip_if_sanitized("dnsmasq");
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	char allow[64], port_arg[16];

	if (!exists("/usr/sbin/dnsmasq"))
		cr_skip_test("dnsmasq is not installed (tests/install-deps.sh installs dnsmasq-base)");
	uint16_t port = free_dns_port();
	snprintf(allow, sizeof(allow), "bind_allow = [ %u ];", port);
	int status = start_dnsmasq(&sb, port, allow, r);
	cr_assert_eq(status, 0, "dnsmasq did not start with bind_allow: %s", r->err);
	usleep(300000);
	snprintf(port_arg, sizeof(port_arg), "%u", port);
	char *dig[] = {"dig", "@127.0.0.1", "-p", port_arg, "+short", "+tries=1", "+time=5", "portfence.test", NULL};
	run_program(r, dig, NULL, NULL);
	stop_dnsmasq(&sb);
	cr_expect_str_eq(r->out, "127.0.0.9\n", "dig: %s", r->err);

	/* Its listen sockets were bound by dnsmasq itself: "bind" records. */
	json_t *records = audit_records(sb.log);
	json_t *bind = audit_find(records, "bind", 0);
	cr_assert_not_null(bind, "no bind record in %s", sb.log);
	cr_expect_eq(address_port(json_string_value(json_object_get(bind, "local"))), port);
	cr_expect_str_eq(json_string_value(json_object_get(bind, "result")), "ok");
	cr_expect_str_eq(json_string_value(json_object_get(bind, "app")), "dns");
	cr_expect_null(audit_find(records, "deny", 0), "a deny record with bind_allow");
	json_decref(records);
	sandbox_cleanup(&sb);

	/* Without bind_allow the daemon cannot take its port: it fails, and the
	 * deny record names explicit_bind. */
	port = free_dns_port();
	status = start_dnsmasq(&sb, port, "", r);
	stop_dnsmasq(&sb);
	cr_expect_neq(status, 0, "dnsmasq started on port %u under explicit_bind deny", port);
	records = audit_records(sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert_not_null(deny, "no deny record");
	const char *rule = json_string_value(json_object_get(deny, "rule"));
	cr_expect(rule && strstr(rule, "explicit_bind") && strstr(rule, "policy.conf:4"), "rule: %s",
		  rule ? rule : "(none)");
	json_decref(records);
	free(r);
	sandbox_cleanup(&sb);
}

/* A resolver's query ports: dnsmasq forwarding to an upstream (another
 * dnsmasq, unconfined), its query ports kept in the app's range
 * (--min-port/--max-port, the README's recipe), its listen port in
 * bind_allow: the answer comes, and every port it bound shows in the log
 * (event bind). */
Test(explain, forwarding_dnsmasq_query_ports_appear_as_bind_records)
{
	/* Its daemon child hangs at start with the runtime preloaded. */
	skip_if_sanitized("dnsmasq");
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	char apps[512], port_opt[32], up_opt[32], server_opt[64], pid_opt[200], up_pid_opt[200], port_arg[16];

	if (!exists("/usr/sbin/dnsmasq"))
		cr_skip_test("dnsmasq is not installed (tests/install-deps.sh installs dnsmasq-base)");
	uint16_t upstream = free_dns_port(), port = free_dns_port();
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"t\"; range = [ 63250, 63259 ]; explicit_bind = \"deny\";\n"
		 "  bind_allow = [ %u ]; } );", port);
	sandbox_init(&sb, apps);
	snprintf(up_opt, sizeof(up_opt), "--port=%u", upstream);
	snprintf(up_pid_opt, sizeof(up_pid_opt), "--pid-file=%s/upstream.pid", sb.dir);
	char *up[] = {"/usr/sbin/dnsmasq", up_opt, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
		      "--no-hosts", "--address=/portfence.test/127.0.0.9", up_pid_opt, "--user=root", NULL};
	run_program(r, up, NULL, NULL);
	cr_assert_eq(r->status, 0, "upstream dnsmasq: %s", r->err);
	snprintf(port_opt, sizeof(port_opt), "--port=%u", port);
	snprintf(server_opt, sizeof(server_opt), "--server=127.0.0.1#%u", upstream);
	snprintf(pid_opt, sizeof(pid_opt), "--pid-file=%s/dnsmasq.pid", sb.dir);
	char *fwd[] = {"/usr/sbin/dnsmasq", port_opt, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
		       "--no-hosts", server_opt, "--min-port=63250", "--max-port=63259", pid_opt, "--user=root", NULL};
	run_tool(r, &sb, false, false, "t", fwd);
	cr_expect_eq(r->status, 0, "forwarding dnsmasq: %s", r->err);
	usleep(300000);
	snprintf(port_arg, sizeof(port_arg), "%u", port);
	char *dig[] = {"dig", "@127.0.0.1", "-p", port_arg, "+short", "+tries=1", "+time=5", "portfence.test", NULL};
	run_program(r, dig, NULL, NULL);
	stop_dnsmasq(&sb);
	char path[200];
	snprintf(path, sizeof(path), "%s/upstream.pid", sb.dir);
	FILE *f = fopen(path, "r");
	int pid = 0;
	if (f && fscanf(f, "%d", &pid) == 1 && pid > 0)
		kill(pid, SIGTERM);
	if (f)
		fclose(f);
	cr_expect_str_eq(r->out, "127.0.0.9\n", "dig: %s", r->err);

	json_t *records = audit_records(sb.log), *record;
	size_t i;
	unsigned listen = 0, query = 0;
	json_array_foreach(records, i, record) {
		if (strcmp(json_string_value(json_object_get(record, "event")), "bind") != 0)
			continue;
		uint16_t bound = address_port(json_string_value(json_object_get(record, "local")));
		listen += bound == port;
		query += bound >= 63250 && bound <= 63259;
	}
	cr_expect_geq(listen, 1, "no bind record of the listen port %u", port);
	cr_expect_geq(query, 1, "no bind record of a query port in 63250-63259");
	cr_expect_null(audit_find(records, "deny", 0), "a deny record");
	json_decref(records);
	free(r);
	sandbox_cleanup(&sb);
}

/* `check` knows the new keys and refuses a malformed bind_allow. */
Test(explain, check_validates_bind_allow_and_notify)
{
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63200, 63209 ]; explicit_bind = \"deny\";\n"
			  "  bind_allow = [ 21, \"1024-2048\" ]; notify = \"stderr\"; } );");
	char *argv[] = {(char *)build_path("portfence"), "check", "-c", sb.policy, NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "valid policy refused: %s", r->err);
	cr_expect(strstr(r->out, "bind_allow: 21, 1024-2048") != NULL, "the summary: %s", r->out);
	sandbox_cleanup(&sb);

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63200, 63209 ];\n"
			  "  bind_allow = [ \"2048-1024\", 70000 ]; notify = \"loud\"; } );");
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 1);
	cr_expect_geq(count_lines_starting(r->err, sb.policy), 3, "expected three errors: %s", r->err);
	cr_expect(strstr(r->err, "policy.conf:5") != NULL, "%s", r->err);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- The BPF backend: its notices come from the run's record writer ---- */

/* An unconnected UDP send on an unbound socket is refused under BPF
 * (udp_unbound = "deny"): -v says so, with the way out. */
Test(explain, bpf_udp_unbound_refusal_notice)
{
	skip_unless_bpf_machine();
	struct sandbox sb;
	struct run_result *r = malloc(sizeof(*r));
	static const char script[] =
		"import socket, sys\n"
		"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
		"try:\n"
		"    s.sendto(b'x', ('127.0.0.1', int(sys.argv[1])))\n"
		"    print('sent')\n"
		"except OSError as e:\n"
		"    print('errno', e.errno)\n";

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63230, 63239 ]; } );");
	python_against(r, &sb, SERVE_UDP_ECHO, script, true, true);
	cr_expect_eq(r->status, 0, "python: %d %s", r->status, r->err);
	cr_expect_str_eq(r->out, "errno 1\n");
	const char *notice[] = {"portfence:", "udp_unbound", "connect or bind(0)", NULL};
	cr_expect_eq(lines_holding(r->err, notice), 1, "no udp_unbound notice: %s", r->err);
	char *rule = record_field(&sb, "deny", "rule");
	cr_expect(rule && strstr(rule, "udp_unbound"), "the deny record's rule: %s", rule ? rule : "(none)");
	free(rule);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain, bpf_curl_deny_notice_with_run_v)
{
	skip_unless_bpf_machine();
	struct sandbox sb;
	struct server srv;
	struct run_result *r = malloc(sizeof(*r));
	char url[128], dest[64];

	sandbox_init(&sb, "apps = ( { name = \"t\"; range = [ 63240, 63249 ];\n  deny = [ \"127.0.0.2/32\" ]; } );");
	server_start(&srv, "127.0.0.2", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.2:%u/", srv.port);
	snprintf(dest, sizeof(dest), "127.0.0.2:%u", srv.port);
	char *argv[] = {"curl", "-sS", "-o", "/dev/null", "--max-time", "10", url, NULL};
	run_tool(r, &sb, true, true, "t", argv);
	server_stop(&srv);
	cr_expect_eq(r->status, 7, "curl: %d %s", r->status, r->err);
	const char *notice[] = {"portfence:", dest, "127.0.0.2/32", "policy.conf:5", NULL};
	cr_expect_eq(lines_holding(r->err, notice), 1, "no deny notice: %s", r->err);
	free(r);
	sandbox_cleanup(&sb);
}
