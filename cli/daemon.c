/* portfence daemon: attaches each app to the cgroups its policy lists,
 * again whenever such a cgroup is re-created, writes the records of
 * every attached cgroup, reloads on SIGHUP and detaches on SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"

#define TICK_NS 100000000L
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
	struct served_app *apps;
	size_t app_count;
	struct pf_record_sink *sink;
};

static volatile sig_atomic_t reload_requested, stop_requested;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		reload_requested = 1;
	else
		stop_requested = 1;
}

/* An attachment whose cgroup was removed or re-created is dropped; a
 * cgroup that exists without one gets one. */
static void watch_cgroup(struct served_app *served, struct watched_cgroup *watched)
{
	char why[1024];
	struct stat info;

	if (watched->attachment && pf_bpf_attachment_alive(watched->attachment))
		return;
	if (watched->attachment) {
		pf_bpf_detach(watched->attachment);
		watched->attachment = NULL;
	}
	if (stat(watched->full, &info) < 0 || !S_ISDIR(info.st_mode))
		return;
	if (pf_bpf_attach(served->loaded, watched->full, watched->relative, true, &watched->attachment, why,
			  sizeof(why)) < 0)
		fprintf(stderr, "portfence: %s: %s\n", pf_bpf_app_name(served->loaded), why);
	else
		fprintf(stderr, "portfence: %s attached to %s\n", pf_bpf_app_name(served->loaded),
			watched->relative);
}

/* An app is served when it lists cgroups, or when `attach` pinned it. */
static bool app_is_served(const struct pf_app *app)
{
	char dir[PATH_MAX];
	struct stat info;

	snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, app->name);
	return app->cgroups.count > 0 || stat(dir, &info) == 0;
}

static int serve_app(struct daemon_state *state, const struct pf_app *app, struct served_app *served)
{
	char why[1024];

	memset(served, 0, sizeof(*served));
	if (pf_bpf_app_load(&state->policy, app, true, &served->loaded, why, sizeof(why)) < 0)
		return bpf_cli_refuse(why), -1;
	served->cgroups = calloc(app->cgroups.count + 1, sizeof(*served->cgroups));
	if (!served->cgroups)
		return bpf_cli_refuse("out of memory"), -1;
	for (size_t i = 0; i < app->cgroups.count; i++) {
		struct watched_cgroup *watched = &served->cgroups[served->cgroup_count];
		if (pf_cgroup_resolve(app->cgroups.globs[i], watched->full, sizeof(watched->full),
				      watched->relative, sizeof(watched->relative)) < 0) {
			fprintf(stderr, "portfence: %s: cgroup %s is not in the cgroup v2 hierarchy\n",
				app->name, app->cgroups.globs[i]);
			continue;
		}
		served->cgroup_count++;
		watch_cgroup(served, watched);
	}
	return 0;
}

/* keep_pins: the links stay attached through their pins (a reload's new
 * links have replaced them there). */
static void stop_serving(struct served_app *served, bool keep_pins)
{
	for (size_t i = 0; i < served->cgroup_count; i++) {
		if (keep_pins)
			pf_bpf_attachment_release(served->cgroups[i].attachment);
		else
			pf_bpf_detach(served->cgroups[i].attachment);
	}
	free(served->cgroups);
	if (served->loaded && !keep_pins)
		pf_bpf_forget_app_if_unused(pf_bpf_app_name(served->loaded));
	pf_bpf_app_free(served->loaded);
}

static void stop_all(struct daemon_state *state, bool keep_pins)
{
	for (size_t i = 0; i < state->app_count; i++) {
		pf_bpf_app_drain(state->apps[i].loaded, state->sink);
		stop_serving(&state->apps[i], keep_pins);
	}
	free(state->apps);
	state->apps = NULL;
	state->app_count = 0;
	pf_record_sink_close(state->sink);
	state->sink = NULL;
	pf_policy_free(&state->policy);
}

static int start_all(struct daemon_state *state, const char *config)
{
	if (cli_load_policy(config, &state->policy) < 0)
		return -1;
	state->sink = pf_record_sink_open(bpf_cli_log_path(&state->policy), state->policy.log_syslog);
	state->apps = calloc(state->policy.app_count + 1, sizeof(*state->apps));
	if (!state->apps)
		return -1;
	for (size_t i = 0; i < state->policy.app_count; i++) {
		const struct pf_app *app = &state->policy.apps[i];
		if (app_is_served(app) && serve_app(state, app, &state->apps[state->app_count]) == 0)
			state->app_count++;
	}
	return 0;
}

/* The new policy's programs are attached before the old ones go, so that
 * no connect slips through unconfined; a policy that does not load
 * keeps the old one serving. */
static void reload(struct daemon_state *state, const char *config)
{
	struct daemon_state fresh = {0};

	fprintf(stderr, "portfence: reloading %s\n", config);
	if (start_all(&fresh, config) < 0) {
		fprintf(stderr, "portfence: %s not reloaded; the policy in force stays\n", config);
		stop_all(&fresh, false);
		return;
	}
	stop_all(state, true);
	*state = fresh;
}

static void serve(struct daemon_state *state, const char *config)
{
	for (unsigned tick = 0; !stop_requested; tick++) {
		if (reload_requested) {
			reload_requested = 0;
			reload(state, config);
		}
		for (size_t i = 0; i < state->app_count; i++) {
			struct served_app *served = &state->apps[i];
			pf_bpf_app_drain(served->loaded, state->sink);
			for (size_t c = 0; tick % WATCH_EVERY_TICKS == 0 && c < served->cgroup_count; c++)
				watch_cgroup(served, &served->cgroups[c]);
		}
		nanosleep(&(struct timespec){.tv_nsec = TICK_NS}, NULL);
	}
}

int cmd_daemon(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'}, {0}};
	const char *config = NULL;
	char why[512], absolute[PATH_MAX];
	int opt;

	while ((opt = getopt_long(argc, argv, "+c:", options, NULL)) != -1) {
		if (opt == 'c')
			config = optarg;
		else
			return usage_error("daemon: unknown option");
	}
	if (optind != argc)
		return usage_error("daemon takes no arguments");
	if (pf_bpf_unavailable(why, sizeof(why)))
		return bpf_cli_refuse(why);
	pf_bpf_sweep_runs();
	config = config ? config : cli_config_from_env();
	if (realpath(config, absolute))
		config = absolute;

	struct sigaction action = {.sa_handler = on_signal};
	sigaction(SIGHUP, &action, NULL);
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);

	struct daemon_state state = {0};
	if (start_all(&state, config) < 0) {
		stop_all(&state, false);
		return 1;
	}
	serve(&state, config);
	stop_all(&state, false);
	return 0;
}
