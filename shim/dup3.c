/* dup3: as dup2, with flags. */
#include "shim.h"

int pf_dup3(int old_fd, int new_fd, int flags)
{
	return pf_duplicate_onto(old_fd, new_fd, flags < 0 ? 0 : flags);
}
