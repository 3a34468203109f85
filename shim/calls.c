/* The logic of each interposed call, in three steps: gather the question
 * and ask the core's verdict (pf_decide, core/verdict.h), act on it (take a port and
 * make the call, assign.c), and write the record.  Every path that is not
 * ours ends in the real call with its own result and errno untouched.
 * A call from a signal handler is judged like any other: the shim's own
 * work uses the real symbols, never these entry points. */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "shim.h"

static bool inet_address(const struct sockaddr *addr, socklen_t len)
{
	if (!addr)
		return false;
	if (len >= sizeof(struct sockaddr_in) && addr->sa_family == AF_INET)
		return true;
	return len >= sizeof(struct sockaddr_in6) && addr->sa_family == AF_INET6;
}

/* An address of the other family is the kernel's to refuse (EINVAL,
 * EAFNOSUPPORT): the call passes through and the socket stays as it was. */
static bool fits_socket(const struct pf_sock *sock, const struct sockaddr *addr)
{
	return addr->sa_family == sock->family;
}

static void audit_event(const struct pf_runtime *rt, const struct pf_sock *sock,
			enum pf_event event, const struct sockaddr *local,
			const struct sockaddr *remote, int error)
{
	struct pf_record record = {
		.event = event, .sock = sock, .local = local, .remote = remote, .error = error,
	};
	pf_audit(rt, &record);
}

static ssize_t refuse(const struct pf_runtime *rt, const struct pf_sock *sock,
		      enum pf_event event, const struct sockaddr *local,
		      const struct sockaddr *remote, int error)
{
	audit_event(rt, sock, event, local, remote, error);
	errno = error;
	return -1;
}

/* Audit mode: the call runs untouched; the record says what enforce
 * would have answered and which port the kernel gave. */
static ssize_t audit_only(const struct pf_runtime *rt, struct pf_sock *sock,
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

/* Whether a TCP socket is listening or connected: the kernel answers its
 * connect (EISCONN, EINVAL) whatever the destination.  Asked only when
 * the core says the answer depends on it. */
static bool tcp_is_busy(const struct pf_sock *sock)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	int listening = 0, saved = errno;
	socklen_t optlen = sizeof(listening);

	bool moot = getpeername(sock->fd, (struct sockaddr *)&peer, &len) == 0 ||
		    (real_getsockopt(sock->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) == 0 &&
		     listening);
	errno = saved;
	return moot;
}

static unsigned core_call(enum pf_action action)
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

static bool tcp_state_matters(const struct pf_question *question)
{
	struct pf_core_question core;

	pf_core_question_of(question, &core);
	return pf_core_tcp_state_matters(&core);
}

static struct pf_decision ask(const struct pf_runtime *rt, const struct pf_sock *sock,
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
	struct pf_decision decision = pf_decide(question);
	if (decision.verdict == PF_VERDICT_REFUSE && tcp_state_matters(question)) {
		question->tcp_busy = tcp_is_busy(sock);
		decision = pf_decide(question);
	}
	return decision;
}

static struct pf_decision decide(const struct pf_runtime *rt, const struct pf_sock *sock,
				 const struct pf_call *call, bool needs_port)
{
	bool sends = call->action == PF_ACT_SENDTO || call->action == PF_ACT_SENDMSG;
	struct pf_question question = {
		.call = core_call(call->action),
		.needs_port = needs_port,
		.dest = call->dest,
		.dest_len = call->dest_len,
		.fastopen = sends && (call->flags & MSG_FASTOPEN),
	};
	return ask(rt, sock, &question);
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

/* Every managed call that may need a port. */
static ssize_t managed(struct pf_sock *sock, struct pf_call *call, bool needs_port)
{
	const struct pf_runtime *rt = pf_runtime();
	struct pf_decision decision = decide(rt, sock, call, needs_port);

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
	return refuse(rt, sock, decision.event, NULL, call->dest, decision.error);
}

int pf_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct pf_sock sock;

	if (!inet_address(addr, len) || !pf_sock_lookup(fd, &sock) || !fits_socket(&sock, addr))
		return real_connect(fd, addr, len);
	struct pf_call call = {.action = PF_ACT_CONNECT, .dest = addr, .dest_len = len};
	return (int)managed(&sock, &call, sock.status == PF_FD_FRESH);
}

/* A port the program chose (or bind(0) on a socket that has one, the
 * kernel's to answer: EINVAL).  The core refuses another app's port
 * whatever this app's explicit_bind says. */
static int explicit_bind(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len)
{
	const struct pf_runtime *rt = pf_runtime();
	uint16_t port = pf_address_port(addr);
	struct pf_question question = {
		.call = port ? PF_CORE_CALL_BIND_PORT : PF_CORE_CALL_BIND_ANY, .bind_port = port,
	};
	struct pf_decision decision = ask(rt, sock, &question);

	if (decision.verdict == PF_VERDICT_REFUSE)
		return (int)refuse(rt, sock, decision.event, addr, NULL, decision.error);
	if (decision.verdict == PF_VERDICT_AUDIT)
		audit_event(rt, sock, PF_EVENT_AUDIT, addr, NULL, decision.error);
	int result = real_bind(sock->fd, addr, len);
	int saved = errno;
	if (result == 0)
		pf_sock_mark(sock, PF_FD_DONE);
	errno = saved;
	return result;
}

static int bind_without_port(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len)
{
	struct pf_call call = {.action = PF_ACT_BIND, .bind_addr = addr, .bind_len = len};

	if (sock->udp)
		return (int)managed(sock, &call, true);
	const struct pf_runtime *rt = pf_runtime();
	struct pf_decision decision = decide(rt, sock, &call, true);
	if (decision.verdict == PF_VERDICT_REFUSE)
		return (int)refuse(rt, sock, decision.event, addr, NULL, decision.error);
	if (decision.verdict == PF_VERDICT_DEFER)
		return pf_bind_address_only(sock, addr, len);
	return real_bind(sock->fd, addr, len);
}

int pf_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct pf_sock sock;

	if (!inet_address(addr, len) || !pf_sock_lookup(fd, &sock) || !fits_socket(&sock, addr))
		return real_bind(fd, addr, len);
	if (pf_address_port(addr) != 0 || sock.status != PF_FD_FRESH || sock.address_bound)
		return explicit_bind(&sock, addr, len);
	return bind_without_port(&sock, addr, len);
}

int pf_listen(int fd, int backlog)
{
	struct pf_sock sock;

	if (!pf_sock_lookup(fd, &sock) || sock.udp || sock.status != PF_FD_FRESH)
		return real_listen(fd, backlog);
	struct pf_call call = {.action = PF_ACT_LISTEN, .backlog = backlog};
	return (int)managed(&sock, &call, true);
}

/* Whether the program asked for IP_BIND_ADDRESS_NO_PORT itself: then it
 * knows the port comes at connect, as the kernel shows it (port 0). */
static bool program_defers_port(int fd)
{
	int no_port = 0, saved = errno;
	socklen_t len = sizeof(no_port);

	if (real_getsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &no_port, &len) < 0)
		no_port = 1;
	errno = saved;
	return no_port != 0;
}

/* A socket whose bind(addr, 0) we deferred gets its port when the
 * program asks for its name: it must see a real port from the range. */
int pf_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct pf_sock sock;

	if (fd >= 0 && fd < PF_FD_TABLE_SIZE &&
	    (atomic_load_explicit(&pf_fd_table[fd], memory_order_relaxed) &
	     (PF_FD_STATUS_MASK | PF_FD_ADDRESS | PF_FD_UDP)) == (PF_FD_FRESH | PF_FD_ADDRESS) &&
	    pf_sock_lookup(fd, &sock) && !program_defers_port(fd)) {
		struct sockaddr_storage bound;
		socklen_t bound_len = sizeof(bound);
		if (real_getsockname(fd, (struct sockaddr *)&bound, &bound_len) == 0) {
			struct pf_call call = {
				.action = PF_ACT_NAME, .bind_addr = (struct sockaddr *)&bound,
				.bind_len = bound_len,
			};
			managed(&sock, &call, true);
		}
	}
	return real_getsockname(fd, addr, len);
}

/* A send is ours when it implicitly binds: unbound UDP with a
 * destination, or TCP Fast Open (a connect in disguise).  Any other TCP
 * send is the kernel's: it ignores the address of a connected socket and
 * answers an unconnected one itself (EPIPE). */
static bool send_is_ours(const struct pf_sock *sock, int flags)
{
	return sock->udp || (sock->status == PF_FD_FRESH && (flags & MSG_FASTOPEN));
}

static bool send_needs_port(const struct pf_sock *sock, bool has_dest, int flags)
{
	if (sock->status != PF_FD_FRESH)
		return false;
	return sock->udp ? has_dest : (flags & MSG_FASTOPEN) != 0;
}

static ssize_t managed_send(struct pf_sock *sock, struct pf_call *call)
{
	bool has_dest = inet_address(call->dest, call->dest_len);

	/* Without a usable destination the kernel answers (EDESTADDRREQ,
	 * EINVAL ...) and binds nothing: libc's own answer stands. */
	if (!has_dest || !send_is_ours(sock, call->flags) || !fits_socket(sock, call->dest))
		return pf_perform(sock, call);
	return managed(sock, call, send_needs_port(sock, has_dest, call->flags));
}

ssize_t pf_sendto(int fd, const void *buf, size_t len, int flags,
		  const struct sockaddr *addr, socklen_t addr_len)
{
	struct pf_sock sock;

	if (pf_send_passes(fd, addr != NULL) || !pf_sock_lookup(fd, &sock))
		return real_sendto(fd, buf, len, flags, addr, addr_len);
	struct pf_call call = {
		.action = PF_ACT_SENDTO, .dest = addr, .dest_len = addr_len,
		.buf = buf, .len = len, .flags = flags,
	};
	return managed_send(&sock, &call);
}

ssize_t pf_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct pf_sock sock;

	if (!msg || pf_send_passes(fd, msg->msg_name != NULL) || !pf_sock_lookup(fd, &sock))
		return real_sendmsg(fd, msg, flags);
	struct pf_call call = {
		.action = PF_ACT_SENDMSG, .dest = msg->msg_name, .dest_len = msg->msg_namelen,
		.msg = msg, .flags = flags,
	};
	return managed_send(&sock, &call);
}

/* The first message the policy refuses ends the batch, as a failing
 * message does in the kernel's own sendmmsg. */
static unsigned permitted_prefix(const struct pf_runtime *rt, struct mmsghdr *msgs,
				 unsigned vlen, int *refused_at)
{
	*refused_at = -1;
	if (rt->status != PF_STATUS_ACTIVE || !rt->rules)
		return vlen;
	for (unsigned i = 0; i < vlen; i++) {
		const struct msghdr *m = &msgs[i].msg_hdr;
		if (inet_address(m->msg_name, m->msg_namelen) &&
		    !pf_app_permits(rt->app, m->msg_name, m->msg_namelen)) {
			*refused_at = (int)i;
			return i;
		}
	}
	return vlen;
}

static int managed_sendmmsg(struct pf_sock *sock, struct mmsghdr *msgs, unsigned vlen, int flags)
{
	const struct pf_runtime *rt = pf_runtime();
	int refused_at;
	unsigned allowed = permitted_prefix(rt, msgs, vlen, &refused_at);
	struct pf_call first = {
		.action = PF_ACT_SENDMSG, .dest = msgs[0].msg_hdr.msg_name,
		.dest_len = msgs[0].msg_hdr.msg_namelen, .msg = &msgs[0].msg_hdr, .flags = flags,
	};

	if (refused_at >= 0 && rt->mode == PF_MODE_ENFORCE) {
		const struct msghdr *m = &msgs[refused_at].msg_hdr;
		audit_event(rt, sock, PF_EVENT_DENY, NULL, m->msg_name, EPERM);
		if (allowed == 0) {
			errno = EPERM;
			return -1;
		}
		vlen = allowed;
	}
	/* The first message takes the port (and is checked and audited as a
	 * sendmsg); the rest follow on the now bound socket. */
	ssize_t sent = managed_send(sock, &first);
	if (sent < 0)
		return -1;
	msgs[0].msg_len = (unsigned)sent;
	if (vlen == 1)
		return 1;
	int rest = real_sendmmsg(sock->fd, msgs + 1, vlen - 1, flags);
	return rest < 0 ? 1 : rest + 1;
}

int pf_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	struct pf_sock sock;

	if (!msgs || vlen == 0 || !pf_sock_lookup(fd, &sock) || !send_is_ours(&sock, flags))
		return real_sendmmsg(fd, msgs, vlen, flags);
	const struct msghdr *head = &msgs[0].msg_hdr;
	bool has_dest = inet_address(head->msg_name, head->msg_namelen);
	const struct pf_runtime *rt = pf_runtime();
	bool checks_dests = rt->status == PF_STATUS_DENY ||
			    (rt->status == PF_STATUS_ACTIVE && rt->rules && pf_runtime_manages(rt, &sock));
	if (!send_needs_port(&sock, has_dest, flags) && !checks_dests)
		return real_sendmmsg(fd, msgs, vlen, flags);
	return managed_sendmmsg(&sock, msgs, vlen, flags);
}

int pf_socket(int domain, int type, int protocol)
{
	int fd = real_socket(domain, type, protocol);

	if (fd >= 0) {
		int saved = errno;
		pf_fd_set(fd, pf_fd_state_for(domain, type, protocol));
		pf_fd_new_socket(fd);
		errno = saved;
	}
	return fd;
}
