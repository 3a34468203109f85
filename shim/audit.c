/* Audit records: one JSON object per line, appended with a single
 * write(2) so that concurrent processes never interleave.  No JSON
 * library here: the shim lives in other programs and formats a fixed
 * record, escaping every string itself. */
#include <arpa/inet.h>
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

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_sequence(const unsigned char *p)
{
	unsigned char c = p[0];
	size_t len;
	unsigned char min2 = 0x80, max2 = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min2 = c == 0xe0 ? 0xa0 : 0x80, max2 = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min2 = c == 0xf0 ? 0x90 : 0x80, max2 = c == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if (p[1] < min2 || p[1] > max2)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* Valid UTF-8 is kept as it is; quotes, backslashes and control bytes are
 * escaped; any other byte becomes \u00XX (U+0080..U+00FF), so the line
 * always parses and a UTF-8 path reads back unchanged.  Each piece goes
 * in whole or not at all, with room left for the terminating NUL: an
 * output of 6 * strlen(in) + 1 bytes always holds the whole text. */
size_t pf_json_escape(const char *in, char *out, size_t out_len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p;) {
		size_t seq = *p >= 0x80 ? utf8_sequence(p) : 0;
		bool quoted = *p == '"' || *p == '\\';
		bool coded = !seq && !quoted && (*p < 0x20 || *p >= 0x7f);
		size_t piece = seq ? seq : quoted ? 2 : coded ? 6 : 1;

		if (n + piece >= out_len)
			break;
		if (seq) {
			memcpy(out + n, p, seq);
			p += seq;
		} else if (quoted) {
			out[n] = '\\';
			out[n + 1] = (char)*p++;
		} else if (coded) {
			memcpy(out + n, "\\u00", 4);
			out[n + 4] = hex[*p >> 4];
			out[n + 5] = hex[*p & 15];
			p++;
		} else {
			out[n] = (char)*p++;
		}
		n += piece;
	}
	if (out_len)
		out[n] = '\0';
	return n;
}

#define ERRNO_NAME(e) case e: return #e
const char *pf_errno_name(int error)
{
	switch (error) {
	case 0: return "ok";
	/* A non-blocking connect under way is a connect that worked so far. */
	case EINPROGRESS: return "ok";
	ERRNO_NAME(EPERM); ERRNO_NAME(EACCES); ERRNO_NAME(EADDRNOTAVAIL);
	ERRNO_NAME(EADDRINUSE); ERRNO_NAME(EAGAIN); ERRNO_NAME(ECONNREFUSED);
	ERRNO_NAME(ENETUNREACH); ERRNO_NAME(EHOSTUNREACH);
	ERRNO_NAME(ETIMEDOUT); ERRNO_NAME(EINTR); ERRNO_NAME(EINVAL); ERRNO_NAME(EBADF);
	ERRNO_NAME(ENOTSOCK); ERRNO_NAME(EISCONN); ERRNO_NAME(EALREADY); ERRNO_NAME(EMSGSIZE);
	ERRNO_NAME(ENOBUFS); ERRNO_NAME(ENOMEM); ERRNO_NAME(EAFNOSUPPORT); ERRNO_NAME(EFAULT);
	ERRNO_NAME(ECONNRESET); ERRNO_NAME(EPIPE); ERRNO_NAME(ENOTCONN); ERRNO_NAME(EDESTADDRREQ);
	ERRNO_NAME(EOPNOTSUPP); ERRNO_NAME(ENETDOWN); ERRNO_NAME(EMFILE); ERRNO_NAME(ENFILE);
	default: return "EUNKNOWN";
	}
}

/* The record is built by appending: snprintf and inet_ntop made up two
 * thirds of the shim's cost per connection (callgrind), for a fixed
 * shape that needs none of their generality.  Appending is also
 * async-signal-safe, which stdio is not. */
void pf_put(struct pf_out *o, const char *s, size_t n)
{
	size_t room = (size_t)(o->end - o->p);
	if (n > room)
		n = room;
	memcpy(o->p, s, n);
	o->p += n;
}

void pf_put_str(struct pf_out *o, const char *s)
{
	pf_put(o, s, strlen(s));
}

void pf_put_uint(struct pf_out *o, unsigned long value, int width)
{
	char digits[24];
	int i = sizeof(digits);
	do {
		digits[--i] = (char)('0' + value % 10);
		value /= 10;
	} while (value || (int)sizeof(digits) - i < width);
	pf_put(o, digits + i, sizeof(digits) - (size_t)i);
}

/* A string of any length, in place: it becomes an iovec of its own, so
 * that a record needs no buffer sized for the longest exe path. */
static void put_external(struct pf_out *o, const char *s)
{
	if (o->p > o->segment)
		o->iov[o->iovcnt++] = (struct iovec){.iov_base = o->segment, .iov_len = (size_t)(o->p - o->segment)};
	o->segment = o->p;
	if (s[0])
		o->iov[o->iovcnt++] = (struct iovec){.iov_base = (void *)s, .iov_len = strlen(s)};
}

#define put(o, s, n) pf_put((o), (s), (n))
#define put_str pf_put_str
#define put_uint pf_put_uint
#define PUT_LITERAL(o, s) put((o), (s), sizeof(s) - 1)

static void put_address(struct pf_out *o, const struct sockaddr *addr, int family)
{
	if (addr && addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		const uint8_t *a = (const uint8_t *)&sin->sin_addr;
		for (int i = 0; i < 4; i++) {
			if (i)
				PUT_LITERAL(o, ".");
			put_uint(o, a[i], 1);
		}
		PUT_LITERAL(o, ":");
		put_uint(o, ntohs(sin->sin_port), 1);
	} else if (addr && addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		char text[INET6_ADDRSTRLEN] = "";
		inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
		PUT_LITERAL(o, "[");
		put_str(o, text);
		PUT_LITERAL(o, "]:");
		put_uint(o, ntohs(sin6->sin6_port), 1);
	} else if (family == AF_INET6) {
		PUT_LITERAL(o, "[::]:0");
	} else {
		PUT_LITERAL(o, "0.0.0.0:0");
	}
}

/* UTC civil date from days since 1970-01-01 (Howard Hinnant's algorithm):
 * no gmtime_r, which takes the timezone lock. */
static void put_time(struct pf_out *o)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long days = (long)(now.tv_sec / 86400), secs = (long)(now.tv_sec % 86400);
	long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned long doe = (unsigned long)(z - era * 146097);
	unsigned long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned long mp = (5 * doy + 2) / 153, day = doy - (153 * mp + 2) / 5 + 1;
	unsigned long month = mp < 10 ? mp + 3 : mp - 9;
	long year = (long)yoe + era * 400 + (month <= 2);

	put_uint(o, (unsigned long)year, 4);
	PUT_LITERAL(o, "-");
	put_uint(o, month, 2);
	PUT_LITERAL(o, "-");
	put_uint(o, day, 2);
	PUT_LITERAL(o, "T");
	put_uint(o, (unsigned long)secs / 3600, 2);
	PUT_LITERAL(o, ":");
	put_uint(o, (unsigned long)secs / 60 % 60, 2);
	PUT_LITERAL(o, ":");
	put_uint(o, (unsigned long)secs % 60, 2);
	PUT_LITERAL(o, ".");
	put_uint(o, (unsigned long)now.tv_nsec / 1000, 6);
	PUT_LITERAL(o, "Z");
}

static const char *const event_names[] = {"assign", "deny", "error", "audit"};

/* The record as iovecs (at most PF_RECORD_IOV) over text, which must
 * outlive them. */
static int format_record(const struct pf_runtime *rt, const struct pf_record *r,
			 char *text, size_t len, struct iovec *iov)
{
	struct pf_out o = {.p = text, .end = text + len, .segment = text, .iov = iov};
	int family = r->sock ? r->sock->family : AF_INET;

	PUT_LITERAL(&o, "{\"ts\":\"");
	put_time(&o);
	PUT_LITERAL(&o, "\",\"event\":\"");
	put_str(&o, event_names[r->event]);
	PUT_LITERAL(&o, "\",\"app\":\"");
	put_external(&o, rt->app_json ? rt->app_json : "");
	PUT_LITERAL(&o, "\",\"pid\":");
	put_uint(&o, (unsigned long)pf_cached_pid(), 1);
	PUT_LITERAL(&o, ",\"exe\":\"");
	put_external(&o, rt->exe_json ? rt->exe_json : "");
	PUT_LITERAL(&o, "\",\"proto\":\"");
	put_str(&o, r->sock && r->sock->udp ? "udp" : "tcp");
	PUT_LITERAL(&o, "\",\"family\":\"");
	put_str(&o, family == AF_INET6 ? "ipv6" : "ipv4");
	PUT_LITERAL(&o, "\",\"local\":\"");
	put_address(&o, r->local, family);
	PUT_LITERAL(&o, "\",\"remote\":\"");
	put_address(&o, r->remote, family);
	PUT_LITERAL(&o, "\",\"algorithm\":\"");
	put_str(&o, rt->app ? pf_algorithm_name(rt->app->algorithm) : "");
	PUT_LITERAL(&o, "\",\"attempts\":");
	put_uint(&o, r->attempts, 1);
	PUT_LITERAL(&o, ",\"result\":\"");
	put_str(&o, pf_errno_name(r->error));
	PUT_LITERAL(&o, "\"}\n");
	put_external(&o, "");
	return o.iovcnt;
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
	PUT_LITERAL(&o, "<");
	put_uint(&o, (1 << 3) | (event == PF_EVENT_ASSIGN || event == PF_EVENT_AUDIT ? 6 : 4), 1);
	PUT_LITERAL(&o, ">portfence[");
	put_uint(&o, (unsigned long)getpid(), 1);
	PUT_LITERAL(&o, "]: ");
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

/* No malloc and no stdio: a record may be written from a signal handler. */
void pf_audit(const struct pf_runtime *rt, const struct pf_record *record)
{
	char text[768];
	struct iovec iov[PF_RECORD_IOV];
	int saved = errno;

	if (!pf_logging())
		return;
	int count = format_record(rt, record, text, sizeof(text), iov);
	pf_log_write(iov, count);
	if (log_to_syslog)
		send_syslog(iov, count, record->event);
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

	if (!pf_logging())
		return;
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
