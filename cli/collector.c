/* The collector: one ring per registered shim process, drained in
 * batches into the daemon's sinks.  What the ring says is never trusted:
 * pid, uid and gid come from the kernel (SO_PEERCRED), the exe from
 * /proc, and a slot that is not a shim's record is counted and skipped.
 * A process's ring stays mapped here after it dies, until drained. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "collector.h"
#include "record/ring.h"
#include "record/sink.h"

struct ring_client {
	struct pf_ring_header *ring;
	uint64_t tail;		/* the next record to take */
	uint64_t released;	/* the slots from here to tail are held: taken, not yet written */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int pidfd;		/* readable once the process is gone */
	bool gone;
	bool replaced;		/* closed by the process, and drained */
	char app[256], algorithm[32];
	char exe[PATH_MAX];
	unsigned long malformed, malformed_said;
	uint64_t lost_reported;
	uint64_t direct_said;	/* records the process wrote to the file itself, said so far */
	long direct_said_at;
};

/* Connections whose registration has not arrived yet: looked at again
 * each round, never waited for, so that a client that connects and
 * sends nothing holds nobody up. */
#define PENDING_MAX 64
#define PENDING_SECONDS 2
/* A process registers once, and again after an exec or a collector's
 * restart: more rings than this for one pid is not a shim. */
#define RINGS_PER_PID 8

struct pending {
	int fd;
	long since;
};

struct pf_collector {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd;
	int abstract_fd;	/* the same name in the abstract namespace; -1: none */
	struct pending pending[PENDING_MAX];
	int pending_count;
	struct pf_record_sink *sink;
	struct ring_client *clients;
	size_t count, cap;
	unsigned long refused;
	uint32_t version_said;		/* the last such version said on stderr */
};

const char *pf_collector_path(void)
{
	const char *path = secure_getenv("PORTFENCE_COLLECTOR");
	return path && path[0] ? path : PF_COLLECTOR_SOCKET;
}

static long coarse_seconds(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return (long)now.tv_sec;
}

/* The abstract socket named like path (a NUL, then the path): the way in
 * for a process that chrooted, or was forked by one that did, where the
 * path is out of reach.  The shim checks who answers there (root or its
 * own user) as it does at the path. */
static int listen_abstract(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t n = strlen(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	memcpy(addr.sun_path + 1, path, n);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) == 0 &&
	    listen(fd, 256) == 0)
		return fd;
	fprintf(stderr, "portfence: collector: cannot listen at the abstract socket @%s (%s): chrooted programs "
			"cannot reach this collector\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

struct pf_collector *pf_collector_open(const char *path, char *why, size_t len)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct pf_collector *c = calloc(1, sizeof(*c));
	char dir[sizeof(addr.sun_path)];

	if (!c)
		return snprintf(why, len, "out of memory"), NULL;
	if (strcmp(path, "none") == 0) {
		snprintf(why, len, "no collector (PORTFENCE_COLLECTOR=none)");
		free(c);
		return NULL;
	}
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(why, len, "collector socket path %s is too long", path);
		free(c);
		return NULL;
	}
	strcpy(addr.sun_path, path);
	strcpy(c->path, path);
	strcpy(dir, path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0755);
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		close(probe);
		snprintf(why, len, "another collector is running at %s", path);
		free(c);
		return NULL;
	}
	if (probe >= 0)
		close(probe);
	unlink(path);	/* a socket left by a collector that died */
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->listen_fd < 0 || bind(c->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    chmod(path, 0666) < 0 || listen(c->listen_fd, 256) < 0) {
		snprintf(why, len, "cannot listen at %s: %s", path, strerror(errno));
		if (c->listen_fd >= 0)
			close(c->listen_fd);
		free(c);
		return NULL;
	}
	c->abstract_fd = listen_abstract(path);
	return c;
}

void pf_collector_set_sink(struct pf_collector *c, struct pf_record_sink *sink)
{
	c->sink = sink;
}

int pf_collector_fd(const struct pf_collector *c)
{
	return c->listen_fd;
}

static void read_exe(pid_t pid, char *exe, size_t len)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	ssize_t n = readlink(link, exe, len - 1);
	exe[n > 0 ? n : 0] = '\0';
}

/* A shim of another portfence version (a program started before an
 * upgrade): its ring is laid out otherwise, so it is refused, and the
 * program writes its records to the file directly, as with no collector.
 * Said once per version, with the pid the kernel gives. */
static void refuse_version(struct pf_collector *c, pid_t pid, uint32_t version)
{
	if (c->version_said == version)
		return;
	c->version_said = version;
	fprintf(stderr, "portfence: collector: pid %d registered a ring of version %u; this collector reads version "
			"%u (a program started under another portfence version): refused; it writes its records as "
			"with no collector\n", (int)pid, version, PF_RING_VERSION);
}

/* The registration message on conn and the first fd that came with
 * it (any others closed) in *memfd (-1: none): whether both arrived
 * whole. */
static bool receive_registration(int conn, struct pf_ring_register *message, int *memfd)
{
	char control[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = {.iov_base = message, .iov_len = sizeof(*message)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct pollfd pfd = {.fd = conn, .events = POLLIN};

	memset(message, 0, sizeof(*message));
	*memfd = -1;
	if (poll(&pfd, 1, 0) != 1)
		return false;
	ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg))
		if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
			int count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < count; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
				if (*memfd < 0)
					*memfd = fd;
				else
					close(fd);
			}
		}
	return n == (ssize_t)sizeof(*message) && !(msg.msg_flags & MSG_CTRUNC) && *memfd >= 0 &&
	       message->magic == PF_REGISTER_MAGIC;
}

/* The ring in memfd, mapped, or NULL when it is not a shim's.  The
 * memory must stay as large as it is: a memfd sealed against shrinking,
 * or a program could make our reads fault (SIGBUS). */
static struct pf_ring_header *map_ring(int memfd)
{
	struct stat info;
	int seals = fcntl(memfd, F_GET_SEALS);

	if (fstat(memfd, &info) < 0 || !S_ISREG(info.st_mode) || info.st_size < (off_t)PF_RING_BYTES ||
	    seals < 0 || !(seals & F_SEAL_SHRINK))
		return NULL;
	void *map = mmap(NULL, PF_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (map == MAP_FAILED)
		return NULL;
	struct pf_ring_header *ring = map;
	if (ring->magic != PF_RING_MAGIC || ring->version != PF_RING_VERSION || ring->slots != PF_RING_SLOTS ||
	    ring->slot_size != sizeof(struct pf_ring_slot)) {
		munmap(map, PF_RING_BYTES);
		return NULL;
	}
	return ring;
}

/* A free entry at the end of c->clients, zeroed (not yet counted), or
 * NULL when out of memory. */
static struct ring_client *next_client(struct pf_collector *c)
{
	if (c->count == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct ring_client *grown = realloc(c->clients, cap * sizeof(*grown));
		if (!grown)
			return NULL;
		c->clients = grown;
		c->cap = cap;
	}
	memset(&c->clients[c->count], 0, sizeof(c->clients[c->count]));
	return &c->clients[c->count];
}

static size_t rings_of(const struct pf_collector *c, pid_t pid)
{
	size_t rings = 0;
	for (size_t i = 0; i < c->count; i++)
		rings += c->clients[i].pid == pid && !c->clients[i].gone;
	return rings;
}

/* One registration: the message and the memfd, checked; the ring mapped
 * and its lease started; then the answer.  A connection that sends
 * nothing usable is closed without one.  The identity is the kernel's
 * (SO_PEERCRED), never the message's. */
static void take_registration(struct pf_collector *c, int conn)
{
	struct pf_ring_register message;
	struct pf_ring_header *ring = NULL;
	struct ring_client *client;
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);
	int memfd, pidfd = -1;

	if (!receive_registration(conn, &message, &memfd))
		goto refuse;
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0 || cred.pid <= 0)
		goto refuse;
	if (message.version != PF_RING_VERSION) {
		refuse_version(c, cred.pid, message.version);
		goto refuse_quietly;
	}
	message.app[sizeof(message.app) - 1] = '\0';
	message.algorithm[sizeof(message.algorithm) - 1] = '\0';
	if (!(ring = map_ring(memfd)) || rings_of(c, cred.pid) >= RINGS_PER_PID)
		goto refuse;
	/* A process that gave up waiting for our answer (we were slow) and
	 * ended: its records went to the file, nothing to refuse.  One that
	 * waits still: the pid is its own. */
	if ((pidfd = pidfd_open(cred.pid, 0)) < 0)
		goto refuse_quietly;
	if (!(client = next_client(c)))
		goto refuse;
	client->ring = ring;
	client->tail = client->released = atomic_load(&ring->tail);
	client->pid = cred.pid;
	client->uid = cred.uid;
	client->gid = cred.gid;
	client->pidfd = pidfd;
	client->lost_reported = atomic_load(&ring->lost);
	snprintf(client->app, sizeof(client->app), "%s", message.app);
	snprintf(client->algorithm, sizeof(client->algorithm), "%s", message.algorithm);
	read_exe(cred.pid, client->exe, sizeof(client->exe));
	atomic_store(&ring->lease, coarse_seconds() + PF_RING_LEASE_SECONDS);
	if (send(conn, "1", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
		goto refuse_quietly;	/* the process gave up waiting: it writes directly now */
	c->count++;
	close(memfd);
	return;
refuse:
	c->refused++;
	if (c->refused == 1 || c->refused % 1000 == 0)
		fprintf(stderr, "portfence: collector: %lu registration(s) refused (not a shim's ring)\n",
			c->refused);
refuse_quietly:
	if (pidfd >= 0)
		close(pidfd);
	if (ring)
		munmap(ring, PF_RING_BYTES);
	if (memfd >= 0)
		close(memfd);
}

static bool readable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	return poll(&pfd, 1, 0) == 1;
}

static void accept_all(struct pf_collector *c)
{
	long now = coarse_seconds();

	/* Those that were waiting: taken when their message is there,
	 * dropped when it never came. */
	for (int i = c->pending_count; i-- > 0;) {
		struct pending *p = &c->pending[i];
		if (!readable(p->fd) && now - p->since < PENDING_SECONDS)
			continue;
		if (readable(p->fd))
			take_registration(c, p->fd);
		else
			c->refused++;
		close(p->fd);
		*p = c->pending[--c->pending_count];
	}
	int fds[2] = {c->listen_fd, c->abstract_fd};
	for (int f = 0; f < 2; f++)
		for (int i = 0; fds[f] >= 0 && i < 64; i++) {
			int conn = accept4(fds[f], NULL, NULL, SOCK_CLOEXEC);
			if (conn < 0)
				break;
			if (!readable(conn) && c->pending_count < PENDING_MAX) {
				c->pending[c->pending_count++] = (struct pending){.fd = conn, .since = now};
				continue;
			}
			take_registration(c, conn);
			close(conn);
		}
}

static void write_entry(struct pf_collector *c, struct ring_client *client, const struct pf_ring_entry *e,
			const struct timespec *now)
{
	char why[PF_RING_TEXT_MAX + 1];
	struct pf_record_fields fields = {0};
	struct sockaddr_storage local, remote;
	struct timespec when;

	if (!pf_ring_decode(e, now, &fields, &when, &local, &remote)) {
		client->malformed++;
		return;
	}
	fields.app = client->app;
	fields.pid = client->pid;
	fields.exe = client->exe;
	fields.algorithm = client->algorithm;
	/* The rule and the reason as the shim wrote them, from the policy
	 * it runs with (which may not be ours). */
	pf_ring_explain(client->ring, e, &fields, why, sizeof(why));
	pf_record_sink_add(c->sink, &fields, (long)client->uid);
}

/* Records the process counted as lost (neither ring nor file took
 * them): one error record, in its own name. */
static void report_lost(struct pf_collector *c, struct ring_client *client)
{
	uint64_t lost = atomic_load(&client->ring->lost);
	if (lost <= client->lost_reported)
		return;
	struct pf_record_fields fields = {
		.event = PF_EVENT_ERROR, .app = client->app, .pid = client->pid, .exe = client->exe,
		.family = AF_INET, .algorithm = client->algorithm, .error = ENOBUFS,
		.reason = "records lost: neither the collector's ring nor the log file could take them",
		.lost = (unsigned long)(lost - client->lost_reported),
	};
	pf_record_sink_add(c->sink, &fields, (long)client->uid);
	client->lost_reported = lost;
}

/* The records the process wrote to the log file itself (its ring full,
 * or no collector to take them: the shim counts them in the ring it
 * registers next): said when they start, then at most once a minute,
 * and when the process or its ring ends. */
static void report_direct(struct ring_client *client)
{
	uint64_t direct = atomic_load(&client->ring->fallback);
	long now = coarse_seconds();

	if (direct <= client->direct_said ||
	    (client->direct_said && !client->gone && !(atomic_load(&client->ring->head) & PF_RING_CLOSED) &&
	     now - client->direct_said_at < 60))
		return;
	fprintf(stderr, "portfence: collector: pid %d (uid %u, app %s): %llu record(s) went to the log file "
			"directly (its ring was full, or no collector took them)\n", (int)client->pid,
		(unsigned)client->uid, client->app, (unsigned long long)direct);
	client->direct_said = direct;
	client->direct_said_at = now;
}

/* What the process's ring says beside its records: lost, malformed,
 * written directly. */
static void report_counts(struct pf_collector *c, struct ring_client *client)
{
	report_lost(c, client);
	if (client->malformed > client->malformed_said) {
		fprintf(stderr, "portfence: collector: pid %d (uid %u, app %s) wrote %lu malformed record(s) into "
				"its ring; skipped\n", (int)client->pid, (unsigned)client->uid, client->app,
			client->malformed - client->malformed_said);
		client->malformed_said = client->malformed;
	}
	report_direct(client);
}

/* Written only when it changes (once a second): the producers read the
 * lease at every record, and a store each batch took the line from them. */
static void renew_lease(struct pf_ring_header *ring)
{
	int64_t until = coarse_seconds() + PF_RING_LEASE_SECONDS;

	if (atomic_load_explicit(&ring->lease, memory_order_relaxed) != until)
		atomic_store(&ring->lease, until);
}

/* The records taken from the client's ring are written (the sink was
 * flushed): their slots are freed, and the ring's tail moves past them,
 * past the slots counted lost too, which the process must not take again.
 * A collector killed before this leaves them held, for the process to
 * take over. */
static void release_written(struct ring_client *client)
{
	pf_ring_release(client->ring, client->released, client->tail);
	client->released = client->tail;
}

/* Records held at once, at most: past this many the batch is written
 * and the slots freed before more are taken, so that a process writing
 * fast into a ring drained whole is not left with no free slot until the
 * round ends. */
#define HELD_MAX (PF_RING_SLOTS / 4)

static void write_and_release(struct pf_collector *c)
{
	pf_record_sink_flush(c->sink);
	for (size_t i = 0; i < c->count; i++)
		release_written(&c->clients[i]);
}

/* A batch: at most one ring's worth (two for a process gone), so that
 * one busy process cannot hold the others back.  The slots taken stay
 * held until their records are written (write_and_release). */
static unsigned long drain(struct pf_collector *c, struct ring_client *client, const struct timespec *now)
{
	struct pf_ring_entry e;
	unsigned long taken = 0;

	int rc;
	for (unsigned i = 0; i < PF_RING_SLOTS && (rc = pf_ring_hold(client->ring, &client->tail, &e)); i++) {
		if (rc == PF_RING_MINE) {
			write_entry(c, client, &e, now);
			taken++;
		}
		if (client->tail - client->released >= HELD_MAX)
			write_and_release(c);
	}
	/* A process gone mid-write leaves claimed slots never committed:
	 * past them, whatever it committed is still taken. */
	if (client->gone) {
		uint64_t head = atomic_load(&client->ring->head) & ~PF_RING_CLOSED;
		for (unsigned i = 0; i < PF_RING_SLOTS && client->tail < head; i++) {
			int got = pf_ring_hold(client->ring, &client->tail, &e);
			if (got == PF_RING_MINE) {
				write_entry(c, client, &e, now);
				taken++;
			} else if (got == PF_RING_NOTHING) {
				client->tail++;
			}
			if (client->tail - client->released >= HELD_MAX)
				write_and_release(c);
		}
	}
	report_counts(c, client);
	/* A closed ring was replaced by the process (shim/collect.c): its
	 * lease is not renewed, and once every slot claimed in it is taken
	 * (by us or by the process, moving them into its new ring) it is
	 * done with. */
	uint64_t head = atomic_load(&client->ring->head);
	if (head & PF_RING_CLOSED)
		client->replaced = client->tail >= (head & ~PF_RING_CLOSED);
	else
		renew_lease(client->ring);
	return taken;
}

/* How long a stopping collector waits for a live writer to commit a
 * slot it claimed (a thread descheduled between the two): past that, the
 * record is counted lost, never silently dropped. */
#define CLOSE_COMMIT_WAIT_NS 200000000L

struct drain_target {
	struct pf_collector *c;
	struct ring_client *client;
	const struct timespec *now;
};

static void write_to_sinks(const struct pf_ring_entry *e, void *opaque)
{
	struct drain_target *target = opaque;
	write_entry(target->c, target->client, e, target->now);
}

/* Stopping: every record claimed in the (closed) ring, taken. */
static void drain_to_end(struct pf_collector *c, struct ring_client *client, const struct timespec *now)
{
	uint64_t end = atomic_load(&client->ring->head) & ~PF_RING_CLOSED;
	struct pollfd pfd = {.fd = client->pidfd, .events = POLLIN};
	struct drain_target target = {c, client, now};

	if (!client->gone && poll(&pfd, 1, 0) == 1)
		client->gone = true;
	/* A dead process commits nothing more: no wait for it. */
	unsigned long lost = pf_ring_take_to_end(client->ring, &client->tail, end,
						 client->gone ? 0 : CLOSE_COMMIT_WAIT_NS, true, write_to_sinks, &target);
	atomic_fetch_add(&client->ring->lost, lost);
}

static void forget(struct pf_collector *c, size_t i)
{
	munmap(c->clients[i].ring, PF_RING_BYTES);
	close(c->clients[i].pidfd);
	c->clients[i] = c->clients[--c->count];
}

unsigned long pf_collector_work(struct pf_collector *c)
{
	struct timespec now;
	unsigned long written = 0;

	accept_all(c);
	clock_gettime(CLOCK_REALTIME, &now);
	for (size_t i = 0; i < c->count; i++) {
		struct ring_client *client = &c->clients[i];
		struct pollfd pfd = {.fd = client->pidfd, .events = POLLIN};
		/* Gone is looked at before the drain, so the drain that sees it
		 * takes everything it wrote. */
		if (!client->gone && poll(&pfd, 1, 0) == 1)
			client->gone = true;
		written += drain(c, client, &now);
	}
	write_and_release(c);
	for (size_t i = c->count; i-- > 0;)
		if (c->clients[i].gone || c->clients[i].replaced)
			forget(c, i);
	return written;
}

void pf_collector_close(struct pf_collector *c)
{
	if (!c)
		return;
	accept_all(c);
	close(c->listen_fd);
	if (c->abstract_fd >= 0)
		close(c->abstract_fd);
	while (c->pending_count)
		close(c->pending[--c->pending_count].fd);
	unlink(c->path);
	/* Every ring is withdrawn (said), emptied of what was claimed in it
	 * and written out; only then released, its lease ended: its process
	 * waits for that before it moves what came after to the next
	 * collector, or to the file, so its records stay in order.  The ring
	 * stays open: a process that may not write the file (a service not
	 * run as root) keeps its records there until the next collector
	 * comes (a restart), rather than lose them. */
	for (size_t i = 0; i < c->count; i++)
		atomic_store(&c->clients[i].ring->withdrawn, PF_RING_WITHDRAWING);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	for (size_t i = 0; i < c->count; i++) {
		struct pf_ring_header *ring = c->clients[i].ring;
		drain_to_end(c, &c->clients[i], &now);
		report_counts(c, &c->clients[i]);
		pf_record_sink_flush(c->sink);
		release_written(&c->clients[i]);
		/* Its process registers with the next collector, or writes
		 * directly. */
		atomic_store(&ring->lease, 0);
		atomic_store(&ring->withdrawn, PF_RING_RELEASED);
	}
	while (c->count)
		forget(c, c->count - 1);
	free(c->clients);
	free(c);
}
