#include "harness.h"

#include "core/state.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint16_t peer_port(const struct sockaddr_storage *peer)
{
	if (peer->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)peer)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
}

static void record_peer(struct server *s, const struct sockaddr_storage *peer)
{
	int index = atomic_fetch_add(&s->count, 1);
	if (index < MAX_PEERS)
		s->peers[index] = peer_port(peer);
}

/* Reads a request (up to a blank line, EOF or 2 s) and answers it. */
static void serve_http(int conn)
{
	char buf[4096];
	size_t have = 0;
	struct pollfd pfd = {.fd = conn, .events = POLLIN};

	while (have < sizeof(buf) - 1 && poll(&pfd, 1, 2000) > 0) {
		ssize_t n = read(conn, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	static const char reply[] = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
				    "Content-Length: 3\r\nConnection: close\r\n\r\nok\n";
	ssize_t ignored = write(conn, reply, sizeof(reply) - 1);
	(void)ignored;
}

static void drain(int conn)
{
	char buf[4096];
	struct pollfd pfd = {.fd = conn, .events = POLLIN};
	while (poll(&pfd, 1, 3000) > 0 && read(conn, buf, sizeof(buf)) > 0)
		;
}

/* Connections the drain server reads at once, each closed at its EOF or
 * after DRAIN_IDLE_MS of silence.  One at a time, a client that held a
 * connection open while it made more (connect's close_range test) kept
 * the server from accepting: the queue filled, connects waited on SYN
 * retries, and the holder never got round to closing (seen: a run that
 * stopped for minutes). */
#define DRAINING_MAX 1024
#define DRAIN_IDLE_MS 3000

struct draining {
	int fd[DRAINING_MAX];
	long last_ms[DRAINING_MAX];
	int count;
	struct pollfd pfd[1 + DRAINING_MAX];	/* the listener, then fd[] */
};

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void draining_remove(struct draining *d, int i)
{
	close(d->fd[i]);
	d->count--;
	d->fd[i] = d->fd[d->count];
	d->last_ms[i] = d->last_ms[d->count];
}

/* Reads what the first polled connections have (ready: poll found
 * some), closing those at EOF and those silent too long. */
static void draining_step(struct draining *d, int polled, bool ready)
{
	char buf[4096];
	long now = now_ms();

	/* Downwards: a removal moves the last entry, already seen, into i. */
	for (int i = polled - 1; i >= 0; i--) {
		if (ready && d->pfd[1 + i].revents) {
			ssize_t n = read(d->fd[i], buf, sizeof(buf));
			if (n <= 0) {
				draining_remove(d, i);
				continue;
			}
			d->last_ms[i] = now;
		} else if (now - d->last_ms[i] > DRAIN_IDLE_MS) {
			draining_remove(d, i);
		}
	}
}

/* One accepted connection, as the server's mode says. */
static void serve_one(struct server *s, struct draining *d, int conn)
{
	if (s->mode == SERVE_STALL && s->stalled_count < MAX_STALLED) {
		s->stalled[s->stalled_count++] = conn;
		return;
	}
	if (s->mode == SERVE_DRAIN && d && d->count < DRAINING_MAX) {
		d->fd[d->count] = conn;
		d->last_ms[d->count++] = now_ms();
		return;
	}
	if (s->mode == SERVE_HTTP) {
		serve_http(conn);
	} else {
		bool greet = s->mode == SERVE_GREET || s->mode == SERVE_GREET_CLOSE;
		if (greet && write(conn, "hi\n", 3) != 3) {
			close(conn);
			return;
		}
		if (s->mode != SERVE_GREET_CLOSE)
			drain(conn);
	}
	close(conn);
}

/* After stop, whatever is still queued is taken too (the loops poll
 * without waiting until nothing is left), so that a slow machine does not
 * make a client's connection or datagram go uncounted. */
static void *tcp_loop(void *arg)
{
	struct server *s = arg;
	struct draining *d = calloc(1, sizeof(*d));
	struct pollfd lone = {.fd = s->fd, .events = POLLIN};
	struct pollfd *pfd = d ? d->pfd : &lone;

	for (;;) {
		bool stopping = atomic_load(&s->stop);
		int polled = d ? d->count : 0;
		pfd[0] = (struct pollfd){.fd = s->fd, .events = POLLIN};
		for (int i = 0; i < polled; i++)
			pfd[1 + i] = (struct pollfd){.fd = d->fd[i], .events = POLLIN};
		int ready = poll(pfd, (nfds_t)(1 + polled), stopping ? 0 : 50);
		if (d)
			draining_step(d, polled, ready > 0);
		if (ready <= 0 || !(pfd[0].revents & POLLIN)) {
			if (stopping && ready <= 0)
				break;
			continue;
		}
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int conn = accept4(s->fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		record_peer(s, &peer);
		serve_one(s, d, conn);
	}
	while (d && d->count > 0)
		draining_remove(d, 0);
	free(d);
	return NULL;
}

static void *udp_loop(void *arg)
{
	struct server *s = arg;
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	char buf[2048];

	for (;;) {
		bool stopping = atomic_load(&s->stop);
		if (poll(&pfd, 1, stopping ? 0 : 50) <= 0) {
			if (stopping)
				break;
			continue;
		}
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		ssize_t n = recvfrom(s->fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &len);
		if (n < 0)
			continue;
		record_peer(s, &peer);
		sendto(s->fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, len);
	}
	return NULL;
}

void server_start(struct server *s, const char *addr, enum server_mode mode)
{
	struct sockaddr_storage bind_addr = {0};
	socklen_t len;
	int one = 1;

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&bind_addr;
		sin6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&bind_addr;
		sin->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
		len = sizeof(*sin);
	}
	s->family = bind_addr.ss_family;
	bool datagram = mode == SERVE_UDP_ECHO || mode == SERVE_UDPLITE_ECHO;
	/* Not inherited: a program run under test must not keep the
	 * server's socket (and its queue) alive after the server stops. */
	s->fd = socket(s->family, (datagram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC,
		       mode == SERVE_UDPLITE_ECHO ? IPPROTO_UDPLITE : 0);
	cr_assert_geq(s->fd, 0);
	setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(s->fd, (struct sockaddr *)&bind_addr, len), 0, "bind %s: %s", addr,
		     strerror(errno));
	if (!datagram)
		cr_assert_eq(listen(s->fd, 4096), 0);
	len = sizeof(bind_addr);
	getsockname(s->fd, (struct sockaddr *)&bind_addr, &len);
	s->port = peer_port(&bind_addr);
	pthread_create(&s->thread, NULL, datagram ? udp_loop : tcp_loop, s);
}

void server_stop(struct server *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->thread, NULL);
	close(s->fd);
	for (int i = 0; i < s->stalled_count; i++)
		close(s->stalled[i]);
}

bool server_saw(struct server *s, uint16_t port)
{
	int count = atomic_load(&s->count);
	for (int i = 0; i < count && i < MAX_PEERS; i++)
		if (s->peers[i] == port)
			return true;
	return false;
}

void private_loopback_net(void)
{
	cr_assert_eq(unshare(CLONE_NEWNET), 0, "unshare -n: %s", strerror(errno));
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	cr_assert_geq(fd, 0);
	cr_assert_eq(ioctl(fd, SIOCGIFFLAGS, &ifr), 0, "lo's flags: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	cr_assert_eq(ioctl(fd, SIOCSIFFLAGS, &ifr), 0, "lo up: %s", strerror(errno));
	close(fd);
}

void default_policy(const char *text)
{
	static bool overlaid;

	if (!overlaid) {
		char dir[] = "/tmp/pf-etc-XXXXXX", options[256];
		cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare -m: %s", strerror(errno));
		cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "/ private: %s", strerror(errno));
		cr_assert_not_null(mkdtemp(dir));
		/* upper and work on a tmpfs of this namespace's own, gone with it */
		cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, "mode=0700"), 0, "tmpfs: %s", strerror(errno));
		snprintf(options, sizeof(options), "%s/upper", dir);
		cr_assert_eq(mkdir(options, 0755), 0);
		snprintf(options, sizeof(options), "%s/work", dir);
		cr_assert_eq(mkdir(options, 0755), 0);
		snprintf(options, sizeof(options), "lowerdir=/etc,upperdir=%s/upper,workdir=%s/work", dir, dir);
		cr_assert_eq(mount("overlay", "/etc", "overlay", 0, options), 0, "overlay on /etc: %s", strerror(errno));
		umount2(dir, MNT_DETACH);
		rmdir(dir);
		overlaid = true;
	}
	if (!text) {
		cr_assert(unlink("/etc/portfence.conf") == 0 || errno == ENOENT, "%s", strerror(errno));
		return;
	}
	FILE *f = fopen("/etc/portfence.conf", "w");
	cr_assert_not_null(f, "/etc/portfence.conf: %s", strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

void sandbox_init(struct sandbox *sb, const char *apps_text)
{
	snprintf(sb->dir, sizeof(sb->dir), "/tmp/pf-it-XXXXXX");
	cr_assert_not_null(mkdtemp(sb->dir));
	chmod(sb->dir, 0755);
	snprintf(sb->policy, sizeof(sb->policy), "%s/policy.conf", sb->dir);
	snprintf(sb->log, sizeof(sb->log), "%s/audit.jsonl", sb->dir);
	snprintf(sb->state, sizeof(sb->state), "%s/state", sb->dir);
	FILE *f = fopen(sb->policy, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s\";\n%s\n", sb->log,
		sb->state, apps_text);
	fclose(f);
}

/* State segments outlive processes and files: each is removed with its
 * file. */
void sandbox_cleanup(struct sandbox *sb)
{
	char cmd[128];
	pf_state_remove_all(sb->state);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sb->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", sb->dir);
}

void temp_dir_make(struct temp_dir *temp, const char *name)
{
	snprintf(temp->dir, sizeof(temp->dir), "/tmp/pf-%s-XXXXXX", name);
	cr_assert_not_null(mkdtemp(temp->dir), "%s: %s", temp->dir, strerror(errno));
	snprintf(temp->log, sizeof(temp->log), "%s/audit.jsonl", temp->dir);
}

void temp_dir_remove(const struct temp_dir *temp)
{
	char command[128];

	snprintf(command, sizeof(command), "rm -rf '%s'", temp->dir);
	cr_assert_eq(system(command), 0, "%s", command);
}

/* Programs whose policy leaves state_dir to its default keep their state
 * in $XDG_RUNTIME_DIR/portfence: a directory of this run, whose states
 * (segments outlive every process) are removed when the run ends, and
 * which no other run on the machine shares. */
static char runtime_dir[64];
static char lsan_copy[64];

/* The tool's commands that run no other program. */
static bool leak_checked_command(const char *command)
{
	static const char *const checked[] = {"check", "explain", "report", "status", "who", "doctor", NULL};

	for (int i = 0; checked[i]; i++)
		if (strcmp(command, checked[i]) == 0)
			return true;
	return false;
}

/* A sanitizer build's LSAN_OPTIONS names suppressions in the checkout,
 * which a test's process running as another user may not reach (a clone
 * in a 0700 directory): they are read from a copy in /tmp instead. */
static void lsan_suppressions_for_everyone(void)
{
	const char *options = getenv("LSAN_OPTIONS");
	const char *at = options ? strstr(options, "suppressions=") : NULL;
	char source[PATH_MAX], cmd[PATH_MAX * 2 + 64], value[PATH_MAX + 32];

	if (!at)
		return;
	snprintf(source, sizeof(source), "%.*s", (int)strcspn(at + 13, ":"), at + 13);
	snprintf(lsan_copy, sizeof(lsan_copy), "/tmp/pf-it-lsan-XXXXXX");
	int fd = mkstemp(lsan_copy);
	if (fd < 0) {
		lsan_copy[0] = '\0';
		return;
	}
	close(fd);
	snprintf(cmd, sizeof(cmd), "cat '%s' > '%s' && chmod 0644 '%s'", source, lsan_copy, lsan_copy);
	if (system(cmd) != 0)
		return;
	snprintf(value, sizeof(value), "suppressions=%s", lsan_copy);
	setenv("LSAN_OPTIONS", value, 1);
}

/* A directory every user can enter, for copies of build/ programs that
 * tests run as another user (made by the runner, removed at its end). */
static char others_dir[64];

const char *build_path_for_others(const char *name)
{
	static char paths[8][PATH_MAX];
	static unsigned next;
	char cmd[PATH_MAX * 4];
	char *out = paths[next++ % 8];

	/* The runner made it; the tests run in processes of their own, which
	 * learn it from the environment. */
	const char *dir = getenv("PF_IT_OTHERS_DIR");
	cr_assert(dir && dir[0], "no directory for other users' copies");
	snprintf(out, PATH_MAX, "%s/%s", dir, name);
	/* Through a new name and a rename: a copy may be running. */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s.new' && chmod 0755 '%s.new' && mv -f '%s.new' '%s'", build_path(name), out,
		 out, out, out);
	if (strcmp(name, "portfence") == 0)
		snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd),
			 " && cp '%s' '%s/libportfence.so.new' && chmod 0644 '%s/libportfence.so.new'"
			 " && mv -f '%s/libportfence.so.new' '%s/libportfence.so'",
			 build_path("libportfence.so"), dir, dir, dir, dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	return out;
}

ReportHook(PRE_ALL)(struct criterion_test_set *tests)
{
	(void)tests;
	lsan_suppressions_for_everyone();
	snprintf(others_dir, sizeof(others_dir), "/tmp/pf-it-others-XXXXXX");
	if (mkdtemp(others_dir) && chmod(others_dir, 0755) == 0)
		setenv("PF_IT_OTHERS_DIR", others_dir, 1);
	else
		others_dir[0] = '\0';
	snprintf(runtime_dir, sizeof(runtime_dir), "/tmp/pf-it-runtime-XXXXXX");
	if (mkdtemp(runtime_dir))
		setenv("XDG_RUNTIME_DIR", runtime_dir, 1);
	else
		runtime_dir[0] = '\0';
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	char path[128];
	(void)stats;
	if (lsan_copy[0])
		unlink(lsan_copy);
	if (others_dir[0]) {
		snprintf(path, sizeof(path), "rm -rf '%s'", others_dir);
		if (system(path) != 0)
			fprintf(stderr, "could not remove %s\n", others_dir);
	}
	if (!runtime_dir[0])
		return;
	snprintf(path, sizeof(path), "%s/portfence", runtime_dir);
	pf_state_remove_all(path);
	snprintf(path, sizeof(path), "rm -rf '%s'", runtime_dir);
	if (system(path) != 0)
		fprintf(stderr, "could not remove %s\n", runtime_dir);
}

const char *build_path(const char *name)
{
	/* One string per name for the life of the process: callers keep
	 * several in one argv, and nothing is allocated twice. */
	static struct {
		const char *name;
		char *path;
	} cache[32];
	const char *build = getenv("PORTFENCE_BUILD");
	size_t i = 0;
	for (; i < 32 && cache[i].name; i++)
		if (strcmp(cache[i].name, name) == 0)
			return cache[i].path;
	cr_assert_lt(i, 32);
	if (asprintf(&cache[i].path, "%s/%s", build ? build : "build", name) < 0)
		cr_assert_fail("out of memory");
	cache[i].name = name;
	return cache[i].path;
}

const char *shim_preload_env(void)
{
	static char value[1024];
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	snprintf(value, sizeof(value), "LD_PRELOAD=%s%s%s", runtime && runtime[0] ? runtime : "",
		 runtime && runtime[0] ? ":" : "", build_path("libportfence.so"));
	return value;
}

void skip_if_sanitized(const char *program)
{
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	if (runtime && runtime[0])
		cr_skip_test("%s hangs with a preloaded sanitizer runtime; it runs in the normal build", program);
}

void read_all(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, len - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
}

/* name=value into env (count entries, room for it), replacing name's. */
static void env_put(char **env, size_t *count, char *entry)
{
	size_t name_len = strcspn(entry, "=");
	for (size_t i = 0; i < *count; i++)
		if (strncmp(env[i], entry, name_len) == 0 && env[i][name_len] == '=') {
			env[i] = entry;
			return;
		}
	env[(*count)++] = entry;
}

/* The child's environment, made before the fork: a child of this
 * threaded process may not allocate (another thread may have held the
 * allocator's lock when it forked; under ASan that hung a child in
 * setenv).  In a sanitizer build the runtime must precede the shim in
 * the LD_PRELOAD of a program run under `portfence run` (which keeps it
 * first); programs not built for it must not abort on leaks of their
 * own.  Servers and tools the test runs itself get no runtime.  Free
 * with free_child_env. */
static char **child_env(char *const argv[], char *const extra_env[], char **owned)
{
	extern char **environ;
	size_t count = 0, extra = 0;
	while (environ[count])
		count++;
	while (extra_env && extra_env[extra])
		extra++;
	char **env = calloc(count + extra + 3, sizeof(*env));
	cr_assert_not_null(env);
	memcpy(env, environ, count * sizeof(*env));
	for (size_t i = 0; i < extra; i++)
		env_put(env, &count, extra_env[i]);
	owned[0] = owned[1] = NULL;
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	if (!runtime || !runtime[0])
		return env;
	size_t len = strlen(argv[0]);
	bool tool = len >= 10 && strcmp(argv[0] + len - 10, "/portfence") == 0;
	/* Leaks are looked for in our tool's own commands; not where it
	 * runs a program (run, daemon's BPF-confined children), whose
	 * preloaded runtime would report the program's. */
	cr_assert(asprintf(&owned[0], "ASAN_OPTIONS=%s",
			   tool && argv[1] && leak_checked_command(argv[1]) ? "detect_leaks=1:verify_asan_link_order=0"
									     : "detect_leaks=0:verify_asan_link_order=0") > 0);
	env_put(env, &count, owned[0]);
	bool bpf = false;
	for (int i = 1; argv[i] && strcmp(argv[i], "--") != 0; i++)
		bpf = bpf || strcmp(argv[i], "--bpf") == 0;
	/* run --bpf preloads no shim: its COMMAND gets no runtime (curl
	 * with the bare ASan runtime preloaded hangs in setlocale). */
	if (tool && !bpf) {
		const char *preload = NULL;
		for (size_t i = 0; i < count; i++)
			if (strncmp(env[i], "LD_PRELOAD=", 11) == 0)
				preload = env[i] + 11;
		cr_assert(asprintf(&owned[1], "LD_PRELOAD=%s%s%s", runtime, preload ? ":" : "", preload ? preload : "") >
			  0);
		env_put(env, &count, owned[1]);
	}
	return env;
}

void run_program(struct run_result *r, char *const argv[], const char *stdin_text,
		 char *const extra_env[])
{
	char out_path[] = "/tmp/pf-out-XXXXXX", err_path[] = "/tmp/pf-err-XXXXXX",
	     in_path[] = "/tmp/pf-in-XXXXXX";
	int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path), in_fd = mkstemp(in_path);
	char *owned[2];

	cr_assert(out_fd >= 0 && err_fd >= 0 && in_fd >= 0);
	if (stdin_text && write(in_fd, stdin_text, strlen(stdin_text)) < 0)
		cr_assert_fail("stdin");
	lseek(in_fd, 0, SEEK_SET);
	char **env = child_env(argv, extra_env, owned);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* A hung program is killed rather than hanging the suite. */
		alarm(60);
		dup2(in_fd, 0);
		dup2(out_fd, 1);
		dup2(err_fd, 2);
		execvpe(argv[0], argv, env);
		_exit(127);
	}
	free(env);
	free(owned[0]);
	free(owned[1]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	read_all(out_path, r->out, sizeof(r->out));
	read_all(err_path, r->err, sizeof(r->err));
	close(out_fd);
	close(err_fd);
	close(in_fd);
	unlink(out_path);
	unlink(err_path);
	unlink(in_path);
}

/* portfence run [OPTIONS...] -c POLICY [-a APP] -- argv... into full[64]. */
static void under_argv_with(char *full[64], char *const options[], const struct sandbox *sb, const char *app,
			    char *const argv[])
{
	int n = 0;
	full[n++] = (char *)build_path("portfence");
	full[n++] = "run";
	for (int i = 0; options && options[i] && n < 32; i++)
		full[n++] = options[i];
	full[n++] = "-c";
	full[n++] = (char *)sb->policy;
	if (app) {
		full[n++] = "-a";
		full[n++] = (char *)app;
	}
	full[n++] = "--";
	for (int i = 0; argv[i] && n < 63; i++)
		full[n++] = argv[i];
	full[n] = NULL;
}

static void under_argv(char *full[64], const struct sandbox *sb, const char *app, char *const argv[])
{
	under_argv_with(full, NULL, sb, app, argv);
}

void run_under_with(struct run_result *r, char *const options[], const struct sandbox *sb, const char *app,
		    char *const argv[])
{
	char *full[64];
	under_argv_with(full, options, sb, app, argv);
	run_program(r, full, NULL, NULL);
}

uint16_t free_dns_port(void)
{
	for (;;) {
		struct sockaddr_in addr = {.sin_family = AF_INET};
		socklen_t len = sizeof(addr);
		int udp = socket(AF_INET, SOCK_DGRAM, 0), tcp = socket(AF_INET, SOCK_STREAM, 0);
		bind(udp, (struct sockaddr *)&addr, len);
		getsockname(udp, (struct sockaddr *)&addr, &len);
		bool both = bind(tcp, (struct sockaddr *)&addr, len) == 0;
		close(udp);
		close(tcp);
		if (both)
			return ntohs(addr.sin_port);
	}
}

void run_under(struct run_result *r, const struct sandbox *sb, const char *app,
	       char *const argv[], const char *stdin_text)
{
	char *full[64];
	under_argv(full, sb, app, argv);
	run_program(r, full, stdin_text, NULL);
}

pid_t daemon_spawn(const struct sandbox *sb)
{
	return daemon_spawn_to(sb, "daemon.out");
}

pid_t daemon_spawn_to(const struct sandbox *sb, const char *out_name)
{
	char out_path[256];
	snprintf(out_path, sizeof(out_path), "%s/%s", sb->dir, out_name);
	const char *tool = build_path("portfence");
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int null = open("/dev/null", O_RDONLY);
		if (fd < 0 || null < 0)
			_exit(120);
		dup2(null, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(tool, tool, "daemon", "-c", sb->policy, (char *)NULL);
		_exit(127);
	}
	return pid;
}

const char *daemon_text(const struct sandbox *sb)
{
	static char text[16384];
	char path[256];
	snprintf(path, sizeof(path), "%s/daemon.out", sb->dir);
	read_all(path, text, sizeof(text));
	return text;
}

pid_t spawn_under(const struct sandbox *sb, const char *app, char *const argv[],
		  const char *out_path)
{
	char *full[64];
	under_argv(full, sb, app, argv);
	return spawn_program(full, out_path);
}

pid_t spawn_program(char *const argv[], const char *out_path)
{
	char *owned[2];
	char **env = child_env(argv, NULL, owned);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		/* A test that fails midway leaves no program behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out, 1);
		dup2(out, 2);
		alarm(60);
		execve(argv[0], argv, env);
		_exit(127);
	}
	free(env);
	free(owned[0]);
	free(owned[1]);
	return pid;
}

int wait_child(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool await_file(const char *path, int seconds)
{
	for (int i = 0; i < seconds * 100; i++) {
		if (access(path, F_OK) == 0)
			return true;
		usleep(10000);
	}
	return access(path, F_OK) == 0;
}

json_t *audit_records(const char *log_path)
{
	json_t *records = json_array();
	FILE *f = fopen(log_path, "r");
	char line[8192];

	if (!f)
		return records;
	while (fgets(line, sizeof(line), f)) {
		json_error_t error;
		json_t *record = json_loads(line, 0, &error);
		cr_assert_not_null(record, "malformed audit line: %s (%s)", line, error.text);
		json_array_append_new(records, record);
	}
	fclose(f);
	return records;
}

json_t *audit_find(json_t *records, const char *event, int nth)
{
	size_t i;
	json_t *record;
	json_array_foreach(records, i, record) {
		const char *e = json_string_value(json_object_get(record, "event"));
		if (e && strcmp(e, event) == 0 && nth-- == 0)
			return record;
	}
	return NULL;
}

json_t *app_entry(json_t *root, const char *name)
{
	size_t i;
	json_t *entry;
	json_array_foreach(json_object_get(root, "apps"), i, entry) {
		const char *app = json_string_value(json_object_get(entry, "app"));
		if (app && strcmp(app, name) == 0)
			return entry;
	}
	return NULL;
}

uint16_t address_port(const char *address)
{
	const char *colon = address ? strrchr(address, ':') : NULL;
	return colon ? (uint16_t)atoi(colon + 1) : 0;
}

unsigned count_lines_starting(const char *text, const char *prefix)
{
	unsigned count = 0;
	size_t len = strlen(prefix);
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		count += strncmp(line, prefix, len) == 0;
	return count;
}

/* The cgroup v2 mount point (fifth field of its mountinfo line). */
static bool find_cgroup2_mount(char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096], mount_point[PATH_MAX];
	bool found = false;

	while (f && !found && fgets(line, sizeof(line), f)) {
		const char *fs = strstr(line, " - ");
		found = fs && strncmp(fs, " - cgroup2 ", 11) == 0 &&
			sscanf(line, "%*s %*s %*s %*s %4095s", mount_point) == 1;
	}
	if (f)
		fclose(f);
	if (found)
		snprintf(out, len, "%s", mount_point);
	return found;
}

static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int have_major = 0, have_minor = 0;
	if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &have_major, &have_minor) != 2)
		return false;
	return have_major > major || (have_major == major && have_minor >= minor);
}

/* A one-entry array map: the least the backend needs from bpf(2). */
static int bpf_map_probe(void)
{
	union bpf_attr attr = {.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1};
	int fd = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

const char *bpf_machine_missing(char *cgroup_mount, size_t len)
{
	static char reason[PATH_MAX + 64];
	struct statvfs fs;

	if (geteuid() != 0)
		return "the BPF backend needs root";
	if (!find_cgroup2_mount(cgroup_mount, len))
		return "no cgroup v2 mount in /proc/self/mountinfo";
	if (statvfs(cgroup_mount, &fs) == 0 && (fs.f_flag & ST_RDONLY)) {
		snprintf(reason, sizeof(reason), "the cgroup v2 mount %s is read-only here", cgroup_mount);
		return reason;
	}
	if (!kernel_at_least(6, 2))
		return "the BPF backend needs Linux >= 6.2";
	int error = bpf_map_probe();
	if (error == EPERM || error == ENOSYS) {
		snprintf(reason, sizeof(reason), "this machine refuses bpf(2): %s", strerror(error));
		return reason;
	}
	return NULL;
}

void skip_unless_bpf_machine_at(char *cgroup_mount, size_t len)
{
	const char *missing = bpf_machine_missing(cgroup_mount, len);

	if (missing)
		cr_skip_test("skipped: %s", missing);
}

void skip_unless_strace_can_attach(void)
{
	char scope[8] = "";

	cr_assert_eq(access("/usr/bin/strace", X_OK), 0, "/usr/bin/strace is missing: `make deps` installs strace");
	read_all("/proc/sys/kernel/yama/ptrace_scope", scope, sizeof(scope));
	if (atoi(scope) == 3)
		cr_skip_test("skipped: this kernel allows no ptrace attach (kernel.yama.ptrace_scope = 3)");
}

void skip_unless_bpf_machine(void)
{
	char cgroup_mount[PATH_MAX];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
}
