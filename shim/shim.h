/* Internals of libportfence.so.  Three layers per interposed call, as in
 * socket_wrapper, all made from one table, hooks.def: the real libc
 * symbol (real_NAME, real.c), the logic (pf_NAME, in NAME.c, over the
 * shared steps in calls.c and assign.c), and the exported symbol
 * (exports.c; the version script is made from the same table).
 *
 * The sections below name the file that defines what they declare. */
#ifndef PORTFENCE_SHIM_H
#define PORTFENCE_SHIM_H

#include <errno.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <netinet/in.h>

#include "core/algorithm.h"
#include "core/clock.h"
#include "core/decide.h"
#include "core/holds.h"
#include "core/hot.h"
#include "core/rng.h"
#include "config/policy.h"
#include "record/record.h"
#include "kernel/sockdiag.h"

#define PF_EXPORT __attribute__((visibility("default")))

/* errno, which every interposed call saves and restores, through the
 * thread's own copy of its address (runtime.c) rather than a call into
 * libc: __errno_location's code is one more line and page per connect
 * after the kernel's work (core/hot.h).  A new thread starts with none and
 * asks libc once; a fork keeps the thread's address. */
extern __thread int *pf_errno_address __attribute__((tls_model("initial-exec"), visibility("hidden")));
/* Out of line: each hook's copy of the call was most of its errno code. */
int *pf_errno_address_first(void) __attribute__((cold, noinline));
static inline int *pf_errno_location(void)
{
	int *address = pf_errno_address;
	if (__builtin_expect(address == NULL, 0))
		address = pf_errno_address_first();
	return address;
}
#undef errno
#define errno (*pf_errno_location())

/* ---- real.c: the next definition of each symbol, never our own ---- */
enum pf_symbol {
#define PF_HOOK(type, name, params, args, fallback) PF_SYM_##name,
#include "hooks.def"
	PF_SYM_COUNT
};
void *pf_real(enum pf_symbol symbol);
/* Points pf_clock_gettime (core/clock.h) at the vDSO's entry, when the
 * kernel gave one; libc's stays otherwise (valgrind, other arches). */
void pf_find_vdso_clock(void);
/* The resolved symbols, for the inline hot paths; NULL until resolved. */
extern _Atomic(void *) pf_resolved[PF_SYM_COUNT];
/* real_NAME for each call of hooks.def (not dlopen's): libc's
 * definition, or the raw system call when there is none.  Inline, one
 * load and one call: each call and return the shim adds costs a few ns
 * after a system call, whose kernel work leaves the branch predictor
 * cold (docs/performance.md, 2026-12-04).  The first call of each, which
 * resolves the symbol, is real.c's real_first_NAME. */
#define PF_HOOK(type, name, params, args, fallback)                             \
	type real_first_##name params;                                          \
	static inline type real_##name params                                   \
	{                                                                       \
		type(*fn) params = (type(*) params)atomic_load_explicit(        \
			&pf_resolved[PF_SYM_##name], memory_order_acquire);     \
		if (__builtin_expect(!fn, 0))                                   \
			return real_first_##name args;                          \
		return fn args;                                                 \
	}
#define PF_HOOK_VOID(name, params, args, fallback)                              \
	void real_first_##name params;                                          \
	static inline void real_##name params                                   \
	{                                                                       \
		void(*fn) params = (void(*) params)atomic_load_explicit(        \
			&pf_resolved[PF_SYM_##name], memory_order_acquire);     \
		if (__builtin_expect(!fn, 0))                                   \
			real_first_##name args;                                 \
		else                                                            \
			fn args;                                                \
	}
#define PF_HOOK_ENTRY(type, name, params)
#include "hooks.def"

/* ---- deepbind.c: libraries opened with RTLD_DEEPBIND ---- */
/* The names of the calls the shim interposes, PF_SYM_COUNT of them. */
extern const char *const pf_symbol_names[PF_SYM_COUNT];
/* dlopen with RTLD_DEEPBIND, then the new objects' references to the
 * interposed calls bound as the rest of the program's are. */
void *pf_dlopen_deepbind(const char *file, int flags);

/* ---- fdstate.c: what we know of each fd, without a syscall ---- */
#define PF_FD_UNKNOWN 0u	/* never seen: classify with getsockopt */
#define PF_FD_FRESH 1u		/* our kind of socket, not yet bound */
#define PF_FD_DONE 2u		/* our kind, has its port: pass through */
#define PF_FD_FOREIGN 3u	/* not ours (family, type or not a socket) */
#define PF_FD_STATUS_MASK 3u
#define PF_FD_V6 4u
#define PF_FD_UDP 8u
/* bound to an address but no port yet (IP_BIND_ADDRESS_NO_PORT): the port
 * comes at connect, on that address */
#define PF_FD_ADDRESS 16u
/* SO_REUSEADDR is on because we set it; the program never asked for it */
#define PF_FD_REUSE_OURS 32u
/* the program chose SO_REUSEADDR itself (on or off) */
#define PF_FD_REUSE_APP 64u
/* the program set an option that steers routing (device, mark): the
 * source address is the kernel's to choose at connect */
#define PF_FD_ROUTED 128u
#define PF_FD_OPTION_BITS (PF_FD_REUSE_OURS | PF_FD_REUSE_APP | PF_FD_ROUTED)

#define PF_FD_TABLE_SIZE 65536
/* What the shim keeps of one fd, in one 16-byte entry: socket(),
 * setsockopt(), connect() and close() of one socket each touch one cache
 * line of it, not one per table (three separate tables cost a cache miss
 * each, after the kernel's work has evicted them). */
struct pf_fd_entry {
	_Atomic uint64_t hold;		/* fdholds.c: the held 4-tuple, 0: none */
	_Atomic uint8_t state;		/* fdstate.c: PF_FD_* */
	_Atomic uint8_t closes_abortively;	/* fdholds.c: SO_LINGER on, 0 s */
};
/* Hidden: read in place, not through the GOT (-fvisibility=hidden covers
 * definitions only). */
extern struct pf_fd_entry pf_fd_table[PF_FD_TABLE_SIZE] __attribute__((visibility("hidden")));
/* Whether a send on a handled socket must still be judged: true until the
 * policy is loaded, then only with destination rules or on_error deny. */
extern _Atomic int pf_dest_checks;

/* The hot path: a send that the shim provably leaves alone, decided
 * from the fd table and one flag, without a system call. */
static inline bool pf_send_passes(int fd, bool has_address)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE)
		return false;
	uint8_t status = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed) & PF_FD_STATUS_MASK;
	if (status == PF_FD_FOREIGN)
		return true;
	return status == PF_FD_DONE &&
	       (!has_address || !atomic_load_explicit(&pf_dest_checks, memory_order_relaxed));
}

struct pf_sock {
	int fd;
	uint8_t status;
	int family;	/* AF_INET or AF_INET6 */
	int type;	/* SOCK_STREAM or SOCK_DGRAM */
	int protocol;
	bool udp;
	bool address_bound;	/* PF_FD_ADDRESS */
	uint8_t options;	/* PF_FD_OPTION_BITS */
};

/* The port of an AF_INET or AF_INET6 address, host order. */
uint16_t pf_address_port(const struct sockaddr *addr);
/* The length of a sockaddr of family (AF_INET6, else AF_INET). */
static inline socklen_t pf_address_len(int family)
{
	return family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}
/* Sets the port (host order) of an AF_INET or AF_INET6 address. */
static inline void pf_set_port(struct sockaddr_storage *addr, uint16_t port)
{
	if (addr->ss_family == AF_INET)
		((struct sockaddr_in *)addr)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)addr)->sin6_port = htons(port);
}

/* One-time classification of an fd the table has never seen: its
 * entry, PF_FD_FOREIGN when it is not ours (or not a socket). */
uint8_t pf_fd_classify(int fd);

/* Fills sock for fd; returns false when fd is not ours to manage.
 * Inline: every connect, bind and send asks it. */
static inline bool pf_sock_lookup(int fd, struct pf_sock *sock)
{
	uint8_t state;

	if (fd < 0)
		return false;
	state = fd < PF_FD_TABLE_SIZE ? atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed)
				      : PF_FD_UNKNOWN;
	if (state == PF_FD_UNKNOWN)
		state = pf_fd_classify(fd);
	if ((state & PF_FD_STATUS_MASK) == PF_FD_FOREIGN)
		return false;
	sock->fd = fd;
	sock->status = state & PF_FD_STATUS_MASK;
	sock->family = state & PF_FD_V6 ? AF_INET6 : AF_INET;
	sock->udp = state & PF_FD_UDP;
	sock->type = sock->udp ? SOCK_DGRAM : SOCK_STREAM;
	sock->address_bound = state & PF_FD_ADDRESS;
	sock->protocol = sock->udp ? IPPROTO_UDP : IPPROTO_TCP;
	sock->options = state & PF_FD_OPTION_BITS;
	return true;
}

/* The fd table's one-line steps are inline: each call into a function
 * of its own was one more line of code per connect cycle (core/hot.h). */
static inline void pf_fd_set(int fd, uint8_t state)
{
	if (fd >= 0 && fd < PF_FD_TABLE_SIZE)
		atomic_store_explicit(&pf_fd_table[fd].state, state, memory_order_relaxed);
}
static inline void pf_fd_forget(int fd)
{
	pf_fd_set(fd, PF_FD_UNKNOWN);
}
/* Before listen, and connect or bind to an IP address (recheck_for):
 * drops a DONE or FOREIGN entry that no longer matches the socket on fd
 * (closed and reused where the hooks could not see).  One getsockname,
 * never on the send path. */
void pf_fd_recheck(int fd);

/* The highest address a program's memory can reach (x86-64's five-level
 * paging: 56 bits), or none on 32 bits. */
#if UINTPTR_MAX > 0xffffffffu
#define PF_USER_TOP ((uintptr_t)1 << 56)
#else
#define PF_USER_TOP UINTPTR_MAX
#endif
/* Whether [p, p + len) can be the program's memory at all.  The kernel
 * answers EFAULT for NULL's page and for what lies past the user half;
 * the shim must not read such an address before it does (it would crash
 * its host where libc returns EFAULT). */
static inline bool pf_user_readable(const void *p, size_t len)
{
	uintptr_t at = (uintptr_t)p;
	return at >= 4096 && at + len >= at && at + len <= PF_USER_TOP;
}
/* Inline: a fresh socket, the connect path's, costs no call. */
static inline void pf_fd_recheck_for(int fd, const struct sockaddr *addr)
{
	if (!pf_user_readable(addr, sizeof(addr->sa_family)) || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) || fd < 0 ||
	    fd >= PF_FD_TABLE_SIZE)
		return;
	uint8_t status = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed) & PF_FD_STATUS_MASK;
	if (status == PF_FD_DONE || status == PF_FD_FOREIGN)
		pf_fd_recheck(fd);
}
void pf_fd_forget_range(unsigned int first, unsigned int last);
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
/* A new socket's entry: FRESH for our kinds, FOREIGN for the rest. */
static inline uint8_t pf_fd_state_for(int family, int type, int protocol)
{
	int base_type = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (family != AF_INET && family != AF_INET6)
		return PF_FD_FOREIGN;
	uint8_t bits = family == AF_INET6 ? PF_FD_V6 : 0;
	/* MPTCP is TCP to the policy (its first subflow is a TCP socket,
	 * bound and connected through the MPTCP one), UDP-Lite is UDP. */
	if (base_type == SOCK_STREAM &&
	    (protocol == 0 || protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP))
		return PF_FD_FRESH | bits;
	if (base_type == SOCK_DGRAM &&
	    (protocol == 0 || protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE))
		return PF_FD_FRESH | bits | PF_FD_UDP;
	return PF_FD_FOREIGN;
}
/* Records a new status for sock's fd.  The kind and the program's option
 * bits are kept: a new status changes where the socket stands, not what
 * it is (a socket found not ours keeps no options). */
static inline void pf_sock_mark(const struct pf_sock *sock, uint8_t status)
{
	if (sock->fd < 0 || sock->fd >= PF_FD_TABLE_SIZE)
		return;
	uint8_t kind = pf_fd_state_for(sock->family, sock->type, 0) & ~PF_FD_STATUS_MASK;
	uint8_t options = 0;
	if ((status & PF_FD_STATUS_MASK) != PF_FD_FOREIGN)
		options = atomic_load_explicit(&pf_fd_table[sock->fd].state, memory_order_relaxed) &
			  PF_FD_OPTION_BITS;
	atomic_store_explicit(&pf_fd_table[sock->fd].state, (uint8_t)(kind | status | options),
			      memory_order_relaxed);
}
/* Adds or removes PF_FD_OPTION_BITS on fd. */
void pf_fd_set_options(int fd, uint8_t set, uint8_t clear);
static inline bool pf_sock_routes_freely(const struct pf_sock *sock)
{
	return !(sock->options & PF_FD_ROUTED);
}
/* Whether SO_REUSEADDR is on by the program's choice: asked of the
 * kernel only when the program set the option itself. */
bool pf_sock_reuse_asked(const struct pf_sock *sock);
static inline bool pf_sock_reuse_set_by_app(const struct pf_sock *sock)
{
	return (sock->options & PF_FD_REUSE_APP) && pf_sock_reuse_asked(sock);
}
void pf_sock_note_our_reuse(const struct pf_sock *sock);
/* The socket's own address (getsockname); false when it has none. */
bool pf_sock_local(const struct pf_sock *sock, struct sockaddr_storage *local);
bool pf_sock_has_port(const struct pf_sock *sock);
socklen_t pf_wildcard_of(int family, struct sockaddr_storage *addr);
/* Whether fd is one of our kind of sockets (FRESH or DONE); bits: its
 * table entry. */
static inline bool pf_fd_ours(int fd, uint8_t *bits)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE)
		return false;
	*bits = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed);
	uint8_t status = *bits & PF_FD_STATUS_MASK;
	return status == PF_FD_FRESH || status == PF_FD_DONE;
}

/* ---- fdholds.c: the hold a connected socket keeps until its close ---- */
/* A hold taken out of an fd's entry, to release once the fd is closed. */
struct pf_taken_hold {
	uint64_t word;	/* 0: none */
	bool abortive;	/* the program asked for an abortive close */
	int fd;		/* whose entry it was taken from */
};
/* Taking, releasing, and a new socket's: shim/fdholds.h, inline. */
void pf_fd_release_hold(int fd);
/* SO_LINGER on with 0 s: the close releases the 4-tuple at once. */
static inline void pf_fd_note_linger(int fd, bool abortive)
{
	if (fd >= 0 && fd < PF_FD_TABLE_SIZE)
		atomic_store_explicit(&pf_fd_table[fd].closes_abortively, abortive, memory_order_relaxed);
}
/* close_range and closefrom: closes first..last through close_piece
 * (which closes first..end and returns 0 or -1 with errno), each socket's
 * hold released after its close (a 4-tuple freed in memory while its
 * socket is still open could be handed to another process of the app).
 * At most 64 holds are kept at a time: a range with more held sockets is
 * closed in as many pieces, in order.  Every fd closed forgets its state.
 * Returns the first piece's failure, or the last piece's result. */
typedef int (*pf_close_piece_fn)(unsigned int first, unsigned int end, void *arg);
int pf_fd_close_releasing(unsigned int first, unsigned int last, pf_close_piece_fn close_piece, void *arg);
/* The atfork prepare handler, and the calls that start a process
 * without it (spawn.c): sockets open now may outlive a close here. */
void pf_fd_holds_fork_begins(void);
/* The sockets whose fds a message passes (SCM_RIGHTS) live on in the
 * receiver: their closes here tell memory nothing, as after a fork. */
void pf_fd_holds_passed(const struct msghdr *msg);
/* The socket on fd has another fd now (dup, dup2, dup3, F_DUPFD): the
 * close of either tells memory nothing, as after a fork. */
void pf_fd_hold_shared(int fd);

/* ---- runtime.c: the policy that applies to this process ---- */
enum pf_status { PF_STATUS_PASS, PF_STATUS_ACTIVE, PF_STATUS_DENY };

/* What every connect reads comes first, in the struct's first line
 * (core/hot.h). */
struct pf_runtime {
	enum pf_status status;
	enum pf_mode mode;
	bool rules;		/* the app has allow or deny rules */
	bool notify;		/* notices on stderr: the app's notify = "stderr", or run -v */
	const struct pf_app *app;
	struct pf_state state;
	struct pf_policy policy;
	char why[900];		/* PF_STATUS_DENY: why the policy cannot be used */
	char exe[4096];
	char *exe_json;		/* exe, JSON-escaped */
	char *app_json;		/* app name, JSON-escaped */
};

/* Loads the policy at first need; never NULL. */
const struct pf_runtime *pf_runtime_load(void);
/* Set once the runtime is loaded and what start-up deferred was said:
 * from then on pf_runtime is one load. */
extern _Atomic(const struct pf_runtime *) pf_runtime_settled;

static inline const struct pf_runtime *pf_runtime(void)
{
	const struct pf_runtime *rt = atomic_load_explicit(&pf_runtime_settled, memory_order_acquire);
	return rt ? rt : pf_runtime_load();
}
bool pf_runtime_manages(const struct pf_runtime *rt, const struct pf_sock *sock);
/* The app's shared state, with its table of held 4-tuples. */
static inline struct pf_state *pf_runtime_state(const struct pf_runtime *rt)
{
	return (struct pf_state *)&rt->state;
}
/* getpid(), cached; refreshed in every child (fork, _Fork, clone), without
 * a system call except the first in each process.  The cache is a page
 * the kernel zeroes in every child (runtime.c); inline: the connect path
 * asks it several times. */
struct pf_pid_page {
	_Atomic pid_t pid;
};
extern _Atomic(struct pf_pid_page *) pf_pid_page;
pid_t pf_cached_pid_slow(void);

static inline pid_t pf_cached_pid(void)
{
	struct pf_pid_page *page = atomic_load_explicit(&pf_pid_page, memory_order_acquire);
	pid_t pid = page ? atomic_load_explicit(&page->pid, memory_order_relaxed) : 0;
	return pid ? pid : pf_cached_pid_slow();
}

/* This thread's random generator, seeded again in each new process. */
struct pf_thread_rng {
	struct pf_rng rng;
	unsigned generation;
	bool seeded;
};
extern __thread struct pf_thread_rng pf_thread_rng_state __attribute__((tls_model("initial-exec")));
/* Forks seen (atfork handlers, and the first pf_cached_pid of a child). */
extern _Atomic unsigned pf_fork_generation;
struct pf_rng *pf_thread_rng_seed(pid_t pid, unsigned generation);

static inline struct pf_rng *pf_thread_rng(void)
{
	struct pf_thread_rng *t = &pf_thread_rng_state;
	/* First: a child that no atfork handler saw bumps the generation. */
	pid_t pid = pf_cached_pid();
	unsigned generation = atomic_load_explicit(&pf_fork_generation, memory_order_relaxed);

	if (__builtin_expect(!t->seeded || t->generation != generation, 0))
		return pf_thread_rng_seed(pid, generation);
	return &t->rng;
}
/* goprogram.c: whether the program is a Go program, which the shim cannot
 * reach. */
bool pf_program_is_go(void);

/* ---- audit.c: one JSON line per event ---- */

struct pf_record {
	enum pf_event event;
	const struct pf_sock *sock;
	const struct sockaddr *local;	/* NULL: unknown */
	const struct sockaddr *remote;	/* NULL: none */
	unsigned attempts;
	int error;			/* 0: ok, else the errno the app saw */
	const char *rule;		/* a deny's rule; NULL: found from remote */
};

/* A record for sock whose local address is what getsockname says, or
 * fallback_local when the socket has no port (or the call fails).  Does
 * nothing, not even the getsockname, when there is no log. */
void pf_audit_socket(const struct pf_runtime *rt, const struct pf_sock *sock,
		     enum pf_event event, const struct sockaddr *fallback_local,
		     const struct sockaddr *remote, unsigned attempts, int error);
/* The same with the local address known: exact says it is the socket's
 * own (no getsockname needed). */
void pf_audit_local(const struct pf_runtime *rt, const struct pf_sock *sock,
		    enum pf_event event, const struct sockaddr *local, bool exact,
		    const struct sockaddr *remote, unsigned attempts, int error);
/* The app's assignment counter (status --prometheus), kept whether or
 * not records are written. */
static inline void pf_count_assignment(const struct pf_runtime *rt)
{
	if (rt->state.shared)
		atomic_fetch_add_explicit(&rt->state.shared->assignments, 1, memory_order_relaxed);
}
/* Whether a record of event would be written or shown as a notice:
 * false lets the caller skip the work of making it. */
bool pf_wanted(const struct pf_runtime *rt, enum pf_event event);
void pf_log_enable_syslog(bool enabled);
void pf_audit(const struct pf_runtime *rt, const struct pf_record *record);
/* A one-line message on stderr, written with write(2). */
void pf_stderr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same without stdio (async-signal-safe); nothing is written when fd 2
 * is no longer the file the program started with. */
void pf_stderr_line(const char *text, size_t len);

/* ---- collect.c: records through the collector's ring ---- */
/* Registers this process's ring with the collector (PORTFENCE_COLLECTOR,
 * else PF_COLLECTOR_SOCKET) for app: whether records go there now. */
bool pf_collect_start(const char *app, const char *algorithm);
/* The process's ring (NULL: none), set only once collector_path is. */
struct pf_ring_header;
extern _Atomic(struct pf_ring_header *) pf_collect_ring __attribute__((visibility("hidden")));
static inline bool pf_collecting(void)
{
	return atomic_load_explicit(&pf_collect_ring, memory_order_relaxed) != NULL;
}
/* The record into the ring, with its rule or reason (text of
 * text_kind, PF_RING_TEXT_RULE or _REASON; NULL: none): false when it
 * must be written directly (ring full, collector gone), which the caller
 * then tells pf_collect_fell_back. */
bool pf_collect(const struct pf_runtime *rt, const struct pf_record *record, int text_kind, const char *text);
/* Whether a record the collector cannot take can be written here (the
 * log file opened, once, or syslog): a service not run as root may not. */
bool pf_log_writable(void);
/* A record pf_collect refused, written directly (written) or neither
 * there nor anywhere: counted as such for the collector to report, and
 * said once on stderr. */
void pf_collect_fell_back(bool written);
/* The process's user changed (setuid.c): its next record goes to a ring
 * registered under the new one. */
void pf_collect_user_changed(void);
/* A ring entry the collector will never take, written directly (its
 * text read from ring): whether it was. */
struct pf_ring_entry;
bool pf_audit_entry(const struct pf_runtime *rt, struct pf_ring_header *ring, const struct pf_ring_entry *e);
/* The log file the direct write falls back to when collecting. */
void pf_log_fallback(const char *path);

/* ---- logfile.c: the log file, its fd, rotation ---- */
int pf_log_open(const char *path, char *why, size_t why_len);
#define PF_RECORD_IOV PF_RECORD_PIECES
/* Appends one record (count <= PF_RECORD_IOV pieces) with one writev. */
void pf_log_write(const struct iovec *record, int count);
/* The log's fd, which close/dup2/closefrom must not take away; inline,
 * as close asks it. */
extern _Atomic int pf_log_fd_now __attribute__((visibility("hidden")));
static inline int pf_log_fd(void)
{
	return atomic_load_explicit(&pf_log_fd_now, memory_order_relaxed);
}
/* Whether records are written anywhere (file, syslog, the collector's
 * ring); inline, as every connect asks it. */
extern bool pf_log_to_syslog __attribute__((visibility("hidden")));
/* A process that wanted the collector and found none at start-up, and
 * may not open the log itself (a service not run as root), looks for
 * one again, once a second (pf_collect_late_wanted is set meanwhile):
 * whether it now has a ring. */
extern _Atomic bool pf_collect_late_wanted __attribute__((visibility("hidden")));
bool pf_collect_try_late(void);
static inline bool pf_logging(void)
{
	return pf_log_fd() >= 0 || pf_log_to_syslog || pf_collecting() ||
	       (atomic_load_explicit(&pf_collect_late_wanted, memory_order_relaxed) && pf_collect_try_late());
}
/* Serialises every change of fd numbers the log could be standing on. */
void pf_fd_lock(void);
void pf_fd_unlock(void);
/* With the fd lock held: the program is about to take fd's number. */
void pf_log_move_away_from(int fd);

/* ---- assign.c: take a port from the range for a socket ---- */
/* PF_ACT_NAME: getsockname on a socket bound to an address whose port
 * was deferred: it gets its port now. */
enum pf_action {
	PF_ACT_CONNECT, PF_ACT_SENDTO, PF_ACT_SENDMSG, PF_ACT_BIND, PF_ACT_LISTEN, PF_ACT_NAME
};

struct pf_call {
	enum pf_action action;
	const struct sockaddr *dest;	/* connect/send destination, or NULL */
	socklen_t dest_len;
	const struct sockaddr *bind_addr; /* bind: the app's address, port 0 */
	socklen_t bind_len;
	/* what to call once the port is bound (connect, send, listen) */
	const void *buf;
	size_t len;
	int flags;
	const struct msghdr *msg;
	int backlog;
	ssize_t result;		/* the real call's return value */
	int result_errno;
};

/* How long a released 4-tuple is handed out again only on the kernel's
 * word (assign.c says why). */
#define PF_QUARANTINE_MS 2000

/* Runs call on sock with a port from the app's range.  Returns the real
 * call's result, with errno set as the application must see it. */
/* decision: the core's ASSIGN (its TCP-client rule and exhaustion errno). */
ssize_t pf_assign_and_call(const struct pf_runtime *rt, struct pf_sock *sock,
			   struct pf_call *call, const struct pf_decision *decision);
/* Whether the program asked for IP_BIND_ADDRESS_NO_PORT itself: then it
 * knows the port comes at connect, as the kernel shows it (port 0). */
bool pf_program_defers_port(int fd);
int pf_bind_address_only(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len);
/* The flow a call's port is chosen for; local may be NULL. */
void pf_flow_of_call(const struct pf_call *call, const struct sockaddr_storage *local,
		     struct pf_flow *flow);
/* The real call a pf_call stands for, on the socket as it is. */
ssize_t pf_perform(struct pf_sock *sock, struct pf_call *call);

/* ---- express.c: the common connect in one pass ---- */
/* A fresh TCP socket connecting, in an app whose remembered answer is to
 * take a port, to the loopback place its thread last connected to, when
 * memory shows the algorithm's first candidate clean: claimed, bound,
 * connected and recorded here.  false, with nothing done, for the
 * general path (pf_connect) to make. */
bool pf_connect_express(int fd, const struct sockaddr *dest, socklen_t len, int *result);

/* ---- flowmemo.c: a flow's hashes, remembered per thread ---- */
/* F() and G() of flow (when hashes_flow: the app's algorithm hashes it;
 * else zero) and the hold table's hash of its destination
 * (pf_hold_flow_hash, the local address left out). */
void pf_flow_memo(const struct pf_state *state, const struct pf_flow *flow, bool hashes_flow,
		  struct pf_flow_hashes *hashes, uint64_t *hold);

/* A thread's last TCP connect to a loopback destination, whole: its
 * source (the lookup's answer in one source generation), the flow's
 * hashes and the hold table's hash.  The next connect to the same place
 * takes them in one comparison instead of a source lookup and a flow
 * memo lookup. */
/* A thread's own memo that a signal handler interrupting it in the same
 * thread may also reach: enter is false while it is in use (the handler
 * then goes without it), and between enter and leave the compiler keeps
 * every access inside. */
static inline bool pf_reentry_enter(bool *busy)
{
	if (*busy)
		return false;
	*busy = true;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	return true;
}
static inline void pf_reentry_leave(bool *busy)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	*busy = false;
}
struct pf_last_connect {
	const struct pf_state *state;
	const struct sockaddr *dest;
	bool hashes_flow;
	uint32_t generation;	/* pf_source_generation() before the lookup */
	bool concrete;		/* a source was learned: in source */
	uint32_t learned_ms;	/* when the source was learned (put; get returns it) */
	const struct sockaddr_storage *source;
	struct pf_flow_hashes hashes;
	uint64_t hold;
};
/* Fills *c's answers (concrete, source into *source, hashes, hold) from
 * the thread's last connect when it matches c's question and is still
 * good at now_ms. */
bool pf_last_connect_get(struct pf_last_connect *c, uint32_t now_ms, struct sockaddr_storage *source);
void pf_last_connect_put(const struct pf_last_connect *c);

/* ---- NAME.c (connect.c, bind.c, ...): the logic of each call of
 * hooks.def, pf_NAME, which the exported NAME calls ---- */
#define PF_HOOK(type, name, params, args, fallback) type pf_##name params;
#define PF_HOOK_ENTRY(type, name, params)
#include "hooks.def"

/* ---- calls.c: the steps the calls share: decide, then act ---- */
static inline bool pf_inet_address(const struct sockaddr *addr, socklen_t len)
{
	if (!pf_user_readable(addr, len))
		return false;
	if (len >= sizeof(struct sockaddr_in) && addr->sa_family == AF_INET)
		return true;
	return len >= sizeof(struct sockaddr_in6) && addr->sa_family == AF_INET6;
}

/* An address of the socket's own family (another is the kernel's to
 * refuse): the call passes through and the socket stays as it was. */
static inline bool pf_fits_socket(const struct pf_sock *sock, const struct sockaddr *addr)
{
	return addr->sa_family == sock->family;
}
void pf_audit_event(const struct pf_runtime *rt, const struct pf_sock *sock,
		    enum pf_event event, const struct sockaddr *local,
		    const struct sockaddr *remote, int error);
/* The same, the deny's rule given (NULL: found from remote). */
ssize_t pf_refuse_by(const struct pf_runtime *rt, const struct pf_sock *sock,
		     enum pf_event event, const struct sockaddr *local,
		     const struct sockaddr *remote, int error, const char *rule);
/* Writes the record, then fails with error. */
ssize_t pf_refuse(const struct pf_runtime *rt, const struct pf_sock *sock,
		  enum pf_event event, const struct sockaddr *local,
		  const struct sockaddr *remote, int error);
/* The core's verdict on question, asked for sock: fills in what the
 * runtime knows, and asks the socket's TCP state only when the verdict
 * depends on it. */
struct pf_decision pf_ask(const struct pf_runtime *rt, const struct pf_sock *sock,
			  struct pf_question *question);
/* What the policy says of call on sock (pf_decide, asked for this call). */
struct pf_decision pf_decide_call(const struct pf_runtime *rt, const struct pf_sock *sock,
				  const struct pf_call *call, bool needs_port);
/* Whether connect's remembered answer (an app without rules) is to take
 * a port as a TCP client: the express path's question. */
bool pf_connect_assigns(const struct pf_runtime *rt);
/* Decides, then acts: pass, audit, refuse, or take a port and call. */
ssize_t pf_managed(struct pf_sock *sock, struct pf_call *call, bool needs_port);
/* The same for connect(dest, len). */
ssize_t pf_managed_connect(struct pf_sock *sock, const struct sockaddr *dest, socklen_t len);
/* A send is ours when it implicitly binds (unbound UDP with a
 * destination, or TCP Fast Open). */
bool pf_send_is_ours(const struct pf_sock *sock, int flags);
bool pf_send_needs_port(const struct pf_sock *sock, bool has_dest, int flags);
ssize_t pf_managed_send(struct pf_sock *sock, struct pf_call *call);

/* ---- fdcalls.c: what close, dup2, dup3, close_range, closefrom share ---- */
static inline bool pf_is_log_fd(int fd)
{
	return fd >= 0 && fd == pf_log_fd();
}
/* dup2 (flags < 0) or dup3 onto new_fd, the log moved out of the way. */
int pf_duplicate_onto(int old_fd, int new_fd, int flags);
/* Closes [first, last] except the log's fd. */
int pf_close_range_sparing_log(unsigned int first, unsigned int last, int flags);

/* ---- tuple.c: the source toward a destination, and the kernel's word
 * on a 4-tuple ---- */
/* The source learned toward remote, still trusted at now_ms; learned_ms
 * (when not NULL): when it was learned. */
bool pf_source_lookup(const struct sockaddr *remote, uint32_t now_ms, struct sockaddr_storage *local,
		      uint32_t *learned_ms);
/* Changes with every source learned or forgotten. */
extern _Atomic uint32_t pf_source_generation_now __attribute__((visibility("hidden")));
static inline uint32_t pf_source_generation(void)
{
	return atomic_load_explicit(&pf_source_generation_now, memory_order_acquire);
}
/* A loopback destination: its source needs no watching of routes. */
static inline bool pf_loopback_remote(const struct sockaddr *remote)
{
	if (remote->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)remote)->sin_addr.s_addr) >> 24) == 127;
	const struct in6_addr *a = &((const struct sockaddr_in6 *)remote)->sin6_addr;
	return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}
/* A connect that failed so may have left from a stale learned source
 * (a route changed): the source is forgotten. */
static inline bool pf_route_error(int error)
{
	return error == ENETUNREACH || error == EHOSTUNREACH || error == EINVAL;
}
/* How long a learned source is trusted at most. */
#define PF_SOURCE_TTL_MS 1000
void pf_source_learn(const struct sockaddr *remote, const struct sockaddr *local);
void pf_source_forget(const struct sockaddr *remote);
bool pf_source_probe(const struct sockaddr *remote, socklen_t remote_len,
		     struct sockaddr_storage *local);
enum pf_tuple_use pf_tuple_use(const struct sockaddr *local, const struct sockaddr *remote);

#endif
