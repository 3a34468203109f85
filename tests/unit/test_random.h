/* Reproducible randomness for the differential unit tests: a new seed
 * each run (the tests print it on failure); PF_TEST_SEED replays one. */
#ifndef PORTFENCE_TEST_RANDOM_H
#define PORTFENCE_TEST_RANDOM_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng_state;

static inline uint32_t next_random(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* Seeds next_random and returns the seed. */
static inline uint64_t seed_random(void)
{
	const char *replay = getenv("PF_TEST_SEED");

	rng_state = replay ? strtoull(replay, NULL, 0) : 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
	return rng_state;
}

#endif
