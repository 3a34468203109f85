/* Which app a running process belongs to, as the tool sees it from
 * outside: a process in a cgroup the BPF backend attached (PF_PIN_ROOT
 * or PF_PIN_RUN_ROOT, at or below the attached cgroup) is that app's; a
 * process with libportfence.so mapped is the app the policy selects for
 * it (PORTFENCE_APP from its environment, its exe, comm, argv[0]), as
 * the shim itself selects; any other process is unconfined. */
#ifndef PORTFENCE_PROCAPP_H
#define PORTFENCE_PROCAPP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/policy.h"

struct attached_cgroup {
	int app;		/* policy index */
	char *path;		/* relative to the cgroup v2 mount, no leading '/' */
	bool run;		/* a `run --bpf` run (PF_PIN_RUN_ROOT) */
};

struct proc_apps {
	const struct pf_policy *policy;
	struct attached_cgroup *cgroups;
	size_t cgroup_count;
	/* What could not be read (non-root): counted, said once. */
	unsigned long unreadable_maps;
};

enum proc_backend { PROC_UNCONFINED, PROC_SHIM, PROC_BPF, PROC_UNKNOWN };

struct proc_info {
	pid_t pid;
	char comm[64];
	char cgroup[512];	/* v2 path, leading '/'; empty when unknown */
	char unit[256];		/* the systemd unit the cgroup path names; empty */
	int app;		/* policy index, or -1 */
	enum proc_backend backend;
};

/* Reads the pins under both pin roots for the policy's apps.  The caller
 * sweeps first (pf_bpf_sweep_leftovers): a dead daemon's or run's pins
 * are no attachment. */
void proc_apps_init(struct proc_apps *apps, const struct pf_policy *policy);
void proc_apps_free(struct proc_apps *apps);
/* Fills info for pid (proc_fd: an open /proc); false when it is gone. */
bool proc_apps_identify(struct proc_apps *apps, int proc_fd, pid_t pid, struct proc_info *info);
/* The systemd unit a cgroup path names (its last "*.service", "*.scope",
 * "*.socket", "*.mount" or "*.swap" component) into out, or "". */
void proc_unit_of(const char *cgroup, char *out, size_t len);
const char *proc_backend_name(enum proc_backend backend);
/* Whether the fd link name under fd_dir (a /proc/PID/fd) is a socket,
 * and its inode. */
bool proc_socket_inode(int fd_dir, const char *name, uint32_t *inode);

#endif
