#ifndef PORTFENCE_BENCH_H
#define PORTFENCE_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct settings {
	bool quick;
	const char *out;
	char *self;	/* this program, re-executed as a worker */
	char *shim;	/* libportfence.so next to it */
	/* --compare-shim: another build of the shim, measured as
	 * tcp_connect's double-hash_nolog_compared in the same interleaved
	 * rounds (an A/B of two builds that the day's noise cannot split);
	 * NULL: none */
	char *compare_shim;
	char *tool;	/* the portfence tool next to it */
	char dir[64];	/* scratch: policies, state, audit log */
	const char *worker_cgroup;	/* a cgroup directory workers start in, or NULL */
	/* --only: the measures to run (comma-separated names, as in
	 * bench.json); NULL: all */
	const char *only;
	/* --variants: the variants of a measure to run; NULL: all */
	const char *variants;
	int workers;	/* --workers: workers per paired figure; 0: the default */
	int pairs;	/* --pairs: block pairs per worker; 0: the default */
	int count;	/* --count: operations per tcp_connect block; 0: the default */
};
/* Whether name is in the comma-separated list (NULL: every name is). */
bool bench_listed(const char *list, const char *name);
extern struct settings settings;

/* CLOSE: accept and close; GREET: write a line, drain, close; HTTP:
 * read a request, answer 200, close; SINK: read until EOF with a large
 * buffer, so a sender never waits on flow control. */
enum listener_mode { LISTEN_CLOSE, LISTEN_GREET, LISTEN_HTTP, LISTEN_SINK };

struct listener {
	int fd;
	uint16_t port;
	enum listener_mode mode;
	pthread_t thread;
	atomic_int stop;
};

void listener_start(struct listener *l, const char *addr, enum listener_mode mode);
void listener_stop(struct listener *l);
int udp_sink(uint16_t *port);
/* The environment of a shimmed child, made before fork (see bench.c). */
char **shim_environ(const char *policy);
void shim_environ_free(char **env);
void write_policy(const char *path, const char *algorithm, bool log, uint16_t lo, uint16_t hi);
/* The same with the log's file name under the bench's directory (NULL:
 * no log). */
void write_policy_logging(const char *path, const char *algorithm, const char *log, uint16_t lo,
			  uint16_t hi);
/* The worker's first number; its second, if any, goes to *extra. */
double run_worker(bool shim, const char *policy, char *const args[], double *extra);
double median(double *values, int count);
/* The worker's first number, and up to two more in extra[]. */
double run_worker_numbers(bool shim, const char *policy, char *const args[], double extra[2]);
/* All of a worker's figures (NaN where it printed fewer): a paired
 * worker prints native ns, other ns, ratio, added ns. */
#define WORKER_FIGURES 4
void run_worker_figures(bool shim, const char *policy, char *const args[], double out[WORKER_FIGURES]);
/* The first count numbers a worker printed (NaN where it printed fewer). */
void run_worker_values(bool shim, const char *policy, char *const args[], double *out, int count);
/* The floor's added ns over native (by_hand_nolog) when tcp_connect
 * measured it in this run, else NaN: the BPF section reports over it. */
extern double bench_floor_added_ns;
int run_all_measures(void);
/* One busy process per core, at normal priority, until hog_stop(). */
void hog_start(void);
void hog_stop(void);
/* Median seconds of `portfence status --json` with about `sockets`
 * sockets open in the policy's ranges (*opened: how many), or -1. */
double bench_status_seconds(int sockets, int *opened);
/* The same sockets, held while probe(tool, policy, ctx) runs: its value. */
double bench_with_sockets(int sockets, int *opened, double (*probe)(const char *tool, const char *policy, void *ctx),
			  void *ctx);
/* Issue 21's speed measures (bench/questions.c): report and who --at on
 * a 2-million-record log, status --watch's CPU with 20,000 sockets. */
void measure_report_2m(void);
void measure_who_at_2m(void);
void measure_watch_20000(void);
/* Starts argv with stdout (and, with no_input, stdin) on /dev/null. */
pid_t bench_spawn_quiet(char *const argv[], bool no_input);
/* Opens a measure's object in bench.json (bench/measures.c). */
void bench_json_measure(const char *name, const char *text);
/* A number as bench.json holds it: "null" when it could not be measured
 * (NaN or infinite), so that the file stays JSON.  The text lives as
 * long as the expression that made it. */
struct json_number {
	char text[32];
};
struct json_number json_number(double value, int decimals);
/* text as a JSON string, quoted and escaped. */
void json_string(FILE *out, const char *text);
/* The BPF backend's section (bench/bpf_measures.c); JSON into json. */
void measure_bpf(FILE *json, bool first);
/* bpf_burst: a burst of 50,000 records under the daemon, written and
 * lost (null when it cannot run). */
void measure_bpf_burst(FILE *json, bool first);
/* bpf_time_wait: the BPF backend (records on), native and the floor
 * interleaved, on loopback and a veth pair in a namespace of its own,
 * with and without a range full of TIME_WAIT. */
void measure_bpf_time_wait(FILE *json, bool first);
/* The hooks a TCP connect and its close run (connect4, sockops,
 * sock_release, sock_create), in that order. */
#define PROGRAM_HOOKS 4
/* The kernel's run-time statistics of BPF programs on while the
 * descriptor it returns stays open (BPF_ENABLE_STATS), or -1. */
int program_stats_on(void);
/* Each hook's programs' run time so far (ns), summed into ns[]:
 * portfence's, or with bare the bench's empty ones: 0, or -1. */
int program_run_ns(double ns[PROGRAM_HOOKS], bool bare);
/* The figures of all PROGRAM_HOOKS hooks added up. */
double program_hooks_sum(const double ns[PROGRAM_HOOKS]);
/* cgroup_confine_ms: a new cgroup matched by a glob, from mkdir to
 * confined by the daemon (median, max); and connects at birth that
 * left from outside the range. */
void measure_cgroup_confine(FILE *json, bool first);
void measure_connect_1000_cgroups(FILE *json, bool first);

#endif
