/* bind: an explicit port is checked against the ranges; bind(addr, 0)
 * defers the port (TCP) or takes one from the range (UDP). */
#include <errno.h>
#include <netinet/in.h>

#include "shim.h"

/* Another app's port, whatever this app's explicit_bind says: one app's
 * policy must not let it take ports from another app's range. */
static bool in_another_apps_range(const struct pf_runtime *rt, uint16_t port)
{
	int owner = pf_policy_app_at_port(&rt->policy, port);
	return owner >= 0 && &rt->policy.apps[owner] != rt->app;
}

static bool bind_refused(const struct pf_runtime *rt, const struct pf_sock *sock, uint16_t port)
{
	/* bind(0) on a bound socket is the kernel's to answer (EINVAL). */
	if (port == 0 || rt->status != PF_STATUS_ACTIVE || !pf_runtime_manages(rt, sock))
		return false;
	bool outside = port < rt->app->range_lo || port > rt->app->range_hi;
	return outside && (rt->app->deny_explicit_bind || in_another_apps_range(rt, port));
}

static int explicit_bind(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len)
{
	const struct pf_runtime *rt = pf_runtime();
	uint16_t port = pf_address_port(addr);

	if (bind_refused(rt, sock, port)) {
		if (rt->mode == PF_MODE_ENFORCE)
			return (int)pf_refuse(rt, sock, PF_EVENT_DENY, addr, NULL, EACCES);
		pf_audit_event(rt, sock, PF_EVENT_AUDIT, addr, NULL, EACCES);
	}
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
		return (int)pf_managed(sock, &call, true);
	const struct pf_runtime *rt = pf_runtime();
	struct pf_decision decision = pf_decide_call(rt, sock, &call, false);
	if (decision.verdict == PF_VERDICT_REFUSE)
		return (int)pf_refuse(rt, sock, decision.event, addr, NULL, decision.error);
	if (decision.verdict == PF_VERDICT_PASS)
		return real_bind(sock->fd, addr, len);
	return pf_bind_address_only(sock, addr, len);
}

int pf_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct pf_sock sock;

	pf_fd_recheck_for(fd, addr);
	if (!pf_inet_address(addr, len) || !pf_sock_lookup(fd, &sock) || !pf_fits_socket(&sock, addr))
		return real_bind(fd, addr, len);
	if (pf_address_port(addr) != 0 || sock.status != PF_FD_FRESH || sock.address_bound)
		return explicit_bind(&sock, addr, len);
	return bind_without_port(&sock, addr, len);
}
