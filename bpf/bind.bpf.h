/* The bind hooks' work (bpf/portfence.bpf.c holds the hooks): a
 * bind(addr, 0) given a range port, an explicit bind judged against the
 * app's explicit_bind and bind_allow, and what post_bind learns of the
 * bind the kernel made; a bind the kernel refused after the hook
 * answered it, recorded at the socket's next bind, connect or close. */
#ifndef PORTFENCE_BIND_BPF_H
#define PORTFENCE_BIND_BPF_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/dest.bpf.h"
#include "bpf/maps.bpf.h"
#include "bpf/records.bpf.h"
#include "bpf/walk.bpf.h"

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
						 ctx->type, ctx->protocol, local->sock_family);
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

#endif
