/* A small, fast PRNG (xoshiro256**) seeded from getrandom(2).  RFC 6056's
 * random() must be unpredictable to an off-path attacker; a per-thread
 * generator seeded from the kernel's CSPRNG gives that without one syscall
 * per port. */
#ifndef PORTFENCE_RNG_H
#define PORTFENCE_RNG_H

#include <stddef.h>
#include <stdint.h>

struct pf_rng {
	uint64_t s[4];
};

void pf_rng_seed(struct pf_rng *rng, uint64_t seed);
/* Returns 0, or -errno when the kernel gave no randomness. */
int pf_rng_seed_random(struct pf_rng *rng);
uint64_t pf_rng_next(struct pf_rng *rng);
/* Uniform in [0, bound), bound > 0. */
uint32_t pf_rng_below(struct pf_rng *rng, uint32_t bound);

/* Fills buf from getrandom(2); 0 or -errno. */
int pf_random_bytes(void *buf, size_t len);

/* SipHash-2-4: the keyed hash F() of RFC 6056 §3.3.3/§3.3.4, the core's
 * (core/siphash.h, which the BPF programs share). */
uint64_t pf_siphash(const uint8_t key[16], const void *data, size_t len);
/* The same, remembered per thread for the last few (key, data) pairs of
 * up to PF_SIPHASH_CACHED_MAX bytes: a program connecting again and again
 * to one destination hashes its flow once.  Async-signal-safe (a handler
 * that interrupts an update computes without the cache). */
#define PF_SIPHASH_CACHED_MAX 40
uint64_t pf_siphash_cached(const uint8_t key[16], const void *data, size_t len);

#endif
