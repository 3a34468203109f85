/* The seven port selection algorithms.  Five follow RFC 6056 §3.3.1-§3.3.5
 * to the letter of its pseudo-code; each section is cited where it is
 * implemented.  The RFC loops give up after num_ephemeral tries; where a
 * loop may have skipped a port (random draws, or a shared counter that
 * another process advanced meanwhile), a full walk of the range follows,
 * so that no algorithm ever reports exhaustion while a port is free. */
#include "algorithm.h"

#include <string.h>

struct walk {
	pf_try_fn try_port;
	void *ctx;
	struct pf_pick *pick;
};

/* 1 when the candidate was taken, 0 when busy, <0 for -errno. */
static int attempt(struct walk *walk, uint32_t port)
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

/* Tries every port once, starting at start; 0, PF_EXHAUSTED or -errno. */
static int full_walk(struct walk *walk, uint32_t lo, uint32_t num, uint32_t start)
{
	for (uint32_t k = 0; k < num; k++) {
		int rc = attempt(walk, lo + (start - lo + k) % num);
		if (rc != 0)
			return rc > 0 ? 0 : rc;
	}
	return PF_EXHAUSTED;
}

/* The outcome of an RFC loop: keep going only when it ended busy. */
static int settle(int rc)
{
	return rc > 0 ? 0 : rc;
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
	while (b) {
		uint32_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

/* RFC 6056 §3.3.1, Algorithm 1: Simple Port Randomization Algorithm.
 * The first choice is the RFC's random port.  When it is busy, the RFC
 * walks on port by port, and in a range whose busy ports sit together
 * that walk crosses the whole cluster; a random stride prime to the
 * range visits every port once as well, spread evenly. */
static int pick_random(struct walk *walk, uint32_t lo, uint32_t num, struct pf_rng *rng)
{
	uint32_t next_ephemeral = lo + pf_rng_below(rng, num);
	int rc = attempt(walk, next_ephemeral);

	if (rc != 0)
		return settle(rc);
	if (num == 1)
		return PF_EXHAUSTED;
	uint32_t stride = 1 + pf_rng_below(rng, num - 1);
	while (gcd(stride, num) != 1)
		stride = stride % (num - 1) + 1;
	for (uint32_t k = 1; k < num; k++) {
		rc = attempt(walk, lo + (uint32_t)((next_ephemeral - lo + (uint64_t)k * stride) % num));
		if (rc != 0)
			return settle(rc);
	}
	return PF_EXHAUSTED;
}

/* RFC 6056 §3.3.2, Algorithm 2: Another Simple Port Randomization
 * Algorithm.  A fresh random draw per try, count bounded by num_ephemeral. */
static int pick_random_redraw(struct walk *walk, uint32_t lo, uint32_t num,
			      struct pf_rng *rng)
{
	for (uint32_t count = num; count > 0; count--) {
		int rc = attempt(walk, lo + pf_rng_below(rng, num));
		if (rc != 0)
			return settle(rc);
	}
	return full_walk(walk, lo, num, lo + pf_rng_below(rng, num));
}

/* Walks candidates base(counter) for successive values of a shared
 * counter.  Each try takes the counter's next value; when another process
 * took values in between, the walk may have skipped ports, and contiguous
 * says so. */
struct counter_walk {
	_Atomic uint32_t *counter;
	uint32_t offset;
	bool contiguous;
};

static int walk_counter(struct walk *walk, uint32_t lo, uint32_t num,
			struct counter_walk *cw)
{
	uint32_t previous = 0;

	cw->contiguous = true;
	for (uint32_t count = num; count > 0; count--) {
		uint32_t value = atomic_fetch_add_explicit(cw->counter, 1, memory_order_relaxed);
		/* A wrap to 0 breaks the residues' sequence unless num
		 * divides 2^32; treat it as a skip. */
		if (count != num && (value != previous + 1 || value == 0))
			cw->contiguous = false;
		previous = value;
		int rc = attempt(walk, lo + (value + cw->offset) % num);
		if (rc != 0)
			return settle(rc);
	}
	return PF_EXHAUSTED;
}

static int finish_counter_walk(struct walk *walk, uint32_t lo, uint32_t num,
			       struct counter_walk *cw, int rc, struct pf_rng *rng)
{
	if (rc != PF_EXHAUSTED || cw->contiguous)
		return rc;
	return full_walk(walk, lo, num, lo + pf_rng_below(rng, num));
}

/* sequential: one shared counter per app, +1 per assignment. */
static int pick_sequential(struct walk *walk, uint32_t lo, uint32_t num,
			   struct pf_state *state, struct pf_rng *rng)
{
	struct counter_walk cw = {.counter = &state->shared->sequential_next};
	int rc = walk_counter(walk, lo, num, &cw);
	return finish_counter_walk(walk, lo, num, &cw, rc, rng);
}

static uint64_t flow_hash(const uint8_t key[16], const struct pf_flow *flow)
{
	uint8_t buf[16 + 16 + 2];
	size_t len = 0;

	if (flow) {
		size_t local_len = flow->local_len > 16 ? 16 : flow->local_len;
		size_t remote_len = flow->remote_len > 16 ? 16 : flow->remote_len;
		if (local_len)
			memcpy(buf, flow->local_addr, local_len);
		len = local_len;
		if (remote_len)
			memcpy(buf + len, flow->remote_addr, remote_len);
		len += remote_len;
		buf[len++] = (uint8_t)(flow->remote_port >> 8);
		buf[len++] = (uint8_t)flow->remote_port;
	}
	return pf_siphash_cached(key, buf, len);
}

/* RFC 6056 §3.3.3, Algorithm 3: Simple Hash-Based Port Selection.
 *   offset = F(local_IP, remote_IP, remote_port, secret_key);
 *   port = min_ephemeral + (next_ephemeral + offset) % num_ephemeral;
 *   next_ephemeral++;  */
static int pick_hash(struct walk *walk, uint32_t lo, uint32_t num,
		     const struct pf_flow *flow, struct pf_state *state, struct pf_rng *rng)
{
	struct counter_walk cw = {
		.counter = &state->shared->hash_next,
		.offset = (uint32_t)(flow_hash(state->shared->hash_key, flow) % num),
	};
	int rc = walk_counter(walk, lo, num, &cw);
	return finish_counter_walk(walk, lo, num, &cw, rc, rng);
}

/* RFC 6056 §3.3.4, Algorithm 4: Double-Hash Port Selection.
 *   offset = F(local_IP, remote_IP, remote_port, secret_key1);
 *   index = G(local_IP, remote_IP, remote_port, secret_key2);
 *   next_ephemeral = min_ephemeral + (offset + table[index]) % num_ephemeral;
 *   table[index]++;  */
static int pick_double_hash(struct walk *walk, uint32_t lo, uint32_t num,
			    const struct pf_flow *flow, struct pf_state *state,
			    struct pf_rng *rng)
{
	uint32_t index = (uint32_t)(flow_hash(state->shared->index_key, flow) % PF_DH_TABLE_LEN);
	struct counter_walk cw = {
		.counter = &state->shared->table[index],
		.offset = (uint32_t)(flow_hash(state->shared->hash_key, flow) % num),
	};
	int rc = walk_counter(walk, lo, num, &cw);
	return finish_counter_walk(walk, lo, num, &cw, rc, rng);
}

uint32_t pf_random_increments_n(uint32_t num_ephemeral)
{
	/* RFC 6056 suggests N = 500; a step of num_ephemeral or more would
	 * wrap the range, so N stays below it. */
	uint32_t n = num_ephemeral > 1 ? num_ephemeral - 1 : 1;
	return n < 500 ? n : 500;
}

/* RFC 6056 §3.3.5, Algorithm 5: Random-Increments Port Selection.
 *   next_ephemeral = next_ephemeral + (random() % N) + 1;
 *   port = min_ephemeral + (next_ephemeral % num_ephemeral);  */
static int pick_random_increments(struct walk *walk, uint32_t lo, uint32_t num,
				  struct pf_state *state, struct pf_rng *rng)
{
	uint32_t n = pf_random_increments_n(num);

	for (uint32_t count = num; count > 0; count--) {
		uint32_t step = pf_rng_below(rng, n) + 1;
		uint32_t next_ephemeral = atomic_fetch_add_explicit(
			&state->shared->increments_next, step, memory_order_relaxed) + step;
		int rc = attempt(walk, lo + next_ephemeral % num);
		if (rc != 0)
			return settle(rc);
	}
	return full_walk(walk, lo, num, lo + pf_rng_below(rng, num));
}

/* A model of the kernel's own choice (a random start, then a walk), for
 * simulations and the occupancy benchmark.  The shim never calls it: with
 * algorithm "kernel" it sets IP_LOCAL_PORT_RANGE and the kernel chooses. */
static int pick_kernel_model(struct walk *walk, uint32_t lo, uint32_t num, struct pf_rng *rng)
{
	return full_walk(walk, lo, num, lo + pf_rng_below(rng, num));
}

int pf_algorithm_pick(enum pf_algorithm algorithm, uint16_t lo, uint16_t hi,
		      const struct pf_flow *flow, struct pf_state *state,
		      struct pf_rng *rng, pf_try_fn try_port, void *ctx,
		      struct pf_pick *pick)
{
	struct walk walk = {.try_port = try_port, .ctx = ctx, .pick = pick};
	uint32_t num = (uint32_t)hi - lo + 1;

	pick->port = 0;
	pick->attempts = 0;
	if (hi < lo)
		return PF_EXHAUSTED;
	switch (algorithm) {
	case PF_ALGO_SEQUENTIAL:
		return pick_sequential(&walk, lo, num, state, rng);
	case PF_ALGO_RANDOM:
		return pick_random(&walk, lo, num, rng);
	case PF_ALGO_RANDOM_REDRAW:
		return pick_random_redraw(&walk, lo, num, rng);
	case PF_ALGO_HASH:
		return pick_hash(&walk, lo, num, flow, state, rng);
	case PF_ALGO_DOUBLE_HASH:
		return pick_double_hash(&walk, lo, num, flow, state, rng);
	case PF_ALGO_RANDOM_INCREMENTS:
		return pick_random_increments(&walk, lo, num, state, rng);
	case PF_ALGO_KERNEL:
	case PF_ALGO_COUNT:
		break;
	}
	return pick_kernel_model(&walk, lo, num, rng);
}
