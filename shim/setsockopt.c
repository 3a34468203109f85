#include "shim.h"

PF_EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	return pf_setsockopt(fd, level, name, value, len);
}
