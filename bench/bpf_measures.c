/* The BPF backend's section: socket + connect + close confined by the
 * programs against native, blocks alternating in one process (log on and
 * off); churn through 10 and 100 ports; and how long an attach takes.
 * The programs are attached by the tool itself (`portfence daemon`, which
 * also drains the records, and `portfence attach`). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cgroup.h"
#include "pins.h"

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

/* The daemon has attached when its pinned connect4 link is there; a
 * daemon that exits first could not.  Loading and verifying takes
 * seconds on a busy machine (14 s seen on 2 cores under load). */
static bool wait_attached(struct bpf_bench *b, pid_t daemon)
{
	char name[PATH_MAX], relative[PATH_MAX], pin[PATH_MAX * 2];
	struct stat info;

	snprintf(relative, sizeof(relative), "%s/bpf", b->base_relative);
	pf_pin_name_encode(relative, name, sizeof(name));
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/portfence/benchbpf/%s/pf_connect4", name);
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

static pid_t start_daemon(struct bpf_bench *b, const char *policy)
{
	char *args[] = {"daemon", "-c", (char *)policy, NULL};
	pid_t pid = start_tool(b, args);
	if (pid < 0) {
		snprintf(b->reason, sizeof(b->reason), "cannot fork: %s", strerror(errno));
		return -1;
	}
	return wait_attached(b, pid) ? pid : -1;
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

static void stop_daemon(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

static void connect_pair(struct bpf_bench *b, bool log, uint16_t port)
{
	char policy[PATH_MAX], port_text[16], count_text[16], pairs_text[16];
	double native[16], confined[16], ratio[16];
	int workers = settings.quick ? 1 : 5, n = 0;

	snprintf(policy, sizeof(policy), "%s/bpf-%s.conf", settings.dir, log ? "log" : "nolog");
	write_bpf_policy(b, policy, log, 61000, 61999, true);
	pid_t daemon = start_daemon(b, policy);
	const char *key = log ? "bpf_connect" : "bpf_connect_nolog";
	if (daemon < 0) {
		skipped(b, key, log ? "tcp_connect, log on" : "tcp_connect, log off");
		return;
	}
	snprintf(port_text, sizeof(port_text), "%u", port);
	snprintf(count_text, sizeof(count_text), "%d", settings.quick ? 50 : 300);
	snprintf(pairs_text, sizeof(pairs_text), "%d", settings.quick ? 4 : 16);
	char *args[] = {"cgroup_paired", b->confined, b->native, port_text, count_text, pairs_text, NULL};
	for (int w = 0; w < workers; w++) {
		double extra[2];
		double a = run_worker_numbers(false, NULL, args, extra);
		if (isnan(a))
			continue;
		native[n] = a, confined[n] = extra[0], ratio[n] = extra[1];
		n++;
	}
	stop_daemon(daemon);
	double med_native = n ? median(native, n) : NAN, med_bpf = n ? median(confined, n) : NAN;
	double med_ratio = n ? median(ratio, n) : NAN;
	fprintf(b->json, "%s\n    \"%s\": {\"native_ns\": %s, \"bpf_ns\": %s, \"ratio\": %s}",
		b->first ? "" : ",", key, json_number(med_native, 1).text, json_number(med_bpf, 1).text,
		json_number(med_ratio, 4).text);
	b->first = false;
	printf("| bpf | tcp_connect, %s | %.0f | %.0f | %.3f | %s |\n", log ? "log on" : "log off", med_native,
	       med_bpf, med_ratio, log ? "<= 1.10" : "<= 1.05");
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
	snprintf(b->native, sizeof(b->native), "%s/native", b->base);
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

void measure_bpf(FILE *json, bool first)
{
	struct bpf_bench b = {.json = json, .first = true};
	struct listener connect_server, churn_server;
	const char *why = why_not();

	snprintf(b.err_path, sizeof(b.err_path), "%s/tool.err", settings.dir);
	snprintf(b.tool, sizeof(b.tool), "%s", settings.self);
	char *slash = strrchr(b.tool, '/');
	snprintf(slash + 1, sizeof(b.tool) - (size_t)(slash + 1 - b.tool), "portfence");
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
	listener_stop(&connect_server);
	listener_start(&churn_server, "127.0.0.1", LISTEN_GREET);
	churn(&b, churn_server.port, 10);
	churn(&b, churn_server.port, 100);
	listener_stop(&churn_server);
	attach_time(&b);
	remove_cgroups(&b);
	fprintf(json, "\n  }");
}
