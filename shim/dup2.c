#include "shim.h"

PF_EXPORT int dup2(int old_fd, int new_fd)
{
	return pf_dup2(old_fd, new_fd);
}
