/* socket: the fd table learns the new socket's kind. */
#include "core/hot.h"
#include "fdholds.h"

PF_HOT int pf_socket(int domain, int type, int protocol)
{
	int fd = real_socket(domain, type, protocol);

	if (fd >= 0) {
		pf_fd_set(fd, pf_fd_state_for(domain, type, protocol));
		pf_fd_new_socket(fd);
	}
	return fd;
}
