#include "shim.h"

PF_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return pf_connect(fd, addr, len);
}
