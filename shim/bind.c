#include "shim.h"

PF_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	pf_fd_recheck_for(fd, addr);
	return pf_bind(fd, addr, len);
}
