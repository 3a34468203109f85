#include "shim.h"

PF_EXPORT int listen(int fd, int backlog)
{
	return pf_listen(fd, backlog);
}
