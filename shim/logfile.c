/* Why one file, past the ~450-line guideline: the fd lock, the log fd's
 * place (moved high, moved away from a dup2), the open with its
 * ownership checks, the rotation check and the write all share the
 * thread-local writer counters and the fd lock, and all of them must stay
 * async-signal-safe together; one file keeps that one invariant
 * reviewable in one place. */
/* The audit log file: who may own it, where its fd lives, how a record
 * reaches it whole, and how it follows logrotate.
 *
 * Everything a record write touches is async-signal-safe (a connect in a
 * signal handler is recorded too): system calls, atomics, thread-local
 * counters; no malloc, no stdio, no lock a handler could wait on for its
 * own thread. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/hot.h"
#include "shim.h"

/* Far above the fds a program usually holds, so that our fd rarely
 * stands where the program expects to find a free number. */
#define LOG_FD_FLOOR 900

PF_HOT_DATA _Atomic int pf_log_fd_now = -1;

/* ---- the fd lock: every change of fd numbers the log could stand on ----
 * dup2/dup3/close_range/closefrom and the log's own moves, so that a
 * program's dup2 never lands on a number the log is moving to.  Held by
 * one thread, named by its thread id; a signal handler on that thread
 * passes (it cannot wait for the code it interrupted).  A child made
 * without fork()'s atfork handlers (_Fork, clone) inherits the lock as a
 * thread of its parent held it, a thread the child does not have: a
 * holder that is no thread of this process (tgkill says ESRCH) is taken
 * over.  These calls are rare: the system calls cost nothing that
 * matters here. */
static _Atomic uintptr_t fd_lock_owner;
static __thread unsigned fd_lock_nested __attribute__((tls_model("initial-exec")));
/* The process whose writers log_writers counts (see below). */
static _Atomic pid_t writers_counted_in;

static uintptr_t this_thread(void)
{
	return (uintptr_t)syscall(SYS_gettid);
}

/* True on the thread holding the fd lock (in a handler: it interrupted
 * that thread inside the lock). */
static bool fd_lock_held_here(void)
{
	return atomic_load(&fd_lock_owner) == this_thread();
}

/* Whether the holder is a thread of this process. */
static bool holder_lives(uintptr_t holder)
{
	int saved = errno;
	bool lives = syscall(SYS_tgkill, (pid_t)syscall(SYS_getpid), (pid_t)holder, 0) == 0 || errno != ESRCH;
	errno = saved;
	return lives;
}

static void count_writers_afresh(void);

/* Cancellation is off inside the lock: close() is a cancellation point,
 * and a thread cancelled there would hold the lock for ever. */
static __thread int fd_lock_cancel_state __attribute__((tls_model("initial-exec")));

void pf_fd_lock(void)
{
	uintptr_t me = this_thread(), expected = 0;
	int cancel_state;

	if (atomic_load(&fd_lock_owner) == me) {
		fd_lock_nested++;
		return;
	}
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
	while (!atomic_compare_exchange_weak(&fd_lock_owner, &expected, me)) {
		if (expected && !holder_lives(expected) &&
		    atomic_compare_exchange_strong(&fd_lock_owner, &expected, me))
			break;
		expected = 0;
		sched_yield();
	}
	fd_lock_cancel_state = cancel_state;
	count_writers_afresh();
}

void pf_fd_unlock(void)
{
	if (fd_lock_nested > 0) {
		fd_lock_nested--;
		return;
	}
	int cancel_state = fd_lock_cancel_state;
	atomic_store(&fd_lock_owner, 0);
	pthread_setcancelstate(cancel_state, NULL);
}

/* ---- handing the log from one fd to another ----
 * A writer announces itself in the counter of the current generation,
 * then reads the fd; whoever retires an fd first publishes the new one,
 * starts a new generation, and closes the old fd only when every writer
 * of the old generation is done.  So no write ever reaches a number that
 * has been given back to the program.  The current thread's own writes
 * (a handler that interrupted one) are not waited for. */
static _Atomic unsigned log_generation;
static _Atomic unsigned log_writers[2];
static __thread unsigned own_writers[2] __attribute__((tls_model("initial-exec")));

static int writer_enter(unsigned *slot)
{
	for (;;) {
		unsigned generation = atomic_load(&log_generation);
		*slot = generation & 1;
		own_writers[*slot]++;
		atomic_fetch_add(&log_writers[*slot], 1);
		int fd = atomic_load(&pf_log_fd_now);
		if (atomic_load(&log_generation) == generation)
			return fd;
		atomic_fetch_sub(&log_writers[*slot], 1);
		own_writers[*slot]--;
	}
}

static void writer_leave(unsigned slot)
{
	atomic_fetch_sub(&log_writers[slot], 1);
	own_writers[slot]--;
}

/* With the fd lock held: in a child made without the atfork handlers,
 * the counts still hold its parent's writers, which will never leave;
 * only this thread's own are in flight here. */
static void count_writers_afresh(void)
{
	pid_t pid = (pid_t)syscall(SYS_getpid);

	if (atomic_load(&writers_counted_in) == pid)
		return;
	for (int i = 0; i < 2; i++)
		atomic_store(&log_writers[i], own_writers[i]);
	atomic_store(&writers_counted_in, pid);
}

/* With the fd lock held: the log continues on fd (or stops, at -1). */
static void replace_log_fd(int fd)
{
	int old = atomic_exchange(&pf_log_fd_now, fd);
	unsigned slot = atomic_fetch_add(&log_generation, 1) & 1;

	while (atomic_load(&log_writers[slot]) != own_writers[slot])
		sched_yield();
	if (old >= 0)
		real_close(old);
}

static int move_high(int fd)
{
	int high = fcntl(fd, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);

	if (high < 0)
		return fd;
	real_close(fd);
	return high;
}

/* The program wants fd as a number (dup2 onto it): our log moves.  Called
 * with the fd lock held. */
void pf_log_move_away_from(int fd)
{
	int current = pf_log_fd();

	if (current < 0 || current != fd)
		return;
	int moved = fcntl(current, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);
	if (moved < 0)
		moved = fcntl(current, F_DUPFD_CLOEXEC, 0);
	replace_log_fd(moved);
	if (moved < 0) {
		static const char lost[] = "portfence: no free fd to keep the audit log open on; records are not written";
		pf_stderr_line(lost, sizeof(lost) - 1);
	}
}

/* ---- messages ---- */

static char log_path[PATH_MAX];	/* absolute; "" for stderr */
static _Atomic bool log_rotates;	/* a regular file, followed through logrotate */

static void put_error(struct pf_out *o, int error)
{
	const char *text = strerrordesc_np(error);
	pf_put_str(o, text ? text : "unknown error");
}

/* Room for a warning; a very long path is cut short in it.  Kept small:
 * a record may be written on a signal handler's stack. */
#define WARNING_MAX 1024

static void warn_done(struct pf_out *o, char *line, const char *suffix)
{
	pf_put_str(o, suffix);
	pf_stderr_line(line, (size_t)(o->p - line));
}

/* ---- opening ---- */

/* The rules of SPEC's "Audit log": a regular file (or a character device
 * such as /dev/null, which keeps nothing) that belongs to us or root and
 * that others cannot write.  On refusal why says so. */
static bool acceptable(const char *path, const struct stat *info, struct pf_out *why)
{
	uid_t self = geteuid();

	if (!S_ISREG(info->st_mode) && !S_ISCHR(info->st_mode)) {
		pf_put_str(why, "cannot open audit log ");
		pf_put_str(why, path);
		pf_put_str(why, ": not a regular file");
	} else if (info->st_uid != self && info->st_uid != 0) {
		pf_put_str(why, "audit log ");
		pf_put_str(why, path);
		pf_put_str(why, " belongs to uid ");
		pf_put_uint(why, info->st_uid, 1);
		pf_put_str(why, ", not to uid ");
		pf_put_uint(why, self, 1);
		pf_put_str(why, " or root");
	} else if (S_ISREG(info->st_mode) && (info->st_mode & S_IWOTH)) {
		pf_put_str(why, "audit log ");
		pf_put_str(why, path);
		pf_put_str(why, " is writable by others (mode 0");
		for (int shift = 9; shift >= 0; shift -= 3)
			pf_put_uint(why, (info->st_mode >> shift) & 7, 1);
		pf_put_str(why, ")");
	} else {
		return true;
	}
	return false;
}

/* Created 0640 whatever the umask (SPEC), never through a symlink, and
 * only ever appended to.  Opened non-blocking so that a FIFO without a
 * reader cannot hang the host program.  An existing file is checked on
 * the fd, so what is checked is what is written. */
static int open_log_file(const char *path, struct pf_out *why)
{
	const int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;
	struct stat info;
	int fd = open(path, flags | O_CREAT | O_EXCL, 0640);

	if (fd >= 0)
		fchmod(fd, 0640);
	else if (errno == EEXIST)
		fd = open(path, flags);
	if (fd < 0 || fstat(fd, &info) < 0) {
		int error = errno;
		if (fd >= 0)
			real_close(fd);
		pf_put_str(why, "cannot open audit log ");
		pf_put_str(why, path);
		pf_put_str(why, ": ");
		put_error(why, error);
		return -1;
	}
	if (!acceptable(path, &info, why)) {
		real_close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);
	return move_high(fd);
}

/* 1 when the file may end inside a record (a write of ours or of another
 * process was cut), so the next record must start a line of its own. */
static _Atomic int log_may_end_mid_line;
#define MID_LINE_UNKNOWN 1	/* look at the last byte before writing */
#define MID_LINE_OURS 2		/* our own write was cut */

/* Remembers an absolute path, so that a chdir does not make the log
 * look rotated ("" when it cannot be had). */
static void remember_path(const char *path)
{
	struct pf_out o = {.p = log_path, .end = log_path + sizeof(log_path) - 1};

	if (path[0] != '/') {
		if (!getcwd(log_path, sizeof(log_path) - 1)) {
			log_path[0] = '\0';
			return;
		}
		o.p = log_path + strlen(log_path);
		pf_put_str(&o, "/");
	}
	pf_put_str(&o, path);
	if (o.p == o.end)
		o.p = log_path;	/* too long to follow: no rotation */
	*o.p = '\0';
}

static _Atomic long rotation_checked_at;
/* The root directory the log was opened under: a process that chrooted
 * since cannot see the path, which says nothing about a rotation. */
static dev_t log_root_dev;
static ino_t log_root_ino;

static long coarse_seconds(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return (long)now.tv_sec;
}

int pf_log_open(const char *path, char *why, size_t why_len)
{
	struct pf_out reason = {.p = why, .end = why + why_len - 1};
	struct stat info;
	int fd;

	if (strcmp(path, "-") == 0) {
		fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);
		if (fd < 0)
			fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			pf_put_str(&reason, "cannot write the audit log to stderr: ");
			put_error(&reason, errno);
		}
	} else {
		fd = open_log_file(path, &reason);
	}
	if (fd < 0) {
		*reason.p = '\0';
		return -1;
	}
	if (strcmp(path, "-") != 0 && fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
		remember_path(path);
		struct stat root;
		if (stat("/", &root) == 0) {
			log_root_dev = root.st_dev;
			log_root_ino = root.st_ino;
		}
		atomic_store(&log_may_end_mid_line, info.st_size > 0 ? MID_LINE_UNKNOWN : 0);
		atomic_store(&rotation_checked_at, coarse_seconds());
		atomic_store(&log_rotates, log_path[0] != '\0');
	}
	pf_fd_lock();
	replace_log_fd(fd);
	pf_fd_unlock();
	return 0;
}

/* ---- logrotate ----
 * At most once a second (a coarse clock, read from the vDSO: nothing on
 * the per-record cost otherwise), the path is compared with the open
 * file; when it names another file or none, the log is reopened there
 * under the same rules.  A refused file leaves records going to the file
 * we hold, with one line on stderr. */
static _Atomic int rotation_refused;

/* Whether the path still names the file we hold (true when that cannot
 * be told: a failing fstat is no reason to reopen). */
static bool still_at_path(int fd)
{
	struct stat open_file, at_path;

	if (fstat(fd, &open_file) < 0)
		return true;
	if (lstat(log_path, &at_path) < 0)
		return false;
	return open_file.st_dev == at_path.st_dev && open_file.st_ino == at_path.st_ino;
}

static bool chrooted_since_open(void)
{
	struct stat root;
	return stat("/", &root) == 0 && (root.st_dev != log_root_dev || root.st_ino != log_root_ino);
}

static void follow_rotation(void)
{
	long now = coarse_seconds();
	long checked = atomic_load_explicit(&rotation_checked_at, memory_order_relaxed);

	if (now == checked || !atomic_load_explicit(&log_rotates, memory_order_acquire) ||
	    !atomic_compare_exchange_strong(&rotation_checked_at, &checked, now))
		return;
	int fd = pf_log_fd();
	/* Inside the fd lock (a handler that interrupted a dup2) the numbers
	 * are moving under us: the next second will do. */
	if (fd < 0 || fd_lock_held_here() || still_at_path(fd))
		return;
	if (chrooted_since_open()) {
		/* The path is out of reach from here: no rotation can be
		 * seen, and none is claimed. */
		atomic_store(&log_rotates, false);
		char line[WARNING_MAX];
		struct pf_out o = {.p = line, .end = line + sizeof(line) - 200};
		pf_put_str(&o, "portfence: this process changed its root directory (chroot) after opening the audit log ");
		pf_put_str(&o, log_path);
		o.end = line + sizeof(line);
		warn_done(&o, line, "; its records go on to the file opened before, and do not follow a rotation "
				    "(a collector, `portfence daemon`, writes them wherever the program runs)");
		return;
	}
	char line[WARNING_MAX];
	struct pf_out o = {.p = line, .end = line + sizeof(line) - 96};
	pf_put_str(&o, "portfence: ");
	pf_fd_lock();
	int fresh = open_log_file(log_path, &o);
	if (fresh >= 0) {
		atomic_store(&log_may_end_mid_line, 0);
		replace_log_fd(fresh);
		atomic_store(&rotation_refused, 0);
	}
	pf_fd_unlock();
	o.end = line + sizeof(line);
	if (fresh < 0 && atomic_exchange(&rotation_refused, 1) == 0)
		warn_done(&o, line, "; records still go to the log file as it was before rotation");
}

/* ---- writing ---- */

/* The file's size and last byte through reader; false when unreadable.
 * SEEK_HOLE first: ext4, tmpfs and btrfs take the inode's lock for it,
 * which an append holds while it copies, so the look waits for an
 * append in progress to end. */
static bool last_byte(int fd, int reader, off_t *size, char *last)
{
	struct stat info;

	lseek(reader, 0, SEEK_HOLE);
	if (fstat(fd, &info) < 0 || !S_ISREG(info.st_mode))
		return false;
	*size = info.st_size;
	*last = '\n';
	return info.st_size == 0 || pread(reader, last, 1, info.st_size - 1) == 1;
}

/* Whether the file ends inside a record: 1, 0, or -1 when it cannot be
 * read (our fd is write-only; /proc reopens it for reading, with the
 * program's current rights).  Another process's append in progress is
 * seen half-copied (the size grows page by page as its bytes land), and
 * taken for a cut record it would make our record start with a newline
 * of its own: an empty line in the log (seen with processes starting
 * beside busy writers).  So the end counts as cut only when a second
 * look, after any append in progress (last_byte) and a moment, finds the
 * same size; an append in flight ends with its newline. */
#define CUT_LOOKS 3
#define CUT_STILL_NS 1000000L
static int ends_mid_line(int fd)
{
	char proc_path[32] = "/proc/self/fd/", last;
	struct pf_out o = {.p = proc_path + 14, .end = proc_path + sizeof(proc_path) - 1};
	off_t size;

	pf_put_uint(&o, (unsigned long)fd, 1);
	*o.p = '\0';
	int reader = open(proc_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (reader < 0)
		return -1;
	/* Each look's size and byte are the next look's "before". */
	int cut = last_byte(fd, reader, &size, &last) ? 0 : -1;
	for (int look = 0; cut == 0 && look < CUT_LOOKS && last != '\n'; look++) {
		off_t before = size;
		struct timespec still = {0, CUT_STILL_NS};
		nanosleep(&still, NULL);
		if (!last_byte(fd, reader, &size, &last))
			cut = -1;
		else if (size == before && last != '\n')
			cut = 1;
	}
	real_close(reader);
	return cut;
}

static _Atomic int write_failed;

static void warn_write_failed(ssize_t written, size_t wanted, int error)
{
	char line[WARNING_MAX];
	struct pf_out o = {.p = line, .end = line + sizeof(line) - 64};

	if (atomic_exchange(&write_failed, 1))
		return;
	pf_put_str(&o, "portfence: cannot write the audit log ");
	pf_put_str(&o, log_path[0] ? log_path : "(stderr)");
	pf_put_str(&o, ": ");
	if (written < 0) {
		put_error(&o, error);
	} else {
		/* A short write sets no errno: say what happened. */
		pf_put_str(&o, "short write (");
		pf_put_uint(&o, (unsigned long)written, 1);
		pf_put_str(&o, " of ");
		pf_put_uint(&o, wanted, 1);
		pf_put_str(&o, " bytes; is the file system full?)");
	}
	o.end = line + sizeof(line);
	warn_done(&o, line, "; records are being lost");
}

/* One record, in one writev(2) (atomic against other appenders as one
 * write is).  After a cut record the next one starts with a newline, so
 * a full disk leaves at most one malformed line and never glues a record
 * to it. */
void pf_log_write(const struct iovec *record, int count)
{
	struct iovec iov[PF_RECORD_IOV + 1];
	size_t wanted = 0;
	int used = 0;
	unsigned slot;

	if (count > PF_RECORD_IOV)
		return;
	follow_rotation();
	/* A thread cancelled in writev would count as a writer for ever. */
	int cancel_state;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
	int fd = writer_enter(&slot);
	if (fd < 0) {
		writer_leave(slot);
		pthread_setcancelstate(cancel_state, NULL);
		return;
	}
	int mid_line = atomic_load_explicit(&log_may_end_mid_line, memory_order_relaxed);
	if (mid_line)
		mid_line = atomic_exchange(&log_may_end_mid_line, 0);
	if (mid_line == MID_LINE_OURS || (mid_line == MID_LINE_UNKNOWN && ends_mid_line(fd) == 1))
		iov[used++] = (struct iovec){.iov_base = "\n", .iov_len = 1};
	for (int i = 0; i < count; i++)
		iov[used++] = record[i];
	for (int i = 0; i < used; i++)
		wanted += iov[i].iov_len;
	ssize_t written = writev(fd, iov, used);
	int error = errno;
	writer_leave(slot);
	pthread_setcancelstate(cancel_state, NULL);
	if (written == (ssize_t)wanted)
		return;
	atomic_store(&log_may_end_mid_line, written > 0 ? MID_LINE_OURS : MID_LINE_UNKNOWN);
	warn_write_failed(written, wanted, error);
}

/* A child starts with no writer in flight but its own thread's, and
 * with the fd lock free unless this thread held it. */
static void after_fork_child(void)
{
	for (int i = 0; i < 2; i++)
		atomic_store(&log_writers[i], own_writers[i]);
	atomic_store(&writers_counted_in, (pid_t)syscall(SYS_getpid));
	if (!fd_lock_held_here())
		atomic_store(&fd_lock_owner, 0);
}

__attribute__((constructor(101))) static void pf_logfile_init(void)
{
	atomic_store(&writers_counted_in, (pid_t)syscall(SYS_getpid));
	pthread_atfork(NULL, NULL, after_fork_child);
}
