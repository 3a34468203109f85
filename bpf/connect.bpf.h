/* The connect and sendmsg hooks' work (bpf/portfence.bpf.c holds the
 * hooks): a connect judged by the decision core and given a port by the
 * walk, a connect on a socket already bound, and an unconnected send,
 * refused or recorded as udp_unbound says. */
#ifndef PORTFENCE_CONNECT_BPF_H
#define PORTFENCE_CONNECT_BPF_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/bind.bpf.h"
#include "bpf/dest.bpf.h"
#include "bpf/maps.bpf.h"
#include "bpf/records.bpf.h"
#include "bpf/walk.bpf.h"

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
	/* The kernel sends the unspecified address to loopback: the
	 * 4-tuples the walk checks are loopback's. */
	if (pfb_is_zero(w.d.addr))
		pfb_loopback_address(d->family, w.d.addr);
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
	struct pf_core_question q = pfb_question(cfg, PF_CORE_CALL_CONNECT, ctx->type, ctx->protocol, d->sock_family);
	if (!q.protocol_managed)
		return PFB_PROCEED;
	q.dest_denied = !pfb_permits(cfg, d);
	q.has_port = sk->src_port != 0;
	q.tcp_busy = !q.udp && sk->state != BPF_TCP_CLOSE;
	if (q.udp && q.has_port) {
		struct pfb_sock_state *st = pfb_state(bpf_get_socket_cookie(ctx));
		q.kernel_port = st && (st->flags & PFB_SOCKET_KERNEL_PORT);
	}
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
	struct pf_core_question q = pfb_question(cfg, PF_CORE_CALL_SEND, ctx->type, ctx->protocol, d->sock_family);
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
	if (a.verdict == PF_CORE_REFUSE) {
		/* The kernel gave the socket its port before this hook ran:
		 * the socket keeps it, so nothing may go out from it later. */
		if (!q.has_port && !q.udp_unbound_audit && (st = pfb_state_made(cookie)))
			st->flags |= PFB_SOCKET_KERNEL_PORT;
		return pfb_refuse(a.error);
	}
	if (!q.dest_denied && (st = pfb_state_made(cookie)))
		st->flags |= PFB_SOCKET_UNBOUND_RECORDED;
	return PFB_PROCEED;
}

#endif
