/* The BPF programs' maps and the small facts kept in them.  The loader
 * (loader/) fills config, counters, local_addrs, foreign_ports and the
 * rule tries, and drains records; the other maps are the programs' own
 * memory between hooks.  The map names are the skeleton's: the loader
 * reaches them as skel->maps.NAME. */
#ifndef PORTFENCE_BPF_MAPS_BPF_H
#define PORTFENCE_BPF_MAPS_BPF_H

#include "bpf/portfence_api.h"
#include "bpf/rules_api.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_config);
} config SEC(".maps");

/* The app's counters, continued from its state file (loader/loader.c). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_LOCAL_ADDRS);
	__type(key, __u32);
	__type(value, struct pf_bpf_local_addr);
} local_addrs SEC(".maps");

/* The app's rules; the loader sizes them to the compiled entries. */
#define PFB_RULE_TRIE(name, key_type)                                \
	struct {                                                     \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                 \
		__uint(max_entries, 1);                              \
		__uint(map_flags, BPF_F_NO_PREALLOC);                \
		__type(key, key_type);                               \
		__type(value, struct pf_bpf_port_spans);             \
	} name SEC(".maps")
PFB_RULE_TRIE(deny4, struct pf_bpf_lpm4_key);
PFB_RULE_TRIE(allow4, struct pf_bpf_lpm4_key);
PFB_RULE_TRIE(deny6, struct pf_bpf_lpm6_key);
PFB_RULE_TRIE(allow6, struct pf_bpf_lpm6_key);

/* The records, for user space to drain.  8 MiB holds 87,381 of them
 * (88 bytes and an 8-byte header each): a burst of 50,000 fits whole
 * even while its drainer is held off the CPU. */
#define PFB_RECORD_RING_BYTES (8u << 20)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PFB_RECORD_RING_BYTES);
} records SEC(".maps");

/* Records the ring had no room for.  [PF_BPF_LOSS_LOST] is counted here;
 * [PF_BPF_LOSS_REPORTED] is how many of them user space has written an
 * error record for (each side writes only its own entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_LOSS_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} record_loss SEC(".maps");

/* Assignments and failures, counted as the shim counts them: each
 * assignment, and each call refused for want of a free port. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PF_BPF_OUTCOME_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} outcomes SEC(".maps");

/* A socket's marks (pfb_sock_state.flags): what an explicit bind or our
 * own choice gave a port, and whether an unbound UDP send was already
 * recorded. */
#define PFB_SOCKET_BOUND 1u
#define PFB_SOCKET_UNBOUND_RECORDED 2u
#define PFB_SOCKET_COUNTED 4u	/* its port, in the top 16 bits, is counted in port_users */
#define PFB_SOCKET_MPTCP 8u	/* an MPTCP subflow: no release hook runs for it (its MPTCP socket counts its port) */
#define PFB_SOCKET_KERNEL_PORT 16u	/* UDP: its port is the kernel's, given for an unbound send that was refused */
#define PFB_SOCKET_PORT_SHIFT 16

/* 8192 of the host's latest execs (about 4.3 MiB, preallocated): a
 * record needs its process's entry only until the next drain. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pf_bpf_exe);
} exes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_exe);
} exe_scratch SEC(".maps");

/* How many of the app's sockets are bound to each port of its range
 * (index port - range_lo): bind(port 0) is given a port none of them
 * holds, since the kernel would refuse a shared one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} port_users SEC(".maps");

/* A connect's claim on a port, from its walk's choice until the kernel
 * has hashed the new connection (sockops' TCP_CONNECT_CB), where the
 * walk of any other connect sees it: two walks on two CPUs that both
 * found a 4-tuple free would otherwise bind it both, and the second
 * connect fail (EADDRNOTAVAIL).  One word per port: the claiming socket's
 * cookie (low 44 bits) above the claim's time in 2^30 ns units (about a
 * second; 20 bits).  A claim its socket never cleared (a connect that
 * failed after the hook, with the socket still open) lapses after
 * PFB_CLAIM_UNITS; the socket's release clears it too. */
#define PFB_CLAIM_TIME_BITS 20
#define PFB_CLAIM_TIME_MASK ((1ull << PFB_CLAIM_TIME_BITS) - 1)
#define PFB_CLAIM_UNITS 2
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} connect_claims SEC(".maps");

/* The ports of the other apps' ranges (the loader fills it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_port_bits);
} foreign_ports SEC(".maps");

/* The ports the app may bind explicitly even with explicit_bind = "deny"
 * (bind_allow; the loader fills it, same layout). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_port_bits);
} bind_allow_ports SEC(".maps");

/* A bind as the bind hook answered it, until the kernel's verdict.
 * bind(addr, 0): post_bind says the bind took (bound), and the record
 * goes out then (UDP) or at the connect (TCP); a pick still unbound at
 * the next bind or at close is a bind the kernel refused.  An explicit
 * bind (explicit): its "bind" record goes out at post_bind, and nothing
 * when the kernel refused it. */
struct pfb_bind_pick {
	__u32 attempts;
	__u16 port;
	__u8 bound;
	__u8 explicit_port;
	__u32 addr[4];	/* bound: the address, network order; IPv4 in [0] */
};

/* Each socket's own state between hooks, by socket cookie, in one entry:
 * a connect inserts one entry, sockops finds it, the release hook finds
 * and deletes it (three maps took eight operations).  flags:
 * PFB_SOCKET_*.  pick (has_pick): a bind as the bind hook answered it.
 * kept (has_kept): a TCP record waiting for the final local address,
 * which the kernel chooses after the connect hook (sockops'
 * TCP_CONNECT_CB gives it).  Socket-local storage (SK_STORAGE) was
 * measured slower: it allocates twice per socket and frees through RCU. */
struct pfb_sock_state {
	__u32 flags;
	__u8 has_pick;
	__u8 has_kept;
	__u16 unused;
	struct pfb_bind_pick pick;
	struct pf_bpf_record kept;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pfb_sock_state);
} sock_state SEC(".maps");

/* A plain TCP connect's marks, by its port, in place of a sock_state
 * entry: inserting and deleting one was a quarter of a TIME_WAIT-full
 * connect's program time (docs/performance.md).  Index port - range_lo;
 * the loader sizes the map to the range.
 * - owner: the socket (its cookie) whose count in port_users the slot
 *   holds, until its release hook, which finds the slot by the socket's
 *   port.  A second socket of the app on the port (SO_REUSEADDR toward
 *   another destination) is counted in its sock_state instead.
 * - kept (has_kept): the record of the connect whose claim
 *   (connect_claims) is on the port, until sockops' TCP_CONNECT_CB gives
 *   it the local address.  One connect claims a port at a time, so one
 *   record per port is enough; only the claim's holder touches it. */
struct pfb_port_slot {
	__u64 owner;
	__u8 has_kept;
	__u8 learn;	/* the claim's connect left from the wildcard: sockops learns its source */
	__u8 unused[6];
	struct pf_bpf_record kept;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct pfb_port_slot);
} port_slots SEC(".maps");

/* Binds the bind hook answered that no post_bind has settled yet: the
 * kernel's refusals among them, whose records wait in their sockets'
 * states (pfb_refused_pick).  While there are none, a connect on a
 * socket without a port looks at no state: a plain connect's socket has
 * none, and the lookup would cost it.  A count, not a list: a state the
 * LRU evicts leaves it high, which costs those connects a lookup each,
 * never a record. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} unsettled_binds SEC(".maps");

static __always_inline __s64 *pfb_unsettled_binds(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&unsettled_binds, &zero);
}

static __always_inline void pfb_count_unsettled_binds(__s64 change)
{
	__s64 *count = pfb_unsettled_binds();

	if (count)
		__sync_fetch_and_add(count, change);
}

static __always_inline int pfb_binds_unsettled(void)
{
	__s64 *count = pfb_unsettled_binds();

	return count && *count > 0;
}

/* A new socket's state: nothing yet. */
static const struct pfb_sock_state pfb_no_state;

static __always_inline struct pf_bpf_config *pfb_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct pf_bpf_counters *pfb_counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

/* The state of the socket with this cookie, or 0 when it has none. */
static __always_inline struct pfb_sock_state *pfb_state(__u64 cookie)
{
	return bpf_map_lookup_elem(&sock_state, &cookie);
}

/* The state of the socket with this cookie, made (zeroed) when it has
 * none. */
static __always_inline struct pfb_sock_state *pfb_state_made(__u64 cookie)
{
	struct pfb_sock_state *st = bpf_map_lookup_elem(&sock_state, &cookie);

	if (st)
		return st;
	bpf_map_update_elem(&sock_state, &cookie, &pfb_no_state, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sock_state, &cookie);
}

/* pfb_state_made for a socket that seldom has a state yet (one a
 * connect's walk gives its port): the insert first, which leaves a
 * state there is as it is, then one lookup, not two. */
static __always_inline struct pfb_sock_state *pfb_state_new(__u64 cookie)
{
	bpf_map_update_elem(&sock_state, &cookie, &pfb_no_state, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sock_state, &cookie);
}

/* A bound socket's mark: PFB_SOCKET_BOUND, and when the port is the
 * app's, the port itself, counted in port_users until the socket closes. */
static __always_inline __u32 pfb_bound_flags(const struct pf_bpf_config *cfg, __u32 port)
{
	if (!cfg || port < cfg->range_lo || port > cfg->range_hi)
		return PFB_SOCKET_BOUND;
	__u32 index = port - cfg->range_lo, *users = bpf_map_lookup_elem(&port_users, &index);
	if (!users)
		return PFB_SOCKET_BOUND;
	__sync_fetch_and_add(users, 1);
	return PFB_SOCKET_BOUND | PFB_SOCKET_COUNTED | port << PFB_SOCKET_PORT_SHIFT;
}

/* A counted port is free again. */
static __always_inline void pfb_uncount(const struct pf_bpf_config *cfg, __u32 port)
{
	if (!cfg || port < cfg->range_lo || port > cfg->range_hi)
		return;
	__u32 index = port - cfg->range_lo, *users = bpf_map_lookup_elem(&port_users, &index);
	if (users && *users)
		__sync_fetch_and_add(users, -1);
}

/* The port a socket counted in its state held is free again at its
 * close (its mark keeps the port: a connect that failed may have left
 * the socket without one). */
static __always_inline void pfb_uncount_port(__u32 flags)
{
	if (flags & PFB_SOCKET_COUNTED)
		pfb_uncount(pfb_config(), flags >> PFB_SOCKET_PORT_SHIFT);
}

/* The slot of a port of the app's range, or 0. */
static __always_inline struct pfb_port_slot *pfb_port_slot(const struct pf_bpf_config *cfg, __u32 port)
{
	if (!cfg || port < cfg->range_lo || port > cfg->range_hi)
		return 0;
	__u32 index = port - cfg->range_lo;
	return bpf_map_lookup_elem(&port_slots, &index);
}

/* Counts port in port_users under its slot's owner, the socket with this
 * cookie: false when another socket owns the slot. */
static __always_inline int pfb_own_port(const struct pf_bpf_config *cfg, struct pfb_port_slot *slot, __u32 port,
					__u64 cookie)
{
	if (__sync_val_compare_and_swap(&slot->owner, 0, cookie) != 0)
		return 0;
	__u32 index = port - cfg->range_lo, *users = bpf_map_lookup_elem(&port_users, &index);
	if (users)
		__sync_fetch_and_add(users, 1);
	return 1;
}

/* The slot's owner, the socket with this cookie, closes: its port is
 * free again. */
static __always_inline int pfb_disown_port(const struct pf_bpf_config *cfg, struct pfb_port_slot *slot,
					   __u32 port, __u64 cookie)
{
	if (slot->owner != cookie || __sync_val_compare_and_swap(&slot->owner, cookie, 0) != cookie)
		return 0;
	pfb_uncount(cfg, port);
	return 1;
}

/* The claim word of the socket with this cookie, made now.  The coarse
 * clock: a lease of seconds needs no finer tick (the fine one measured
 * no slower here, within the bench's noise; docs/performance.md). */
static __always_inline __u64 pfb_claim_word(__u64 cookie)
{
	return cookie << PFB_CLAIM_TIME_BITS | ((bpf_ktime_get_coarse_ns() >> 30) & PFB_CLAIM_TIME_MASK);
}

static __always_inline int pfb_claim_is(__u64 word, __u64 cookie)
{
	return word >> PFB_CLAIM_TIME_BITS == (cookie << PFB_CLAIM_TIME_BITS) >> PFB_CLAIM_TIME_BITS;
}

/* pfb_claim_port's answers. */
#define PFB_CLAIM_REFUSED 0
#define PFB_CLAIM_TAKEN 1
#define PFB_CLAIM_TAKEN_OVER 2	/* from a claim that lapsed: its kept record is still in the port's slot */

/* Claims port for the connect of the socket with this cookie: refused
 * while another connect's claim on it stands. */
static __always_inline int pfb_claim_port(__u16 port, __u64 cookie)
{
	__u32 key = port;
	__u64 *claim = bpf_map_lookup_elem(&connect_claims, &key);

	if (!claim)
		return PFB_CLAIM_TAKEN;
	__u64 old = *claim, mine = pfb_claim_word(cookie);
	int other = old && !pfb_claim_is(old, cookie);
	if (other && ((mine - old) & PFB_CLAIM_TIME_MASK) < PFB_CLAIM_UNITS)
		return PFB_CLAIM_REFUSED;
	if (__sync_val_compare_and_swap(claim, old, mine) != old)
		return PFB_CLAIM_REFUSED;
	return other ? PFB_CLAIM_TAKEN_OVER : PFB_CLAIM_TAKEN;
}

/* Drops the socket's claim on port: whether it still had it. */
static __always_inline int pfb_unclaim_port(__u16 port, __u64 cookie)
{
	__u32 key = port;
	__u64 *claim = bpf_map_lookup_elem(&connect_claims, &key);

	if (!claim || !port)
		return 0;
	__u64 word = *claim;
	return word && pfb_claim_is(word, cookie) && __sync_val_compare_and_swap(claim, word, 0) == word;
}

/* Whether port's bit is set in a one-entry port bitmap. */
static __always_inline int pfb_port_bit(void *bitmap, __u16 port)
{
	__u32 zero = 0;
	struct pf_bpf_port_bits *ports = bpf_map_lookup_elem(bitmap, &zero);
	__u32 word = (__u32)port >> 6;

	if (!ports || word >= 65536 / 64)
		return 0;
	return (ports->bits[word] >> (port & 63)) & 1;
}

/* A port of another app's range. */
static __always_inline int pfb_foreign_port(__u16 port)
{
	return pfb_port_bit(&foreign_ports, port);
}

/* A port the app's bind_allow lists. */
static __always_inline int pfb_bind_allowed(__u16 port)
{
	return pfb_port_bit(&bind_allow_ports, port);
}

#endif
