/* portfence daemon: attaches each app to the cgroups its policy's
 * `cgroups` globs match, when they appear (inotify on cgroupfs) and those
 * there at start; writes the records of every attached cgroup, reloads
 * on SIGHUP and detaches on SIGTERM.
 *
 * A new cgroup is seen through inotify on its parent: the kernel queues
 * IN_CREATE inside mkdir(2), the daemon wakes, and the app's programs,
 * loaded and verified once at start, are attached to it (one link per
 * program, pinned); a cgroup removed (IN_DELETE) is detached and its
 * pins removed.  Only the directories that can lead to a match are
 * watched.  A sweep every second catches what an overflowing inotify
 * queue may have dropped.
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
 * is refused the same way. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"
#include "config/cgroup_glob.h"

#define TICK_MS 100
#define SWEEP_EVERY_TICKS 10

struct confined_cgroup {
	char *relative;
	struct pf_bpf_attachment *attachment;
};

struct served_app {
	const struct pf_app *app;	/* in the state's policy */
	struct pf_bpf_app *loaded;
	struct confined_cgroup *cgroups;
	size_t cgroup_count, cgroup_cap;
};

struct watched_dir {
	int wd;
	char *relative;
};

struct daemon_state {
	struct pf_policy policy;
	bool policy_loaded;
	struct served_app *apps;
	size_t app_count;
	struct pf_record_sink *sink;
	char mount[PATH_MAX];
	int inotify;			/* -1: none */
	struct watched_dir *dirs;
	size_t dir_count, dir_cap;
	char **refused;			/* cgroups refused once, said once */
	size_t refused_count, refused_cap;
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

/* Grows *array (of size each) to hold one more than *count. */
static bool grow(void *array, size_t *cap, size_t count, size_t size)
{
	if (count < *cap)
		return true;
	size_t next = *cap ? *cap * 2 : 16;
	void *grown = realloc(*(void **)array, next * size);
	if (!grown)
		return false;
	*(void **)array = grown;
	*cap = next;
	return true;
}

static void full_path(const struct daemon_state *state, const char *relative, char *full, size_t len)
{
	if ((size_t)snprintf(full, len, "%s%s%s", state->mount, relative[0] ? "/" : "", relative) >= len)
		full[0] = '\0';	/* too long: opens nothing */
}

/* Whether inner is outer or lies below it ("" is the root). */
static bool is_within(const char *inner, const char *outer)
{
	size_t len = strlen(outer);
	return len == 0 || (strncmp(inner, outer, len) == 0 && (inner[len] == '/' || inner[len] == '\0'));
}

/* The app confining relative or its nearest ancestor; NULL when none. */
static struct served_app *confiner(struct daemon_state *state, const char *relative, bool *exact,
				   const char **at)
{
	struct served_app *best = NULL;
	size_t best_len = 0;

	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; c < state->apps[i].cgroup_count; c++) {
			const char *path = state->apps[i].cgroups[c].relative;
			size_t len = strlen(path);
			if (is_within(relative, path) && (!best || len > best_len)) {
				best = &state->apps[i];
				best_len = len;
				*at = path;
				*exact = strcmp(path, relative) == 0;
			}
		}
	return best;
}

/* Another app than served confining a cgroup below relative. */
static const struct served_app *confined_below(const struct daemon_state *state, const struct served_app *served,
					       const char *relative, const char **at)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; &state->apps[i] != served && c < state->apps[i].cgroup_count; c++)
			if (is_within(state->apps[i].cgroups[c].relative, relative)) {
				*at = state->apps[i].cgroups[c].relative;
				return &state->apps[i];
			}
	return NULL;
}

/* An entry may name the mount itself ("/sys/fs/cgroup/unified/x-*"):
 * what follows it. */
static const char *under_mount(const struct daemon_state *state, const char *glob)
{
	size_t len = strlen(state->mount);
	return strncmp(glob, state->mount, len) == 0 && glob[len] == '/' ? glob + len : glob;
}

static bool app_matches(const struct daemon_state *state, const struct pf_app *app, const char *relative)
{
	for (size_t g = 0; g < app->cgroups.count; g++)
		if (pf_cgroup_glob_match(under_mount(state, app->cgroups.globs[g]), relative))
			return true;
	return false;
}

static bool any_glob_leads(const struct daemon_state *state, const char *relative)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t g = 0; g < state->apps[i].app->cgroups.count; g++)
			if (pf_cgroup_glob_leads(under_mount(state, state->apps[i].app->cgroups.globs[g]), relative))
				return true;
	return false;
}

/* A refusal, said once per cgroup (the sweep sees it again). */
static void refuse(struct daemon_state *state, const char *relative, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse(struct daemon_state *state, const char *relative, const char *fmt, ...)
{
	for (size_t i = 0; i < state->refused_count; i++)
		if (strcmp(state->refused[i], relative) == 0)
			return;
	if (grow(&state->refused, &state->refused_cap, state->refused_count, sizeof(char *)) &&
	    (state->refused[state->refused_count] = strdup(relative)))
		state->refused_count++;
	va_list args;
	va_start(args, fmt);
	fputs("portfence: ", stderr);
	vfprintf(stderr, fmt, args);
	fputc('\n', stderr);
	va_end(args);
}

/* Attaches served's programs to relative; 0 (attached, or the cgroup
 * went meanwhile), -1 with why when it is there and takes none. */
static int confine(struct daemon_state *state, struct served_app *served, const char *relative, bool quiet,
		   char *why, size_t len)
{
	char full[PATH_MAX], reason[1024];
	struct pf_bpf_attachment *attachment = NULL;

	full_path(state, relative, full, sizeof(full));
	if (!grow(&served->cgroups, &served->cgroup_cap, served->cgroup_count, sizeof(*served->cgroups)))
		return say(why, len, "out of memory"), -1;
	int rc = pf_bpf_attach(served->loaded, full, relative, true, &attachment, reason, sizeof(reason));
	struct stat now;
	if (rc == -ENOENT || rc == -ENOTDIR || (rc < 0 && stat(full, &now) < 0))
		return 0;	/* removed meanwhile (a container that ended at once), or not a cgroup */
	if (rc < 0)
		return say(why, len, "%s: %s", served->app->name, reason), -1;
	char *copy = strdup(relative);
	if (!copy) {
		pf_bpf_detach(attachment);
		return say(why, len, "out of memory"), -1;
	}
	struct stat info;
	if (stat(full, &info) == 0)
		pf_record_sink_note_cgroup(state->sink, (uint64_t)info.st_ino, relative);
	served->cgroups[served->cgroup_count++] = (struct confined_cgroup){copy, attachment};
	if (!quiet)
		fprintf(stderr, "portfence: %s attached to %s\n", served->app->name, relative);
	return 0;
}

static int watch_dir(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len);

/* A cgroup seen (at start, created, or by the sweep): confined by the one
 * app whose globs match it, refused when two do or another app holds
 * it, and watched when a glob can match below it. */
static int consider(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len)
{
	struct served_app *matched = NULL;

	for (size_t i = 0; i < state->app_count; i++) {
		if (!app_matches(state, state->apps[i].app, relative))
			continue;
		if (matched) {
			refuse(state, relative, "cgroup %s matches the cgroups of apps '%s' and '%s': refused, "
				      "neither confines it", relative, matched->app->name, state->apps[i].app->name);
			matched = NULL;
			break;
		}
		matched = &state->apps[i];
	}
	if (matched) {
		bool exact = false;
		const char *at = NULL;
		const struct served_app *holder = confiner(state, relative, &exact, &at);
		if (holder && holder != matched)
			refuse(state, relative, "cgroup %s matches app '%s' but lies in %s, which app '%s' confines: "
				      "refused", relative, matched->app->name, at, holder->app->name);
		else if (!holder && (holder = confined_below(state, matched, relative, &at)))
			refuse(state, relative, "cgroup %s matches app '%s' but holds %s, which app '%s' confines: "
				      "refused", relative, matched->app->name, at, holder->app->name);
		else if (!holder && confine(state, matched, relative, quiet, why, len) < 0)
			return -1;
	}
	return any_glob_leads(state, relative) ? watch_dir(state, relative, quiet, why, len) : 0;
}

/* Watches a directory (before reading it, so that no child created
 * meanwhile is missed), then considers each child cgroup in it. */
static int watch_dir(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len)
{
	char full[PATH_MAX], child[PATH_MAX];
	bool watched = false;

	for (size_t i = 0; i < state->dir_count && !watched; i++)
		watched = strcmp(state->dirs[i].relative, relative) == 0;
	full_path(state, relative, full, sizeof(full));
	if (!watched) {
		int wd = inotify_add_watch(state->inotify, full, IN_CREATE | IN_DELETE | IN_ONLYDIR);
		if (wd < 0)
			return 0;	/* gone meanwhile; a limit shows as the sweep's work */
		char *copy = strdup(relative);
		if (!copy || !grow(&state->dirs, &state->dir_cap, state->dir_count, sizeof(*state->dirs))) {
			free(copy);
			return say(why, len, "out of memory"), -1;
		}
		state->dirs[state->dir_count++] = (struct watched_dir){wd, copy};
	}
	DIR *listing = opendir(full);
	struct dirent *entry;
	int rc = 0;
	if (!listing)
		return 0;
	while (rc == 0 && (entry = readdir(listing))) {
		if (entry->d_type != DT_DIR || entry->d_name[0] == '.')
			continue;
		if ((size_t)snprintf(child, sizeof(child), "%s%s%s", relative, relative[0] ? "/" : "",
				     entry->d_name) >= sizeof(child))
			continue;
		rc = consider(state, child, quiet, why, len);
	}
	closedir(listing);
	return rc;
}

/* A cgroup removed: its attachments (and any below it) detached and
 * unpinned; its watch goes with IN_IGNORED. */
static void forget(struct daemon_state *state, const char *relative)
{
	for (size_t i = 0; i < state->app_count; i++) {
		struct served_app *served = &state->apps[i];
		for (size_t c = 0; c < served->cgroup_count;) {
			if (!is_within(served->cgroups[c].relative, relative)) {
				c++;
				continue;
			}
			pf_bpf_detach(served->cgroups[c].attachment);
			free(served->cgroups[c].relative);
			served->cgroups[c] = served->cgroups[--served->cgroup_count];
		}
	}
	for (size_t i = 0; i < state->refused_count;) {
		if (is_within(state->refused[i], relative)) {
			free(state->refused[i]);
			state->refused[i] = state->refused[--state->refused_count];
		} else {
			i++;
		}
	}
}

static void drop_watch(struct daemon_state *state, size_t i)
{
	free(state->dirs[i].relative);
	state->dirs[i] = state->dirs[--state->dir_count];
}

/* The attachments whose cgroup went or was re-created unseen, dropped;
 * then every watched directory read again. */
static int sweep(struct daemon_state *state, char *why, size_t len)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; c < state->apps[i].cgroup_count; c++)
			if (!pf_bpf_attachment_alive(state->apps[i].cgroups[c].attachment)) {
				char *gone = strdup(state->apps[i].cgroups[c].relative);
				if (gone)
					forget(state, gone);
				free(gone);
				c = (size_t)-1;	/* the list changed: from the start */
			}
	for (size_t i = 0; i < state->dir_count;) {
		char full[PATH_MAX];
		struct stat info;
		full_path(state, state->dirs[i].relative, full, sizeof(full));
		if (stat(full, &info) < 0) {
			inotify_rm_watch(state->inotify, state->dirs[i].wd);
			drop_watch(state, i);
		} else {
			i++;
		}
	}
	for (size_t i = 0; i < state->dir_count; i++) {
		char *relative = strdup(state->dirs[i].relative);
		int rc = relative ? watch_dir(state, relative, false, why, len) : 0;
		free(relative);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* What inotify says: cgroups created (confined now), removed (let go). */
static int read_events(struct daemon_state *state, bool *overflow, char *why, size_t len)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	char path[PATH_MAX];

	for (;;) {
		ssize_t n = read(state->inotify, buf, sizeof(buf));
		if (n <= 0)
			return 0;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *event = (const struct inotify_event *)p;
			p += sizeof(*event) + event->len;
			if (event->mask & IN_Q_OVERFLOW)
				*overflow = true;
			size_t d = 0;
			while (d < state->dir_count && state->dirs[d].wd != event->wd)
				d++;
			if (d == state->dir_count)
				continue;
			if (event->mask & IN_IGNORED) {
				drop_watch(state, d);
				continue;
			}
			if (!(event->mask & IN_ISDIR) || !event->len)
				continue;
			const char *dir = state->dirs[d].relative;
			if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir, dir[0] ? "/" : "", event->name) >=
			    sizeof(path))
				continue;
			if (event->mask & IN_DELETE)
				forget(state, path);
			else if ((event->mask & IN_CREATE) && consider(state, path, false, why, len) < 0)
				return -1;
		}
	}
}

/* An app is served when it lists cgroups, or when `attach` pinned it. */
static bool app_is_served(const struct pf_app *app)
{
	char dir[PATH_MAX];
	struct stat info;

	snprintf(dir, sizeof(dir), "%s/%s", PF_BPF_PIN_ROOT, app->name);
	return app->cgroups.count > 0 || stat(dir, &info) == 0;
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

static void stop_all(struct daemon_state *state, const struct daemon_state *next)
{
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

/* Every app the policy serves, loaded; then every cgroup there that its
 * globs match, attached, and the directories that can lead to one
 * watched; -1 with why when one cannot be confined. */
static int start_apps(struct daemon_state *state, const char *config, char *why, size_t len)
{
	state->inotify = -1;
	state->sink = pf_record_sink_open(bpf_cli_log_path(&state->policy), state->policy.log_syslog);
	state->apps = calloc(state->policy.app_count + 1, sizeof(*state->apps));
	if (!state->apps)
		return say(why, len, "out of memory"), -1;
	int rc = pf_cgroup2_mount(state->mount, sizeof(state->mount));
	if (rc < 0)
		return say(why, len, "no cgroup v2 hierarchy: %s", strerror(-rc)), -1;
	for (size_t i = 0; i < state->policy.app_count; i++) {
		const struct pf_app *app = &state->policy.apps[i];
		if (!app_is_served(app))
			continue;
		/* Counted first, so that a half-served app is stopped too. */
		struct served_app *served = &state->apps[state->app_count++];
		served->app = app;
		if (pf_bpf_app_load(&state->policy, app, true, &served->loaded, why, len) < 0)
			return -1;
	}
	if (state->app_count == 0) {
		say(why, len, "%s lists no cgroups for any app and no app is attached: nothing to confine", config);
		return -1;
	}
	state->inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (state->inotify < 0)
		return say(why, len, "cannot watch the cgroup hierarchy: inotify: %s", strerror(errno)), -1;
	return watch_dir(state, "", true, why, len);
}

static void announce(const struct daemon_state *state)
{
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t c = 0; c < state->apps[i].cgroup_count; c++)
			fprintf(stderr, "portfence: %s attached to %s\n", state->apps[i].app->name,
				state->apps[i].cgroups[c].relative);
}

/* A tick, cut short when an app's ring fills past its mark (a burst) or
 * inotify has news; true for the latter. */
static bool wait_for_events(const struct daemon_state *state)
{
	struct pf_bpf_app *loaded[state->app_count + 1];
	for (size_t i = 0; i < state->app_count; i++)
		loaded[i] = state->apps[i].loaded;
	return pf_bpf_wait_records_or(loaded, state->app_count, state->inotify, TICK_MS);
}

/* The new policy's programs are attached before the old ones go, so that
 * no connect slips through unconfined.  A policy that does not load
 * keeps the old one serving; one that loads but names an app that cannot
 * be confined ends the daemon (-1), as it would at start. */
static int reload(struct daemon_state *state, const char *config)
{
	struct daemon_state fresh = {.inotify = -1};
	char why[1024];

	fprintf(stderr, "portfence: reloading %s\n", config);
	if (load_policy(&fresh, config) < 0) {
		fprintf(stderr, "portfence: %s not reloaded; the policy in force stays\n", config);
		return 0;
	}
	if (start_apps(&fresh, config, why, sizeof(why)) < 0) {
		fprintf(stderr, "portfence: %s\n", why);
		stop_all(&fresh, NULL);
		stop_all(state, NULL);
		return -1;
	}
	stop_all(state, &fresh);
	*state = fresh;
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
		int rc = read_events(state, &overflow, why, sizeof(why));
		if (rc == 0 && (overflow || tick % SWEEP_EVERY_TICKS == 0))
			rc = sweep(state, why, sizeof(why));
		if (rc < 0) {
			fprintf(stderr, "portfence: %s\n", why);
			stop_all(state, NULL);
			return 1;
		}
		for (size_t i = 0; i < state->app_count; i++)
			pf_bpf_app_drain(state->apps[i].loaded, state->sink);
		if (wait_for_events(state))
			tick--;	/* news from inotify: no tick went by */
	}
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

	struct daemon_state state = {.inotify = -1};
	if (load_policy(&state, config) < 0)
		return 1;
	if (start_apps(&state, config, why, sizeof(why)) < 0) {
		stop_all(&state, NULL);
		return bpf_cli_refuse(why);
	}
	announce(&state);
	fprintf(stderr, "portfence: watching %s for the cgroups of %zu app%s\n", state.mount, state.app_count,
		state.app_count == 1 ? "" : "s");
	return serve(&state, config);
}
