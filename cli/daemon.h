/* Inside `portfence daemon`: the state the serving loop (cli/daemon.c)
 * and the cgroup watch (cli/daemon_watch.c) share. */
#ifndef PORTFENCE_CLI_DAEMON_H
#define PORTFENCE_CLI_DAEMON_H

#include <glib.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "bpf_cli.h"
#include "cli.h"

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
	size_t point;		/* where its programs (or the dispatcher) stand: daemon_state.points */
};

struct watched_dir {
	int wd;
	char *relative;
};

/* Where programs stand for the apps below: one app's own (direct), or
 * the dispatcher's for several. */
struct dispatch_point {
	char *relative;
	struct pf_bpf_attachment *attachment;
	const struct served_app *direct;	/* the one app whose programs stand there; NULL: the dispatcher */
	const struct served_app *owner;		/* without a dispatcher, the app the point is for */
};

struct pf_collector;

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
	struct pf_collector *collector;	/* shim records (cli/collector.c); NULL: none */
	bool bpf;			/* the BPF backend can be used here */
	/* One attachment, many cgroups: each app's programs stand at the
	 * common ancestor of its own globs (points: none above another);
	 * where several apps share a point, the dispatcher
	 * (bpf/dispatch.bpf.c) stands there and tail-calls the socket's
	 * app's programs.  A cgroup is confined by its entry in the cgroup
	 * map (the first app's, shared by all). */
	int cgroup_apps_fd;		/* -1: none */
	struct pf_bpf_dispatch *dispatch;	/* NULL: one app, none needed */
	struct dispatch_point *points;
	size_t point_count;
	GHashTable *confined;		/* relative -> its served_app, every app's cgroups; NULL: none yet */
};

void daemon_say(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* cli/daemon_watch.c.  Each returns 0, or -1 with why filled when an
 * app it must confine cannot be confined. */
/* Watches relative (and what a glob can lead to below it), confining
 * each matching cgroup found there. */
int daemon_watch_dir(struct daemon_state *state, const char *relative, bool quiet, char *why, size_t len);
/* Every watched directory read again: what inotify missed. */
int daemon_sweep(struct daemon_state *state, char *why, size_t len);
/* The policy's globs handed to the birth program, which is attached,
 * and the cgroup map pinned; a glob or a part the kernel cannot take is
 * left to the watch, with one warning line. */
void daemon_start_births(struct daemon_state *state);
/* Programs attached at the common ancestor of each app's globs' fixed
 * parts: the app's own, or the dispatcher where apps share one or one
 * lies above another (again when that cgroup was re-created); -1 with
 * why when they cannot be, another manager's exclusive attachment
 * named. */
int daemon_keep_ancestor(struct daemon_state *state, char *why, size_t len);
/* The queued inotify events; *overflow when the queue overflowed. */
int daemon_read_events(struct daemon_state *state, bool *overflow, char *why, size_t len);

#endif
