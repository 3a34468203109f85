/* Why one file, past the ~450-line guideline: portfence-bench re-executes
 * itself as each round's worker (--worker), so the harness (listeners,
 * rounds, medians) and every worker's timed blocks live in one program
 * whose main() dispatches both; the measures that drive them are in
 * bench/measures.c and bench/bpf_measures.c.  A benchmark, not product
 * code: a split of the worker blocks into bench/workers.c is the seam if
 * it grows. */
/* portfence-bench: what the shim costs and what it makes possible, side
 * by side with the same work done natively.  Each figure is the median of
 * interleaved rounds (native, shim, native, shim, ...); each round is a
 * fresh worker process (this program re-executed with --worker), with or
 * without the shim preloaded, timing its own loop.  Interleaving spreads
 * the noise of a shared machine evenly over both sides. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/algorithm.h"
#include "bench.h"

struct settings settings;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double program_hooks_sum(const double ns[PROGRAM_HOOKS])
{
	double sum = 0;
	for (int h = 0; h < PROGRAM_HOOKS; h++)
		sum += ns[h];
	return sum;
}

double median(double *values, int count)
{
	qsort(values, (size_t)count, sizeof(*values), compare_doubles);
	return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

/* ---- the CPU hog: one busy process per core at normal priority ---- */

static pid_t hog_pids[256];
static int hog_count;

void hog_start(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (cores < 1)
		cores = 1;
	for (hog_count = 0; hog_count < cores && hog_count < 256; hog_count++) {
		pid_t pid = fork();
		if (pid == 0) {
			volatile unsigned long spin = 0;
			for (;;)
				spin++;
		}
		if (pid < 0)
			break;
		hog_pids[hog_count] = pid;
	}
}

void hog_stop(void)
{
	for (int i = 0; i < hog_count; i++) {
		kill(hog_pids[i], SIGKILL);
		waitpid(hog_pids[i], NULL, 0);
	}
	hog_count = 0;
}

/* ---- servers in the parent (never preloaded) ---- */

static void serve(enum listener_mode mode, int conn)
{
	static const char reply[] = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
	struct pollfd cp = {.fd = conn, .events = POLLIN};
	char buf[4096];
	size_t have = 0;

	if (mode == LISTEN_GREET && write(conn, "hi\n", 3) == 3) {
		while (poll(&cp, 1, 1000) > 0 && read(conn, buf, sizeof(buf)) > 0)
			;
	} else if (mode == LISTEN_SINK) {
		int big = 8 << 20;
		setsockopt(conn, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
		while (read(conn, buf, sizeof(buf)) > 0)
			;
	} else if (mode == LISTEN_HTTP) {
		while (have < sizeof(buf) - 1 && poll(&cp, 1, 1000) > 0) {
			ssize_t n = read(conn, buf + have, sizeof(buf) - 1 - have);
			if (n <= 0)
				break;
			have += (size_t)n;
			buf[have] = '\0';
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		if (write(conn, reply, sizeof(reply) - 1) < 0)
			return;
	}
}

static void *accept_loop(void *arg)
{
	struct listener *l = arg;
	struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
	while (!atomic_load(&l->stop)) {
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int conn = accept(l->fd, NULL, NULL);
		if (conn < 0)
			continue;
		serve(l->mode, conn);
		close(conn);
	}
	return NULL;
}

void listener_start(struct listener *l, const char *addr, enum listener_mode mode)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int one = 1;

	memset(l, 0, sizeof(*l));
	l->mode = mode;
	inet_pton(AF_INET, addr, &sin.sin_addr);
	l->fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l->fd, (struct sockaddr *)&sin, len) < 0 || listen(l->fd, 4096) < 0) {
		perror("bench listener");
		exit(1);
	}
	getsockname(l->fd, (struct sockaddr *)&sin, &len);
	l->port = ntohs(sin.sin_port);
	pthread_create(&l->thread, NULL, accept_loop, l);
}

void listener_stop(struct listener *l)
{
	atomic_store(&l->stop, 1);
	pthread_join(l->thread, NULL);
	close(l->fd);
}

int udp_sink(uint16_t *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 8 << 20;

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	bind(fd, (struct sockaddr *)&sin, len);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* ---- policies and workers ---- */

void write_policy(const char *path, const char *algorithm, bool log, uint16_t lo, uint16_t hi)
{
	write_policy_logging(path, algorithm, log ? "audit.jsonl" : NULL, lo, hi);
}

void write_policy_logging(const char *path, const char *algorithm, const char *log, uint16_t lo,
			  uint16_t hi)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fprintf(f, "version = 1;\n");
	if (log)
		fprintf(f, "log = { file = \"%s/%s\"; };\n", settings.dir, log);
	fprintf(f, "state_dir = \"%s/state\";\napps = ( { name = \"bench\"; range = [ %u, %u ]; "
		   "algorithm = \"%s\"; } );\n", settings.dir, lo, hi, algorithm);
	fclose(f);
}

/* The environment a shimmed child execs with: this one, with the shim
 * preloaded (after a sanitizer build's runtime, which must come first)
 * and the bench policy.  Built before fork: a child of this threaded
 * process must not allocate (another thread may have held the
 * allocator's lock at the fork).  NULL when out of memory. */
char **shim_environ(const char *policy)
{
	static const char *const replaced[] = {"LD_PRELOAD=", "PORTFENCE_CONFIG=", "PORTFENCE_APP="};
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	size_t count = 0, n = 0;
	char *preload = NULL, *config = NULL, *app = NULL;

	while (environ[count])
		count++;
	char **env = calloc(count + 4, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < count; i++) {
		bool keep = true;
		for (size_t r = 0; r < sizeof(replaced) / sizeof(*replaced); r++)
			keep = keep && strncmp(environ[i], replaced[r], strlen(replaced[r])) != 0;
		if (keep)
			env[n++] = environ[i];
	}
	if ((runtime && runtime[0] ? asprintf(&preload, "LD_PRELOAD=%s:%s", runtime, settings.shim)
				   : asprintf(&preload, "LD_PRELOAD=%s", settings.shim)) < 0 ||
	    asprintf(&config, "PORTFENCE_CONFIG=%s", policy) < 0 || !(app = strdup("PORTFENCE_APP=bench"))) {
		free(env);
		return NULL;
	}
	env[n++] = preload;
	env[n++] = config;
	env[n++] = app;
	return env;
}

/* Frees what shim_environ made (the inherited entries are not its). */
void shim_environ_free(char **env)
{
	if (!env)
		return;
	size_t n = 0;
	while (env[n])
		n++;
	for (size_t i = n >= 3 ? n - 3 : 0; i < n; i++)
		free(env[i]);
	free(env);
}

/* Runs this program as a worker; returns what it printed as a number. */
/* Moves this process into a cgroup: its sockets are then made there, and
 * the BPF programs attached to it apply to them. */
static int join_cgroup(const char *cgroup_dir)
{
	char procs[4200];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup_dir);
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = write(fd, "0", 1) == 1 ? 0 : -1;
	close(fd);
	return rc;
}

double run_worker(bool shim, const char *policy, char *const args[], double *extra)
{
	double numbers[2] = {NAN, NAN};
	double first = run_worker_numbers(shim, policy, args, numbers);
	if (extra)
		*extra = numbers[0];
	return first;
}

double run_worker_numbers(bool shim, const char *policy, char *const args[], double extra[2])
{
	double all[WORKER_FIGURES];

	run_worker_figures(shim, policy, args, all);
	extra[0] = all[1];
	extra[1] = all[2];
	return all[0];
}

void run_worker_figures(bool shim, const char *policy, char *const args[], double out[WORKER_FIGURES])
{
	run_worker_values(shim, policy, args, out, WORKER_FIGURES);
}

void run_worker_values(bool shim, const char *policy, char *const args[], double *out, int count)
{
	int pipefd[2];
	char buf[256] = "";

	for (int i = 0; i < count; i++)
		out[i] = NAN;
	char **env = shim ? shim_environ(policy) : environ;
	if (!env || pipe(pipefd) < 0) {
		if (shim)
			shim_environ_free(env);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[20] = {settings.self, "--worker"};
		int n = 2;
		for (int i = 0; args[i] && n < 19; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		dup2(pipefd[1], 1);
		close(pipefd[0]);
		if (settings.worker_cgroup && join_cgroup(settings.worker_cgroup) < 0)
			_exit(126);
		execve(settings.self, argv, env);
		_exit(127);
	}
	if (shim)
		shim_environ_free(env);
	close(pipefd[1]);
	ssize_t got = read(pipefd[0], buf, sizeof(buf) - 1);
	close(pipefd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (got <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return;
	buf[got] = '\0';
	char *at = buf;
	for (int i = 0; i < count; i++) {
		char *end;
		double value = strtod(at, &end);
		if (end == at)
			break;
		out[i] = value;
		at = end;
	}
}

static struct sockaddr_in loopback(uint16_t port, const char *addr)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, addr, &sin.sin_addr);
	return sin;
}

/* The two sides of one worker: libc's own functions, reached through a
 * handle on libc.so.6 so that the preloaded shim is not in the way, and
 * the global symbols, which the shim interposes.
 * Blocks of each alternate inside one process, so both share its caches
 * and the machine's moment; the shim's cost is what remains. */
struct ops {
	int (*socket)(int, int, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	int (*close)(int);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*bind)(int, const struct sockaddr *, socklen_t);
};

/* libc's own definitions, found past the preloaded shim. */
static struct ops native_ops;
static const struct ops libc_ops = {socket, connect, sendto, close, setsockopt, bind};

static int load_native_ops(void)
{
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	if (!libc)
		return -1;
	native_ops.socket = (int (*)(int, int, int))dlsym(libc, "socket");
	native_ops.connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(libc, "connect");
	native_ops.sendto = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *,
					 socklen_t))dlsym(libc, "sendto");
	native_ops.close = (int (*)(int))dlsym(libc, "close");
	native_ops.setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(libc, "setsockopt");
	native_ops.bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(libc, "bind");
	return native_ops.socket && native_ops.connect && native_ops.sendto && native_ops.close &&
			       native_ops.setsockopt && native_ops.bind
		       ? 0
		       : -1;
}

typedef int (*block_fn)(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count);

/* socket + connect + close, closed with RST so that no TIME_WAIT builds
 * up on either side. */
static int block_tcp_connect(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	struct linger abort_close = {1, 0};
	(void)fd;
	for (int i = 0; i < count; i++) {
		int s = ops->socket(AF_INET, SOCK_STREAM, 0);
		if (ops->connect(s, (const struct sockaddr *)dest, sizeof(*dest)) < 0)
			return -1;
		ops->setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
		ops->close(s);
	}
	return 0;
}

static int block_udp_first_send(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	(void)fd;
	for (int i = 0; i < count; i++) {
		int s = ops->socket(AF_INET, SOCK_DGRAM, 0);
		if (ops->sendto(s, "x", 1, 0, (const struct sockaddr *)dest, sizeof(*dest)) != 1)
			return -1;
		ops->close(s);
	}
	return 0;
}

static int block_hot_udp(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	for (int i = 0; i < count; i++)
		if (ops->sendto(fd, "x", 1, 0, (const struct sockaddr *)dest, sizeof(*dest)) != 1)
			return -1;
	return 0;
}

/* send() on a connected socket is sendto() without an address. */
static int block_hot_tcp(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	(void)dest;
	for (int i = 0; i < count; i++)
		if (ops->sendto(fd, "x", 1, MSG_NOSIGNAL, NULL, 0) != 1)
			return -1;
	return 0;
}

/* The calling thread's CPU time (user and system): where the BPF
 * programs run (the cgroup hooks in the system call, loopback's softirq
 * work in its context), without the waits for the server that make a
 * wall-clock block noisy. */
static double thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* What a block's time is read on: the wall clock, or with --clock cpu
 * the worker thread's own CPU time, which leaves out the time other work
 * on a busy machine kept it waiting. */
static double block_clock_ns(void)
{
	static int cpu = -1;

	if (cpu < 0) {
		const char *clock = getenv("PORTFENCE_BENCH_CLOCK");
		cpu = clock && strcmp(clock, "cpu") == 0;
	}
	return cpu ? thread_cpu_ns() : now_ns();
}

/* Alternating blocks of native (libc's own functions) and other (the
 * interposed symbols through ops, or work of its own); prints the
 * medians of native and other ns/op and the median of the per-pair
 * ratios.  With side_cgroups, the process moves into side_cgroups[0]
 * before each native block and [1] before each other one, outside the
 * timing (the BPF backend's programs apply by cgroup). */
static int paired_two(block_fn native, block_fn other, const struct ops *other_ops,
		      const struct sockaddr_in *dest, int fd, int count, int pairs,
		      const char *const side_cgroups[2])
{
	double native_ns[256], shim[256], ratio[256], added[256];
	if (pairs > 256)
		pairs = 256;
	if (side_cgroups && join_cgroup(side_cgroups[1]) < 0)
		return 1;
	if (load_native_ops() < 0 || other(other_ops ? other_ops : &native_ops, dest, fd, count / 4) < 0)
		return 1; /* the warm-up block also loads the policy */
	if (!other_ops)
		other_ops = &native_ops;
	for (int p = 0; p < pairs; p++) {
		for (int side = 0; side < 2; side++) {
			bool shimmed = (p + side) % 2; /* alternate which side goes first */
			if (side_cgroups && join_cgroup(side_cgroups[shimmed]) < 0)
				return 1;
			double start = block_clock_ns();
			if ((shimmed ? other(other_ops, dest, fd, count) : native(&native_ops, dest, fd, count)) < 0)
				return 1;
			double per_op = (block_clock_ns() - start) / count;
			if (shimmed)
				shim[p] = per_op;
			else
				native_ns[p] = per_op;
		}
		ratio[p] = shim[p] / native_ns[p];
		added[p] = shim[p] - native_ns[p];
	}
	if (side_cgroups)
		join_cgroup(side_cgroups[0]);
	/* native, other, ratio, and what other adds (median of the pairs'
	 * differences: the pairs run back to back, so the noise of a shared
	 * machine cancels better than between the two medians). */
	printf("%.1f %.1f %.4f %.1f\n", median(native_ns, pairs), median(shim, pairs), median(ratio, pairs),
	       median(added, pairs));
	return 0;
}

/* The BPF backend against native in one process: blocks alternate
 * between a confined cgroup and an unconfined sibling, the process moving
 * between them outside the timing. */
static int worker_cgroup_paired(const char *confined, const char *native, uint16_t port, int count,
				int pairs)
{
	struct sockaddr_in dest = loopback(port, "127.0.0.1");
	const char *const side_cgroups[2] = {native, confined};

	return paired_two(block_tcp_connect, block_tcp_connect, &libc_ops, &dest, -1, count, pairs,
			  side_cgroups);
}

/* ---- the BPF backend, native and the floor, with TIME_WAIT or without ---- */

/* How the three sides of cgroup_three close: with RST (no TIME_WAIT),
 * or with FIN, the client first (its 4-tuple then in TIME_WAIT, against
 * a server that reads to the end before it closes). */
static bool three_time_wait;
static struct sockaddr_in three_floor_source;	/* the floor's source address */
static uint16_t three_floor_lo, three_floor_hi, three_floor_next;

/* With TIME_WAIT, the client reads the server's greeting first: the
 * server (one thread, serving in turn) has then closed every earlier
 * connection or is about to, so their 4-tuples reach TIME_WAIT rather
 * than wait in FIN_WAIT2 for a server that lags behind. */
static int close_as_set(int s)
{
	struct linger abort_close = {1, 0};
	char greeting[8];
	int rc = 0;
	if (!three_time_wait)
		setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
	else if (read(s, greeting, sizeof(greeting)) <= 0)
		rc = -1;
	close(s);
	return rc;
}

static int block_connect_close(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	(void)fd;
	for (int i = 0; i < count; i++) {
		int s = ops->socket(AF_INET, SOCK_STREAM, 0);
		if (ops->connect(s, (const struct sockaddr *)dest, sizeof(*dest)) < 0) {
			fprintf(stderr, "portfence-bench: connect %d of %d: %s\n", i, count, strerror(errno));
			return -1;
		}
		if (close_as_set(s) < 0)
			return -1;
	}
	return 0;
}

/* The floor: SO_REUSEADDR, bind to the source and the next port of the
 * floor's range (the one used longest ago, in TIME_WAIT once the range
 * is full), connect; the next port when a 4-tuple is still taken. */
static int block_floor(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	int one = 1, span = three_floor_hi - three_floor_lo + 1;
	(void)fd;
	for (int i = 0; i < count; i++) {
		int s = -1, tries = 0;
		for (; tries < span; tries++) {
			struct sockaddr_in local = three_floor_source;
			local.sin_port = htons(three_floor_next);
			three_floor_next = three_floor_next >= three_floor_hi ? three_floor_lo : three_floor_next + 1;
			if (s < 0 && ((s = ops->socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
				      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0))
				return -1;
			if (bind(s, (const struct sockaddr *)&local, sizeof(local)) < 0)
				continue;
			if (ops->connect(s, (const struct sockaddr *)dest, sizeof(*dest)) == 0)
				break;
			ops->close(s);	/* a bound socket cannot be bound again */
			s = -1;
		}
		if (tries == span) {
			fprintf(stderr, "portfence-bench: the floor's range is taken: %s\n", strerror(errno));
			return -1;
		}
		if (close_as_set(s) < 0)
			return -1;
	}
	return 0;
}

/* Native with the app's own span: the kernel's own port choice (no
 * bind) with the network namespace's ip_local_port_range set to a span
 * as small as the app's, filled with TIME_WAIT the same way.  The
 * kernel reuses a TIME_WAIT 4-tuple for such a connect only with
 * tcp_tw_reuse (2, the default: loopback only) and only once
 * tcp_tw_reuse_delay (default 1000 ms) has passed since it entered
 * TIME_WAIT; at this rate a 100-port span is gone round in a few ms, so
 * the side sets the delay to its least (1 ms) and, off loopback,
 * tcp_tw_reuse to 1.  The settings hold only while its blocks run; the
 * other sides bind their port before the connect, which reuses a
 * TIME_WAIT 4-tuple whatever the two say.  A kernel without the delay
 * setting (older ones: one second, fixed) keeps its own; where the side
 * cannot run, its figures are missing (nan) and the others stand. */
struct same_range {
	char span[32], reuse[8];
	char saved_span[32], saved_reuse[8], saved_delay[16];	/* saved_delay "": no such setting */
	bool broken;		/* the side could not run */
	int defaults_failed;	/* connects refused with the kernel's defaults */
	int failed;		/* EADDRNOTAVAIL in the timed blocks, retried */
};
static struct same_range same;

#define SYSCTL_RANGE "/proc/sys/net/ipv4/ip_local_port_range"
#define SYSCTL_REUSE "/proc/sys/net/ipv4/tcp_tw_reuse"
#define SYSCTL_DELAY "/proc/sys/net/ipv4/tcp_tw_reuse_delay"

static int sysctl_write(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, value, strlen(value));
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : -1;
}

static int sysctl_read(const char *path, char *value, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, value, size - 1);
	close(fd);
	if (n <= 0)
		return -1;
	value[n] = '\0';
	value[strcspn(value, "\n")] = '\0';
	return 0;
}

/* The span (and, with reuse_settings, the reuse settings) on, or the
 * saved ones back. */
static int same_range_settings(bool on, bool reuse_settings)
{
	bool delay = same.saved_delay[0] != '\0';
	if (!on)
		return sysctl_write(SYSCTL_RANGE, same.saved_span) | sysctl_write(SYSCTL_REUSE, same.saved_reuse) |
		       (delay ? sysctl_write(SYSCTL_DELAY, same.saved_delay) : 0);
	if (sysctl_write(SYSCTL_RANGE, same.span) < 0)
		return -1;
	if (!reuse_settings)
		return 0;
	return sysctl_write(SYSCTL_REUSE, same.reuse) | (delay ? sysctl_write(SYSCTL_DELAY, "1") : 0);
}

/* Plain connects as block_connect_close makes them; a connect the
 * kernel refuses with EADDRNOTAVAIL (no reusable 4-tuple in the span)
 * is counted in *failed and, with retry, made again (its cost in the
 * block's), else given up. */
static int block_connect_counted(const struct ops *ops, const struct sockaddr_in *dest, int count, int *failed,
				 bool retry)
{
	for (int i = 0; i < count; i++) {
		int s = ops->socket(AF_INET, SOCK_STREAM, 0);
		if (ops->connect(s, (const struct sockaddr *)dest, sizeof(*dest)) < 0) {
			int error = errno;
			ops->close(s);
			if (error != EADDRNOTAVAIL || ++*failed > 100 * count) {
				fprintf(stderr, "portfence-bench: connect %d of %d: %s\n", i, count, strerror(error));
				return -1;
			}
			i -= retry;
			continue;
		}
		if (close_as_set(s) < 0)
			return -1;
	}
	return 0;
}

/* The same-range side's block (settings on, connects, settings back),
 * or -1 once it has failed: the side is then given up. */
static int block_same_range(const struct sockaddr_in *dest, int count, int *failed, bool reuse_settings)
{
	if (same.broken)
		return -1;
	int rc = same_range_settings(true, reuse_settings);
	if (rc == 0)
		rc = block_connect_counted(&native_ops, dest, count, failed, reuse_settings);
	if (same_range_settings(false, reuse_settings) < 0 || rc < 0) {
		same_range_settings(false, true);
		same.broken = true;
		return -1;
	}
	return 0;
}

/* The programs' own ns per connect, hook by hook (PROGRAM_HOOKS; NAN
 * when the kernel's statistics cannot be had): one block of connects
 * in cgroup after the timed pairs, with the kernel's run-time
 * statistics on; bare: the bench's empty programs' (the bare hooks'
 * cgroup), else portfence's.  The statistics cost each program run two
 * clock reads, so they are never on while a block is timed; the empty
 * programs' figure is mostly that cost.  Each figure includes whatever
 * the program calls (bpf_bind: the kernel's bind). */
static void programs_per_connect(const char *cgroup, bool bare, const struct sockaddr_in *dest, int count,
				 double per_connect[PROGRAM_HOOKS])
{
	double before[PROGRAM_HOOKS], after[PROGRAM_HOOKS];
	int stats = program_stats_on();
	bool ran = stats >= 0 && join_cgroup(cgroup) == 0 && program_run_ns(before, bare) == 0 &&
		   block_connect_close(&native_ops, dest, -1, count) == 0 && program_run_ns(after, bare) == 0;

	if (stats >= 0)
		close(stats);
	for (int h = 0; h < PROGRAM_HOOKS; h++)
		per_connect[h] = ran ? (after[h] - before[h]) / count : NAN;
}

/* Native (plain connects in the native cgroup), BPF (the same in the
 * confined one), the floor (in the native cgroup) and native with the
 * app's span (same_range), blocks taking turns in one process, the
 * order rotating from pair to pair.  Prints native, BPF and floor ns
 * per connect, the medians of the pairs' differences BPF - native,
 * floor - native, BPF - floor; then same-range native ns, BPF - it,
 * it - native, and how many connects the kernel refused in the span:
 * with its defaults (once, after the fill), and with the side's
 * settings (in the timed blocks); then BPF - native and BPF - floor in
 * the thread's CPU time, whatever the block clock.  Last, with a fifth
 * cgroup (argv[12], "-" for none) whose hooks are bare (they let every
 * socket proceed, bpf_measures.c): its connects - native, wall and CPU,
 * and BPF - them in CPU: the hooks' own cost, and what the programs'
 * bodies add to it; and the floor - native in CPU.  Then the programs'
 * own ns per connect, hook by hook, and the bare hooks' empty programs'
 * in all (programs_per_connect). */
enum three_side { SIDE_NATIVE, SIDE_BPF, SIDE_FLOOR, SIDE_SAME, SIDE_HOOKS, SIDES };

/* The three-way worker's setting, from its arguments (the comment above). */
struct three {
	const char *cgroup[SIDES];	/* each side's cgroup; hooks NULL when there is none */
	struct sockaddr_in dest;
	int count, pairs, sides;
};

/* The median over the pairs of x - minus (minus NULL: of x), leaving
 * both as they are. */
static double median_less(const double *x, const double *minus, int pairs)
{
	double values[256];
	for (int p = 0; p < pairs; p++)
		values[p] = x[p] - (minus ? minus[p] : 0);
	return median(values, pairs);
}

/* Reads the arguments, saves the sysctls the same-range side changes,
 * and warms up: with TIME_WAIT each range filled with it (the confined
 * side's, the floor's and the same-range side's, three times over).
 * Then one round of the same-range span with the kernel's own reuse
 * settings: what they refuse is counted.  0, or -1 when it failed. */
static int three_setup(char **argv, struct three *t)
{
	const char *hooks = argv[12] && strcmp(argv[12], "-") != 0 ? argv[12] : NULL;

	*t = (struct three){.cgroup = {argv[1], argv[0], argv[1], argv[1], hooks},
			    .dest = loopback((uint16_t)atoi(argv[3]), argv[2]), .count = atoi(argv[4]),
			    .pairs = atoi(argv[5]), .sides = hooks ? SIDES : SIDES - 1};
	three_time_wait = strcmp(argv[6], "time_wait") == 0;
	three_floor_source = loopback(0, argv[7]);
	three_floor_lo = three_floor_next = (uint16_t)atoi(argv[8]);
	three_floor_hi = (uint16_t)atoi(argv[9]);
	snprintf(same.span, sizeof(same.span), "%s %s", argv[10], argv[11]);
	/* tcp_tw_reuse 2 reuses only a loopback 4-tuple's TIME_WAIT */
	snprintf(same.reuse, sizeof(same.reuse), "%s", strncmp(argv[2], "127.", 4) == 0 ? "2" : "1");
	if (t->pairs > 256)
		t->pairs = 256;
	if (load_native_ops() < 0)
		return -1;
	same.broken = sysctl_read(SYSCTL_RANGE, same.saved_span, sizeof(same.saved_span)) < 0 ||
		      sysctl_read(SYSCTL_REUSE, same.saved_reuse, sizeof(same.saved_reuse)) < 0;
	if (sysctl_read(SYSCTL_DELAY, same.saved_delay, sizeof(same.saved_delay)) < 0)
		same.saved_delay[0] = '\0';
	int span = three_floor_hi - three_floor_lo + 1, fill = three_time_wait ? 3 * span : t->count / 4;
	int unused = 0;
	if (join_cgroup(t->cgroup[SIDE_BPF]) < 0 || block_connect_close(&native_ops, &t->dest, -1, fill) < 0 ||
	    join_cgroup(t->cgroup[SIDE_NATIVE]) < 0 || block_floor(&native_ops, &t->dest, -1, fill) < 0)
		return -1;
	if (block_same_range(&t->dest, fill, &unused, true) == 0)
		block_same_range(&t->dest, span, &same.defaults_failed, false);
	return block_connect_close(&native_ops, &t->dest, -1, t->count / 4) < 0 ? -1 : 0;
}

/* One timed block of a side: ns per connect, wall and the thread's CPU,
 * in *wall and *cpu (NAN when the same-range side cannot run: its
 * sysctls; it is then left out from here on).  0, or -1 when it failed. */
static int three_block(const struct three *t, enum three_side side, double *wall, double *cpu)
{
	*wall = *cpu = NAN;
	if (join_cgroup(t->cgroup[side]) < 0)
		return -1;
	/* the settings' writes fall outside the timing */
	if (side == SIDE_SAME && (same.broken || same_range_settings(true, true) < 0)) {
		same.broken = true;
		return 0;
	}
	double start = block_clock_ns(), cpu_start = thread_cpu_ns();
	int rc = side == SIDE_FLOOR  ? block_floor(&native_ops, &t->dest, -1, t->count)
		 : side == SIDE_SAME ? block_connect_counted(&native_ops, &t->dest, t->count, &same.failed, true)
				     : block_connect_close(&native_ops, &t->dest, -1, t->count);
	double took = block_clock_ns() - start;
	*cpu = (thread_cpu_ns() - cpu_start) / t->count;
	if (side == SIDE_SAME && (same_range_settings(false, true) < 0 || rc < 0)) {
		same_range_settings(false, true);
		same.broken = true;
		*wall = NAN;
		return 0;
	}
	*wall = took / t->count;
	return rc < 0 ? -1 : 0;
}

/* The worker's line: the figures the comment above lists, in order. */
static void three_print(const struct three *t, double ns[SIDES][256], double cpu[SIDES][256])
{
	int n = t->pairs;
	bool same_ran = !same.broken, hooks = t->cgroup[SIDE_HOOKS] != NULL;
	double programs[PROGRAM_HOOKS], bare[PROGRAM_HOOKS], bare_sum = NAN;

	programs_per_connect(t->cgroup[SIDE_BPF], false, &t->dest, t->count, programs);
	if (hooks) {
		programs_per_connect(t->cgroup[SIDE_HOOKS], true, &t->dest, t->count, bare);
		bare_sum = program_hooks_sum(bare);
	}
	join_cgroup(t->cgroup[SIDE_NATIVE]);
	printf("%.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %.1f %.0f %.0f %.1f %.1f %.1f %.1f %.1f %.1f",
	       median_less(ns[SIDE_NATIVE], NULL, n), median_less(ns[SIDE_BPF], NULL, n),
	       median_less(ns[SIDE_FLOOR], NULL, n), median_less(ns[SIDE_BPF], ns[SIDE_NATIVE], n),
	       median_less(ns[SIDE_FLOOR], ns[SIDE_NATIVE], n), median_less(ns[SIDE_BPF], ns[SIDE_FLOOR], n),
	       same_ran ? median_less(ns[SIDE_SAME], NULL, n) : NAN,
	       same_ran ? median_less(ns[SIDE_BPF], ns[SIDE_SAME], n) : NAN,
	       same_ran ? median_less(ns[SIDE_SAME], ns[SIDE_NATIVE], n) : NAN,
	       same_ran ? same.defaults_failed : NAN, same_ran ? same.failed : NAN,
	       median_less(cpu[SIDE_BPF], cpu[SIDE_NATIVE], n), median_less(cpu[SIDE_BPF], cpu[SIDE_FLOOR], n),
	       hooks ? median_less(ns[SIDE_HOOKS], ns[SIDE_NATIVE], n) : NAN,
	       hooks ? median_less(cpu[SIDE_HOOKS], cpu[SIDE_NATIVE], n) : NAN,
	       hooks ? median_less(cpu[SIDE_BPF], cpu[SIDE_HOOKS], n) : NAN,
	       median_less(cpu[SIDE_FLOOR], cpu[SIDE_NATIVE], n));
	for (int h = 0; h < PROGRAM_HOOKS; h++)
		printf(" %.1f", programs[h]);
	printf(" %.1f\n", bare_sum);
}

static int worker_cgroup_three(char **argv)
{
	static double ns[SIDES][256], cpu[SIDES][256];
	struct three t;

	if (three_setup(argv, &t) < 0)
		return 1;
	for (int p = 0; p < t.pairs; p++) {
		ns[SIDE_HOOKS][p] = cpu[SIDE_HOOKS][p] = NAN;
		for (int k = 0; k < t.sides; k++) {
			enum three_side side = (enum three_side)((p + k) % t.sides);	/* the order rotates */
			if (three_block(&t, side, &ns[side][p], &cpu[side][p]) < 0)
				return 1;
		}
	}
	three_print(&t, ns, cpu);
	return 0;
}

static int paired_blocks(block_fn block, const struct sockaddr_in *dest, int fd, int count, int pairs)
{
	return paired_two(block, block, &libc_ops, dest, fd, count, pairs, NULL);
}

/* ---- the floor: the system calls a shimmed connect makes, by hand ---- */
static int by_hand_log = -1;	/* the record's file, or -1: no record */
static uint16_t by_hand_port = 61000;

/* What the shim does for a connect with a user-space algorithm, and
 * nothing else: SO_REUSEADDR, bind to the concrete source address and a
 * range port, connect, and (with a log) one write of a record-sized
 * line.  No user-space work: the kernel's share of the shim's cost. */
static int block_tcp_by_hand(const struct ops *ops, const struct sockaddr_in *dest, int fd, int count)
{
	static const char record[] =
		"{\"ts\":\"2026-11-21T10:00:00.123456Z\",\"event\":\"assign\",\"app\":\"bench\","
		"\"pid\":4242,\"exe\":\"/work/portfence/build/portfence-bench\",\"proto\":\"tcp\","
		"\"family\":\"ipv4\",\"local\":\"127.0.0.1:61023\",\"remote\":\"127.0.0.1:41234\","
		"\"algorithm\":\"double-hash\",\"attempts\":1,\"result\":\"ok\"}\n";
	struct linger abort_close = {1, 0};
	int one = 1;
	(void)fd;
	for (int i = 0; i < count; i++) {
		int s = ops->socket(AF_INET, SOCK_STREAM, 0), bound;
		struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr = dest->sin_addr};
		if (ops->setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
			return -1;
		/* A port another program holds (outside a private netns) is
		 * skipped, as the shim's memory would skip it. */
		for (int tries = 0; tries < 1000; tries++) {
			local.sin_port = htons(by_hand_port);
			by_hand_port = by_hand_port == 61999 ? 61000 : by_hand_port + 1;
			bound = ops->bind(s, (const struct sockaddr *)&local, sizeof(local));
			if (bound == 0 || errno != EADDRINUSE)
				break;
		}
		if (bound < 0 || ops->connect(s, (const struct sockaddr *)dest, sizeof(*dest)) < 0)
			return -1;
		if (by_hand_log >= 0 && write(by_hand_log, record, sizeof(record) - 1) < 0)
			return -1;
		ops->setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
		ops->close(s);
	}
	return 0;
}

/* tcp_connect in a shimmed worker: blocks of native, the floor (the
 * shim's system calls made natively, no record) and the shim, their
 * order rotating from triple to triple.  Prints paired_two's four
 * figures, then the floor's median ns and the median of the triples'
 * shim - floor differences: what the shim adds over the floor, read
 * from blocks run back to back in one process rather than from two
 * workers' figures. */
static int paired_with_floor(const struct sockaddr_in *dest, int count, int triples)
{
	double ns[3][256], ratio[256], added[256], over_floor[256];
	if (triples > 256)
		triples = 256;
	if (load_native_ops() < 0 || block_tcp_connect(&libc_ops, dest, -1, count / 4) < 0 ||
	    block_tcp_by_hand(&native_ops, dest, -1, count / 4) < 0)
		return 1; /* the warm-up blocks also load the policy */
	for (int t = 0; t < triples; t++) {
		for (int k = 0; k < 3; k++) {
			int side = (t + k) % 3; /* 0 native, 1 floor, 2 shim */
			double start = block_clock_ns();
			int rc = side == 1 ? block_tcp_by_hand(&native_ops, dest, -1, count)
					   : block_tcp_connect(side ? &libc_ops : &native_ops, dest, -1, count);
			if (rc < 0)
				return 1;
			ns[side][t] = (block_clock_ns() - start) / count;
		}
		ratio[t] = ns[2][t] / ns[0][t];
		added[t] = ns[2][t] - ns[0][t];
		over_floor[t] = ns[2][t] - ns[1][t];
	}
	printf("%.1f %.1f %.4f %.1f %.1f %.1f\n", median(ns[0], triples), median(ns[2], triples),
	       median(ratio, triples), median(added, triples), median(ns[1], triples), median(over_floor, triples));
	return 0;
}

/* log: the record's file, or "-" for none. */
static int worker_by_hand(uint16_t port, int count, int pairs, const char *log)
{
	struct sockaddr_in dest = loopback(port, "127.0.0.1");

	if (strcmp(log, "-") != 0) {
		by_hand_log = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (by_hand_log < 0)
			return 1;
	}
	return paired_two(block_tcp_connect, block_tcp_by_hand, NULL, &dest, -1, count, pairs, NULL);
}

/* held connections to dest, opened through the interposed connect (in a
 * shim worker they take range ports) and kept open, so that the timed
 * connects find that much of the range busy. */
static int *hold_connections(const struct sockaddr_in *dest, int held)
{
	int *fds = calloc((size_t)held, sizeof(int));
	for (int i = 0; fds && i < held; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fds[i], (const struct sockaddr *)dest, sizeof(*dest)) < 0) {
			fprintf(stderr, "portfence-bench: holding connection %d: %s\n", i, strerror(errno));
			return NULL;
		}
	}
	return fds;
}

/* With RST, so that no TIME_WAIT is left for the next worker. */
static void release_connections(int *fds, int held)
{
	struct linger abort_close = {1, 0};
	for (int i = 0; i < held; i++) {
		setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
		close(fds[i]);
	}
	free(fds);
}

static int tcp_connect_with_held(const struct sockaddr_in *dest, int count, int pairs, int held)
{
	int *fds = hold_connections(dest, held);
	if (!fds)
		return 1;
	int rc = paired_blocks(block_tcp_connect, dest, -1, count, pairs);
	release_connections(fds, held);
	return rc;
}

static int worker_paired(const char *name, uint16_t port, int count, int pairs, int held)
{
	struct sockaddr_in dest = loopback(port, "127.0.0.1");
	int fd = -1;

	if (strcmp(name, "tcp_connect") == 0)
		return held > 0 ? tcp_connect_with_held(&dest, count, pairs, held)
				: paired_with_floor(&dest, count, pairs);
	if (strcmp(name, "udp_first_send") == 0)
		return paired_blocks(block_udp_first_send, &dest, -1, count, pairs);
	if (strcmp(name, "hot_udp") == 0) {
		fd = socket(AF_INET, SOCK_DGRAM, 0);
		/* the first send binds it (through the shim); then it is hot */
		if (sendto(fd, "x", 1, 0, (struct sockaddr *)&dest, sizeof(dest)) != 1)
			return 1;
		return paired_blocks(block_hot_udp, &dest, fd, count, pairs);
	}
	if (strcmp(name, "hot_tcp") == 0) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&dest, sizeof(dest)) < 0)
			return 1;
		return paired_blocks(block_hot_tcp, &dest, fd, count, pairs);
	}
	return 2;
}

/* ---- contention: threads and processes of one app at once ---- */

struct contender {
	struct sockaddr_in dest;
	int count;
	atomic_int *failed;
};

static void *contend_thread(void *arg)
{
	struct contender *c = arg;
	if (block_tcp_connect(&libc_ops, &c->dest, -1, c->count) < 0)
		atomic_fetch_add(c->failed, 1);
	return NULL;
}

/* threads threads, each count connects (through the interposed symbols:
 * in a shim worker, the shim; else libc's own). */
static int contend_threads(uint16_t port, int threads, int count)
{
	pthread_t ids[64];
	struct contender c = {.dest = loopback(port, "127.0.0.1"), .count = count};
	atomic_int failed = 0;

	c.failed = &failed;
	if (threads > 64)
		threads = 64;
	for (int t = 0; t < threads; t++)
		if (pthread_create(&ids[t], NULL, contend_thread, &c) != 0)
			return -1;
	for (int t = 0; t < threads; t++)
		pthread_join(ids[t], NULL);
	return failed ? -1 : 0;
}

/* contend PROCESSES THREADS PORT COUNT: PROCESSES processes (forked:
 * one app, one shared segment under the shim) of THREADS threads each,
 * every thread COUNT connects, all at once; prints the wall ns per
 * connect over the whole. */
static int worker_contend(int processes, int threads, uint16_t port, int count)
{
	pid_t pids[16];
	double start = now_ns();
	int failed = 0;

	if (processes > 16)
		processes = 16;
	for (int p = 0; p < processes; p++) {
		pids[p] = fork();
		if (pids[p] == 0)
			_exit(contend_threads(port, threads, count) < 0 ? 1 : 0);
		if (pids[p] < 0)
			return 1;
	}
	for (int p = 0; p < processes; p++) {
		int status;
		waitpid(pids[p], &status, 0);
		failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	if (failed)
		return 1;
	printf("%.1f\n", (now_ns() - start) / ((double)processes * threads * count));
	return 0;
}

/* Connections per second for a while, the client closing first after the
 * server's greeting; prints "rate failures". */
static int worker_churn(uint16_t port, double seconds)
{
	struct sockaddr_in dest = loopback(port, "127.0.0.1");
	long done = 0, failures = 0;
	double start = now_ns(), end = start + seconds * 1e9;
	char greeting[8];

	while (now_ns() < end) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&dest, sizeof(dest)) < 0 ||
		    read(fd, greeting, sizeof(greeting)) <= 0)
			failures++;
		close(fd);
		done++;
	}
	printf("%.1f %ld\n", (double)(done - failures) / ((now_ns() - start) / 1e9), failures);
	return 0;
}

/* cycles connect/close cycles, the client closing first (after the
 * server's greeting when greet, else at once, against a server that
 * reads to the end and closes); prints "stalls failures worst_ms", a
 * stall being a connect() of a second or more (a SYN retransmitted). */
static int worker_stalls(uint16_t port, int cycles, bool greet)
{
	struct sockaddr_in dest = loopback(port, "127.0.0.1");
	long stalls = 0, failures = 0;
	double worst = 0;
	char greeting[8];

	for (int i = 0; i < cycles; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		double start = now_ns();
		int rc = connect(fd, (struct sockaddr *)&dest, sizeof(dest));
		double took = now_ns() - start;
		stalls += took >= 1e9;
		worst = took > worst ? took : worst;
		if (rc < 0 || (greet && read(fd, greeting, sizeof(greeting)) <= 0))
			failures++;
		close(fd);
	}
	printf("%ld %ld %.1f\n", stalls, failures, worst / 1e6);
	return 0;
}

/* N concurrent connections round-robin over destinations; with
 * plain_bind, each is bound to a range port first without SO_REUSEADDR,
 * as a program confining itself naively would.  Prints the count. */
static int worker_capacity(int count, int plain_bind, uint16_t lo, uint16_t hi, char **dests, int ndest)
{
	int established = 0;
	int *fds = calloc((size_t)count, sizeof(int));

	for (int i = 0; i < count; i++) {
		char host[64];
		unsigned port;
		sscanf(dests[i % ndest], "%63[^:]:%u", host, &port);
		struct sockaddr_in dest = loopback((uint16_t)port, host);
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		bool bound = !plain_bind;
		for (unsigned p = lo; plain_bind && p <= hi && !bound; p++) {
			struct sockaddr_in local = loopback((uint16_t)p, "0.0.0.0");
			bound = bind(fds[i], (struct sockaddr *)&local, sizeof(local)) == 0;
		}
		if (bound && connect(fds[i], (struct sockaddr *)&dest, sizeof(dest)) == 0)
			established++;
	}
	printf("%d\n", established);
	for (int i = 0; i < count; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

static int worker_main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[0], "paired") == 0)
		return worker_paired(argv[1], (uint16_t)atoi(argv[2]), atoi(argv[3]), atoi(argv[4]),
				     argc >= 6 ? atoi(argv[5]) : 0);
	if (argc >= 6 && strcmp(argv[0], "cgroup_paired") == 0)
		return worker_cgroup_paired(argv[1], argv[2], (uint16_t)atoi(argv[3]), atoi(argv[4]),
					    atoi(argv[5]));
	if (argc >= 14 && strcmp(argv[0], "cgroup_three") == 0)
		return worker_cgroup_three(argv + 1);
	if (argc >= 5 && strcmp(argv[0], "by_hand") == 0)
		return worker_by_hand((uint16_t)atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), argv[4]);
	if (argc >= 5 && strcmp(argv[0], "contend") == 0)
		return worker_contend(atoi(argv[1]), atoi(argv[2]), (uint16_t)atoi(argv[3]), atoi(argv[4]));
	if (argc >= 3 && strcmp(argv[0], "stalls") == 0)
		return worker_stalls((uint16_t)atoi(argv[1]), atoi(argv[2]),
				     argc < 4 || strcmp(argv[3], "quiet") != 0);
	if (argc >= 3 && strcmp(argv[0], "churn") == 0)
		return worker_churn((uint16_t)atoi(argv[1]), atof(argv[2]));
	if (argc >= 6 && strcmp(argv[0], "capacity") == 0)
		return worker_capacity(atoi(argv[1]), atoi(argv[2]), (uint16_t)atoi(argv[3]),
				       (uint16_t)atoi(argv[4]), argv + 5, argc - 5);
	fprintf(stderr, "portfence-bench: unknown worker\n");
	return 2;
}

static void resolve_paths(const char *argv0)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		perror("readlink");
		exit(1);
	}
	self[n] = '\0';
	settings.self = strdup(self);
	char *slash = strrchr(self, '/');
	*slash = '\0';
	if (asprintf(&settings.shim, "%s/libportfence.so", self) < 0 ||
	    asprintf(&settings.tool, "%s/portfence", self) < 0)
		exit(1);
	(void)argv0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && strcmp(argv[1], "--worker") == 0)
		return worker_main(argc - 2, argv + 2);
	resolve_paths(argv[0]);
	settings.out = "build/bench.json";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			settings.quick = true;
		else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
			settings.out = argv[++i];
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			settings.only = argv[++i];
		else if (strcmp(argv[i], "--variants") == 0 && i + 1 < argc)
			settings.variants = argv[++i];
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0)
			settings.workers = atoi(argv[++i]);
		else if (strcmp(argv[i], "--pairs") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0)
			settings.pairs = atoi(argv[++i]);
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0)
			settings.count = atoi(argv[++i]);
		else if (strcmp(argv[i], "--compare-shim") == 0 && i + 1 < argc)
			settings.compare_shim = argv[++i];
		else if (strcmp(argv[i], "--clock") == 0 && i + 1 < argc &&
			 (strcmp(argv[i + 1], "cpu") == 0 || strcmp(argv[i + 1], "wall") == 0))
			setenv("PORTFENCE_BENCH_CLOCK", argv[++i], 1);
		else {
			fprintf(stderr, "usage: portfence-bench [--quick] [--out FILE] [--only MEASURE,...] "
				"[--variants VARIANT,...] [--workers N] [--pairs N] [--count N] [--clock wall|cpu] "
				"[--compare-shim LIBPORTFENCE.SO]\n");
			return 2;
		}
	}
	snprintf(settings.dir, sizeof(settings.dir), "/tmp/portfence-bench-XXXXXX");
	if (!mkdtemp(settings.dir)) {
		perror("mkdtemp");
		return 1;
	}
	int rc = run_all_measures();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "%s/state", settings.dir);
	pf_state_remove_all(cmd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", settings.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "portfence-bench: could not remove %s\n", settings.dir);
	return rc;
}
