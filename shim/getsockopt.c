#include "shim.h"

PF_EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
	return pf_getsockopt(fd, level, name, value, len);
}
