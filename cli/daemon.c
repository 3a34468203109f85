/* portfence daemon: attaches each app to the cgroups its policy lists,
 * again whenever such a cgroup is re-created, writes the records of
 * every attached cgroup, reloads on SIGHUP and detaches on SIGTERM.
 *
 * It fails loudly: an app it must confine and cannot (its programs do
 * not load, a listed cgroup exists but takes no attachment or is not a
 * cgroup) ends it with one line and status 1, after it has detached and
 * unpinned everything it attached.  A cgroup not created yet is waited
 * for; a policy that lists no cgroup at all confines nothing, and is
 * refused the same way. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"
#include "collector.h"

#define TICK_MS 100
#define WATCH_EVERY_TICKS 3

struct watched_cgroup {
	char full[PATH_MAX], relative[PATH_MAX];
	struct pf_bpf_attachment *attachment;	/* NULL: not there now */
};

struct served_app {
	struct pf_bpf_app *loaded;
	struct watched_cgroup *cgroups;
	size_t cgroup_count;
};

struct daemon_state {
	struct pf_policy policy;
	bool policy_loaded;
	struct served_app *apps;
	size_t app_count;
	struct pf_record_sink *sink;
	struct pf_collector *collector;	/* shim records; NULL: none */
	bool bpf;			/* the BPF backend can be used here */
};

static volatile sig_atomic_t reload_requested, stop_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

static void say(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t len, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vsnprintf(why, len, fmt, args);
	va_end(args);
}

/* An attachment whose cgroup was removed or re-created is dropped; a
 * cgroup that exists without one gets one.  1: attached now; 0: nothing
 * to do (attached already, or not there now); -1: the cgroup is there
 * and cannot be confined (why says so). */
static int watch_cgroup(struct served_app *served, struct watched_cgroup *watched, char *why, size_t len)
{
	char reason[1024];
	struct stat info;
	const char *app = pf_bpf_app_name(served->loaded);

	if (watched->attachment && pf_bpf_attachment_alive(watched->attachment))
		return 0;
	if (watched->attachment) {
		pf_bpf_detach(watched->attachment);
		watched->attachment = NULL;
	}
	if (stat(watched->full, &info) < 0) {
		if (errno == ENOENT)
			return 0;
		say(why, len, "%s: cannot use cgroup %s: %s", app, watched->full, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(info.st_mode)) {
		say(why, len, "%s: cgroup %s is not a cgroup (not a directory)", app, watched->full);
		return -1;
	}
	int rc = pf_bpf_attach(served->loaded, watched->full, watched->relative, true, &watched->attachment, reason,
			       sizeof(reason));
	if (rc == -ENOENT)
		return 0;	/* removed meanwhile */
	if (rc < 0) {
		say(why, len, "%s: %s", app, reason);
		return -1;
	}
	return 1;
}

/* An app is served when it lists cgroups, or when `attach` pinned it. */
static bool app_is_served(const struct pf_app *app)
{
	char dir[PATH_MAX];
	struct stat info;

	snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, app->name);
	return app->cgroups.count > 0 || stat(dir, &info) == 0;
}

static int serve_app(struct daemon_state *state, const struct pf_app *app, struct served_app *served, char *why,
		     size_t len)
{
	memset(served, 0, sizeof(*served));
	if (pf_bpf_app_load(&state->policy, app, true, &served->loaded, why, len) < 0)
		return -1;
	served->cgroups = calloc(app->cgroups.count + 1, sizeof(*served->cgroups));
	if (!served->cgroups)
		return say(why, len, "out of memory"), -1;
	for (size_t i = 0; i < app->cgroups.count; i++) {
		struct watched_cgroup *watched = &served->cgroups[served->cgroup_count];
		if (pf_cgroup_resolve(app->cgroups.globs[i], watched->full, sizeof(watched->full),
				      watched->relative, sizeof(watched->relative)) < 0) {
			say(why, len, "%s: cgroup %s is not in the cgroup v2 hierarchy", app->name,
			    app->cgroups.globs[i]);
			return -1;
		}
		served->cgroup_count++;
		if (watch_cgroup(served, watched, why, len) < 0)
			return -1;
	}
	return 0;
}

/* Whether state serves app_name (and, with relative, holds an attachment
 * of it to that cgroup). */
static bool serves(const struct daemon_state *state, const char *app_name, const char *relative)
{
	for (size_t i = 0; state && i < state->app_count; i++) {
		const struct served_app *served = &state->apps[i];
		if (strcmp(pf_bpf_app_name(served->loaded), app_name) != 0)
			continue;
		if (!relative)
			return true;
		for (size_t c = 0; c < served->cgroup_count; c++)
			if (served->cgroups[c].attachment && strcmp(served->cgroups[c].relative, relative) == 0)
				return true;
	}
	return false;
}

/* Detaches and unpins what this app attached, except the cgroups that
 * next (the reloaded state, or NULL) attached again: their pins now
 * hold next's links.  Then its records are drained, so that none its
 * programs wrote before they went is lost, and the app's own pins go
 * when next does not serve it and no `attach` of it is left. */
static void stop_serving(struct served_app *served, const struct daemon_state *next,
			 struct pf_record_sink *sink)
{
	const char *app = served->loaded ? pf_bpf_app_name(served->loaded) : NULL;

	for (size_t i = 0; i < served->cgroup_count; i++) {
		if (serves(next, app, served->cgroups[i].relative))
			pf_bpf_attachment_release(served->cgroups[i].attachment);
		else
			pf_bpf_detach(served->cgroups[i].attachment);
	}
	free(served->cgroups);
	if (!served->loaded)
		return;
	pf_bpf_app_drain(served->loaded, sink);
	if (!serves(next, app, NULL))
		pf_bpf_forget_app_if_unused(app);
	pf_bpf_app_free(served->loaded);
}

static void stop_all(struct daemon_state *state, const struct daemon_state *next)
{
	for (size_t i = 0; i < state->app_count; i++)
		stop_serving(&state->apps[i], next, state->sink);
	free(state->apps);
	state->apps = NULL;
	state->app_count = 0;
	pf_record_sink_close(state->sink);
	state->sink = NULL;
	if (state->policy_loaded)
		pf_policy_free(&state->policy);
	state->policy_loaded = false;
	if (!next)
		rmdir(PF_BPF_PIN_ROOT);	/* when nothing else is pinned there */
}

/* Loads the policy; its own FILE:LINE lines say why not. */
static int load_policy(struct daemon_state *state, const char *config)
{
	if (cli_load_policy(config, &state->policy) < 0)
		return -1;
	state->policy_loaded = true;
	return 0;
}

/* Every app the policy serves, loaded and attached to each of its
 * cgroups that exists; -1 with why when one cannot be confined. */
static int start_apps(struct daemon_state *state, const char *config, char *why, size_t len)
{
	state->sink = pf_record_sink_open(bpf_cli_log_path(&state->policy), state->policy.log_syslog);
	state->apps = calloc(state->policy.app_count + 1, sizeof(*state->apps));
	if (!state->apps)
		return say(why, len, "out of memory"), -1;
	for (size_t i = 0; i < state->policy.app_count; i++) {
		const struct pf_app *app = &state->policy.apps[i];
		if (!app_is_served(app))
			continue;
		if (!state->bpf)
			return say(why, len, "%s: %s lists cgroups for it, and the BPF backend cannot be used here",
				   app->name, config), -1;
		/* Counted first, so that a half-served app is stopped too. */
		int rc = serve_app(state, app, &state->apps[state->app_count++], why, len);
		if (rc < 0)
			return -1;
	}
	if (state->app_count == 0 && !state->collector) {
		say(why, len, "%s lists no cgroups for any app and no app is attached: nothing to confine", config);
		return -1;
	}
	return 0;
}

static void announce(const struct daemon_state *state)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; c < state->apps[i].cgroup_count; c++)
			if (state->apps[i].cgroups[c].attachment)
				fprintf(stderr, "portfence: %s attached to %s\n", pf_bpf_app_name(state->apps[i].loaded),
					state->apps[i].cgroups[c].relative);
}

/* A tick, cut short when an app's ring fills past its mark (a burst).
 * While shim rings are busy the collector comes back every few
 * milliseconds, so that a burst never fills a process's ring. */
#define BUSY_TICK_MS 5
static void wait_for_records(const struct daemon_state *state, bool busy)
{
	struct pf_bpf_app *loaded[state->app_count + 1];
	for (size_t i = 0; i < state->app_count; i++)
		loaded[i] = state->apps[i].loaded;
	if (state->app_count)
		pf_bpf_wait_records(loaded, state->app_count, busy ? BUSY_TICK_MS : state->collector ? 20 : TICK_MS);
	else
		poll(&(struct pollfd){.fd = pf_collector_fd(state->collector), .events = POLLIN}, 1,
		     busy ? BUSY_TICK_MS : 20);
}

/* The new policy's programs are attached before the old ones go, so that
 * no connect slips through unconfined.  A policy that does not load
 * keeps the old one serving; one that loads but names an app that cannot
 * be confined ends the daemon (-1), as it would at start. */
static int reload(struct daemon_state *state, const char *config)
{
	struct daemon_state fresh = {0};
	char why[1024];

	fprintf(stderr, "portfence: reloading %s\n", config);
	fresh.collector = state->collector;
	fresh.bpf = state->bpf;
	if (load_policy(&fresh, config) < 0) {
		fprintf(stderr, "portfence: %s not reloaded; the policy in force stays\n", config);
		return 0;
	}
	if (start_apps(&fresh, config, why, sizeof(why)) < 0) {
		fprintf(stderr, "portfence: %s\n", why);
		stop_all(&fresh, NULL);
		pf_collector_close(state->collector);
		state->collector = NULL;
		stop_all(state, NULL);
		return -1;
	}
	fresh.collector = state->collector;
	fresh.bpf = state->bpf;
	stop_all(state, &fresh);
	*state = fresh;
	if (state->collector)
		pf_collector_set_sink(state->collector, state->sink);
	announce(state);
	return 0;
}

static int serve(struct daemon_state *state, const char *config)
{
	char why[1024];

	for (unsigned tick = 0; !stop_requested; tick++) {
		if (reload_requested) {
			reload_requested = 0;
			if (reload(state, config) < 0)
				return 1;
		}
		for (size_t i = 0; i < state->app_count; i++) {
			struct served_app *served = &state->apps[i];
			pf_bpf_app_drain(served->loaded, state->sink);
			for (size_t c = 0; tick % WATCH_EVERY_TICKS == 0 && c < served->cgroup_count; c++) {
				int rc = watch_cgroup(served, &served->cgroups[c], why, sizeof(why));
				if (rc < 0) {
					fprintf(stderr, "portfence: %s\n", why);
					pf_collector_close(state->collector);
					stop_all(state, NULL);
					return 1;
				}
				if (rc > 0)
					fprintf(stderr, "portfence: %s attached to %s\n",
						pf_bpf_app_name(served->loaded), served->cgroups[c].relative);
			}
		}
		bool busy = (state->collector && pf_collector_work(state->collector) > 0) ||
			    pf_record_sink_behind(state->sink);
		wait_for_records(state, busy);
	}
	if (state->collector)
		pf_collector_close(state->collector);
	state->collector = NULL;
	stop_all(state, NULL);
	return 0;
}

int cmd_daemon(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'}, {0}};
	const char *config = NULL;
	char why[1024], absolute[PATH_MAX];
	int opt;

	while ((opt = getopt_long(argc, argv, "+c:", options, NULL)) != -1) {
		if (opt == 'c')
			config = optarg;
		else
			return usage_error("daemon: unknown option");
	}
	if (optind != argc)
		return usage_error("daemon takes no arguments");
	/* Each registered ring holds a pidfd: as many as the system lets us. */
	struct rlimit files;
	if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
		files.rlim_cur = files.rlim_max;
		setrlimit(RLIMIT_NOFILE, &files);
	}
	bool bpf = !pf_bpf_unavailable(why, sizeof(why));
	if (bpf)
		pf_bpf_sweep_runs();
	config = config ? config : cli_config_from_env();
	if (realpath(config, absolute))
		config = absolute;

	struct sigaction action = {.sa_handler = on_signal};
	sigaction(SIGHUP, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);

	struct daemon_state state = {.bpf = bpf};
	if (load_policy(&state, config) < 0)
		return 1;
	state.collector = pf_collector_open(pf_collector_path(), why, sizeof(why));
	if (!state.collector)
		fprintf(stderr, "portfence: %s; shim processes write their records themselves\n", why);
	if (start_apps(&state, config, why, sizeof(why)) < 0) {
		pf_collector_close(state.collector);
		stop_all(&state, NULL);
		return bpf_cli_refuse(why);
	}
	if (state.collector) {
		pf_collector_set_sink(state.collector, state.sink);
		fprintf(stderr, "portfence: collecting shim records at %s\n", pf_collector_path());
	}
	announce(&state);
	return serve(&state, config);
}
