#include "shim.h"

PF_EXPORT int dup3(int old_fd, int new_fd, int flags)
{
	return pf_dup3(old_fd, new_fd, flags);
}
