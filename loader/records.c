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
#include "record/ring.h"
#include "record/sink.h"

#define BATCH_BYTES 65536
/* kernfs file handles (cgroups) carry the 64-bit cgroup id. */
#define FILEID_KERNFS 0xfe

/* What the drain resolves once per cgroup and process. */
struct resolve_cache {
	int cgroup_mount_fd;
	size_t cgroup_mount_len;
	struct { uint64_t id; char path[256]; } cgroups[32];
	/* A process's program for the records stamped in [from_ns, until_ns). */
	struct { uint32_t pid; uint64_t from_ns, until_ns; char exe[PATH_MAX]; } exes[32];
	unsigned next_cgroup, next_exe;
};

static struct resolve_cache *cache_of(struct pf_bpf_app *loaded)
{
	static struct resolve_cache cache = {.cgroup_mount_fd = -2};
	char mount_point[PATH_MAX];

	(void)loaded;
	if (cache.cgroup_mount_fd == -2) {
		cache.cgroup_mount_fd = -1;
		if (pf_cgroup2_mount(mount_point, sizeof(mount_point)) == 0) {
			cache.cgroup_mount_fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			cache.cgroup_mount_len = strlen(mount_point);
		}
	}
	return &cache;
}

/* The cgroup's path as /proc/PID/cgroup shows it ("/portfence/web-42"). */
static const char *cgroup_path(struct resolve_cache *sink, uint64_t id)
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

void pf_bpf_note_cgroup(uint64_t id, const char *relative)
{
	struct resolve_cache *sink = cache_of(NULL);
	unsigned slot = sink->next_cgroup++ % 32;
	if ((size_t)snprintf(sink->cgroups[slot].path, sizeof(sink->cgroups[slot].path), "/%s", relative) >=
	    sizeof(sink->cgroups[slot].path))
		sink->cgroups[slot].path[0] = '\0';
	sink->cgroups[slot].id = id;
}

static uint64_t monotonic_now_ns(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000000 + (uint64_t)now.tv_nsec;
}

/* A path execve(2) was given, resolved as /proc/PID/exe would have it
 * (links followed) while it still names a file; else as given. */
static void resolve_exec_path(const char *given, char *exe, size_t len)
{
	char real[PATH_MAX];
	bool resolved = given[0] == '/' && realpath(given, real);
	snprintf(exe, len, "%s", resolved ? real : given);
}

/* The program that made a record stamped at_ns.  The exec watch's
 * entry for the pid says when the process last exec'd: a record from
 * before is named by the program it ran then ("" when unknown; comm
 * still names it); a later one by /proc/PID/exe, or by the entry when
 * the process is gone.  Each answer holds for an interval of stamps, so
 * that a process is looked up once per drain, not once per record. */
static const char *exe_path(struct resolve_cache *sink, const struct pf_bpf_app *loaded, uint32_t pid,
			    uint64_t at_ns)
{
	char link[64];
	struct pf_bpf_exe noted;

	for (unsigned i = 0; i < 32; i++)
		if (sink->exes[i].pid == pid && at_ns >= sink->exes[i].from_ns && at_ns < sink->exes[i].until_ns)
			return sink->exes[i].exe;
	unsigned slot = sink->next_exe++ % 32;
	char *exe = sink->exes[slot].exe;
	size_t len = sizeof(sink->exes[slot].exe);
	uint64_t now = monotonic_now_ns();
	bool known = bpf_map_lookup_elem(bpf_map__fd(loaded->skel->maps.exes), &pid, &noted) == 0;
	if (known) {
		noted.path[sizeof(noted.path) - 1] = noted.before[sizeof(noted.before) - 1] = '\0';
	}
	sink->exes[slot].pid = pid;
	if (known && at_ns < noted.exec_ns) {
		resolve_exec_path(noted.before, exe, len);
		sink->exes[slot].from_ns = 0;
		sink->exes[slot].until_ns = noted.exec_ns;
		return exe;
	}
	snprintf(link, sizeof(link), "/proc/%u/exe", pid);
	ssize_t n = readlink(link, exe, len - 1);
	exe[n > 0 ? n : 0] = '\0';
	if (n <= 0 && known)
		resolve_exec_path(noted.path, exe, len);
	sink->exes[slot].from_ns = known ? noted.exec_ns : 0;
	sink->exes[slot].until_ns = now;
	return exe;
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

/* One record to the sinks: whether it was formatted.  uid: the
 * process's (-1: unknown). */
static bool add_record(struct pf_record_sink *sink, const struct pf_record_fields *fields, long uid)
{
	return pf_record_sink_add(sink, fields, uid);
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
	const struct pf_app *app = loaded->explainer ? loaded->explainer->app : NULL;

	buf[0] = '\0';
	if (!app)
		return;
	bool deny = r->event == PF_BPF_DENY || (r->event == PF_BPF_AUDIT && r->error);
	enum pf_explanation says = pf_app_explain(&loaded->explainer->policy, app, fields->event, (int)r->error, r->local_port,
						  r->remote_port ? remote : NULL, buf, len);
	if (says == PF_EXPLAINS_REASON) {
		fields->reason = buf;
		return;
	}
	if (says == PF_EXPLAINS_NOTHING && deny && r->remote_port && r->udp)
		snprintf(buf, len, "udp_unbound = \"%s\" %s:%d (an unconnected send on an unbound UDP "
			 "socket cannot get a range port under BPF, and the socket keeps the kernel's "
			 "port: connect or bind(0) a socket before its first send, or run it under the shim)", app->udp_unbound_audit ? "audit" : "deny", app->file,
			 app->udp_unbound_line ? app->udp_unbound_line : app->line);
	else if (says == PF_EXPLAINS_NOTHING && deny && !r->remote_port)
		/* Neither a bind nor a destination: the socket itself. */
		snprintf(buf, len, "protocols %s:%d: a socket the BPF hooks cannot confine is refused at its creation",
			 app->file, app->line);
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
	struct resolve_cache *cache = cache_of(loaded);
	const struct pf_bpf_record *r = data;
	struct sockaddr_storage local, remote;
	char comm[sizeof(r->comm) + 1] = "";

	if (size < sizeof(*r) || r->event > PF_BPF_BIND)
		return 0;
	memcpy(comm, r->comm, sizeof(r->comm));
	pf_sockaddr_of(r->family, r->local_addr, r->local_port, &local);
	pf_sockaddr_of(r->family, r->remote_addr, r->remote_port, &remote);
	struct timespec when = wall_time(r->monotonic_ns);
	struct pf_record_fields fields = {
		.when = &when, .event = event_of[r->event], .app = loaded->app_name, .pid = r->pid,
		.exe = exe_path(cache, loaded, r->pid, r->monotonic_ns), .udp = r->udp, .family = r->family,
		.local = (struct sockaddr *)&local, .remote = (struct sockaddr *)&remote,
		.algorithm = loaded->algorithm_name, .attempts = r->attempts, .error = (int)r->error,
		.comm = comm, .cgroup = cgroup_path(cache, r->cgroup_id),
	};
	char why[600];
	explain(loaded, r, (struct sockaddr *)&remote, &fields, why, sizeof(why));
	notice(loaded, r, &fields);
	if (add_record(sink, &fields, (long)r->uid))
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
	if (add_record(sink, &fields, -1))
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
	pf_bpf_app_sync_counters(loaded);
	if (!sink)
		return 0;
	if (!ring_of(loaded))
		return -errno;
	loaded->draining_to = sink;
	loaded->drained = 0;
	ring_buffer__consume(loaded->ring);
	report_lost(loaded, sink);
	pf_record_sink_flush(sink);
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

int pf_bpf_pinned_loss(const char *app_dir, struct pf_bpf_loss *loss)
{
	char path[PATH_MAX + 32];
	uint32_t lost_key = PF_BPF_LOSS_LOST, reported_key = PF_BPF_LOSS_REPORTED;

	*loss = (struct pf_bpf_loss){0};
	snprintf(path, sizeof(path), "%s/record_loss", app_dir);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	int rc = bpf_map_lookup_elem(fd, &lost_key, &loss->lost) < 0 ? -errno : 1;
	if (rc > 0 && bpf_map_lookup_elem(fd, &reported_key, &loss->reported) < 0)
		loss->reported = 0;
	close(fd);
	return rc;
}

long long pf_bpf_records_lost(const char *app_name)
{
	char dir[PATH_MAX];
	struct pf_bpf_loss loss;

	if (pf_pin_app_dir(PF_BPF_PIN_ROOT, app_name, dir, sizeof(dir)) < 0)
		return 0;
	int rc = pf_bpf_pinned_loss(dir, &loss);
	return rc <= 0 ? rc : (long long)loss.lost;
}
