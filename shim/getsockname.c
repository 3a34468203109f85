#include "shim.h"

PF_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	return pf_getsockname(fd, addr, len);
}
