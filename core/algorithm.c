/* The seven port selection algorithms, driven by a loop over the
 * candidate sequences of core/sequence.h (the BPF programs drive the same
 * sequences with bpf_loop).  Five follow RFC 6056 §3.3.1-§3.3.5; each
 * section is cited in core/sequence.h.  The counters live in the app's
 * shared state and are advanced try by try with atomics, so that
 * concurrent processes of one app continue one sequence; where another
 * process took values in between, the walk may have skipped ports, and a
 * full walk of the range follows, so that no algorithm ever reports
 * exhaustion while a port is free. */
#include "core/hot.h"
#include "core/algorithm.h"

#include "core/flow.h"
#include "core/sequence.h"

struct walk {
	pf_try_fn try_port;
	void *ctx;
	struct pf_pick *pick;
};

/* 1 when the candidate was taken, 0 when busy, <0 for -errno. */
static PF_HOT int attempt(struct walk *walk, uint32_t port)
{
	int rc;

	walk->pick->attempts++;
	rc = walk->try_port(walk->ctx, (uint16_t)port);
	if (rc == PF_TRY_TAKEN) {
		walk->pick->port = (uint16_t)port;
		return 1;
	}
	return rc < 0 ? rc : 0;
}

/* The outcome of an RFC loop: keep going only when it ended busy. */
static PF_HOT int settle(int rc)
{
	return rc > 0 ? 0 : rc;
}

/* The walk's random draw for try k, when it needs one. */
static PF_HOT uint32_t draw_for(const struct pf_core_walk *cw, uint32_t k, struct pf_rng *rng)
{
	uint32_t bound = pf_core_draw_bound(cw, k);
	return bound ? pf_rng_below(rng, bound) : 0;
}

/* Algorithms 1 and 2, and the kernel's model: the sequence alone. */
static int walk_sequence(struct walk *walk, struct pf_core_walk *cw, struct pf_rng *rng)
{
	uint32_t tries = pf_core_tries(cw);

	for (uint32_t k = 0; k < tries; k++) {
		int rc = attempt(walk, pf_core_candidate(cw, k, draw_for(cw, k, rng)));
		if (rc != 0)
			return settle(rc);
	}
	return PF_EXHAUSTED;
}

/* The value a try's port is computed from: the one it took, or for
 * Algorithm 5 the one after its step. */
static uint32_t algorithm_value(const struct pf_core_walk *cw, uint32_t value, uint32_t step)
{
	return cw->algorithm == PF_CORE_ALGO_RANDOM_INCREMENTS ? value + step : value;
}

/* The algorithms that advance a shared counter: each try takes the
 * counter's next value (fetch-and-add by the try's step), so the
 * candidate is the sequence's at that value.  contiguous says whether
 * every value followed the one before, as one process alone sees it. */
static PF_HOT int walk_counter(struct walk *walk, struct pf_core_walk *cw, _Atomic uint32_t *counter,
			struct pf_rng *rng)
{
	uint32_t num = cw->num, previous = 0;
	bool contiguous = true;

	for (uint32_t k = 0; k < num; k++) {
		uint32_t draw = draw_for(cw, k, rng), step = pf_core_counter_step(cw, draw);
		uint32_t value = atomic_fetch_add_explicit(counter, step, memory_order_relaxed);
		/* A wrap to 0 breaks the residues' sequence unless num
		 * divides 2^32; treat it as a skip. */
		if (k && (value != previous || value == 0))
			contiguous = false;
		previous = value + step;
		int rc = attempt(walk, pf_core_counter_port(cw, algorithm_value(cw, value, step)));
		if (rc != 0)
			return settle(rc);
	}
	/* Algorithm 5's draws may have stepped over ports: its sequence
	 * goes on with a full walk (core/sequence.h), as the other
	 * counters' does when another process took values in between. */
	if (contiguous && pf_core_tries(cw) == num)
		return PF_EXHAUSTED;
	uint32_t start = pf_rng_below(rng, num);
	for (uint32_t j = 0; j < num; j++) {
		int rc = attempt(walk, pf_core_full_walk_port(cw->lo, num, start, j));
		if (rc != 0)
			return settle(rc);
	}
	return PF_EXHAUSTED;
}

static uint64_t flow_hash(const uint8_t key[16], const struct pf_flow *flow)
{
	uint8_t buf[PF_CORE_FLOW_MAX];
	uint32_t len = 0;

	if (flow)
		len = pf_core_flow_key(buf, flow->local_addr, (uint32_t)flow->local_len,
				       flow->remote_addr, (uint32_t)flow->remote_len,
				       flow->remote_port);
	return pf_siphash_cached(key, buf, len);
}

uint32_t pf_random_increments_n(uint32_t num_ephemeral)
{
	return pf_core_increments_n(num_ephemeral);
}

void pf_flow_hashes_of(const struct pf_state *state, const struct pf_flow *flow,
		       struct pf_flow_hashes *out)
{
	out->f = flow_hash(state->shared->hash_key, flow);
	out->g = flow_hash(state->shared->index_key, flow);
}

/* The counter each algorithm advances in the shared state, if any. */
static PF_HOT _Atomic uint32_t *shared_counter(const struct pf_flow *flow, const struct pf_flow_hashes *hashes,
					struct pf_state *state, struct pf_core_walk *cw)
{
	struct pf_shared_state *shared = state->shared;

	if (pf_core_hashes_flow(cw->algorithm))
		cw->offset = pf_core_hash_offset(hashes ? hashes->f : flow_hash(shared->hash_key, flow), cw->num);
	switch (pf_core_counter_of(cw->algorithm)) {
	case PF_CORE_COUNTER_SEQUENTIAL:
		return &shared->sequential_next;
	case PF_CORE_COUNTER_HASH:
		return &shared->hash_next;
	case PF_CORE_COUNTER_TABLE:
		return &shared->table[pf_core_dh_index(hashes ? hashes->g : flow_hash(shared->index_key, flow))];
	case PF_CORE_COUNTER_INCREMENTS:
		return &shared->increments_next;
	default:
		return NULL;
	}
}

static PF_HOT int pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi, const struct pf_flow *flow,
		const struct pf_flow_hashes *hashes, struct pf_state *state, struct pf_rng *rng,
		pf_try_fn try_port, void *ctx, struct pf_pick *pick)
{
	struct walk walk = {.try_port = try_port, .ctx = ctx, .pick = pick};
	struct pf_core_walk cw;

	pick->port = 0;
	pick->attempts = 0;
	if (hi < lo)
		return PF_EXHAUSTED;
	/* The kernel's own choice, modelled for simulations and the
	 * occupancy benchmark: the shim never calls it (algorithm kernel
	 * sets IP_LOCAL_PORT_RANGE and the kernel chooses). */
	if ((unsigned)algorithm >= PF_ALGO_KERNEL)
		algorithm = PF_ALGO_KERNEL;
	pf_core_walk_init(&cw, (uint32_t)algorithm, lo, hi);
	_Atomic uint32_t *counter = shared_counter(flow, hashes, state, &cw);
	if (counter)
		return walk_counter(&walk, &cw, counter, rng);
	return walk_sequence(&walk, &cw, rng);
}

int pf_algorithm_pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
		      const struct pf_flow *flow, struct pf_state *state,
		      struct pf_rng *rng, pf_try_fn try_port, void *ctx,
		      struct pf_pick *pick_out)
{
	return pick(algorithm, lo, hi, flow, NULL, state, rng, try_port, ctx, pick_out);
}

PF_HOT int pf_algorithm_pick_hashed(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
			     const struct pf_flow_hashes *hashes, struct pf_state *state,
			     struct pf_rng *rng, pf_try_fn try_port, void *ctx,
			     struct pf_pick *pick_out)
{
	return pick(algorithm, lo, hi, NULL, hashes, state, rng, try_port, ctx, pick_out);
}
