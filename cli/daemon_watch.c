/* The daemon's watch of the cgroup hierarchy: which app confines a
 * cgroup (its globs, or the nearest confined ancestor), confining (an
 * entry in the shared cgroup map) and letting go as cgroups appear and
 * go (inotify IN_CREATE / IN_DELETE on the directories a glob can lead
 * through), and the sweep that catches what an overflowing queue
 * dropped.  The kernel's birth program has usually made the entry
 * already; the watch is the backstop, and keeps the books (pins, the
 * refusal lines).  Here too: the globs handed to the birth program, and
 * each app's one attachment, at the common ancestor of its globs.  The
 * serving loop is cli/daemon.c. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "config/cgroup_glob.h"
#include "daemon.h"

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

/* The app confining relative or its nearest ancestor; NULL when none.
 * Through the index of confined cgroups, one lookup per level: the
 * sweep asks this of every cgroup each second. */
static struct served_app *confiner(struct daemon_state *state, const char *relative, bool *exact,
				   const char **at)
{
	char path[PATH_MAX];
	gpointer key, value;

	if (!state->confined || (size_t)snprintf(path, sizeof(path), "%s", relative) >= sizeof(path))
		return NULL;
	for (;;) {
		if (g_hash_table_lookup_extended(state->confined, path, &key, &value)) {
			*at = key;
			*exact = strcmp(key, relative) == 0;
			return value;
		}
		if (!path[0])
			return NULL;
		char *slash = strrchr(path, '/');
		*(slash ? slash : path) = '\0';
	}
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

static bool app_matches(const struct daemon_state *state, const struct pf_app *app, const char *relative)
{
	for (size_t g = 0; g < app->cgroups.count; g++)
		if (pf_cgroup_glob_match(pf_cgroup_under_mount(app->cgroups.globs[g], state->mount), relative))
			return true;
	return false;
}

static bool any_glob_leads(const struct daemon_state *state, const char *relative)
{
	for (size_t i = 0; i < state->app_count; i++) {
		const struct pf_app *app = state->apps[i].app;
		for (size_t g = 0; g < app->cgroups.count; g++)
			if (pf_cgroup_glob_leads(pf_cgroup_under_mount(app->cgroups.globs[g], state->mount), relative))
				return true;
	}
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
		return daemon_say(why, len, "out of memory"), -1;
	int rc = pf_bpf_confine(served->loaded, full, relative, &attachment, reason, sizeof(reason));
	struct stat now;
	if (rc == -ENOENT || rc == -ENOTDIR || (rc < 0 && stat(full, &now) < 0))
		return 0;	/* removed meanwhile (a container that ended at once), or not a cgroup */
	if (rc < 0)
		return daemon_say(why, len, "%s: %s", served->app->name, reason), -1;
	char *copy = strdup(relative);
	if (!copy) {
		pf_bpf_detach(attachment);
		return daemon_say(why, len, "out of memory"), -1;
	}
	struct stat info;
	if (stat(full, &info) == 0)
		pf_bpf_note_cgroup((uint64_t)info.st_ino, relative);
	served->cgroups[served->cgroup_count++] = (struct confined_cgroup){copy, attachment};
	if (!state->confined)
		state->confined = g_hash_table_new(g_str_hash, g_str_equal);
	g_hash_table_insert(state->confined, copy, served);
	if (!quiet)
		fprintf(stderr, "portfence: %s attached to %s\n", served->app->name, relative);
	return 0;
}


/* A cgroup seen (at start, created, or by the sweep): confined by the one
 * app whose globs match it, refused when two do or another app holds
 * it, and watched when a glob can match below it. */
static int consider(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len)
{
	struct served_app *matched = NULL;

	char full[PATH_MAX];

	full_path(state, relative, full, sizeof(full));
	for (size_t i = 0; i < state->app_count; i++) {
		if (!app_matches(state, state->apps[i].app, relative))
			continue;
		if (matched) {
			pf_bpf_unconfine(state->cgroup_apps_fd, full);
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
		if (holder && holder != matched) {
			pf_bpf_unconfine(state->cgroup_apps_fd, full);
			refuse(state, relative, "cgroup %s matches app '%s' but lies in %s, which app '%s' confines: "
				      "refused", relative, matched->app->name, at, holder->app->name);
		} else if (!holder && (holder = confined_below(state, matched, relative, &at)))
			refuse(state, relative, "cgroup %s matches app '%s' but holds %s, which app '%s' confines: "
				      "refused", relative, matched->app->name, at, holder->app->name);
		else if (!holder && confine(state, matched, relative, quiet, why, len) < 0)
			return -1;
	}
	return any_glob_leads(state, relative) ? daemon_watch_dir(state, relative, quiet, why, len) : 0;
}

void daemon_start_births(struct daemon_state *state)
{
	struct pf_bpf_app *births = state->app_count ? state->apps[0].loaded : NULL;
	char glob[PATH_MAX + 1], why[1024];
	uint32_t index = 0;

	if (!births)
		return;
	for (size_t i = 0; i < state->app_count; i++)
		for (size_t g = 0; g < state->apps[i].app->cgroups.count; g++) {
			const char *under = pf_cgroup_under_mount(state->apps[i].app->cgroups.globs[g], state->mount);
			snprintf(glob, sizeof(glob), "%s%s", under[0] == '/' ? "" : "/", under);
			for (size_t n = strlen(glob); n > 1 && glob[n - 1] == '/'; n--)
				glob[n - 1] = '\0';
			int rc = pf_bpf_set_birth_glob(births, index, (uint32_t)(i + 1), glob);
			if (rc == 0)
				index++;
			else
				fprintf(stderr, "portfence: warning: cgroup \"%s\" of app '%s' is matched after mkdir only "
					"(by the watch): %s\n", state->apps[i].app->cgroups.globs[g], state->apps[i].app->name,
					rc == -EINVAL ? "the kernel's matcher takes `*`, `?` and literal bytes, up to 127"
					: rc == -E2BIG ? "the kernel's table is full" : strerror(-rc));
		}
	pf_bpf_set_birth_glob(births, index, 0, "");	/* the table's end (a full one has none) */
	if (pf_bpf_watch_births(births, why, sizeof(why)) < 0)
		fprintf(stderr, "portfence: warning: %s; new cgroups are confined by the watch, just after mkdir\n", why);
	unlink(PF_BPF_CGROUPS_PIN);
	if (bpf_obj_pin(state->cgroup_apps_fd, PF_BPF_CGROUPS_PIN) < 0)
		fprintf(stderr, "portfence: warning: cannot pin the cgroup map at %s: %s\n", PF_BPF_CGROUPS_PIN,
			strerror(errno));
}

/* The fixed components of glob's parent (those before the first with a
 * pattern character, never its last), into out; how many. */
static size_t fixed_parent(const struct daemon_state *state, const char *glob, char *out, size_t len)
{
	const char *p = pf_cgroup_under_mount(glob, state->mount);
	size_t count = 0, used = 0;

	out[0] = '\0';
	while (*p == '/')
		p++;
	for (;;) {
		size_t n = strcspn(p, "/");
		const char *next = p + n;
		while (*next == '/')
			next++;
		if (!*next || strcspn(p, "*?[\\") < n || used + n + 2 > len)
			return count;	/* the last component, or one with a pattern */
		used += (size_t)snprintf(out + used, len - used, "%s%.*s", used ? "/" : "", (int)n, p);
		count++;
		p = next;
	}
}

/* The common ancestor of the app's globs' fixed parents, cut back to a
 * cgroup that exists.  Its own, not all apps': every socket below an
 * attachment runs its programs, if only to find it is not their app's,
 * so a wider one would charge each app's sockets for the others. */
static void common_ancestor(const struct daemon_state *state, const struct pf_app *app, char *ancestor,
			    size_t len)
{
	char prefix[PATH_MAX], full[PATH_MAX];
	struct stat info;

	ancestor[0] = '\0';
	for (size_t g = 0; g < app->cgroups.count; g++) {
		fixed_parent(state, app->cgroups.globs[g], prefix, sizeof(prefix));
		if (g == 0) {
			snprintf(ancestor, len, "%s", prefix);
			continue;
		}
		size_t n = 0;
		while (ancestor[n] && ancestor[n] == prefix[n])
			n++;
		if (!(ancestor[n] == '\0' && (prefix[n] == '/' || prefix[n] == '\0')))
			while (n > 0 && ancestor[n] != '/')
				n--;	/* back to a whole component */
		ancestor[n] = '\0';
	}
	for (;;) {
		full_path(state, ancestor, full, sizeof(full));
		if (!ancestor[0] || (stat(full, &info) == 0 && S_ISDIR(info.st_mode)))
			return;
		char *slash = strrchr(ancestor, '/');
		if (slash)
			*slash = '\0';
		else
			ancestor[0] = '\0';
	}
}

/* Whether cgroup above is cgroup below or one of its ancestors
 * (relative paths, "" the root). */
static bool at_or_above(const char *above, const char *below)
{
	size_t n = strlen(above);
	return n == 0 || (strncmp(above, below, n) == 0 && (below[n] == '\0' || below[n] == '/'));
}

/* The point at relative (of owner alone, when not NULL), added (not yet
 * attached) when there is none. */
static struct dispatch_point *point_at(struct daemon_state *state, const char *relative,
				       const struct served_app *owner)
{
	for (size_t i = 0; i < state->point_count; i++)
		if (strcmp(state->points[i].relative, relative) == 0 && state->points[i].owner == owner)
			return &state->points[i];
	struct dispatch_point *grown = realloc(state->points, (state->point_count + 1) * sizeof(*grown));
	if (!grown)
		return NULL;
	state->points = grown;
	char *copy = strdup(relative);
	if (!copy)
		return NULL;
	state->points[state->point_count] = (struct dispatch_point){.relative = copy, .owner = owner};
	return &state->points[state->point_count++];
}

/* The apps a point serves: how many, the first of them, and their names
 * for the line that says where the programs stand ("" when none). */
struct point_apps {
	size_t count;
	const struct served_app *first;
	char names[1024];
};

static void point_apps(const struct daemon_state *state, size_t point, struct point_apps *out)
{
	size_t used = 0;

	*out = (struct point_apps){0};
	for (size_t i = 0; i < state->app_count; i++) {
		const struct served_app *served = &state->apps[i];
		if (!served->app->cgroups.count || served->point != point)
			continue;
		if (!out->count++)
			out->first = served;
		if (used < sizeof(out->names))
			used += (size_t)snprintf(out->names + used, sizeof(out->names) - used, "%s%s", used ? ", " : "",
						 served->app->name);
	}
}

/* Each app's point: where its programs (or the dispatcher) stood for it
 * if they stand there still, else the common ancestor of the app's
 * globs; then an app whose point lies under another's moves up to it,
 * since a socket below both points would run every hook twice.  Without
 * a dispatcher, each app keeps a point of its own, as every app's
 * programs judge only their own app's sockets. */
static int place_points(struct daemon_state *state, char *why, size_t len)
{
	char ancestor[PATH_MAX];

	for (size_t i = 0; i < state->app_count; i++) {
		struct served_app *served = &state->apps[i];
		if (!served->app->cgroups.count)
			continue;
		const struct dispatch_point *current =
			served->point < state->point_count ? &state->points[served->point] : NULL;
		if (current && current->attachment && pf_bpf_attachment_alive(current->attachment))
			continue;
		common_ancestor(state, served->app, ancestor, sizeof(ancestor));
		const struct dispatch_point *point = point_at(state, ancestor, state->dispatch ? NULL : served);
		if (!point)
			return daemon_say(why, len, "out of memory"), -1;
		served->point = (size_t)(point - state->points);
	}
	for (size_t i = 0; state->dispatch && i < state->app_count; i++) {
		struct served_app *served = &state->apps[i];
		for (size_t p = 0; served->app->cgroups.count && p < state->point_count; p++)
			if (p != served->point &&
			    at_or_above(state->points[p].relative, state->points[served->point].relative))
				served->point = p;
	}
	return 0;
}

/* The point's programs attached: its one app's own, or the dispatcher
 * for several. */
static int attach_point(struct daemon_state *state, size_t p, const struct served_app *sole,
			struct pf_bpf_attachment **attachment, char *why, size_t len)
{
	const struct dispatch_point *point = &state->points[p];
	char full[PATH_MAX];

	full_path(state, point->relative, full, sizeof(full));
	if (sole)
		return pf_bpf_attach_under(sole->loaded, full, point->relative, NULL, attachment, why, len);
	if (!state->dispatch)	/* without one, every point has its one app */
		return daemon_say(why, len, "no dispatcher is loaded"), -EINVAL;
	return pf_bpf_dispatch_attach(state->dispatch, full, attachment, why, len);
}

/* Programs attached at each point an app needs (again when its cgroup
 * was re-created, or when the apps there changed from one to several),
 * then gone from the points none needs: the new attachment stands
 * before the old goes, so that no socket is left unjudged meanwhile. */
int daemon_keep_ancestor(struct daemon_state *state, char *why, size_t len)
{
	char reason[PATH_MAX + 512];
	struct point_apps apps;

	if (place_points(state, why, len) < 0)
		return -1;
	for (size_t p = 0; p < state->point_count; p++) {
		struct dispatch_point *point = &state->points[p];
		point_apps(state, p, &apps);
		const struct served_app *sole = apps.count == 1 ? apps.first : NULL;
		if (!apps.count ||
		    (point->attachment && point->direct == sole && pf_bpf_attachment_alive(point->attachment)))
			continue;
		struct pf_bpf_attachment *attachment = NULL;
		if (attach_point(state, p, sole, &attachment, reason, sizeof(reason)) < 0)
			return daemon_say(why, len, "%s: %s (the one attachment confining \"%s\"%s)", apps.names, reason,
					  apps.first->app->cgroups.globs[0],
					  apps.count > 1 || apps.first->app->cgroups.count > 1
						  ? " and the other cgroups of the apps"
						  : ""),
			       -1;
		pf_bpf_detach(point->attachment);
		point->attachment = attachment;
		point->direct = sole;
		if (sole)
			fprintf(stderr, "portfence: the programs of %s stand once at cgroup %s (BPF_F_ALLOW_MULTI); each "
					"cgroup is confined by its entry in their map\n",
				apps.names, point->relative[0] ? point->relative : "/ (the root)");
		else
			fprintf(stderr, "portfence: the programs of %s stand once at cgroup %s, behind one program per "
					"hook that finds the socket's app (BPF_F_ALLOW_MULTI); each cgroup is confined "
					"by its entry in their map\n",
				apps.names, point->relative[0] ? point->relative : "/ (the root)");
	}
	for (size_t p = 0; p < state->point_count; p++) {
		point_apps(state, p, &apps);
		if (!apps.count && state->points[p].attachment) {
			pf_bpf_detach(state->points[p].attachment);
			state->points[p].attachment = NULL;
		}
	}
	return 0;
}

/* Watches a directory (before reading it, so that no child created
 * meanwhile is missed), then considers each child cgroup in it. */
int daemon_watch_dir(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len)
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
			return daemon_say(why, len, "out of memory"), -1;
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
			if (state->confined)
				g_hash_table_remove(state->confined, served->cgroups[c].relative);
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
int daemon_sweep(struct daemon_state *state, char *why, size_t len)
{
	if (daemon_keep_ancestor(state, why, len) < 0)
		return -1;
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
		int rc = relative ? daemon_watch_dir(state, relative, false, why, len) : 0;
		free(relative);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* What inotify says: cgroups created (confined now), removed (let go). */
int daemon_read_events(struct daemon_state *state, bool *overflow, char *why, size_t len)
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
