/* Port selection algorithms as pure functions over a range, a state and a
 * "may I use this port" callback, so they can be tested without sockets. */
#ifndef PORTFENCE_ALGORITHM_H
#define PORTFENCE_ALGORITHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/policy.h"
#include "core/rng.h"
#include "core/state.h"

/* The return codes of a port search, one enum so that no two mean the
 * same number.  The try callback answers PF_TRY_TAKEN or PF_TRY_BUSY for
 * one candidate port; pf_algorithm_pick answers PF_TRY_TAKEN (0) or
 * PF_EXHAUSTED.  A negative value is -errno: stop and report it. */
enum pf_try_result {
	PF_TRY_TAKEN = 0,	/* the port is ours now: stop */
	PF_TRY_BUSY = 1,	/* in use: try another */
	PF_EXHAUSTED = 2,	/* every port of the range was tried and found busy */
};

typedef int (*pf_try_fn)(void *ctx, uint16_t port);

/* The connection a port is chosen for; the hash algorithms key on it. */
struct pf_flow {
	const uint8_t *local_addr;
	size_t local_len;
	const uint8_t *remote_addr;
	size_t remote_len;
	uint16_t remote_port;
};

struct pf_pick {
	uint16_t port;
	unsigned attempts;	/* calls made to the try callback */
};

/* Returns 0 with pick->port taken, PF_EXHAUSTED, or the negative errno a
 * try returned.  pick->attempts is set in every case. */
int pf_algorithm_pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
		      const struct pf_flow *flow, struct pf_state *state,
		      struct pf_rng *rng, pf_try_fn try_port, void *ctx,
		      struct pf_pick *pick);

/* F() and G() of one flow (RFC 6056 §3.3.3, §3.3.4), under the state's
 * hash_key and index_key: what the hash algorithms compute of a flow,
 * which a caller may remember per destination. */
struct pf_flow_hashes {
	uint64_t f, g;
};

void pf_flow_hashes_of(const struct pf_state *state, const struct pf_flow *flow,
		       struct pf_flow_hashes *out);

/* Algorithm 5's N: the largest step between two successive ports. */
uint32_t pf_random_increments_n(uint32_t num_ephemeral);

#endif
