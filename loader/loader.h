/* The BPF backend's user-space side: loads one app's programs, fills
 * their maps from the policy and the app's state, attaches them to
 * cgroups, and turns what the programs report into audit records. */
#ifndef PORTFENCE_BPF_LOADER_H
#define PORTFENCE_BPF_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/cgroup.h"
#include "kernel/pins.h"
#include "config/policy.h"

/* Where attachments are pinned: PF_BPF_PIN_ROOT/APP/ holds the app's
 * maps, PF_BPF_PIN_ROOT/APP/NAME/ the links of one cgroup (NAME: the
 * cgroup's path under the cgroup v2 mount, '%' as %25 and '/' as %2F). */
#define PF_BPF_PIN_ROOT PF_PIN_ROOT

struct pf_bpf_app;
struct pf_bpf_attachment;

/* Why the backend cannot be used here, in one line, or NULL when it can
 * be tried: root, cgroup v2, Linux >= 6.2. */
const char *pf_bpf_unavailable(char *why, size_t len);


/* Loads app's programs.  With share_pinned, the app's pinned maps (its
 * counters, its records) are used when present, and pinned when not. */
int pf_bpf_app_load(const struct pf_policy *policy, const struct pf_app *app, bool share_pinned,
		    struct pf_bpf_app **out, char *why, size_t len);
/* One attachment serving many cgroups (bpf/cgroups.bpf.h): a daemon's
 * apps share one cgroup map, each app its app_id there (from 1), the
 * first load made with cgroup_apps_fd -1 and the others given its
 * pf_bpf_cgroup_map_fd; births: this load carries the birth programs
 * (tp_btf/cgroup_mkdir and cgroup_rmdir), which pf_bpf_watch_births
 * attaches.  A load without it (pf_bpf_app_load) has its own map, which
 * pf_bpf_attach fills with each cgroup it attaches to. */
struct pf_bpf_share {
	uint32_t app_id;
	int cgroup_apps_fd;
	bool births;
};
int pf_bpf_app_load_shared(const struct pf_policy *policy, const struct pf_app *app, bool share_pinned,
			   const struct pf_bpf_share *share, struct pf_bpf_app **out, char *why, size_t len);
int pf_bpf_cgroup_map_fd(const struct pf_bpf_app *loaded);
/* The birth programs' glob table, entry index: app_id's glob (absolute
 * under the mount, "/x/y-*"); -EINVAL when the kernel's matcher cannot
 * take it ('[', '\\', too long), -errno otherwise.  app_id 0 ends the
 * table. */
int pf_bpf_set_birth_glob(struct pf_bpf_app *births, uint32_t index, uint32_t app_id, const char *glob);
/* Attaches the birth programs (by name, through BTF). */
int pf_bpf_watch_births(struct pf_bpf_app *births, char *why, size_t len);
/* Confines a cgroup through the shared map (an entry, no link), with a
 * pin directory naming it (PF_BPF_PIN_ROOT/APP/NAME/, empty) for status;
 * pf_bpf_detach drops both, pf_bpf_attachment_release neither. */
int pf_bpf_confine(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
		   struct pf_bpf_attachment **out, char *why, size_t len);
/* Drops whatever entry the map holds for the cgroup (a refused one the
 * birth program may have given an app). */
void pf_bpf_unconfine(int cgroup_apps_fd, const char *cgroup_full);
/* The id of a cgroup (its inode number on cgroup v2), 0 when gone. */
uint64_t pf_bpf_cgroup_id(const char *cgroup_full);
/* The daemon's dispatcher (bpf/dispatch.bpf.c): one program per hook
 * over the daemon's cgroup map (pf_bpf_cgroup_map_fd), for up to apps
 * apps, each tail-calling the socket's app's program.  Loaded once; each
 * app is routed (its programs put in the dispatcher's arrays at its
 * app_id); then the dispatcher is attached where several apps' programs
 * would stand.  A socket there runs one program per hook however many
 * apps share the cgroup. */
struct pf_bpf_dispatch;
int pf_bpf_dispatch_load(int cgroup_apps_fd, uint32_t apps, struct pf_bpf_dispatch **out, char *why, size_t len);
int pf_bpf_dispatch_route(struct pf_bpf_dispatch *dispatch, const struct pf_bpf_app *loaded, char *why, size_t len);
int pf_bpf_dispatch_attach(struct pf_bpf_dispatch *dispatch, const char *cgroup_full,
			   struct pf_bpf_attachment **out, char *why, size_t len);
void pf_bpf_dispatch_free(struct pf_bpf_dispatch *dispatch);
/* Where a daemon pins its cgroup map (for status and the benchmark). */
#define PF_BPF_CGROUPS_PIN "/sys/fs/bpf/portfence-cgroups"

/* Writes the app's configuration and rules again (SIGHUP). */
int pf_bpf_app_configure(struct pf_bpf_app *loaded, const struct pf_policy *policy,
			 const struct pf_app *app, char *why, size_t len);
void pf_bpf_app_free(struct pf_bpf_app *loaded);
/* What the programs' counters (sequential, hash, random-increments,
 * double-hash's table) advanced since the last call, added to the app's
 * shared state: the next process of the app, under either backend,
 * continues the sequence.  Each drain and the free make it. */
void pf_bpf_app_sync_counters(struct pf_bpf_app *loaded);
const char *pf_bpf_app_name(const struct pf_bpf_app *loaded);

/* Attaches every program to the cgroup; with pin, the links are pinned
 * so that they outlive the process.  All or nothing. */
int pf_bpf_attach(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
		  bool pin, struct pf_bpf_attachment **out, char *why, size_t len);
/* The same, the links pinned under pin_root/APP/NAME/ (NULL: not pinned). */
int pf_bpf_attach_under(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
			const char *pin_root, struct pf_bpf_attachment **out, char *why, size_t len);
/* Forgets the links, leaving them attached through their pins. */
void pf_bpf_attachment_release(struct pf_bpf_attachment *attachment);
/* Removes app_name's pinned maps when no cgroup of it is left and
 * they hold no record not written yet. */
void pf_bpf_forget_app_if_unused(const char *app_name);
/* Detaches and forgets the links (and their pins). */
void pf_bpf_detach(struct pf_bpf_attachment *attachment);
/* The links of a cgroup pinned for app_name (all apps when NULL):
 * detached and unpinned; an app's maps too when it has no cgroup left,
 * unless its ring holds records not written yet (*records_kept set
 * true: the next daemon writes them).  Returns how many apps were
 * detached, or -errno. */
int pf_bpf_detach_pinned(const char *app_name, const char *cgroup_relative, bool *records_kept);
/* The links pinned in dir, detached; then their pins and dir removed.
 * 1, or 0 when dir cannot be read. */
int pf_bpf_unpin_links(const char *dir);
/* Whether the cgroup an attachment was made to still exists as it was
 * (a re-created cgroup is a new one, which the links do not reach). */
bool pf_bpf_attachment_alive(const struct pf_bpf_attachment *attachment);

/* The links of a `run --bpf` are pinned under PF_BPF_RUN_ROOT/APP/NAME/
 * (NAME: the run's cgroup, encoded as above), so that the run stays
 * confined whatever happens to the processes that made it.  The run's
 * launcher and keeper hold a lock on that directory while they live;
 * an unlocked one is left over, and pf_bpf_sweep_leftovers removes it
 * once its cgroup is empty or gone. */
#define PF_BPF_RUN_ROOT PF_PIN_RUN_ROOT
/* The run's directory, made and locked: its fd (close it to let go), or
 * -errno with the reason in why. */
int pf_bpf_run_claim(const char *app_name, const char *cgroup_relative, char *why, size_t len);
/* After the run's pins are gone: its directory, then the app's and the
 * runs' directories removed when empty, and the lock let go. */
void pf_bpf_run_release(int claim, const char *app_name, const char *cgroup_relative);
/* What dead commands left pinned: the runs no process holds (a run
 * whose cgroup is gone or empty is detached, unpinned and its cgroup
 * removed; one whose cgroup still has processes stays confined through
 * its pins), and, when no daemon is alive, the empty directories a
 * daemon writes per confined cgroup and its cgroup map (its links died
 * with it; the apps' maps stay, their records for the next drain).
 * Quiet; as root only. */
void pf_bpf_sweep_leftovers(void);
/* The daemon's claim: a lock on PF_BPF_PIN_ROOT, held for its life (one
 * daemon per host: two would attach twice and unpin each other's
 * map), then the leftovers of a dead one swept.  Its fd, or -errno with
 * the reason in why. */
int pf_bpf_daemon_claim(char *why, size_t len);

/* Records: drained from the programs' ring buffer and appended to the
 * log, many per write(2). */
#include "record/sink.h"
/* Names a cgroup (its id, its path under the mount) before its records
 * come: a container's cgroup may be gone by the time they are drained. */
void pf_bpf_note_cgroup(uint64_t id, const char *relative);
/* Drains what the app's programs reported, then writes one error record
 * with "lost" when the ring had no room for some since the last drain;
 * the number of records written. */
int pf_bpf_app_drain(struct pf_bpf_app *loaded, struct pf_record_sink *sink);
/* Drains also print a notice on stderr (the run's terminal) for a deny
 * and an exhausted range, at most one per second of each: run --bpf with
 * -v or the app's notify = "stderr". */
void pf_bpf_app_notify(struct pf_bpf_app *loaded, bool on);
/* Waits up to timeout_ms, less when the programs of one of apps wake
 * their drainer (their ring is a quarter full) or a signal comes. */
void pf_bpf_wait_records(struct pf_bpf_app *const *apps, size_t count, int timeout_ms);
/* The same, cut short too when other_fd (-1: none) is readable, which
 * it returns. */
bool pf_bpf_wait_records_or(struct pf_bpf_app *const *apps, size_t count, int other_fd, int timeout_ms);
/* How many records the programs of app_name's pinned maps had no room
 * for since they were pinned (written or not in an error record since):
 * 0 when none are pinned, -errno when the pin cannot be read. */
long long pf_bpf_records_lost(const char *app_name);
/* The assignments and failures (no free port) counted by the programs
 * of app_name's attachments pinned now (attach, daemon, the runs of
 * `run --bpf` alive), summed over their distinct counters: 0 and 0 when
 * none is pinned; -errno when some could not be read and none could. */
int pf_bpf_outcomes(const char *app_name, uint64_t *assigned, uint64_t *failed);

#endif
