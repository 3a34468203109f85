/* The kernel's own word on one TCP 4-tuple, asked over NETLINK_SOCK_DIAG
 * with an exact lookup (no dump): the same hash lookup a packet gets. */
#ifndef PORTFENCE_SOCKDIAG_H
#define PORTFENCE_SOCKDIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* What connect() from local to remote would meet. */
enum pf_tuple_use {
	PF_TUPLE_FREE,		/* nothing there, or a listener on our port */
	PF_TUPLE_TIME_WAIT,	/* TIME_WAIT proper, settled: reusable at once */
	PF_TUPLE_SETTLING,	/* TIME_WAIT entered a few ms ago: our last ACK
				 * may not have reached the peer yet (see
				 * sockdiag.c); free within TIME_WAIT_SETTLE_MS */
	PF_TUPLE_LINGERING,	/* closed by us, not yet by the peer: a SYN
				 * meets the peer's old socket (a reset and
				 * 8 ms, or a second when the peer's FIN
				 * crosses it); never taken, only waited for */
	PF_TUPLE_BUSY,		/* a socket in any other state */
	PF_TUPLE_CLOSING,	/* closed, its FIN not yet acknowledged
				 * (FIN_WAIT1, CLOSING, LAST_ACK): taken, but
				 * soon TIME_WAIT or gone (a peer that delays
				 * its ACK until it closes keeps it there) */
	PF_TUPLE_UNKNOWN,	/* the kernel could not be asked */
};

/* Asks on netlink_fd, a NETLINK_SOCK_DIAG socket kept by the caller, or
 * on a socket of its own when netlink_fd is -1. */
enum pf_tuple_use pf_tcp_tuple_use(const struct sockaddr *local, const struct sockaddr *remote,
				   int netlink_fd);

/* A dump of every TCP and UDP socket, IPv4 and IPv6, in any state,
 * whose local port lies in one of the ranges: the kernel runs the port
 * filter (INET_DIAG_REQ_BYTECODE), so sockets outside the ranges never
 * cross into user space. */
struct pf_port_range {
	uint16_t lo, hi;
};

struct pf_socket_entry {
	uint8_t family;		/* AF_INET or AF_INET6 */
	uint8_t protocol;	/* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t state;		/* TCP_* (a connected UDP socket is TCP_ESTABLISHED) */
	uint16_t local_port, remote_port;
	uint8_t local_addr[16], remote_addr[16];	/* IPv4 in the first 4 bytes */
	uint32_t inode;		/* 0 for TIME_WAIT and request sockets */
	uint32_t uid;
};

typedef void (*pf_socket_visit)(const struct pf_socket_entry *entry, void *ctx);

/* Calls visit for each socket found.  Returns 0, or -errno when the
 * kernel could not be asked (a protocol whose diag module is missing,
 * EINVAL/ENOENT, is skipped). */
int pf_sockdiag_dump_ports(const struct pf_port_range *ranges, size_t count,
			   pf_socket_visit visit, void *ctx);

#endif
