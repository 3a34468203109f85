/* Audit records: one JSON object per line, appended with a single
 * write(2) so that concurrent processes never interleave.  The line is
 * record/record.c's, the same the BPF daemon writes; app and exe are
 * escaped once, at start-up, and go in as pieces of their own. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static bool log_to_syslog;

void pf_log_enable_syslog(bool enabled)
{
	log_to_syslog = enabled;
}

bool pf_logging(void)
{
	return pf_log_fd() >= 0 || log_to_syslog;
}

/* fd 2 as the program started with it.  A daemon that closed its fds
 * may find a data file or a socket at 2 later: our lines go to fd 2 only
 * while it is still the file it was at start-up. */
static struct {
	_Atomic int known;	/* 0: not looked at yet, 1: open, 2: closed */
	dev_t dev;
	ino_t ino;
} start_stderr;

static void remember_stderr(void)
{
	struct stat info;

	if (fstat(STDERR_FILENO, &info) == 0) {
		start_stderr.dev = info.st_dev;
		start_stderr.ino = info.st_ino;
		atomic_store(&start_stderr.known, 1);
	} else {
		atomic_store(&start_stderr.known, 2);
	}
}

static bool stderr_is_the_programs(void)
{
	struct stat info;

	if (atomic_load(&start_stderr.known) == 0)
		remember_stderr();
	return atomic_load(&start_stderr.known) == 1 && fstat(STDERR_FILENO, &info) == 0 &&
	       info.st_dev == start_stderr.dev && info.st_ino == start_stderr.ino;
}

/* Before any other constructor of ours, so that a warning at start-up is
 * judged against the stderr the program was given. */
__attribute__((constructor(101))) static void pf_audit_init(void)
{
	remember_stderr();
}

void pf_stderr_line(const char *text, size_t len)
{
	struct iovec line[2] = {{.iov_base = (void *)text, .iov_len = len}, {.iov_base = "\n", .iov_len = 1}};
	int saved = errno;

	if (stderr_is_the_programs()) {
		ssize_t ignored = writev(STDERR_FILENO, line, 2);
		(void)ignored;
	}
	errno = saved;
}

void pf_stderr(const char *fmt, ...)
{
	char line[1200];
	va_list args;
	int saved = errno;

	va_start(args, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	if (n >= 0)
		pf_stderr_line(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	errno = saved;
}

/* The record as pieces (at most PF_RECORD_IOV) over text, which must
 * outlive them. */
static int format_record(const struct pf_runtime *rt, const struct pf_record *r,
			 char *text, size_t len, struct iovec *iov)
{
	struct pf_record_fields fields = {
		.event = r->event,
		.pid = (long)pf_cached_pid(),
		.udp = r->sock && r->sock->udp,
		.family = r->sock ? r->sock->family : AF_INET,
		.local = r->local,
		.remote = r->remote,
		.algorithm = rt->app ? pf_algorithm_name(rt->app->algorithm) : "",
		.attempts = r->attempts,
		.error = r->error,
	};
	return pf_record_pieces(&fields, rt->app_json, rt->exe_json, text, len, iov);
}

/* syslog(3) would change the program's own openlog() ident; a datagram
 * of our own to /dev/log leaves it alone.  The record goes without its
 * newline, after the header. */
static void send_syslog(const struct iovec *record, int count, enum pf_event event)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
	struct iovec iov[PF_RECORD_IOV + 1];
	char header[64];
	struct pf_out o = {.p = header, .end = header + sizeof(header)};
	int fd = real_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || count < 1 || count > PF_RECORD_IOV)
		goto out;
	pf_put_str(&o, "<");
	pf_put_uint(&o, (1 << 3) | (event == PF_EVENT_ASSIGN || event == PF_EVENT_AUDIT ? 6 : 4), 1);
	pf_put_str(&o, ">portfence[");
	pf_put_uint(&o, (unsigned long)getpid(), 1);
	pf_put_str(&o, "]: ");
	iov[0] = (struct iovec){.iov_base = header, .iov_len = (size_t)(o.p - header)};
	memcpy(iov + 1, record, (size_t)count * sizeof(*iov));
	iov[count].iov_len--;
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count + 1};
	if (real_connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		real_sendmsg(fd, &msg, MSG_NOSIGNAL);
out:
	if (fd >= 0)
		real_close(fd);
}

/* The app's counters in its shared state (status --prometheus), kept
 * whether or not records are written. */
static void count(const struct pf_runtime *rt, const struct pf_record *record)
{
	struct pf_shared_state *shared = rt->state.shared;

	if (!shared)
		return;
	if (record->event == PF_EVENT_ASSIGN)
		atomic_fetch_add_explicit(&shared->assignments, 1, memory_order_relaxed);
	else if (record->event == PF_EVENT_ERROR &&
		 (record->error == EADDRNOTAVAIL || record->error == EAGAIN || record->error == EADDRINUSE))
		atomic_fetch_add_explicit(&shared->failures, 1, memory_order_relaxed);
}

/* No malloc and no stdio: a record may be written from a signal handler. */
void pf_audit(const struct pf_runtime *rt, const struct pf_record *record)
{
	char text[768];
	struct iovec iov[PF_RECORD_IOV];
	int saved = errno;

	count(rt, record);
	if (!pf_logging())
		return;
	int count = format_record(rt, record, text, sizeof(text), iov);
	if (count == 0)
		goto out;
	pf_log_write(iov, count);
	if (log_to_syslog)
		send_syslog(iov, count, record->event);
out:
	errno = saved;
}

void pf_audit_local(const struct pf_runtime *rt, const struct pf_sock *sock,
		    enum pf_event event, const struct sockaddr *local, bool exact,
		    const struct sockaddr *remote, unsigned attempts, int error)
{
	if (!exact) {
		pf_audit_socket(rt, sock, event, local, remote, attempts, error);
		return;
	}
	struct pf_record record = {
		.event = event, .sock = sock, .local = local, .remote = remote,
		.attempts = attempts, .error = error,
	};
	pf_audit(rt, &record);
}

void pf_audit_socket(const struct pf_runtime *rt, const struct pf_sock *sock,
		     enum pf_event event, const struct sockaddr *fallback_local,
		     const struct sockaddr *remote, unsigned attempts, int error)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	const struct sockaddr *shown = fallback_local;
	int saved = errno;

	if (!pf_logging()) {
		count(rt, &(struct pf_record){.event = event, .error = error});
		return;
	}
	if (real_getsockname(sock->fd, (struct sockaddr *)&local, &len) == 0 &&
	    (local.ss_family == AF_INET || local.ss_family == AF_INET6) &&
	    (!fallback_local || pf_address_port((const struct sockaddr *)&local)))
		shown = (const struct sockaddr *)&local;
	struct pf_record record = {
		.event = event, .sock = sock, .local = shown, .remote = remote,
		.attempts = attempts, .error = error,
	};
	pf_audit(rt, &record);
	errno = saved;
}
