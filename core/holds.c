/* The held-4-tuple table.  Each slot is one 64-bit word, changed only by
 * compare-and-swap, so processes sharing the table never tear an entry:
 *   bits 63..32  the 4-tuple's key (0: empty slot)
 *   bits 31..30  CLAIMED, HELD or RELEASED
 *   bits 29..0   for RELEASED the release time (ms, modulo 2^30); a
 *                release at time 0 is clean
 *                for CLAIMED the claiming process's pid (bits 29..8, 0
 *                when unknown) and the claim time (bits 7..0, in 128
 *                ms ticks: it wraps after 33 s)
 * A claim may become HELD once its connect() has put the socket where
 * the kernel shows it; until then, the kernel's "free" says nothing of it.
 * The shim leaves a connected socket's claim unsettled (settling it was a
 * cache miss after every connect): a claim older than CLAIM_ABANDONED_MS
 * counts as HELD, and a close releases either.  A claim whose process
 * has died is gone too (the caller asks, pf_hold_claimant): a process
 * killed, or leaving by _exit, closes nothing the shim sees.
 * Anything read from the table is only a hint: a wrong word can make a
 * port look busy or clean, never make us read outside the table. */
#include "core/hot.h"
#include "core/clock.h"
#include "core/holds.h"

#include <string.h>
#include <time.h>

#include "core/flow.h"
#include "core/rng.h"

#define STATE_SHIFT 30
#define HELD (1ull << STATE_SHIFT)
#define RELEASED (2ull << STATE_SHIFT)
#define CLAIMED (3ull << STATE_SHIFT)
/* A claim older than this was abandoned (its process died mid-connect). */
#define CLAIM_ABANDONED_MS 1000
#define STATE_MASK (3ull << STATE_SHIFT)
#define TIME_MASK ((1ull << STATE_SHIFT) - 1)
/* A claim's time in 128 ms ticks, 8 bits: the claim counts as held from
 * 1,024 ms on, and looks young again for a second every 33 s, harmless
 * for a live process's claim (its socket is open: busy either way). */
#define CLAIM_TICK_SHIFT 7
#define CLAIM_TICK_MASK 0xffu
#define CLAIM_PID_SHIFT 8
#define CLAIM_PID_MASK ((1u << (STATE_SHIFT - CLAIM_PID_SHIFT)) - 1)	/* 22 bits: pid_max's limit */

PF_HOT_DATA pf_owner_fn pf_hold_owner;

static uint32_t word_key(uint64_t word)
{
	return (uint32_t)(word >> 32);
}

/* A HELD or RELEASED word (for RELEASED, released at now_ms). */
static uint64_t make_word(uint32_t key, uint64_t state, uint32_t now_ms)
{
	return ((uint64_t)key << 32) | state | (state == RELEASED ? (now_ms & TIME_MASK) : 0);
}

static PF_HOT uint64_t claim_word(uint32_t key, uint32_t now_ms)
{
	uint32_t owner = pf_hold_owner ? pf_hold_owner() & CLAIM_PID_MASK : 0;

	return ((uint64_t)key << 32) | CLAIMED | (uint64_t)owner << CLAIM_PID_SHIFT |
	       ((now_ms >> CLAIM_TICK_SHIFT) & CLAIM_TICK_MASK);
}

static uint32_t age_ms(uint64_t word, uint32_t now_ms)
{
	return (uint32_t)((now_ms - (uint32_t)(word & TIME_MASK)) & TIME_MASK);
}

static uint32_t claim_age_ms(uint64_t word, uint32_t now_ms)
{
	return (((now_ms >> CLAIM_TICK_SHIFT) - (uint32_t)word) & CLAIM_TICK_MASK) << CLAIM_TICK_SHIFT;
}

/* The flow's keyed hash (remembered per thread: one destination, one
 * siphash), then the port mixed in by a bijection, so that one flow's
 * ports never share a key. */
uint64_t pf_hold_flow_hash(const uint8_t secret[16], const struct pf_flow *flow)
{
	uint8_t buf[PF_CORE_FLOW_MAX];
	uint32_t len = pf_core_flow_key(buf, flow->local_addr, (uint32_t)flow->local_len,
					flow->remote_addr, (uint32_t)flow->remote_len,
					flow->remote_port);
	return pf_siphash_cached(secret, buf, len);
}

uint32_t pf_hold_key(const uint8_t secret[16], const struct pf_flow *flow, uint16_t port)
{
	return pf_hold_key_at(pf_hold_flow_hash(secret, flow), port);
}

PF_HOT_DATA pf_clock_fn pf_clock_gettime = clock_gettime;

static PF_HOT _Atomic uint64_t *port_block(const struct pf_state *state, uint32_t port_offset)
{
	if (!state->holds || port_offset >= state->num_ports)
		return NULL;
	return state->holds + (size_t)port_offset * PF_HOLD_SLOTS;
}

static uint64_t load(_Atomic uint64_t *slot)
{
	return atomic_load_explicit(slot, memory_order_acquire);
}

static void set_ref(struct pf_hold_ref *ref, uint32_t port_offset, int i, uint32_t key, uint64_t seen)
{
	ref->slot = (uint32_t)((size_t)port_offset * PF_HOLD_SLOTS + (size_t)i + 1);
	ref->key = key;
	ref->seen = seen;
}

static PF_HOT enum pf_hold_verdict judge(uint64_t word, uint32_t now_ms, uint32_t quarantine_ms)
{
	if ((word & STATE_MASK) == HELD)
		return PF_HOLD_HELD;
	if ((word & STATE_MASK) == CLAIMED)
		return claim_age_ms(word, now_ms) < CLAIM_ABANDONED_MS ? PF_HOLD_CLAIMED : PF_HOLD_HELD;
	if ((word & STATE_MASK) != RELEASED || (word & TIME_MASK) == 0)
		return PF_HOLD_FREE;
	/* Released after now_ms was read (the age wraps): as recent as can be. */
	uint32_t age = age_ms(word, now_ms);
	return age < quarantine_ms || age > TIME_MASK / 2 ? PF_HOLD_RECENT : PF_HOLD_FREE;
}

/* Where a new key goes: the first empty slot counting from the key's own
 * (so that two processes adding one key race for the same slot), else
 * the longest-released one.  -1 when every slot is held; KEY_ARRIVED
 * when another process has put the key in since the caller looked for
 * it: the slot after it would be a second claim of one 4-tuple. */
#define KEY_ARRIVED (-2)
static PF_HOT int free_slot(_Atomic uint64_t *block, uint32_t key, uint32_t now_ms, uint64_t *expected)
{
	int chosen = -1;
	uint32_t chosen_age = 0;

	for (int n = 0; n < PF_HOLD_SLOTS; n++) {
		int i = (int)((key + (uint32_t)n) % PF_HOLD_SLOTS);
		uint64_t word = load(&block[i]);
		if (word_key(word) == key)
			return KEY_ARRIVED;
		if (word == 0) {
			*expected = 0;
			return i;
		}
		if ((word & STATE_MASK) == RELEASED && (chosen < 0 || age_ms(word, now_ms) > chosen_age)) {
			chosen = i;
			chosen_age = age_ms(word, now_ms);
			*expected = word;
		}
	}
	return chosen;
}

/* From the key's own slot on, where free_slot puts it when it can: a
 * connect that reuses a 4-tuple finds it at the first look. */
static PF_HOT int find_key(_Atomic uint64_t *block, uint32_t key, uint64_t *word)
{
	for (int n = 0; n < PF_HOLD_SLOTS; n++) {
		int i = (int)((key + (uint32_t)n) % PF_HOLD_SLOTS);
		*word = load(&block[i]);
		if (word_key(*word) == key)
			return i;
	}
	return -1;
}

bool pf_hold_port_idle(const struct pf_state *state, uint32_t port_offset, uint32_t now_ms)
{
	_Atomic uint64_t *block = port_block(state, port_offset);

	for (int i = 0; block && i < PF_HOLD_SLOTS; i++) {
		enum pf_hold_verdict verdict = judge(load(&block[i]), now_ms, 0);
		if (verdict == PF_HOLD_HELD || verdict == PF_HOLD_CLAIMED)
			return false;
	}
	return true;
}

PF_HOT bool pf_hold_claim_clean(struct pf_state *state, uint32_t port_offset, uint32_t key,
				uint32_t now_ms, uint32_t quarantine_ms, struct pf_hold_ref *ref)
{
	_Atomic uint64_t *block = port_block(state, port_offset);
	uint64_t word, held = claim_word(key, now_ms);
	int i = block ? find_key(block, key, &word) : -1;

	if (i < 0 || judge(word, now_ms, quarantine_ms) != PF_HOLD_FREE ||
	    !atomic_compare_exchange_strong(&block[i], &word, held))
		return false;
	set_ref(ref, port_offset, i, key, held);
	return true;
}

PF_HOT enum pf_hold_verdict pf_hold_claim(struct pf_state *state, uint32_t port_offset, uint32_t key,
				   uint32_t now_ms, uint32_t quarantine_ms, struct pf_hold_ref *ref)
{
	_Atomic uint64_t *block = port_block(state, port_offset);
	uint64_t held = claim_word(key, now_ms);

	ref->slot = 0;
	ref->key = key;
	if (!block)
		return PF_HOLD_UNKNOWN;
	for (int tries = 0; tries < 8; tries++) {
		uint64_t word;
		int i = find_key(block, key, &word);
		if (i >= 0) {
			enum pf_hold_verdict verdict = judge(word, now_ms, quarantine_ms);
			set_ref(ref, port_offset, i, key, word);
			if (verdict != PF_HOLD_FREE)
				return verdict;
			if (atomic_compare_exchange_strong(&block[i], &word, held)) {
				ref->seen = held;
				return PF_HOLD_FREE;
			}
			continue;
		}
		uint64_t expected = 0;
		i = free_slot(block, key, now_ms, &expected);
		if (i == KEY_ARRIVED)
			continue;
		if (i < 0)
			return PF_HOLD_UNKNOWN;
		if (atomic_compare_exchange_strong(&block[i], &expected, held)) {
			set_ref(ref, port_offset, i, key, held);
			return PF_HOLD_UNKNOWN;
		}
	}
	ref->slot = 0;
	return PF_HOLD_HELD;
}

uint32_t pf_hold_seen_age(const struct pf_hold_ref *ref, uint32_t now_ms)
{
	return age_ms(ref->seen, now_ms);
}

uint32_t pf_hold_claimant(const struct pf_hold_ref *ref)
{
	if (word_key(ref->seen) != ref->key || (ref->seen & STATE_MASK) != CLAIMED)
		return 0;
	return (uint32_t)(ref->seen >> CLAIM_PID_SHIFT) & CLAIM_PID_MASK;
}

static PF_HOT _Atomic uint64_t *ref_slot(const struct pf_state *state, const struct pf_hold_ref *ref)
{
	if (!ref->slot || !state->holds || ref->slot > (size_t)state->num_ports * PF_HOLD_SLOTS)
		return NULL;
	return &state->holds[ref->slot - 1];
}

bool pf_hold_reclaim(struct pf_state *state, struct pf_hold_ref *ref)
{
	_Atomic uint64_t *slot = ref_slot(state, ref);
	uint64_t expected = ref->seen, claimed = claim_word(ref->key, pf_hold_now_ms());

	if (!slot)
		return true;
	if (atomic_compare_exchange_strong(slot, &expected, claimed)) {
		ref->seen = claimed;
		return true;
	}
	ref->slot = 0;
	return false;
}

/* Moves the slot from what the claim wrote to word. */
static void settle_claim(struct pf_state *state, struct pf_hold_ref *ref, uint64_t word)
{
	_Atomic uint64_t *slot = ref_slot(state, ref);
	uint64_t expected = ref->seen;

	if (slot && atomic_compare_exchange_strong(slot, &expected, word))
		ref->seen = word;
}

void pf_hold_connected(struct pf_state *state, struct pf_hold_ref *ref)
{
	settle_claim(state, ref, make_word(ref->key, HELD, 0));
}

void pf_hold_unclaim(struct pf_state *state, struct pf_hold_ref *ref)
{
	/* Released at time 0: clean, whatever the quarantine. */
	settle_claim(state, ref, make_word(ref->key, RELEASED, 0));
	ref->slot = 0;
}

void pf_hold_disown(struct pf_state *state, struct pf_hold_ref *ref)
{
	settle_claim(state, ref, make_word(ref->key, HELD, 0));
	ref->slot = 0;
}

/* The slot's word when ref's socket still holds it: HELD, or its claim
 * never settled (the shim leaves a connected socket's claim as it is);
 * else 0. */
static PF_HOT uint64_t still_ours(_Atomic uint64_t *slot, const struct pf_hold_ref *ref)
{
	uint64_t word = slot ? atomic_load_explicit(slot, memory_order_relaxed) : 0;
	uint64_t held = word & STATE_MASK;

	return word_key(word) == ref->key && (held == HELD || held == CLAIMED) ? word : 0;
}

PF_HOT void pf_hold_release(struct pf_state *state, const struct pf_hold_ref *ref, uint32_t now_ms)
{
	_Atomic uint64_t *slot = ref_slot(state, ref);
	uint64_t expected = still_ours(slot, ref);

	if (expected)
		atomic_compare_exchange_strong(slot, &expected, make_word(ref->key, RELEASED, now_ms));
}

void pf_hold_forget(struct pf_state *state, const struct pf_hold_ref *ref)
{
	_Atomic uint64_t *slot = ref_slot(state, ref);
	uint64_t expected = still_ours(slot, ref);

	if (expected)
		atomic_compare_exchange_strong(slot, &expected, 0);
}
