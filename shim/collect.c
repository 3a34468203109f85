/* Records handed to the collector (`portfence daemon`) through a ring in
 * shared memory: no system call and no formatting per record.  The ring
 * is registered once, at start-up (and once in each child process, at
 * its first record); see record/ring.h.
 *
 * The host comes first: registration waits a bounded time and gives up;
 * the record path is a few atomics and a copy (async-signal-safe, never
 * blocking); a full ring, a collector gone or one that never answered
 * sends the record to the direct write, said once on stderr and counted
 * in the ring's header. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/hot.h"
#include "record/ring.h"
#include "core/clock.h"
#include "shim.h"

static char collector_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static struct pf_ring_register registration;

PF_HOT_DATA _Atomic(struct pf_ring_header *) pf_collect_ring;
static _Atomic pid_t ring_pid;		/* the process the ring was registered for */
static _Atomic pid_t ring_collector;	/* the collector that took it (its pid, as the kernel said) */
static _Atomic int registering;
static _Atomic long next_attempt;	/* coarse second of the next try */
static _Atomic int failed_attempts;	/* tries in a row that no collector took */
static _Atomic pid_t attempt_pid;	/* the process those tries were made for */
static _Atomic int fallback_said;

static PF_HOT long coarse_seconds(void)
{
	struct timespec now;
	pf_clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return (long)now.tv_sec;
}

/* A fresh ring, or NULL. */
static struct pf_ring_header *make_ring(int *memfd)
{
	int fd = memfd_create("portfence-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return NULL;
	void *map = MAP_FAILED;
	if (ftruncate(fd, PF_RING_BYTES) == 0)
		map = mmap(NULL, PF_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	/* The collector maps it only when it can never shrink under it. */
	if (map == MAP_FAILED || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		if (map != MAP_FAILED)
			munmap(map, PF_RING_BYTES);
		real_close(fd);
		return NULL;
	}
	/* A child is another process: it registers a ring of its own
	 * rather than write into its parent's name. */
	madvise(map, PF_RING_BYTES, MADV_DONTFORK);
	pf_ring_init(map);
	*memfd = fd;
	return map;
}

/* A connection to the collector: at its path, or, where the path is out
 * of reach (a process that chrooted, a child forked after its parent
 * did), at the abstract socket of the same name, which a chroot does not
 * hide.  Only root's collector (or one of our own user's) gets the ring:
 * a socket another user planted at the path (a shared /run/portfence) or
 * bound to the abstract name would otherwise read every record handed to
 * it.  -1: none. */
static int connect_collector(pid_t *collector)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t n = strlen(collector_path);
	struct ucred server;
	socklen_t server_len = sizeof(server);

	int fd = real_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	memcpy(addr.sun_path, collector_path, n);
	if (real_connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		memmove(addr.sun_path + 1, addr.sun_path, n);
		addr.sun_path[0] = '\0';
		if (real_connect(fd, (struct sockaddr *)&addr,
				 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0) {
			real_close(fd);
			return -1;
		}
	}
	if (real_getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &server, &server_len) < 0 ||
	    (server.uid != 0 && server.uid != geteuid())) {
		real_close(fd);
		return -1;
	}
	*collector = server.pid;
	return fd;
}

/* Sends the ring over fd (then closed) and waits (at most wait_ms) for
 * the collector's yes. */
static bool register_ring(int fd, int memfd, int wait_ms)
{
	char control[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {.iov_base = &registration, .iov_len = sizeof(registration)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	bool ok = false;
	char answer = 0;

	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &memfd, sizeof(int));
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	if (real_sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof(registration) &&
	    poll(&pfd, 1, wait_ms) == 1 && read(fd, &answer, 1) == 1)
		ok = answer == '1';
	real_close(fd);
	return ok;
}

/* A ring for this process, registered; NULL when there is no collector
 * (or it would not take it). */
static struct pf_ring_header *register_new(int wait_ms, pid_t *collector, uint64_t direct, uint64_t lost)
{
	int memfd = -1;
	int fd = connect_collector(collector);

	if (fd < 0)
		return NULL;
	struct pf_ring_header *fresh = make_ring(&memfd);
	if (!fresh) {
		real_close(fd);
		return NULL;
	}
	/* What went to the file, or was lost, while no ring was read, for
	 * the collector to say. */
	atomic_store(&fresh->fallback, direct);
	atomic_store(&fresh->lost, lost);
	bool ok = register_ring(fd, memfd, wait_ms);
	real_close(memfd);
	if (!ok) {
		munmap(fresh, PF_RING_BYTES);
		return NULL;
	}
	return fresh;
}

/* Set when the start-up wanted a collector and found none: a collector
 * that starts later is then looked for once a second (cheap: a connect
 * to a socket path that is not there fails at once). */
_Atomic bool pf_collect_late_wanted;
static _Atomic long late_start_next;
/* The process's user changed since its ring was registered (setuid.c). */
static _Atomic bool user_changed;

/* fresh, registered with collector, becomes this process's ring. */
static void adopt_ring(struct pf_ring_header *fresh, pid_t collector)
{
	atomic_store(&user_changed, false);
	atomic_store(&ring_collector, collector);
	atomic_store(&ring_pid, pf_cached_pid());
	atomic_store(&attempt_pid, pf_cached_pid());
	atomic_store(&pf_collect_ring, fresh);
}

bool pf_collect_start(const char *app, const char *algorithm)
{
	const char *path = secure_getenv("PORTFENCE_COLLECTOR");

	if (!path || !path[0])
		path = PF_COLLECTOR_SOCKET;
	if (strcmp(path, "none") == 0 || strlen(path) >= sizeof(collector_path))
		return false;
	memcpy(collector_path, path, strlen(path) + 1);
	registration.magic = PF_REGISTER_MAGIC;
	registration.version = PF_RING_VERSION;
	strncpy(registration.app, app, sizeof(registration.app) - 1);
	strncpy(registration.algorithm, algorithm, sizeof(registration.algorithm) - 1);
	pid_t collector = 0;
	struct pf_ring_header *fresh = register_new(1000, &collector, 0, 0);
	atomic_store(&pf_collect_late_wanted, fresh == NULL);
	if (!fresh)
		return false;
	adopt_ring(fresh, collector);
	return true;
}

/* Why the last record the ring did not take was refused there. */
static _Atomic(const char *) fallback_why;

/* Once: why records do not reach the collector, and where they go. */
static PF_COLD void say_fallback(const char *why, bool written)
{
	if (atomic_exchange(&fallback_said, 1))
		return;
	char line[512];
	struct pf_out o = {.p = line, .end = line + sizeof(line)};
	pf_put_str(&o, "portfence: ");
	pf_put_str(&o, why);
	pf_put_str(&o, written ? "; records go to the log file directly (counted)" : "; records are lost (counted)");
	pf_stderr_line(line, (size_t)(o.p - line));
}

/* A swap (a new ring for a collector's lease that ran out) closes the
 * old ring first: from then on no writer can claim a slot there (its put
 * fails and it waits for the swap's end), and every slot claimed before
 * is taken, waiting the few instructions its writer needs to commit it.
 * So a record written at the instant of a swap is never left behind in a
 * ring nobody reads, and leftovers go first into the new ring, before it
 * is published, so that each thread's records stay in order. */
static _Atomic int moving;	/* a swap is moving the old ring's records */
static _Atomic uint64_t direct_writes;	/* records written directly while no ring was read */
static _Atomic uint64_t lost_unsaid;	/* records lost while no ring was read */
/* This thread is inside a put: a handler that interrupted it must not
 * swap (the slot it claimed would never commit while we wait). */
static __thread unsigned char in_put __attribute__((tls_model("initial-exec")));
/* This thread is the swapper: a handler on it must not wait for itself. */
static __thread unsigned char swapping_here __attribute__((tls_model("initial-exec")));

/* How long a swap waits for a writer that claimed a slot to commit it
 * (a thread descheduled between the two): past that, the record is
 * counted as lost, never silently dropped. */
#define COMMIT_WAIT_NS 200000000L

/* How long a thread waits for a collector that is leaving to write out
 * what its ring holds (a few ms for a full ring): past that, the ring is
 * taken for released, and what is left in it is moved as at a lapse. */
#define RELEASE_WAIT_NS 500000000L

/* A ring its collector is withdrawing (see record/ring.h): waits until
 * the collector has written out every record claimed in it, so that
 * nothing this thread writes next, anywhere, goes before them. */
static void await_release(struct pf_ring_header *r)
{
	long deadline = 0;

	while (atomic_load(&r->withdrawn) == PF_RING_WITHDRAWING) {
		if (!deadline)
			deadline = pf_monotonic_ns() + RELEASE_WAIT_NS;
		else if (pf_monotonic_ns() > deadline) {
			/* A collector killed while leaving: not waited for twice. */
			uint32_t withdrawing = PF_RING_WITHDRAWING;
			atomic_compare_exchange_strong(&r->withdrawn, &withdrawing, PF_RING_RELEASED);
			return;
		}
		struct timespec pause = {.tv_nsec = 50000};
		nanosleep(&pause, NULL);
	}
}

/* Where move_leftovers puts the old ring's records, and how many went
 * nowhere. */
struct leftover_target {
	const struct pf_runtime *rt;
	struct pf_ring_header *old, *fresh;
	unsigned long lost;
};

/* The record's text in ring r, or the mark that it had one r had no
 * room for. */
static void text_in(struct pf_ring_header *r, struct pf_ring_entry *e, int text_kind, const char *text)
{
	e->text = pf_ring_text_put(r, text_kind, text);
	if (e->text)
		e->flags &= (uint8_t)~PF_RING_TEXT_LOST;
	else
		e->flags |= PF_RING_TEXT_LOST;
}

/* The entry's text (of ring from) in ring to, for a copy of it there. */
static void carry_text(struct pf_ring_header *from, struct pf_ring_header *to, struct pf_ring_entry *e)
{
	char text[PF_RING_TEXT_MAX + 1];
	int kind = pf_ring_text_get(from, e, text, sizeof(text));

	if (kind)
		text_in(to, e, kind, text);
	else
		e->text = 0;
}

static void move_one(const struct pf_ring_entry *e, void *opaque)
{
	struct leftover_target *target = opaque;
	struct pf_ring_entry moved = *e;

	if (target->fresh) {
		carry_text(target->old, target->fresh, &moved);
		if (pf_ring_put(target->fresh, &moved))
			return;
	}
	if (!pf_audit_entry(target->rt, target->old, e))
		target->lost++;
}

/* The old ring's records, all of them, into the new one in order (with
 * no collector, into the file; counted as lost when neither takes them). */
static void move_leftovers(const struct pf_runtime *rt, struct pf_ring_header *old, struct pf_ring_header *fresh)
{
	uint64_t end = pf_ring_close(old), tail = atomic_load(&old->tail);
	struct leftover_target target = {rt, old, fresh, 0};
	/* Read target.lost only after the drain: move_one counts into it. */
	unsigned long skipped = pf_ring_take_to_end(old, &tail, end, COMMIT_WAIT_NS, false, move_one, &target);

	atomic_fetch_add(fresh ? &fresh->lost : &old->lost, skipped + target.lost);
}

/* A ring swapped out (every record claimed in it moved, or counted
 * lost), let go: its 256 KiB of the memfd, which the collector frees once
 * it has drained it, are replaced at the same address by an anonymous
 * closed ring with nothing in it, of which only the header's page is ever
 * touched.  A thread that still holds the old address (its put lost the
 * race with the swap) finds a closed ring there, never unmapped memory. */
static void retire_ring(struct pf_ring_header *old)
{
	uint64_t end = atomic_load(&old->head) | PF_RING_CLOSED;
	struct pf_ring_header *closed = mmap(NULL, PF_RING_BYTES, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (closed == MAP_FAILED)
		return;	/* the old ring stays as it was: closed */
	madvise(closed, PF_RING_BYTES, MADV_DONTFORK);
	closed->magic = PF_RING_MAGIC;
	closed->version = PF_RING_VERSION;
	closed->slots = PF_RING_SLOTS;
	closed->slot_size = sizeof(struct pf_ring_slot);
	atomic_store(&closed->tail, end & ~PF_RING_CLOSED);
	atomic_store(&closed->withdrawn, PF_RING_RELEASED);
	atomic_store(&closed->head, end);
	/* Moved over the old one in one step: no thread ever sees the
	 * address empty, or a ring there that is not closed (a put into it
	 * would be lost). */
	if (mremap(closed, PF_RING_BYTES, PF_RING_BYTES, MREMAP_MAYMOVE | MREMAP_FIXED, old) == MAP_FAILED)
		munmap(closed, PF_RING_BYTES);
}

/* Set while this process keeps its records in a ring no collector reads
 * (the collector stopped or died, and none has come yet) because it may
 * not write them itself: the next collector gets them all.  The ring's
 * lost count when the keeping began: what the last collector said. */
static _Atomic bool keeping;
static _Atomic uint64_t kept_lost_base;

/* The records a kept ring lost (it was full), for the collector of
 * fresh, which takes its records over, to say. */
static void hand_kept_losses(struct pf_ring_header *kept, struct pf_ring_header *fresh)
{
	uint64_t lost = atomic_load(&kept->lost), base = atomic_load(&kept_lost_base);

	/* (A count below the base is a header the program trampled.) */
	if (atomic_exchange(&keeping, false) && lost > base)
		atomic_fetch_add(&fresh->lost, lost - base);
}

_Static_assert(PF_RING_SLOTS == 4096, "say_keeping's line names the ring's size");

static PF_COLD void say_keeping(void)
{
	static _Atomic int said;
	static const char line[] = "portfence: the collector is gone; records are kept for the next one "
				   "(up to 4096; more are lost, counted)";

	if (!atomic_exchange(&said, 1))
		pf_stderr_line(line, sizeof(line) - 1);
}

/* A new process tries at once, whatever its parent's tries were. */
static PF_COLD void forget_parents_attempts(pid_t pid)
{
	if (atomic_load_explicit(&attempt_pid, memory_order_relaxed) == pid)
		return;
	atomic_store(&failed_attempts, 0);
	atomic_store(&next_attempt, 0);
	atomic_store(&direct_writes, 0);
	atomic_store(&lost_unsaid, 0);
	atomic_store(&attempt_pid, pid);
}

/* A registration, when the tries' back-off (1, 2, 4 ... 64 s) allows
 * one at now: a collector that takes connections and never answers must
 * not slow the program down.  The new ring, its collector in
 * *collector; NULL when there was none. */
static PF_COLD struct pf_ring_header *try_register(long now, pid_t *collector)
{
	long due = atomic_load(&next_attempt);
	int failed = atomic_load_explicit(&failed_attempts, memory_order_relaxed);

	if (now < due)
		return NULL;
	/* Records kept for the next collector: looked for every second. */
	int backoff = atomic_load(&keeping) ? 0 : failed < 6 ? failed : 6;
	atomic_store(&next_attempt, now + (1L << backoff));
	/* A running program waits less than one starting: a collector that
	 * answers at all answers fast. */
	struct pf_ring_header *fresh = register_new(100, collector, 0, 0);
	if (fresh) {
		/* The next lapse may register again at once. */
		atomic_store(&failed_attempts, 0);
		atomic_store(&next_attempt, 0);
	} else {
		atomic_fetch_add(&failed_attempts, 1);
	}
	return fresh;
}

/* This thread holding the swap: what the collector that went had not
 * taken of r goes into fresh, or with no collector (fresh NULL) into
 * the file, and fresh becomes the ring (a child's r is its parent's,
 * never mapped here, so it is neither emptied nor retired).  A process
 * that may not write the file keeps r instead, and its records in it,
 * until a collector comes.  The ring to write into: NULL, the file. */
static PF_COLD struct pf_ring_header *swap_ring(const struct pf_runtime *rt, struct pf_ring_header *r,
						struct pf_ring_header *fresh, pid_t collector, bool child)
{
	if (!fresh && !child && !pf_ring_closed(r) && !pf_log_writable()) {
		if (!atomic_exchange(&keeping, true)) {
			atomic_store(&kept_lost_base, atomic_load(&r->lost));
			say_keeping();
		}
		return r;
	}
	if (!child && (fresh || !pf_ring_closed(r))) {
		atomic_store(&moving, 1);
		move_leftovers(rt, r, fresh);
	}
	if (fresh) {
		/* What went to the file meanwhile is counted in the new ring,
		 * for the collector to say. */
		atomic_fetch_add(&fresh->fallback, atomic_exchange(&direct_writes, 0));
		atomic_fetch_add(&fresh->lost, atomic_exchange(&lost_unsaid, 0));
		if (!child)
			hand_kept_losses(r, fresh);
		adopt_ring(fresh, collector);
		if (!child)
			retire_ring(r);
	}
	atomic_store(&moving, 0);
	return fresh;
}

void pf_collect_user_changed(void)
{
	/* A vfork child shares our memory, not our user: only the process
	 * whose ring it is marks it. */
	if (getpid() == atomic_load(&ring_pid))
		atomic_store(&user_changed, true);
}

/* After a change of user, with the collector alive: a ring registered
 * under the new user (the kernel's word, SO_PEERCRED) becomes the
 * process's, and the old one is closed, its records left for the
 * collector to take under the user that made them.  NULL when the
 * collector did not take the new ring: the old one stays. */
static PF_COLD struct pf_ring_header *register_as_new_user(struct pf_ring_header *r)
{
	pid_t collector = 0;
	struct pf_ring_header *fresh = register_new(100, &collector, 0, 0);

	atomic_store(&user_changed, false);
	if (!fresh)
		return NULL;
	pf_ring_close(r);
	adopt_ring(fresh, collector);
	return fresh;
}

/* The ring to write into now, registering one when this is a new process,
 * its user changed, or the collector's lease ran out (once a second at
 * most, one thread at a time).  force: the ring was found closed.  NULL:
 * write directly. */
static PF_HOT struct pf_ring_header *current_ring(const struct pf_runtime *rt, bool force)
{
	struct pf_ring_header *r = atomic_load_explicit(&pf_collect_ring, memory_order_acquire);
	pid_t pid = pf_cached_pid(), collector = 0;
	bool child = atomic_load_explicit(&ring_pid, memory_order_relaxed) != pid;
	long now;

	if (!child && !force && !atomic_load_explicit(&user_changed, memory_order_relaxed) &&
	    atomic_load_explicit(&r->lease, memory_order_relaxed) >= (now = coarse_seconds()))
		return r;
	now = coarse_seconds();
	forget_parents_attempts(pid);
	/* One thread at a time; another one's swap moves the old ring's
	 * records, and, while the ring is open, ours with them. */
	if (in_put || atomic_exchange(&registering, 1))
		return !child && !pf_ring_closed(r) ? r : NULL;
	swapping_here = 1;
	if (!child && atomic_load(&user_changed) && !pf_ring_closed(r) && atomic_load(&r->lease) >= now) {
		struct pf_ring_header *fresh = register_as_new_user(r);
		atomic_store(&registering, 0);
		swapping_here = 0;
		return fresh ? fresh : r;
	}
	if (!child)
		await_release(r);
	/* Between tries there is no registration, but a ring nobody reads
	 * any more is still emptied into the file at once. */
	struct pf_ring_header *fresh = try_register(now, &collector);
	struct pf_ring_header *to = swap_ring(rt, r, fresh, collector, child);
	atomic_store(&registering, 0);
	swapping_here = 0;
	return to;
}

/* Waits (bounded) for another thread's swap to end; false when this
 * thread is the swapper (a handler) or it did not end in time. */
static PF_COLD bool swap_ended(void)
{
	long deadline = pf_monotonic_ns() + COMMIT_WAIT_NS + 200000000L;

	if (swapping_here)
		return false;
	while (atomic_load(&moving))
		if (pf_monotonic_ns() > deadline)
			return false;
		else
			sched_yield();
	return true;
}

/* A full ring whose collector lives is emptied within milliseconds,
 * unless the host is saturated (journald taking a core to itself, say):
 * the record waits for room, a bounded while, rather than go to a file
 * this process may not open (a service not run as root loses it) or out
 * of its order.  A wait that found no room (a collector stopped, not
 * yet known to be gone) is not tried again for a second: the program is
 * held up once, not at every record.  Async-signal-safe, as the calls it
 * serves. */
#define ROOM_WAIT_NS 250000000L
#define ROOM_WAIT_PAUSE_NS 1000000000L

static _Atomic long room_waits_resume_at;

/* A put, marked as under way for a handler that interrupts it. */
static PF_HOT bool put_marked(struct pf_ring_header *r, const struct pf_ring_entry *e)
{
	in_put = 1;
	bool put = pf_ring_put(r, e);
	in_put = 0;
	return put;
}

static PF_COLD bool put_when_room(struct pf_ring_header *r, const struct pf_ring_entry *e)
{
	long now = pf_monotonic_ns(), deadline = now + ROOM_WAIT_NS;
	const struct timespec pause = {0, 200000};
	bool put = false;
	int saved = errno;

	if (now < atomic_load_explicit(&room_waits_resume_at, memory_order_relaxed))
		return false;
	while (!put && !pf_ring_closed(r) && (now = pf_monotonic_ns()) < deadline) {
		nanosleep(&pause, NULL);
		put = put_marked(r, e);
	}
	if (!put)
		atomic_store_explicit(&room_waits_resume_at, now + ROOM_WAIT_PAUSE_NS, memory_order_relaxed);
	errno = saved;
	return put;
}

PF_HOT bool pf_collect(const struct pf_runtime *rt, const struct pf_record *record, int text_kind, const char *text)
{
	struct pf_ring_entry e;
	bool force = false;

	pf_ring_entry_of(&e, record->event, record->sock && record->sock->udp,
			 record->sock ? record->sock->family : AF_INET, record->local, record->remote,
			 record->attempts, record->error);
	for (int round = 0; round < 3; round++) {
		struct pf_ring_header *r = current_ring(rt, force);
		if (!r) {
			/* The old ring was just closed: its records are being
			 * moved; ours comes after them. */
			if (atomic_load(&moving) && swap_ended())
				continue;
			break;
		}
		if (text)
			text_in(r, &e, text_kind, text);
		if (put_marked(r, &e) || put_when_room(r, &e))
			return true;
		if (!pf_ring_closed(r)) {
			atomic_store_explicit(&fallback_why, "the record ring is full", memory_order_relaxed);
			return false;
		}
		/* Closed under us by another thread's swap: the new ring (or
		 * the file), once the old one's records are in it (or written
		 * out). */
		await_release(r);
		if (!swap_ended())
			break;
		force = atomic_load(&pf_collect_ring) == r;
	}
	atomic_store_explicit(&fallback_why, "the collector is gone", memory_order_relaxed);
	return false;
}

PF_COLD bool pf_collect_try_late(void)
{
	if (!atomic_load_explicit(&pf_collect_late_wanted, memory_order_relaxed))
		return false;
	long now = coarse_seconds();
	if (now < atomic_load(&late_start_next) || in_put || atomic_exchange(&registering, 1))
		return false;
	atomic_store(&late_start_next, now + 1);
	int saved = errno;
	pid_t collector = 0;
	struct pf_ring_header *fresh = pf_collecting() ? NULL : register_new(100, &collector, 0, 0);
	if (fresh) {
		adopt_ring(fresh, collector);
		atomic_store(&pf_collect_late_wanted, false);
	}
	atomic_store(&registering, 0);
	errno = saved;
	return pf_collecting();
}

void pf_collect_fell_back(bool written)
{
	struct pf_ring_header *r = atomic_load(&pf_collect_ring);
	const char *why = atomic_load_explicit(&fallback_why, memory_order_relaxed);

	if (r && atomic_load(&ring_pid) == pf_cached_pid() && !pf_ring_closed(r))
		atomic_fetch_add(written ? &r->fallback : &r->lost, 1);
	else if (atomic_load(&attempt_pid) == pf_cached_pid())
		atomic_fetch_add(written ? &direct_writes : &lost_unsaid, 1);	/* for the ring registered next */
	say_fallback(why ? why : "the collector did not take a record", written);
}

/* A child forked while another thread was swapping has no such thread:
 * it must neither wait for that swap nor take it for under way. */
static void collect_after_fork_child(void)
{
	atomic_store(&moving, 0);
	if (!swapping_here)
		atomic_store(&registering, 0);
	/* The parent's kept ring is not the child's (it registers its own). */
	atomic_store(&keeping, false);
}

__attribute__((constructor(101))) static void collect_init(void)
{
	pthread_atfork(NULL, NULL, collect_after_fork_child);
}

/* At exit, what went to the file (or was lost) since the last
 * registration is told to a collector, in the ring it reads or in one
 * registered for that, for it to say; with no collector, our own line on
 * stderr said it. */
static void report_unsaid_at_exit(struct pf_ring_header *r)
{
	if (atomic_load(&attempt_pid) != pf_cached_pid())
		return;
	uint64_t direct = atomic_exchange(&direct_writes, 0), lost = atomic_exchange(&lost_unsaid, 0);
	pid_t collector = 0;
	if (!direct && !lost)
		return;
	if (r && atomic_load(&ring_pid) == pf_cached_pid() && !pf_ring_closed(r) &&
	    atomic_load(&r->lease) >= coarse_seconds()) {
		atomic_fetch_add(&r->fallback, direct);
		atomic_fetch_add(&r->lost, lost);
	} else
		register_new(100, &collector, direct, lost);	/* stays mapped: the collector reads it */
}

/* At exit: what is still in the ring of a collector that is gone (killed
 * before its lease ran out, so that no swap took the ring over) would be
 * nobody's; it goes to the file, in order.  A collector that is leaving
 * writes it out first (we wait for that, bounded); one that lives takes
 * it after we are gone, as it always does.  (Its pid is the kernel's
 * word at registration; 0, from another pid namespace, is not looked at.) */
__attribute__((destructor)) static void collect_at_exit(void)
{
	struct pf_ring_header *r = atomic_load(&pf_collect_ring);
	pid_t collector = atomic_load(&ring_collector);
	int saved = errno;

	if (!r || atomic_load(&ring_pid) != pf_cached_pid())
		goto direct;
	await_release(r);
	if (pf_ring_closed(r) || atomic_load(&r->tail) >= (atomic_load(&r->head) & ~PF_RING_CLOSED))
		goto direct;
	bool nobodys = atomic_load(&r->lease) < coarse_seconds() ||
		       (collector > 0 && kill(collector, 0) < 0 && errno == ESRCH);
	if (!nobodys || atomic_exchange(&registering, 1))
		goto direct;
	atomic_store(&moving, 1);
	/* A process that may not write them itself hands them to a
	 * collector that came meanwhile, if one did. */
	struct pf_ring_header *fresh = pf_log_writable() ? NULL : register_new(100, &collector, 0, 0);
	if (fresh)
		hand_kept_losses(r, fresh);
	move_leftovers(pf_runtime(), r, fresh);
	atomic_store(&moving, 0);
	atomic_store(&registering, 0);
direct:
	if (collector_path[0])
		report_unsaid_at_exit(r);
	errno = saved;
}
