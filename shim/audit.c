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

/* Far above the fds a program usually holds, so that our fd rarely
 * stands where the program expects to find a free number. */
#define LOG_FD_FLOOR 900

static _Atomic int log_fd = -1;
static bool log_to_syslog;
static _Atomic int log_write_failed;

int pf_log_fd(void)
{
	return atomic_load_explicit(&log_fd, memory_order_relaxed);
}

void pf_log_enable_syslog(bool enabled)
{
	log_to_syslog = enabled;
}

bool pf_logging(void)
{
	return pf_log_fd() >= 0 || log_to_syslog;
}

void pf_stderr(const char *fmt, ...)
{
	char line[1200];
	va_list args;
	int saved = errno;

	va_start(args, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, args);
	va_end(args);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
	(void)ignored;
	errno = saved;
}

static int move_high(int fd)
{
	int high = fcntl(fd, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);

	if (high < 0)
		return fd;
	real_close(fd);
	return high;
}

/* Created 0640 whatever the umask (SPEC), never through a symlink, and
 * only ever appended to.  Opened non-blocking so that a FIFO without a
 * reader cannot hang the host program; only files and character devices
 * (/dev/null, a terminal) are kept. */
static int open_log_file(const char *path)
{
	const int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;
	struct stat info;
	int fd = open(path, flags | O_CREAT | O_EXCL, 0640);

	if (fd >= 0)
		fchmod(fd, 0640);
	else if (errno == EEXIST)
		fd = open(path, flags);
	if (fd < 0)
		return -1;
	if (fstat(fd, &info) < 0 || !(S_ISREG(info.st_mode) || S_ISCHR(info.st_mode))) {
		real_close(fd);
		errno = EINVAL;
		return -1;
	}
	fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);
	return fd;
}

int pf_log_open(const char *path, char *why, size_t why_len)
{
	int fd;

	if (strcmp(path, "-") == 0) {
		fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);
		if (fd < 0)
			fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
	} else {
		fd = open_log_file(path);
		if (fd >= 0)
			fd = move_high(fd);
	}
	if (fd < 0) {
		snprintf(why, why_len, "cannot open audit log %s: %s", path, strerror(errno));
		return -1;
	}
	atomic_store(&log_fd, fd);
	return 0;
}

/* The program wants fd as a number (dup2 onto it): our log moves. */
void pf_log_move_away_from(int fd)
{
	int current = pf_log_fd();

	if (current < 0 || current != fd)
		return;
	int moved = fcntl(current, F_DUPFD_CLOEXEC, current + 1);
	atomic_store(&log_fd, moved);
	real_close(current);
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
 * always parses and a UTF-8 path reads back unchanged. */
size_t pf_json_escape(const char *in, char *out, size_t out_len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p && n + 7 < out_len;) {
		size_t seq = *p >= 0x80 ? utf8_sequence(p) : 0;
		if (seq) {
			memcpy(out + n, p, seq);
			n += seq;
			p += seq;
		} else if (*p == '"' || *p == '\\') {
			out[n++] = '\\';
			out[n++] = (char)*p++;
		} else if (*p < 0x20 || *p >= 0x7f) {
			memcpy(out + n, "\\u00", 4);
			out[n + 4] = hex[*p >> 4];
			out[n + 5] = hex[*p & 15];
			n += 6;
			p++;
		} else {
			out[n++] = (char)*p++;
		}
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
 * shape that needs none of their generality. */
struct out {
	char *p, *end;
};

static void put(struct out *o, const char *s, size_t n)
{
	size_t room = (size_t)(o->end - o->p);
	if (n > room)
		n = room;
	memcpy(o->p, s, n);
	o->p += n;
}

#define PUT_LITERAL(o, s) put((o), (s), sizeof(s) - 1)

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_uint(struct out *o, unsigned long value, int width)
{
	char digits[24];
	int i = sizeof(digits);
	do {
		digits[--i] = (char)('0' + value % 10);
		value /= 10;
	} while (value || (int)sizeof(digits) - i < width);
	put(o, digits + i, sizeof(digits) - (size_t)i);
}

static void put_address(struct out *o, const struct sockaddr *addr, int family)
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
static void put_time(struct out *o)
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

static int format_record(const struct pf_runtime *rt, const struct pf_record *r,
			 char *buf, size_t len)
{
	struct out o = {buf, buf + len};
	int family = r->sock ? r->sock->family : AF_INET;

	PUT_LITERAL(&o, "{\"ts\":\"");
	put_time(&o);
	PUT_LITERAL(&o, "\",\"event\":\"");
	put_str(&o, event_names[r->event]);
	PUT_LITERAL(&o, "\",\"app\":\"");
	put_str(&o, rt->app_json ? rt->app_json : "");
	PUT_LITERAL(&o, "\",\"pid\":");
	put_uint(&o, (unsigned long)pf_cached_pid(), 1);
	PUT_LITERAL(&o, ",\"exe\":\"");
	put_str(&o, rt->exe_json ? rt->exe_json : "");
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
	return (int)(o.p - buf);
}

/* syslog(3) would change the program's own openlog() ident; a datagram
 * of our own to /dev/log leaves it alone. */
static void send_syslog(const char *line, size_t len, enum pf_event event)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char message[8192];
	int priority = (1 << 3) | (event == PF_EVENT_ASSIGN || event == PF_EVENT_AUDIT ? 6 : 4);
	int fd = real_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return;
	strcpy(addr.sun_path, "/dev/log");
	int n = snprintf(message, sizeof(message), "<%d>portfence[%ld]: %.*s", priority,
			 (long)getpid(), (int)(len - 1), line);
	if (n > 0 && real_connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		send(fd, message, (size_t)n < sizeof(message) ? (size_t)n : sizeof(message) - 1, MSG_NOSIGNAL);
	real_close(fd);
}

void pf_audit(const struct pf_runtime *rt, const struct pf_record *record)
{
	char stack_buf[2048];
	char *buf = stack_buf;
	size_t room = sizeof(stack_buf);
	int saved = errno, fd = pf_log_fd();

	if (fd < 0 && !log_to_syslog)
		return;
	size_t exe_len = rt->exe_json ? strlen(rt->exe_json) : 0;
	size_t app_len = rt->app_json ? strlen(rt->app_json) : 0;
	if (exe_len + app_len + 512 > room) {
		room = exe_len + app_len + 512;
		buf = malloc(room);
		if (!buf) {
			errno = saved;
			return;
		}
	}
	int n = format_record(rt, record, buf, room);
	if (n > 0 && fd >= 0 && write(fd, buf, (size_t)n) != n &&
	    atomic_exchange(&log_write_failed, 1) == 0)
		pf_stderr("portfence: cannot write the audit log: %s; records are being lost",
			  strerror(errno));
	if (n > 0 && log_to_syslog)
		send_syslog(buf, (size_t)n, record->event);
	if (buf != stack_buf)
		free(buf);
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
