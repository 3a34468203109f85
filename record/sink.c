/* The collector's sinks: the file, the journal, syslog.  See sink.h. */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "record/sink.h"

/* A record's line fits whatever its fields: an exe path of PATH_MAX
 * bytes that JSON escapes six-fold (\u00XX) takes 24 KiB. */
#define LINE_MAX_BYTES 65536
#define BATCH_BYTES (2 * LINE_MAX_BYTES)

struct pf_record_sink {
	char *path;		/* NULL: stderr or no file */
	int fd;
	dev_t dev;
	ino_t ino;
	time_t checked;
	bool syslog;
	int journal_fd;		/* -1: no journal */
	unsigned long journal_dropped;
	char *backlog;		/* entries journald has not taken yet, from backlog_at */
	size_t backlog_at, backlog_len;
	bool mid_line;		/* the file ends in a partial line (a cut write) */
	bool write_failing;	/* said on stderr, until a write succeeds again */
	char batch[BATCH_BYTES];
	size_t used;
};

/* Whether the file fd is open on (the path, checked to be that file)
 * ends in a partial line: a cut record a full disk left, say. */
static bool ends_mid_line(const char *path, int fd)
{
	struct stat written, read_here;
	char last = '\n';

	if (fstat(fd, &written) < 0 || written.st_size == 0)
		return false;
	int reader = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (reader < 0)
		return false;
	if (fstat(reader, &read_here) == 0 && read_here.st_dev == written.st_dev && read_here.st_ino == written.st_ino &&
	    pread(reader, &last, 1, read_here.st_size - 1) != 1)
		last = '\n';
	close(reader);
	return last != '\n';
}

/* The log is the policy's, written by root: it must not be a file that
 * others could have planted or can write.  Created 0640 whatever the
 * umask. */
static int open_log(struct pf_record_sink *sink)
{
	struct stat info;
	int fd = open(sink->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0640);

	if (fd < 0) {
		fprintf(stderr, "portfence: cannot open log %s: %s\n", sink->path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &info) < 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid() ||
	    (info.st_mode & S_IWOTH)) {
		fprintf(stderr, "portfence: log %s is not a regular file of ours that only we may write; "
				"no records written there\n", sink->path);
		close(fd);
		return -1;
	}
	if (info.st_size == 0)
		fchmod(fd, 0640);
	sink->dev = info.st_dev;
	sink->ino = info.st_ino;
	sink->mid_line = ends_mid_line(sink->path, fd);
	return fd;
}

static int open_journal(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = PF_JOURNAL_SOCKET};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

struct pf_record_sink *pf_record_sink_open(const char *log_path, bool to_syslog)
{
	struct pf_record_sink *sink = calloc(1, sizeof(*sink));

	if (!sink)
		return NULL;
	sink->fd = -1;
	sink->syslog = to_syslog;
	sink->journal_fd = open_journal();
	if (log_path && strcmp(log_path, "-") == 0) {
		sink->fd = STDERR_FILENO;
	} else if (log_path) {
		sink->path = strdup(log_path);
		sink->fd = sink->path ? open_log(sink) : -1;
		sink->checked = time(NULL);
	}
	if (to_syslog)
		openlog("portfence", LOG_PID, PF_RECORD_SYSLOG_FACILITY);
	return sink;
}

static void journal_drain(struct pf_record_sink *sink);

/* A log renamed or removed (logrotate) is followed within a second. */
static void follow_rotation(struct pf_record_sink *sink)
{
	struct stat now;
	time_t second = time(NULL);

	if (second == sink->checked)
		return;
	sink->checked = second;
	/* journald started after us: looked for once a second. */
	if (sink->journal_fd < 0)
		sink->journal_fd = open_journal();
	if (!sink->path)
		return;
	if (sink->fd >= 0 && stat(sink->path, &now) == 0 && now.st_dev == sink->dev && now.st_ino == sink->ino)
		return;
	if (sink->fd >= 0)
		close(sink->fd);
	sink->fd = open_log(sink);
}

/* The records of the batch from byte at on: the ones a cut write lost. */
static unsigned long records_from(const struct pf_record_sink *sink, size_t at)
{
	unsigned long count = 0;
	for (size_t i = at; i < sink->used; i++)
		count += sink->batch[i] == '\n';
	return count;
}

/* Whole records only: a batch ends at a record's end; after a short
 * write (a full disk) the rest of the batch is dropped, said on stderr,
 * and the next write starts with the newline that ends the cut record,
 * in the same write(2), so that no record is glued to a partial one. */
static void write_batch(struct pf_record_sink *sink)
{
	struct iovec pieces[2];
	int count = 0;
	size_t newline = sink->mid_line ? 1 : 0;

	if (newline)
		pieces[count++] = (struct iovec){.iov_base = "\n", .iov_len = 1};
	pieces[count++] = (struct iovec){.iov_base = sink->batch, .iov_len = sink->used};
	ssize_t written = writev(sink->fd, pieces, count);
	const char *why = written < 0 ? strerror(errno) : "a write was cut short (a full disk?)";
	if (written == (ssize_t)(newline + sink->used)) {
		sink->mid_line = false;
		sink->write_failing = false;
		return;
	}
	size_t of_batch = written > (ssize_t)newline ? (size_t)written - newline : 0;
	if (written > (ssize_t)newline)
		sink->mid_line = sink->batch[of_batch - 1] != '\n';
	else if (written == 1)
		sink->mid_line = false;	/* only the newline went */
	unsigned long lost = records_from(sink, of_batch);
	if (!sink->write_failing)
		fprintf(stderr, "portfence: cannot write the log %s: %s; %lu record(s) not written (said once, until a "
				"write succeeds)\n", sink->path ? sink->path : "(stderr)", why, lost);
	sink->write_failing = true;
}

void pf_record_sink_flush(struct pf_record_sink *sink)
{
	if (!sink)
		return;
	follow_rotation(sink);
	if (sink->backlog_len)
		journal_drain(sink);
	if (sink->fd >= 0 && sink->used)
		write_batch(sink);
	sink->used = 0;
}

void pf_record_sink_close(struct pf_record_sink *sink)
{
	if (!sink)
		return;
	pf_record_sink_flush(sink);
	if (sink->fd > STDERR_FILENO)
		close(sink->fd);
	/* What journald has not taken by now: given a second, no more. */
	for (int i = 0; i < 50 && sink->backlog_len && sink->journal_fd >= 0; i++) {
		journal_drain(sink);
		if (sink->backlog_len)
			poll(&(struct pollfd){.fd = sink->journal_fd, .events = POLLOUT}, 1, 20);
	}
	free(sink->backlog);
	if (sink->journal_fd >= 0)
		close(sink->journal_fd);
	if (sink->syslog)
		closelog();
	free(sink->path);
	free(sink);
}

/* ---- the journal ---- */

struct buf {
	char *p, *end;
	bool full;
};

static void add(struct buf *b, const void *s, size_t n)
{
	if ((size_t)(b->end - b->p) < n) {
		b->full = true;
		return;
	}
	memcpy(b->p, s, n);
	b->p += n;
}

static void add_str(struct buf *b, const char *s)
{
	add(b, s, strlen(s));
}

/* KEY=value, or for a value holding a newline the binary form: KEY\n,
 * its length as 64-bit little endian, the bytes, \n. */
static void add_field(struct buf *b, const char *key, const char *value, size_t len)
{
	add_str(b, key);
	if (!memchr(value, '\n', len)) {
		add(b, "=", 1);
		add(b, value, len);
	} else {
		unsigned char size[8];
		for (int i = 0; i < 8; i++)
			size[i] = (unsigned char)((uint64_t)len >> (8 * i));
		add(b, "\n", 1);
		add(b, size, 8);
		add(b, value, len);
	}
	add(b, "\n", 1);
}

static int hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The record's fields, read back from its own line (flat: strings as
 * pf_json_escape writes them, numbers).  Every field the line has
 * becomes a journal field, whatever fields the record grows. */
struct parsed {
	char keys[24][32];
	char *values[24];
	size_t lens[24];
	int count;
	char text[LINE_MAX_BYTES];
};

static const char *value_of(const struct parsed *p, const char *key)
{
	for (int i = 0; i < p->count; i++)
		if (strcmp(p->keys[i], key) == 0)
			return p->values[i];
	return "";
}

/* A key at *s ("name"), upper-cased into key (31 bytes at most, of
 * [a-z0-9_]), and its colon: whether it was one; *s moves past it. */
static bool parse_key(const char **s, const char *end, char key[32])
{
	const char *at = *s;
	size_t k = 0;

	if (at >= end || *at++ != '"')
		return false;
	while (at < end && *at != '"') {
		char c = *at++;
		if (k == 31 || !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
		key[k++] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
	}
	key[k] = '\0';
	if (at + 2 > end || at[0] != '"' || at[1] != ':')
		return false;
	*s = at + 2;
	return true;
}

/* One escaped character after a backslash at *s (\n, \t, \u00XX, or
 * the character itself) in *c: whether it was whole. */
static bool parse_escape(const char **s, const char *end, char *c)
{
	const char *at = *s;

	if (at >= end)
		return false;
	char e = *at++;
	if (e == 'u') {
		if (end - at < 4 || at[0] != '0' || at[1] != '0' || hex(at[2]) < 0 || hex(at[3]) < 0)
			return false;
		*c = (char)(hex(at[2]) << 4 | hex(at[3]));
		at += 4;
	} else {
		*c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
	}
	*s = at;
	return true;
}

/* A value at *s, a string (unescaped) or a bare number, copied to *out
 * (before out_end): whether it fit; *s and *out move past it. */
static bool parse_value(const char **s, const char *end, char **out, const char *out_end)
{
	const char *at = *s;
	bool quoted = at < end && *at == '"';

	at += quoted;
	while (at < end && (quoted ? *at != '"' : *at != ',')) {
		char c = *at++;
		if (quoted && c == '\\' && !parse_escape(&at, end, &c))
			return false;
		if (*out == out_end)
			return false;
		*(*out)++ = c;
	}
	if (quoted && at++ >= end)
		return false;
	*s = at;
	return true;
}

/* A record's line, {"key":value,...}, into p: keys upper-cased, values
 * unescaped into p->text.  Whether it was one (24 fields at most). */
static bool parse_line(const char *line, size_t len, struct parsed *p)
{
	const char *s = line, *end = line + len;
	char *out = p->text, *out_end = p->text + sizeof(p->text) - 1;

	p->count = 0;
	while (end > s && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	if (s >= end || *s++ != '{' || end[-1] != '}')
		return false;
	end--;
	while (s < end) {
		if (p->count == 24 || !parse_key(&s, end, p->keys[p->count]))
			return false;
		p->values[p->count] = out;
		if (!parse_value(&s, end, &out, out_end))
			return false;
		p->lens[p->count] = (size_t)(out - p->values[p->count]);
		if (out == out_end)
			return false;
		*out++ = '\0';
		p->count++;
		if (s < end && *s++ != ',')
			return false;
	}
	return p->count > 0;
}

/* The length of the UTF-8 sequence at s (at most n bytes), or 0 when it
 * is not one (an overlong or surrogate form, a cut one). */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
	size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
		   : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
	if (!len || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) || (s[0] == 0xf0 && s[1] < 0x90) ||
	    (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return len;
}

/* text made printable UTF-8 in place, as journalctl shows a MESSAGE
 * with any other byte as "[blob data]": a control byte (but newline and
 * tab) or a byte of no UTF-8 sequence becomes '?'. */
static void printable(char *text, size_t n)
{
	unsigned char *s = (unsigned char *)text;

	for (size_t i = 0; i < n;) {
		size_t len = utf8_sequence(s + i, n - i);
		if (len == 1 && ((s[i] < 0x20 && s[i] != '\n' && s[i] != '\t') || s[i] == 0x7f))
			s[i] = '?';
		if (!len) {
			s[i] = '?';
			len = 1;
		}
		i += len;
	}
}

size_t pf_journal_entry(const char *line, size_t len, long uid, char *out, size_t cap)
{
	static __thread struct parsed p;
	struct buf b = {.p = out, .end = out + cap};
	char key[48], message[1024], number[32];

	if (!parse_line(line, len, &p))
		return 0;
	for (int i = 0; i < p.count; i++) {
		snprintf(key, sizeof(key), "PORTFENCE_%s", p.keys[i]);
		add_field(&b, key, p.values[i], p.lens[i]);
	}
	const char *event = value_of(&p, "EVENT"), *result = value_of(&p, "RESULT");
	int n = snprintf(message, sizeof(message), "%s: %s %s %s -> %s %s (pid %s %s)", value_of(&p, "APP"),
			 event, value_of(&p, "PROTO"), value_of(&p, "LOCAL"), value_of(&p, "REMOTE"), result,
			 value_of(&p, "PID"), value_of(&p, "EXE")[0] ? value_of(&p, "EXE") : value_of(&p, "COMM"));
	if (n < 0)
		return 0;
	size_t message_len = (size_t)n < sizeof(message) ? (size_t)n : sizeof(message) - 1;
	printable(message, message_len);
	add_field(&b, "MESSAGE", message, message_len);
	n = snprintf(number, sizeof(number), "%d", pf_record_syslog_level((enum pf_event)pf_event_of_name(event)));
	add_field(&b, "PRIORITY", number, (size_t)n);
	add_str(&b, "SYSLOG_IDENTIFIER=portfence\n");
	const char *pid = value_of(&p, "PID");
	if (pid[0] && pid[0] != '-' && strcmp(pid, "0") != 0)
		add_field(&b, "OBJECT_PID", pid, strlen(pid));
	if (uid >= 0) {
		n = snprintf(number, sizeof(number), "%ld", uid);
		add_field(&b, "OBJECT_UID", number, (size_t)n);
	}
	return b.full ? 0 : (size_t)(b.p - out);
}

/* An entry too large for a datagram goes in a sealed memfd, as
 * sd_journal_send does. */
static void journal_send_large(int journal_fd, const char *entry, size_t len)
{
	int fd = memfd_create("portfence-journal", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return;
	if (write(fd, entry, len) == (ssize_t)len &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) {
		char control[CMSG_SPACE(sizeof(int))] = {0};
		struct msghdr msg = {.msg_control = control, .msg_controllen = sizeof(control)};
		struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
		sendmsg(journal_fd, &msg, MSG_NOSIGNAL);
	}
	close(fd);
}

/* One entry to journald, without waiting: 1 sent (or refused for
 * good), 0 journald is behind (try again later). */
static int journal_send_entry(struct pf_record_sink *sink, const char *entry, size_t n)
{
	if (send(sink->journal_fd, entry, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n)
		return 1;
	if (errno == EAGAIN)
		return 0;
	if (errno == EMSGSIZE || errno == ENOBUFS) {
		journal_send_large(sink->journal_fd, entry, n);
	} else if (errno == ECONNREFUSED || errno == ENOTCONN) {
		/* journald restarted: its socket is a new one. */
		close(sink->journal_fd);
		sink->journal_fd = open_journal();
		if (sink->journal_fd < 0)
			return 1;
		if (send(sink->journal_fd, entry, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EAGAIN)
			return 0;
	}
	return 1;
}

/* What journald has not taken yet: the rings are drained into the file
 * at the file's pace, and the journal follows at journald's, from this
 * backlog (entries as a length and the bytes).  Past its size, entries
 * are counted and dropped: the file has them. */
#define JOURNAL_BACKLOG (64u << 20)

/* What journald took is passed over, not moved: moving the rest of a
 * backlog of many MiB at each flush (every 1,024 records) slowed the
 * drain of the rings until they overflowed. */
static void journal_drain(struct pf_record_sink *sink)
{
	size_t at = sink->backlog_at;

	while (sink->journal_fd >= 0 && at < sink->backlog_len) {
		uint32_t n;
		memcpy(&n, sink->backlog + at, sizeof(n));
		if (!journal_send_entry(sink, sink->backlog + at + sizeof(n), n))
			break;
		at += sizeof(n) + n;
	}
	if (sink->journal_fd < 0 || at == sink->backlog_len)
		at = sink->backlog_len = 0;
	sink->backlog_at = at;
}

/* Room for need more bytes at the backlog's end: what journald took
 * goes from its front, once, when the end is reached. */
static bool backlog_room(struct pf_record_sink *sink, size_t need)
{
	if (sink->backlog_len + need <= JOURNAL_BACKLOG)
		return true;
	memmove(sink->backlog, sink->backlog + sink->backlog_at, sink->backlog_len - sink->backlog_at);
	sink->backlog_len -= sink->backlog_at;
	sink->backlog_at = 0;
	return sink->backlog_len + need <= JOURNAL_BACKLOG;
}

static void journal_send(struct pf_record_sink *sink, const char *line, size_t len, long uid)
{
	static char entry[3 * LINE_MAX_BYTES];
	size_t n = pf_journal_entry(line, len, uid, entry, sizeof(entry));

	if (!n)
		return;
	if (sink->backlog_len == 0 && journal_send_entry(sink, entry, n))
		return;
	if (!sink->backlog)
		sink->backlog = malloc(JOURNAL_BACKLOG);
	if (sink->backlog && !backlog_room(sink, sizeof(uint32_t) + n))
		journal_drain(sink);
	if (!sink->backlog || !backlog_room(sink, sizeof(uint32_t) + n)) {
		if (sink->journal_dropped++ % 1000 == 0)
			fprintf(stderr, "portfence: journald is not keeping up: %lu record(s) not sent to the journal "
					"(the log file has them)\n", sink->journal_dropped);
		return;
	}
	uint32_t size = (uint32_t)n;
	memcpy(sink->backlog + sink->backlog_len, &size, sizeof(size));
	memcpy(sink->backlog + sink->backlog_len + sizeof(size), entry, n);
	sink->backlog_len += sizeof(size) + n;
}

bool pf_record_sink_behind(const struct pf_record_sink *sink)
{
	return sink && sink->backlog_len > 0;
}

bool pf_record_sink_add(struct pf_record_sink *sink, const struct pf_record_fields *fields, long uid)
{
	static char line[LINE_MAX_BYTES];
	size_t n = pf_record_format(fields, line, sizeof(line));

	if (!n || !sink)
		return false;
	if (sink->used + n > sizeof(sink->batch))
		pf_record_sink_flush(sink);
	memcpy(sink->batch + sink->used, line, n);
	sink->used += n;
	if (sink->syslog)
		syslog(PF_RECORD_SYSLOG_FACILITY | pf_record_syslog_level(fields->event), "%.*s", (int)n - 1, line);
	if (sink->journal_fd >= 0)
		journal_send(sink, line, n, uid);
	return true;
}
