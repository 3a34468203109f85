/* Globs over cgroup paths (the policy's `cgroups`): fnmatch(3) with
 * FNM_PATHNAME against the path under the cgroup v2 mount, one
 * component per '/', so that `*` never crosses into a child cgroup. */
#ifndef PORTFENCE_CGROUP_GLOB_H
#define PORTFENCE_CGROUP_GLOB_H

#include <stdbool.h>
#include <stddef.h>

/* Why glob is not a glob the policy takes ('[' never closed, a component
 * empty or "..", a trailing '\'), or NULL when it is one. */
const char *pf_cgroup_glob_invalid(const char *glob);
/* The number of components ("a/b/c": 3; "/": 0). */
size_t pf_cgroup_glob_depth(const char *path);
/* Whether the cgroup (its path relative to the mount, with or without a
 * leading '/') matches glob. */
bool pf_cgroup_glob_match(const char *glob, const char *relative);
/* Whether relative can lead to a match: it has fewer components than
 * glob and each matches glob's component in its place. */
bool pf_cgroup_glob_leads(const char *glob, const char *relative);
/* Whether some cgroup path matches both globs (exact, for `*`, `?`,
 * `[...]` and '\' escapes). */
bool pf_cgroup_globs_intersect(const char *a, const char *b);
/* glob as it reads relative to the cgroup v2 mount: what follows the
 * mount when glob starts with it and a '/' ("/sys/fs/cgroup/a/b" under
 * "/sys/fs/cgroup": "/a/b"), else glob itself, which then names the path
 * relative to the mount already.  A mount of "" or "/" is no prefix. */
const char *pf_cgroup_under_mount(const char *glob, const char *mount);

#endif
