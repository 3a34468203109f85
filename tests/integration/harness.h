/* Shared pieces of the integration tests: real servers on loopback that
 * record the source port of every client, a sandbox directory per test,
 * and a runner for programs under `portfence run`.  The test runner
 * itself is never preloaded. */
#ifndef PORTFENCE_HARNESS_H
#define PORTFENCE_HARNESS_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MAX_PEERS 8192

/* GREET writes one line on accept, then drains: a request/response
 * pattern that keeps the server in step with a fast client.  GREET_CLOSE
 * closes right after the line: a client that forks may leave copies of
 * its sockets in a child, and a server waiting for their EOF would stall
 * on them. */
/* SERVE_STALL accepts and never reads: connections stay open, their
 * queues full, until the server stops. */
/* SERVE_UDPLITE_ECHO is SERVE_UDP_ECHO on a UDP-Lite socket. */
enum server_mode {
	SERVE_HTTP, SERVE_DRAIN, SERVE_GREET, SERVE_GREET_CLOSE, SERVE_UDP_ECHO, SERVE_STALL, SERVE_UDPLITE_ECHO
};
#define MAX_STALLED 64

struct server {
	int fd;
	int family;
	uint16_t port;
	enum server_mode mode;
	pthread_t thread;
	atomic_int stop;
	atomic_int count;
	uint16_t peers[MAX_PEERS];
	int stalled[MAX_STALLED];
	int stalled_count;
};

/* Starts a server on addr ("127.0.0.1", "127.0.0.2", "::1") at a port
 * the kernel picks. */
void server_start(struct server *s, const char *addr, enum server_mode mode);
void server_stop(struct server *s);
bool server_saw(struct server *s, uint16_t port);

struct sandbox {
	char dir[64];
	char policy[128];
	char log[128];
	char state[128];
};

/* A fresh directory with a policy: the log and state_dir lines are
 * written for the test, then apps_text (libconfig) follows. */
void sandbox_init(struct sandbox *sb, const char *apps_text);
/* Moves the test process into a network namespace of its own, loopback
 * up: what it then runs sees no socket an earlier test left (a
 * TIME_WAIT on a port it binds by number lasts 60 s). */
void private_loopback_net(void);
void sandbox_cleanup(struct sandbox *sb);

/* A directory of the test's own with no policy in it (sandbox_init
 * writes one), for a log the test writes itself or files of its own. */
struct temp_dir {
	char dir[64];	/* /tmp/pf-NAME-XXXXXX, made */
	char log[128];	/* DIR/audit.jsonl, not made */
};

void temp_dir_make(struct temp_dir *temp, const char *name);
/* rm -rf of the directory: the test fails when it cannot (where
 * sandbox_cleanup only says so). */
void temp_dir_remove(const struct temp_dir *temp);

/* The default policy (/etc/portfence.conf) as this test process and what
 * it runs see it: text, or none (NULL).  The first call moves the process
 * into a mount namespace of its own with an overlay on /etc, so the
 * host's /etc is never written. */
void default_policy(const char *text);
/* A copy of build/NAME that every user can run, for a test that runs it
 * as another user: the checkout may sit in a directory only root can
 * enter (fresh-ci clones into a 0700 one).  The tool's copy has the shim
 * beside it.  Up to 8 paths stay valid at once. */
const char *build_path_for_others(const char *name);

struct run_result {
	int status;	/* exit status, or 128+signal */
	char out[262144];
	char err[16384];
};

/* Runs argv (NULL-terminated) with optional stdin text and extra
 * environment ("NAME=value", NULL-terminated or NULL), killed after 60 s. */
void run_program(struct run_result *r, char *const argv[], const char *stdin_text,
		 char *const extra_env[]);
/* portfence run -c POLICY [-a APP] -- argv... */
void run_under(struct run_result *r, const struct sandbox *sb, const char *app,
	       char *const argv[], const char *stdin_text);

/* portfence run OPTIONS... -c POLICY [-a APP] -- argv... (options: NULL-terminated). */
void run_under_with(struct run_result *r, char *const options[], const struct sandbox *sb, const char *app,
		    char *const argv[]);
/* A loopback port free for both UDP and TCP (a DNS server's). */
uint16_t free_dns_port(void);

/* `portfence daemon -c sb->policy` in the background (stdin /dev/null,
 * stdout and stderr to sb->dir/daemon.out; it dies with the test
 * process): its pid.  daemon_text: what it wrote so far. */
pid_t daemon_spawn(const struct sandbox *sb);
/* The same, its output in the sandbox file out_name. */
pid_t daemon_spawn_to(const struct sandbox *sb, const char *out_name);
const char *daemon_text(const struct sandbox *sb);
/* portfence run -c POLICY [-a APP] -- argv... in the background, its
 * stdout and stderr appended to out_path; killed after 60 s. */
pid_t spawn_under(const struct sandbox *sb, const char *app, char *const argv[],
		  const char *out_path);
/* argv in the background, as run_program runs it (the environment of a
 * sanitizer build included), its output appended to out_path; killed
 * after 60 s. */
pid_t spawn_program(char *const argv[], const char *out_path);
/* Its exit status, or 128+signal. */
int wait_child(pid_t pid);
/* Waits up to `seconds` for path to exist. */
bool await_file(const char *path, int seconds);

const char *build_path(const char *name);
/* The file's text (empty if it cannot be read), cut to len - 1 bytes. */
void read_all(const char *path, char *buf, size_t len);
/* "LD_PRELOAD=..." that loads the shim directly (sanitizer runtime first
 * in a sanitizer build). */
const char *shim_preload_env(void);
/* curl and wget deadlock in setlocale() when any ASan runtime is
 * preloaded into them (seen without the shim too): in a sanitizer build
 * their tests are reported skipped, never passed. */
void skip_if_sanitized(const char *program);

/* Audit records of a log, as a JSON array (never NULL). */
json_t *audit_records(const char *log_path);
json_t *audit_find(json_t *records, const char *event, int nth);
/* The member of root's "apps" array whose "app" is name, or NULL. */
json_t *app_entry(json_t *root, const char *name);
uint16_t address_port(const char *address);
unsigned count_lines_starting(const char *text, const char *prefix);

/* Whether the BPF backend can run here, from the machine's facts (root,
 * a writable cgroup v2 mount, Linux >= 6.2, bpf(2) allowed), never from
 * the tool: NULL when it can, else the reason.  The cgroup v2 mount point
 * goes to cgroup_mount. */
const char *bpf_machine_missing(char *cgroup_mount, size_t len);
/* Skips the running test, with the reason, where the BPF backend cannot
 * run (bpf_machine_missing): the `--bpf` row of a behaviour both
 * backends share. */
void skip_unless_bpf_machine(void);
/* One behaviour on both backends: Test(suite, name) runs check(false)
 * under `run`, Test(suite, name_bpf) runs check(true) under `run --bpf`
 * (skipped, with the reason, where the machine cannot).  Arguments after
 * seconds are passed to check after the backend: one check serves
 * several rows. */
#define TEST_ON_BOTH_BACKENDS(suite, name, check, seconds, ...) \
	Test(suite, name, .timeout = seconds)                    \
	{                                                        \
		check(false, ##__VA_ARGS__);                     \
	}                                                        \
	Test(suite, name##_bpf, .timeout = seconds)              \
	{                                                        \
		skip_unless_bpf_machine();                       \
		check(true, ##__VA_ARGS__);                      \
	}
/* The same, for a test that needs the cgroup v2 mount point too (it goes
 * to cgroup_mount). */
void skip_unless_bpf_machine_at(char *cgroup_mount, size_t len);

/* The tests that hold a process's system calls with strace: strace is
 * there (`make deps`), and the kernel lets it attach. */
void skip_unless_strace_can_attach(void);

#endif
