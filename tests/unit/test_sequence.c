/* The same sequences on both backends (issue 17, item 4): for one state,
 * key and flow, the shim's walk (pf_algorithm_pick, a loop) and the BPF
 * programs' walk (core/sequence.h inside a bpf_loop callback, with the
 * counters read from a map and written back after) try the same
 * candidates, in the same order, and leave the same counters behind.
 *
 * The BPF side runs twice.  Here, built from the shared headers exactly
 * as the programs drive them, with stand-ins for the helpers: bpf_loop is
 * a loop calling the callback until it returns 1, and the random draw is
 * taken from a generator seeded like the shim's (the programs draw
 * bpf_get_prandom_u32() % bound), so that both walks see the same draws.
 * And in the kernel (tests/core/sequence_run.bpf.c, through
 * BPF_PROG_TEST_RUN), for ranges up to 128 ports, with the same draws:
 * that proves the verifier takes the core as well. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/types.h>
#include <string.h>
#include <unistd.h>

#include "core/algorithm.h"
#include "core/flow.h"
#include "core/sequence.h"
#include "core/siphash.h"
#include "bpf/portfence_api.h"
#include "sequence_run.skel.h"

#define MAX_TRIES (2 * 65535 + 1)

struct trace {
	uint16_t port[MAX_TRIES];
	uint32_t count;
	uint16_t free_port;	/* the one port that is free, or 0: none */
};

static struct trace shim_trace, bpf_trace;

/* ---- the shim's walk ---- */

static int shim_try(void *ctx, uint16_t port)
{
	struct trace *t = ctx;
	t->port[t->count++] = port;
	return port == t->free_port ? PF_TRY_TAKEN : PF_TRY_BUSY;
}

/* ---- the BPF programs' walk, from the shared headers ---- */

static struct pf_rng bpf_rng;

static __u32 stand_in_prandom_below(__u32 bound)
{
	return pf_rng_below(&bpf_rng, bound);
}

static long stand_in_bpf_loop(__u32 nr, long (*callback)(__u32 index, void *ctx), void *ctx)
{
	for (__u32 k = 0; k < nr; k++)
		if (callback(k, ctx))
			return k + 1;
	return nr;
}

struct bpf_walk {
	struct pf_core_walk w;
	struct trace *trace;
	__u16 port;	/* the port taken, or 0 */
	__u32 attempts;
};

static long bpf_try_candidate(__u32 k, void *arg)
{
	struct bpf_walk *bw = arg;
	__u32 bound = pf_core_draw_bound(&bw->w, k);
	__u32 draw = bound ? stand_in_prandom_below(bound) : 0;
	__u16 port = (__u16)pf_core_candidate(&bw->w, k, draw);

	bw->attempts++;
	bw->trace->port[bw->trace->count++] = port;
	if (port != bw->trace->free_port)
		return 0;
	bw->port = port;
	return 1;
}

/* The flow's hash as a program computes it: a key of constant length. */
static __u64 bpf_flow_hash(const __u8 key[16], const __u8 *local, const __u8 *remote, int v6,
			   __u16 remote_port)
{
	__u8 buf[PF_CORE_FLOW_MAX] = {0};

	if (v6) {
		pf_core_flow_key(buf, local, 16, remote, 16, remote_port);
		return pf_core_siphash(key, buf, 34);
	}
	pf_core_flow_key(buf, local, 4, remote, 4, remote_port);
	return pf_core_siphash(key, buf, 10);
}

static __u32 *bpf_counter(struct pf_bpf_counters *c, struct pf_core_walk *w,
			  const struct pf_bpf_config *cfg, const __u8 *local, const __u8 *remote,
			  int v6, __u16 remote_port)
{
	if (pf_core_hashes_flow(w->algorithm))
		w->offset = pf_core_hash_offset(bpf_flow_hash(cfg->hash_key, local, remote, v6, remote_port),
						w->num);
	switch (pf_core_counter_of(w->algorithm)) {
	case PF_CORE_COUNTER_SEQUENTIAL:
		return &c->sequential_next;
	case PF_CORE_COUNTER_HASH:
		return &c->hash_next;
	case PF_CORE_COUNTER_TABLE:
		return &c->table[pf_core_dh_index(bpf_flow_hash(cfg->index_key, local, remote, v6,
								 remote_port))];
	case PF_CORE_COUNTER_INCREMENTS:
		return &c->increments_next;
	default:
		return NULL;
	}
}

static void bpf_pick(const struct pf_bpf_config *cfg, struct pf_bpf_counters *c, const __u8 *local,
		     const __u8 *remote, int v6, __u16 remote_port, struct bpf_walk *bw)
{
	pf_core_walk_init(&bw->w, cfg->algorithm, cfg->range_lo, cfg->range_hi);
	bw->w.n = cfg->increments_n;
	__u32 *counter = bpf_counter(c, &bw->w, cfg, local, remote, v6, remote_port);
	pf_core_walk_counter(&bw->w, counter ? *counter : 0);
	stand_in_bpf_loop(pf_core_tries(&bw->w), bpf_try_candidate, bw);
	/* The counter continues after the walk, as the RFC's tries left it. */
	if (counter)
		__sync_fetch_and_add(counter, pf_core_counter_advance(&bw->w, bw->attempts));
}

/* ---- the comparison ---- */

struct seq_case {
	int algorithm;
	uint16_t lo, hi;
	int v6;
	int concrete_local;	/* a learned source rather than the wildcard */
	int free_at;		/* the try at which a port is free, or -1: none */
};

static void compare_in_kernel(struct sequence_run *skel, const struct seq_case *sc, uint64_t seed,
			      const struct pf_bpf_config *cfg, const struct pf_bpf_counters *counters,
			      const __u8 *local, const __u8 *remote, __u16 remote_port);

static void compare(const struct seq_case *sc, uint64_t seed, struct sequence_run *skel)
{
	struct pf_state state;
	struct pf_rng rng;
	struct pf_pick pick;
	__u8 local[16] = {0}, remote[16] = {0};
	uint32_t num = (uint32_t)sc->hi - sc->lo + 1;
	__u16 remote_port = (__u16)(443 + seed);

	cr_assert_eq(pf_state_open_private(num, &state), 0);
	remote[0] = sc->v6 ? 0x20 : 10;
	remote[1] = sc->v6 ? 0x01 : (uint8_t)seed;
	remote[sc->v6 ? 15 : 3] = (uint8_t)(seed * 7 + 1);
	if (sc->concrete_local) {
		local[0] = sc->v6 ? 0xfd : 192;
		local[sc->v6 ? 15 : 3] = 5;
	}
	/* The loader copies the app's state into the programs' maps. */
	struct pf_bpf_config cfg = {
		.range_lo = sc->lo, .range_hi = sc->hi, .algorithm = (__u32)sc->algorithm,
		.increments_n = pf_random_increments_n(num),
	};
	struct pf_bpf_counters counters = {
		.sequential_next = state.shared->sequential_next + (uint32_t)seed,
		.hash_next = state.shared->hash_next + (uint32_t)seed * 3,
		.increments_next = state.shared->increments_next,
	};
	state.shared->sequential_next = counters.sequential_next;
	state.shared->hash_next = counters.hash_next;
	memcpy(cfg.hash_key, state.shared->hash_key, 16);
	memcpy(cfg.index_key, state.shared->index_key, 16);
	for (int i = 0; i < PF_BPF_DH_TABLE_LEN; i++)
		counters.table[i] = state.shared->table[i];

	/* Which port is free: the one the walk meets at try free_at. */
	memset(&shim_trace, 0, sizeof(shim_trace));
	memset(&bpf_trace, 0, sizeof(bpf_trace));
	if (sc->free_at >= 0) {
		struct pf_state probe;
		struct pf_rng probe_rng;
		cr_assert_eq(pf_state_open_private(num, &probe), 0);
		memcpy(probe.shared, state.shared, sizeof(*state.shared));
		pf_rng_seed(&probe_rng, seed);
		struct pf_flow flow = {local, sc->v6 ? 16u : 4u, remote, sc->v6 ? 16u : 4u, remote_port};
		pf_algorithm_pick(sc->algorithm, sc->lo, sc->hi, &flow, &probe, &probe_rng, shim_try,
				  &shim_trace, &pick);
		uint32_t at = (uint32_t)sc->free_at < shim_trace.count ? (uint32_t)sc->free_at
								       : shim_trace.count - 1;
		uint16_t port = shim_trace.port[at];
		/* The first try of that port, so both walks stop there. */
		memset(&shim_trace, 0, sizeof(shim_trace));
		shim_trace.free_port = bpf_trace.free_port = port;
		pf_state_close(&probe);
	}

	if (skel)
		compare_in_kernel(skel, sc, seed, &cfg, &counters, local, remote, remote_port);
	pf_rng_seed(&rng, seed);
	struct pf_flow flow = {local, sc->v6 ? 16u : 4u, remote, sc->v6 ? 16u : 4u, remote_port};
	int rc = pf_algorithm_pick(sc->algorithm, sc->lo, sc->hi, &flow, &state, &rng, shim_try,
				   &shim_trace, &pick);

	struct bpf_walk bw = {.trace = &bpf_trace};
	pf_rng_seed(&bpf_rng, seed);
	bpf_pick(&cfg, &counters, local, remote, sc->v6, remote_port, &bw);

	const char *name = pf_algorithm_name(sc->algorithm);
	cr_assert_eq(shim_trace.count, bpf_trace.count, "%s [%u, %u] v%d: %u tries in the shim, %u in bpf",
		     name, sc->lo, sc->hi, sc->v6 ? 6 : 4, shim_trace.count, bpf_trace.count);
	for (uint32_t k = 0; k < shim_trace.count; k++)
		cr_assert_eq(shim_trace.port[k], bpf_trace.port[k], "%s [%u, %u]: try %u: shim %u, bpf %u",
			     name, sc->lo, sc->hi, k, shim_trace.port[k], bpf_trace.port[k]);
	cr_assert_eq(rc == 0 ? pick.port : 0, bw.port, "%s: the port taken", name);
	cr_assert_eq(pick.attempts, bw.attempts, "%s: attempts", name);
	/* Each try advanced the counters alike (RFC 6056 §3.3.4: table[index]
	 * once per try). */
	cr_expect_eq(state.shared->sequential_next, counters.sequential_next, "%s: sequential_next", name);
	cr_expect_eq(state.shared->hash_next, counters.hash_next, "%s: hash_next", name);
	cr_expect_eq(state.shared->increments_next, counters.increments_next, "%s: increments_next", name);
	for (int i = 0; i < PF_BPF_DH_TABLE_LEN; i++)
		cr_expect_eq(state.shared->table[i], counters.table[i], "%s: table[%d]", name, i);
	pf_state_close(&state);
}

static const struct { uint16_t lo, hi; } ranges[] = {
	{61000, 61000}, {61000, 61001}, {61000, 61006}, {61000, 61099}, {20000, 50029}, {1, 65535},
};
#define RANGES (sizeof(ranges) / sizeof(ranges[0]))
/* -1: every port busy, so the whole sequence is compared. */
static const int free_ats[] = {-1, 0, 1, 37, 150};
#define FREE_ATS (sizeof(free_ats) / sizeof(free_ats[0]))

ParameterizedTestParameters(sequence, shim_and_bpf_walk_alike)
{
	static int algorithms[PF_ALGO_COUNT];
	for (int a = 0; a < PF_ALGO_COUNT; a++)
		algorithms[a] = a;
	return cr_make_param_array(int, algorithms, PF_ALGO_COUNT);
}

ParameterizedTest(int *algorithm, sequence, shim_and_bpf_walk_alike)
{
	unsigned cases = 0;

	for (size_t r = 0; r < RANGES; r++)
		for (size_t f = 0; f < FREE_ATS; f++)
			for (int v6 = 0; v6 < 2; v6++)
				for (int concrete = 0; concrete < 2; concrete++) {
					/* A full 65535-port walk once per algorithm is enough. */
					if (ranges[r].hi - ranges[r].lo > 40000 && (f || v6 || concrete))
						continue;
					struct seq_case sc = {*algorithm, ranges[r].lo, ranges[r].hi, v6,
							      concrete, free_ats[f]};
					compare(&sc, 1000 + r * 31 + f * 7 + (size_t)v6 * 3 + (size_t)concrete,
						NULL);
					cases++;
				}
	cr_log_info("%s: %u walks compared", pf_algorithm_name(*algorithm), cases);
}

/* The programs hash a flow key of constant length; the shim, through its
 * per-thread cache, one of the length it built: the same hash. */
Test(sequence, flow_hash_alike)
{
	uint8_t key[16], local[16] = {0}, remote[16];
	uint8_t buf[PF_CORE_FLOW_MAX];

	for (int i = 0; i < 16; i++) {
		key[i] = (uint8_t)(i * 13 + 1);
		remote[i] = (uint8_t)(0x20 + i);
	}
	for (int v6 = 0; v6 < 2; v6++) {
		uint32_t len = pf_core_flow_key(buf, local, v6 ? 16 : 4, remote, v6 ? 16 : 4, 8080);
		cr_assert_eq(len, v6 ? 34u : 10u);
		cr_expect_eq(buf[len - 2], 8080 >> 8);
		cr_expect_eq(buf[len - 1], 8080 & 0xff);
		cr_expect_eq(pf_siphash_cached(key, buf, len), bpf_flow_hash(key, local, remote, v6, 8080));
		cr_expect_eq(pf_siphash(key, buf, len), bpf_flow_hash(key, local, remote, v6, 8080));
	}
}

/* ---- the same, with the BPF walk run by the kernel ---- */

#define KERNEL_MAX_TRIES (sizeof(((struct sequence_run__bss *)0)->ports) / sizeof(__u32))

/* The kernel walks with a copy of the state as the shim's walk (in
 * bpf_trace) will find it, and its candidates must be the stand-in's,
 * which compare() then holds against the shim's. */
static void compare_in_kernel(struct sequence_run *skel, const struct seq_case *sc, uint64_t seed,
			      const struct pf_bpf_config *cfg, const struct pf_bpf_counters *counters,
			      const __u8 *local, const __u8 *remote, __u16 remote_port)
{
	struct sequence_run__bss *bss = skel->bss;
	struct pf_core_walk w;
	struct pf_rng draws;

	bss->cfg = *cfg;
	bss->run_counters = *counters;
	memcpy(bss->local_addr, local, 16);
	memcpy(bss->remote_addr, remote, 16);
	bss->v6 = (__u32)sc->v6;
	bss->remote_port = remote_port;
	bss->free_port = bpf_trace.free_port;
	/* The draws the shim's walk will take, in its order. */
	pf_core_walk_init(&w, cfg->algorithm, cfg->range_lo, cfg->range_hi);
	w.n = cfg->increments_n;
	pf_rng_seed(&draws, seed);
	cr_assert_leq(pf_core_tries(&w), KERNEL_MAX_TRIES);
	for (__u32 k = 0; k < pf_core_tries(&w); k++) {
		__u32 bound = pf_core_draw_bound(&w, k);
		bss->draws[k] = bound ? pf_rng_below(&draws, bound) : 0;
	}
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	cr_assert_eq(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.sequence_run), &opts), 0,
		     "BPF_PROG_TEST_RUN: %s", strerror(errno));

	/* The stand-in's walk of the same state, for the kernel's to match. */
	struct pf_bpf_counters standin_counters = *counters;
	struct trace saved = bpf_trace;
	struct bpf_walk bw = {.trace = &bpf_trace};
	pf_rng_seed(&bpf_rng, seed);
	bpf_pick(cfg, &standin_counters, local, remote, sc->v6, remote_port, &bw);
	const char *name = pf_algorithm_name(sc->algorithm);
	cr_assert_eq(bss->count, bpf_trace.count, "%s [%u, %u] v%d: %u tries in the kernel, %u here",
		     name, sc->lo, sc->hi, sc->v6 ? 6 : 4, bss->count, bpf_trace.count);
	for (__u32 k = 0; k < bss->count; k++)
		cr_assert_eq(bss->ports[k], bpf_trace.port[k], "%s [%u, %u]: try %u: kernel %u, here %u",
			     name, sc->lo, sc->hi, k, bss->ports[k], bpf_trace.port[k]);
	cr_assert_eq(bss->taken, bw.port, "%s: the port taken", name);
	cr_assert(memcmp(&bss->run_counters, &standin_counters, sizeof(standin_counters)) == 0,
		  "%s: the counters the kernel left", name);
	bpf_trace = saved;
}

static struct sequence_run *load_kernel_walk(void)
{
	struct sequence_run *skel = sequence_run__open_and_load();

	if (!skel && geteuid() != 0)
		cr_skip_test("not root: the kernel cannot load the BPF walk (%s)", strerror(errno));
	cr_assert_not_null(skel, "the core's walk does not load as a BPF program: %s", strerror(errno));
	return skel;
}

ParameterizedTestParameters(sequence, shim_and_kernel_walk_alike)
{
	static int algorithms[PF_ALGO_KERNEL];
	for (int a = 0; a < PF_ALGO_KERNEL; a++)
		algorithms[a] = a;
	return cr_make_param_array(int, algorithms, PF_ALGO_KERNEL);
}

ParameterizedTest(int *algorithm, sequence, shim_and_kernel_walk_alike)
{
	static const struct { uint16_t lo, hi; } small[] = {
		{61000, 61000}, {61000, 61001}, {61000, 61006}, {61000, 61099}, {1024, 1151},
	};
	struct sequence_run *skel = load_kernel_walk();
	unsigned cases = 0;

	for (size_t r = 0; r < sizeof(small) / sizeof(small[0]); r++)
		for (size_t f = 0; f < FREE_ATS - 1; f++)
			for (int v6 = 0; v6 < 2; v6++)
				for (int concrete = 0; concrete < 2; concrete++) {
					struct seq_case sc = {*algorithm, small[r].lo, small[r].hi, v6,
							      concrete, free_ats[f]};
					compare(&sc, 500 + r * 31 + f * 7 + (size_t)v6 * 3 + (size_t)concrete,
						skel);
					cases++;
				}
	cr_log_info("%s: %u walks run in the kernel", pf_algorithm_name(*algorithm), cases);
	sequence_run__destroy(skel);
}
