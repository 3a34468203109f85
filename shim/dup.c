/* dup: the socket has two fds now, and closing one leaves it open.  Its
 * hold is marked shared, so that neither close releases the 4-tuple
 * (the next connect to it asks the kernel); released at the first close,
 * it was handed out again while the second fd kept it: EADDRNOTAVAIL. */
#include "shim.h"

int pf_dup(int fd)
{
	int copy = real_dup(fd);

	if (copy >= 0)
		pf_fd_hold_shared(fd);
	return copy;
}
