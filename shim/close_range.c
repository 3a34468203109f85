/* close_range: every fd in the range forgets its state, the log's spared. */
#include <errno.h>
#include <linux/close_range.h>

#include "shim.h"

int pf_close_range(unsigned int first, unsigned int last, int flags)
{
	struct pf_taken_hold holds[PF_TAKEN_HOLDS_MAX];
	unsigned held = 0;

	if (!(flags & CLOSE_RANGE_CLOEXEC) && first <= last) {
		pf_fd_forget_range(first, last);
		held = pf_fd_take_holds(first, last, holds, PF_TAKEN_HOLDS_MAX);
	}
	pf_fd_lock();
	int result = pf_close_range_sparing_log(first, last, flags);
	int saved = errno;
	pf_fd_unlock();
	for (unsigned i = 0; i < held; i++)
		pf_fd_release_taken(holds[i]);
	errno = saved;
	return result;
}
