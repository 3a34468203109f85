#include "core/rng.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>

#include "core/siphash.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void pf_rng_seed(struct pf_rng *rng, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		rng->s[i] = splitmix64(&seed);
}

int pf_random_bytes(void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t got = getrandom((char *)buf + done, len - done, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)got;
	}
	return 0;
}

int pf_rng_seed_random(struct pf_rng *rng)
{
	int rc = pf_random_bytes(rng->s, sizeof(rng->s));

	if (rc < 0)
		return rc;
	if ((rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]) == 0)
		rng->s[0] = 1; /* the all-zero state is a fixed point */
	return 0;
}

uint64_t pf_rng_next(struct pf_rng *rng)
{
	uint64_t *s = rng->s;
	uint64_t result = pf_core_rotl64(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = pf_core_rotl64(s[3], 45);
	return result;
}

/* Lemire's nearly-divisionless method: no modulo bias. */
uint32_t pf_rng_below(struct pf_rng *rng, uint32_t bound)
{
	uint64_t product = (pf_rng_next(rng) >> 32) * bound;
	uint32_t low = (uint32_t)product;

	if (low < bound) {
		uint32_t threshold = -bound % bound;
		while (low < threshold) {
			product = (pf_rng_next(rng) >> 32) * bound;
			low = (uint32_t)product;
		}
	}
	return (uint32_t)(product >> 32);
}

uint64_t pf_siphash(const uint8_t key[16], const void *data, size_t len)
{
	return pf_core_siphash(key, data, (uint32_t)len);
}

#define SIPHASH_CACHE_ENTRIES 4

struct siphash_memo {
	uint8_t key[16];
	uint8_t data[PF_SIPHASH_CACHED_MAX];
	size_t len;	/* 0: empty (an empty message is not remembered) */
	uint64_t hash;
};

/* Equal bytes, word by word (inlined: the libc memcmp call cost ~90
 * instructions per connect here, callgrind). */
static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t len)
{
	uint64_t x, y;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y)
			return false;
	}
	for (; i < len; i++)
		if (a[i] != b[i])
			return false;
	return true;
}

static __thread struct {
	bool busy;
	unsigned next;
	struct siphash_memo memo[SIPHASH_CACHE_ENTRIES];
} siphash_cache __attribute__((tls_model("initial-exec")));

uint64_t pf_siphash_cached(const uint8_t key[16], const void *data, size_t len)
{
	if (len == 0 || len > PF_SIPHASH_CACHED_MAX || siphash_cache.busy)
		return pf_siphash(key, data, len);
	siphash_cache.busy = true;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	for (int i = 0; i < SIPHASH_CACHE_ENTRIES; i++) {
		struct siphash_memo *m = &siphash_cache.memo[i];
		if (m->len == len && same_bytes(m->data, data, len) && same_bytes(m->key, key, 16)) {
			uint64_t hash = m->hash;
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			siphash_cache.busy = false;
			return hash;
		}
	}
	struct siphash_memo *m = &siphash_cache.memo[siphash_cache.next++ % SIPHASH_CACHE_ENTRIES];
	uint64_t hash = pf_siphash(key, data, len);
	memcpy(m->key, key, 16);
	memcpy(m->data, data, len);
	m->len = len;
	m->hash = hash;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	siphash_cache.busy = false;
	return hash;
}
