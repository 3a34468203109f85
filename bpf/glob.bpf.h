/* A cgroup path against a glob, in the kernel: the birth program's
 * matcher (bpf/births.bpf.h), apart so that a test can run it alone
 * (tests/core/glob_run.bpf.c, against fnmatch(3) and the watch's
 * matcher).  The program includes bpf_helpers.h and portfence_api.h
 * first. */
#ifndef PORTFENCE_BPF_GLOB_BPF_H
#define PORTFENCE_BPF_GLOB_BPF_H

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

/* 1 when the scratch's glob matches its path, else 0. */
static __always_inline int pfb_glob_matches(struct pfb_glob_scratch *s)
{
	s->w.g = s->w.p = 0;
	s->w.star_g = s->w.star_p = -1;
	s->w.result = 0;
	bpf_loop(PF_BPF_GLOB_PATH * (PF_BPF_GLOB_LEN + 1), pfb_glob_step, NULL, 0);
	return s->w.result == 1;
}

#endif
