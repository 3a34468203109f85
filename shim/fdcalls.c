/* What close, dup2, dup3, close_range and closefrom share (each one's
 * logic is in the file named after it): they keep the fd table current
 * and keep the audit log's fd out of the program's reach.  The log fd is
 * not the program's: closing it answers EBADF as for any fd the program
 * never opened, and a dup2 onto its number moves the log elsewhere.
 * Everything but close runs under the fd lock, so that the log never
 * moves onto a number another thread is taking at the same moment. */
#include <errno.h>
#include <linux/close_range.h>

#include "core/hot.h"
#include "shim.h"

/* dup2 (flags < 0) or dup3 onto new_fd, the log moved out of the way. */
int pf_duplicate_onto(int old_fd, int new_fd, int flags)
{
	int result;

	pf_fd_lock();
	if (pf_is_log_fd(old_fd)) {
		pf_fd_unlock();
		errno = EBADF;
		return -1;
	}
	if (old_fd != new_fd)
		pf_log_move_away_from(new_fd);
	result = flags < 0 ? real_dup2(old_fd, new_fd) : real_dup3(old_fd, new_fd, flags);
	int saved = errno;
	pf_fd_unlock();
	if (result >= 0 && old_fd != new_fd) {
		pf_fd_forget(new_fd);
		pf_fd_release_hold(new_fd);
		pf_fd_hold_shared(old_fd);
	}
	errno = saved;
	return result;
}

/* Closes [first, last] except the log's fd.  CLOSE_RANGE_CLOEXEC only
 * marks fds close-on-exec, which the log already is. */
int pf_close_range_sparing_log(unsigned int first, unsigned int last, int flags)
{
	int log = pf_log_fd();

	if (log < 0 || (unsigned)log < first || (unsigned)log > last || first > last ||
	    (flags & CLOSE_RANGE_CLOEXEC))
		return real_close_range(first, last, flags);
	int result = 0;
	if ((unsigned)log > first)
		result = real_close_range(first, (unsigned)log - 1, flags);
	if (result == 0 && (unsigned)log < last)
		result = real_close_range((unsigned)log + 1, last, flags);
	return result;
}
