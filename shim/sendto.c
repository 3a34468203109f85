/* sendto: unbound UDP (or TCP Fast Open) takes its port at the first send. */
#include <errno.h>

#include "shim.h"

ssize_t pf_sendto(int fd, const void *buf, size_t len, int flags,
		  const struct sockaddr *addr, socklen_t addr_len)
{
	struct pf_sock sock;

	/* Passed through: the hot path, decided from the fd table without a
	 * system call, or a socket that is not ours. */
	if (pf_send_passes(fd, addr != NULL) || !pf_sock_lookup(fd, &sock))
		return real_sendto(fd, buf, len, flags, addr, addr_len);
	struct pf_call call = {
		.action = PF_ACT_SENDTO, .dest = addr, .dest_len = addr_len,
		.buf = buf, .len = len, .flags = flags,
	};
	return pf_managed_send(&sock, &call);
}
