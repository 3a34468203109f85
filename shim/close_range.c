/* close_range: every fd in the range forgets its state, the log's spared.
 * The holds of the sockets closed are released after their close (a
 * 4-tuple freed in memory while its socket is still open could be handed
 * to another process of the app: fdholds.c), PF_TAKEN_HOLDS_MAX at a
 * time: a range with more held sockets is closed in as many pieces, in
 * order, each one's holds released once it is closed. */
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

int pf_close_range(unsigned int first, unsigned int last, int flags)
{
	if ((flags & CLOSE_RANGE_CLOEXEC) || first > last)
		return close_sparing_log(first, last, flags);
	for (;;) {
		struct pf_taken_hold holds[PF_TAKEN_HOLDS_MAX];
		unsigned int end;
		unsigned held = pf_fd_take_holds(first, last, holds, PF_TAKEN_HOLDS_MAX, &end);
		pf_fd_forget_range(first, end);
		int result = close_sparing_log(first, end, flags);
		int saved = errno;
		for (unsigned i = 0; i < held; i++)
			pf_fd_release_taken(holds[i]);
		errno = saved;
		if (result != 0 || end >= last)
			return result;
		first = end + 1;
	}
}
