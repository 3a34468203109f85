/* The kernel's own word on one TCP 4-tuple, asked over NETLINK_SOCK_DIAG
 * with an exact lookup (no dump): the same hash lookup a packet gets. */
#ifndef PORTFENCE_SOCKDIAG_H
#define PORTFENCE_SOCKDIAG_H

#include <stdbool.h>
#include <sys/socket.h>

/* What connect() from local to remote would meet. */
enum pf_tuple_use {
	PF_TUPLE_FREE,		/* nothing there, or a listener on our port */
	PF_TUPLE_TIME_WAIT,	/* TIME_WAIT proper: reusable at once */
	PF_TUPLE_LINGERING,	/* closed by us, not yet by the peer: the kernel
				 * reuses it, but a SYN meets the peer's old
				 * socket and waits a second */
	PF_TUPLE_BUSY,		/* a socket in any other state */
	PF_TUPLE_UNKNOWN,	/* the kernel could not be asked */
};

/* Asks on netlink_fd, a NETLINK_SOCK_DIAG socket kept by the caller, or
 * on a socket of its own when netlink_fd is -1. */
enum pf_tuple_use pf_tcp_tuple_use(const struct sockaddr *local, const struct sockaddr *remote,
				   int netlink_fd);

#endif
