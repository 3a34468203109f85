/* Each algorithm's candidate sequence, as pure functions both backends
 * drive: the shim's pf_algorithm_pick (core/algorithm.c) with a loop,
 * the BPF programs with bpf_loop.  A driver fills a struct pf_core_walk
 * from the app's state, then for k = 0 .. pf_core_tries() - 1 draws a
 * random number below pf_core_draw_bound(w, k) when that is not 0, asks
 * pf_core_candidate(w, k, draw) for the port and tries it.
 *
 *	struct pf_core_walk w;
 *	pf_core_walk_init(&w, algorithm, lo, hi);
 *	pf_core_walk_counter(&w, ...);	(the state's counter, if the
 *					 algorithm has one: pf_core_counter_of)
 *	w.offset = ...;	(the hash algorithms: pf_core_hash_offset)
 *	for (k = 0; k < pf_core_tries(&w); k++) {
 *		bound = pf_core_draw_bound(&w, k);
 *		draw = bound ? uniform(0, bound) : 0;
 *		port = pf_core_candidate(&w, k, draw);
 *		... try port; stop when taken ...
 *	}
 *	then the state's counter advances by pf_core_counter_advance(&w,
 *	tries made): sequential, hash, double-hash once per try (table[index]
 *	too: RFC 6056 §3.3.4), random-increments by each try's step.
 *
 * Nothing in the walk changes from one try to the next but what the
 * draws set: a BPF verifier that checks the bpf_loop callback until its
 * state converges meets no counter that counts.
 *
 * The RFC's loops give up after num_ephemeral tries; where such a loop
 * may have skipped a port (random draws), a full walk of the range
 * follows, so that no algorithm reports exhaustion while a port is free.
 * Every port lies in [lo, hi]. */
#ifndef PORTFENCE_CORE_SEQUENCE_H
#define PORTFENCE_CORE_SEQUENCE_H

#include "core/constants.h"

struct pf_core_walk {
	__u32 algorithm;	/* PF_CORE_ALGO_* */
	__u32 lo, num;		/* range_lo and the range's size (1..65535) */
	/* The counter the algorithm advances, its value when the walk
	 * starts: sequential_next, hash_next (§3.3.3's next_ephemeral),
	 * table[index] (§3.3.4), increments_next (§3.3.5's next_ephemeral). */
	__u32 counter;
	__u32 offset;		/* §3.3.3/§3.3.4: F() % num */
	__u32 n;		/* §3.3.5's N */
	/* Set from the draws as the walk goes. */
	__u32 next;		/* §3.3.5: next_ephemeral after the last try */
	__u32 start;		/* §3.3.1's first port, or a full walk's start */
	__u32 stride;		/* §3.3.1: the step after the first port */
};

/* Which of the app's counters an algorithm advances. */
#define PF_CORE_COUNTER_NONE 0
#define PF_CORE_COUNTER_SEQUENTIAL 1	/* sequential_next */
#define PF_CORE_COUNTER_HASH 2		/* hash_next */
#define PF_CORE_COUNTER_TABLE 3		/* table[G() % PF_CORE_DH_TABLE_LEN] */
#define PF_CORE_COUNTER_INCREMENTS 4	/* increments_next */

static __always_inline __u32 pf_core_counter_of(__u32 algorithm)
{
	switch (algorithm) {
	case PF_CORE_ALGO_SEQUENTIAL:
		return PF_CORE_COUNTER_SEQUENTIAL;
	case PF_CORE_ALGO_HASH:
		return PF_CORE_COUNTER_HASH;
	case PF_CORE_ALGO_DOUBLE_HASH:
		return PF_CORE_COUNTER_TABLE;
	case PF_CORE_ALGO_RANDOM_INCREMENTS:
		return PF_CORE_COUNTER_INCREMENTS;
	default:
		return PF_CORE_COUNTER_NONE;
	}
}

/* Whether the algorithm hashes the flow: F() for the offset (§3.3.3,
 * §3.3.4), G() for table[]'s index (§3.3.4). */
static __always_inline int pf_core_hashes_flow(__u32 algorithm)
{
	return algorithm == PF_CORE_ALGO_HASH || algorithm == PF_CORE_ALGO_DOUBLE_HASH;
}

/* The counter's value when the walk starts. */
static __always_inline void pf_core_walk_counter(struct pf_core_walk *w, __u32 value)
{
	w->counter = value;
	w->next = value;
}

/* Algorithm 5's N: the RFC's 500, but below num_ephemeral, since a step
 * of the range's size or more would wrap it. */
static __always_inline __u32 pf_core_increments_n(__u32 num)
{
	__u32 n = num > 1 ? num - 1 : 1;
	return n < PF_CORE_INCREMENTS_N ? n : PF_CORE_INCREMENTS_N;
}

static __always_inline void pf_core_walk_init(struct pf_core_walk *w, __u32 algorithm,
					      __u32 lo, __u32 hi)
{
	w->algorithm = algorithm;
	w->lo = lo;
	w->num = hi >= lo ? hi - lo + 1 : 0;
	w->counter = 0;
	w->next = 0;
	w->offset = 0;
	w->n = pf_core_increments_n(w->num);
	w->start = 0;
	w->stride = 1;
}

/* How many candidates the walk has: the RFC loop's num_ephemeral, and a
 * full walk after it where the loop draws at random. */
static __always_inline __u32 pf_core_tries(const struct pf_core_walk *w)
{
	switch (w->algorithm) {
	case PF_CORE_ALGO_RANDOM_REDRAW:
	case PF_CORE_ALGO_RANDOM_INCREMENTS:
		return 2 * w->num;
	default:
		return w->num;
	}
}

/* Euclid on 16-bit numbers ends within 24 steps. */
static __always_inline int pf_core_coprime(__u32 a, __u32 b)
{
	for (int i = 0; i < 32 && b; i++) {
		__u32 t = a % b;
		a = b;
		b = t;
	}
	return a == 1;
}

/* In a BPF program, the stride's search is a global function: the
 * verifier checks it once on its own, rather than each of its exits
 * again along every path that follows (a program that inlines it inside
 * its try callback exceeds the verifier's budget). */
#ifdef __bpf__
#define PF_CORE_VERIFIED_ONCE __attribute__((noinline))
#else
#define PF_CORE_VERIFIED_ONCE static __always_inline
#endif

/* §3.3.1's walk after its first port: a stride prime to num visits every
 * port once.  draw is below num - 1; the stride is the first number prime
 * to num from 1 + draw on, wrapping to 1 (prime to all).  A run of numbers
 * that share a factor with num <= 65535 is shorter than 22 (Jacobsthal's
 * function of 2*3*5*7*11*13), so 32 steps always find it. */
PF_CORE_VERIFIED_ONCE __u32 pf_core_coprime_stride(__u32 draw, __u32 num)
{
	__u32 stride = 1 + draw;

	if (num < 3)
		return 1;
	for (int i = 0; i < 32; i++) {
		if (pf_core_coprime(stride, num))
			return stride;
		stride = stride % (num - 1) + 1;
	}
	return 1;
}

/* The bound of the random draw try k needs, or 0 when it needs none. */
static __always_inline __u32 pf_core_draw_bound(const struct pf_core_walk *w, __u32 k)
{
	switch (w->algorithm) {
	case PF_CORE_ALGO_SEQUENTIAL:
	case PF_CORE_ALGO_HASH:
	case PF_CORE_ALGO_DOUBLE_HASH:
		return 0;
	case PF_CORE_ALGO_RANDOM:
		return k == 0 ? w->num : k == 1 ? w->num - 1 : 0;
	case PF_CORE_ALGO_RANDOM_REDRAW:
		return k <= w->num ? w->num : 0;
	case PF_CORE_ALGO_RANDOM_INCREMENTS:
		return k < w->num ? w->n : k == w->num ? w->num : 0;
	default:
		return k == 0 ? w->num : 0;
	}
}

/* How far try k's draw moves the counter. */
static __always_inline __u32 pf_core_counter_step(const struct pf_core_walk *w, __u32 draw)
{
	return w->algorithm == PF_CORE_ALGO_RANDOM_INCREMENTS ? draw + 1 : 1;
}

/* The candidate for a counter's value: sequential, hash and double-hash
 * at the value the try takes, random-increments at the value after its
 * step.  The shim's walk, which takes each value from the shared state
 * with an atomic add, calls this directly. */
static __always_inline __u32 pf_core_counter_port(const struct pf_core_walk *w, __u32 value)
{
	__u32 num = w->num ? w->num : 1;

	if (w->algorithm == PF_CORE_ALGO_RANDOM_INCREMENTS)
		return w->lo + value % num;
	return w->lo + (value + w->offset) % num;
}

/* How far a walk of tries tries moved its counter. */
static __always_inline __u32 pf_core_counter_advance(const struct pf_core_walk *w, __u32 tries)
{
	switch (pf_core_counter_of(w->algorithm)) {
	case PF_CORE_COUNTER_NONE:
		return 0;
	case PF_CORE_COUNTER_INCREMENTS:
		return w->next - w->counter;
	default:
		return tries < w->num ? tries : w->num;
	}
}

/* A full walk of the range from start, j-th port. */
static __always_inline __u32 pf_core_full_walk_port(__u32 lo, __u32 num, __u32 start, __u32 j)
{
	return lo + (start + j) % num;
}

/* The k-th candidate (k < pf_core_tries(w)), draw below
 * pf_core_draw_bound(w, k). */
static __always_inline __u32 pf_core_candidate(struct pf_core_walk *w, __u32 k, __u32 draw)
{
	__u32 lo = w->lo, num = w->num ? w->num : 1;

	switch (w->algorithm) {
	case PF_CORE_ALGO_SEQUENTIAL:
	case PF_CORE_ALGO_HASH:
	case PF_CORE_ALGO_DOUBLE_HASH: {
		/* sequential: one counter per app, +1 per try.
		 * §3.3.3, Algorithm 3, Simple Hash-Based Port Selection:
		 *   port = min_ephemeral + (next_ephemeral + offset) % num_ephemeral;
		 *   next_ephemeral++;
		 * §3.3.4, Algorithm 4, Double-Hash Port Selection:
		 *   port = min_ephemeral + (offset + table[index]) % num_ephemeral;
		 *   table[index]++;	(once per try, not once per connect) */
		return pf_core_counter_port(w, w->counter + k);
	}
	case PF_CORE_ALGO_RANDOM:
		/* §3.3.1, Algorithm 1, Simple Port Randomization:
		 *   next_ephemeral = min_ephemeral + random() % num_ephemeral;
		 * then, where the RFC walks on port by port (crossing a whole
		 * cluster of busy ports), a random stride prime to the range. */
		if (k == 0)
			w->start = draw;
		else if (k == 1)
			w->stride = pf_core_coprime_stride(draw, num);
		return lo + (__u32)((w->start + (__u64)k * w->stride) % num);
	case PF_CORE_ALGO_RANDOM_REDRAW:
		/* §3.3.2, Algorithm 2, Another Simple Port Randomization:
		 * a fresh random port per try, num_ephemeral tries. */
		if (k < num)
			return lo + draw;
		if (k == num)
			w->start = draw;
		return pf_core_full_walk_port(lo, num, w->start, k - num);
	case PF_CORE_ALGO_RANDOM_INCREMENTS:
		/* §3.3.5, Algorithm 5, Random-Increments Port Selection:
		 *   next_ephemeral = next_ephemeral + (random() % N) + 1;
		 *   port = min_ephemeral + (next_ephemeral % num_ephemeral); */
		if (k < num) {
			w->next += pf_core_counter_step(w, draw);
			return pf_core_counter_port(w, w->next);
		}
		if (k == num)
			w->start = draw;
		return pf_core_full_walk_port(lo, num, w->start, k - num);
	default:
		/* A model of the kernel's own choice (a random start, then a
		 * walk), for simulations: algorithm kernel sets
		 * IP_LOCAL_PORT_RANGE and the kernel chooses. */
		if (k == 0)
			w->start = draw;
		return pf_core_full_walk_port(lo, num, w->start, k);
	}
}

#endif
