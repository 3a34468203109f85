/* getsockopt: SO_REUSEADDR that the shim set is turned off before the
 * program reads it (see setsockopt.c). */
#include <errno.h>

#include "shim.h"

int pf_getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
	uint8_t bits;

	if (level == SOL_SOCKET && name == SO_REUSEADDR && pf_fd_ours(fd, &bits) &&
	    (bits & PF_FD_REUSE_OURS)) {
		int off = 0, saved = errno;
		if (real_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &off, sizeof(off)) == 0)
			pf_fd_set_options(fd, 0, PF_FD_REUSE_OURS);
		errno = saved;
	}
	return real_getsockopt(fd, level, name, value, len);
}
