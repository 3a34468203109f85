/* bind: an explicit port is checked against the ranges; bind(addr, 0)
 * defers the port (TCP) or takes one from the range (UDP). */
#include <errno.h>
#include <netinet/in.h>

#include "shim.h"

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
	struct pf_decision decision = pf_ask(rt, sock, &question);
	char rule[300];

	if (decision.verdict == PF_VERDICT_REFUSE || decision.verdict == PF_VERDICT_AUDIT)
		pf_app_bind_rule(&rt->policy, rt->app, port, rule, sizeof(rule));
	if (decision.verdict == PF_VERDICT_REFUSE)
		return (int)pf_refuse_by(rt, sock, decision.event, addr, NULL, decision.error, rule);
	if (decision.verdict == PF_VERDICT_AUDIT) {
		struct pf_record record = {.event = PF_EVENT_AUDIT, .sock = sock, .local = addr,
					   .error = decision.error, .rule = rule};
		pf_audit(rt, &record);
	}
	int result = real_bind(sock->fd, addr, len);
	int saved = errno;
	if (result == 0)
		pf_sock_mark(sock, PF_FD_DONE);
	/* A port the program chose: the log shows it (event bind), bound or not. */
	if (decision.verdict == PF_VERDICT_CALL && decision.event == PF_EVENT_BIND)
		pf_audit_event(rt, sock, PF_EVENT_BIND, addr, NULL, result == 0 ? 0 : saved);
	errno = saved;
	return result;
}

static int bind_without_port(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len)
{
	struct pf_call call = {.action = PF_ACT_BIND, .bind_addr = addr, .bind_len = len};

	if (sock->udp)
		return (int)pf_managed(sock, &call, true);
	const struct pf_runtime *rt = pf_runtime();
	struct pf_decision decision = pf_decide_call(rt, sock, &call, true);
	if (decision.verdict == PF_VERDICT_REFUSE)
		return (int)pf_refuse(rt, sock, decision.event, addr, NULL, decision.error);
	if (decision.verdict == PF_VERDICT_DEFER)
		return pf_bind_address_only(sock, addr, len);
	return real_bind(sock->fd, addr, len);
}

int pf_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct pf_sock sock;

	pf_fd_recheck_for(fd, addr);
	if (!pf_inet_address(addr, len) || !pf_sock_lookup(fd, &sock) || !pf_fits_socket(&sock, addr))
		return real_bind(fd, addr, len);
	/* Its bind(addr, 0) we deferred: as the program sees it the socket
	 * has a port, and the kernel refuses a second bind of such a socket
	 * (unless the program asked IP_BIND_ADDRESS_NO_PORT itself). */
	if (sock.status == PF_FD_FRESH && sock.address_bound && !pf_program_defers_port(fd)) {
		errno = EINVAL;
		return -1;
	}
	if (pf_address_port(addr) != 0 || sock.status != PF_FD_FRESH || sock.address_bound)
		return explicit_bind(&sock, addr, len);
	return bind_without_port(&sock, addr, len);
}
