/* The speed of the operator's questions (issue 21):
 * - report_2m: `portfence report --json` on a log of 2,000,000 records
 *   (every one a new destination: the destination tables at their cap),
 *   wall and CPU seconds and peak memory; target < 10 s, bounded memory;
 * - who_at_2m: `portfence who ADDR:PORT --at TIME` on the same log;
 *   target < 2 s;
 * - watch_20000: the CPU `portfence status --watch` uses, refreshing each
 *   second with 20,000 sockets in the ranges; target < 5% of one core.
 * A quick run uses 20,000 records and 200 sockets. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static char log_path[256];

static long records(void)
{
	return settings.quick ? 20000 : 2000000;
}

/* The log, written once for both measures. */
static const char *big_log(void)
{
	if (log_path[0])
		return log_path;
	snprintf(log_path, sizeof(log_path), "%s/questions.jsonl", settings.dir);
	FILE *f = fopen(log_path, "w");
	if (!f)
		return NULL;
	for (long i = 0; i < records(); i++) {
		long s = i / 1000;
		fprintf(f,
			"{\"ts\":\"2026-11-21T%02ld:%02ld:%02ld.%06ldZ\",\"event\":\"assign\",\"app\":\"app%ld\",\"pid\":%ld,"
			"\"exe\":\"/usr/bin/curl\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"127.0.0.1:%ld\","
			"\"remote\":\"10.%ld.%ld.%ld:%d\",\"algorithm\":\"double-hash\",\"attempts\":1,\"result\":\"ok\"}\n",
			s / 3600 % 24, s / 60 % 60, s % 60, i % 1000000, i % 4, 1000 + i % 50000, 61000 + i % 1000,
			(i >> 16) & 255, (i >> 8) & 255, i & 255, i % 3 ? 443 : 80);
	}
	fclose(f);
	return log_path;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	return (double)(end.tv_sec - start->tv_sec) + (double)(end.tv_nsec - start->tv_nsec) / 1e9;
}

pid_t bench_spawn_quiet(char *const argv[], bool no_input)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		if (!freopen("/dev/null", "w", stdout) || (no_input && !freopen("/dev/null", "r", stdin)))
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static double cpu_of(const struct rusage *usage)
{
	return (double)usage->ru_utime.tv_sec + (double)usage->ru_utime.tv_usec / 1e6 +
	       (double)usage->ru_stime.tv_sec + (double)usage->ru_stime.tv_usec / 1e6;
}

/* Runs argv with stdout to /dev/null: wall seconds, CPU seconds, peak KiB. */
static bool timed(char *const argv[], double *wall, double *cpu, long *peak_kib)
{
	struct timespec start;
	struct rusage usage;
	int status;

	clock_gettime(CLOCK_MONOTONIC, &start);
	pid_t pid = bench_spawn_quiet(argv, false);
	if (pid < 0 || wait4(pid, &status, 0, &usage) < 0)
		return false;
	*wall = seconds_since(&start);
	*cpu = cpu_of(&usage);
	*peak_kib = usage.ru_maxrss;
	return WIFEXITED(status) && WEXITSTATUS(status) <= 1;
}

/* The tool with args on the big log: wall and CPU seconds, peak memory. */
static void measure_on_log(const char *name, const char *what, const char *target, const char *args[3])
{
	char text[256];
	double wall = -1, cpu = -1;
	long peak = 0;
	const char *log = big_log();

	char *argv[] = {settings.tool, (char *)args[0], (char *)args[1], (char *)args[2], (char *)log, NULL};
	if (!log || !timed(argv, &wall, &cpu, &peak))
		wall = cpu = -1;
	snprintf(text, sizeof(text), "\"records\": %ld, \"seconds\": %s, \"cpu_seconds\": %s, \"peak_kib\": %ld}",
		 records(), json_number(wall, 3).text, json_number(cpu, 3).text, peak);
	bench_json_measure(name, text);
	printf("| %s | %s, %ld records | - | %.2f s (cpu %.2f s, %ld KiB) | - | %s |\n", name, what, records(), wall,
	       cpu, peak, target);
}

void measure_report_2m(void)
{
	const char *args[3] = {"report", "--json", "--since=2026-11-21"};
	measure_on_log("report_2m", "portfence report --json", "< 10 s", args);
}

void measure_who_at_2m(void)
{
	const char *args[3] = {"who", "127.0.0.1:61500", "--at=2026-11-21T00:20:00"};
	measure_on_log("who_at_2m", "portfence who --at", "< 2 s", args);
}

/* status --watch for a while, its stdout to /dev/null (80x24) and stdin
 * closed; then SIGTERM: CPU seconds over wall seconds. */
static double watch_share(const char *tool, const char *policy, void *ctx)
{
	double seconds = *(double *)ctx;
	struct timespec start;
	struct rusage usage;
	int status;

	char *argv[] = {(char *)tool, "status", "--watch", "-c", (char *)policy, NULL};
	clock_gettime(CLOCK_MONOTONIC, &start);
	pid_t pid = bench_spawn_quiet(argv, true);
	if (pid < 0)
		return -1;
	usleep((useconds_t)(seconds * 1e6));
	kill(pid, SIGTERM);
	if (wait4(pid, &status, 0, &usage) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return cpu_of(&usage) / seconds_since(&start);
}

void measure_watch_20000(void)
{
	int wanted = settings.quick ? 200 : 20000, opened = 0;
	double seconds = settings.quick ? 3 : 20;
	double share = bench_with_sockets(wanted, &opened, watch_share, &seconds);
	char text[160];

	snprintf(text, sizeof(text), "\"sockets\": %d, \"seconds\": %s, \"cpu_share\": %s}", opened,
		 json_number(seconds, 0).text, json_number(share, 4).text);
	bench_json_measure("watch_20000", text);
	printf("| watch_20000 | portfence status --watch, %d sockets in the ranges | - | %.1f%% of a core | - | < 5%% |\n",
	       opened, 100 * share);
}
