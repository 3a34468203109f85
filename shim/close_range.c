/* close_range: every fd in the range forgets its state and releases its
 * hold after its close (pf_fd_close_releasing); the log's fd is spared. */
#include <errno.h>
#include <linux/close_range.h>

#include "shim.h"

static int close_sparing_log(unsigned int first, unsigned int last, int flags)
{
	pf_fd_lock();
	int result = pf_close_range_sparing_log(first, last, flags);
	int saved = errno;
	pf_fd_unlock();
	errno = saved;
	return result;
}

static int close_piece(unsigned int first, unsigned int end, void *flags)
{
	return close_sparing_log(first, end, *(const int *)flags);
}

int pf_close_range(unsigned int first, unsigned int last, int flags)
{
	if ((flags & CLOSE_RANGE_CLOEXEC) || first > last)
		return close_sparing_log(first, last, flags);
	return pf_fd_close_releasing(first, last, close_piece, &flags);
}
