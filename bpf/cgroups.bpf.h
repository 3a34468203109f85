/* Which app a socket belongs to: one attachment serves many cgroups.
 * The programs are attached once, at a common ancestor of the cgroups
 * they confine (BPF_F_ALLOW_MULTI: other managers' programs run too),
 * and each hook asks cgroup_apps, keyed by cgroup id, for the nearest
 * confined ancestor of the socket's cgroup (its creator's, as a cgroup
 * hook judges it): the hook acts only when that is this object's app
 * (pfb_app_id); a socket of no app's cgroup is left untouched.  Where
 * several of the daemon's apps would stand at one cgroup, the dispatcher
 * (bpf/dispatch.bpf.c) stands there instead, asks once for all of them
 * and tail-calls the socket's app's program.  The birth programs, which
 * fill the map inside mkdir(2), are in bpf/births.bpf.h. */
#ifndef PORTFENCE_BPF_CGROUPS_BPF_H
#define PORTFENCE_BPF_CGROUPS_BPF_H

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "bpf/portfence_api.h"

/* This object's app in cgroup_apps (the loader sets it before the load). */
const volatile __u32 pfb_app_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PF_BPF_CGROUPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32);
} cgroup_apps SEC(".maps");

/* The kernel's types, only the fields read (CO-RE). */
struct kernfs_node___pf {
	struct kernfs_node___pf *__parent;
	__u64 id;
} __attribute__((preserve_access_index));
struct kernfs_node___pf_old {
	struct kernfs_node___pf_old *parent;	/* before Linux 6.15 */
} __attribute__((preserve_access_index));
struct cgroup_root___pf {
	int hierarchy_id;
} __attribute__((preserve_access_index));
struct cgroup___pf {
	struct kernfs_node___pf *kn;
	struct cgroup_root___pf *root;
} __attribute__((preserve_access_index));
struct sock_cgroup_data___pf {
	struct cgroup___pf *cgroup;
} __attribute__((preserve_access_index));
struct sock___pf {
	struct sock_cgroup_data___pf sk_cgrp_data;
} __attribute__((preserve_access_index));

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#define PFB_CGROUP_LEVELS 32

static __always_inline struct kernfs_node___pf *pfb_kn_parent(struct kernfs_node___pf *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return kn->__parent;
	return (struct kernfs_node___pf *)((struct kernfs_node___pf_old *)kn)->parent;
}

/* The app of kn's nearest confined ancestor (kn included); 0: none. */
static __always_inline __u32 pfb_app_above(struct kernfs_node___pf *kn)
{
	for (int level = 0; level < PFB_CGROUP_LEVELS && kn; level++) {
		__u64 id = kn->id;
		__u32 *app = bpf_map_lookup_elem(&cgroup_apps, &id);
		if (app)
			return *app;
		kn = pfb_kn_parent(kn);
	}
	return 0;
}

/* The app of a socket's cgroup (sk: the kernel's struct sock, as a
 * cgroup hook's ctx->sk or ctx is), or of the current task's when the
 * socket names none. */
static __always_inline __u32 pfb_socket_app(const void *sk)
{
	struct sock___pf *s = sk ? bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct sock___pf)) : 0;
	struct cgroup___pf *cgroup = s ? s->sk_cgrp_data.cgroup : 0;

	if (cgroup)
		return pfb_app_above(cgroup->kn);
	for (int level = PFB_CGROUP_LEVELS - 1; level >= 0; level--) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		__u32 *app = id ? bpf_map_lookup_elem(&cgroup_apps, &id) : 0;
		if (app)
			return *app;
	}
	return 0;
}

/* Whether the socket is this app's to judge. */
static __always_inline int pfb_ours(const void *sk)
{
	return pfb_app_id && pfb_socket_app(sk) == pfb_app_id;
}

#endif
