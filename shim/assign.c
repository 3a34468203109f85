/* Taking a port from the app's range for one socket.
 *
 * TCP clients bind with SO_REUSEADDR: then the kernel refuses only a
 * 4-tuple already in use, at connect() time (EADDRNOTAVAIL), so R ports
 * serve R x D connections to D destinations, and a port in TIME_WAIT is
 * reused at once.  A socket that lost such a race is bound for good, so
 * it is swapped for a fresh one carrying the same options and flags, on
 * the same fd number (dup3), and the algorithm tries its next port.
 *
 * UDP binds exclusively: with SO_REUSEADDR two sockets could share a
 * 4-tuple and the newer would steal the replies. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif

/* Our own marker for "the socket was bound behind our back". */
#define ALREADY_BOUND (-100000)

struct attempt_ctx {
	struct pf_sock *sock;
	struct pf_call *call;
	struct sockaddr_storage bind_addr;
	socklen_t bind_len;
	bool reuse_addr;	/* TCP client: share ports across destinations */
	bool reuse_set;		/* SO_REUSEADDR already on this socket */
	bool call_in_attempt;	/* TCP: the connect decides if the port is free */
};

static void set_port(struct sockaddr_storage *addr, uint16_t port)
{
	if (addr->ss_family == AF_INET)
		((struct sockaddr_in *)addr)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)addr)->sin6_port = htons(port);
}

ssize_t pf_perform(struct pf_sock *sock, struct pf_call *call)
{
	switch (call->action) {
	case PF_ACT_CONNECT:
		return real_connect(sock->fd, call->dest, call->dest_len);
	case PF_ACT_SENDTO:
		return real_sendto(sock->fd, call->buf, call->len, call->flags, call->dest,
				   call->dest_len);
	case PF_ACT_SENDMSG:
		return real_sendmsg(sock->fd, call->msg, call->flags);
	case PF_ACT_LISTEN:
		return real_listen(sock->fd, call->backlog);
	case PF_ACT_BIND:
		break;
	}
	return 0;
}

static void record_result(struct pf_call *call, ssize_t result)
{
	call->result = result;
	call->result_errno = result < 0 ? errno : 0;
}

static int attempt_port(void *opaque, uint16_t port)
{
	struct attempt_ctx *ctx = opaque;
	int fd = ctx->sock->fd, one = 1;

	if (ctx->reuse_addr && !ctx->reuse_set) {
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
			return -errno;
		ctx->reuse_set = true;
	}
	set_port(&ctx->bind_addr, port);
	if (real_bind(fd, (struct sockaddr *)&ctx->bind_addr, ctx->bind_len) < 0) {
		/* EACCES: a privileged port this process may not use. */
		if (errno == EADDRINUSE || errno == EACCES)
			return PF_TRY_BUSY;
		return errno == EINVAL ? ALREADY_BOUND : -errno;
	}
	if (!ctx->call_in_attempt)
		return PF_TRY_TAKEN;
	ssize_t result = pf_perform(ctx->sock, ctx->call);
	if (result < 0 && errno == EADDRNOTAVAIL) {
		/* This 4-tuple is taken; the bound socket is spent. */
		if (pf_replace_socket(ctx->sock) < 0)
			return -errno;
		ctx->reuse_set = false;
		return PF_TRY_BUSY;
	}
	record_result(ctx->call, result);
	return PF_TRY_TAKEN;
}

static void fill_bind_addr(struct attempt_ctx *ctx)
{
	const struct pf_call *call = ctx->call;

	memset(&ctx->bind_addr, 0, sizeof(ctx->bind_addr));
	if (call->action == PF_ACT_BIND) {
		memcpy(&ctx->bind_addr, call->bind_addr, call->bind_len);
		ctx->bind_len = call->bind_len;
		return;
	}
	ctx->bind_addr.ss_family = (sa_family_t)ctx->sock->family;
	ctx->bind_len = ctx->sock->family == AF_INET6 ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in);
	/* An address the application bound without a port is kept. */
	socklen_t len = sizeof(ctx->bind_addr);
	if (ctx->sock->address_bound &&
	    getsockname(ctx->sock->fd, (struct sockaddr *)&ctx->bind_addr, &len) == 0)
		ctx->bind_len = len;
}

static int exhaustion_errno(const struct pf_sock *sock, const struct pf_call *call)
{
	if (call->action == PF_ACT_BIND || call->action == PF_ACT_LISTEN)
		return EADDRINUSE;
	return sock->udp ? EAGAIN : EADDRNOTAVAIL;
}

static void flow_of(const struct pf_call *call, const struct sockaddr_storage *local,
		    struct pf_flow *flow)
{
	memset(flow, 0, sizeof(*flow));
	if (local->ss_family == AF_INET) {
		flow->local_addr = (const uint8_t *)&((const struct sockaddr_in *)local)->sin_addr;
		flow->local_len = 4;
	} else {
		flow->local_addr = ((const struct sockaddr_in6 *)local)->sin6_addr.s6_addr;
		flow->local_len = 16;
	}
	const struct sockaddr *dest = call->dest;
	if (dest && dest->sa_family == AF_INET && call->dest_len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)dest;
		flow->remote_addr = (const uint8_t *)&sin->sin_addr;
		flow->remote_len = 4;
		flow->remote_port = ntohs(sin->sin_port);
	} else if (dest && dest->sa_family == AF_INET6 &&
		   call->dest_len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)dest;
		flow->remote_addr = sin6->sin6_addr.s6_addr;
		flow->remote_len = 16;
		flow->remote_port = ntohs(sin6->sin6_port);
	}
}

static ssize_t finish(struct pf_call *call)
{
	errno = call->result_errno;
	return call->result;
}

/* Algorithm kernel: IP_LOCAL_PORT_RANGE, then the kernel picks. */
static ssize_t assign_by_kernel(const struct pf_runtime *rt, struct pf_sock *sock,
				struct pf_call *call)
{
	uint32_t range = (uint32_t)rt->app->range_lo | ((uint32_t)rt->app->range_hi << 16);
	/* What the record shows when the kernel gave no port. */
	struct sockaddr_storage requested = {.ss_family = (sa_family_t)sock->family};

	if (setsockopt(sock->fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &range, sizeof(range)) < 0) {
		int error = errno;
		pf_audit_socket(rt, sock, PF_EVENT_ERROR, (const struct sockaddr *)&requested,
				call->dest, 0, error);
		errno = error;
		return -1;
	}
	if (call->action == PF_ACT_BIND) {
		memcpy(&requested, call->bind_addr, call->bind_len);
		record_result(call, real_bind(sock->fd, call->bind_addr, call->bind_len));
	} else {
		record_result(call, pf_perform(sock, call));
	}
	bool exhausted = call->result < 0 && call->result_errno == exhaustion_errno(sock, call);
	if (!exhausted)
		pf_sock_mark(sock, PF_FD_DONE);
	pf_audit_socket(rt, sock, exhausted ? PF_EVENT_ERROR : PF_EVENT_ASSIGN,
			(const struct sockaddr *)&requested, call->dest, 1,
			call->result_errno);
	return finish(call);
}

ssize_t pf_assign_and_call(const struct pf_runtime *rt, struct pf_sock *sock,
			   struct pf_call *call)
{
	struct attempt_ctx ctx = {.sock = sock, .call = call};
	struct pf_pick pick;
	struct pf_flow flow;

	if (rt->app->algorithm == PF_ALGO_KERNEL)
		return assign_by_kernel(rt, sock, call);
	fill_bind_addr(&ctx);
	bool tcp_client = !sock->udp && call->action != PF_ACT_BIND && call->action != PF_ACT_LISTEN;
	ctx.reuse_addr = tcp_client;
	ctx.call_in_attempt = tcp_client;
	flow_of(call, &ctx.bind_addr, &flow);

	int rc = pf_algorithm_pick(rt->app->algorithm, rt->app->range_lo, rt->app->range_hi, &flow,
				   (struct pf_state *)&rt->state, pf_thread_rng(), attempt_port, &ctx,
				   &pick);
	if (rc == ALREADY_BOUND) {
		/* Bound through a path we did not see: it keeps its port. */
		pf_sock_mark(sock, PF_FD_DONE);
		record_result(call, call->action == PF_ACT_BIND ? (errno = EINVAL, -1)
								: pf_perform(sock, call));
		return finish(call);
	}
	if (rc != 0) {
		int error = rc == PF_EXHAUSTED ? exhaustion_errno(sock, call) : -rc;
		pf_audit_socket(rt, sock, PF_EVENT_ERROR, (const struct sockaddr *)&ctx.bind_addr,
				call->dest, pick.attempts, error);
		errno = error;
		return -1;
	}
	pf_sock_mark(sock, PF_FD_DONE);
	if (!ctx.call_in_attempt)
		record_result(call, pf_perform(sock, call));
	pf_audit_socket(rt, sock, PF_EVENT_ASSIGN, (const struct sockaddr *)&ctx.bind_addr,
			call->dest, pick.attempts,
			call->result_errno);
	return finish(call);
}
