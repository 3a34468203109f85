/* A new cgroup confined at birth: tp_btf/cgroup_mkdir runs inside
 * mkdir(2), before the directory is visible, so before any process can
 * join it; it matches the cgroup's path against the policy's globs
 * (cgroup_globs, filled by the loader) and inserts the cgroup's app in
 * cgroup_apps (bpf/cgroups.bpf.h).  A cgroup two apps' globs match, or
 * one lying in a cgroup of another app, gets no entry (user space logs
 * the refusal); tp_btf/cgroup_rmdir drops the entry of a removed cgroup.
 * The user-space watch of the hierarchy (cli/daemon_watch.c) stays the
 * backstop. */
#ifndef PORTFENCE_BPF_BIRTHS_BPF_H
#define PORTFENCE_BPF_BIRTHS_BPF_H

#include "bpf/cgroups.bpf.h"
#include "bpf/glob.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_GLOBS);
	__type(key, __u32);
	__type(value, struct pf_bpf_cgroup_glob);
} cgroup_globs SEC(".maps");

/* Each glob of the table against the new cgroup's path (in the
 * scratch): the one app they name, or refused when two apps' do. */
static long pfb_birth_glob(__u32 index, void *ctx)
{
	struct pf_bpf_cgroup_glob *glob = bpf_map_lookup_elem(&cgroup_globs, &index);
	struct pfb_glob_scratch *s = pfb_glob_scratch();

	(void)ctx;
	if (!glob || !glob->app || !s)
		return 1;
	if (glob->app == s->w.app)
		return 0;	/* this app matches already */
	__builtin_memcpy(s->glob, glob->glob, sizeof(s->glob));
	if (!pfb_glob_matches(s))
		return 0;
	if (s->w.app) {
		s->w.refused = 1;
		return 1;
	}
	s->w.app = glob->app;
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int pfb_cgroup_mkdir(__u64 *ctx)
{
	struct cgroup___pf *cgroup = (struct cgroup___pf *)ctx[0];
	const char *path = (const char *)ctx[1];
	struct pfb_glob_scratch *s = pfb_glob_scratch();

	if (!s || BPF_CORE_READ(cgroup, root, hierarchy_id) != 0)
		return 0;	/* a cgroup v1 hierarchy's */
	long n = bpf_probe_read_kernel_str(s->path, sizeof(s->path), path);
	if (n <= 0 || n >= (long)sizeof(s->path))
		return 0;	/* too long for the kernel's match: the watch matches it */
	s->w.app = 0;
	s->w.refused = 0;
	bpf_loop(PF_BPF_GLOBS, pfb_birth_glob, NULL, 0);
	__u32 app = s->w.app;
	if (!app || s->w.refused)
		return 0;
	struct kernfs_node___pf *kn = BPF_CORE_READ(cgroup, kn);
	__u64 id = BPF_CORE_READ(kn, id);
	struct kernfs_node___pf *parent = bpf_core_field_exists(kn->__parent)
						  ? BPF_CORE_READ(kn, __parent)
						  : (struct kernfs_node___pf *)BPF_CORE_READ(
							    (struct kernfs_node___pf_old *)kn, parent);
	/* In a cgroup another app confines: refused (the watch says so). */
	for (int level = 0; level < PFB_CGROUP_LEVELS && parent; level++) {
		__u64 above = BPF_CORE_READ(parent, id);
		__u32 *found = bpf_map_lookup_elem(&cgroup_apps, &above);
		if (found) {
			if (*found != app)
				return 0;
			break;
		}
		parent = bpf_core_field_exists(parent->__parent)
				 ? BPF_CORE_READ(parent, __parent)
				 : (struct kernfs_node___pf *)BPF_CORE_READ((struct kernfs_node___pf_old *)parent, parent);
	}
	bpf_map_update_elem(&cgroup_apps, &id, &app, BPF_NOEXIST);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int pfb_cgroup_rmdir(__u64 *ctx)
{
	struct cgroup___pf *cgroup = (struct cgroup___pf *)ctx[0];

	if (BPF_CORE_READ(cgroup, root, hierarchy_id) != 0)
		return 0;
	__u64 id = BPF_CORE_READ(cgroup, kn, id);
	bpf_map_delete_elem(&cgroup_apps, &id);
	return 0;
}

#endif
