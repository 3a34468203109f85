/* The cgroup v2 hierarchy as the BPF backend and the tool name it. */
#ifndef PORTFENCE_CGROUP_H
#define PORTFENCE_CGROUP_H

#include <stdbool.h>
#include <stddef.h>

/* The cgroup v2 mount point, from /proc/self/mountinfo; 0 or -errno. */
int pf_cgroup2_mount(char *buf, size_t len);
/* A cgroup given absolute (under the mount) or relative to the mount:
 * its full path and its path relative to the mount (no leading '/'). */
int pf_cgroup_resolve(const char *cgroup, char *full, size_t full_len, char *relative,
		      size_t relative_len);
/* Whether a process is in the cgroup (full path) or below it, from its
 * cgroup.events; false when it cannot be read. */
bool pf_cgroup_populated(const char *full);

#endif
