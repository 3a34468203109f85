/* dup2 onto a number the log may stand on: the log moves away. */
#include "shim.h"

int pf_dup2(int old_fd, int new_fd)
{
	return pf_duplicate_onto(old_fd, new_fd, -1);
}
