/* The walk of the port selection algorithms over their candidate
 * sequences (core/sequence.h), for pf_algorithm_pick (algorithm.c) and
 * for the shim's connect, which inlines it with its own try function:
 * the try then is a direct call, and a bind or connect made inside it
 * returns through one frame, not five (each return after a system call
 * is mispredicted, the kernel's calls having taken the return stack). */
#ifndef PORTFENCE_WALK_H
#define PORTFENCE_WALK_H

#include "core/algorithm.h"
#include "core/flow.h"
#include "core/hot.h"
#include "core/sequence.h"

#define PF_WALK static inline __attribute__((always_inline))

struct pf_walk {
	pf_try_fn try_port;
	void *ctx;
	struct pf_pick *pick;
};

/* 1 when the candidate was taken, 0 when busy, <0 for -errno. */
PF_WALK int pf_walk_attempt(struct pf_walk *walk, uint32_t port)
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
PF_WALK int pf_walk_settle(int rc)
{
	return rc > 0 ? 0 : rc;
}

/* The walk's random draw for try k, when it needs one. */
PF_WALK uint32_t pf_walk_draw(const struct pf_core_walk *cw, uint32_t k, struct pf_rng *rng)
{
	uint32_t bound = pf_core_draw_bound(cw, k);
	return bound ? pf_rng_below(rng, bound) : 0;
}

/* Algorithms 1 and 2, and the kernel's model: the sequence alone. */
PF_WALK int pf_walk_sequence(struct pf_walk *walk, struct pf_core_walk *cw, struct pf_rng *rng)
{
	uint32_t tries = pf_core_tries(cw);

	for (uint32_t k = 0; k < tries; k++) {
		int rc = pf_walk_attempt(walk, pf_core_candidate(cw, k, pf_walk_draw(cw, k, rng)));
		if (rc != 0)
			return pf_walk_settle(rc);
	}
	return PF_EXHAUSTED;
}

/* The value a try's port is computed from: the one it took, or for
 * Algorithm 5 the one after its step. */
PF_WALK uint32_t pf_walk_value(const struct pf_core_walk *cw, uint32_t value, uint32_t step)
{
	return cw->algorithm == PF_CORE_ALGO_RANDOM_INCREMENTS ? value + step : value;
}

/* The algorithms that advance a shared counter: each try takes the
 * counter's next value (fetch-and-add by the try's step), so the
 * candidate is the sequence's at that value.  contiguous says whether
 * every value followed the one before, as one process alone sees it. */
PF_WALK int pf_walk_counter(struct pf_walk *walk, struct pf_core_walk *cw, _Atomic uint32_t *counter,
			struct pf_rng *rng)
{
	uint32_t num = cw->num, previous = 0;
	bool contiguous = true;

	for (uint32_t k = 0; k < num; k++) {
		uint32_t draw = pf_walk_draw(cw, k, rng), step = pf_core_counter_step(cw, draw);
		uint32_t value = atomic_fetch_add_explicit(counter, step, memory_order_relaxed);
		/* A wrap to 0 breaks the residues' sequence unless num
		 * divides 2^32; treat it as a skip. */
		if (k && (value != previous || value == 0))
			contiguous = false;
		previous = value + step;
		int rc = pf_walk_attempt(walk, pf_core_counter_port(cw, pf_walk_value(cw, value, step)));
		if (rc != 0)
			return pf_walk_settle(rc);
	}
	/* Algorithm 5's draws may have stepped over ports: its sequence
	 * goes on with a full walk (core/sequence.h), as the other
	 * counters' does when another process took values in between. */
	if (contiguous && pf_core_tries(cw) == num)
		return PF_EXHAUSTED;
	uint32_t start = pf_rng_below(rng, num);
	for (uint32_t j = 0; j < num; j++) {
		int rc = pf_walk_attempt(walk, pf_core_full_walk_port(cw->lo, num, start, j));
		if (rc != 0)
			return pf_walk_settle(rc);
	}
	return PF_EXHAUSTED;
}

static inline uint64_t pf_walk_flow_hash(const uint8_t key[16], const struct pf_flow *flow)
{
	uint8_t buf[PF_CORE_FLOW_MAX] = {0};
	uint32_t len = 0;

	if (flow)
		len = pf_core_flow_key(buf, flow->local_addr, (uint32_t)flow->local_len,
				       flow->remote_addr, (uint32_t)flow->remote_len,
				       flow->remote_port);
	return pf_siphash_cached(key, buf, len);
}

/* The counter each algorithm advances in the shared state, if any. */
PF_WALK _Atomic uint32_t *pf_walk_shared_counter(const struct pf_flow *flow, const struct pf_flow_hashes *hashes,
					struct pf_state *state, struct pf_core_walk *cw)
{
	struct pf_shared_state *shared = state->shared;

	if (pf_core_hashes_flow(cw->algorithm))
		cw->offset = pf_core_hash_offset(hashes ? hashes->f : pf_walk_flow_hash(shared->hash_key, flow), cw->num);
	switch (pf_core_counter_of(cw->algorithm)) {
	case PF_CORE_COUNTER_SEQUENTIAL:
		return &shared->sequential_next;
	case PF_CORE_COUNTER_HASH:
		return &shared->hash_next;
	case PF_CORE_COUNTER_TABLE:
		return &shared->table[pf_core_dh_index(hashes ? hashes->g : pf_walk_flow_hash(shared->index_key, flow))];
	case PF_CORE_COUNTER_INCREMENTS:
		return &shared->increments_next;
	default:
		return NULL;
	}
}

/* The shared counter of a walk's first try, for the shim's express
 * connect (shim/express.c), when that try draws nothing (sequential, hash,
 * double-hash): the try takes the counter's next value, and its port is
 * pf_core_counter_port(cw, value), as in pf_walk_counter.  NULL for the
 * other algorithms. */
PF_WALK _Atomic uint32_t *pf_walk_first_counter(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
						const struct pf_flow_hashes *hashes,
						struct pf_state *state, struct pf_core_walk *cw)
{
	if (hi < lo || (algorithm != PF_ALGO_SEQUENTIAL && !pf_core_hashes_flow(algorithm)))
		return NULL;
	pf_core_walk_init(cw, (uint32_t)algorithm, lo, hi);
	return pf_walk_shared_counter(NULL, hashes, state, cw);
}

PF_WALK int pf_walk_pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi, const struct pf_flow *flow,
		const struct pf_flow_hashes *hashes, struct pf_state *state, struct pf_rng *rng,
		pf_try_fn try_port, void *ctx, struct pf_pick *pick)
{
	struct pf_walk walk = {.try_port = try_port, .ctx = ctx, .pick = pick};
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
	_Atomic uint32_t *counter = pf_walk_shared_counter(flow, hashes, state, &cw);
	if (counter)
		return pf_walk_counter(&walk, &cw, counter, rng);
	return pf_walk_sequence(&walk, &cw, rng);
}

#endif
