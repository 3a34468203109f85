#include "shim.h"

PF_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	return pf_bind(fd, addr, len);
}
