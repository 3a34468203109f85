/* The whole verdict for one call, as a pure function of a small question
 * that each backend gathers (the shim in shim/calls.c through
 * core/decide.c, the BPF programs in their hooks).  The backend then
 * only acts on the answer: makes the call, takes a port from the range,
 * writes the record, or fails with the errno.
 *
 * Where the shim and the BPF programs used to differ, SPEC decides; where
 * SPEC is silent, the shim's behaviour is the rule:
 *  - a bind into another app's range is refused (EACCES) whatever
 *    explicit_bind says;
 *  - a connect on a TCP socket already connected or listening gets the
 *    kernel's own answer (EISCONN, EINVAL), never EPERM, in enforce mode;
 *  - the exhaustion errnos are the kernel's: TCP EADDRNOTAVAIL, UDP
 *    EAGAIN, bind/listen EADDRINUSE. */
#ifndef PORTFENCE_CORE_VERDICT_H
#define PORTFENCE_CORE_VERDICT_H

#include "core/constants.h"

/* The call, as the policy sees it. */
#define PF_CORE_CALL_CONNECT 0	/* connect(2) */
#define PF_CORE_CALL_BIND_ANY 1	/* bind(addr, port 0) */
#define PF_CORE_CALL_BIND_PORT 2	/* bind(addr, port) with port != 0 */
#define PF_CORE_CALL_SEND 3	/* sendto/sendmsg/sendmmsg naming a destination */
#define PF_CORE_CALL_LISTEN 4	/* listen(2) */
#define PF_CORE_CALL_NAME 5	/* getsockname(2) of a socket whose port the shim deferred */

/* What the process's policy is. */
#define PF_CORE_POLICY_NONE 0	/* no app applies (default "pass", or on_error "pass") */
#define PF_CORE_POLICY_APP 1	/* an app applies */
#define PF_CORE_POLICY_UNUSABLE 2	/* unusable with on_error "deny": EPERM */

/* Where an explicitly bound port lies. */
#define PF_CORE_PORT_OWN 0	/* inside the app's own range */
#define PF_CORE_PORT_OUTSIDE 1	/* in no app's range */
#define PF_CORE_PORT_OTHER_APP 2	/* inside another app's range */

struct pf_core_question {
	__u8 family;		/* PF_CORE_AF_INET or PF_CORE_AF_INET6 (recorded, not judged) */
	__u8 udp;		/* datagram (UDP, UDP-Lite); else stream (TCP, MPTCP) */
	__u8 call;		/* PF_CORE_CALL_* */
	__u8 policy;		/* PF_CORE_POLICY_* */
	__u8 protocol_managed;	/* the app's protocols include this socket's */
	__u8 audit;		/* the app's mode is audit */
	__u8 deny_explicit_bind;	/* explicit_bind = "deny" */
	__u8 port_place;	/* BIND_PORT: PF_CORE_PORT_* */
	/* BIND_PORT: the port is in the app's bind_allow list (ports it
	 * may bind even with explicit_bind = "deny").  Each backend fills
	 * it from the policy: the shim in core/decide.c, the BPF programs
	 * from the app's compiled bind_allow ranges. */
	__u8 bind_allowed;
	__u8 dest_denied;	/* the call names a destination the rules refuse */
	__u8 has_port;		/* the socket already has a local port */
	__u8 tcp_busy;		/* a TCP socket already connected or listening */
	__u8 fastopen;		/* a TCP send with MSG_FASTOPEN (a connect in disguise) */
	/* What the backend can do, not what the policy says: */
	__u8 defers_port;	/* it can bind an address without a port (the shim) */
	__u8 late_udp_send;	/* an unbound UDP send reaches it already given a port (BPF) */
	__u8 udp_unbound_audit;	/* BPF: udp_unbound = "audit" */
	__u8 unbound_recorded;	/* BPF: this socket's unbound sends were recorded once */
	/* BPF: the socket holds the port the kernel gave it for an unbound
	 * send that was refused (udp_unbound = "deny"). */
	__u8 kernel_port;
};

/* The verdicts. */
#define PF_CORE_PASS 0		/* not ours: the real call, untouched, no record */
#define PF_CORE_CALL 1		/* ours and permitted, needs no port: the real call */
#define PF_CORE_ASSIGN 2	/* a port from the range, then the call; a record */
#define PF_CORE_DEFER 3		/* bind the address only; the port comes with the next call */
#define PF_CORE_AUDIT 4		/* the real call, and a record of what enforce would do */
#define PF_CORE_REFUSE 5	/* fail with error, and a record of event */

struct pf_core_answer {
	__u8 verdict;		/* PF_CORE_PASS .. PF_CORE_REFUSE */
	__u8 event;		/* the record's PF_CORE_EVENT_* (REFUSE, AUDIT, ASSIGN) */
	/* ASSIGN (and AUDIT of a call enforce would give a port): the
	 * TCP-client rule.  A TCP client's port is shared across
	 * destinations (SO_REUSEADDR), so its 4-tuple must be known free
	 * before the bind; any other socket binds its port exclusively. */
	__u8 tcp_client;
	__u8 shares_port;	/* bind with SO_REUSEADDR (TCP client, or its early name) */
	__u16 error;		/* REFUSE: the errno; AUDIT: what enforce would answer (0: a port) */
	__u16 exhausted;	/* ASSIGN: the errno when no port of the range is free */
};

/* The kernel's own answer when no port is free. */
static __always_inline __u16 pf_core_exhaustion_errno(__u32 call, __u32 udp)
{
	if (call == PF_CORE_CALL_BIND_ANY || call == PF_CORE_CALL_LISTEN || call == PF_CORE_CALL_NAME)
		return PF_CORE_EADDRINUSE;
	return udp ? PF_CORE_EAGAIN : PF_CORE_EADDRNOTAVAIL;
}

static __always_inline struct pf_core_answer pf_core_answer(__u32 verdict, __u32 event, __u32 error)
{
	struct pf_core_answer a = {.verdict = (__u8)verdict, .event = (__u8)event,
				   .error = (__u16)error};
	return a;
}

/* The shim asks whether a TCP socket is connected or listening only
 * when the answer depends on it (it costs system calls): a connect on a
 * socket with a port that the policy would refuse. */
static __always_inline int pf_core_tcp_state_matters(const struct pf_core_question *q)
{
	return q->call == PF_CORE_CALL_CONNECT && !q->udp && q->has_port;
}

/* bind(addr, port), port != 0: the port the program chose.  A port in
 * another app's range is refused whatever explicit_bind says (and
 * whatever bind_allow lists): one app's policy must not let it take
 * another's ports.  A permitted one is the real call and a record of
 * event BIND, so that ports a program chooses itself appear in the log. */
static __always_inline struct pf_core_answer pf_core_explicit_bind(const struct pf_core_question *q)
{
	if (q->policy != PF_CORE_POLICY_APP || !q->protocol_managed)
		return pf_core_answer(PF_CORE_PASS, PF_CORE_EVENT_ASSIGN, 0);
	if (q->port_place == PF_CORE_PORT_OWN ||
	    (q->port_place == PF_CORE_PORT_OUTSIDE && (!q->deny_explicit_bind || q->bind_allowed)))
		return pf_core_answer(PF_CORE_CALL, PF_CORE_EVENT_BIND, 0);
	if (q->audit)
		return pf_core_answer(PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, PF_CORE_EACCES);
	return pf_core_answer(PF_CORE_REFUSE, PF_CORE_EVENT_DENY, PF_CORE_EACCES);
}

/* Whether the call would give the socket its port. */
static __always_inline int pf_core_needs_port(const struct pf_core_question *q)
{
	if (q->has_port)
		return 0;
	if (q->call == PF_CORE_CALL_LISTEN)
		return !q->udp;
	return 1;
}

/* A call the policy never looks at: the kernel answers it. */
static __always_inline int pf_core_kernels_call(const struct pf_core_question *q)
{
	/* A TCP send that is not TCP Fast Open on a fresh socket: Linux
	 * ignores the address of a connected socket, and answers an
	 * unconnected one itself (EPIPE). */
	if (q->call == PF_CORE_CALL_SEND && !q->udp && (!q->fastopen || q->has_port))
		return 1;
	/* bind(addr, 0) on a socket that has a port (EINVAL), listen on a
	 * datagram socket or on one with a port. */
	if (q->call == PF_CORE_CALL_BIND_ANY && q->has_port)
		return 1;
	return q->call == PF_CORE_CALL_LISTEN && (q->udp || q->has_port);
}

static __always_inline struct pf_core_answer pf_core_decide(const struct pf_core_question *q)
{
	struct pf_core_answer a;

	if (q->call == PF_CORE_CALL_BIND_PORT)
		return pf_core_explicit_bind(q);
	if (pf_core_kernels_call(q))
		return pf_core_answer(PF_CORE_PASS, PF_CORE_EVENT_ASSIGN, 0);
	int needs_port = pf_core_needs_port(q);
	/* The kernel answers a connect on a connected or listening TCP
	 * socket itself; a refusal must not replace its answer. */
	int busy_connect = pf_core_tcp_state_matters(q) && q->tcp_busy;
	if (q->policy == PF_CORE_POLICY_UNUSABLE)
		return busy_connect ? pf_core_answer(PF_CORE_CALL, PF_CORE_EVENT_ASSIGN, 0)
				    : pf_core_answer(PF_CORE_REFUSE, PF_CORE_EVENT_ERROR, PF_CORE_EPERM);
	if (q->policy != PF_CORE_POLICY_APP || !q->protocol_managed)
		return pf_core_answer(PF_CORE_PASS, PF_CORE_EVENT_ASSIGN, 0);
	if (q->dest_denied) {
		if (q->audit)
			return pf_core_answer(PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, PF_CORE_EPERM);
		if (busy_connect)
			return pf_core_answer(PF_CORE_CALL, PF_CORE_EVENT_ASSIGN, 0);
		return pf_core_answer(PF_CORE_REFUSE, PF_CORE_EVENT_DENY, PF_CORE_EPERM);
	}
	/* The port the kernel gave for a refused unbound send stays the
	 * socket's, and no range port can replace it: nothing more goes out
	 * from it, as its send did not. */
	if (q->kernel_port)
		return pf_core_answer(PF_CORE_REFUSE, PF_CORE_EVENT_DENY, PF_CORE_EPERM);
	/* The shim binds a TCP socket's address alone and gives the port at
	 * the next call, which knows whether it is a client's. */
	if (q->call == PF_CORE_CALL_BIND_ANY && !q->udp && q->defers_port)
		return pf_core_answer(PF_CORE_DEFER, PF_CORE_EVENT_ASSIGN, 0);
	/* An unbound UDP send the backend sees only once the kernel gave it
	 * a port: it cannot be given a range port, so udp_unbound says
	 * whether it is refused or recorded (once per socket). */
	if (needs_port && q->call == PF_CORE_CALL_SEND && q->udp && q->late_udp_send) {
		if (!q->audit && !q->udp_unbound_audit)
			return pf_core_answer(PF_CORE_REFUSE, PF_CORE_EVENT_DENY, PF_CORE_EPERM);
		if (q->unbound_recorded)
			return pf_core_answer(PF_CORE_CALL, PF_CORE_EVENT_ASSIGN, 0);
		return pf_core_answer(PF_CORE_AUDIT, PF_CORE_EVENT_AUDIT, PF_CORE_EPERM);
	}
	if (!needs_port)
		return pf_core_answer(PF_CORE_CALL, PF_CORE_EVENT_ASSIGN, 0);
	a = pf_core_answer(q->audit ? PF_CORE_AUDIT : PF_CORE_ASSIGN,
			   q->audit ? PF_CORE_EVENT_AUDIT : PF_CORE_EVENT_ASSIGN, 0);
	a.tcp_client = !q->udp && (q->call == PF_CORE_CALL_CONNECT || q->call == PF_CORE_CALL_SEND);
	a.shares_port = a.tcp_client || q->call == PF_CORE_CALL_NAME;
	a.exhausted = pf_core_exhaustion_errno(q->call, q->udp);
	return a;
}

#endif
