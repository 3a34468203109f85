/* The audit record: one JSON object per line, the same field for field
 * whoever writes it (the shim, `portfence daemon` for the BPF backend).
 * No JSON library, no malloc, no stdio: every function here is
 * async-signal-safe, since the shim may write a record from a signal
 * handler. */
#ifndef PORTFENCE_RECORD_H
#define PORTFENCE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>

#include "core/decide.h"

struct pf_record_fields {
	const struct timespec *when;	/* NULL: now (CLOCK_REALTIME) */
	enum pf_event event;
	const char *app;		/* raw text, escaped by the formatter */
	long pid;
	const char *exe;		/* raw text */
	bool udp;
	int family;			/* AF_INET / AF_INET6 */
	const struct sockaddr *local, *remote;	/* NULL: 0.0.0.0:0 / [::]:0 */
	const char *algorithm;
	unsigned attempts;
	int error;			/* 0 or errno; result is pf_errno_name(error) */
	const char *comm, *cgroup;	/* NULL: field omitted (shim records) */
	const char *rule;		/* a deny's "rule" (text FILE:LINE); NULL: omitted */
	const char *reason;		/* an error's "reason"; NULL: omitted */
	unsigned long lost;		/* records lost before they could be written; 0: omitted */
};

/* The whole line with its '\n' into buf; returns its length, or 0 when
 * it does not fit.  buf holds no NUL after the line. */
size_t pf_record_format(const struct pf_record_fields *fields, char *buf, size_t cap);

/* A record's syslog facility and level, from the shim and the collector
 * alike: what a program did (assign, audit, bind) is info, what was
 * refused or failed (deny, error) a warning; user messages.  The
 * journal's PRIORITY is the level. */
static inline int pf_record_syslog_level(enum pf_event event)
{
	return event == PF_EVENT_ASSIGN || event == PF_EVENT_AUDIT || event == PF_EVENT_BIND ? LOG_INFO : LOG_WARNING;
}
#define PF_RECORD_SYSLOG_FACILITY LOG_USER

/* The event a record's "event" names (as pf_record_format writes it);
 * -1 for a name it does not write. */
int pf_event_of_name(const char *name);

/* The most pieces pf_record_pieces makes. */
#define PF_RECORD_PIECES 5

/* The same line for a writer that keeps app and exe escaped once for
 * all (app_json and exe_json, pf_json_escape'd; NULL: ""; fields->app and
 * fields->exe are not read), as iovec pieces over text (len bytes, which
 * must outlive them): one piece when the line fits in text, else app_json
 * and exe_json stand in pieces of their own, so that no buffer need be
 * sized for the longest exe path.  Returns the number of pieces, or 0
 * when even that does not fit. */
int pf_record_pieces(const struct pf_record_fields *fields, const char *app_json,
		     const char *exe_json, char *text, size_t len, struct iovec *iov);

/* JSON string content: valid UTF-8 is kept as it is; quotes, backslashes
 * and control bytes are escaped; any other byte becomes \u00XX
 * (U+0080..U+00FF), so the line always parses and a UTF-8 path reads back
 * unchanged.  Each piece goes in whole or not at all, with room left for
 * the terminating NUL: an output of 6 * strlen(in) + 1 bytes always holds
 * the whole text.  Returns the length written. */
size_t pf_json_escape(const char *in, char *out, size_t out_len);

/* The systemd unit a cgroup path names ("system.slice/docker-1.scope"
 * names docker-1.scope; "pfctr-1" none), as systemd reads it: into out
 * with its NUL; its length, or 0 when the path names none (or it does
 * not fit).  Async-signal-safe. */
size_t pf_cgroup_unit(const char *cgroup, char *out, size_t out_len);

/* "ok" for 0 and EINPROGRESS, else the errno's name ("EPERM"), or
 * "EUNKNOWN". */
const char *pf_errno_name(int error);

/* Text built by appending, without stdio.  What does not fit is cut, and
 * full says so.  segment/iov/iovcnt only for pf_record_pieces. */
struct pf_out {
	char *p, *end;
	bool full;
	char *segment;
	struct iovec *iov;
	int iovcnt;
};
void pf_put(struct pf_out *o, const char *s, size_t n);
void pf_put_str(struct pf_out *o, const char *s);
/* value in decimal, zero-padded to at least width digits. */
void pf_put_uint(struct pf_out *o, unsigned long value, int width);
/* s escaped as pf_json_escape does, each piece whole or not at all. */
void pf_put_json(struct pf_out *o, const char *s);

#endif
