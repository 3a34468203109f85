/* The port walk of the BPF programs: each algorithm's candidate sequence
 * from core/sequence.h, driven by bpf_loop one try per callback, as
 * core/algorithm.c drives it with a loop.  The counters are the app's
 * (the counters map, continued from its state file), taken try by try
 * with an atomic add as user space takes them: sequential_next, hash_next
 * and table[index] once per try (RFC 6056 §3.3.3, §3.3.4),
 * increments_next by each try's step (§3.3.5).  The flow hashed is the
 * one core/flow.h lays out: local is the address the socket is bound
 * with, else loopback's own for a loopback destination, else the
 * wildcard; remote and local in the socket's own family. */
#ifndef PORTFENCE_BPF_WALK_BPF_H
#define PORTFENCE_BPF_WALK_BPF_H

#include "bpf/dest.bpf.h"
#include "bpf/records.bpf.h"
#include "core/flow.h"
#include "core/sequence.h"
#include "core/siphash.h"

/* The sequence's own state, apart from the walk's pointers: the verifier
 * checks pfb_next_port once, on its own, and forgets what it wrote here
 * (a scalar that counts would keep the bpf_loop callback's states from
 * converging). */
struct pfb_sequence {
	struct pf_core_walk cw;
	__u32 counter;		/* PF_CORE_COUNTER_* */
	__u32 table_index;	/* PF_CORE_COUNTER_TABLE: G() % PF_CORE_DH_TABLE_LEN */
	__u32 previous;		/* the counter value the next try should find */
	__u32 contiguous;	/* every try found it (no other walk took values) */
};

struct pfb_walk {
	struct bpf_sock_addr *ctx;
	struct pfb_dest d;	/* connect: the destination; bind: the address asked for */
	__u32 source[4];	/* connect: the address the socket is bound with, or 0 */
	struct pfb_sequence seq;
	__u32 attempts;
	__u16 port;		/* the port taken, or 0 */
	__u16 time_wait_port;	/* connect: a port whose 4-tuple only TIME_WAIT holds;
				 * bind: the first one it can share */
	__u16 range_full;	/* connect: no port was free a moment ago */
	int udp;
	__u64 cookie;		/* connect: the socket's, for its port's claim (TCP) */
	__u32 checked[4];	/* connect: the one source its 4-tuples are looked up with (the
				 * bound one, else the one the kernel chose last time), or 0 */
};

static __always_inline __u32 pfb_below(__u32 bound)
{
	return bound ? bpf_get_prandom_u32() % bound : 0;
}

/* Try k's random draw below bound, and the app's counters: the
 * differential test (tests/core/sequence_run.bpf.c) runs this walk with
 * its own draws and counters in their place. */
#ifndef PFB_DRAW
#define PFB_DRAW(k, bound) pfb_below(bound)
#endif
#ifndef PFB_COUNTERS
#define PFB_COUNTERS() pfb_counters()
#endif

/* SipHash of a flow key of 6, 10, 18 or 34 bytes (core/flow.h: a bind's
 * or a connect's, IPv4 or IPv6), core/siphash.h's rounds over the key's
 * whole words: the key built in an 8-byte-aligned buffer, zero past its
 * end, so that each word is one load (pf_core_siphash reads it a byte
 * at a time) and the tail word is the padded last one.  The secret's
 * words (k0, k1) come in as numbers.  A global function, verified once
 * on its own, each length a constant; its memory argument is a sized
 * struct, as a global function's must be. */
struct pfb_flow {
	union {
		__u64 words[(PF_CORE_FLOW_MAX + 7) / 8];	/* first: {} zeroes all of them */
		__u8 bytes[PF_CORE_FLOW_MAX];
	};
};

static __always_inline __u64 pfb_le64(__u64 word)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return word;
#else
	return __builtin_bswap64(word);
#endif
}

/* A 16-byte secret's words, little-endian, from 4-byte-aligned memory
 * (pf_bpf_config's keys). */
static __always_inline __u64 pfb_key_word(const __u8 *key, int second)
{
	const __u32 *half = (const __u32 *)key + 2 * second;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (__u64)half[0] | (__u64)half[1] << 32;
#else
	return (__u64)__builtin_bswap32(half[0]) | (__u64)__builtin_bswap32(half[1]) << 32;
#endif
}

static __always_inline __u64 pfb_siphash_words(__u64 k0, __u64 k1, const struct pfb_flow *in, __u32 len)
{
	struct pf_core_sipstate s = pf_core_sipinit(k0, k1);
	__u32 whole = len / 8;

	for (__u32 i = 0; i < whole; i++)
		pf_core_sipcompress(&s, pfb_le64(in->words[i]));
	return pf_core_sipfinish(&s, (__u64)len << 56 | pfb_le64(in->words[whole]));
}

__noinline __u64 pfb_siphash(__u64 k0, __u64 k1, const struct pfb_flow *in, __u32 len)
{
	if (!in)
		return 0;
	switch (len) {
	case 6:
		return pfb_siphash_words(k0, k1, in, 6);
	case 10:
		return pfb_siphash_words(k0, k1, in, 10);
	case 18:
		return pfb_siphash_words(k0, k1, in, 18);
	default:
		return pfb_siphash_words(k0, k1, in, 34);
	}
}

/* The flow key of the walk (core/flow.h), in the socket's own family: an
 * AF_INET6 socket's v4-mapped destination is ::ffff:a.b.c.d, its local
 * address ::ffff:a.b.c.d or ::.  bind: the address alone, port 0. */
static __always_inline __u32 pfb_flow_key(const struct pfb_walk *w, __u8 out[PF_CORE_FLOW_MAX], int bind)
{
	const struct pfb_dest *d = &w->d;
	__u32 local[4] = {0, 0, 0, 0}, remote[4] = {0, 0, 0, 0};

	if (d->sock_family == AF_INET) {
		local[0] = bind ? d->addr[0] : w->source[0];
		if (bind)
			return pf_core_flow_key(out, (const __u8 *)local, 4, (const __u8 *)remote, 0, 0);
		remote[0] = d->addr[0];
		return pf_core_flow_key(out, (const __u8 *)local, 4, (const __u8 *)remote, 4, d->port);
	}
	const __u32 *mine = bind ? d->addr : w->source;
	if (d->family == AF_INET) {
		if (mine[0]) {
			local[2] = bpf_htonl(0xffff);
			local[3] = mine[0];
		}
		remote[2] = bpf_htonl(0xffff);
		remote[3] = d->addr[0];
	} else {
		for (int i = 0; i < 4; i++) {
			local[i] = mine[i];
			remote[i] = d->addr[i];
		}
	}
	if (bind)
		return pf_core_flow_key(out, (const __u8 *)local, 16, (const __u8 *)remote, 0, 0);
	return pf_core_flow_key(out, (const __u8 *)local, 16, (const __u8 *)remote, 16, d->port);
}

/* Sets the walk up for the app's algorithm and range: the hash
 * algorithms' offset F() and table index G(), and the counter it
 * advances. */
static __always_inline void pfb_walk_start(struct pfb_walk *w, const struct pf_bpf_config *cfg, int bind)
{
	struct pfb_sequence *s = &w->seq;

	pf_core_walk_init(&s->cw, cfg->algorithm, cfg->range_lo, cfg->range_hi);
	s->counter = pf_core_counter_of(cfg->algorithm);
	s->contiguous = 1;
	if (pf_core_hashes_flow(cfg->algorithm)) {
		struct pfb_flow flow = {};
		__u32 len = pfb_flow_key(w, flow.bytes, bind);
		s->cw.offset = pf_core_hash_offset(
			pfb_siphash(pfb_key_word(cfg->hash_key, 0), pfb_key_word(cfg->hash_key, 1), &flow, len),
			s->cw.num);
		if (s->counter == PF_CORE_COUNTER_TABLE)
			s->table_index = pf_core_dh_index(pfb_siphash(pfb_key_word(cfg->index_key, 0),
								      pfb_key_word(cfg->index_key, 1), &flow, len));
	}
}

/* The app's counter this walk advances. */
static __always_inline __u32 *pfb_counter(const struct pfb_sequence *w)
{
	struct pf_bpf_counters *c = PFB_COUNTERS();

	if (!c)
		return 0;
	switch (w->counter) {
	case PF_CORE_COUNTER_SEQUENTIAL:
		return &c->sequential_next;
	case PF_CORE_COUNTER_HASH:
		return &c->hash_next;
	case PF_CORE_COUNTER_TABLE:
		return &c->table[w->table_index & (PF_CORE_DH_TABLE_LEN - 1)];
	default:
		return &c->increments_next;
	}
}

/* Try k's port, or 0 when the walk is over.  A counter algorithm takes
 * its value with an atomic add (core/algorithm.c's walk_counter does the
 * same); where another walk took values in between, or Algorithm 5's
 * draws stepped over ports, a full walk of the range follows, so that no
 * algorithm reports exhaustion while a port is free.  A global function:
 * verified once, whatever calls it. */
__noinline __u32 pfb_next_port(struct pfb_sequence *w, __u32 k)
{
	if (!w)
		return 0;
	struct pf_core_walk *cw = &w->cw;
	__u32 num = cw->num;

	if (w->counter == PF_CORE_COUNTER_NONE) {
		if (k >= pf_core_tries(cw))
			return 0;
		return pf_core_candidate(cw, k, PFB_DRAW(k, pf_core_draw_bound(cw, k)));
	}
	if (k < num) {
		__u32 *counter = pfb_counter(w);
		if (!counter)
			return 0;
		__u32 step = pf_core_counter_step(cw, PFB_DRAW(k, pf_core_draw_bound(cw, k)));
		__u32 value = __sync_fetch_and_add(counter, step);
		if (k && (value != w->previous || value == 0))
			w->contiguous = 0;
		w->previous = value + step;
		if (w->counter == PF_CORE_COUNTER_INCREMENTS)
			value += step;
		return pf_core_counter_port(cw, value);
	}
	if (k == num) {
		if (w->contiguous && pf_core_tries(cw) == num)
			return 0;
		cw->start = PFB_DRAW(k, num);
	}
	if (k >= 2 * num)
		return 0;
	return pf_core_full_walk_port(cw->lo, num, cw->start, k - num);
}

/* How many tries a walk may take: every algorithm's sequence and the
 * full walk after it fit in two passes of the range. */
static __always_inline __u32 pfb_max_tries(const struct pfb_walk *w)
{
	return 2 * w->seq.cw.num;
}

/* ---- a connect's walk: the 4-tuple, then bpf_bind ---------------- */

/* What holds a 4-tuple, the better for a connect first: nothing; a
 * TIME_WAIT that a bound socket reuses at once (the kernel's
 * tcp_twsk_unique, with timestamps); a live socket, a TIME_WAIT without
 * timestamps, or a closed socket still in FIN_WAIT2 (kept by the kernel
 * as a timewait socket too), which no connect may take.  A FIN_WAIT2's
 * peer has not closed: a SYN there meets the old connection, resets it,
 * and is answered 10 ms to a second later; the shim never takes one
 * either (it waits up to 10 ms for it to reach TIME_WAIT, which a hook
 * cannot do, then fails as this does with EADDRNOTAVAIL). */
#define PFB_TUPLE_FREE 0
#define PFB_TUPLE_TIME_WAIT 1
#define PFB_TUPLE_HELD 2

/* The timewait socket's own fields, read through BTF (CO-RE). */
struct inet_timewait_sock {
	unsigned char tw_substate;
} __attribute__((preserve_access_index));
struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
	int tw_ts_recent_stamp;
} __attribute__((preserve_access_index));

#define PFB_TCP_FIN_WAIT2 5

static __always_inline int pfb_timewait_use(struct bpf_sock *sk)
{
	struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(sk);

	if (!tw)
		return PFB_TUPLE_HELD;
	if (tw->tw_sk.tw_substate == PFB_TCP_FIN_WAIT2)
		return PFB_TUPLE_HELD;
	return tw->tw_ts_recent_stamp ? PFB_TUPLE_TIME_WAIT : PFB_TUPLE_HELD;
}

/* A 4-tuple as the kernel's socket lookup takes it; a struct, as a
 * global function's memory argument must be. */
struct pfb_tuple {
	struct bpf_sock_tuple t;
};

/* What holds the 4-tuple (seen from the destination's side): PFB_TUPLE_*.
 * A global function, verified once on its own: the walk's states then
 * meet whatever it returns, and the connect programs stay far below the
 * verifier's million instructions. */
__noinline int pfb_tuple_lookup(struct bpf_sock_addr *ctx, struct pfb_tuple *tuple, __u32 v6)
{
	if (!tuple)
		return PFB_TUPLE_HELD;
	struct bpf_sock *sk = v6 ? bpf_skc_lookup_tcp(ctx, &tuple->t, sizeof(tuple->t.ipv6), BPF_F_CURRENT_NETNS, 0)
				 : bpf_skc_lookup_tcp(ctx, &tuple->t, sizeof(tuple->t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return PFB_TUPLE_FREE;
	int held = sk->state == BPF_TCP_TIME_WAIT ? pfb_timewait_use(sk) : PFB_TUPLE_HELD;
	bpf_sk_release(sk);
	return held;
}

/* What holds (source, port) -> destination: PFB_TUPLE_*. */
static __always_inline int pfb_tuple_holder(struct pfb_walk *w, const __u32 *source, __u16 port)
{
	struct pfb_tuple tuple = {};

	if (w->d.family == AF_INET) {
		tuple.t.ipv4.saddr = w->d.addr[0];
		tuple.t.ipv4.daddr = source[0];
		tuple.t.ipv4.sport = bpf_htons(w->d.port);
		tuple.t.ipv4.dport = bpf_htons(port);
		return pfb_tuple_lookup(w->ctx, &tuple, 0);
	}
	for (int i = 0; i < 4; i++) {
		tuple.t.ipv6.saddr[i] = w->d.addr[i];
		tuple.t.ipv6.daddr[i] = source[i];
	}
	tuple.t.ipv6.sport = bpf_htons(w->d.port);
	tuple.t.ipv6.dport = bpf_htons(port);
	return pfb_tuple_lookup(w->ctx, &tuple, 1);
}

struct pfb_host_check {
	struct pfb_walk *w;
	__u16 port;
	int held;
};

static long pfb_check_local_addr(__u32 index, void *arg)
{
	struct pfb_host_check *check = arg;
	__u32 key = index;
	struct pf_bpf_local_addr *local = bpf_map_lookup_elem(&local_addrs, &key);

	if (!local || local->family == 0)
		return 1;
	if (local->family != check->w->d.family)
		return 0;
	__u32 addr[4] = {local->addr[0], local->addr[1], local->addr[2], local->addr[3]};
	int held = pfb_tuple_holder(check->w, addr, check->port);
	if (held > check->held)
		check->held = held;
	return check->held == PFB_TUPLE_HELD;
}

/* The sources the kernel may choose for this destination: the bound
 * address when there is one (pfb_loopback_source gives a loopback
 * destination 127.0.0.1 or ::1), else the source the kernel chose for
 * the last connect toward it (w->checked, pfb_learned_source); else the
 * destination itself (when it is one of the host's addresses, even one
 * added since the map was filled) and the host's addresses as the
 * loader found them. */
static __always_inline int pfb_tuple_busy(struct pfb_walk *w, __u16 port)
{
	if (!pfb_is_zero(w->checked))
		return pfb_tuple_holder(w, w->checked, port);
	int held = pfb_tuple_holder(w, w->d.addr, port);
	if (held == PFB_TUPLE_HELD)
		return held;
	struct pfb_host_check check = {.w = w, .port = port, .held = held};
	bpf_loop(PF_BPF_LOCAL_ADDRS, pfb_check_local_addr, &check, 0);
	return check.held;
}

static __always_inline int pfb_bind_port(struct pfb_walk *w, __u16 port)
{
	struct bpf_sock_addr *ctx = w->ctx;

	if (ctx->family == AF_INET) {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = bpf_htons(port)};
		sa.sin_addr.s_addr = w->source[0];
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = bpf_htons(port)};
	if (w->d.family == AF_INET) {
		/* A v4-mapped connect: the IPv4 source, mapped (::ffff:a.b.c.d),
		 * or the wildcard. */
		if (w->source[0]) {
			sa6.sin6_addr.s6_addr32[2] = bpf_htonl(0xffff);
			sa6.sin6_addr.s6_addr32[3] = w->source[0];
		}
	} else {
		__builtin_memcpy(&sa6.sin6_addr, w->source, 16);
	}
	return bpf_bind(ctx, (struct sockaddr *)&sa6, sizeof(sa6));
}

/* Binds a connect's port under the claim pfb_claim_tuple took: 0 or
 * bpf_bind's negative errno.  The claim stays with a port taken
 * (w->port) until sockops or the release hook drops it; a bind refused
 * drops it now. */
static __always_inline int pfb_bind_claimed(struct pfb_walk *w, __u16 port)
{
	int rc = pfb_bind_port(w, port);
	if (rc == 0)
		w->port = port;
	else if (!w->udp)
		pfb_unclaim_port(port, w->cookie);
	return rc;
}

/* A claim another connect left for a second or more (its connect
 * failed after the hook, the socket still open, or an MPTCP subflow's,
 * which no release hook sees) was taken over: the record it kept in the
 * port's slot goes out as the failure it was. */
static __always_inline void pfb_lapsed_claim(__u16 port)
{
	struct pfb_port_slot *slot = pfb_port_slot(pfb_config(), port);

	if (slot)
		pfb_send_unfinished(&slot->kept, &slot->has_kept);
}

/* Claims a connect's port (TCP), then looks at its 4-tuple: PFB_TUPLE_*,
 * the claim kept unless PFB_TUPLE_HELD.  The claim comes first: a
 * socket that holds it may be about to hash its 4-tuple, and drops it
 * only once hashed (sockops), so a 4-tuple seen free under the claim
 * stays free.  Looked at before the claim, it could be hashed in
 * between, and the kernel would refuse the connect the walk had bound
 * (EADDRNOTAVAIL). */
static __always_inline int pfb_claim_tuple(struct pfb_walk *w, __u16 port)
{
	if (w->udp)
		return PFB_TUPLE_FREE;	/* UDP: the bind itself is the check */
	int claim = pfb_claim_port(port, w->cookie);
	if (claim == PFB_CLAIM_REFUSED)
		return PFB_TUPLE_HELD;	/* another connect's walk has it */
	if (claim == PFB_CLAIM_TAKEN_OVER)
		pfb_lapsed_claim(port);
	int held = pfb_tuple_busy(w, port);
	if (held == PFB_TUPLE_HELD)
		pfb_unclaim_port(port, w->cookie);
	return held;
}

static long pfb_try_connect_port(__u32 k, void *arg)
{
	struct pfb_walk *w = arg;
	__u16 port = (__u16)pfb_next_port(&w->seq, k);

	if (!port)
		return 1;
	w->attempts++;
	int held = pfb_claim_tuple(w, port);
	if (held == PFB_TUPLE_HELD)
		return 0;
	if (held == PFB_TUPLE_TIME_WAIT && !w->range_full) {
		/* A free port may follow; this one is the fallback.  When no
		 * port was free a moment ago, the first TIME_WAIT will do. */
		if (!w->time_wait_port)
			w->time_wait_port = port;
		pfb_unclaim_port(port, w->cookie);
		return 0;
	}
	return pfb_bind_claimed(w, port) == 0;
}

/* When a connect's walk last found no port free toward a destination
 * (bpf_ktime_get_coarse_ns; slots by a hash of the destination): for
 * PFB_FULL_FOR_NS after it, a walk toward it takes the first port whose
 * 4-tuple only TIME_WAIT holds rather than visit the whole range again;
 * then one walk looks at the whole range again, in case ports came free
 * (a TIME_WAIT lasts 60 s).  A hint only: a slot another destination
 * shares costs at most a TIME_WAIT reused where a free port was.  The
 * loader pins it with the app's other shared maps: a reload keeps it. */
#define PFB_FULL_SLOTS 1024
#define PFB_FULL_FOR_NS 1000000000ull
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PFB_FULL_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} range_full SEC(".maps");

static __always_inline __u64 *pfb_range_full_slot(const struct pfb_dest *d)
{
	__u32 mix = (d->addr[0] ^ d->addr[1] ^ d->addr[2] ^ d->addr[3] ^ d->port) * 0x9e3779b1u;
	__u32 slot = mix >> 22;	/* PFB_FULL_SLOTS: 10 bits */

	return bpf_map_lookup_elem(&range_full, &slot);
}

/* A connect's walk, each candidate checked and bound in turn; then a
 * port whose 4-tuple only TIME_WAIT holds (SO_REUSEADDR reuses it at
 * once); w->port is 0 when none.  Once
 * a walk has found no port free, the walks toward that destination take
 * the first TIME_WAIT they meet for a while. */
static __always_inline void pfb_walk_connect(struct pfb_walk *w, const struct pf_bpf_config *cfg)
{
	__u64 *full = w->udp ? 0 : pfb_range_full_slot(&w->d), now = bpf_ktime_get_coarse_ns();

	w->range_full = full && *full && now - *full < PFB_FULL_FOR_NS;
	pfb_walk_start(w, cfg, 0);
	bpf_loop(pfb_max_tries(w), pfb_try_connect_port, w, 0);
	if (w->port)
		return;
	if (full && !w->range_full && w->time_wait_port)
		*full = now;
	if (w->time_wait_port && pfb_claim_tuple(w, w->time_wait_port) != PFB_TUPLE_HELD)
		pfb_bind_claimed(w, w->time_wait_port);
}

/* ---- the source the kernel chose, learned ------------------------ */

/* The source address the kernel chose for the last wildcard-bound
 * connect of the app toward a destination, in the socket's network
 * namespace (sockops learns it at TCP_CONNECT_CB; slots by a hash of
 * the two).  The host's addresses the loader put in local_addrs are the
 * loader's namespace's, as they were at the start: a container's own
 * namespace, or an address that came up later, has others, and a
 * 4-tuple held from one of those was missed (the kernel then refused
 * the connect, EADDRNOTAVAIL).  A learned source is the one the walk
 * checks, alone: the kernel's choice follows the route, and every
 * connect learns it again.  After a route change, the first connect
 * checks the old source; the new one holds no 4-tuple of the app toward
 * the destination yet, unless the route came back to it while its
 * connections still stood.  tag guards against a slot read while
 * another CPU writes it. */
#define PFB_LEARNED_SLOTS 1024
struct pfb_learned_source {
	__u64 netns;
	__u32 dest[4];	/* as struct pfb_dest has it: IPv4 (v4-mapped too) in [0] */
	__u32 source[4];
	__u32 family;
	__u32 tag;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PFB_LEARNED_SLOTS);
	__type(key, __u32);
	__type(value, struct pfb_learned_source);
} learned_sources SEC(".maps");

static __always_inline __u32 pfb_learned_mix(__u64 netns, __u32 family, const __u32 *dest)
{
	return ((__u32)netns ^ (__u32)(netns >> 32) ^ family ^ dest[0] ^ dest[1] ^ dest[2] ^ dest[3]) * 0x9e3779b1u;
}

static __always_inline __u32 pfb_learned_tag(__u64 netns, __u32 family, const __u32 *dest, const __u32 *source)
{
	return pfb_learned_mix(netns, family, dest) ^ ((source[0] ^ source[1] ^ source[2] ^ source[3]) * 0x85ebca6bu);
}

static __always_inline struct pfb_learned_source *pfb_learned_slot(__u64 netns, __u32 family, const __u32 *dest)
{
	__u32 slot = pfb_learned_mix(netns, family, dest) >> 22;	/* PFB_LEARNED_SLOTS: 10 bits */
	return bpf_map_lookup_elem(&learned_sources, &slot);
}

/* An IPv6 link-local destination (fe80::/10) names no one place: the
 * same address on two links has two sources, and the slot has no room
 * for the link.  Its walk checks every source, as with none learned. */
static __always_inline int pfb_link_local(__u32 family, const __u32 *dest)
{
	return family == AF_INET6 && (bpf_ntohl(dest[0]) & 0xffc00000) == 0xfe800000;
}

/* The walk's learned source toward its destination, in w->checked, if
 * there is one. */
static __always_inline void pfb_learned_source(struct pfb_walk *w, __u64 netns)
{
	const struct pfb_dest *d = &w->d;
	__u32 source[4];

	if (pfb_link_local(d->family, d->addr))
		return;
	struct pfb_learned_source *l = pfb_learned_slot(netns, d->family, d->addr);
	if (!l || l->netns != netns || l->family != d->family)
		return;
	for (int i = 0; i < 4; i++) {
		if (l->dest[i] != d->addr[i])
			return;
		source[i] = l->source[i];
	}
	if (l->tag != pfb_learned_tag(netns, d->family, d->addr, source))
		return;
	for (int i = 0; i < 4; i++)
		w->checked[i] = source[i];
}

/* Learns the source the kernel chose for a connect toward dest (family,
 * as struct pfb_dest has it). */
static __always_inline void pfb_learn_source(__u64 netns, __u32 family, const __u32 *dest, const __u32 *source)
{
	if (pfb_link_local(family, dest))
		return;
	struct pfb_learned_source *l = pfb_learned_slot(netns, family, dest);
	if (!l)
		return;
	l->tag = 0;	/* torn while written: a reader sees no match */
	l->netns = netns;
	l->family = family;
	for (int i = 0; i < 4; i++) {
		l->dest[i] = dest[i];
		l->source[i] = source[i];
	}
	l->tag = pfb_learned_tag(netns, family, dest, source);
}

/* ---- a bind(addr, 0)'s walk: a port no socket of the app holds ---- */

/* Whether a listener holds port on the address asked for (a wildcard
 * listener holds it on every address): a TCP bind cannot share its port. */
static __always_inline int pfb_listener_holds(struct pfb_walk *w, __u16 port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 size;

	if (w->d.family == AF_INET) {
		tuple.ipv4.daddr = w->d.addr[0];
		tuple.ipv4.dport = bpf_htons(port);
		size = sizeof(tuple.ipv4);
	} else {
		for (int i = 0; i < 4; i++)
			tuple.ipv6.daddr[i] = w->d.addr[i];
		tuple.ipv6.dport = bpf_htons(port);
		size = sizeof(tuple.ipv6);
	}
	sk = bpf_skc_lookup_tcp(w->ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int listening = sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return listening;
}

static long pfb_try_unused_port(__u32 k, void *arg)
{
	struct pfb_walk *w = arg;
	__u16 port = (__u16)pfb_next_port(&w->seq, k);

	if (!port)
		return 1;
	__u32 index = (__u32)port - w->seq.cw.lo, *users = bpf_map_lookup_elem(&port_users, &index);
	w->attempts++;
	if (users && *users) {
		/* TCP: the first candidate another socket holds without
		 * listening on it can be shared (SO_REUSEADDR). */
		if (!w->udp && !w->time_wait_port && !pfb_listener_holds(w, port))
			w->time_wait_port = port;
		return 0;
	}
	w->port = port;
	return 1;
}

/* The bind hook cannot bind and retry: it takes the first candidate no
 * socket of the app holds, and the kernel's bind has the last word. */
static __always_inline void pfb_walk_bind(struct pfb_walk *w, const struct pf_bpf_config *cfg)
{
	pfb_walk_start(w, cfg, 1);
	bpf_loop(pfb_max_tries(w), pfb_try_unused_port, w, 0);
}

/* ---- the source a connect is bound with ------------------------- */

/* A loopback destination is reached from loopback's own address (the
 * local route's preferred source): binding it rather than the wildcard
 * spares the connect a re-hash, and the 4-tuple check a second lookup.
 * Other destinations keep the wildcard: their source is the route's. */
/* Loopback's address of family, written over a zero address. */
static __always_inline void pfb_loopback_address(__u32 family, __u32 *addr)
{
	if (family == AF_INET)
		addr[0] = bpf_htonl(0x7f000001);
	else
		addr[3] = bpf_htonl(1);
}

static __always_inline void pfb_loopback_source(const struct pfb_dest *d, __u32 *source)
{
	/* The unspecified address is loopback's, where the kernel sends it. */
	if (pfb_is_zero(d->addr)) {
		pfb_loopback_address(d->family, source);
		return;
	}
	if (d->family == AF_INET && (bpf_ntohl(d->addr[0]) >> 24) == 127)
		source[0] = bpf_htonl(0x7f000001);
	else if (d->family == AF_INET6 && !(d->addr[0] | d->addr[1] | d->addr[2]) &&
		 d->addr[3] == bpf_htonl(1))
		source[3] = bpf_htonl(1);
}

/* The address the socket is bound to, as the destination's family sees
 * it (an AF_INET6 socket's v4-mapped address as IPv4), or zero. */
static __always_inline void pfb_bound_source(struct bpf_sock_addr *ctx, const struct pfb_dest *d, __u32 *source)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	/* Every field read whatever the family, each at its own constant
	 * offset: the verifier refuses arithmetic on a sock pointer, which
	 * a read under a branch can compile to. */
	__u32 bound4 = sk->src_ip4;
	__u32 bound[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	asm volatile("" : "+r"(bound4));
	if (ctx->family == AF_INET) {
		source[0] = bound4;
	} else {
		if (d->family == AF_INET6)
			__builtin_memcpy(source, bound, 16);
		else if (pfb_is_v4_mapped(bound))
			source[0] = bound[3];
	}
}

/* An MPTCP subflow (the kernel's own TCP socket under an MPTCP one):
 * no release hook runs for it, so its port is counted on its MPTCP
 * socket (pfb_count_on_mptcp). */
static __always_inline int pfb_mptcp_subflow(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	return sk && bpf_skc_to_mptcp_sock(sk) != 0;
}

/* A kernel socket's own fields, read through BTF (CO-RE): an MPTCP
 * socket's cookie (the sock_create hook made it when the program created
 * the socket), a TCP socket's port at its release. */
struct sock_common___pfb {
	unsigned short skc_num;	/* the local port, host order */
	struct {
		__s64 counter;
	} skc_cookie;
} __attribute__((preserve_access_index));
struct sock___pfb {
	struct sock_common___pfb __sk_common;
} __attribute__((preserve_access_index));

/* A subflow took port: it is counted in port_users in the state of the
 * MPTCP socket (by its cookie), whose release hook runs when the program
 * closes it, and uncounts it.  One port per MPTCP socket (its first
 * subflow's); a socket made before the programs were attached has no
 * cookie yet and is not counted. */
static __always_inline void pfb_count_on_mptcp(struct bpf_sock_addr *ctx, const struct pf_bpf_config *cfg,
					       __u16 port)
{
	struct bpf_sock *sk = ctx->sk;
	struct sock___pfb *msk = sk ? (struct sock___pfb *)bpf_skc_to_mptcp_sock(sk) : 0;

	if (!msk)
		return;
	__u64 cookie = (__u64)msk->__sk_common.skc_cookie.counter;
	struct pfb_sock_state *st = cookie ? pfb_state_made(cookie) : 0;
	if (!st || (st->flags & PFB_SOCKET_COUNTED))
		return;
	st->flags |= pfb_bound_flags(cfg, port);
}

#endif
