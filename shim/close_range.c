/* close_range: every fd in the range forgets its state, the log's spared. */
#include <errno.h>
#include <linux/close_range.h>

#include "shim.h"

int pf_close_range(unsigned int first, unsigned int last, int flags)
{
	if (!(flags & CLOSE_RANGE_CLOEXEC) && first <= last) {
		pf_fd_forget_range(first, last);
		pf_fd_release_holds(first, last);
	}
	pf_fd_lock();
	int result = pf_close_range_sparing_log(first, last, flags);
	int saved = errno;
	pf_fd_unlock();
	errno = saved;
	return result;
}
