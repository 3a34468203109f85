/* What the app's own processes hold: for each port of the range, a few
 * words naming the 4-tuples (source, port, destination) that a socket of
 * the app has connected, and when it let them go.  It lets a connect know
 * a 4-tuple is busy, or was ours and is clean again, without asking the
 * kernel; what it does not know, the kernel is asked (sockdiag.h). */
#ifndef PORTFENCE_HOLDS_H
#define PORTFENCE_HOLDS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/algorithm.h"
#include "core/clock.h"
#include "core/state.h"

enum pf_hold_verdict {
	PF_HOLD_FREE,		/* ours before, released long enough ago */
	PF_HOLD_UNKNOWN,	/* never seen: only the kernel knows */
	PF_HOLD_RECENT,		/* released within the quarantine */
	PF_HOLD_HELD,		/* a socket holds it */
	PF_HOLD_CLAIMED,	/* a socket is connecting to it now */
};

/* A slot claimed for one socket, released at its close. */
struct pf_hold_ref {
	uint32_t slot;		/* index into state->holds, +1; 0: none */
	uint32_t key;		/* the 4-tuple's key */
	uint64_t seen;		/* the slot's word when judged (reclaim) */
};

/* The key of one 4-tuple on one port: never 0. */
uint32_t pf_hold_key(const uint8_t secret[16], const struct pf_flow *flow, uint16_t port);
/* The same in two steps: the flow's hash (which a caller may remember
 * per destination), then the port's key from it. */
uint64_t pf_hold_flow_hash(const uint8_t secret[16], const struct pf_flow *flow);
static inline uint32_t pf_hold_key_at(uint64_t flow_hash, uint16_t port)
{
	uint64_t z = flow_hash ^ ((uint64_t)port * 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	uint32_t key = (uint32_t)((z ^ (z >> 31)) >> 32);
	return key ? key : 1;
}
/* A coarse monotonic clock in milliseconds, shared by all processes.
 * Inline, as pf_hold_key_at: the connect path's one-line steps
 * (core/hot.h). */
static inline uint32_t pf_hold_now_ms(void)
{
	struct timespec now;

	pf_clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return (uint32_t)((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000);
}

/* The claiming process's pid, kept in each claim so that a claim whose
 * process has died is known gone (pf_hold_claimant), not taken as a
 * connect under way for a second.  The shim points it at its cached
 * pid; unset, claims name no process and their age alone counts. */
typedef uint32_t (*pf_owner_fn)(void);
extern pf_owner_fn pf_hold_owner;

/* No socket of the app holds or is connecting from the port. */
bool pf_hold_port_idle(const struct pf_state *state, uint32_t port_offset, uint32_t now_ms);
/* Judges key on the port.  FREE and UNKNOWN come back claimed (ref is
 * set and the slot marked held), so that no other socket of the app can
 * take the same 4-tuple meanwhile; UNKNOWN may also come back unclaimed
 * (ref->slot 0) when every slot of the port is held. */
enum pf_hold_verdict pf_hold_claim(struct pf_state *state, uint32_t port_offset, uint32_t key,
				   uint32_t now_ms, uint32_t quarantine_ms, struct pf_hold_ref *ref);
/* pf_hold_claim's FREE case alone, for the connect's fast path: claims
 * key when memory knows it clean; else false, nothing changed (a key
 * never seen, which pf_hold_claim would claim for the kernel to judge,
 * is left to it). */
bool pf_hold_claim_clean(struct pf_state *state, uint32_t port_offset, uint32_t key,
			 uint32_t now_ms, uint32_t quarantine_ms, struct pf_hold_ref *ref);
/* How long ago the 4-tuple a claim judged RECENT was released. */
uint32_t pf_hold_seen_age(const struct pf_hold_ref *ref, uint32_t now_ms);
/* The pid of the process whose claim pf_hold_claim judged CLAIMED, 0
 * when it named none.  A pid of another pid namespace names another
 * process: a caller asks only of a pid it can see die. */
uint32_t pf_hold_claimant(const struct pf_hold_ref *ref);
/* Claims a 4-tuple judged HELD, RECENT, or CLAIMED by a process that has
 * died, that the kernel has since shown clean; false when another socket
 * got there first. */
bool pf_hold_reclaim(struct pf_state *state, struct pf_hold_ref *ref);
/* The claimed socket connected (or is connecting): the kernel shows it.
 * Optional: the shim leaves the claim as it is (an old claim counts as
 * held, and pf_hold_release takes either). */
void pf_hold_connected(struct pf_state *state, struct pf_hold_ref *ref);
/* The claim came to nothing: the 4-tuple is clean again. */
void pf_hold_unclaim(struct pf_state *state, struct pf_hold_ref *ref);
/* The claim stands for a socket that is not ours (the kernel says the
 * 4-tuple is taken): it stays held until the kernel says otherwise. */
void pf_hold_disown(struct pf_state *state, struct pf_hold_ref *ref);
/* The socket behind ref closed, but a copy may live on in another
 * process (it was open across a fork): only the kernel knows now. */
void pf_hold_forget(struct pf_state *state, const struct pf_hold_ref *ref);
/* The socket behind ref closed: its 4-tuple enters the quarantine (at
 * now_ms 0: clean at once, as after an abortive close). */
void pf_hold_release(struct pf_state *state, const struct pf_hold_ref *ref, uint32_t now_ms);

#endif
