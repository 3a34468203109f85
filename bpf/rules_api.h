/* Destination rules as the BPF programs judge them: shared by the BPF C
 * (portfence.bpf.c), the loader and the unit tests, so it uses only
 * <linux/types.h>, no libc, and loops with constant bounds.
 *
 * config/bpf_rules.c compiles an app's deny and allow lists into four
 * BPF_MAP_TYPE_LPM_TRIE maps (deny4, deny6, allow4, allow6; flags
 * BPF_F_NO_PREALLOC) keyed by struct pf_bpf_lpm{4,6}_key, valued by
 * struct pf_bpf_port_spans.  A lookup returns only the longest matching
 * prefix, so each entry already holds the union of the ports of every
 * rule whose prefix contains the entry's: that one entry is the whole
 * answer.  The judgement is then pf_app_permits()'s, exactly.
 *
 * How a program must call it (has_allow: the app's allow key exists,
 * even empty; it comes from the app's configuration, not from the maps):
 *
 *   connect4 / sendmsg4:
 *	struct pf_bpf_lpm4_key k4;
 *	pf_bpf_lpm4_key_set(&k4, pf_bpf_fold_dest4(ctx->user_ip4));
 *	permitted = pf_bpf_rules_permit(bpf_map_lookup_elem(&deny4, &k4),
 *					has_allow ? bpf_map_lookup_elem(&allow4, &k4) : 0,
 *					has_allow, pf_bpf_port_of(ctx->user_port));
 *
 *   connect6 / sendmsg6 (user_ip6 is read one __u32 at a time):
 *	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1],
 *			ctx->user_ip6[2], ctx->user_ip6[3]}, ip4;
 *	__u16 port = pf_bpf_port_of(ctx->user_port);
 *	if (pf_bpf_fold_dest6(ip6, &ip4) == PF_BPF_DEST_V4) {
 *		... exactly as connect4, with ip4 in place of the fold of
 *		    user_ip4 (already folded: ::ffff:0.0.0.0 is 127.0.0.1) ...
 *	} else {
 *		struct pf_bpf_lpm6_key k6;
 *		pf_bpf_lpm6_key_set(&k6, ip6);
 *		permitted = pf_bpf_rules_permit(bpf_map_lookup_elem(&deny6, &k6),
 *						has_allow ? bpf_map_lookup_elem(&allow6, &k6) : 0,
 *						has_allow, port);
 *	}
 *
 * A v4-mapped destination must be judged in the v4 maps: no v6 entry
 * ever matches it (pf_app_permits judges it as IPv4, and a v6 rule
 * inside ::ffff:0:0/96 was folded to IPv4 when parsed). */
#ifndef PORTFENCE_BPF_RULES_API_H
#define PORTFENCE_BPF_RULES_API_H

#include <linux/types.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Byte order of constants compared with network-order fields. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PF_BPF_NET32(x) __builtin_bswap32(x)
#define PF_BPF_NET16(x) __builtin_bswap16(x)
#else
#define PF_BPF_NET32(x) (x)
#define PF_BPF_NET16(x) (x)
#endif

/* The most disjoint port intervals one trie entry holds (its rules' and
 * its ancestors' ports, merged).  A policy that needs more cannot use the
 * BPF backend; the compiler says which rule.  32 x 4 bytes keeps a value
 * at 132 bytes and a judgement at two scans of at most 32 steps. */
#define PF_BPF_PORT_SPANS 32

struct pf_bpf_lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];	/* network order */
};

struct pf_bpf_lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];	/* network order */
};

struct pf_bpf_port_span {
	__u16 lo, hi;	/* host order, inclusive */
};

/* Sorted by lo, disjoint and not touching. */
struct pf_bpf_port_spans {
	__u32 count;
	struct pf_bpf_port_span span[PF_BPF_PORT_SPANS];
};

#define PF_BPF_DEST_V4 4
#define PF_BPF_DEST_V6 6

static __always_inline int pf_bpf_spans_contain(const struct pf_bpf_port_spans *spans, __u16 port)
{
	if (!spans)
		return 0;
	for (__u32 i = 0; i < PF_BPF_PORT_SPANS; i++) {
		if (i >= spans->count || port < spans->span[i].lo)
			return 0;
		if (port <= spans->span[i].hi)
			return 1;
	}
	return 0;
}

/* deny_hit, allow_hit: the lookups of the folded destination in the deny
 * and allow map of its family (0 when nothing matched or not looked up);
 * port in host order. */
static __always_inline int pf_bpf_rules_permit(const struct pf_bpf_port_spans *deny_hit,
					       const struct pf_bpf_port_spans *allow_hit,
					       int has_allow, __u16 port)
{
	if (pf_bpf_spans_contain(deny_hit, port))
		return 0;
	return !has_allow || pf_bpf_spans_contain(allow_hit, port);
}

/* The kernel sends 0.0.0.0 to loopback, so the rules judge 127.0.0.1.
 * ip4 in network order (bpf_sock_addr's user_ip4). */
static __always_inline __u32 pf_bpf_fold_dest4(__u32 ip4)
{
	return ip4 == 0 ? PF_BPF_NET32(0x7f000001u) : ip4;
}

/* ip6 in network order (user_ip6).  ::ffff:a.b.c.d: *ip4 gets a.b.c.d
 * folded as pf_bpf_fold_dest4 does, and the result is PF_BPF_DEST_V4.
 * Otherwise :: becomes ::1 in place and the result is PF_BPF_DEST_V6. */
static __always_inline int pf_bpf_fold_dest6(__u32 ip6[4], __u32 *ip4)
{
	if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == PF_BPF_NET32(0xffffu)) {
		*ip4 = pf_bpf_fold_dest4(ip6[3]);
		return PF_BPF_DEST_V4;
	}
	if ((ip6[0] | ip6[1] | ip6[2] | ip6[3]) == 0)
		ip6[3] = PF_BPF_NET32(1u);
	return PF_BPF_DEST_V6;
}

/* bpf_sock_addr's user_port: network order in the low 16 bits. */
static __always_inline __u16 pf_bpf_port_of(__u32 user_port)
{
	return PF_BPF_NET16((__u16)user_port);
}

static __always_inline void pf_bpf_lpm4_key_set(struct pf_bpf_lpm4_key *key, __u32 ip4)
{
	key->prefixlen = 32;
	__builtin_memcpy(key->addr, &ip4, sizeof(key->addr));
}

static __always_inline void pf_bpf_lpm6_key_set(struct pf_bpf_lpm6_key *key, const __u32 ip6[4])
{
	key->prefixlen = 128;
	__builtin_memcpy(key->addr, ip6, sizeof(key->addr));
}

#endif
