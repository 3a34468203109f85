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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_GLOBS);
	__type(key, __u32);
	__type(value, struct pf_bpf_cgroup_glob);
} cgroup_globs SEC(".maps");

/* One glob against one path, a step at a time (bpf_loop): `*` within a
 * component, `?`, literal bytes; the classic match that backtracks to the
 * last star, which cannot reach back past a '/' (components align).  The
 * walk's state lives in a map, not on the stack: the verifier then sees
 * one state per step, not one per position. */
struct pfb_glob_walk {
	__u32 g, p;
	__s32 star_g, star_p;
	int result;	/* 0 running, 1 match, -1 no match */
	__u32 app;	/* the app the globs matched so far */
	int refused;	/* two apps' globs matched */
};
struct pfb_glob_scratch {
	char path[PF_BPF_GLOB_PATH];
	char glob[PF_BPF_GLOB_LEN];
	struct pfb_glob_walk w;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pfb_glob_scratch);
} glob_scratch SEC(".maps");

static __always_inline struct pfb_glob_scratch *pfb_glob_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&glob_scratch, &zero);
}

static long pfb_glob_step(__u32 index, void *ctx)
{
	struct pfb_glob_scratch *s = pfb_glob_scratch();

	(void)index;
	(void)ctx;
	if (!s)
		return 1;
	struct pfb_glob_walk *w = &s->w;
	char pc = w->p < PF_BPF_GLOB_PATH ? s->path[w->p & (PF_BPF_GLOB_PATH - 1)] : 0;
	char gc = w->g < PF_BPF_GLOB_LEN ? s->glob[w->g & (PF_BPF_GLOB_LEN - 1)] : 0;
	if (!pc && !gc) {
		w->result = 1;
		return 1;
	}
	if (gc == '*') {
		w->star_g = (__s32)w->g;
		w->star_p = (__s32)w->p;
		w->g++;
		return 0;
	}
	if (pc && gc && (gc == pc || (gc == '?' && pc != '/'))) {
		if (gc == '/')
			w->star_g = -1;	/* a star never crosses into the next component */
		w->g++;
		w->p++;
		return 0;
	}
	if (w->star_g >= 0 && w->star_p >= 0) {
		char taken = s->path[(__u32)w->star_p & (PF_BPF_GLOB_PATH - 1)];
		if (taken && taken != '/') {
			w->star_p++;
			w->p = (__u32)w->star_p;
			w->g = (__u32)w->star_g + 1;
			return 0;
		}
	}
	w->result = -1;
	return 1;
}

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
	s->w.g = s->w.p = 0;
	s->w.star_g = s->w.star_p = -1;
	s->w.result = 0;
	bpf_loop(PF_BPF_GLOB_PATH * (PF_BPF_GLOB_LEN + 1), pfb_glob_step, NULL, 0);
	if (s->w.result != 1)
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
