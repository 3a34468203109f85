#include "shim.h"

PF_EXPORT int close(int fd)
{
	return pf_close(fd);
}
