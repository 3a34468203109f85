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
#include "core/walk.h"

void pf_flow_hashes_of(const struct pf_state *state, const struct pf_flow *flow,
		       struct pf_flow_hashes *out)
{
	out->f = pf_walk_flow_hash(state->shared->hash_key, flow);
	out->g = pf_walk_flow_hash(state->shared->index_key, flow);
}

uint32_t pf_random_increments_n(uint32_t num_ephemeral)
{
	return pf_core_increments_n(num_ephemeral);
}

int pf_algorithm_pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
		      const struct pf_flow *flow, struct pf_state *state,
		      struct pf_rng *rng, pf_try_fn try_port, void *ctx,
		      struct pf_pick *pick_out)
{
	return pf_walk_pick(algorithm, lo, hi, flow, NULL, state, rng, try_port, ctx, pick_out);
}
