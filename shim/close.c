/* close: the fd forgets its state and hold; the log's fd is not the
 * program's to close. */
#include <errno.h>

#include "core/hot.h"
#include "fdholds.h"

PF_HOT int pf_close(int fd)
{
	if (pf_is_log_fd(fd)) {
		errno = EBADF;
		return -1;
	}
	/* Taken before the real close: once the number is free, another
	 * thread's socket may take it, and its state and hold are not ours
	 * to drop.  The hold is released after it (fdholds.c says why). */
	pf_fd_forget(fd);
	struct pf_taken_hold hold = pf_fd_take_hold(fd);
	int result = real_close(fd);
	/* Memory and the clock only: errno stays close's. */
	pf_fd_release_taken(hold);
	return result;
}
