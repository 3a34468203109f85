/* Audit records: one JSON object per line, appended with a single
 * write(2) so that concurrent processes never interleave.  The line is
 * record/record.c's, the same the BPF daemon writes; app and exe are
 * escaped once, at start-up, and go in as pieces of their own. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
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

#include "core/hot.h"
#include "record/ring.h"
#include "shim.h"

PF_HOT_DATA bool pf_log_to_syslog;

void pf_log_enable_syslog(bool enabled)
{
	pf_log_to_syslog = enabled;
}

/* With a collector, the log file is opened only when a record must go
 * there instead (the first time, by one thread: the others wait for it,
 * or the record they hold would find no file yet and be lost). */
static char fallback_path[PATH_MAX];
enum { FALLBACK_UNTRIED, FALLBACK_OPENING, FALLBACK_TRIED };
static _Atomic int fallback_state;
static __thread unsigned char opening_here __attribute__((tls_model("initial-exec")));
/* The open is a few system calls; a thread that waits longer is past any
 * honest delay (the opener stopped in a debugger, say) and goes on. */
#define FALLBACK_WAIT_NS 1000000000L

void pf_log_fallback(const char *path)
{
	size_t n = strlen(path);
	if (n < sizeof(fallback_path))
		memcpy(fallback_path, path, n + 1);
}

static void await_fallback(void)
{
	long deadline = pf_monotonic_ns() + FALLBACK_WAIT_NS;

	while (atomic_load(&fallback_state) == FALLBACK_OPENING && pf_monotonic_ns() <= deadline)
		sched_yield();
}

/* A child forked while another thread was opening has no such thread. */
static void fallback_after_fork_child(void)
{
	if (atomic_load(&fallback_state) == FALLBACK_OPENING && !opening_here)
		atomic_store(&fallback_state, FALLBACK_UNTRIED);
}

__attribute__((constructor(101))) static void fallback_init(void)
{
	pthread_atfork(NULL, NULL, fallback_after_fork_child);
}

static void open_fallback(void)
{
	char why[512];
	int untried = FALLBACK_UNTRIED;

	if (atomic_load_explicit(&fallback_state, memory_order_acquire) == FALLBACK_TRIED)
		return;
	if (!atomic_compare_exchange_strong(&fallback_state, &untried, FALLBACK_OPENING)) {
		/* A handler on the opening thread cannot wait for it. */
		if (!opening_here)
			await_fallback();
		return;
	}
	opening_here = 1;
	if (fallback_path[0] && pf_log_fd() < 0 && pf_log_open(fallback_path, why, sizeof(why)) < 0) {
		char line[600];
		struct pf_out o = {.p = line, .end = line + sizeof(line)};
		pf_put_str(&o, "portfence: ");
		pf_put_str(&o, why);
		pf_put_str(&o, "; records the collector cannot take are lost (counted)");
		pf_stderr_line(line, (size_t)(o.p - line));
	}
	opening_here = 0;
	atomic_store_explicit(&fallback_state, FALLBACK_TRIED, memory_order_release);
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
static int format_record(const struct pf_runtime *rt, const struct pf_record *r, const char *rule,
			 const char *reason, char *text, size_t len, struct iovec *iov)
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
		.rule = rule,
		.reason = reason,
	};
	return pf_record_pieces(&fields, rt->app_json, rt->exe_json, text, len, iov);
}

/* ---- Why: the deny's rule, the error's reason ---- */

static bool exhaustion_errno(int error)
{
	return error == EADDRNOTAVAIL || error == EAGAIN || error == EADDRINUSE;
}

/* The rule of a deny (or of an audit record of what enforce would
 * deny): the one the record names, else the destination rule. */
static const char *deny_rule(const struct pf_runtime *rt, const struct pf_record *r, char *buf, size_t len)
{
	if (r->rule)
		return r->rule;
	if (!rt->app || !r->remote || !(r->event == PF_EVENT_DENY || (r->event == PF_EVENT_AUDIT && r->error == EPERM)))
		return NULL;
	if (pf_app_explain(NULL, rt->app, r->event, r->error, 0, r->remote, buf, len) != PF_EXPLAINS_RULE)
		return NULL;
	return buf;
}

static const char *error_reason(const struct pf_runtime *rt, const struct pf_record *r, char *buf, size_t len)
{
	if (r->event != PF_EVENT_ERROR)
		return NULL;
	if (rt->status == PF_STATUS_DENY)
		snprintf(buf, len, "policy unusable (on_error = deny): %s", rt->why);
	else if (!r->sock && r->error == EOPNOTSUPP)
		snprintf(buf, len, "a Go program: the shim cannot see its system calls; portfence run --bpf confines it");
	else if (rt->app)
		pf_app_explain(NULL, rt->app, r->event, r->error, 0, NULL, buf, len);
	else
		snprintf(buf, len, "%s", pf_errno_name(r->error));
	return buf;
}

/* ---- Notices: one line on the program's stderr, at most one per
 * second of each kind ---- */

/* The room a rule's and a reason's text take. */
#define RULE_TEXT 200
#define REASON_TEXT 1100

enum notice_kind { NOTICE_DENY, NOTICE_EXHAUSTED, NOTICE_ERROR, NOTICE_KINDS };
static _Atomic long last_notice_ms[NOTICE_KINDS];

static PF_COLD bool notice_due(enum notice_kind kind)
{
	long ms = pf_monotonic_ns() / 1000000 + 1;
	long last = atomic_load(&last_notice_ms[kind]);
	if (last && ms - last < 1000)
		return false;
	return atomic_compare_exchange_strong(&last_notice_ms[kind], &last, ms);
}

static PF_COLD void format_endpoint(const struct sockaddr *addr, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (!addr) {
		snprintf(out, len, "?");
		return;
	}
	if (addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(sin->sin_port));
	}
}

static PF_COLD void notice(const struct pf_runtime *rt, const struct pf_record *r, const char *rule, const char *reason)
{
	const char *app = rt->app ? rt->app->name : "";
	char where[80];

	if (r->event == PF_EVENT_DENY && notice_due(NOTICE_DENY)) {
		if (r->remote) {
			format_endpoint(r->remote, where, sizeof(where));
			pf_stderr("portfence: app '%s': %s to %s denied (%s) by rule %s", app,
				  r->sock && r->sock->udp ? "udp" : "tcp", where, pf_errno_name(r->error),
				  rule ? rule : "?");
		} else {
			format_endpoint(r->local, where, sizeof(where));
			pf_stderr("portfence: app '%s': bind to %s refused (%s) by %s", app, where,
				  pf_errno_name(r->error), rule ? rule : "the policy");
		}
	} else if (r->event == PF_EVENT_ERROR && rt->app && exhaustion_errno(r->error) &&
		   notice_due(NOTICE_EXHAUSTED)) {
		pf_stderr("portfence: app '%s': range %u-%u exhausted, no free port (%s); see portfence status",
			  app, rt->app->range_lo, rt->app->range_hi, pf_errno_name(r->error));
	} else if (r->event == PF_EVENT_ERROR && !(rt->app && exhaustion_errno(r->error)) &&
		   rt->status != PF_STATUS_DENY && notice_due(NOTICE_ERROR)) {
		/* An unusable policy was said once at start-up already. */
		pf_stderr("portfence: app '%s': %s", app, reason ? reason : pf_errno_name(r->error));
	}
}

static bool wanted(const struct pf_runtime *rt, enum pf_event event, bool logging)
{
	return logging || (rt->notify && (event == PF_EVENT_DENY || event == PF_EVENT_ERROR));
}

PF_HOT bool pf_wanted(const struct pf_runtime *rt, enum pf_event event)
{
	return wanted(rt, event, pf_logging());
}

/* syslog(3) would change the program's own openlog() ident; a datagram
 * of our own to /dev/log leaves it alone.  The record goes without its
 * newline, after the header. */
static PF_COLD void send_syslog(const struct iovec *record, int count, enum pf_event event)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
	struct iovec iov[PF_RECORD_IOV + 1];
	char header[64];
	struct pf_out o = {.p = header, .end = header + sizeof(header)};
	int fd = real_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || count < 1 || count > PF_RECORD_IOV)
		goto out;
	pf_put_str(&o, "<");
	pf_put_uint(&o, (unsigned long)(PF_RECORD_SYSLOG_FACILITY | pf_record_syslog_level(event)), 1);
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
static PF_HOT void count(const struct pf_runtime *rt, const struct pf_record *record)
{
	struct pf_shared_state *shared = rt->state.shared;

	if (!shared)
		return;
	if (record->event == PF_EVENT_ASSIGN)
		pf_count_assignment(rt);
	else if (record->event == PF_EVENT_ERROR &&
		 (record->error == EADDRNOTAVAIL || record->error == EAGAIN || record->error == EADDRINUSE))
		atomic_fetch_add_explicit(&shared->failures, 1, memory_order_relaxed);
}

/* Whether the record may carry a rule or a reason: these go to the
 * ring with their text, the rest in a few instructions. */
static inline bool explained(const struct pf_record *r)
{
	return r->rule || r->event == PF_EVENT_DENY || r->event == PF_EVENT_ERROR ||
	       (r->event == PF_EVENT_AUDIT && r->error);
}

/* A deny's rule and an error's reason, as text (NULL: none). */
static void explain(const struct pf_runtime *rt, const struct pf_record *record, char rule_text[RULE_TEXT],
		    char reason_text[REASON_TEXT], const char **rule, const char **reason)
{
	*rule = deny_rule(rt, record, rule_text, RULE_TEXT);
	*reason = error_reason(rt, record, reason_text, REASON_TEXT);
}

/* Everything past the ring: a notice, the fallback file, syslog.  Apart
 * from pf_audit so that the hot path carries neither its frame nor its
 * text.  collect_failed: the ring was tried and refused the record. */
static PF_COLD __attribute__((noinline)) void audit_written(const struct pf_runtime *rt,
							     const struct pf_record *record, bool logging,
							     bool collect_failed)
{
	char text[1536], rule_text[RULE_TEXT], reason_text[REASON_TEXT];
	struct iovec iov[PF_RECORD_IOV];
	int saved = errno;

	/* The rule and the reason come from the policy this process runs
	 * with, which need not be the collector's: the ring carries their
	 * text.  Looked up only for the records that may have one. */
	const char *rule = NULL, *reason = NULL;
	if (rt->notify || explained(record))
		explain(rt, record, rule_text, reason_text, &rule, &reason);
	if (rt->notify)
		notice(rt, record, rule, reason);
	if (!logging)
		goto out;
	bool fallback = collect_failed;
	if (!collect_failed && pf_collecting()) {
		if (pf_collect(rt, record, rule ? PF_RING_TEXT_RULE : PF_RING_TEXT_REASON, rule ? rule : reason))
			goto out;
		fallback = true;
	}
	if (fallback) {
		open_fallback();
		if (pf_log_fd() < 0 && !pf_log_to_syslog) {
			pf_collect_fell_back(false);
			goto out;
		}
	}
	int count = format_record(rt, record, rule, reason, text, sizeof(text), iov);
	if (count == 0)
		goto out;
	pf_log_write(iov, count);
	if (pf_log_to_syslog)
		send_syslog(iov, count, record->event);
	if (fallback)
		pf_collect_fell_back(true);
out:
	errno = saved;
}

bool pf_log_writable(void)
{
	open_fallback();
	return pf_log_fd() >= 0 || pf_log_to_syslog;
}

/* No malloc and no stdio: a record may be written from a signal handler. */
PF_HOT void pf_audit(const struct pf_runtime *rt, const struct pf_record *record)
{
	count(rt, record);
	bool logging = pf_logging();
	if (!wanted(rt, record->event, logging))
		return;
	/* The common case in a few instructions: no notice, the ring takes
	 * the record. */
	if (!rt->notify && !explained(record) && pf_collecting()) {
		int saved = errno;
		bool taken = pf_collect(rt, record, 0, NULL);
		errno = saved;
		if (!taken)
			audit_written(rt, record, logging, true);
		return;
	}
	audit_written(rt, record, logging, false);
}

bool pf_audit_entry(const struct pf_runtime *rt, struct pf_ring_header *ring, const struct pf_ring_entry *e)
{
	struct pf_record_fields fields = {0};
	struct sockaddr_storage local, remote;
	struct timespec when, now;
	char text[1536], why[PF_RING_TEXT_MAX + 1];
	struct iovec iov[PF_RECORD_IOV];
	int saved = errno;
	bool written = false;

	clock_gettime(CLOCK_REALTIME, &now);
	open_fallback();
	if (pf_log_fd() >= 0 && pf_ring_decode(e, &now, &fields, &when, &local, &remote)) {
		fields.pid = (long)pf_cached_pid();
		fields.algorithm = rt->app ? pf_algorithm_name(rt->app->algorithm) : "";
		pf_ring_explain(ring, e, &fields, why, sizeof(why));
		int count = pf_record_pieces(&fields, rt->app_json, rt->exe_json, text, sizeof(text), iov);
		if (count > 0) {
			pf_log_write(iov, count);
			written = true;
		}
	}
	errno = saved;
	return written;
}

PF_HOT void pf_audit_local(const struct pf_runtime *rt, const struct pf_sock *sock,
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

	if (!pf_wanted(rt, event)) {
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
