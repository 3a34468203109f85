/* connect: a fresh socket takes its port from the range, then connects. */
#include <errno.h>

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

PF_HOT int pf_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int result;

	if (pf_connect_express(fd, addr, len, &result))
		return result;
	return connect_general(fd, addr, len);
}
