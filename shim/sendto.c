#include "shim.h"

PF_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
			 const struct sockaddr *addr, socklen_t addr_len)
{
	if (pf_send_passes(fd, addr != NULL))
		return pf_fast_real_sendto(fd, buf, len, flags, addr, addr_len);
	return pf_sendto(fd, buf, len, flags, addr, addr_len);
}
