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

#include "core/hot.h"
#include "shim.h"

#define TABLE_SIZE PF_FD_TABLE_SIZE

struct pf_fd_entry pf_fd_table[PF_FD_TABLE_SIZE];
_Atomic int pf_dest_checks = 1;

void pf_fd_set_options(int fd, uint8_t set, uint8_t clear)
{
	if (fd < 0 || fd >= TABLE_SIZE)
		return;
	uint8_t old = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed), updated;
	do {
		if ((old & PF_FD_STATUS_MASK) == PF_FD_FOREIGN || (old & PF_FD_STATUS_MASK) == PF_FD_UNKNOWN)
			return;
		updated = (uint8_t)((old & ~clear) | set);
	} while (!atomic_compare_exchange_weak(&pf_fd_table[fd].state, &old, updated));
}

bool pf_sock_reuse_asked(const struct pf_sock *sock)
{
	int on = 0, saved = errno;
	socklen_t len = sizeof(on);

	bool set = real_getsockopt(sock->fd, SOL_SOCKET, SO_REUSEADDR, &on, &len) == 0 && on;
	errno = saved;
	return set;
}

/* We turned SO_REUSEADDR on over the program's "off" (set or default):
 * the program reads "off" again. */
PF_HOT void pf_sock_note_our_reuse(const struct pf_sock *sock)
{
	int fd = sock->fd;

	/* A load and a store, not pf_fd_set_options' locked exchange: this
	 * is the connect path's, which marks the entry with a plain store
	 * (pf_sock_mark) a moment later anyway. */
	if (fd < 0 || fd >= TABLE_SIZE)
		return;
	uint8_t old = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed);
	if ((old & PF_FD_STATUS_MASK) != PF_FD_FOREIGN && (old & PF_FD_STATUS_MASK) != PF_FD_UNKNOWN &&
	    !(old & PF_FD_REUSE_OURS))
		atomic_store_explicit(&pf_fd_table[fd].state, (uint8_t)(old | PF_FD_REUSE_OURS), memory_order_relaxed);
}

bool pf_sock_local(const struct pf_sock *sock, struct sockaddr_storage *local)
{
	socklen_t len = sizeof(*local);
	int saved = errno;
	bool known = real_getsockname(sock->fd, (struct sockaddr *)local, &len) == 0 &&
		     (local->ss_family == AF_INET || local->ss_family == AF_INET6);
	errno = saved;
	return known;
}

bool pf_sock_has_port(const struct pf_sock *sock)
{
	struct sockaddr_storage local;
	return pf_sock_local(sock, &local) && pf_address_port((const struct sockaddr *)&local) != 0;
}

socklen_t pf_wildcard_of(int family, struct sockaddr_storage *addr)
{
	memset(addr, 0, sizeof(*addr));
	addr->ss_family = (sa_family_t)family;
	return pf_address_len(family);
}

uint16_t pf_address_port(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
}

void pf_fd_forget_range(unsigned int first, unsigned int last)
{
	for (unsigned int fd = first; fd <= last && fd < TABLE_SIZE; fd++)
		atomic_store_explicit(&pf_fd_table[fd].state, PF_FD_UNKNOWN, memory_order_relaxed);
}

/* FRESH, DONE, or FRESH with PF_FD_ADDRESS for a socket bound to an
 * address whose port waits for connect (IP_BIND_ADDRESS_NO_PORT). */
static uint8_t binding_status(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	static const uint8_t any6[16];

	if (real_getsockname(fd, (struct sockaddr *)&local, &len) < 0)
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
uint8_t pf_fd_classify(int fd)
{
	int domain, type, protocol, saved = errno;
	socklen_t len = sizeof(int);
	uint8_t state = PF_FD_FOREIGN;

	if (real_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
	    real_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	    real_getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0) {
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
	uint8_t status = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed) & PF_FD_STATUS_MASK;
	if (status != PF_FD_DONE && status != PF_FD_FOREIGN)
		return;
	int saved = errno;
	bool holds = status == PF_FD_DONE ? still_has_port(fd) : still_foreign(fd);
	/* Forgotten, the entry is classified afresh by the lookup. */
	if (!holds)
		pf_fd_forget(fd);
	errno = saved;
}

