/* listen on a socket with no port: it takes one from the range. */
#include <errno.h>

#include "shim.h"

int pf_listen(int fd, int backlog)
{
	struct pf_sock sock;

	pf_fd_recheck(fd);
	if (!pf_sock_lookup(fd, &sock) || sock.udp || sock.status != PF_FD_FRESH)
		return real_listen(fd, backlog);
	struct pf_call call = {.action = PF_ACT_LISTEN, .backlog = backlog};
	return (int)pf_managed(&sock, &call, true);
}
