/* What the interposed calls share (each call's own logic is in the file
 * named after it: connect.c, bind.c, ...), in three steps: gather the
 * question and ask the core's verdict (pf_decide, core/verdict.h), act on
 * it (take a port and
 * make the call, assign.c), and write the record.  Every path that is not
 * ours ends in the real call with its own result and errno untouched.
 * A call from a signal handler is judged like any other: the shim's own
 * work uses the real symbols, never these entry points. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "core/hot.h"

#include "shim.h"

void pf_audit_event(const struct pf_runtime *rt, const struct pf_sock *sock,
			enum pf_event event, const struct sockaddr *local,
			const struct sockaddr *remote, int error)
{
	struct pf_record record = {
		.event = event, .sock = sock, .local = local, .remote = remote, .error = error,
	};
	pf_audit(rt, &record);
}

ssize_t pf_refuse_by(const struct pf_runtime *rt, const struct pf_sock *sock,
		     enum pf_event event, const struct sockaddr *local,
		     const struct sockaddr *remote, int error, const char *rule)
{
	struct pf_record record = {
		.event = event, .sock = sock, .local = local, .remote = remote, .error = error,
		.rule = rule,
	};
	pf_audit(rt, &record);
	errno = error;
	return -1;
}

ssize_t pf_refuse(const struct pf_runtime *rt, const struct pf_sock *sock,
		  enum pf_event event, const struct sockaddr *local,
		  const struct sockaddr *remote, int error)
{
	return pf_refuse_by(rt, sock, event, local, remote, error, NULL);
}

/* Audit mode: the call runs untouched; the record says what enforce
 * would have answered and which port the kernel gave. */
static PF_COLD ssize_t audit_only(const struct pf_runtime *rt, struct pf_sock *sock,
			  struct pf_call *call, int would_be_error)
{
	ssize_t result = pf_perform(sock, call);
	int saved = errno;

	if (result >= 0 || saved == EINPROGRESS)
		pf_sock_mark(sock, PF_FD_DONE);
	int shown_error = would_be_error ? would_be_error : (result < 0 ? saved : 0);
	pf_audit_socket(rt, sock, PF_EVENT_AUDIT, NULL, call->dest, 0, shown_error);
	errno = saved;
	return result;
}

/* Whether a TCP socket is listening, connecting or connected: the
 * kernel answers its connect (EINVAL, EALREADY, EISCONN) whatever the
 * destination.  Asked only when the core says the answer depends on it:
 * the state from TCP_INFO, else (a socket that has none) its peer or
 * listening. */
static PF_COLD bool tcp_is_busy(const struct pf_sock *sock)
{
	struct tcp_info info;
	struct sockaddr_storage peer;
	socklen_t info_len = sizeof(info), len = sizeof(peer);
	int listening = 0, saved = errno;
	socklen_t optlen = sizeof(listening);
	bool moot;

	if (real_getsockopt(sock->fd, IPPROTO_TCP, TCP_INFO, &info, &info_len) == 0 && info_len >= 1)
		moot = info.tcpi_state != TCP_CLOSE;
	else
		moot = getpeername(sock->fd, (struct sockaddr *)&peer, &len) == 0 ||
		       (real_getsockopt(sock->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) == 0 &&
			listening);
	errno = saved;
	return moot;
}

static PF_HOT unsigned core_call(enum pf_action action)
{
	switch (action) {
	case PF_ACT_CONNECT:
		return PF_CORE_CALL_CONNECT;
	case PF_ACT_SENDTO:
	case PF_ACT_SENDMSG:
		return PF_CORE_CALL_SEND;
	case PF_ACT_BIND:
		return PF_CORE_CALL_BIND_ANY;
	case PF_ACT_LISTEN:
		return PF_CORE_CALL_LISTEN;
	case PF_ACT_NAME:
		break;
	}
	return PF_CORE_CALL_NAME;
}

static PF_COLD bool tcp_state_matters(const struct pf_question *question)
{
	struct pf_core_question core;

	pf_core_question_of(question, &core);
	return pf_core_tcp_state_matters(&core);
}

/* A question that names no destination (the app has no rules) and no
 * port is answered by its flags alone, the runtime being fixed once
 * loaded: the core's answer is remembered per set of flags, one word
 * each (valid bit, verdict, event, errnos, rules), so that a connect
 * asks the core once per process.  Atomic words: threads and signal
 * handlers only ever store the same answer. */
#define MEMO_VALID (1ull << 63)
PF_HOT_LINES static _Atomic uint64_t decision_memo[8 * 2 * 2 * 2];

static PF_HOT int memo_slot(unsigned call, bool needs_port, bool udp, bool fastopen)
{
	if (call == PF_CORE_CALL_BIND_PORT || call >= 8)
		return -1;
	return (int)(((call * 2 + needs_port) * 2 + udp) * 2 + fastopen);
}

static PF_HOT int memo_index(const struct pf_question *q)
{
	if (q->dest || q->tcp_busy)
		return -1;
	return memo_slot(q->call, q->needs_port, q->udp, q->fastopen);
}

static PF_HOT struct pf_decision unpack(uint64_t word)
{
	return (struct pf_decision){
		.verdict = (enum pf_verdict)(word & 0xff), .event = (enum pf_event)((word >> 8) & 0xff),
		.error = (int)((word >> 16) & 0xffff), .exhausted = (int)((word >> 32) & 0xffff),
		.tcp_client = (word >> 48) & 1, .shares_port = (word >> 49) & 1,
	};
}

static void remember(int index, const struct pf_decision *d)
{
	if (index < 0 || (unsigned)d->verdict > 0xff || (unsigned)d->event > 0xff ||
	    d->error < 0 || d->error > 0xffff || d->exhausted < 0 || d->exhausted > 0xffff)
		return;
	uint64_t word = MEMO_VALID | (uint64_t)d->verdict | (uint64_t)d->event << 8 |
			(uint64_t)d->error << 16 | (uint64_t)d->exhausted << 32 |
			(uint64_t)d->tcp_client << 48 | (uint64_t)d->shares_port << 49;
	atomic_store_explicit(&decision_memo[index], word, memory_order_relaxed);
}

/* The answer remembered at index (-1: none to look at), or 0. */
static PF_HOT uint64_t remembered(int index)
{
	uint64_t word = index >= 0 ? atomic_load_explicit(&decision_memo[index], memory_order_relaxed) : 0;
	return word & MEMO_VALID ? word : 0;
}

static PF_HOT struct pf_decision decide_remembered(const struct pf_question *question)
{
	int index = memo_index(question);
	uint64_t word = remembered(index);

	if (word)
		return unpack(word);
	struct pf_decision decision = pf_decide(question);
	remember(index, &decision);
	return decision;
}

PF_HOT bool pf_connect_assigns(const struct pf_runtime *rt)
{
	uint64_t word = remembered(rt->rules ? -1 : memo_slot(PF_CORE_CALL_CONNECT, true, false, false));
	struct pf_decision decision = unpack(word);

	return word && decision.verdict == PF_VERDICT_ASSIGN && decision.tcp_client && decision.shares_port;
}

struct pf_decision pf_ask(const struct pf_runtime *rt, const struct pf_sock *sock,
			  struct pf_question *question)
{
	question->policy_usable = rt->status != PF_STATUS_DENY;
	question->app = rt->status == PF_STATUS_ACTIVE ? rt->app : NULL;
	question->mode = rt->mode;
	question->udp = sock->udp;
	question->policy = &rt->policy;
	/* Rules are judged only where the app has any. */
	if (!rt->rules)
		question->dest = NULL;
	struct pf_decision decision = decide_remembered(question);
	if (decision.verdict == PF_VERDICT_REFUSE && tcp_state_matters(question)) {
		question->tcp_busy = tcp_is_busy(sock);
		decision = pf_decide(question);
	}
	return decision;
}

/* Inline in each way in below, so that a caller whose action is known
 * (connect) finds its remembered answer in a few instructions. */
#define PF_INLINE static inline __attribute__((always_inline))

PF_INLINE struct pf_decision decide_call(const struct pf_runtime *rt, const struct pf_sock *sock,
					 const struct pf_call *call, bool needs_port)
{
	bool sends = call->action == PF_ACT_SENDTO || call->action == PF_ACT_SENDMSG;
	bool fastopen = sends && (call->flags & MSG_FASTOPEN);
	unsigned core = core_call(call->action);
	/* The common case, before a question is built: an app without rules
	 * asks by flags alone, and a remembered answer is final unless it
	 * refuses (then the TCP state may matter: pf_ask). */
	uint64_t word = remembered(rt->rules ? -1 : memo_slot(core, needs_port, sock->udp, fastopen));
	if (word) {
		struct pf_decision decision = unpack(word);
		if (decision.verdict != PF_VERDICT_REFUSE)
			return decision;
	}
	struct pf_question question = {
		.call = core,
		.needs_port = needs_port,
		.dest = call->dest,
		.dest_len = call->dest_len,
		.fastopen = fastopen,
	};
	return pf_ask(rt, sock, &question);
}

PF_HOT struct pf_decision pf_decide_call(const struct pf_runtime *rt, const struct pf_sock *sock,
				 const struct pf_call *call, bool needs_port)
{
	return decide_call(rt, sock, call, needs_port);
}

static ssize_t pass_through(struct pf_sock *sock, struct pf_call *call, bool needs_port)
{
	ssize_t result = pf_perform(sock, call);
	int saved = errno;

	/* Not ours to manage: later calls pass without a look. */
	if (needs_port)
		pf_sock_mark(sock, PF_FD_FOREIGN);
	errno = saved;
	return result;
}

PF_INLINE ssize_t managed(struct pf_sock *sock, struct pf_call *call, bool needs_port)
{
	const struct pf_runtime *rt = pf_runtime();
	struct pf_decision decision = decide_call(rt, sock, call, needs_port);

	switch (decision.verdict) {
	case PF_VERDICT_PASS:
		return pass_through(sock, call, needs_port);
	case PF_VERDICT_CALL:
		return pf_perform(sock, call);
	case PF_VERDICT_AUDIT:
		return audit_only(rt, sock, call, decision.error);
	case PF_VERDICT_ASSIGN:
		return pf_assign_and_call(rt, sock, call, &decision);
	case PF_VERDICT_DEFER:
	case PF_VERDICT_REFUSE:
		break;
	}
	return pf_refuse(rt, sock, decision.event, NULL, call->dest, decision.error);
}

/* Every managed call that may need a port. */
PF_HOT ssize_t pf_managed(struct pf_sock *sock, struct pf_call *call, bool needs_port)
{
	return managed(sock, call, needs_port);
}

/* connect's way in: pf_managed with its action known here. */
PF_HOT ssize_t pf_managed_connect(struct pf_sock *sock, const struct sockaddr *dest, socklen_t len)
{
	struct pf_call call = {.action = PF_ACT_CONNECT, .dest = dest, .dest_len = len};
	return managed(sock, &call, sock->status == PF_FD_FRESH);
}

/* A send is ours when it implicitly binds: unbound UDP with a
 * destination, or TCP Fast Open (a connect in disguise).  Any other TCP
 * send is the kernel's: it ignores the address of a connected socket and
 * answers an unconnected one itself (EPIPE). */
bool pf_send_is_ours(const struct pf_sock *sock, int flags)
{
	return sock->udp || (sock->status == PF_FD_FRESH && (flags & MSG_FASTOPEN));
}

bool pf_send_needs_port(const struct pf_sock *sock, bool has_dest, int flags)
{
	if (sock->status != PF_FD_FRESH)
		return false;
	return sock->udp ? has_dest : (flags & MSG_FASTOPEN) != 0;
}

ssize_t pf_managed_send(struct pf_sock *sock, struct pf_call *call)
{
	bool has_dest = pf_inet_address(call->dest, call->dest_len);

	/* Without a usable destination the kernel answers (EDESTADDRREQ,
	 * EINVAL ...) and binds nothing: libc's own answer stands. */
	if (!has_dest || !pf_send_is_ours(sock, call->flags) || !pf_fits_socket(sock, call->dest))
		return pf_perform(sock, call);
	return pf_managed(sock, call, pf_send_needs_port(sock, has_dest, call->flags));
}

