/* What the shim knows of each fd, so that a socket already handled, or
 * not ours, costs no syscall on later calls.  socket() and close() keep
 * the table current; an fd the table has never seen is classified once
 * with getsockopt and getsockname.
 *
 * An entry can outlive its socket: a close the hooks do not see
 * (fclose(fdopen(fd)) and glibc's other internal closes, syscall(SYS_close)),
 * then a socket on the same number that the hooks do not see made (dup,
 * fcntl(F_DUPFD), accept, an fd received over a unix socket).  Every call
 * that would let the kernel give a port (connect, bind, listen) asks the
 * kernel once about an entry that says "has its port" or "not ours"
 * (pf_fd_recheck); sends on a handled socket, the hot path, do not. */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

#include "shim.h"

#define TABLE_SIZE PF_FD_TABLE_SIZE

_Atomic uint8_t pf_fd_table[PF_FD_TABLE_SIZE];
_Atomic int pf_dest_checks = 1;

__thread int pf_in_shim __attribute__((tls_model("initial-exec")));

uint8_t pf_fd_state_for(int family, int type, int protocol)
{
	int base_type = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (family != AF_INET && family != AF_INET6)
		return PF_FD_FOREIGN;
	uint8_t bits = family == AF_INET6 ? PF_FD_V6 : 0;
	if (base_type == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP))
		return PF_FD_FRESH | bits;
	if (base_type == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP))
		return PF_FD_FRESH | bits | PF_FD_UDP;
	return PF_FD_FOREIGN;
}

void pf_fd_set(int fd, uint8_t state)
{
	if (fd >= 0 && fd < TABLE_SIZE)
		atomic_store_explicit(&pf_fd_table[fd], state, memory_order_relaxed);
}

void pf_sock_mark(const struct pf_sock *sock, uint8_t status)
{
	uint8_t kind = pf_fd_state_for(sock->family, sock->type, 0) & ~PF_FD_STATUS_MASK;
	pf_fd_set(sock->fd, (uint8_t)(kind | status));
}

uint16_t pf_address_port(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
}

void pf_fd_forget(int fd)
{
	pf_fd_set(fd, PF_FD_UNKNOWN);
}

void pf_fd_forget_range(unsigned int first, unsigned int last)
{
	for (unsigned int fd = first; fd <= last && fd < TABLE_SIZE; fd++)
		atomic_store_explicit(&pf_fd_table[fd], PF_FD_UNKNOWN, memory_order_relaxed);
}

/* FRESH, DONE, or FRESH with PF_FD_ADDRESS for a socket bound to an
 * address whose port waits for connect (IP_BIND_ADDRESS_NO_PORT). */
static uint8_t binding_status(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	static const uint8_t any6[16];

	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return PF_FD_DONE; /* cannot tell: leave it alone */
	if (pf_address_port((struct sockaddr *)&local) != 0)
		return PF_FD_DONE;
	bool specific = local.ss_family == AF_INET
				? ((struct sockaddr_in *)&local)->sin_addr.s_addr != htonl(INADDR_ANY)
				: memcmp(((struct sockaddr_in6 *)&local)->sin6_addr.s6_addr, any6, 16) != 0;
	return specific ? (PF_FD_FRESH | PF_FD_ADDRESS) : PF_FD_FRESH;
}

/* One-time classification of an fd we never saw created.  errno is kept:
 * a pass-through must show libc's errno, not ours. */
static uint8_t classify(int fd)
{
	int domain, type, protocol, saved = errno;
	socklen_t len = sizeof(int);
	uint8_t state = PF_FD_FOREIGN;

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0) {
		state = pf_fd_state_for(domain, type, protocol);
		if ((state & PF_FD_STATUS_MASK) == PF_FD_FRESH)
			state = (uint8_t)((state & ~PF_FD_STATUS_MASK) | binding_status(fd));
		pf_fd_set(fd, state);
	}
	/* Not a socket, or closed: not cached, the number may be reused. */
	errno = saved;
	return state;
}

/* Whether fd is still what a DONE entry says: an IP socket with a port. */
static bool still_has_port(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);

	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return false;
	if (local.ss_family != AF_INET && local.ss_family != AF_INET6)
		return false;
	return pf_address_port((struct sockaddr *)&local) != 0;
}

/* Whether fd is still what a FOREIGN entry says: not an IP socket.  An IP
 * socket of a kind we leave alone (raw, SCTP, ICMP) is classified again,
 * which says FOREIGN again. */
static bool still_foreign(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);

	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return false;
	return local.ss_family != AF_INET && local.ss_family != AF_INET6;
}

void pf_fd_recheck(int fd)
{
	if (fd < 0 || fd >= TABLE_SIZE)
		return;
	uint8_t status = atomic_load_explicit(&pf_fd_table[fd], memory_order_relaxed) & PF_FD_STATUS_MASK;
	if (status != PF_FD_DONE && status != PF_FD_FOREIGN)
		return;
	int saved = errno;
	bool holds = status == PF_FD_DONE ? still_has_port(fd) : still_foreign(fd);
	/* Forgotten, the entry is classified afresh by the lookup. */
	if (!holds)
		pf_fd_forget(fd);
	errno = saved;
}

void pf_fd_recheck_for(int fd, const struct sockaddr *addr)
{
	if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
		pf_fd_recheck(fd);
}

bool pf_sock_lookup(int fd, struct pf_sock *sock)
{
	uint8_t state;

	if (fd < 0)
		return false;
	state = fd < TABLE_SIZE ? atomic_load_explicit(&pf_fd_table[fd], memory_order_relaxed)
				: PF_FD_UNKNOWN;
	if (state == PF_FD_UNKNOWN)
		state = classify(fd);
	if ((state & PF_FD_STATUS_MASK) == PF_FD_FOREIGN)
		return false;
	sock->fd = fd;
	sock->status = state & PF_FD_STATUS_MASK;
	sock->family = state & PF_FD_V6 ? AF_INET6 : AF_INET;
	sock->udp = state & PF_FD_UDP;
	sock->type = sock->udp ? SOCK_DGRAM : SOCK_STREAM;
	sock->address_bound = state & PF_FD_ADDRESS;
	sock->protocol = sock->udp ? IPPROTO_UDP : IPPROTO_TCP;
	return true;
}
