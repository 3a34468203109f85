/* The policy that applies to this process, loaded by the library's
 * constructor at start-up: before the program can drop privileges, block
 * signals in malloc, or cancel a thread, none of which the load (malloc,
 * locks, file reads) survives.  A hook that runs before the constructor
 * (another library's constructor) loads it at that first call instead.
 * A mutex and an atomic flag rather than pthread_once: the atfork
 * handlers hold the mutex across fork(), so a child never inherits a
 * half-done load. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/holds.h"
#include "kernel/kernel_ports.h"
#include "shim.h"

PF_HOT_TAIL static struct pf_runtime runtime;
static _Atomic int runtime_ready;
static pthread_mutex_t runtime_lock = PTHREAD_MUTEX_INITIALIZER;
PF_HOT_DATA _Atomic unsigned pf_fork_generation;

__thread struct pf_thread_rng pf_thread_rng_state __attribute__((tls_model("initial-exec")));
__thread int *pf_errno_address __attribute__((tls_model("initial-exec")));

int *pf_errno_address_first(void)
{
	return pf_errno_address = __errno_location();
}

struct pf_rng *pf_thread_rng_seed(pid_t pid, unsigned generation)
{
	struct pf_thread_rng *t = &pf_thread_rng_state;

	/* A child must not replay its parent's random sequence. */
	if (pf_rng_seed_random(&t->rng) < 0)
		pf_rng_seed(&t->rng, (uint64_t)pid ^ (uint64_t)(uintptr_t)t);
	t->generation = generation;
	t->seeded = true;
	return &t->rng;
}

static void before_fork(void)
{
	pf_fd_holds_fork_begins();
	pthread_mutex_lock(&runtime_lock);
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&runtime_lock);
}

/* The pid cache lives in a page the kernel zeroes in every child made
 * without CLONE_VM: fork(), _Fork(), clone() and syscall(SYS_clone) alike,
 * though only fork() runs the atfork handlers.  A zero pid is a new
 * process: one getpid() then, none on any other call.  Where the page
 * cannot be had, the cache is plain memory and only the atfork handler
 * refreshes it. */
static struct pf_pid_page fallback_pid;
PF_HOT_DATA _Atomic(struct pf_pid_page *) pf_pid_page;

static struct pf_pid_page *wipe_on_fork_page(void)
{
	struct pf_pid_page *page = atomic_load_explicit(&pf_pid_page, memory_order_acquire);
	long size = sysconf(_SC_PAGESIZE);

	if (page)
		return page;
	void *map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct pf_pid_page *fresh = &fallback_pid;
	if (map != MAP_FAILED && madvise(map, (size_t)size, MADV_WIPEONFORK) == 0)
		fresh = map;
	else if (map != MAP_FAILED)
		munmap(map, (size_t)size);
	if (!atomic_compare_exchange_strong(&pf_pid_page, &page, fresh)) {
		if (fresh != &fallback_pid)
			munmap(fresh, (size_t)size);
		return page;
	}
	return fresh;
}

pid_t pf_cached_pid_slow(void)
{
	struct pf_pid_page *page = atomic_load_explicit(&pf_pid_page, memory_order_acquire);
	if (!page)
		page = wipe_on_fork_page();
	pid_t pid = atomic_load_explicit(&page->pid, memory_order_relaxed);
	if (pid == 0) {
		pid_t expected = 0;
		pid = getpid();
		/* The first to see the new process starts a new generation. */
		if (atomic_compare_exchange_strong(&page->pid, &expected, pid))
			atomic_fetch_add(&pf_fork_generation, 1);
	}
	return pid;
}

static void after_fork_child(void)
{
	struct pf_pid_page *page = atomic_load(&pf_pid_page);
	if (page)
		atomic_store(&page->pid, 0);
	atomic_fetch_add(&pf_fork_generation, 1);
	pthread_mutex_unlock(&runtime_lock);
}

/* What went wrong at start-up is said on stderr at the first call that
 * needs the policy, as when the policy loaded there: a shell or env that
 * merely passes through must not print it too. */
static char deferred_lines[4096];
static size_t deferred_len;
static _Atomic int deferred_pending;

static void defer_stderr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void defer_stderr(const char *fmt, ...)
{
	size_t room = sizeof(deferred_lines) - deferred_len;
	va_list args;

	va_start(args, fmt);
	int n = vsnprintf(deferred_lines + deferred_len, room, fmt, args);
	va_end(args);
	if (n < 0 || (size_t)n + 1 >= room)
		return;
	deferred_len += (size_t)n + 1;	/* keeps the NUL: one line each */
	atomic_store(&deferred_pending, 1);
}

static void say_deferred(void)
{
	if (!atomic_exchange(&deferred_pending, 0))
		return;
	for (size_t at = 0; at < deferred_len; at += strlen(deferred_lines + at) + 1)
		pf_stderr("%s", deferred_lines + at);
}

static void read_identity(struct pf_runtime *rt, struct pf_process_identity *who,
			  char *comm, size_t comm_len)
{
	char link[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", link, sizeof(link) - 1);

	rt->exe[0] = '\0';
	if (n > 0) {
		link[n] = '\0';
		snprintf(rt->exe, sizeof(rt->exe), "%s", link);
	}
	memset(comm, 0, comm_len);
	if (prctl(PR_GET_NAME, comm) < 0)
		comm[0] = '\0';
	who->forced_app = secure_getenv("PORTFENCE_APP");
	who->exe_path = rt->exe[0] ? rt->exe : NULL;
	who->comm = comm[0] ? comm : NULL;
	who->program_name = program_invocation_short_name;
}

/* Decides what to do when the policy cannot be used. */
static void policy_unusable(struct pf_runtime *rt, bool on_error_pass, const char *why)
{
	if (on_error_pass) {
		rt->status = PF_STATUS_PASS;
		defer_stderr("portfence: policy unusable, programs run unconfined (on_error = pass): %s", why);
		return;
	}
	rt->status = PF_STATUS_DENY;
	snprintf(rt->why, sizeof(rt->why), "%s", why);
	defer_stderr("portfence: policy unusable, refusing network calls with EPERM (on_error = deny): %s",
		  why);
}

static bool kernel_range_usable(const struct pf_app *app, char *why, size_t why_len)
{
	static struct pf_kernel_ports ports;
	struct pf_range_fit fit;

	if (pf_kernel_ports_read(NULL, &ports) < 0) {
		snprintf(why, why_len, "cannot read net.ipv4.ip_local_port_range for algorithm kernel");
		return false;
	}
	pf_range_fit(&ports, app->range_lo, app->range_hi, &fit);
	if (fit.inside_ephemeral && fit.reserved == 0)
		return true;
	snprintf(why, why_len,
		 "%s:%d: algorithm \"kernel\" cannot keep app '%s' in %u-%u here "
		 "(ip_local_port_range %u-%u%s)",
		 app->file, app->algorithm_line, app->name, app->range_lo, app->range_hi,
		 ports.ephemeral_lo, ports.ephemeral_hi,
		 fit.reserved ? ", and some of its ports are reserved" : "");
	return false;
}

static void open_state(struct pf_runtime *rt)
{
	char dir[PATH_MAX];
	const char *configured = rt->policy.state_dir;
	uint32_t num_ports = (uint32_t)rt->app->range_hi - rt->app->range_lo + 1;
	int rc;

	if (configured)
		snprintf(dir, sizeof(dir), "%s", configured);
	else
		pf_state_default_dir(secure_getenv("XDG_RUNTIME_DIR"), dir, sizeof(dir));
	rc = pf_state_open(dir, rt->app->name, num_ports, &rt->state);
	if (rc == 0)
		return;
	defer_stderr("portfence: cannot use state directory %s (%s); app '%s' keeps a "
		  "process-local sequence", dir, strerror(-rc), rt->app->name);
	if (pf_state_open_private(num_ports, &rt->state) < 0)
		rt->state.shared = NULL;
}

static char *json_dup(const char *text)
{
	size_t room = strlen(text) * 6 + 1;
	char *out = malloc(room);
	if (out)
		pf_json_escape(text, out, room);
	return out;
}

/* With a collector running, an app's records go to it, and the program
 * holds no log at all (the file is opened only if the collector ever
 * fails it); PORTFENCE_LOG, a log of the program's own choosing, is
 * written directly. */
static void open_log(struct pf_runtime *rt, const struct pf_app *app)
{
	const char *path = secure_getenv("PORTFENCE_LOG");
	bool overridden = path && path[0];
	char why[512];

	if (!overridden)
		path = rt->policy.log_file;
	pf_log_enable_syslog(rt->policy.log_syslog);
	if (path)
		pf_log_fallback(path);
	/* A policy that asks for no record at all gets none, collector or not. */
	if (app && !overridden && (path || rt->policy.log_syslog) &&
	    pf_collect_start(app->name, pf_algorithm_name(app->algorithm)))
		return;
	if (path && pf_log_open(path, why, sizeof(why)) < 0)
		defer_stderr("portfence: %s; audit records are not written until a collector (portfence daemon) "
			     "takes them", why);
}

static void activate_app(struct pf_runtime *rt, int index)
{
	const char *mode = secure_getenv("PORTFENCE_MODE");
	char why[900];

	rt->app = &rt->policy.apps[index];
	rt->mode = mode && strcmp(mode, "audit") == 0 ? PF_MODE_AUDIT : rt->app->mode;
	rt->rules = rt->app->has_allow || rt->app->deny.count > 0;
	rt->notify = rt->notify || rt->app->notify_stderr;
	rt->app_json = json_dup(rt->app->name);
	if (rt->app->algorithm == PF_ALGO_KERNEL && !kernel_range_usable(rt->app, why, sizeof(why))) {
		policy_unusable(rt, rt->policy.on_error_pass, why);
		return;
	}
	open_state(rt);
	if (!rt->state.shared) {
		policy_unusable(rt, rt->policy.on_error_pass, "cannot allocate the algorithm state");
		return;
	}
	rt->status = PF_STATUS_ACTIVE;
}

static void load_runtime(struct pf_runtime *rt)
{
	struct pf_process_identity who;
	struct pf_diags diags = {0};
	char comm[32];
	const char *path = secure_getenv("PORTFENCE_CONFIG");

	if (!path || !path[0])
		path = PF_DEFAULT_CONFIG;
	read_identity(rt, &who, comm, sizeof(comm));
	/* `portfence run -v` asks for the notices of every app. */
	const char *notify = secure_getenv("PORTFENCE_NOTIFY");
	rt->notify = notify && strcmp(notify, "stderr") == 0;
	rt->exe_json = json_dup(rt->exe);
	enum pf_load_status status = pf_policy_load(path, &rt->policy, &diags);
	if (status == PF_LOAD_INVALID || (status != PF_LOAD_OK && secure_getenv("PORTFENCE_LOG")))
		open_log(rt, NULL);
	if (status != PF_LOAD_OK) {
		char why[900];
		snprintf(why, sizeof(why), "%s%s", diags.count ? diags.lines[0] : path,
			 diags.count > 1 ? " (and more: run portfence check)" : "");
		pf_diags_free(&diags);
		policy_unusable(rt, rt->policy.on_error_pass, why);
		return;
	}
	pf_diags_free(&diags);
	int index = pf_policy_select(&rt->policy, &who);
	open_log(rt, index >= 0 ? &rt->policy.apps[index] : NULL);
	if (index == PF_SELECT_UNKNOWN_APP) {
		char why[600];
		snprintf(why, sizeof(why), "PORTFENCE_APP names app '%s', which %s does not define",
			 who.forced_app, path);
		policy_unusable(rt, rt->policy.on_error_pass, why);
	} else if (index == PF_SELECT_PASS) {
		rt->status = PF_STATUS_PASS;
	} else {
		activate_app(rt, index);
	}
}

/* The handlers must exist before runtime_lock is first taken: a fork in
 * another thread during the load would otherwise leave the child a lock
 * that nobody will ever release (found by the fork stress test). */
static void register_atfork(void)
{
	static atomic_int registered;

	if (atomic_exchange(&registered, 1) == 0)
		pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* Cancellation stays off while the lock is held: a thread cancelled in
 * the middle of the load (its file reads are cancellation points) would
 * otherwise leave the lock taken for good, and every later call and fork
 * would wait on it. */
static void load_once(void)
{
	int saved = errno, cancel_state;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
	register_atfork();
	pthread_mutex_lock(&runtime_lock);
	if (!atomic_load_explicit(&runtime_ready, memory_order_relaxed)) {
		load_runtime(&runtime);
		atomic_store(&pf_dest_checks, runtime.status == PF_STATUS_DENY ||
						      (runtime.status == PF_STATUS_ACTIVE && runtime.rules));
		atomic_store_explicit(&runtime_ready, 1, memory_order_release);
	}
	pthread_mutex_unlock(&runtime_lock);
	pthread_setcancelstate(cancel_state, NULL);
	errno = saved;
}

PF_HOT_DATA _Atomic(const struct pf_runtime *) pf_runtime_settled;

/* errno is the caller's afterwards: close releases its hold after the
 * real close without saving it. */
const struct pf_runtime *pf_runtime_load(void)
{
	if (!atomic_load_explicit(&runtime_ready, memory_order_acquire))
		load_once();
	if (atomic_load_explicit(&deferred_pending, memory_order_relaxed)) {
		int saved = errno;
		say_deferred();
		errno = saved;
	}
	/* Only start-up defers lines, and they were said just now. */
	atomic_store_explicit(&pf_runtime_settled, &runtime, memory_order_release);
	return &runtime;
}

/* The algorithms and the held-4-tuple table change the shared state:
 * the runtime is const only for what the policy says. */

bool pf_runtime_manages(const struct pf_runtime *rt, const struct pf_sock *sock)
{
	if (rt->status != PF_STATUS_ACTIVE)
		return rt->status == PF_STATUS_DENY;
	return rt->app->protocols & (sock->udp ? PF_PROTO_UDP : PF_PROTO_TCP);
}

/* A Go program reached by LD_PRELOAD set by hand (`portfence run` refuses
 * it): its connections escape, which it is told at once, and the log too. */
static void warn_if_go(const struct pf_runtime *rt)
{
	if (rt->status == PF_STATUS_PASS || !pf_program_is_go())
		return;
	pf_stderr("portfence: %s is a Go program: Go makes its own system calls, which the shim "
		  "cannot see, so its connections are not confined; portfence run --bpf confines it",
		  rt->exe[0] ? rt->exe : program_invocation_short_name);
	struct pf_record record = {.event = PF_EVENT_ERROR, .error = EOPNOTSUPP};
	pf_audit(rt, &record);
}

/* The claims of the hold table name the process that made them. */
static uint32_t claim_owner(void)
{
	return (uint32_t)pf_cached_pid();
}

/* Everything a hook needs is ready before main(): the real symbols, the
 * pid cache, the policy, the log and the state. */
__attribute__((constructor)) static void pf_shim_init(void)
{
	register_atfork();
	for (int symbol = 0; symbol < PF_SYM_COUNT; symbol++)
		pf_real((enum pf_symbol)symbol);
	pf_find_vdso_clock();
	pf_cached_pid();
	pf_hold_owner = claim_owner;
	load_once();
	warn_if_go(&runtime);
}
