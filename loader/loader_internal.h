/* Inside the loader: what one loaded app holds. */
#ifndef PORTFENCE_BPF_LOADER_INTERNAL_H
#define PORTFENCE_BPF_LOADER_INTERNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/portfence_api.h"
#include "core/state.h"
#include "loader/loader.h"

struct portfence_bpf;
struct ring_buffer;
struct bpf_link;

struct pf_bpf_app {
	char *app_name;
	/* PF_BPF_PIN_ROOT/APP, the app's name as bpffs takes it (pins.h). */
	char pin_dir[PATH_MAX];
	const char *algorithm_name;
	struct portfence_bpf *skel;
	bool counters_shared;	/* the pinned counters of an earlier load */
	struct ring_buffer *ring;
	struct bpf_link *exec_link;	/* NULL: a pinned one serves */
	struct pf_record_sink *draining_to;
	int drained;
	/* What explains the records: the deny's rule, the error's reason. */
	struct pf_explainer *explainer;
	bool notify;		/* notices on stderr (pf_bpf_app_notify) */
	long long last_notice_ms[2];	/* deny, error */
	/* cgroup_apps (bpf/cgroups.bpf.h): the object's own, holding the
	 * cgroups it is attached to (own_cgroups), or a daemon's, shared by
	 * all its apps; app_id is this app's value there. */
	bool own_cgroups;
	uint32_t app_id;
	struct bpf_link *birth_links[2];	/* cgroup_mkdir, cgroup_rmdir */
	/* The app's shared state (the shim's counters and keys), held while
	 * the app is loaded: what the programs' counters advanced since
	 * synced goes back there (pf_bpf_app_sync_counters). */
	bool state_open;
	struct pf_state state;
	struct pf_bpf_counters synced;
};

/* The hooks' programs, in one order for the app's object and the
 * dispatcher's (loader/attach.c, loader/dispatch.c). */
#define PF_BPF_PROGRAM_COUNT 11
struct bpf_program;
struct bpf_program *pf_bpf_app_program(const struct pf_bpf_app *loaded, int i);
/* Attaches the programs (links; BPF_F_ALLOW_MULTI) to the cgroup, all or
 * none: the attachment (not pinned), or -errno with why. */
int pf_bpf_attach_programs(struct bpf_program *const programs[PF_BPF_PROGRAM_COUNT], const char *cgroup_full,
			   struct pf_bpf_attachment **out, char *why, size_t len);

/* bpffs at /sys/fs/bpf, mounted there when it is not; 0 or -errno. */
int pf_bpf_ensure_bpffs(void);
/* Every pin in dir removed, then dir. */
void pf_bpf_remove_pins(const char *dir);
/* Whether an app's pin directory holds a cgroup's (an attachment). */
bool pf_bpf_app_dir_in_use(const char *app_dir);
/* The entries of an app's record_loss map (bpf/maps.bpf.h). */
struct pf_bpf_loss {
	uint64_t lost;		/* records the ring had no room for */
	uint64_t reported;	/* of them, in an error record (0 when unread) */
};
/* The pinned record_loss map in app_dir (PF_BPF_PIN_ROOT/APP): 1 when
 * read into loss, 0 when none is pinned, -errno when it cannot be
 * read. */
int pf_bpf_pinned_loss(const char *app_dir, struct pf_bpf_loss *loss);
/* The lock on bpffs's root that making pin directories and sweeping
 * them take in turns (waits for it): its fd, or -errno. */
int pf_bpf_lock_pin_root(void);
/* The runs no process holds: a run whose cgroup is gone or empty is
 * detached, unpinned and its cgroup removed; one whose cgroup still has
 * processes stays confined through its pins.  Quiet; as root only. */
void pf_bpf_sweep_runs(void);

/* The rule tries: sized before the load, filled after it. */
int pf_bpf_size_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len);
int pf_bpf_fill_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len);


#endif
