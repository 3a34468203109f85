/* What a connect computes of its flow, remembered per thread for the
 * last few flows: F() and G() of the hash algorithms (RFC 6056 §3.3.3,
 * §3.3.4) and the held-4-tuples table's hash of the destination.  A
 * program that connects to one destination again and again hashes it
 * once (three siphashes and their keys' layout were a fifth of the
 * shim's instructions per connect, callgrind).
 *
 * Async-signal-safe: a handler that interrupts a lookup in its own
 * thread computes without the memo. */
#include <string.h>

#include "core/hot.h"
#include "shim.h"

#define ENTRIES 4
#define KEY_WORDS 6

/* The state whose keys hashed it, the lengths, port and which hashes,
 * then the local and remote addresses, zero-padded to 16 bytes. */
struct memo_entry {
	uint64_t key[KEY_WORDS];
	struct pf_flow_hashes hashes;
	uint64_t hold;
	bool used;
};

static __thread struct {
	bool busy;
	unsigned next, last;
	struct memo_entry entries[ENTRIES];
} memo __attribute__((tls_model("initial-exec")));

/* An address of 4 or 16 bytes (anything else: none) into two words.
 * Copies of constant size: a variable one was a byte loop. */
static void address_words(const uint8_t *addr, size_t len, uint64_t out[2])
{
	out[0] = out[1] = 0;
	if (len == 4) {
		uint32_t v4;
		memcpy(&v4, addr, 4);
		out[0] = v4;
	} else if (len == 16) {
		memcpy(out, addr, 16);
	}
}

static void key_of(const struct pf_state *state, const struct pf_flow *flow, bool hashes_flow,
		   uint64_t key[KEY_WORDS])
{
	key[0] = (uint64_t)(uintptr_t)state->shared;
	key[1] = (uint64_t)(flow->local_len & 0xff) | (uint64_t)(flow->remote_len & 0xff) << 8 |
		 (uint64_t)flow->remote_port << 16 | (uint64_t)hashes_flow << 32;
	address_words(flow->local_addr, flow->local_len, key + 2);
	address_words(flow->remote_addr, flow->remote_len, key + 4);
}

static bool same_key(const uint64_t a[KEY_WORDS], const uint64_t b[KEY_WORDS])
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5])) == 0;
}

static void compute(const struct pf_state *state, const struct pf_flow *flow, bool hashes_flow,
		    struct pf_flow_hashes *hashes, uint64_t *hold)
{
	struct pf_flow remote_only = *flow;

	remote_only.local_addr = NULL;
	remote_only.local_len = 0;
	*hold = pf_hold_flow_hash(state->shared->hash_key, &remote_only);
	if (hashes_flow)
		pf_flow_hashes_of(state, flow, hashes);
	else
		*hashes = (struct pf_flow_hashes){0, 0};
}

PF_HOT void pf_flow_memo(const struct pf_state *state, const struct pf_flow *flow, bool hashes_flow,
		  struct pf_flow_hashes *hashes, uint64_t *hold)
{
	uint64_t key[KEY_WORDS];

	if (flow->local_len > 16 || flow->remote_len > 16 || !pf_reentry_enter(&memo.busy)) {
		compute(state, flow, hashes_flow, hashes, hold);
		return;
	}
	key_of(state, flow, hashes_flow, key);
	/* The last hit first: most programs connect to one place at a time. */
	for (unsigned n = 0; n < ENTRIES; n++) {
		unsigned i = (memo.last + n) % ENTRIES;
		struct memo_entry *e = &memo.entries[i];
		if (e->used && same_key(e->key, key)) {
			*hashes = e->hashes;
			*hold = e->hold;
			memo.last = i;
			goto out;
		}
	}
	compute(state, flow, hashes_flow, hashes, hold);
	memo.last = memo.next++ % ENTRIES;
	struct memo_entry *e = &memo.entries[memo.last];
	memcpy(e->key, key, sizeof(key));
	e->hashes = *hashes;
	e->hold = *hold;
	e->used = true;
out:
	pf_reentry_leave(&memo.busy);
}

/* ---- the thread's last connect ---- */

/* Two lines: what is compared, then what is taken. */
static __thread struct {
	bool busy;
	bool valid;
	bool concrete;
	uint32_t generation;
	uint32_t learned_ms;
	uint64_t key[KEY_WORDS];	/* state, lengths, port, addresses */
	struct pf_flow_hashes hashes;
	uint64_t hold;
	struct sockaddr_in6 source;	/* or a sockaddr_in */
} last __attribute__((tls_model("initial-exec"), aligned(64)));

/* The key of (state, destination, hashes_flow): the local address is
 * what the source lookup answers, so it is not part of the question. */
static PF_HOT void last_key(const struct pf_last_connect *c, uint64_t key[KEY_WORDS])
{
	const struct sockaddr *dest = c->dest;
	bool v4 = dest->sa_family == AF_INET;
	uint16_t port = v4 ? ((const struct sockaddr_in *)dest)->sin_port
			   : ((const struct sockaddr_in6 *)dest)->sin6_port;

	key[0] = (uint64_t)(uintptr_t)c->state->shared;
	key[1] = (uint64_t)(v4 ? 4 : 16) << 8 | (uint64_t)port << 16 | (uint64_t)c->hashes_flow << 32;
	key[2] = key[3] = 0;
	address_words(v4 ? (const uint8_t *)&((const struct sockaddr_in *)dest)->sin_addr
			 : ((const struct sockaddr_in6 *)dest)->sin6_addr.s6_addr,
		      v4 ? 4 : 16, key + 4);
}

PF_HOT bool pf_last_connect_get(struct pf_last_connect *c, uint32_t now_ms, struct sockaddr_storage *source)
{
	uint64_t key[KEY_WORDS];
	bool found = false;

	if (!pf_reentry_enter(&last.busy))
		return false;
	last_key(c, key);
	if (last.valid && last.generation == c->generation && same_key(last.key, key) &&
	    (!last.concrete || (uint32_t)(now_ms - last.learned_ms) < PF_SOURCE_TTL_MS)) {
		c->concrete = last.concrete;
		c->learned_ms = last.learned_ms;
		c->hashes = last.hashes;
		c->hold = last.hold;
		if (last.concrete)
			memcpy(source, &last.source, sizeof(struct sockaddr_in6));
		found = true;
	}
	pf_reentry_leave(&last.busy);
	return found;
}

void pf_last_connect_put(const struct pf_last_connect *c)
{
	if (!pf_reentry_enter(&last.busy))
		return;
	last_key(c, last.key);
	last.generation = c->generation;
	last.concrete = c->concrete;
	last.learned_ms = c->learned_ms;
	if (c->concrete)
		memcpy(&last.source, c->source, sizeof(struct sockaddr_in6));
	last.hashes = c->hashes;
	last.hold = c->hold;
	last.valid = true;
	pf_reentry_leave(&last.busy);
}
