/* What the programs report, drained in batches from their ring buffer
 * and appended to the app's log as the shim's records are, plus comm and
 * cgroup; and the records the ring had no room for, counted by the
 * programs and reported by one error record per drain. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader/loader_internal.h"
#include "portfence.skel.h"
#include "record/record.h"

#define BATCH_BYTES 65536
/* kernfs file handles (cgroups) carry the 64-bit cgroup id. */
#define FILEID_KERNFS 0xfe

struct pf_record_sink {
	char *path;		/* NULL: stderr */
	int fd;
	dev_t dev;
	ino_t ino;
	time_t checked;
	bool syslog;
	int cgroup_mount_fd;
	size_t cgroup_mount_len;
	char batch[BATCH_BYTES];
	size_t used;
	/* Recently seen cgroups and processes, resolved once. */
	struct { uint64_t id; char path[256]; } cgroups[32];
	struct { uint32_t pid; char exe[PATH_MAX]; } exes[32];
	unsigned next_cgroup, next_exe;
};

/* The log is the policy's, written by root: it must not be a file that
 * others could have planted or can write. */
static int open_log(struct pf_record_sink *sink)
{
	struct stat info;
	int fd = open(sink->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);

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
	sink->dev = info.st_dev;
	sink->ino = info.st_ino;
	return fd;
}

struct pf_record_sink *pf_record_sink_open(const char *log_path, bool to_syslog)
{
	struct pf_record_sink *sink = calloc(1, sizeof(*sink));
	char mount_point[PATH_MAX];

	if (!sink)
		return NULL;
	sink->fd = -1;
	sink->syslog = to_syslog;
	sink->cgroup_mount_fd = -1;
	if (pf_cgroup2_mount(mount_point, sizeof(mount_point)) == 0) {
		sink->cgroup_mount_fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		sink->cgroup_mount_len = strlen(mount_point);
	}
	if (log_path && strcmp(log_path, "-") == 0) {
		sink->fd = STDERR_FILENO;
	} else if (log_path) {
		sink->path = strdup(log_path);
		sink->fd = sink->path ? open_log(sink) : -1;
		sink->checked = time(NULL);
	}
	if (to_syslog)
		openlog("portfence", LOG_PID, LOG_AUTH);
	return sink;
}

/* A log renamed or removed (logrotate) is followed within a second. */
static void follow_rotation(struct pf_record_sink *sink)
{
	struct stat now;
	time_t second = time(NULL);

	if (!sink->path || second == sink->checked)
		return;
	sink->checked = second;
	if (sink->fd >= 0 && stat(sink->path, &now) == 0 && now.st_dev == sink->dev && now.st_ino == sink->ino)
		return;
	if (sink->fd >= 0)
		close(sink->fd);
	sink->fd = open_log(sink);
}

/* Whole records only: a batch ends at a record's end, and a short write
 * (a full disk) drops the rest rather than glue a later record to a
 * partial one. */
static void flush(struct pf_record_sink *sink)
{
	follow_rotation(sink);
	if (sink->fd >= 0 && sink->used) {
		ssize_t written = write(sink->fd, sink->batch, sink->used);
		if (written >= 0 && (size_t)written < sink->used) {
			ssize_t newline = write(sink->fd, "\n", 1);
			(void)newline;
		}
	}
	sink->used = 0;
}

void pf_record_sink_close(struct pf_record_sink *sink)
{
	if (!sink)
		return;
	flush(sink);
	if (sink->fd > STDERR_FILENO)
		close(sink->fd);
	if (sink->cgroup_mount_fd >= 0)
		close(sink->cgroup_mount_fd);
	if (sink->syslog)
		closelog();
	free(sink->path);
	free(sink);
}

/* The cgroup's path as /proc/PID/cgroup shows it ("/portfence/web-42"). */
static const char *cgroup_path(struct pf_record_sink *sink, uint64_t id)
{
	struct { struct file_handle head; uint64_t id; } handle = {
		.head = {.handle_bytes = sizeof(uint64_t), .handle_type = FILEID_KERNFS}, .id = id};
	char link[64], target[PATH_MAX];

	for (unsigned i = 0; i < 32; i++)
		if (sink->cgroups[i].id == id && sink->cgroups[i].path[0])
			return sink->cgroups[i].path;
	if (sink->cgroup_mount_fd < 0)
		return "";
	int fd = open_by_handle_at(sink->cgroup_mount_fd, &handle.head, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "";
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	close(fd);
	if (n <= 0)
		return "";
	target[n] = '\0';
	unsigned slot = sink->next_cgroup++ % 32;
	const char *rest = (size_t)n >= sink->cgroup_mount_len ? target + sink->cgroup_mount_len : target;
	if ((size_t)snprintf(sink->cgroups[slot].path, sizeof(sink->cgroups[slot].path), "%s",
			     rest[0] ? rest : "/") >= sizeof(sink->cgroups[slot].path))
		return "";
	sink->cgroups[slot].id = id;
	return sink->cgroups[slot].path;
}

void pf_record_sink_note_cgroup(struct pf_record_sink *sink, uint64_t id, const char *relative)
{
	if (!sink)
		return;
	unsigned slot = sink->next_cgroup++ % 32;
	if ((size_t)snprintf(sink->cgroups[slot].path, sizeof(sink->cgroups[slot].path), "/%s", relative) >=
	    sizeof(sink->cgroups[slot].path))
		sink->cgroups[slot].path[0] = '\0';
	sink->cgroups[slot].id = id;
}

/* The program's path, read when the record is drained; a process gone
 * by then leaves it empty (comm still names it). */
static const char *exe_path(struct pf_record_sink *sink, const struct pf_bpf_app *loaded, uint32_t pid)
{
	char link[64];
	struct pf_bpf_exe noted;

	for (unsigned i = 0; i < 32; i++)
		if (sink->exes[i].pid == pid && sink->exes[i].exe[0])
			return sink->exes[i].exe;
	unsigned slot = sink->next_exe++ % 32;
	char *exe = sink->exes[slot].exe;
	snprintf(link, sizeof(link), "/proc/%u/exe", pid);
	ssize_t n = readlink(link, exe, sizeof(sink->exes[slot].exe) - 1);
	exe[n > 0 ? n : 0] = '\0';
	if (n <= 0 && bpf_map_lookup_elem(bpf_map__fd(loaded->skel->maps.exes), &pid, &noted) == 0) {
		noted.path[sizeof(noted.path) - 1] = '\0';
		snprintf(exe, sizeof(sink->exes[slot].exe), "%s", noted.path);
	}
	sink->exes[slot].pid = pid;
	return exe;
}

static void to_sockaddr(int family, const uint32_t addr[4], uint16_t port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
	}
}

/* The programs stamp CLOCK_MONOTONIC; the record wants the wall clock. */
static struct timespec wall_time(uint64_t monotonic_ns)
{
	struct timespec mono, real;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	clock_gettime(CLOCK_REALTIME, &real);
	int64_t age = (int64_t)mono.tv_sec * 1000000000 + mono.tv_nsec - (int64_t)monotonic_ns;
	int64_t when = (int64_t)real.tv_sec * 1000000000 + real.tv_nsec - (age > 0 ? age : 0);
	return (struct timespec){.tv_sec = when / 1000000000, .tv_nsec = when % 1000000000};
}

/* One record into the batch (and to syslog): whether it was formatted. */
static bool add_record(struct pf_record_sink *sink, const struct pf_record_fields *fields, int priority)
{
	char line[4096 + PATH_MAX];
	size_t n = pf_record_format(fields, line, sizeof(line));
	if (!n)
		return false;
	if (sink->used + n > sizeof(sink->batch))
		flush(sink);
	memcpy(sink->batch + sink->used, line, n);
	sink->used += n;
	if (sink->syslog)
		syslog(priority, "%.*s", (int)n - 1, line);
	return true;
}

static const enum pf_event event_of[] = {
	[PF_BPF_ASSIGN] = PF_EVENT_ASSIGN, [PF_BPF_DENY] = PF_EVENT_DENY,
	[PF_BPF_ERROR] = PF_EVENT_ERROR, [PF_BPF_AUDIT] = PF_EVENT_AUDIT, [PF_BPF_BIND] = PF_EVENT_BIND,
};

/* The deny's rule and the error's reason, as the shim writes them.  A
 * BPF deny names no rule when its destination is permitted: that is the
 * udp_unbound refusal (or, with no remote, an explicit bind). */
static void explain(const struct pf_bpf_app *loaded, const struct pf_bpf_record *r, const struct sockaddr *remote,
		    struct pf_record_fields *fields, char *buf, size_t len)
{
	const struct pf_app *app = loaded->explainer;

	buf[0] = '\0';
	if (!app)
		return;
	bool deny = r->event == PF_BPF_DENY || (r->event == PF_BPF_AUDIT && r->error);
	if (deny && r->error == EACCES) {
		pf_app_bind_rule(NULL, app, r->local_port, buf, len);
	} else if (deny && r->remote_port) {
		pf_app_refusal_rule(app, remote, r->family == AF_INET6 ? sizeof(struct sockaddr_in6)
								: sizeof(struct sockaddr_in), buf, len);
		if (!buf[0] && r->udp)
			snprintf(buf, len, "udp_unbound = \"%s\" %s:%d (an unconnected send on an unbound UDP "
				 "socket cannot get a range port under BPF: connect or bind(0) it first, "
				 "or run it under the shim)", app->udp_unbound_audit ? "audit" : "deny", app->file,
				 app->udp_unbound_line ? app->udp_unbound_line : app->line);
	} else if (deny) {
		/* Neither a bind nor a destination: the socket itself. */
		snprintf(buf, len, "protocols %s:%d: a socket the BPF hooks cannot confine is refused at its creation",
			 app->file, app->line);
	} else if (r->event == PF_BPF_ERROR) {
		if (r->error == EADDRNOTAVAIL || r->error == EAGAIN || r->error == EADDRINUSE)
			pf_app_exhaustion_reason(app, buf, len);
		else
			snprintf(buf, len, "cannot give a port of range %u-%u: %s", app->range_lo, app->range_hi,
				 pf_errno_name((int)r->error));
		fields->reason = buf;
		return;
	}
	if (buf[0])
		fields->rule = buf;
}

void pf_bpf_app_notify(struct pf_bpf_app *loaded, bool on)
{
	loaded->notify = on;
}

/* One line on the run's stderr, the program's own in a terminal. */
static void notice(struct pf_bpf_app *loaded, const struct pf_bpf_record *r, const struct pf_record_fields *f)
{
	struct timespec now;
	char where[INET6_ADDRSTRLEN + 8] = "?", host[INET6_ADDRSTRLEN] = "?";
	int kind = r->event == PF_BPF_DENY ? 0 : 1;

	if (!loaded->notify || (r->event != PF_BPF_DENY && r->event != PF_BPF_ERROR))
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long long ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000 + 1;
	if (loaded->last_notice_ms[kind] && ms - loaded->last_notice_ms[kind] < 1000)
		return;
	loaded->last_notice_ms[kind] = ms;
	const struct sockaddr *peer = r->remote_port ? f->remote : f->local;
	const void *addr = peer->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr
						       : (const void *)&((const struct sockaddr_in *)peer)->sin_addr;
	inet_ntop(peer->sa_family, addr, host, sizeof(host));
	snprintf(where, sizeof(where), peer->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
		 r->remote_port ? r->remote_port : r->local_port);
	if (r->event == PF_BPF_DENY)
		fprintf(stderr, "portfence: app '%s' (pid %d): %s %s %s denied (%s) by %s\n", loaded->app_name,
			(int)r->pid, r->udp ? "udp" : "tcp", r->remote_port ? "to" : "bind to", where,
			pf_errno_name((int)r->error), f->rule ? f->rule : "the policy");
	else
		fprintf(stderr, "portfence: app '%s' (pid %d): %s (%s)\n", loaded->app_name, (int)r->pid,
			f->reason ? f->reason : "error", pf_errno_name((int)r->error));
}

static int on_record(void *ctx, void *data, size_t size)
{
	struct pf_bpf_app *loaded = ctx;
	struct pf_record_sink *sink = loaded->draining_to;
	const struct pf_bpf_record *r = data;
	struct sockaddr_storage local, remote;
	char comm[sizeof(r->comm) + 1] = "";

	if (size < sizeof(*r) || r->event > PF_BPF_BIND)
		return 0;
	memcpy(comm, r->comm, sizeof(r->comm));
	to_sockaddr(r->family, r->local_addr, r->local_port, &local);
	to_sockaddr(r->family, r->remote_addr, r->remote_port, &remote);
	struct timespec when = wall_time(r->monotonic_ns);
	struct pf_record_fields fields = {
		.when = &when, .event = event_of[r->event], .app = loaded->app_name, .pid = r->pid,
		.exe = exe_path(sink, loaded, r->pid), .udp = r->udp, .family = r->family,
		.local = (struct sockaddr *)&local, .remote = (struct sockaddr *)&remote,
		.algorithm = loaded->algorithm_name, .attempts = r->attempts, .error = (int)r->error,
		.comm = comm, .cgroup = cgroup_path(sink, r->cgroup_id),
	};
	char why[600];
	explain(loaded, r, (struct sockaddr *)&remote, &fields, why, sizeof(why));
	notice(loaded, r, &fields);
	if (add_record(sink, &fields,
		       r->event == PF_BPF_ASSIGN || r->event == PF_BPF_AUDIT || r->event == PF_BPF_BIND ? LOG_INFO
													 : LOG_WARNING))
		loaded->drained++;
	return 0;
}

/* The records the ring had no room for since the last report: one error
 * record says how many, and they count as reported. */
static void report_lost(struct pf_bpf_app *loaded, struct pf_record_sink *sink)
{
	int fd = bpf_map__fd(loaded->skel->maps.record_loss);
	uint32_t lost_key = PF_BPF_LOSS_LOST, reported_key = PF_BPF_LOSS_REPORTED;
	uint64_t lost = 0, reported = 0;

	if (bpf_map_lookup_elem(fd, &lost_key, &lost) < 0 || bpf_map_lookup_elem(fd, &reported_key, &reported) < 0 ||
	    lost <= reported)
		return;
	struct pf_record_fields fields = {
		.event = PF_EVENT_ERROR, .app = loaded->app_name, .exe = "", .family = AF_INET,
		.algorithm = loaded->algorithm_name, .error = ENOBUFS, .comm = "", .cgroup = "",
		.reason = "the record ring was full: records lost before they could be written",
		.lost = (unsigned long)(lost - reported),
	};
	if (add_record(sink, &fields, LOG_WARNING))
		loaded->drained++;
	bpf_map_update_elem(fd, &reported_key, &lost, BPF_ANY);
}

static struct ring_buffer *ring_of(struct pf_bpf_app *loaded)
{
	if (!loaded->ring)
		loaded->ring = ring_buffer__new(bpf_map__fd(loaded->skel->maps.records), on_record, loaded, NULL);
	return loaded->ring;
}

int pf_bpf_app_drain(struct pf_bpf_app *loaded, struct pf_record_sink *sink)
{
	if (!sink)
		return 0;
	if (!ring_of(loaded))
		return -errno;
	loaded->draining_to = sink;
	loaded->drained = 0;
	ring_buffer__consume(loaded->ring);
	report_lost(loaded, sink);
	flush(sink);
	return loaded->drained;
}

void pf_bpf_wait_records(struct pf_bpf_app *const *apps, size_t count, int timeout_ms)
{
	pf_bpf_wait_records_or(apps, count, -1, timeout_ms);
}

bool pf_bpf_wait_records_or(struct pf_bpf_app *const *apps, size_t count, int other_fd, int timeout_ms)
{
	struct pollfd fds[count + 2];
	nfds_t n = 0;

	if (other_fd >= 0)
		fds[n++] = (struct pollfd){.fd = other_fd, .events = POLLIN};
	for (size_t i = 0; i < count; i++)
		if (apps[i] && ring_of(apps[i]))
			fds[n++] = (struct pollfd){.fd = ring_buffer__epoll_fd(apps[i]->ring), .events = POLLIN};
	return poll(fds, n, timeout_ms) > 0 && other_fd >= 0 && (fds[0].revents & POLLIN);
}

long long pf_bpf_records_lost(const char *app_name)
{
	char path[PATH_MAX];
	uint32_t key = PF_BPF_LOSS_LOST;
	uint64_t lost = 0;

	snprintf(path, sizeof(path), "%s/%s/record_loss", PF_BPF_PIN_ROOT, app_name);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int rc = bpf_map_lookup_elem(fd, &key, &lost) < 0 ? -errno : 0;
	close(fd);
	return rc < 0 ? rc : (long long)lost;
}
