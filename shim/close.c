/* close: the fd forgets its state and hold; the log's fd is not the
 * program's to close. */
#include <errno.h>

#include "core/hot.h"
#include "shim.h"

PF_HOT int pf_close(int fd)
{
	if (pf_is_log_fd(fd)) {
		errno = EBADF;
		return -1;
	}
	/* Before the real close: once the number is free, another thread's
	 * socket may take it, and its state and hold are not ours to drop. */
	pf_fd_forget(fd);
	pf_fd_release_hold(fd);
	return real_close(fd);
}
