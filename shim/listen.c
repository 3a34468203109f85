#include "shim.h"

PF_EXPORT int listen(int fd, int backlog)
{
	pf_fd_recheck(fd);
	return pf_listen(fd, backlog);
}
