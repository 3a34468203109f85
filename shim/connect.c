/* connect: a fresh socket takes its port from the range, then connects. */
#include <errno.h>
#include <netinet/in.h>

#include "core/hot.h"
#include "shim.h"

/* Everything the express path declines, apart: its frame (the socket's
 * description) is not the express path's. */
static PF_HOT __attribute__((noinline)) int connect_general(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct pf_sock sock;

	pf_fd_recheck_for(fd, addr);
	if (!pf_inet_address(addr, len) || !pf_sock_lookup(fd, &sock) || !pf_fits_socket(&sock, addr))
		return real_connect(fd, addr, len);
	return (int)pf_managed_connect(&sock, addr, len);
}

/* An IPv6-only socket toward an IPv4 address (v4-mapped): no source the
 * shim could bind serves it, and the kernel's answer (ENETUNREACH) is the
 * program's to see. */
static __attribute__((noinline)) bool v6_only_toward_v4(int fd, const struct sockaddr *addr, socklen_t len)
{
	const struct sockaddr_in6 *six = (const struct sockaddr_in6 *)addr;
	int only = 0, saved = errno;
	socklen_t only_len = sizeof(only);

	if (len < sizeof(*six) || !IN6_IS_ADDR_V4MAPPED(&six->sin6_addr) ||
	    real_getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, &only_len) < 0)
		only = 0;
	errno = saved;
	return only != 0;
}

PF_HOT int pf_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int result;

	if (pf_user_readable(addr, len) && addr->sa_family == AF_INET6 && v6_only_toward_v4(fd, addr, len))
		return real_connect(fd, addr, len);
	if (pf_connect_express(fd, addr, len, &result))
		return result;
	return connect_general(fd, addr, len);
}
