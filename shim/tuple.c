/* What a TCP connect needs to know before it binds: the source address
 * the kernel would use toward a destination (learned, so that the socket
 * binds the concrete address and connect need not re-hash it), and
 * whether a 4-tuple is free (the kernel's answer over sock_diag, on a
 * netlink socket kept open at a high fd number).  Both are asked only
 * where the app's memory of its own holdings cannot answer. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "core/hot.h"
#include "core/holds.h"
#include "shim.h"
#include "kernel/sockdiag.h"

/* How long a learned source address is trusted at most: PF_SOURCE_TTL_MS
 * (shim.h).  A change of
 * routes or addresses forgets every learned source at once: the kernel
 * tells a netlink socket of this process (RTMGRP_*_ROUTE, *_IFADDR),
 * which each lookup asks without waiting (not for a loopback
 * destination, reached from loopback whatever the routes).  A source that outlived its
 * route would send SYNs that a router filtering by reverse path drops. */
#define SOURCE_CACHE_SIZE 64
#define PRIVATE_FD_FLOOR 900

/* Every field is atomic (relaxed: plain moves on x86) so that the
 * seqlock's reader, which may overlap a writer and then retries, is not a
 * data race in C11's sense (TSan reported it as one). */
struct source_entry {
	_Atomic uint32_t sequence;	/* odd while being written */
	_Atomic uint32_t epoch;		/* the route epoch it was learned in */
	_Atomic int family;
	_Atomic uint32_t remote[4];	/* address bytes, IPv4 in the first word */
	_Atomic uint32_t local[4];
	_Atomic uint32_t learned_ms;
};

static void words_store(_Atomic uint32_t *words, const uint8_t *bytes, size_t len)
{
	uint32_t copy[4];

	memcpy(copy, bytes, len);
	for (size_t i = 0; i < len / 4; i++)
		atomic_store_explicit(&words[i], copy[i], memory_order_relaxed);
}

static void words_load(uint32_t *out, _Atomic uint32_t *words, size_t len)
{
	for (size_t i = 0; i < len / 4; i++)
		out[i] = atomic_load_explicit(&words[i], memory_order_relaxed);
}

#define RELAXED(field) atomic_load_explicit(&(field), memory_order_relaxed)
#define SET_RELAXED(field, value) atomic_store_explicit(&(field), (value), memory_order_relaxed)

static struct source_entry source_cache[SOURCE_CACHE_SIZE];
/* Bumped after each entry learned or forgotten: a per-thread copy of a
 * lookup's answer (assign.c's last connect) is good while it stands. */
PF_HOT_DATA _Atomic uint32_t pf_source_generation_now;


static size_t address_bytes(const struct sockaddr *addr, const uint8_t **bytes)
{
	if (addr->sa_family == AF_INET) {
		*bytes = (const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr;
		return 4;
	}
	*bytes = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
	return 16;
}

/* The address's words folded, then a multiplicative hash's top bits: a
 * few instructions, where a byte loop was a fifth of the lookup. */
static struct source_entry *source_slot(const struct sockaddr *remote)
{
	const uint8_t *bytes;
	size_t len = address_bytes(remote, &bytes);
	uint32_t words[4] = {0};

	memcpy(words, bytes, len == 4 ? 4 : 16);
	uint32_t folded = words[0] ^ words[1] ^ words[2] ^ words[3];
	_Static_assert(SOURCE_CACHE_SIZE == 64, "the hash keeps 6 bits");
	return &source_cache[(folded * 2654435769u) >> 26];
}

/* ---- the kernel's word on route and address changes ---- */

static _Atomic int route_fd = -1;
static _Atomic ino_t route_inode;
static _Atomic pid_t route_owner;
static atomic_flag route_busy = ATOMIC_FLAG_INIT;
/* Bumped at each change seen: sources learned before it are not used. */
static _Atomic uint32_t route_epoch = 1;

static void route_close(void)
{
	int fd = atomic_exchange(&route_fd, -1);
	if (fd >= 0 && atomic_load(&route_owner) == pf_cached_pid())
		syscall(SYS_close, fd);
	atomic_fetch_add(&route_epoch, 1);
}

/* A socket of this process (a forked child opens its own: two readers
 * would take each other's news), at a high fd number. */
static int route_open(void)
{
	struct sockaddr_nl groups = {
		.nl_family = AF_NETLINK,
		.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_ROUTE |
			     RTMGRP_IPV6_IFADDR | RTMGRP_LINK,
	};
	struct stat info;
	long fresh = syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);

	if (fresh < 0)
		return -1;
	int high = -1;
	if (syscall(SYS_bind, fresh, &groups, sizeof(groups)) == 0)
		high = fcntl((int)fresh, F_DUPFD_CLOEXEC, PRIVATE_FD_FLOOR);
	syscall(SYS_close, fresh);
	if (high < 0)
		return -1;
	if (fstat(high, &info) < 0) {
		syscall(SYS_close, high);
		return -1;
	}
	atomic_store(&route_inode, info.st_ino);
	atomic_store(&route_owner, pf_cached_pid());
	atomic_store(&route_fd, high);
	atomic_fetch_add(&route_epoch, 1);
	return high;
}

/* Whether our fd still is our socket: the program may have closed it
 * behind the hooks and reused the number. */
static bool route_fd_ours(int fd)
{
	struct stat info;
	return fstat(fd, &info) == 0 && info.st_ino == atomic_load(&route_inode);
}

/* The current route epoch, after reading what the kernel has said since
 * the last look (an fstat, then one system call that never waits), or 0 when routes
 * cannot be followed (no learned source is then used). */
static uint32_t route_epoch_now(bool open_if_needed)
{
	int saved = errno;
	uint32_t epoch = 0;

	if (atomic_flag_test_and_set(&route_busy))
		return 0; /* another thread (or our signal handler) is looking */
	int fd = atomic_load(&route_fd);
	if (fd >= 0 && atomic_load(&route_owner) != pf_cached_pid()) {
		/* The parent's, in a forked child: its copy is closed here
		 * (unless the program took the number meanwhile). */
		if (route_fd_ours(fd))
			syscall(SYS_close, fd);
		atomic_store(&route_fd, -1);
		fd = -1;
	}
	if (fd >= 0 && !route_fd_ours(fd)) {
		/* The program took the number: its socket is never read (a
		 * peek would move its SO_PEEK_OFF); what was learned is
		 * forgotten, as the news may be lost. */
		atomic_store(&route_fd, -1);
		atomic_fetch_add(&route_epoch, 1);
		fd = -1;
	}
	if (fd < 0 && open_if_needed)
		fd = route_open();
	if (fd >= 0) {
		char news[4096] __attribute__((aligned(8)));
		long n = syscall(SYS_recvfrom, fd, news, sizeof(news), MSG_DONTWAIT | MSG_PEEK, NULL, NULL);
		if (n < 0 && errno == EAGAIN) {
			epoch = atomic_load(&route_epoch);
		} else if (!route_fd_ours(fd)) {
			atomic_store(&route_fd, -1);
			atomic_fetch_add(&route_epoch, 1);
		} else if (n < 0 && errno != ENOBUFS && errno != EINTR) {
			route_close();
		} else {
			/* News (or lost news: ENOBUFS): read it all, forget. */
			for (int reads = 0; reads < 4096; reads++) {
				long got = syscall(SYS_recvfrom, fd, news, sizeof(news), MSG_DONTWAIT, NULL, NULL);
				if (got == 0 || (got < 0 && errno != ENOBUFS && errno != EINTR))
					break;
			}
			atomic_fetch_add(&route_epoch, 1);
		}
	}
	atomic_flag_clear(&route_busy);
	errno = saved;
	return epoch;
}

/* A loopback destination is reached from loopback whatever the routes:
 * its learned source needs no watching. */

/* A seqlock read: a writer in another thread (or a signal handler that
 * interrupted one) never leaves a torn entry that looks valid. */
static bool same_address(_Atomic uint32_t *a, const uint8_t *b, size_t len)
{
	uint32_t x[4], y[4];

	words_load(x, a, len);
	if (len == 4) {
		memcpy(y, b, 4);
		return x[0] == y[0];
	}
	memcpy(y, b, 16);
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/* Only the family's own sockaddr is written (sockaddr_in or
 * sockaddr_in6, zeroed but for family and address): the rest of *local
 * is left as it was.  Copies of constant size: one of variable length
 * was a call to memcpy. */
PF_HOT bool pf_source_lookup(const struct sockaddr *remote, uint32_t now_ms, struct sockaddr_storage *local,
			     uint32_t *learned_ms)
{
	struct source_entry *entry = source_slot(remote);
	const uint8_t *bytes;
	size_t len = address_bytes(remote, &bytes);
	uint32_t address[4];
	uint32_t before = atomic_load_explicit(&entry->sequence, memory_order_acquire);
	uint32_t learned = RELAXED(entry->learned_ms);

	if (before & 1 || RELAXED(entry->family) != remote->sa_family || !same_address(entry->remote, bytes, len) ||
	    (uint32_t)(now_ms - learned) >= PF_SOURCE_TTL_MS)
		return false;
	if (!pf_loopback_remote(remote)) {
		uint32_t epoch = route_epoch_now(false);
		if (epoch == 0 || RELAXED(entry->epoch) != epoch)
			return false;
	}
	words_load(address, entry->local, len);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&entry->sequence, memory_order_relaxed) != before)
		return false;
	if (remote->sa_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)local;
		memset(sin, 0, sizeof(*sin));
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, address, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)local;
		memset(sin6, 0, sizeof(*sin6));
		sin6->sin6_family = AF_INET6;
		memcpy(sin6->sin6_addr.s6_addr, address, 16);
	}
	if (learned_ms)
		*learned_ms = learned;
	return true;
}

void pf_source_learn(const struct sockaddr *remote, const struct sockaddr *local)
{
	struct source_entry *entry = source_slot(remote);
	const uint8_t *remote_bytes, *local_bytes;
	size_t len = address_bytes(remote, &remote_bytes);
	uint32_t sequence = atomic_load_explicit(&entry->sequence, memory_order_relaxed);

	if (local->sa_family != remote->sa_family || sequence & 1)
		return;
	/* Learned only where changes can be followed, in the epoch of the
	 * route the kernel has just used. */
	uint32_t epoch = pf_loopback_remote(remote) ? 1 : route_epoch_now(true);
	if (epoch == 0 || !atomic_compare_exchange_strong(&entry->sequence, &sequence, sequence + 1))
		return;
	SET_RELAXED(entry->epoch, epoch);
	address_bytes(local, &local_bytes);
	SET_RELAXED(entry->family, remote->sa_family);
	words_store(entry->remote, remote_bytes, len);
	words_store(entry->local, local_bytes, len);
	SET_RELAXED(entry->learned_ms, pf_hold_now_ms());
	atomic_store_explicit(&entry->sequence, sequence + 2, memory_order_release);
	atomic_fetch_add_explicit(&pf_source_generation_now, 1, memory_order_release);
}

void pf_source_forget(const struct sockaddr *remote)
{
	struct source_entry *entry = source_slot(remote);
	uint32_t sequence = atomic_load_explicit(&entry->sequence, memory_order_relaxed);

	if (!(sequence & 1) && atomic_compare_exchange_strong(&entry->sequence, &sequence, sequence + 1)) {
		SET_RELAXED(entry->family, AF_UNSPEC);
		atomic_store_explicit(&entry->sequence, sequence + 2, memory_order_release);
		atomic_fetch_add_explicit(&pf_source_generation_now, 1, memory_order_release);
	}
}

/* Asks the kernel which source it would choose: a UDP socket connected
 * to the destination sends nothing and is bound as connect would be. */
bool pf_source_probe(const struct sockaddr *remote, socklen_t remote_len,
		     struct sockaddr_storage *local)
{
	int saved = errno;
	socklen_t len = sizeof(*local);
	long fd = syscall(SYS_socket, remote->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool found = false;

	if (fd >= 0) {
		found = syscall(SYS_connect, fd, remote, remote_len) == 0 &&
			syscall(SYS_getsockname, fd, local, &len) == 0;
		syscall(SYS_close, fd);
	}
	if (found)
		pf_source_learn(remote, (const struct sockaddr *)local);
	errno = saved;
	return found;
}

/* ---- the kernel's answer for one 4-tuple ---- */

static _Atomic int diag_fd = -1;
static _Atomic ino_t diag_inode;
/* A forked child inherits the socket: two processes reading one netlink
 * socket take each other's answers, so each opens its own. */
static _Atomic pid_t diag_owner;
static atomic_flag diag_busy = ATOMIC_FLAG_INIT;

static int pf_diag_fd(void)
{
	return atomic_load_explicit(&diag_fd, memory_order_relaxed);
}

/* The program may have closed our fd behind the hooks and reused the
 * number: only a socket with our inode is ever written to. */
static int diag_socket(void)
{
	int fd = pf_diag_fd();
	struct stat info;

	pid_t self = pf_cached_pid();

	if (fd >= 0 && fstat(fd, &info) == 0 && info.st_ino == atomic_load(&diag_inode)) {
		if (atomic_load(&diag_owner) == self)
			return fd;
		syscall(SYS_close, fd);
	}
	atomic_store(&diag_fd, -1);
	long fresh = syscall(SYS_socket, AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fresh < 0)
		return -1;
	int high = fcntl((int)fresh, F_DUPFD_CLOEXEC, PRIVATE_FD_FLOOR);
	syscall(SYS_close, fresh);
	if (high < 0 || fstat(high, &info) < 0)
		return -1;
	atomic_store(&diag_inode, info.st_ino);
	atomic_store(&diag_owner, self);
	atomic_store(&diag_fd, high);
	return high;
}

/* One thread at a time uses the kept socket; another (or a signal handler
 * that interrupted the first) asks on a socket of its own. */
enum pf_tuple_use pf_tuple_use(const struct sockaddr *local, const struct sockaddr *remote)
{
	int saved = errno, old_cancel;

	if (atomic_flag_test_and_set(&diag_busy))
		return pf_tcp_tuple_use(local, remote, -1);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old_cancel);
	enum pf_tuple_use use = pf_tcp_tuple_use(local, remote, diag_socket());
	pthread_setcancelstate(old_cancel, NULL);
	atomic_flag_clear(&diag_busy);
	errno = saved;
	return use;
}
