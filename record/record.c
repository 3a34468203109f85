/* Why one file, past the ~450-line guideline: it is one record layout
 * with one appending writer (struct pf_out).  pf_record_pieces (the
 * shim: iovec pieces, async-signal-safe) and pf_record_format (the BPF
 * backend: one buffer) must write the same line, field for field in the
 * contract's order; keeping both beside the one field writer is what
 * keeps them alike.  Splitting the escaping from the layout would only
 * export the builder's internals. */
/* The audit record, built by appending: snprintf and inet_ntop made up
 * two thirds of the shim's cost per connection (callgrind), for a fixed
 * shape that needs none of their generality.  Appending is also
 * async-signal-safe, which stdio is not. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "record/record.h"

/* Inline, so that a literal's copy is a few moves, not a call: the
 * record is some forty appends. */
static inline __attribute__((always_inline)) void put(struct pf_out *o, const char *s, size_t n)
{
	size_t room = (size_t)(o->end - o->p);
	if (__builtin_expect(n <= room, 1)) {
		memcpy(o->p, s, n);	/* n is mostly a constant here: moves */
		o->p += n;
		return;
	}
	memcpy(o->p, s, room);
	o->p += room;
	o->full = true;
}

static inline __attribute__((always_inline)) void put_uint(struct pf_out *o, unsigned long value,
							   int width)
{
	char digits[24];
	int i = sizeof(digits);
	do {
		digits[--i] = (char)('0' + value % 10);
		value /= 10;
	} while (value || (int)sizeof(digits) - i < width);
	put(o, digits + i, sizeof(digits) - (size_t)i);
}

/* Exactly width digits (the value has no more). */
static inline __attribute__((always_inline)) void put_fixed(struct pf_out *o, unsigned long value,
							    int width)
{
	char digits[8];
	for (int i = width - 1; i >= 0; i--) {
		digits[i] = (char)('0' + value % 10);
		value /= 10;
	}
	put(o, digits, (size_t)width);
}

void pf_put(struct pf_out *o, const char *s, size_t n)
{
	put(o, s, n);
}

void pf_put_str(struct pf_out *o, const char *s)
{
	put(o, s, strlen(s));
}

void pf_put_uint(struct pf_out *o, unsigned long value, int width)
{
	put_uint(o, value, width);
}

#define PUT_LITERAL(o, s) put((o), (s), sizeof(s) - 1)

static const char hex_digits[] = "0123456789abcdef";

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

static inline bool plain(unsigned char c)
{
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

void pf_put_json(struct pf_out *o, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		/* A run of printable ASCII goes in one copy. */
		const unsigned char *run = p;
		while (plain(*run))
			run++;
		if (run > p) {
			size_t n = (size_t)(run - p), room = (size_t)(o->end - o->p);
			if (n > room) {
				memcpy(o->p, p, room);
				o->p += room;
				o->full = true;
				return;
			}
			memcpy(o->p, p, n);
			o->p += n;
			p = run;
			continue;
		}
		size_t seq = *p >= 0x80 ? utf8_sequence(p) : 0;
		bool quoted = *p == '"' || *p == '\\';
		bool coded = !seq && !quoted;
		size_t piece = seq ? seq : quoted ? 2 : 6;

		if (piece > (size_t)(o->end - o->p)) {
			o->full = true;
			return;
		}
		if (seq) {
			memcpy(o->p, p, seq);
			p += seq;
		} else if (quoted) {
			o->p[0] = '\\';
			o->p[1] = (char)*p++;
		} else if (coded) {
			memcpy(o->p, "\\u00", 4);
			o->p[4] = hex_digits[*p >> 4];
			o->p[5] = hex_digits[*p & 15];
			p++;
		}
		o->p += piece;
	}
}

size_t pf_json_escape(const char *in, char *out, size_t out_len)
{
	if (!out_len)
		return 0;
	struct pf_out o = {.p = out, .end = out + out_len - 1};
	pf_put_json(&o, in);
	*o.p = '\0';
	return (size_t)(o.p - out);
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

/* A string of any length, in place: it becomes a piece of its own. */
static void put_external(struct pf_out *o, const char *s)
{
	if (o->p > o->segment)
		o->iov[o->iovcnt++] = (struct iovec){.iov_base = o->segment, .iov_len = (size_t)(o->p - o->segment)};
	o->segment = o->p;
	if (s[0])
		o->iov[o->iovcnt++] = (struct iovec){.iov_base = (void *)s, .iov_len = strlen(s)};
}

static void put_ipv4(struct pf_out *o, const uint8_t a[4])
{
	char text[16];
	size_t n = 0;

	for (int i = 0; i < 4; i++) {
		unsigned v = a[i];
		if (v >= 100)
			text[n++] = (char)('0' + v / 100);
		if (v >= 10)
			text[n++] = (char)('0' + v / 10 % 10);
		text[n++] = (char)('0' + v % 10);
		text[n++] = '.';
	}
	put(o, text, n - 1);
}

static void put_hex16(struct pf_out *o, unsigned value)
{
	char digits[4];
	int n = 0;
	for (int shift = 12; shift >= 0; shift -= 4)
		if (value >> shift || n || shift == 0)
			digits[n++] = hex_digits[(value >> shift) & 15];
	pf_put(o, digits, (size_t)n);
}

/* RFC 5952 text, as glibc's inet_ntop writes it (which uses sprintf):
 * the longest run of two or more zero groups (the first of equals) is
 * "::", and an IPv4-mapped or -compatible address ends in dotted
 * decimal. */
static void put_ipv6(struct pf_out *o, const uint8_t a[16])
{
	unsigned words[8];
	int best = -1, best_len = 0;

	for (int i = 0; i < 8; i++)
		words[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
	for (int i = 0; i < 8;) {
		int run = 0;
		while (i + run < 8 && words[i + run] == 0)
			run++;
		if (run > best_len && run >= 2)
			best = i, best_len = run;
		i += run ? run : 1;
	}
	for (int i = 0; i < 8; i++) {
		if (i == best) {
			pf_put_str(o, i == 0 ? "::" : ":");
			i += best_len - 1;
			continue;
		}
		if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))) {
			put_ipv4(o, a + 12);
			return;
		}
		put_hex16(o, words[i]);
		if (i < 7)
			PUT_LITERAL(o, ":");
	}
}

static void put_address(struct pf_out *o, const struct sockaddr *addr, int family)
{
	if (addr && addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		put_ipv4(o, (const uint8_t *)&sin->sin_addr);
		PUT_LITERAL(o, ":");
		put_uint(o, ntohs(sin->sin_port), 1);
	} else if (addr && addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		PUT_LITERAL(o, "[");
		put_ipv6(o, sin6->sin6_addr.s6_addr);
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
static void put_time(struct pf_out *o, const struct timespec *when)
{
	struct timespec now;
	if (!when) {
		clock_gettime(CLOCK_REALTIME, &now);
		when = &now;
	}
	long days = (long)(when->tv_sec / 86400), secs = (long)(when->tv_sec % 86400);
	if (secs < 0)
		secs += 86400, days--;
	long z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned long doe = (unsigned long)(z - era * 146097);
	unsigned long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned long mp = (5 * doy + 2) / 153, day = doy - (153 * mp + 2) / 5 + 1;
	unsigned long month = mp < 10 ? mp + 3 : mp - 9;
	long year = (long)yoe + era * 400 + (month <= 2);

	if (year > 9999) {
		put_uint(o, (unsigned long)year, 4);
	} else {
		put_fixed(o, (unsigned long)year, 4);
	}
	PUT_LITERAL(o, "-");
	put_fixed(o, month, 2);
	PUT_LITERAL(o, "-");
	put_fixed(o, day, 2);
	PUT_LITERAL(o, "T");
	put_fixed(o, (unsigned long)secs / 3600, 2);
	PUT_LITERAL(o, ":");
	put_fixed(o, (unsigned long)secs / 60 % 60, 2);
	PUT_LITERAL(o, ":");
	put_fixed(o, (unsigned long)secs % 60, 2);
	PUT_LITERAL(o, ".");
	put_fixed(o, (unsigned long)when->tv_nsec / 1000 % 1000000, 6);
	PUT_LITERAL(o, "Z");
}

/* A short name of ours (no escaping needed). */
static inline void put_name(struct pf_out *o, const char *name)
{
	put(o, name, strlen(name));
}

static const char *const event_names[] = {"assign", "deny", "error", "audit", "bind"};

static const char *event_name(enum pf_event event)
{
	return (unsigned)event < sizeof(event_names) / sizeof(event_names[0]) ? event_names[event] : "error";
}

int pf_event_of_name(const char *name)
{
	for (size_t i = 0; i < sizeof(event_names) / sizeof(event_names[0]); i++)
		if (strcmp(name, event_names[i]) == 0)
			return (int)i;
	return -1;
}

/* A string field's content: escaped here from raw, or given escaped,
 * copied in or (with pieces) a piece of its own. */
static void put_text(struct pf_out *o, const char *raw, const char *escaped, bool pieces)
{
	if (pieces)
		put_external(o, escaped ? escaped : "");
	else if (escaped)
		put(o, escaped, strlen(escaped));
	else
		pf_put_json(o, raw ? raw : "");
}

static void put_optional(struct pf_out *o, const char *key, const char *value)
{
	if (!value)
		return;
	PUT_LITERAL(o, ",\"");
	put_name(o, key);
	PUT_LITERAL(o, "\":\"");
	pf_put_json(o, value);
	PUT_LITERAL(o, "\"");
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);
	return len > n && memcmp(s + len - n, suffix, n) == 0;
}

/* As systemd reads a cgroup path (cg_path_get_unit): the slices are
 * skipped, and the first component after them is the unit when its name
 * has a unit's suffix; a path of slices only names its last slice. */
size_t pf_cgroup_unit(const char *cgroup, char *out, size_t out_len)
{
	static const char *const suffixes[] = {".service", ".scope", ".socket", ".mount", ".swap", NULL};
	const char *p = cgroup, *last_slice = NULL;
	size_t last_slice_len = 0;

	if (!cgroup || out_len == 0)
		return 0;
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, "/");
		if (ends_with(p, len, ".slice")) {
			last_slice = p;
			last_slice_len = len;
			p += len;
			continue;
		}
		for (int i = 0; suffixes[i]; i++)
			if (ends_with(p, len, suffixes[i])) {
				if (len >= out_len)
					return 0;
				memcpy(out, p, len);
				out[len] = '\0';
				return len;
			}
		return 0;
	}
	if (!last_slice || last_slice_len >= out_len)
		return 0;
	memcpy(out, last_slice, last_slice_len);
	out[last_slice_len] = '\0';
	return last_slice_len;
}

/* Every field, in SPEC's order; with pieces, app and exe come as
 * pre-escaped pieces. */
static void put_record(struct pf_out *o, const struct pf_record_fields *f, bool pieces,
		       const char *app_json, const char *exe_json)
{
	PUT_LITERAL(o, "{\"ts\":\"");
	put_time(o, f->when);
	PUT_LITERAL(o, "\",\"event\":\"");
	put_name(o, event_name(f->event));
	PUT_LITERAL(o, "\",\"app\":\"");
	put_text(o, f->app, app_json, pieces);
	PUT_LITERAL(o, "\",\"pid\":");
	if (f->pid < 0)
		PUT_LITERAL(o, "-");
	put_uint(o, f->pid < 0 ? 0UL - (unsigned long)f->pid : (unsigned long)f->pid, 1);
	PUT_LITERAL(o, ",\"exe\":\"");
	put_text(o, f->exe, exe_json, pieces);
	PUT_LITERAL(o, "\",\"proto\":\"");
	put(o, f->udp ? "udp" : "tcp", 3);
	PUT_LITERAL(o, "\",\"family\":\"");
	put(o, f->family == AF_INET6 ? "ipv6" : "ipv4", 4);
	PUT_LITERAL(o, "\",\"local\":\"");
	put_address(o, f->local, f->family);
	PUT_LITERAL(o, "\",\"remote\":\"");
	put_address(o, f->remote, f->family);
	PUT_LITERAL(o, "\",\"algorithm\":\"");
	pf_put_json(o, f->algorithm ? f->algorithm : "");
	PUT_LITERAL(o, "\",\"attempts\":");
	put_uint(o, f->attempts, 1);
	PUT_LITERAL(o, ",\"result\":\"");
	put_name(o, pf_errno_name(f->error));
	PUT_LITERAL(o, "\"");
	put_optional(o, "rule", f->rule);
	put_optional(o, "reason", f->reason);
	if (f->lost) {
		PUT_LITERAL(o, ",\"lost\":");
		put_uint(o, f->lost, 1);
	}
	put_optional(o, "comm", f->comm);
	put_optional(o, "cgroup", f->cgroup);
	char unit[256];
	if (pf_cgroup_unit(f->cgroup, unit, sizeof(unit)))
		put_optional(o, "unit", unit);
	PUT_LITERAL(o, "}\n");
}

size_t pf_record_format(const struct pf_record_fields *fields, char *buf, size_t cap)
{
	struct pf_out o = {.p = buf, .end = buf + cap};

	put_record(&o, fields, false, NULL, NULL);
	return o.full ? 0 : (size_t)(o.p - buf);
}

/* One piece when the whole line fits in text: a write of one buffer
 * costs the kernel less than one of five (about 0.2 us here). */
int pf_record_pieces(const struct pf_record_fields *fields, const char *app_json,
		     const char *exe_json, char *text, size_t len, struct iovec *iov)
{
	struct pf_out whole = {.p = text, .end = text + len};

	put_record(&whole, fields, false, app_json ? app_json : "", exe_json ? exe_json : "");
	if (!whole.full) {
		iov[0] = (struct iovec){.iov_base = text, .iov_len = (size_t)(whole.p - text)};
		return 1;
	}
	struct pf_out o = {.p = text, .end = text + len, .segment = text, .iov = iov};
	put_record(&o, fields, true, app_json, exe_json);
	put_external(&o, "");
	return o.full ? 0 : o.iovcnt;
}
