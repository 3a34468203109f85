/* Why one file, past the ~450-line guideline: the BPF backend's measures
 * share one set-up (a policy, a cgroup, the daemon started and waited
 * for) in struct bpf_bench; each measure is a
 * short function over it.  A benchmark, not product code. */
/* The BPF backend's section: socket + connect + close confined by the
 * programs against native, blocks alternating in one process (log on and
 * off); churn through 10 and 100 ports; and how long an attach takes.
 * The programs are attached by the tool itself (`portfence daemon`, which
 * also drains the records, and `portfence attach`).  bpf_burst, a measure
 * of its own: whether a burst of records under the daemon loses any. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "tests/helpers/birth.h"
#include "kernel/bpf_progs.h"
#include "kernel/cgroup.h"
#include "kernel/pins.h"

struct bpf_bench {
	char tool[PATH_MAX];
	char base_relative[128], base[PATH_MAX - 16];
	char confined[PATH_MAX], native[PATH_MAX], attach_target[PATH_MAX];
	FILE *json;
	bool first;
	char err_path[PATH_MAX];	/* the tool's stderr, kept for the reason */
	char reason[512];	/* why the last measure could not run */
};

static double seconds_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static const char *why_not(void)
{
	char mount_point[PATH_MAX];
	if (geteuid() != 0)
		return "not root";
	if (pf_cgroup2_mount(mount_point, sizeof(mount_point)) < 0)
		return "no cgroup v2 hierarchy";
	return NULL;
}

static void write_bpf_policy(const struct bpf_bench *b, const char *path, bool log, int lo, int hi,
			     bool with_cgroup)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "version = 1;\n");
	if (log)
		fprintf(f, "log = { file = \"%s/bpf.jsonl\"; };\n", settings.dir);
	fprintf(f, "state_dir = \"%s/state\";\n", settings.dir);
	fprintf(f, "apps = ( { name = \"benchbpf\"; range = [ %d, %d ]; algorithm = \"double-hash\";", lo, hi);
	if (with_cgroup)
		fprintf(f, " cgroups = [ \"%s/bpf\" ];", b->base_relative);
	fprintf(f, " } );\n");
	fclose(f);
}

static pid_t start_tool(const struct bpf_bench *b, char *const args[])
{
	fflush(NULL);	/* the child would otherwise inherit our unwritten buffer */
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[16] = {(char *)b->tool};
		int n = 1;
		for (int i = 0; args[i] && n < 15; i++)
			argv[n++] = args[i];
		argv[n] = NULL;
		int null = open("/dev/null", O_WRONLY);
		int err = open(b->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		if (err >= 0 || null >= 0)
			dup2(err >= 0 ? err : null, STDERR_FILENO);
		execv(b->tool, argv);
		_exit(127);
	}
	return pid;
}

static int run_tool(const struct bpf_bench *b, char *const args[])
{
	int status;
	pid_t pid = start_tool(b, args);
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Why the tool could not do what a measure needed: what, and the first
 * line it printed. */
static void tool_failed(struct bpf_bench *b, const char *what)
{
	char line[400] = "";
	FILE *err = fopen(b->err_path, "r");
	if (err) {
		if (!fgets(line, sizeof(line), err))
			line[0] = '\0';
		fclose(err);
	}
	line[strcspn(line, "\n")] = '\0';
	snprintf(b->reason, sizeof(b->reason), "%s%s%s", what, line[0] ? ": " : "", line);
}

/* The daemon confines the cgroup (relative to the cgroup v2 mount) with
 * app when the cgroup's pin directory is there (written once its entry
 * is in the map the programs, attached once at an ancestor, consult); a
 * daemon that exits first could not.  Loading and verifying takes
 * seconds on a busy machine (14 s seen on 2 cores under load). */
static bool wait_attached(struct bpf_bench *b, pid_t daemon, const char *app, const char *relative)
{
	char name[PATH_MAX], pin[PATH_MAX * 2];
	struct stat info;

	pf_pin_name_encode(relative, name, sizeof(name));
	snprintf(pin, sizeof(pin), "%s/%s/%s", PF_PIN_ROOT, app, name);
	for (int i = 0; i < 1200; i++) {
		if (stat(pin, &info) == 0)
			return true;
		if (waitpid(daemon, NULL, WNOHANG) == daemon) {
			tool_failed(b, "portfence daemon exited");
			return false;
		}
		nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
	}
	kill(daemon, SIGTERM);
	waitpid(daemon, NULL, 0);
	tool_failed(b, "portfence daemon did not attach within 60 s");
	return false;
}

/* A daemon serving policy, once it has attached app to relative. */
static pid_t start_daemon_for(struct bpf_bench *b, const char *policy, const char *app, const char *relative)
{
	char *args[] = {"daemon", "-c", (char *)policy, NULL};
	pid_t pid = start_tool(b, args);
	if (pid < 0) {
		snprintf(b->reason, sizeof(b->reason), "cannot fork: %s", strerror(errno));
		return -1;
	}
	return wait_attached(b, pid, app, relative) ? pid : -1;
}

/* A measure that could not run: null in bench.json, the reason beside
 * it ("KEY_skipped") and in the table. */
static void skipped(struct bpf_bench *b, const char *key, const char *label)
{
	fprintf(b->json, "%s\n    \"%s\": null, \"%s_skipped\": ", b->first ? "" : ",", key, key);
	json_string(b->json, b->reason);
	b->first = false;
	printf("| bpf | %s | skipped: %s | | | |\n", label, b->reason);
}

static pid_t start_daemon(struct bpf_bench *b, const char *policy)
{
	char relative[PATH_MAX];
	snprintf(relative, sizeof(relative), "%s/bpf", b->base_relative);
	return start_daemon_for(b, policy, "benchbpf", relative);
}

static void stop_daemon(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

/* The medians over the workers of cgroup_paired between cgroup (full
 * path) and native: native ns, the cgroup's ns, their ratio and the ns
 * added; NAN when no worker ran. */
struct paired_medians {
	double native, confined, ratio, added;
};

static struct paired_medians paired_with_native(struct bpf_bench *b, const char *cgroup, uint16_t port)
{
	char port_text[16], count_text[16], pairs_text[16];
	double native[16], confined[16], ratio[16], added[16];
	int workers = settings.quick ? 1 : 5, n = 0;

	snprintf(port_text, sizeof(port_text), "%u", port);
	snprintf(count_text, sizeof(count_text), "%d", settings.quick ? 50 : 300);
	snprintf(pairs_text, sizeof(pairs_text), "%d", settings.quick ? 4 : 16);
	char *args[] = {"cgroup_paired", (char *)cgroup, b->native, port_text, count_text, pairs_text, NULL};
	for (int w = 0; w < workers; w++) {
		double out[WORKER_FIGURES];
		run_worker_figures(false, NULL, args, out);
		if (isnan(out[0]) || isnan(out[3]))
			continue;
		native[n] = out[0], confined[n] = out[1], ratio[n] = out[2], added[n] = out[3];
		n++;
	}
	if (!n)
		return (struct paired_medians){NAN, NAN, NAN, NAN};
	return (struct paired_medians){median(native, n), median(confined, n), median(ratio, n), median(added, n)};
}

static void report_paired(struct bpf_bench *b, const char *key, const char *label, const char *goal,
			  struct paired_medians m)
{
	/* Over the floor: less what the shim's floor (by_hand_nolog, its
	 * system calls made natively) adds, when tcp_connect measured it. */
	double over_floor = m.added - bench_floor_added_ns;
	fprintf(b->json, "%s\n    \"%s\": {\"native_ns\": %s, \"bpf_ns\": %s, \"ratio\": %s, "
		"\"added_ns\": %s, \"over_floor_ns\": %s}",
		b->first ? "" : ",", key, json_number(m.native, 1).text, json_number(m.confined, 1).text,
		json_number(m.ratio, 4).text, json_number(m.added, 1).text, json_number(over_floor, 1).text);
	b->first = false;
	char floor[32] = "";
	if (!isnan(over_floor))
		snprintf(floor, sizeof(floor), ", floor +%.2f", over_floor / 1000);
	printf("| bpf | %s (+%.2f µs%s) | %.0f | %.0f | %.3f | %s |\n", label, m.added / 1000, floor, m.native,
	       m.confined, m.ratio, goal);
}

static void connect_pair(struct bpf_bench *b, bool log, uint16_t port)
{
	char policy[PATH_MAX];

	snprintf(policy, sizeof(policy), "%s/bpf-%s.conf", settings.dir, log ? "log" : "nolog");
	write_bpf_policy(b, policy, log, 61000, 61999, true);
	pid_t daemon = start_daemon(b, policy);
	const char *key = log ? "bpf_connect" : "bpf_connect_nolog";
	const char *label = log ? "tcp_connect, log on" : "tcp_connect, log off";
	if (daemon < 0) {
		skipped(b, key, label);
		return;
	}
	struct paired_medians m = paired_with_native(b, b->confined, port);
	stop_daemon(daemon);
	report_paired(b, key, label, log ? "native +1.0 µs" : "<= 1.05", m);
}

/* Apps whose cgroups share a parent (services in one slice): the app's
 * socket and a socket of no app there, each against native.  The daemon
 * puts one dispatcher at the parent, so that a socket runs one program
 * per hook however many apps share it (bpf/dispatch.bpf.c). */
#define SHARED_APPS 4
static void connect_shared_parent(struct bpf_bench *b, uint16_t port)
{
	char policy[PATH_MAX], others[SHARED_APPS][PATH_MAX], bystander[PATH_MAX];
	FILE *f;

	snprintf(policy, sizeof(policy), "%s/bpf-shared.conf", settings.dir);
	snprintf(bystander, sizeof(bystander), "%s/none", b->base);
	bool made = mkdir(bystander, 0755) == 0;
	for (int i = 1; i < SHARED_APPS; i++) {
		snprintf(others[i], sizeof(others[i]), "%s/other%d", b->base, i);
		made = made && mkdir(others[i], 0755) == 0;
	}
	if (made && (f = fopen(policy, "w"))) {
		fprintf(f, "version = 1;\nlog = { file = \"%s/bpf.jsonl\"; };\nstate_dir = \"%s/state\";\napps = (\n"
			   "  { name = \"benchbpf\"; range = [ 61000, 61999 ]; cgroups = [ \"%s/bpf\" ]; }",
			settings.dir, settings.dir, b->base_relative);
		for (int i = 1; i < SHARED_APPS; i++)
			fprintf(f, ",\n  { name = \"benchother%d\"; range = [ %d, %d ]; cgroups = [ \"%s/other%d\" ]; }", i,
				62000 + 100 * i, 62099 + 100 * i, b->base_relative, i);
		fprintf(f, " );\n");
		fclose(f);
	} else {
		snprintf(b->reason, sizeof(b->reason), "cannot make the cgroups or the policy");
	}
	pid_t daemon = made ? start_daemon(b, policy) : -1;
	if (daemon < 0) {
		skipped(b, "bpf_connect_shared", "tcp_connect, 4 apps under one parent, log on");
		skipped(b, "bpf_connect_bystander", "tcp_connect, no app's socket under them");
	} else {
		struct paired_medians app = paired_with_native(b, b->confined, port);
		struct paired_medians none = paired_with_native(b, bystander, port);
		stop_daemon(daemon);
		report_paired(b, "bpf_connect_shared", "tcp_connect, 4 apps under one parent, log on", "native +1.0 µs",
			      app);
		report_paired(b, "bpf_connect_bystander", "tcp_connect, no app's socket under them", "", none);
	}
	rmdir(bystander);
	for (int i = 1; i < SHARED_APPS; i++)
		rmdir(others[i]);
}

/* Connections per second and failures, the client closing first after
 * the greeting, through a range of `ports`; native in the sibling. */
static void churn(struct bpf_bench *b, uint16_t port, int ports)
{
	char policy[PATH_MAX], port_text[16], seconds[16];
	double secs = settings.quick ? 1.0 : 5.0, native_failures = NAN, bpf_failures = NAN;

	snprintf(policy, sizeof(policy), "%s/bpf-churn-%d.conf", settings.dir, ports);
	write_bpf_policy(b, policy, true, 61400, 61400 + ports - 1, true);
	pid_t daemon = start_daemon(b, policy);
	char key[32], label[64];
	snprintf(key, sizeof(key), "churn_%d", ports);
	snprintf(label, sizeof(label), "churn, %d-port range", ports);
	if (daemon < 0) {
		skipped(b, key, label);
		return;
	}
	snprintf(port_text, sizeof(port_text), "%u", port);
	snprintf(seconds, sizeof(seconds), "%.1f", secs);
	char *args[] = {"churn", port_text, seconds, NULL};
	settings.worker_cgroup = b->native;
	double native = run_worker(false, NULL, args, &native_failures);
	settings.worker_cgroup = b->confined;
	double bpf = run_worker(false, NULL, args, &bpf_failures);
	settings.worker_cgroup = NULL;
	stop_daemon(daemon);
	fprintf(b->json, "%s\n    \"%s\": {\"native_per_s\": %s, \"bpf_per_s\": %s, \"native_failures\": %s, "
		"\"bpf_failures\": %s}", b->first ? "" : ",", key, json_number(native, 0).text,
		json_number(bpf, 0).text, json_number(native_failures, 0).text, json_number(bpf_failures, 0).text);
	b->first = false;
	printf("| bpf | churn, %d-port range, conn/s (failures) | %.0f/s (%.0f) | %.0f/s (%.0f) | %.3f | |\n", ports,
	       native, native_failures, bpf, bpf_failures, bpf / native);
}

/* How long `portfence attach` takes (load, verify, attach, pin), median
 * of a few, each followed by a detach. */
static void attach_time(struct bpf_bench *b)
{
	char policy[PATH_MAX], relative[PATH_MAX];
	double took[5];
	int n = 0;

	snprintf(policy, sizeof(policy), "%s/bpf-attach.conf", settings.dir);
	write_bpf_policy(b, policy, false, 61000, 61999, false);
	snprintf(relative, sizeof(relative), "%s/attach", b->base_relative);
	char *attach[] = {"attach", "-c", policy, "-a", "benchbpf", relative, NULL};
	char *detach[] = {"detach", "-a", "benchbpf", relative, NULL};
	for (int i = 0; i < (settings.quick ? 1 : 5); i++) {
		double start = seconds_now();
		if (run_tool(b, attach) != 0) {
			tool_failed(b, "portfence attach failed");
			continue;
		}
		took[n++] = seconds_now() - start;
		run_tool(b, detach);
	}
	if (n == 0) {
		skipped(b, "attach_ms", "attach (portfence attach: load, verify, attach, pin)");
		return;
	}
	double ms = median(took, n) * 1000;
	fprintf(b->json, "%s\n    \"attach_ms\": %.1f", b->first ? "" : ",", ms);
	b->first = false;
	printf("| bpf | attach (portfence attach: load, verify, attach, pin) | | %.0f ms | | |\n", ms);
}

static bool make_cgroups(struct bpf_bench *b)
{
	char relative[PATH_MAX];
	snprintf(b->base_relative, sizeof(b->base_relative), "portfence-bench-%d", (int)getpid());
	if (pf_cgroup_resolve(b->base_relative, b->base, sizeof(b->base), relative, sizeof(relative)) < 0 ||
	    mkdir(b->base, 0755) < 0)
		return false;
	snprintf(b->confined, sizeof(b->confined), "%s/bpf", b->base);
	/* native beside base, not in it: a policy naming two of base's
	 * cgroups attaches its programs at base, and a native socket there
	 * would run them (to find no app) and so pay part of their cost. */
	snprintf(b->native, sizeof(b->native), "%s-native", b->base);
	snprintf(b->attach_target, sizeof(b->attach_target), "%s/attach", b->base);
	return mkdir(b->confined, 0755) == 0 && mkdir(b->native, 0755) == 0 &&
	       mkdir(b->attach_target, 0755) == 0;
}

static void remove_cgroups(const struct bpf_bench *b)
{
	rmdir(b->confined);
	rmdir(b->native);
	rmdir(b->attach_target);
	rmdir(b->base);
}

/* build/portfence, beside this program. */
static void find_tool(struct bpf_bench *b)
{
	snprintf(b->err_path, sizeof(b->err_path), "%s/tool.err", settings.dir);
	snprintf(b->tool, sizeof(b->tool), "%s", settings.tool);
}

void measure_bpf(FILE *json, bool first)
{
	struct bpf_bench b = {.json = json, .first = true};
	struct listener connect_server, churn_server;
	const char *why = why_not();

	find_tool(&b);
	fprintf(json, "%s\n  \"bpf\": {", first ? "" : ",");
	if (!why && !make_cgroups(&b))
		why = "cannot create the bench's cgroups";
	if (why) {
		fprintf(json, "\"skipped\": ");
		json_string(json, why);
		fprintf(json, "}");
		printf("| bpf | skipped: %s | | | | |\n", why);
		return;
	}
	listener_start(&connect_server, "127.0.0.1", LISTEN_CLOSE);
	connect_pair(&b, true, connect_server.port);
	connect_pair(&b, false, connect_server.port);
	connect_shared_parent(&b, connect_server.port);
	listener_stop(&connect_server);
	listener_start(&churn_server, "127.0.0.1", LISTEN_GREET);
	churn(&b, churn_server.port, 10);
	churn(&b, churn_server.port, 100);
	listener_stop(&churn_server);
	attach_time(&b);
	remove_cgroups(&b);
	fprintf(json, "\n  }");
}

/* ---- bpf_burst: no record lost in a burst ---- */

#define BURST_RECORDS 50000

/* User and system CPU seconds the process has used, or NAN. */
static double cpu_seconds(pid_t pid)
{
	char path[64], text[1024];
	unsigned long user, system;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
	if (f)
		fclose(f);
	text[n] = '\0';
	const char *after_comm = strrchr(text, ')');
	if (!after_comm || sscanf(after_comm, ") %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &user,
				  &system) != 2)
		return NAN;
	return (double)(user + system) / (double)sysconf(_SC_CLK_TCK);
}

/* A child in cgroup (a full path) connects count times to 127.0.0.1:port,
 * a destination the policy denies, on one socket; it writes how many
 * were refused with EPERM and the seconds they took to result. */
static pid_t start_burst(const char *cgroup, uint16_t port, int count, int result)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char procs[PATH_MAX + 16];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1)
		_exit(126);
	close(fd);
	struct sockaddr_in dest = {.sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int denied = 0, sock = -1;
	double start = seconds_now();
	for (int i = 0; i < count; i++) {
		if (sock < 0 && (sock = socket(AF_INET, SOCK_STREAM, 0)) < 0)
			_exit(1);
		if (connect(sock, (struct sockaddr *)&dest, sizeof(dest)) < 0 && errno == EPERM) {
			denied++;
			continue;
		}
		close(sock);
		sock = -1;
	}
	double took = seconds_now() - start;
	if (write(result, &denied, sizeof(denied)) != sizeof(denied) || write(result, &took, sizeof(took)) != sizeof(took))
		_exit(1);
	_exit(0);
}

/* The log's records, and the sum of the "lost" its error records report. */
static void count_records(const char *log, long *records, long *lost)
{
	char line[8192];
	FILE *f = fopen(log, "r");
	*records = *lost = 0;
	while (f && fgets(line, sizeof(line), f)) {
		const char *at = strstr(line, "\"lost\":");
		if (at)
			*lost += atol(at + 7);
		else
			(*records)++;
	}
	if (f)
		fclose(f);
}

/* Seconds from `start` until the log stopped growing (a second without
 * change, 30 s at most). */
static double wait_log_settled(const char *log, double start)
{
	off_t size = -1;
	double changed = seconds_now();
	while (seconds_now() - changed < 1.0 && seconds_now() - start < 30) {
		struct stat info;
		off_t now = stat(log, &info) == 0 ? info.st_size : 0;
		if (now != size) {
			size = now;
			changed = seconds_now();
		}
		nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
	}
	return changed - start;
}

struct burst_figures {
	long written, lost;
	int denied;
	double burst_s, drain_s, daemon_cpu_s;
};

/* One burst under a daemon serving the cgroup: NULL, or why it could
 * not run. */
static const char *burst_once(struct bpf_bench *b, const char *relative, const char *full,
			      struct burst_figures *out)
{
	char policy[PATH_MAX], log[PATH_MAX];
	struct listener target;
	int result[2];

	listener_start(&target, "127.0.0.1", LISTEN_CLOSE);
	snprintf(policy, sizeof(policy), "%s/bpf-burst.conf", settings.dir);
	snprintf(log, sizeof(log), "%s/bpf-burst.jsonl", settings.dir);
	unlink(log);
	FILE *f = fopen(policy, "w");
	if (f) {
		fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s/state\";\n"
			   "apps = ( { name = \"benchburst\"; range = [ 61000, 61099 ]; cgroups = [ \"%s\" ];"
			   " deny = [ \"127.0.0.1:%u\" ]; } );\n",
			log, settings.dir, relative, target.port);
		fclose(f);
	}
	pid_t daemon = f ? start_daemon_for(b, policy, "benchburst", relative) : -1;
	const char *why = daemon > 0 ? NULL : b->reason[0] ? b->reason : "the daemon did not attach";
	if (!why && pipe(result) < 0)
		why = "no pipe";
	if (!why) {
		double cpu_before = cpu_seconds(daemon), start = seconds_now();
		pid_t child = start_burst(full, target.port, BURST_RECORDS, result[1]);
		close(result[1]);
		if (child < 0 || read(result[0], &out->denied, sizeof(out->denied)) != sizeof(out->denied) ||
		    read(result[0], &out->burst_s, sizeof(out->burst_s)) != sizeof(out->burst_s))
			why = "the burst did not run";
		close(result[0]);
		if (child > 0)
			waitpid(child, NULL, 0);
		out->drain_s = wait_log_settled(log, start);
		out->daemon_cpu_s = cpu_seconds(daemon) - cpu_before;
		count_records(log, &out->written, &out->lost);
		if (!why && out->denied != BURST_RECORDS)
			why = "the burst's connects were not all denied";
	}
	stop_daemon(daemon);
	listener_stop(&target);
	return why;
}

void measure_bpf_burst(FILE *json, bool first)
{
	struct bpf_bench b = {.json = json};
	char relative[PATH_MAX], full[PATH_MAX], ignored[PATH_MAX];
	struct burst_figures figures = {0};
	const char *why = why_not();

	find_tool(&b);
	snprintf(relative, sizeof(relative), "portfence-bench-burst-%d", (int)getpid());
	if (!why && (pf_cgroup_resolve(relative, full, sizeof(full), ignored, sizeof(ignored)) < 0 ||
		     mkdir(full, 0755) < 0))
		why = "cannot create the bench's cgroup";
	else if (!why) {
		why = burst_once(&b, relative, full, &figures);
		rmdir(full);
	}
	fprintf(json, "%s\n  \"bpf_burst\": ", first ? "" : ",");
	if (why) {
		fprintf(json, "null, \"bpf_burst_skipped\": ");
		json_string(json, why);
		printf("| bpf_burst | skipped: %s | | | | |\n", why);
		return;
	}
	double per_s = figures.drain_s > 0 ? BURST_RECORDS / figures.drain_s : 0;
	fprintf(json, "{\"records\": %d, \"written\": %ld, \"lost\": %ld, \"burst_s\": %.4f, \"drain_s\": %.4f, "
		"\"records_per_s\": %.0f, \"daemon_cpu_s\": ",
		BURST_RECORDS, figures.written, figures.lost, figures.burst_s, figures.drain_s, per_s);
	if (isnan(figures.daemon_cpu_s))
		fprintf(json, "null}");
	else
		fprintf(json, "%.2f}", figures.daemon_cpu_s);
	printf("| bpf_burst | %d denials from one process, daemon draining: written / lost | | %ld / %ld | | 0 lost |\n",
	       BURST_RECORDS, figures.written, figures.lost);
	printf("| bpf_burst | burst %.3f s, all written after %.3f s (%.0f records/s), daemon CPU %.2f s | | | | |\n",
	       figures.burst_s, figures.drain_s, per_s, figures.daemon_cpu_s);
}

/* ---- cgroup_confine_ms: a new cgroup confined by the daemon ---- */

#define CONFINE_LO 61000
#define CONFINE_HI 61999

/* The daemon's cgroup map (pinned at PF_BPF_CGROUPS_PIN, cgroup id ->
 * app): a cgroup is confined once its entry is there.  The programs
 * stand once at a common ancestor; no attachment is made per cgroup. */
#define CGROUPS_PIN "/sys/fs/bpf/portfence-cgroups"

static int cgroup_map_fd(void)
{
	union bpf_attr attr = {0};
	attr.pathname = (__u64)(unsigned long)CGROUPS_PIN;
	return (int)syscall(SYS_bpf, BPF_OBJ_GET, &attr, sizeof(attr));
}

static bool confined_in_map(int map_fd, const char *full)
{
	struct stat info;
	__u64 id;
	__u32 app = 0;
	union bpf_attr attr = {0};
	if (map_fd < 0 || stat(full, &info) < 0)
		return false;
	id = (__u64)info.st_ino;
	attr.map_fd = (__u32)map_fd;
	attr.key = (__u64)(unsigned long)&id;
	attr.value = (__u64)(unsigned long)&app;
	return syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr)) == 0 && app != 0;
}

static bool daemon_watching(struct bpf_bench *b, pid_t daemon)
{
	char text[4096];
	for (int i = 0; i < 1200; i++) {
		FILE *err = fopen(b->err_path, "r");
		size_t n = err ? fread(text, 1, sizeof(text) - 1, err) : 0;
		if (err)
			fclose(err);
		text[n] = '\0';
		if (strstr(text, "watching"))
			return true;
		if (waitpid(daemon, NULL, WNOHANG) == daemon) {
			tool_failed(b, "portfence daemon exited");
			return false;
		}
		nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
	}
	tool_failed(b, "portfence daemon did not start watching within 60 s");
	return false;
}

/* The bench's cgroup (base, made) and `portfence daemon` serving app
 * (CONFINE_LO-HI, records logged or not) for the cgroups base/c-*, and
 * its pinned cgroup map: NULL, or why not (*daemon is then to be stopped
 * all the same when > 0). */
static const char *start_glob_daemon(struct bpf_bench *b, const char *app, char *base, size_t base_len, bool log,
				     pid_t *daemon, int *map_fd)
{
	char policy[PATH_MAX], log_line[PATH_MAX + 64] = "", base_relative[128], ignored[PATH_MAX];
	const char *why = why_not();

	find_tool(b);
	snprintf(base_relative, sizeof(base_relative), "portfence-bench-%s-%d", app, (int)getpid());
	if (why)
		return why;
	if (pf_cgroup_resolve(base_relative, base, base_len, ignored, sizeof(ignored)) < 0 || mkdir(base, 0755) < 0)
		return "cannot create the bench's cgroup";
	snprintf(policy, sizeof(policy), "%s/bpf-%s.conf", settings.dir, app);
	if (log)
		snprintf(log_line, sizeof(log_line), "log = { file = \"%s/%s.jsonl\"; };\n", settings.dir, app);
	FILE *f = fopen(policy, "w");
	if (f) {
		fprintf(f, "version = 1;\n%sstate_dir = \"%s/state\";\n"
			"apps = ( { name = \"%s\"; range = [ %d, %d ]; cgroups = [ \"%s/c-*\" ]; } );\n",
			log_line, settings.dir, app, CONFINE_LO, CONFINE_HI, base_relative);
		fclose(f);
	}
	char *args[] = {"daemon", "-c", policy, NULL};
	unlink(b->err_path);	/* an earlier daemon's "watching" is not this one's */
	*daemon = start_tool(b, args);
	if (*daemon < 0 || !daemon_watching(b, *daemon))
		return b->reason[0] ? b->reason : "cannot start the daemon";
	for (int tenths = 0; tenths < 50 && (*map_fd = cgroup_map_fd()) < 0; tenths++)
		nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
	return *map_fd < 0 ? "the daemon pinned no cgroup map at " CGROUPS_PIN : NULL;
}

static void stop_glob_daemon(pid_t daemon, int map_fd, const char *base)
{
	if (map_fd >= 0)
		close(map_fd);
	if (daemon > 0) {
		kill(daemon, SIGTERM);
		waitpid(daemon, NULL, 0);
	}
	if (base[0])
		rmdir(base);
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Creation to confinement, over `count` cgroups made one after another
 * under a glob the daemon serves; and, the same number again, children
 * that join a new cgroup and connect at once: the connects that left
 * from outside the range (the race a runtime's own start-up hides). */
void measure_cgroup_confine(FILE *json, bool first)
{
	struct bpf_bench b = {.json = json};
	char base[PATH_MAX] = "", full[PATH_MAX + 32];
	int count = settings.quick ? 10 : 100, birth_count = settings.quick ? 100 : 1000;
	int timed = 0, leaks = 0, births = 0, at_return = 0;
	double took[100];
	pid_t daemon = -1;
	int map_fd = -1;
	const char *why = start_glob_daemon(&b, "benchctr", base, sizeof(base), true, &daemon, &map_fd);
	struct listener server;
	if (!why) {
		listener_start(&server, "127.0.0.1", LISTEN_CLOSE);
		for (int i = 0; i < count; i++) {
			snprintf(full, sizeof(full), "%s/c-%d", base, i);
			double start = seconds_now(), limit = start + 5;
			if (mkdir(full, 0755) < 0)
				continue;
			at_return += confined_in_map(map_fd, full);
			while (!confined_in_map(map_fd, full) && seconds_now() < limit)
				;
			if (confined_in_map(map_fd, full))
				took[timed++] = (seconds_now() - start) * 1000;
			rmdir(full);
		}
		for (int i = 0; i < birth_count; i++) {
			int pipe_fds[2];
			uint16_t local = 0;
			snprintf(full, sizeof(full), "%s/c-birth-%d", base, i);
			if (pipe(pipe_fds) < 0)
				break;
			pid_t child = join_and_connect_at_birth(full, server.port, pipe_fds[1]);
			mkdir(full, 0755);
			close(pipe_fds[1]);
			if (read(pipe_fds[0], &local, sizeof(local)) == sizeof(local) && local) {
				births++;
				leaks += local < CONFINE_LO || local > CONFINE_HI;
			}
			close(pipe_fds[0]);
			waitpid(child, NULL, 0);
			rmdir(full);
		}
		listener_stop(&server);
	}
	stop_glob_daemon(daemon, map_fd, base);
	fprintf(json, "%s\n  \"cgroup_confine_ms\": ", first ? "" : ",");
	if (why || timed == 0) {
		fprintf(json, "null, \"cgroup_confine_ms_skipped\": ");
		json_string(json, why ? why : "no cgroup was confined within 5 s");
		printf("| cgroup_confine | skipped: %s | | | | |\n", why ? why : "no cgroup was confined within 5 s");
		return;
	}
	qsort(took, (size_t)timed, sizeof(took[0]), compare_doubles);
	double med = median(took, timed), max = took[timed - 1];
	fprintf(json, "{\"cgroups\": %d, \"confined\": %d, \"confined_when_mkdir_returned\": %d, "
		"\"median_ms\": %.3f, \"max_ms\": %.3f, \"births\": %d, \"birth_leaks\": %d}", count, timed, at_return,
		med, max, births, leaks);
	printf("| cgroup_confine | mkdir to its entry in the daemon's cgroup map (%d of %d; %d already when mkdir "
	       "returned), median / max | | %.3f / %.3f ms | | <= 10 ms |\n", timed, count, at_return, med, max);
	printf("| cgroup_confine | join a new cgroup and connect at once (no runtime): leaks of %d connects | | %d | | 0 |\n",
	       births, leaks);
}

/* ---- bpf_time_wait: the connect path with a range full of TIME_WAIT ---- */

/* In a private network namespace of its own (loopback, and a veth pair
 * to a second namespace that holds the far server), one daemon serves
 * two apps: "benchtw", whose range the client-closes-first connects fill
 * with TIME_WAIT, and "benchfresh", whose connects close with RST.  Each
 * worker interleaves native, BPF (records on), the floor (the system
 * calls by hand: SO_REUSEADDR, bind, connect) and native with the
 * network namespace's ip_local_port_range set to a span as small as
 * the app's and filled the same way (bench.c, same_range), and native
 * under bare hooks (attach_bare_hooks), in one process; the four cases
 * (loopback and veth, each fresh and TIME_WAIT-full) take turns worker
 * by worker.
 *
 * Each worker connects to a destination of its own (127.0.0.x, and
 * 10.251.0.x across the veth).  With one destination for all, native's
 * connects filled the kernel's own range with TIME_WAIT toward it, a
 * little more each worker: native's connect grew dearer as the run went
 * on (by up to 1.6 ms with ten workers, when the range neared its end),
 * and the added figures moved with how far the run had gone. */
#define TW_APP_LO 63000
#define TW_FLOOR_LO 63100
#define FRESH_APP_LO 63200
#define FRESH_FLOOR_LO 63300
#define TW_SAME_LO 63400	/* native's ip_local_port_range, the same span */
#define FRESH_SAME_LO 63500
#define TW_SPAN 100
#define VETH_NEAR "10.251.0.1"
#define VETH_FAR_PREFIX "10.251.0."	/* the far servers' addresses: .2, .3, ..., one a worker */
#define VETH_FAR_FIRST 2
#define TW_FIGURES 22
#define TW_PROGRAMS_AT 17	/* figures 17-20: the programs' own ns per connect, hook by hook; */
#define TW_BARE_AT 21	/* 21: the bare hooks' empty programs', all four */
#define TW_COUNTS_AT 9	/* figures 9 and 10: counts of refused connects; the others, medians */
#define MAX_TW_WORKERS 32

struct tw_case {
	const char *net, *mode, *source;
	const char *dest;	/* its prefix: each worker's own address follows */
	uint16_t port;
	int floor_lo, same_lo;
	const char *confined;
	double figures[TW_FIGURES][MAX_TW_WORKERS];
	int got;
};

/* A process in a network namespace of its own, at the far end of a veth
 * pair from this one, serving one address a worker (VETH_FAR_PREFIX
 * from VETH_FAR_FIRST on): its pid, its server's port in
 * *port, or -1 and why in b->reason. */
static pid_t start_far_server(struct bpf_bench *b, uint16_t *port, int workers)
{
	int ready[2], go[2], told[2];
	char command[512], byte = 0;

	if (pipe(ready) < 0 || pipe(go) < 0 || pipe(told) < 0) {
		snprintf(b->reason, sizeof(b->reason), "no pipe");
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		struct listener far;
		if (unshare(CLONE_NEWNET) < 0 || write(ready[1], &byte, 1) != 1 || read(go[0], &byte, 1) != 1)
			_exit(1);
		listener_start(&far, "0.0.0.0", LISTEN_GREET);	/* each worker's address (VETH_FAR_PREFIX) */
		if (write(told[1], &far.port, sizeof(far.port)) != sizeof(far.port))
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	close(go[0]);
	close(told[1]);
	if (pid < 0 || read(ready[0], &byte, 1) != 1) {
		snprintf(b->reason, sizeof(b->reason), "cannot make the far namespace");
		return -1;
	}
	snprintf(command, sizeof(command),
		 "ip link add pfbtw0 type veth peer name pfbtw1 netns %d && ip addr add " VETH_NEAR "/24 dev pfbtw0 && "
		 "ip link set pfbtw0 up && nsenter -t %d -n sh -c 'for i in $(seq 0 %d); do "
		 "ip addr add " VETH_FAR_PREFIX "$((%d + i))/24 dev pfbtw1 || exit 1; done && "
		 "ip link set pfbtw1 up && ip link set lo up'",
		 (int)pid, (int)pid, workers - 1, VETH_FAR_FIRST);
	int rc = system(command);
	if (rc != 0 || write(go[1], &byte, 1) != 1 || read(told[0], port, sizeof(*port)) != sizeof(*port)) {
		snprintf(b->reason, sizeof(b->reason), "cannot set up the veth pair (ip, nsenter)");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	close(ready[0]);
	close(go[1]);
	close(told[0]);
	return pid;
}

/* The mean and the largest attempts of the log's records of app toward
 * remote_prefix ("127.0.0.1:", "10.251.0.2:"). */
static void log_attempts(const char *log, const char *app, const char *remote_prefix, double *mean, long *most)
{
	char line[4096], app_field[64], remote_field[64];
	long total = 0, count = 0;
	FILE *f = fopen(log, "r");

	snprintf(app_field, sizeof(app_field), "\"app\":\"%s\"", app);
	snprintf(remote_field, sizeof(remote_field), "\"remote\":\"%s", remote_prefix);
	*most = 0;
	while (f && fgets(line, sizeof(line), f)) {
		const char *at = strstr(line, "\"attempts\":");
		if (!at || !strstr(line, app_field) || !strstr(line, remote_field))
			continue;
		long attempts = atol(at + 11);
		total += attempts;
		count++;
		*most = attempts > *most ? attempts : *most;
	}
	if (f)
		fclose(f);
	*mean = count ? (double)total / count : NAN;
}

static void tw_case_report(struct bpf_bench *b, struct tw_case *c, const char *log, bool *first_case)
{
	static const char *const names[TW_FIGURES] = {
		"native_ns",	  "bpf_ns",		  "floor_ns",		     "added_ns",
		"floor_added_ns", "over_floor_ns",	  "native_same_range_ns",    "added_same_range_ns",
		"same_range_added_ns", "same_range_refused_by_default", "same_range_refused",
		"cpu_added_ns", "cpu_over_floor_ns", "hooks_added_ns", "cpu_hooks_added_ns", "cpu_over_hooks_ns",
		"cpu_floor_added_ns", "program_connect4_ns", "program_sockops_ns", "program_sock_release_ns",
		"program_sock_create_ns", "program_bare_ns"};
	double med[TW_FIGURES];
	for (int i = 0; i < TW_FIGURES; i++)
		med[i] = c->got ? median(c->figures[i], c->got) : NAN;
	/* the counts: the largest of the workers' */
	for (int i = TW_COUNTS_AT; i < TW_COUNTS_AT + 2; i++)
		for (int w = 0; w < c->got; w++)
			med[i] = w == 0 || c->figures[i][w] > med[i] ? c->figures[i][w] : med[i];
	fprintf(b->json, "%s\n    \"%s_%s\": {", *first_case ? "" : ",", c->net, c->mode);
	for (int i = 0; i < TW_FIGURES; i++)
		fprintf(b->json, "%s\"%s\": %s", i ? ", " : "", names[i],
			json_number(med[i], i == TW_COUNTS_AT || i == TW_COUNTS_AT + 1 ? 0 : 1).text);
	fprintf(b->json, ", \"same_range_span\": [%d, %d]", c->same_lo, c->same_lo + TW_SPAN - 1);
	fprintf(b->json, ", \"ratio\": %s", json_number(med[1] / med[0], 4).text);
	double mean = NAN;
	long most = 0;
	if (strcmp(c->mode, "time_wait") == 0) {
		log_attempts(log, "benchtw", c->dest, &mean, &most);
		fprintf(b->json, ", \"attempts_mean\": %s, \"attempts_max\": %ld", json_number(mean, 2).text, most);
	}
	fprintf(b->json, ", \"workers\": %d}", c->got);
	*first_case = false;
	printf("| bpf_time_wait | %s, %s, log on (+%.2f µs, cpu +%.2f; floor +%.2f, cpu +%.2f; floor itself +%.2f, cpu +%.2f; "
	       "same-range native +%.2f, itself +%.2f, refused %.0f/%d by default, %.0f retried)",
	       c->net, c->mode, med[3] / 1000, med[11] / 1000, med[5] / 1000, med[12] / 1000, med[4] / 1000,
	       med[16] / 1000, med[7] / 1000, med[8] / 1000, med[9], TW_SPAN, med[10]);
	if (!isnan(mean))
		printf(", attempts mean %.1f max %ld", mean, most);
	printf("; bare hooks +%.2f, cpu +%.2f, BPF over them cpu +%.2f", med[13] / 1000, med[14] / 1000,
	       med[15] / 1000);
	const double *own = &med[TW_PROGRAMS_AT];
	printf("; programs' own %.2f µs (connect4 %.2f, sockops %.2f, release %.2f, create %.2f; empty ones %.2f)",
	       program_hooks_sum(own) / 1000, own[0] / 1000, own[1] / 1000, own[2] / 1000, own[3] / 1000,
	       med[TW_BARE_AT] / 1000);
	printf(" | %.0f | %.0f | %.3f | native +1.0 µs |\n", med[0], med[1], med[1] / med[0]);
}

#define BARE_PREFIX "bare_"	/* the bare hooks' programs' names: bare_connect4, ... */

/* The hooks alone: at each hook a TCP connect runs (connect4, sockops,
 * sock_release, sock_create), a program of two instructions that lets
 * the socket proceed, attached to a cgroup of their own.  A connect
 * there costs what the kernel's cgroup-BPF machinery costs with no
 * program body and no bind: the floor of any design built on these
 * hooks, measured beside the daemon's programs.  Loaded by the bpf(2)
 * system call itself, so the bench needs neither clang nor libbpf.
 * load_proceed: the program's descriptor, or -1. */
static int load_proceed(enum bpf_prog_type type, enum bpf_attach_type expected, const char *name)
{
	struct bpf_insn proceed[2] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = type;
	attr.expected_attach_type = expected;
	attr.insns = (uintptr_t)proceed;
	attr.insn_cnt = 2;
	attr.license = (uintptr_t) "GPL";
	snprintf(attr.prog_name, sizeof(attr.prog_name), "%s", name);
	return (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
}

/* True when all four stand on cgroup. */
static bool attach_bare_hooks(const char *cgroup)
{
	static const struct {
		enum bpf_prog_type type;
		enum bpf_attach_type at;
		const char *name;	/* program_hook() knows it */
	} hooks[] = {{BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, BARE_PREFIX "connect4"},
		     {BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, BARE_PREFIX "sockops"},
		     {BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_RELEASE, BARE_PREFIX "sock_release"},
		     {BPF_PROG_TYPE_CGROUP_SOCK, BPF_CGROUP_INET_SOCK_CREATE, BARE_PREFIX "sock_create"}};
	int target = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC), attached = 0;

	for (size_t i = 0; target >= 0 && i < sizeof(hooks) / sizeof(hooks[0]); i++) {
		int prog = load_proceed(hooks[i].type, hooks[i].at, hooks[i].name);
		union bpf_attr attr;

		memset(&attr, 0, sizeof(attr));
		attr.target_fd = (__u32)target;
		attr.attach_bpf_fd = (__u32)prog;
		attr.attach_type = hooks[i].at;
		if (prog >= 0 && syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof(attr)) == 0)
			attached++;
		if (prog >= 0)
			close(prog);	/* the cgroup holds it now */
	}
	if (target >= 0)
		close(target);
	return attached == (int)(sizeof(hooks) / sizeof(hooks[0]));
}

/* ---- the programs' own time: the kernel's run-time statistics ---- */

/* As the programs' names end: the daemon's (pfb_connect4), or its
 * dispatcher's (pfd_connect4) where one stands in front of several
 * apps; a program it tail-calls is counted in the dispatcher's run.
 * The kernel keeps 15 characters of a name (pfb_sock_releas). */
static const char *const program_hooks[PROGRAM_HOOKS] = {"connect4", "sockops", "sock_release", "sock_create"};

int program_stats_on(void)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.enable_stats.type = BPF_STATS_RUN_TIME;
	return (int)syscall(SYS_bpf, BPF_ENABLE_STATS, &attr, sizeof(attr));
}

/* The hook a program named name serves, or -1 when it is not one of
 * the connect path's programs: portfence's (bare false) or the bench's
 * bare ones (bare true). */
static int program_hook(const char *name, bool bare)
{
	size_t prefix = bare ? strlen(BARE_PREFIX) : 4;	/* "pfb_", "pfd_" */
	bool named = bare ? strncmp(name, BARE_PREFIX, prefix) == 0 : pf_bpf_prog_is_portfence(name);

	if (!named)
		return -1;
	size_t kept = BPF_OBJ_NAME_LEN - 1 - prefix;	/* what the kernel keeps of the rest */
	for (int h = 0; h < PROGRAM_HOOKS; h++)
		if (strncmp(name + prefix, program_hooks[h], kept) == 0 && strlen(name + prefix) <= kept)
			return h;
	return -1;
}

int program_run_ns(double ns[PROGRAM_HOOKS], bool bare)
{
	__u32 id = 0;

	for (int h = 0; h < PROGRAM_HOOKS; h++)
		ns[h] = 0;
	while (pf_bpf_prog_next(&id) == 0) {
		struct bpf_prog_info info;
		int hook = pf_bpf_prog_info(id, &info) == 0 ? program_hook(info.name, bare) : -1;
		if (hook >= 0)
			ns[hook] += (double)info.run_time_ns;
	}
	return errno == ENOENT ? 0 : -1;
}

/* What the TIME_WAIT cases set up and take down: the cgroups (each
 * app's in a cgroup of its own parent, bpf/app and attach/app, where the
 * daemon attaches its programs, so that a socket of one runs only its
 * own app's programs, as one app alone would; native and the bare
 * hooks' beside base, outside the daemon's reach), the far server, the
 * daemon, and the run's sizes. */
struct tw_setting {
	char policy[PATH_MAX], log[PATH_MAX], tw_rel[PATH_MAX], fresh_rel[PATH_MAX];
	char tw_full[PATH_MAX], fresh_full[PATH_MAX], hooks_full[PATH_MAX];
	const char *hooks_side;	/* the workers' argument: "-" leaves the bare hooks out */
	uint16_t far_port;
	pid_t far, daemon;
	int workers, count, pairs;
};

/* Writes the two apps' policy and starts the daemon on it: NULL, or why
 * not. */
static const char *tw_start_daemon(struct bpf_bench *b, struct tw_setting *s)
{
	snprintf(s->policy, sizeof(s->policy), "%s/bpf-tw.conf", settings.dir);
	snprintf(s->log, sizeof(s->log), "%s/bpf-tw.jsonl", settings.dir);
	FILE *f = fopen(s->policy, "w");
	if (!f)
		return "cannot write the policy";
	fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s/state\";\napps = (\n"
		   "  { name = \"benchtw\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; },\n"
		   "  { name = \"benchfresh\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; } );\n",
		s->log, settings.dir, TW_APP_LO, TW_APP_LO + TW_SPAN - 1, s->tw_rel, FRESH_APP_LO,
		FRESH_APP_LO + TW_SPAN - 1, s->fresh_rel);
	fclose(f);
	char *args[] = {"daemon", "-c", s->policy, NULL};
	s->daemon = start_tool(b, args);
	if (s->daemon < 0 || !wait_attached(b, s->daemon, "benchtw", s->tw_rel) ||
	    !wait_attached(b, s->daemon, "benchfresh", s->fresh_rel))
		return b->reason[0] ? b->reason : "the daemon did not attach";
	return NULL;
}

/* The network namespace, the cgroups, the far server, the bare hooks
 * and the daemon: NULL, or why the cases cannot run. */
static const char *tw_prepare(struct bpf_bench *b, struct tw_setting *s)
{
	*s = (struct tw_setting){.far = -1, .daemon = -1, .hooks_side = s->hooks_full,
				 .workers = settings.workers ? settings.workers : settings.quick ? 1 : 10,
				 .count = settings.count ? settings.count : settings.quick ? 50 : 200,
				 .pairs = settings.pairs ? settings.pairs : settings.quick ? 2 : 8};
	if (s->workers > MAX_TW_WORKERS)
		s->workers = MAX_TW_WORKERS;
	if (unshare(CLONE_NEWNET) < 0 || system("ip link set lo up") != 0)
		return "cannot make a private network namespace";
	if (!make_cgroups(b))	/* names b->base */
		return "cannot create the bench's cgroups";
	snprintf(s->tw_rel, sizeof(s->tw_rel), "%s/bpf/app", b->base_relative);
	snprintf(s->fresh_rel, sizeof(s->fresh_rel), "%s/attach/app", b->base_relative);
	snprintf(s->tw_full, sizeof(s->tw_full), "%s/bpf/app", b->base);
	snprintf(s->fresh_full, sizeof(s->fresh_full), "%s/attach/app", b->base);
	snprintf(s->hooks_full, sizeof(s->hooks_full), "%s-hooks", b->base);
	if ((s->far = start_far_server(b, &s->far_port, s->workers)) < 0)
		return b->reason;
	if (mkdir(s->tw_full, 0755) < 0 || mkdir(s->fresh_full, 0755) < 0 || mkdir(s->hooks_full, 0755) < 0)
		return "cannot create the bench's cgroups";
	if (!attach_bare_hooks(s->hooks_full)) {
		fprintf(stderr, "portfence-bench: the bare hooks could not be attached: %s\n", strerror(errno));
		s->hooks_side = "-";
	}
	return tw_start_daemon(b, s);
}

static void tw_take_down(struct bpf_bench *b, struct tw_setting *s)
{
	stop_daemon(s->daemon);
	s->daemon = -1;
	if (s->far > 0) {
		kill(s->far, SIGKILL);
		waitpid(s->far, NULL, 0);
	}
	rmdir(s->tw_full);
	rmdir(s->fresh_full);
	rmdir(s->hooks_full);
	remove_cgroups(b);
}

/* The four cases: loopback and veth, each fresh and TIME_WAIT-full. */
static void tw_cases_init(struct tw_case cases[4], struct tw_setting *s, uint16_t near_port)
{
	const char *nets[2] = {"loopback", "veth"}, *modes[2] = {"fresh", "time_wait"};

	for (int i = 0; i < 4; i++) {
		bool veth = i >= 2, tw = i % 2;
		cases[i] = (struct tw_case){.net = nets[veth], .mode = modes[tw], .dest = veth ? VETH_FAR_PREFIX : "127.0.0.",
					    .source = veth ? VETH_NEAR : "127.0.0.1",
					    .port = veth ? s->far_port : near_port,
					    .floor_lo = tw ? TW_FLOOR_LO : FRESH_FLOOR_LO,
					    .same_lo = tw ? TW_SAME_LO : FRESH_SAME_LO,
					    .confined = tw ? s->tw_full : s->fresh_full};
	}
}

/* Worker w's run of case c (its own destination address), its figures
 * added to the case's when it ran. */
static void tw_run_worker(struct bpf_bench *b, const struct tw_setting *s, struct tw_case *c, int w)
{
	char port[16], count[16], pairs[16], lo[16], hi[16], same_lo[16], same_hi[16], dest[32];
	double out[TW_FIGURES];

	snprintf(port, sizeof(port), "%u", c->port);
	snprintf(count, sizeof(count), "%d", s->count);
	snprintf(pairs, sizeof(pairs), "%d", s->pairs);
	snprintf(lo, sizeof(lo), "%d", c->floor_lo);
	snprintf(hi, sizeof(hi), "%d", c->floor_lo + TW_SPAN - 1);
	snprintf(same_lo, sizeof(same_lo), "%d", c->same_lo);
	snprintf(same_hi, sizeof(same_hi), "%d", c->same_lo + TW_SPAN - 1);
	snprintf(dest, sizeof(dest), "%s%d", c->dest, w + (strcmp(c->net, "veth") == 0 ? VETH_FAR_FIRST : 1));
	char *args[] = {"cgroup_three", (char *)c->confined, b->native, dest, port, count, pairs, (char *)c->mode,
			(char *)c->source, lo, hi, same_lo, same_hi, (char *)s->hooks_side, NULL};
	run_worker_values(false, NULL, args, out, TW_FIGURES);
	if (isnan(out[5]))	/* over_floor_ns: the worker ran (same-range may be nan) */
		return;
	for (int k = 0; k < TW_FIGURES; k++)
		c->figures[k][c->got] = out[k];
	c->got++;
}

/* Everything below runs in a child with a network namespace of its own;
 * its JSON goes to b->json.  0, or 1 when it could not run. */
static int time_wait_cases(struct bpf_bench *b)
{
	static struct tw_setting s;
	static struct tw_case cases[4];
	struct listener near;
	const char *why = tw_prepare(b, &s);

	fprintf(b->json, "%s\n  \"bpf_time_wait\": ", b->first ? "" : ",");
	if (why) {
		fprintf(b->json, "null, \"bpf_time_wait_skipped\": ");
		json_string(b->json, why);
		printf("| bpf_time_wait | skipped: %s | | | | |\n", why);
	} else {
		listener_start(&near, "0.0.0.0", LISTEN_GREET);	/* each worker's 127.0.0.x */
		tw_cases_init(cases, &s, near.port);
		for (int w = 0; w < s.workers; w++)
			for (int i = 0; i < 4; i++)
				tw_run_worker(b, &s, &cases[i], w);
		listener_stop(&near);
		stop_daemon(s.daemon);
		s.daemon = -1;
		fprintf(b->json, "{");
		bool first_case = true;
		for (int i = 0; i < 4; i++)
			tw_case_report(b, &cases[i], s.log, &first_case);
		fprintf(b->json, "\n  }");
	}
	tw_take_down(b, &s);
	fflush(NULL);
	return why ? 1 : 0;
}

void measure_bpf_time_wait(FILE *json, bool first)
{
	struct bpf_bench b = {.json = json, .first = first};
	const char *why = why_not();

	find_tool(&b);
	if (why) {
		fprintf(json, "%s\n  \"bpf_time_wait\": null, \"bpf_time_wait_skipped\": ", first ? "" : ",");
		json_string(json, why);
		printf("| bpf_time_wait | skipped: %s | | | | |\n", why);
		return;
	}
	fflush(NULL);	/* the child writes after what is written */
	pid_t pid = fork();
	if (pid == 0)
		_exit(time_wait_cases(&b));
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* ---- connect_1000_cgroups: connect cost with 1,000 confined cgroups -- */

/* A child that joins cgroup full and times `count` connects (socket,
 * connect, abortive close: no TIME_WAIT), after a warm-up: CPU ns each
 * (the process's own CPU time, system time included: on a shared
 * machine, the time other processes hold the CPU would otherwise swamp
 * a difference of a few percent). */
static double cpu_seconds_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static double connect_block_ns(const char *full, uint16_t port, int count)
{
	int pipe_fds[2];
	double ns = NAN;
	if (pipe(pipe_fds) < 0)
		return NAN;
	pid_t pid = fork();
	if (pid == 0) {
		char procs[PATH_MAX + 64];
		struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(0x7f000001)};
		struct linger abort_close = {1, 0};
		double result = NAN, start = 0;
		snprintf(procs, sizeof(procs), "%s/cgroup.procs", full);
		int fd = open(procs, O_WRONLY);
		bool joined = fd >= 0 && write(fd, "0", 1) == 1;
		if (fd >= 0)
			close(fd);
		for (int i = -count / 10; joined && i < count; i++) {
			if (i == 0)
				start = cpu_seconds_now();
			int s = socket(AF_INET, SOCK_STREAM, 0);
			if (connect(s, (struct sockaddr *)&to, sizeof(to)) < 0) {
				close(s);
				joined = false;
				break;
			}
			setsockopt(s, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
			close(s);
		}
		if (joined)
			result = (cpu_seconds_now() - start) * 1e9 / count;
		_exit(write(pipe_fds[1], &result, sizeof(result)) == sizeof(result) ? 0 : 1);
	}
	close(pipe_fds[1]);
	if (pid > 0 && read(pipe_fds[0], &ns, sizeof(ns)) != sizeof(ns))
		ns = NAN;
	close(pipe_fds[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return ns;
}

/* Makes (or removes) cgroups base/c-1 .. c-(n-1); with a map, each made
 * one confined at its birth, its id kept in ids. */
static int other_cgroups(const char *base, int n, bool make, int map_fd, __u64 *ids)
{
	char full[PATH_MAX + 32];
	struct stat info;
	int done = 0;
	for (int i = 1; i < n; i++) {
		snprintf(full, sizeof(full), "%s/c-%d", base, i);
		if (!make)
			done += rmdir(full) == 0;
		else if (mkdir(full, 0755) == 0 && confined_in_map(map_fd, full) && stat(full, &info) == 0)
			ids[done++] = (__u64)info.st_ino;
	}
	return done;
}

/* The map entries of count cgroups: put back (app), or deleted (0). */
static void set_entries(int map_fd, const __u64 *ids, int count, __u32 app)
{
	for (int i = 0; i < count; i++) {
		union bpf_attr attr = {0};
		attr.map_fd = (__u32)map_fd;
		attr.key = (__u64)(unsigned long)&ids[i];
		attr.value = (__u64)(unsigned long)&app;
		syscall(SYS_bpf, app ? BPF_MAP_UPDATE_ELEM : BPF_MAP_DELETE_ELEM, &attr, sizeof(attr));
	}
}

/* The same app's connects from one cgroup while it is the only one
 * confined, and while 999 others are: 1,000 cgroups are made (each
 * confined at its birth), then the two states alternate in one run, the
 * 999 others' entries in the daemon's map deleted and put back between
 * blocks (what the hooks see; the cgroups and the daemon stay still),
 * which state goes first turning each round.
 * The ratio is the median of the rounds' own ratios (a round's two
 * blocks run back to back, so a shared machine's noise cancels better
 * than between the two medians, which are printed beside it). */
void measure_connect_1000_cgroups(FILE *json, bool first)
{
	enum { CGROUPS = 1000 };
	struct bpf_bench b = {.json = json};
	char base[PATH_MAX] = "", lone[PATH_MAX + 32];
	int rounds = settings.quick ? 3 : 41, block = settings.quick ? 500 : 1000, made = 0;
	double one[41], many[41], ratio[41];
	int measured = 0;
	pid_t daemon = -1;
	int map_fd = -1;
	const char *why = start_glob_daemon(&b, "benchmany", base, sizeof(base), false, &daemon, &map_fd);
	snprintf(lone, sizeof(lone), "%s/c-0", base);
	if (!why && (mkdir(lone, 0755) < 0 || !confined_in_map(map_fd, lone)))
		why = "the bench's cgroup was not confined at its birth";
	static __u64 ids[CGROUPS];
	__u32 app = 0;
	if (!why && (made = other_cgroups(base, CGROUPS, true, map_fd, ids)) != CGROUPS - 1)
		why = "not every cgroup made was confined at its birth";
	struct stat info;
	__u64 lone_id = stat(lone, &info) == 0 ? (__u64)info.st_ino : 0;
	union bpf_attr attr = {.map_fd = (__u32)map_fd, .key = (__u64)(unsigned long)&lone_id,
			       .value = (__u64)(unsigned long)&app};
	if (!why && syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr)) < 0)
		why = "the bench's cgroup has no entry in the daemon's map";
	struct listener server;
	if (!why) {
		listener_start(&server, "127.0.0.1", LISTEN_CLOSE);
		nanosleep(&(struct timespec){.tv_sec = 2}, NULL);	/* the daemon has seen them all */
		for (int r = 0; r < rounds; r++) {
			/* The order turns each round (one first, then 1,000 first),
			 * so that neither state always follows the other. */
			double a = NAN, m = NAN;
			for (int turn = 0; turn < 2; turn++) {
				bool lone_now = (turn == 0) == (r % 2 == 0);
				set_entries(map_fd, ids, made, lone_now ? 0 : app);
				/* Deleted entries are freed after an RCU grace period,
				 * in softirq time a block would otherwise be charged. */
				nanosleep(&(struct timespec){.tv_nsec = 200000000}, NULL);
				*(lone_now ? &a : &m) = connect_block_ns(lone, server.port, block);
			}
			if (isnan(a) || isnan(m))
				continue;
			one[measured] = a;
			many[measured] = m;
			ratio[measured++] = m / a;
		}
		listener_stop(&server);
	}
	other_cgroups(base, CGROUPS, false, -1, ids);
	rmdir(lone);
	stop_glob_daemon(daemon, map_fd, base);
	fprintf(json, "%s\n  \"connect_1000_cgroups\": ", first ? "" : ",");
	if (why || measured == 0) {
		why = why ? why : "no round could be measured";
		fprintf(json, "null, \"connect_1000_cgroups_skipped\": ");
		json_string(json, why);
		printf("| connect_1000_cgroups | skipped: %s | | | | |\n", why);
		return;
	}
	double one_ns = median(one, measured), many_ns = median(many, measured), paired = median(ratio, measured);
	fprintf(json, "{\"rounds\": %d, \"connects_per_block\": %d, \"one_cgroup_ns\": %.0f, \"cgroups_1000_ns\": %.0f, "
		"\"ratio\": %.4f, \"ratio_of_medians\": %.4f}", measured, block, one_ns, many_ns, paired,
		many_ns / one_ns);
	printf("| connect_1000_cgroups | connect+close in a confined cgroup, 1 vs 1,000 confined (median of %d rounds' "
	       "ratios; of the medians %.3f), CPU ns | %.0f | %.0f | %.3f | <= 1.02 |\n", measured, many_ns / one_ns, one_ns,
	       many_ns, paired);
}
