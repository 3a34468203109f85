/* The seven algorithms over a simulated port space. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/algorithm.h"

struct port_space {
	uint8_t busy[65536];
	bool take;	/* a taken port becomes busy */
};

static int try_in_space(void *ctx, uint16_t port)
{
	struct port_space *space = ctx;
	if (space->busy[port])
		return PF_TRY_BUSY;
	if (space->take)
		space->busy[port] = 1;
	return PF_TRY_TAKEN;
}

static struct pf_state state;
static struct pf_rng rng;

static void setup(void)
{
	cr_assert_eq(pf_state_open_private(65535, &state), 0);
	pf_rng_seed(&rng, 42);
}

static void teardown(void)
{
	pf_state_close(&state);
}

static const uint8_t local_any[4] = {0, 0, 0, 0};

static struct pf_flow flow_to(const uint8_t *remote, uint16_t port)
{
	return (struct pf_flow){local_any, 4, remote, 4, port};
}

struct algo_case { enum pf_algorithm algorithm; };

ParameterizedTestParameters(algorithm, in_range)
{
	static struct algo_case cases[PF_ALGO_COUNT];
	for (int i = 0; i < PF_ALGO_COUNT; i++)
		cases[i].algorithm = (enum pf_algorithm)i;
	return cr_make_param_array(struct algo_case, cases, PF_ALGO_COUNT);
}

ParameterizedTest(struct algo_case *c, algorithm, in_range, .init = setup, .fini = teardown)
{
	static struct port_space space;
	uint8_t remote[4] = {127, 0, 0, 1};
	for (int i = 0; i < 3000; i++) {
		struct pf_flow flow = flow_to(remote, (uint16_t)(1000 + i % 50));
		struct pf_pick pick;
		cr_assert_eq(pf_algorithm_pick(c->algorithm, 61000, 61099, &flow, &state, &rng,
					       try_in_space, &space, &pick), 0);
		cr_assert(pick.port >= 61000 && pick.port <= 61099, "%s gave %u",
			  pf_algorithm_name(c->algorithm), pick.port);
		cr_assert_eq(pick.attempts, 1, "all ports free: the first try must do");
	}
}

ParameterizedTestParameters(algorithm, finds_the_one_free_port)
{
	static struct algo_case cases[PF_ALGO_COUNT];
	for (int i = 0; i < PF_ALGO_COUNT; i++)
		cases[i].algorithm = (enum pf_algorithm)i;
	return cr_make_param_array(struct algo_case, cases, PF_ALGO_COUNT);
}

ParameterizedTest(struct algo_case *c, algorithm, finds_the_one_free_port, .init = setup,
		  .fini = teardown)
{
	static struct port_space space;
	uint8_t remote[4] = {192, 0, 2, 1};
	const uint16_t lo = 40000, hi = 40999;
	const uint16_t free_ports[] = {lo, hi, 40500, 40001, 40998, 40333};

	for (size_t k = 0; k < sizeof(free_ports) / sizeof(*free_ports); k++) {
		memset(space.busy, 1, sizeof(space.busy));
		space.busy[free_ports[k]] = 0;
		for (int round = 0; round < 20; round++) {
			struct pf_flow flow = flow_to(remote, (uint16_t)(80 + round));
			struct pf_pick pick;
			int rc = pf_algorithm_pick(c->algorithm, lo, hi, &flow, &state, &rng,
						   try_in_space, &space, &pick);
			cr_assert_eq(rc, 0, "%s missed free port %u", pf_algorithm_name(c->algorithm),
				     free_ports[k]);
			cr_assert_eq(pick.port, free_ports[k]);
			cr_assert_leq(pick.attempts, 2u * (hi - lo + 1));
		}
	}
}

ParameterizedTestParameters(algorithm, exhaustion)
{
	static struct algo_case cases[PF_ALGO_COUNT];
	for (int i = 0; i < PF_ALGO_COUNT; i++)
		cases[i].algorithm = (enum pf_algorithm)i;
	return cr_make_param_array(struct algo_case, cases, PF_ALGO_COUNT);
}

ParameterizedTest(struct algo_case *c, algorithm, exhaustion, .init = setup, .fini = teardown)
{
	static struct port_space space;
	struct pf_pick pick;

	memset(space.busy, 1, sizeof(space.busy));
	cr_expect_eq(pf_algorithm_pick(c->algorithm, 100, 163, NULL, &state, &rng, try_in_space,
				       &space, &pick), PF_EXHAUSTED);
	cr_expect_geq(pick.attempts, 64u, "every port must have been tried");
}

Test(algorithm, fills_a_range_completely, .init = setup, .fini = teardown)
{
	static struct port_space space;
	for (int a = 0; a < PF_ALGO_COUNT; a++) {
		memset(&space, 0, sizeof(space));
		space.take = true;
		for (int i = 0; i < 200; i++) {
			struct pf_pick pick;
			cr_assert_eq(pf_algorithm_pick((enum pf_algorithm)a, 5000, 5199, NULL, &state,
						       &rng, try_in_space, &space, &pick), 0,
				     "%s: false exhaustion after %d ports", pf_algorithm_name(a), i);
		}
		struct pf_pick pick;
		cr_expect_eq(pf_algorithm_pick((enum pf_algorithm)a, 5000, 5199, NULL, &state, &rng,
					       try_in_space, &space, &pick), PF_EXHAUSTED);
	}
}

static int try_refused(void *ctx, uint16_t port)
{
	(void)ctx;
	(void)port;
	return -ECONNREFUSED;
}

Test(algorithm, hard_error_stops_the_walk, .init = setup, .fini = teardown)
{
	struct pf_pick pick;
	cr_expect_eq(pf_algorithm_pick(PF_ALGO_RANDOM, 1, 100, NULL, &state, &rng, try_refused,
				       NULL, &pick), -ECONNREFUSED);
	cr_expect_eq(pick.attempts, 1);
}

Test(algorithm, sequential_counts_up, .init = setup, .fini = teardown)
{
	static struct port_space space;
	struct pf_pick pick;
	for (int i = 0; i < 250; i++) {
		cr_assert_eq(pf_algorithm_pick(PF_ALGO_SEQUENTIAL, 7000, 7099, NULL, &state, &rng,
					       try_in_space, &space, &pick), 0);
		cr_assert_eq(pick.port, 7000 + i % 100);
	}
}

Test(algorithm, sequential_continues_across_two_handles)
{
	char dir[] = "/tmp/pf-unit-XXXXXX";
	struct pf_state first, second;
	static struct port_space space;
	struct pf_pick pick;

	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(pf_state_open(dir, "seq", 1000, &first), 0);
	cr_assert_eq(pf_state_open(dir, "seq", 1000, &second), 0);
	cr_assert(first.shared != second.shared, "two mappings, as in two processes");
	for (int i = 0; i < 20; i++) {
		struct pf_state *handle = i % 2 ? &second : &first;
		cr_assert_eq(pf_algorithm_pick(PF_ALGO_SEQUENTIAL, 9000, 9999, NULL, handle, &rng,
					       try_in_space, &space, &pick), 0);
		cr_assert_eq(pick.port, 9000 + i);
	}
	pf_state_close(&first);
	pf_state_close(&second);
	cr_expect_eq(pf_state_remove(dir, "seq"), 0);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

static uint16_t first_port(enum pf_algorithm algorithm, const struct pf_shared_state *seed_state,
			   const uint8_t remote[4], uint16_t remote_port)
{
	static struct port_space space;
	struct pf_state copy;
	struct pf_pick pick;
	struct pf_flow flow = flow_to(remote, remote_port);

	cr_assert_eq(pf_state_open_private(10000, &copy), 0);
	memcpy(copy.shared, seed_state, sizeof(*seed_state));
	cr_assert_eq(pf_algorithm_pick(algorithm, 20000, 29999, &flow, &copy, &rng, try_in_space,
				       &space, &pick), 0);
	pf_state_close(&copy);
	return pick.port;
}

static void check_hash_algorithm(enum pf_algorithm algorithm)
{
	uint8_t a[4] = {127, 0, 0, 1}, b[4] = {127, 0, 0, 2};
	static uint8_t seen[65536];
	unsigned distinct = 0;

	cr_expect_eq(first_port(algorithm, state.shared, a, 80), first_port(algorithm, state.shared, a, 80));
	cr_expect_neq(first_port(algorithm, state.shared, a, 80), first_port(algorithm, state.shared, b, 80));
	memset(seen, 0, sizeof(seen));
	for (uint16_t port = 1; port <= 500; port++) {
		uint16_t chosen = first_port(algorithm, state.shared, a, port);
		distinct += !seen[chosen];
		seen[chosen] = 1;
	}
	/* 500 draws into 10000 ports: ~488 distinct if uniform. */
	cr_expect_gt(distinct, 450, "%s: only %u distinct first ports", pf_algorithm_name(algorithm), distinct);
}

Test(algorithm, hash_is_keyed_per_destination, .init = setup, .fini = teardown)
{
	check_hash_algorithm(PF_ALGO_HASH);
}

Test(algorithm, double_hash_is_keyed_per_destination, .init = setup, .fini = teardown)
{
	check_hash_algorithm(PF_ALGO_DOUBLE_HASH);
}

Test(algorithm, hash_depends_on_the_key, .init = setup, .fini = teardown)
{
	uint8_t a[4] = {127, 0, 0, 1};
	struct pf_shared_state other;
	unsigned same = 0;

	memcpy(&other, state.shared, sizeof(other));
	other.hash_key[0] ^= 1;
	for (uint16_t port = 1; port <= 50; port++)
		same += first_port(PF_ALGO_HASH, state.shared, a, port) ==
			first_port(PF_ALGO_HASH, &other, a, port);
	cr_expect_lt(same, 5);
}

Test(algorithm, random_increments_steps_within_n, .init = setup, .fini = teardown)
{
	static struct port_space space;
	const uint32_t num = 1000, n = pf_random_increments_n(num);
	struct pf_pick pick;
	uint16_t previous = 0;
	uint32_t largest = 0, smallest = num;

	cr_expect_eq(n, 500);
	for (int i = 0; i < 5000; i++) {
		cr_assert_eq(pf_algorithm_pick(PF_ALGO_RANDOM_INCREMENTS, 30000, 30999, NULL, &state,
					       &rng, try_in_space, &space, &pick), 0);
		if (i > 0) {
			uint32_t step = (pick.port - previous + num) % num;
			cr_assert(step >= 1 && step <= n, "step %u outside 1..%u", step, n);
			largest = step > largest ? step : largest;
			smallest = step < smallest ? step : smallest;
		}
		previous = pick.port;
	}
	cr_expect_eq(smallest, 1);
	cr_expect_gt(largest, 490);
	cr_expect_eq(pf_random_increments_n(100), 99, "a step must not wrap a small range");
}

Test(algorithm, random_spreads_over_the_range, .init = setup, .fini = teardown)
{
	static struct port_space space;
	unsigned counts[10] = {0};
	struct pf_pick pick;
	for (int i = 0; i < 10000; i++) {
		cr_assert_eq(pf_algorithm_pick(PF_ALGO_RANDOM, 1000, 1999, NULL, &state, &rng,
					       try_in_space, &space, &pick), 0);
		counts[(pick.port - 1000) / 100]++;
	}
	for (int i = 0; i < 10; i++)
		cr_expect(counts[i] > 800 && counts[i] < 1200, "decile %d got %u of 10000", i, counts[i]);
}

/* SipHash-2-4's reference vectors (key 00..0f, message 00..len-1): the
 * hash algorithms and the hold keys rest on it. */
Test(algorithm, siphash_reference_vectors)
{
	static const struct { size_t len; uint64_t hash; } vectors[] = {
		{0, 0x726fdb47dd0e0e31ull}, {1, 0x74f839c593dc67fdull},
		{8, 0x93f5f5799a932462ull}, {15, 0xa129ca6149be45e5ull},
	};
	uint8_t key[16], message[16];

	for (int i = 0; i < 16; i++)
		key[i] = message[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
		cr_assert_eq(pf_siphash(key, message, vectors[i].len), vectors[i].hash, "length %zu",
			     vectors[i].len);
}
