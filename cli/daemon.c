/* portfence daemon: attaches each app to the cgroups its policy's
 * `cgroups` globs match, when they appear (inotify on cgroupfs) and those
 * there at start; writes the records of every attached cgroup, reloads
 * on SIGHUP and detaches on SIGTERM.
 *
 * One attachment, many cgroups (bpf/cgroups.bpf.h): each app's
 * programs are loaded and verified once, and attached once, at the
 * common ancestor of its globs' fixed parts (links, so BPF_F_ALLOW_MULTI:
 * other managers' programs run too); where several apps' programs would
 * stand at one cgroup, the dispatcher (bpf/dispatch.bpf.c), one program
 * per hook that tail-calls the socket's app's, stands there instead.  A
 * cgroup is confined by its entry in the map the apps share (cgroup id
 * -> app), the nearest confined ancestor of a socket's cgroup deciding.
 * A new cgroup gets its entry inside mkdir(2), before any process can
 * join it: the birth program (tp_btf/cgroup_mkdir) matches its path
 * against the globs in the kernel.  The watch stays as the backstop and the bookkeeper: inotify
 * on the parent (IN_CREATE) confirms the entry and writes the cgroup's
 * pin directory (status lists it); a cgroup removed (IN_DELETE) loses
 * both.  Only the directories that can lead to a match are watched.  A
 * sweep every second catches what an overflowing inotify queue may have
 * dropped, and attaches again if the ancestor was re-created.
 *
 * A cgroup matched by two apps' globs, or lying under a cgroup another
 * app confines, is refused with one line naming both apps: never a
 * silent choice (`check` refuses the policy when its globs can meet).
 * A cgroup under one its own app confines inherits that attachment.
 *
 * It fails loudly: an app it must confine and cannot (its programs do
 * not load, a matching cgroup takes no attachment) ends it with one line
 * and status 1, after it has detached and unpinned everything it
 * attached.  A policy that lists no cgroup at all confines nothing, and
 * is refused the same way.
 *
 * This file serves (policy, apps, records, signals); the watch of the
 * cgroup hierarchy is cli/daemon_watch.c. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "collector.h"
#include "daemon.h"

static volatile sig_atomic_t reload_requested, stop_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

void daemon_say(char *why, size_t len, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	vsnprintf(why, len, fmt, args);
	va_end(args);
}

/* An app is served when it lists cgroups, or when `attach` pinned it. */
static bool app_is_served(const struct pf_app *app)
{
	char dir[PATH_MAX];
	struct stat info;

	return app->cgroups.count > 0 ||
	       (pf_pin_app_dir(PF_BPF_PIN_ROOT, app->name, dir, sizeof(dir)) >= 0 && stat(dir, &info) == 0);
}

/* Whether state serves app_name (and, with relative, holds an attachment
 * of it to that cgroup). */
static bool serves(const struct daemon_state *state, const char *app_name, const char *relative)
{
	for (size_t i = 0; state && i < state->app_count; i++) {
		const struct served_app *served = &state->apps[i];
		if (strcmp(served->app->name, app_name) != 0)
			continue;
		if (!relative)
			return true;
		for (size_t c = 0; c < served->cgroup_count; c++)
			if (strcmp(served->cgroups[c].relative, relative) == 0)
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
	const char *app = served->app->name;

	for (size_t i = 0; i < served->cgroup_count; i++) {
		if (serves(next, app, served->cgroups[i].relative))
			pf_bpf_attachment_release(served->cgroups[i].attachment);
		else
			pf_bpf_detach(served->cgroups[i].attachment);
		free(served->cgroups[i].relative);
	}
	free(served->cgroups);
	if (!served->loaded)
		return;
	pf_bpf_app_drain(served->loaded, sink);
	if (!serves(next, app, NULL))
		pf_bpf_forget_app_if_unused(app);
	pf_bpf_app_free(served->loaded);
}

/* The dispatcher goes before the apps are stopped: each app's last
 * drain then finds every record its programs will ever write. */
static void stop_dispatching(struct daemon_state *state)
{
	for (size_t p = 0; p < state->point_count; p++) {
		pf_bpf_detach(state->points[p].attachment);
		free(state->points[p].relative);
	}
	free(state->points);
	state->points = NULL;
	state->point_count = 0;
	pf_bpf_dispatch_free(state->dispatch);
	state->dispatch = NULL;
}

static void stop_all(struct daemon_state *state, const struct daemon_state *next)
{
	stop_dispatching(state);
	if (state->confined)
		g_hash_table_destroy(state->confined);
	state->confined = NULL;
	for (size_t i = 0; i < state->app_count; i++)
		stop_serving(&state->apps[i], next, state->sink);
	free(state->apps);
	state->apps = NULL;
	state->app_count = 0;
	for (size_t i = 0; i < state->dir_count; i++)
		free(state->dirs[i].relative);
	free(state->dirs);
	state->dirs = NULL;
	state->dir_count = state->dir_cap = 0;
	for (size_t i = 0; i < state->refused_count; i++)
		free(state->refused[i]);
	free(state->refused);
	state->refused = NULL;
	state->refused_count = state->refused_cap = 0;
	if (state->inotify >= 0)
		close(state->inotify);
	state->inotify = -1;
	pf_record_sink_close(state->sink);
	state->sink = NULL;
	if (state->policy_loaded)
		pf_policy_free(&state->policy);
	state->policy_loaded = false;
	state->cgroup_apps_fd = -1;
	if (!next) {
		unlink(PF_BPF_CGROUPS_PIN);
		rmdir(PF_BPF_PIN_ROOT);	/* when nothing else is pinned there */
	}
}

/* Loads the policy; its own FILE:LINE lines say why not. */
static int load_policy(struct daemon_state *state, const char *config)
{
	if (cli_load_policy(config, &state->policy) < 0)
		return -1;
	state->policy_loaded = true;
	return 0;
}

/* The dispatcher for apps that share an ancestor.  One that the kernel
 * refuses is said in one line, and each app's programs then stand at its
 * own ancestor, as they did before there was one: each socket there runs
 * every app's programs, and stays confined by its own. */
static void start_dispatcher(struct daemon_state *state)
{
	char why[1024];
	int rc = pf_bpf_dispatch_load(state->cgroup_apps_fd, (uint32_t)state->app_count, &state->dispatch, why,
				      sizeof(why));
	for (size_t i = 0; rc == 0 && i < state->app_count; i++)
		rc = pf_bpf_dispatch_route(state->dispatch, state->apps[i].loaded, why, sizeof(why));
	if (rc == 0)
		return;
	fprintf(stderr, "portfence: warning: %s; apps whose cgroups share a parent each run the others' programs "
			"there\n", why);
	pf_bpf_dispatch_free(state->dispatch);
	state->dispatch = NULL;
}

/* Every app the policy serves, loaded; then every cgroup there that its
 * globs match, attached, and the directories that can lead to one
 * watched; -1 with why when one cannot be confined. */
static int start_apps(struct daemon_state *state, const char *config, char *why, size_t len)
{
	state->inotify = -1;
	state->cgroup_apps_fd = -1;
	state->sink = pf_record_sink_open(bpf_cli_log_path(&state->policy), state->policy.log_syslog);
	state->apps = calloc(state->policy.app_count + 1, sizeof(*state->apps));
	if (!state->apps)
		return daemon_say(why, len, "out of memory"), -1;
	int rc = state->bpf ? pf_cgroup2_mount(state->mount, sizeof(state->mount)) : 0;
	if (rc < 0)
		return daemon_say(why, len, "no cgroup v2 hierarchy: %s", strerror(-rc)), -1;
	for (size_t i = 0; i < state->policy.app_count; i++) {
		const struct pf_app *app = &state->policy.apps[i];
		if (!app_is_served(app))
			continue;
		if (!state->bpf)
			return daemon_say(why, len, "%s: %s lists cgroups for it, and the BPF backend cannot be used here",
				   app->name, config), -1;
		/* Counted first, so that a half-served app is stopped too. */
		struct served_app *served = &state->apps[state->app_count++];
		served->app = app;
		struct pf_bpf_share share = {.app_id = (uint32_t)state->app_count,
					     .cgroup_apps_fd = state->cgroup_apps_fd,
					     .births = state->cgroup_apps_fd < 0};
		if (pf_bpf_app_load_shared(&state->policy, app, true, &share, &served->loaded, why, len) < 0)
			return -1;
		if (state->cgroup_apps_fd < 0)
			state->cgroup_apps_fd = pf_bpf_cgroup_map_fd(served->loaded);
	}
	if (state->app_count == 0 && !state->collector) {
		daemon_say(why, len, "%s lists no cgroups for any app and no app is attached: nothing to confine", config);
		return -1;
	}
	if (state->app_count == 0)
		return 0;	/* the collector alone: no cgroup to watch */
	if (state->app_count > 1)
		start_dispatcher(state);
	daemon_start_births(state);
	if (daemon_keep_ancestor(state, why, len) < 0)
		return -1;
	state->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (state->inotify < 0)
		return daemon_say(why, len, "cannot watch the cgroup hierarchy: inotify: %s", strerror(errno)), -1;
	return daemon_watch_dir(state, "", true, why, len);
}

static void announce(const struct daemon_state *state)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; c < state->apps[i].cgroup_count; c++)
			fprintf(stderr, "portfence: %s attached to %s\n", state->apps[i].app->name,
				state->apps[i].cgroups[c].relative);
}

/* A tick, cut short when an app's ring fills past its mark (a burst) or
 * inotify has news; true for the latter.  While shim rings are busy the
 * collector comes back every few milliseconds, so that a burst never
 * fills a process's ring. */
#define BUSY_TICK_MS 5
static bool wait_for_events(const struct daemon_state *state, bool busy)
{
	struct pf_bpf_app *loaded[state->app_count + 1];
	for (size_t i = 0; i < state->app_count; i++)
		loaded[i] = state->apps[i].loaded;
	int timeout_ms = busy ? BUSY_TICK_MS : state->collector ? 20 : TICK_MS;
	if (state->app_count)
		return pf_bpf_wait_records_or(loaded, state->app_count, state->inotify, timeout_ms);
	poll(&(struct pollfd){.fd = pf_collector_fd(state->collector), .events = POLLIN}, 1, timeout_ms);
	return false;
}

/* The new policy's programs are attached before the old ones go, so that
 * no connect slips through unconfined.  A policy that does not load
 * keeps the old one serving; one that loads but names an app that cannot
 * be confined ends the daemon (-1), as it would at start. */
static int reload(struct daemon_state *state, const char *config)
{
	struct daemon_state fresh = {.inotify = -1, .cgroup_apps_fd = -1};
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
	if (state->collector) {
		pf_collector_set_sink(state->collector, state->sink);
	}
	announce(state);
	return 0;
}

static int serve(struct daemon_state *state, const char *config)
{
	char why[1024];

	for (unsigned tick = 1; !stop_requested; tick++) {
		bool overflow = false;
		if (reload_requested) {
			reload_requested = 0;
			if (reload(state, config) < 0)
				return 1;
		}
		int rc = daemon_read_events(state, &overflow, why, sizeof(why));
		if (rc == 0 && (overflow || tick % SWEEP_EVERY_TICKS == 0))
			rc = daemon_sweep(state, why, sizeof(why));
		if (rc < 0) {
			fprintf(stderr, "portfence: %s\n", why);
			pf_collector_close(state->collector);
			state->collector = NULL;
			stop_all(state, NULL);
			return 1;
		}
		for (size_t i = 0; i < state->app_count; i++)
			pf_bpf_app_drain(state->apps[i].loaded, state->sink);
		bool busy = (state->collector && pf_collector_work(state->collector) > 0) ||
			    pf_record_sink_behind(state->sink);
		if (wait_for_events(state, busy))
			tick--;	/* news from inotify: no tick went by */
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

	while ((opt = cli_getopt(argc, argv, "+c:", options)) != -1) {
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
	/* Held until the process ends: one daemon per host. */
	if (bpf && pf_bpf_daemon_claim(why, sizeof(why)) < 0)
		return bpf_cli_refuse(why);
	config = config ? config : cli_config_from_env();
	if (realpath(config, absolute))
		config = absolute;

	struct sigaction action = {.sa_handler = on_signal};
	sigaction(SIGHUP, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);

	struct daemon_state state = {.inotify = -1, .bpf = bpf, .cgroup_apps_fd = -1};
	if (load_policy(&state, config) < 0) {
		/* The claim made the pin root: it goes, as when the daemon
		 * stops, when nothing else is pinned there. */
		if (bpf)
			rmdir(PF_BPF_PIN_ROOT);
		return 1;
	}
	/* An app it must confine and no BPF backend (not root, say): one
	 * line with the reason, before anything else is opened. */
	for (size_t i = 0; !bpf && i < state.policy.app_count; i++)
		if (app_is_served(&state.policy.apps[i])) {
			char line[PATH_MAX + 2048];
			snprintf(line, sizeof(line), "%s: %s lists cgroups for it, and the BPF backend cannot be used here: %s",
				 state.policy.apps[i].name, config, why);
			return bpf_cli_refuse(line);
		}
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
	fprintf(stderr, "portfence: watching %s for the cgroups of %zu app%s\n", state.mount, state.app_count,
		state.app_count == 1 ? "" : "s");
	return serve(&state, config);
}
