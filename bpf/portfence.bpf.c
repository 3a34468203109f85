/* The BPF backend's hooks: cgroup socket programs that give every client
 * socket of a confined cgroup a port from its app's range, refuse what the
 * app's rules deny, and hand a record of each decision to user space.
 * Each hook gathers the question, asks the decision core
 * (pf_core_decide, core/verdict.h, the shim's own), and acts on the
 * answer; the walk is in bpf/walk.bpf.h (core/sequence.h with bpf_loop),
 * the records in bpf/records.bpf.h, the maps in bpf/maps.bpf.h.  One
 * loaded object serves one app; the loader (loader/) fills its maps from
 * the policy and the app's state.  Which sockets are the app's is in
 * bpf/cgroups.bpf.h: one attachment serves many cgroups, each hook
 * acting only for a socket whose cgroup's nearest confined ancestor is
 * the app's (pfb_ours); a new cgroup gets its app inside mkdir
 * (bpf/births.bpf.h).  Where several of the daemon's apps share the
 * cgroup their programs would stand at, the dispatcher
 * (bpf/dispatch.bpf.c) stands there and tail-calls these. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/births.bpf.h"
#include "bpf/dest.bpf.h"
#include "bpf/maps.bpf.h"
#include "bpf/records.bpf.h"
#include "bpf/walk.bpf.h"

/* The kernel lets only GPL-compatible programs call GPL-only helpers
 * (bpf_probe_read_kernel_str); the project's own licence is not chosen
 * yet (debian/copyright says so). */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- connect -------------------------------------------------------- */

/* A bind the kernel refused after the bind hook answered it never
 * reached post_bind: its record goes out at the socket's next bind, its
 * connect or its close, with EUNKNOWN (which errno the program saw, no hook can
 * tell).  A bind(addr, 0)'s is an error; an explicit bind's is its
 * "bind" record, as the shim's is (with the program's errno). */
static __always_inline void pfb_refused_pick(struct pfb_sock_state *st, __u32 family, int udp)
{
	const struct pfb_bind_pick *pick = &st->pick;

	pfb_record_bind(family, family, pick->addr, pick->port, pick->explicit_port ? PF_BPF_BIND : PF_CORE_EVENT_ERROR,
			PF_BPF_ERROR_UNSEEN, pick->attempts, udp);
	st->has_pick = 0;
	pfb_count_unsettled_binds(-1);
}

/* A bind the kernel refused on this socket before it connects: its
 * record goes out now, and the state that kept it goes when it holds
 * nothing else, since the connect's socket may be counted in its port's
 * slot, whose release hook looks at no state.  A global function,
 * verified once: inlined, it took connect6 past the verifier's limit. */
__noinline int pfb_settle_refused_bind(struct bpf_sock_addr *ctx, __u64 cookie)
{
	struct pfb_sock_state *st = pfb_state(cookie);

	if (!ctx || !st || !st->has_pick || st->pick.bound)
		return 0;
	pfb_refused_pick(st, ctx->family, ctx->type == SOCK_DGRAM);
	if (!st->flags && !st->has_kept)
		bpf_map_delete_elem(&sock_state, &cookie);
	return 1;
}

/* Takes a port for a connect (the walk; SO_REUSEADDR reuses a TIME_WAIT
 * 4-tuple at once), else the kernel's own exhaustion answer. */
static __always_inline int pfb_assign_for_connect(struct bpf_sock_addr *ctx, const struct pf_bpf_config *cfg,
						  const struct pfb_dest *d, const struct pf_core_answer *a)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (pfb_binds_unsettled())
		pfb_settle_refused_bind(ctx, cookie);
	struct pfb_walk w = {.ctx = ctx, .d = *d, .udp = ctx->type == SOCK_DGRAM, .cookie = cookie};
	int one = 1;

	pfb_bound_source(ctx, d, w.source);
	if (pfb_is_zero(w.source))
		pfb_loopback_source(d, w.source);
	int wildcard = !w.udp && pfb_is_zero(w.source);
	if (wildcard)
		pfb_learned_source(&w, bpf_get_netns_cookie(ctx));
	else
		__builtin_memcpy(w.checked, w.source, sizeof(w.checked));
	if (a->shares_port)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	pfb_walk_connect(&w, cfg);

	struct pfb_record_facts f = {.attempts = w.attempts, .udp = w.udp, .local_port = w.port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = w.source[i];
	if (!w.port) {
		f.event = PF_CORE_EVENT_ERROR;
		f.error = a->exhausted;
		pfb_record(d, &f);
		return pfb_refuse(a->exhausted);
	}
	f.event = a->event;
	/* The socket's port is counted in the port's slot when no other
	 * socket of the app has it there: no per-socket state.  TCP's record
	 * waits in the slot under the port's claim; UDP's goes out now. */
	struct pfb_port_slot *slot = pfb_port_slot(cfg, w.port);
	int subflow = pfb_mptcp_subflow(ctx);
	if (w.udp) {
		pfb_record(d, &f);
	} else if (slot) {
		pfb_keep_record(&slot->kept, &slot->has_kept, d, &f);
		slot->learn = wildcard;
	}
	if (slot && !subflow && pfb_own_port(cfg, slot, w.port, cookie))
		return PFB_PROCEED;
	/* bpf_bind runs no post_bind hook: the socket is marked here. */
	struct pfb_sock_state *st = pfb_state_new(cookie);
	if (st)
		st->flags = subflow ? PFB_SOCKET_BOUND | PFB_SOCKET_MPTCP : pfb_bound_flags(cfg, w.port);
	if (subflow)
		pfb_count_on_mptcp(ctx, cfg, w.port);
	if (!slot && !w.udp)
		pfb_record_later(st, d, &f);
	return PFB_PROCEED;
}

/* A TCP socket that bind(addr, 0) gave a range port connects on it: the
 * assignment's record is this connect's (with its destination), unless
 * the 4-tuple is held, where the kernel would fail it: EADDRNOTAVAIL
 * and an error record, the kernel's own answer. */
static __always_inline int pfb_connect_bound(struct bpf_sock_addr *ctx, const struct pfb_dest *d)
{
	struct pfb_sock_state *st = pfb_state(bpf_get_socket_cookie(ctx));

	if (ctx->type == SOCK_DGRAM || !st || !st->has_pick || !st->pick.bound || st->pick.explicit_port || !ctx->sk)
		return PFB_PROCEED;
	struct pfb_walk w = {.ctx = ctx, .d = *d};
	__u16 port = (__u16)ctx->sk->src_port;
	pfb_bound_source(ctx, d, w.source);
	struct pfb_record_facts f = {.event = PF_CORE_EVENT_ASSIGN, .attempts = st->pick.attempts,
				     .local_port = port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = w.source[i];
	st->has_pick = 0;
	if (!pfb_is_zero(w.source) && pfb_tuple_holder(&w, w.source, port) == PFB_TUPLE_HELD) {
		f.event = PF_CORE_EVENT_ERROR;
		f.error = PF_CORE_EADDRNOTAVAIL;
		pfb_record(d, &f);
		return pfb_refuse(PF_CORE_EADDRNOTAVAIL);
	}
	pfb_record_later(st, d, &f);
	return PFB_PROCEED;
}

static __always_inline int pfb_connect(struct bpf_sock_addr *ctx, const struct pfb_dest *d)
{
	struct pf_bpf_config *cfg = pfb_config();
	struct bpf_sock *sk = ctx->sk;

	if (!cfg || !sk || !pfb_ours(sk))
		return PFB_PROCEED;
	struct pf_core_question q = pfb_question(cfg, PF_CORE_CALL_CONNECT, ctx->type, d->sock_family);
	if (!q.protocol_managed)
		return PFB_PROCEED;
	q.dest_denied = !pfb_permits(cfg, d);
	q.has_port = sk->src_port != 0;
	q.tcp_busy = !q.udp && sk->state != BPF_TCP_CLOSE;
	struct pf_core_answer a = pf_core_decide(&q);

	switch (a.verdict) {
	case PF_CORE_CALL:
		return q.has_port && !q.tcp_busy ? pfb_connect_bound(ctx, d) : PFB_PROCEED;
	case PF_CORE_ASSIGN:
		return pfb_assign_for_connect(ctx, cfg, d, &a);
	case PF_CORE_AUDIT: {
		/* The kernel gives the port after this hook: a TCP record
		 * waits for it (sockops); no hook sees a UDP socket's. */
		struct pfb_record_facts f = {.event = a.event, .error = a.error, .udp = q.udp};
		if (q.udp)
			pfb_record(d, &f);
		else
			pfb_record_later(pfb_records_wanted() ? pfb_state_made(bpf_get_socket_cookie(ctx)) : 0, d, &f);
		return PFB_PROCEED;
	}
	case PF_CORE_REFUSE:
		pfb_record_simple(d, a.event, a.error, q.udp);
		return pfb_refuse(a.error);
	default:
		return PFB_PROCEED;
	}
}

SEC("cgroup/connect4")
int pfb_connect4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	return pfb_verdict(pfb_connect(ctx, &d));
}

SEC("cgroup/connect6")
int pfb_connect6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_connect(ctx, &d));
}

/* ---- unconnected sends -------------------------------------------- */

/* Whether the socket's port is counted in its slot under the socket's
 * own cookie: a connect gave it (pfb_assign_for_connect). */
static __always_inline int pfb_owns_its_port(const struct pf_bpf_config *cfg, struct bpf_sock *sk, __u64 cookie)
{
	struct pfb_port_slot *slot = sk ? pfb_port_slot(cfg, sk->src_port) : 0;

	return slot && slot->owner == cookie;
}

/* The kernel gives an unbound UDP socket its port before this hook runs,
 * so a range port cannot be given here: udp_unbound says whether such a
 * send is refused or only recorded (once per socket). */
static __always_inline int pfb_sendmsg(struct bpf_sock_addr *ctx, const struct pfb_dest *d)
{
	struct pf_bpf_config *cfg = pfb_config();

	if (!cfg || !pfb_ours(ctx->sk))
		return PFB_PROCEED;
	struct pf_core_question q = pfb_question(cfg, PF_CORE_CALL_SEND, ctx->type, d->sock_family);
	if (!q.protocol_managed)
		return PFB_PROCEED;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct pfb_sock_state *st = pfb_state(cookie);
	q.dest_denied = !pfb_permits(cfg, d);
	q.has_port = (st && (st->flags & PFB_SOCKET_BOUND)) || pfb_owns_its_port(cfg, ctx->sk, cookie);
	q.unbound_recorded = st && (st->flags & PFB_SOCKET_UNBOUND_RECORDED);
	struct pf_core_answer a = pf_core_decide(&q);

	if (a.verdict != PF_CORE_AUDIT && a.verdict != PF_CORE_REFUSE)
		return PFB_PROCEED;
	struct pfb_record_facts f = {.event = a.event, .error = a.error, .udp = q.udp};
	if (!q.dest_denied && ctx->sk)
		f.local_port = (__u16)ctx->sk->src_port;	/* the kernel's, unbound send */
	pfb_record(d, &f);
	if (a.verdict == PF_CORE_REFUSE)
		return pfb_refuse(a.error);
	if (!q.dest_denied && (st = pfb_state_made(cookie)))
		st->flags |= PFB_SOCKET_UNBOUND_RECORDED;
	return PFB_PROCEED;
}

SEC("cgroup/sendmsg4")
int pfb_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	return pfb_verdict(pfb_sendmsg(ctx, &d));
}

SEC("cgroup/sendmsg6")
int pfb_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_sendmsg(ctx, &d));
}

/* ---- bind ---------------------------------------------------------- */

/* Keeps a bind as the bind hook answered it, in the socket's state. */
static __always_inline void pfb_keep_pick(struct bpf_sock_addr *ctx, const struct pfb_bind_pick *pick)
{
	struct pfb_sock_state *st = pfb_state_made(bpf_get_socket_cookie(ctx));

	if (!st)
		return;
	if (!st->has_pick)
		pfb_count_unsettled_binds(1);
	st->pick = *pick;
	st->has_pick = 1;
}

/* bind(port 0) is given a range port by rewriting the request (bpf_bind
 * is refused here).  UDP takes a port none of the app's sockets holds.
 * TCP binds it with SO_REUSEADDR, as a connect's port is bound: it is
 * shared across destinations (a port no socket of the app holds when
 * there is one, else the first the walk meets that no listener holds),
 * and a TIME_WAIT on it is reused at the connect.  The record waits for the kernel's verdict
 * (post_bind, or the connect). */
static __always_inline int pfb_assign_for_bind(struct bpf_sock_addr *ctx, const struct pf_bpf_config *cfg,
					       const struct pfb_dest *local, const struct pf_core_answer *a)
{
	struct pfb_walk w = {.ctx = ctx, .d = *local, .udp = ctx->type == SOCK_DGRAM};
	int one = 1;

	pfb_walk_bind(&w, cfg);
	if (!w.port && !w.udp)
		w.port = w.time_wait_port;	/* shared */
	if (!w.port) {
		pfb_record_bind(local->family, local->sock_family, local->addr, 0, PF_CORE_EVENT_ERROR, a->exhausted,
				w.attempts, w.udp);
		return pfb_refuse(a->exhausted);
	}
	if (!w.udp)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct pfb_bind_pick pick = {.attempts = w.attempts, .port = w.port};
	for (int i = 0; i < 4; i++)
		pick.addr[i] = local->addr[i];	/* what was asked, until post_bind */
	pfb_keep_pick(ctx, &pick);
	ctx->user_port = bpf_htons(w.port);
	if (pfb_mptcp_subflow(ctx))
		pfb_count_on_mptcp(ctx, cfg, w.port);	/* before the kernel's verdict: no later hook can */
	return PFB_PROCEED;
}

/* An explicit bind the core permits: its "bind" record goes out at
 * post_bind, once the kernel has bound the port (not an MPTCP subflow's,
 * which the kernel binds itself). */
static __always_inline void pfb_expect_bind(struct bpf_sock_addr *ctx, const struct pf_bpf_config *cfg,
					    const struct pfb_dest *local)
{
	if (pfb_mptcp_subflow(ctx)) {
		pfb_count_on_mptcp(ctx, cfg, local->port);
		return;
	}
	struct pfb_bind_pick pick = {.port = local->port, .explicit_port = 1};
	for (int i = 0; i < 4; i++)
		pick.addr[i] = local->addr[i];
	pfb_keep_pick(ctx, &pick);
}

static __always_inline int pfb_bind(struct bpf_sock_addr *ctx, const struct pfb_dest *local)
{
	struct pf_bpf_config *cfg = pfb_config();

	if (!cfg || !pfb_ours(ctx->sk))
		return PFB_PROCEED;
	struct pf_core_question q = pfb_question(cfg, local->port ? PF_CORE_CALL_BIND_PORT : PF_CORE_CALL_BIND_ANY,
						 ctx->type, local->sock_family);
	if (!q.protocol_managed)
		return PFB_PROCEED;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct pfb_sock_state *st = pfb_state(cookie);
	if (st && st->has_pick && !st->pick.bound)
		pfb_refused_pick(st, local->family, q.udp);
	if (pfb_mptcp_subflow(ctx) && (st || (st = pfb_state_made(cookie))))
		st->flags = PFB_SOCKET_MPTCP;
	q.has_port = ctx->sk && ctx->sk->src_port;
	q.port_place = pfb_port_place(cfg, local->port);
	q.bind_allowed = local->port && pfb_bind_allowed(local->port);
	struct pf_core_answer a = pf_core_decide(&q);

	switch (a.verdict) {
	case PF_CORE_CALL:
		/* A socket with a port already: the kernel refuses the bind
		 * (EINVAL), and the socket keeps no state for it (the release
		 * hook of a connect's socket counted in its port's slot looks
		 * at no state). */
		if (q.call == PF_CORE_CALL_BIND_PORT && !q.has_port)
			pfb_expect_bind(ctx, cfg, local);
		return PFB_PROCEED;
	case PF_CORE_ASSIGN:
		return pfb_assign_for_bind(ctx, cfg, local, &a);
	case PF_CORE_AUDIT:
		pfb_record_bind(local->family, local->sock_family, local->addr, local->port, a.event, a.error, 0,
				q.udp);
		return PFB_PROCEED;
	case PF_CORE_REFUSE:
		pfb_record_bind(local->family, local->sock_family, local->addr, local->port, a.event, a.error, 0,
				q.udp);
		return pfb_refuse(a.error);
	default:
		return PFB_PROCEED;
	}
}

SEC("cgroup/bind4")
int pfb_bind4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	return pfb_verdict(pfb_bind(ctx, &d));
}

SEC("cgroup/bind6")
int pfb_bind6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_bind(ctx, &d));
}

/* Every bind the program makes (not ours through bpf_bind, which runs no
 * such hook, nor the kernel's autobind) marks the socket: its sends are
 * not unbound ones, and a range port it holds is counted (not an MPTCP
 * subflow's: nothing would uncount it).  An explicit bind has taken: its
 * "bind" record goes out.  A bind(addr, 0) the bind hook answered has
 * taken: a UDP one is recorded now, a TCP one at its connect (or its
 * close, if it never connects). */
static __always_inline int pfb_post_bind(struct bpf_sock *sk, int v6)
{
	if (!pfb_ours(sk))
		return PFB_PROCEED;
	struct pfb_sock_state *st = pfb_state_made(bpf_get_socket_cookie(sk));
	__u16 port = (__u16)sk->src_port;
	__u32 family = v6 ? AF_INET6 : AF_INET;

	if (!st)
		return PFB_PROCEED;
	st->flags = st->flags & PFB_SOCKET_MPTCP ? PFB_SOCKET_BOUND | PFB_SOCKET_MPTCP
						 : pfb_bound_flags(pfb_config(), port);
	struct pfb_bind_pick *pick = &st->pick;
	if (!st->has_pick || pick->bound || pick->port != port)
		return PFB_PROCEED;
	pfb_count_unsettled_binds(-1);
	__u32 ip4 = sk->src_ip4;
	__u32 ip6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	if (v6)
		__builtin_memcpy(pick->addr, ip6, 16);
	else
		pick->addr[0] = ip4;
	int udp = sk->type == SOCK_DGRAM;
	if (pick->explicit_port) {
		pfb_record_bind(family, family, pick->addr, port, PF_BPF_BIND, 0, 0, udp);
		st->has_pick = 0;
		return PFB_PROCEED;
	}
	pick->bound = 1;
	if (!udp)
		return PFB_PROCEED;
	pfb_record_bind(family, family, pick->addr, port, PF_CORE_EVENT_ASSIGN, 0, pick->attempts, 1);
	st->has_pick = 0;
	return PFB_PROCEED;
}

SEC("cgroup/post_bind4")
int pfb_post_bind4(struct bpf_sock *sk)
{
	return pfb_verdict(pfb_post_bind(sk, 0));
}

SEC("cgroup/post_bind6")
int pfb_post_bind6(struct bpf_sock *sk)
{
	return pfb_verdict(pfb_post_bind(sk, 1));
}

/* ---- close and the kernel's later word ------------------------------ */

/* The local port of the socket the release hook runs for, or 0.  Its
 * context gives no src_port (the kernel lets only post_bind read it) and
 * no helper casts it to a TCP socket; the context is the kernel's socket
 * itself, whose head (struct sock_common) holds the port at an offset
 * relocated against the running kernel's BTF (CO-RE). */
static __always_inline __u16 pfb_release_port_of(struct bpf_sock *sk)
{
	__u8 head[32];
	__u32 at = bpf_core_field_offset(struct sock_common___pfb, skc_num);
	__u16 port;

	if (at > sizeof(head) - sizeof(port) || bpf_probe_read_kernel(head, sizeof(head), sk) < 0)
		return 0;
	__builtin_memcpy(&port, head + at, sizeof(port));
	return port;
}

/* A connect's marks in its port's slot (pfb_assign_for_connect) at
 * close: a TCP claim still its own is a connect that never reached
 * sockops, whose record goes out as a failure; a count it owns is
 * dropped (true: the socket was counted there).  The port is the
 * socket's own: the hook bound it (SOCK_BINDPORT_LOCK), so even a failed
 * connect keeps it. */
static __always_inline int pfb_release_port(struct bpf_sock *sk, __u64 cookie)
{
	__u32 protocol = sk->protocol;

	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	struct pf_bpf_config *cfg = pfb_config();
	__u16 port = pfb_release_port_of(sk);
	struct pfb_port_slot *slot = pfb_port_slot(cfg, port);

	if (!slot)
		return 0;
	if (protocol == IPPROTO_TCP && pfb_unclaim_port(port, cookie))
		pfb_send_unfinished(&slot->kept, &slot->has_kept);
	return pfb_disown_port(cfg, slot, port, cookie);
}

/* What the socket's port's slot and its state still hold at close goes
 * out or is undone, and the state goes.  A socket counted in its port's
 * slot has no state (pfb_assign_for_connect makes none, and no later
 * hook does for a socket with a port): the lookup, which would miss and
 * was most of the hook's time (docs/performance.md), is spared. */
SEC("cgroup/sock_release")
int pfb_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	if (pfb_release_port(sk, cookie))
		return PFB_PROCEED;
	struct pfb_sock_state *st = pfb_state(cookie);

	if (!st)
		return PFB_PROCEED;
	pfb_send_unfinished(&st->kept, &st->has_kept);
	if (st->has_pick) {
		/* bound: a TCP bind(addr, 0) that never connected (a listener,
		 * or closed unused); else a bind the kernel refused. */
		struct pfb_bind_pick *pick = &st->pick;
		int udp = sk->type == SOCK_DGRAM;
		if (!pick->bound)
			pfb_refused_pick(st, sk->family, udp);
		else
			pfb_record_bind(sk->family, sk->family, pick->addr, pick->port, PF_CORE_EVENT_ASSIGN, 0,
					pick->attempts, udp);
		st->has_pick = 0;
	}
	pfb_uncount_port(st->flags);
	bpf_map_delete_elem(&sock_state, &cookie);
	return PFB_PROCEED;
}

/* A TCP bind(addr, 0) that listens: its record goes out now, as the
 * shim's does at listen(2), not at close. */
static __always_inline void pfb_listening(struct bpf_sock_ops *skops, struct pfb_sock_state *st)
{
	struct pfb_bind_pick *pick = &st->pick;
	__u32 family = skops->family;

	if (!st->has_pick || !pick->bound || pick->explicit_port)
		return;
	pfb_record_bind(family, family, pick->addr, pick->port, PF_CORE_EVENT_ASSIGN, 0, pick->attempts, 0);
	st->has_pick = 0;
}

/* The kernel has chosen the local address: a record kept for it gets it
 * and goes out. */
static __always_inline void pfb_send_connected(struct bpf_sock_ops *skops, struct pf_bpf_record *kept,
					       __u8 *has_kept)
{
	if (!*has_kept)
		return;
	__u32 family = skops->family, ip4 = skops->local_ip4;
	__u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
	if (family == AF_INET) {
		kept->local_addr[0] = ip4;
	} else if (pfb_is_v4_mapped(ip6) && kept->family == AF_INET) {
		kept->local_addr[0] = ip6[3];
	} else {
		for (int i = 0; i < 4; i++)
			kept->local_addr[i] = ip6[i];
	}
	kept->local_port = (__u16)skops->local_port;
	pfb_send_kept(kept);
	*has_kept = 0;
}

/* The source the kernel chose for a wildcard-bound connect, for the
 * next walk toward its destination (pfb_learned_source): an AF_INET6
 * socket's v4-mapped addresses as IPv4, as struct pfb_dest has them. */
static __always_inline void pfb_learn_connected_source(struct bpf_sock_ops *skops)
{
	__u32 family = skops->family, dest[4] = {0, 0, 0, 0}, source[4] = {0, 0, 0, 0};
	__u32 remote4 = skops->remote_ip4, local4 = skops->local_ip4;
	__u32 remote6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3]};
	__u32 local6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};

	if (family == AF_INET) {
		dest[0] = remote4;
		source[0] = local4;
	} else if (pfb_is_v4_mapped(remote6)) {
		family = AF_INET;
		dest[0] = remote6[3];
		source[0] = local6[3];
	} else {
		for (int i = 0; i < 4; i++) {
			dest[i] = remote6[i];
			source[i] = local6[i];
		}
	}
	pfb_learn_source(bpf_get_netns_cookie(skops), family, dest, source);
}

/* A connect the walk gave its port is hashed: every other walk sees the
 * 4-tuple taken now, so the port's claim goes, and the record kept in
 * its slot goes out.  False when the socket held no claim there, or its
 * port has no slot (its record, if any, is in its state). */
static __always_inline int pfb_connect_hashed(struct bpf_sock_ops *skops, __u64 cookie)
{
	__u16 port = (__u16)skops->local_port;
	struct pfb_port_slot *slot = pfb_port_slot(pfb_config(), port);

	if (!pfb_unclaim_port(port, cookie) || !slot)
		return 0;
	if (slot->learn)
		pfb_learn_connected_source(skops);
	pfb_send_connected(skops, &slot->kept, &slot->has_kept);
	return 1;
}

/* A connect is hashed (TCP_CONNECT_CB): its claim goes and its record
 * goes out.  A listen sends a bind(addr, 0)'s record.  The kernel calls
 * this program several times a connect (its other ops): those return at
 * once. */
SEC("sockops")
int pfb_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_TCP_LISTEN_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB && pfb_connect_hashed(skops, cookie))
		return 1;
	struct pfb_sock_state *st = pfb_state(cookie);
	if (!st)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_LISTEN_CB)
		pfb_listening(skops, st);
	else
		pfb_send_connected(skops, &st->kept, &st->has_kept);
	return 1;
}

/* ---- protocols no hook confines ----------------------------------- */

/* The kernel gives these ports, but no hook here can confine them:
 * UDP-Lite runs no connect hook (it connects from a kernel port,
 * unseen), SCTP and DCCP bind through their own code, past the bind
 * hook.  A confined app's socket of one is refused (EPERM, a deny
 * record), unless the app does not manage its kind (protocols) or only
 * audits.  MPTCP is confined through its TCP subflows, which run the TCP
 * hooks (connect, bind, sockops) on the app's cgroup; here its socket
 * only gets its cookie, under which its subflow's port is counted. */
SEC("cgroup/sock_create")
int pfb_sock_create(struct bpf_sock *sk)
{
	struct pf_bpf_config *cfg = pfb_config();
	__u32 family = sk->family, protocol = sk->protocol;

	if (!cfg || (family != AF_INET && family != AF_INET6))
		return 1;
	if (protocol == IPPROTO_MPTCP) {
		bpf_get_socket_cookie(sk);	/* made now: its subflow's port is counted under it */
		return 1;
	}
	if (protocol != IPPROTO_UDPLITE && protocol != IPPROTO_SCTP && protocol != IPPROTO_DCCP)
		return 1;
	if (!pfb_ours(sk))
		return 1;
	int udp = protocol == IPPROTO_UDPLITE;
	if (!(cfg->protocols & (udp ? PF_BPF_PROTO_UDP : PF_BPF_PROTO_TCP)))
		return 1;
	struct pfb_dest nowhere = {.family = family, .sock_family = family};
	pfb_record_simple(&nowhere, cfg->audit_mode ? PF_CORE_EVENT_AUDIT : PF_CORE_EVENT_DENY, PF_CORE_EPERM, udp);
	return cfg->audit_mode ? 1 : 0;
}

/* ---- exe --------------------------------------------------------- */

/* The exec tracepoint attached by name through BTF (tp_btf), so that
 * neither tracefs nor debugfs is needed: its arguments are
 * (struct task_struct *, pid_t old_pid, struct linux_binprm *).  Only
 * the binprm's filename is read, relocated against the running kernel's
 * BTF (CO-RE). */
struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

SEC("tp_btf/sched_process_exec")
int pfb_exec(__u64 *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	__u32 pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	__u32 zero = 0;
	struct pf_bpf_exe *scratch = bpf_map_lookup_elem(&exe_scratch, &zero);

	if (!scratch)
		return 0;
	bpf_probe_read_kernel_str(scratch->path, sizeof(scratch->path), BPF_CORE_READ(bprm, filename));
	bpf_map_update_elem(&exes, &pid, scratch, BPF_ANY);
	return 0;
}
