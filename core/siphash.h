/* SipHash-2-4 (Aumasson and Bernstein), the keyed hash F() of RFC 6056
 * §3.3.3 and §3.3.4, written once for the shim and the BPF programs.
 *
 * BPF: call it with a constant len (or from a __noinline wrapper whose
 * callers pass one) so that its loops have constant bounds; the flow keys
 * are 10 (IPv4) or 34 (IPv6) bytes, PF_CORE_FLOW_MAX at most. */
#ifndef PORTFENCE_CORE_SIPHASH_H
#define PORTFENCE_CORE_SIPHASH_H

#include "core/constants.h"

static __always_inline __u64 pf_core_rotl64(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

/* Eight bytes, little-endian whatever the host: compilers merge this
 * into one load on a little-endian machine. */
static __always_inline __u64 pf_core_load_le64(const __u8 *p)
{
	return (__u64)p[0] | (__u64)p[1] << 8 | (__u64)p[2] << 16 | (__u64)p[3] << 24 |
	       (__u64)p[4] << 32 | (__u64)p[5] << 40 | (__u64)p[6] << 48 | (__u64)p[7] << 56;
}

struct pf_core_sipstate {
	__u64 v0, v1, v2, v3;
};

static __always_inline void pf_core_sipround(struct pf_core_sipstate *s)
{
	s->v0 += s->v1; s->v1 = pf_core_rotl64(s->v1, 13); s->v1 ^= s->v0; s->v0 = pf_core_rotl64(s->v0, 32);
	s->v2 += s->v3; s->v3 = pf_core_rotl64(s->v3, 16); s->v3 ^= s->v2;
	s->v0 += s->v3; s->v3 = pf_core_rotl64(s->v3, 21); s->v3 ^= s->v0;
	s->v2 += s->v1; s->v1 = pf_core_rotl64(s->v1, 17); s->v1 ^= s->v2; s->v2 = pf_core_rotl64(s->v2, 32);
}

/* Two compression rounds per 8-byte word (the "2" of 2-4). */
static __always_inline void pf_core_sipcompress(struct pf_core_sipstate *s, __u64 m)
{
	s->v3 ^= m;
	pf_core_sipround(s);
	pf_core_sipround(s);
	s->v0 ^= m;
}

/* The state keyed with k0, k1 (the key's two little-endian words). */
static __always_inline struct pf_core_sipstate pf_core_sipinit(__u64 k0, __u64 k1)
{
	struct pf_core_sipstate s = {
		.v0 = 0x736f6d6570736575ull ^ k0, .v1 = 0x646f72616e646f6dull ^ k1,
		.v2 = 0x6c7967656e657261ull ^ k0, .v3 = 0x7465646279746573ull ^ k1,
	};
	return s;
}

/* The last word (the length in its top byte, the tail's bytes below),
 * then the four finalisation rounds (the "4"). */
static __always_inline __u64 pf_core_sipfinish(struct pf_core_sipstate *s, __u64 last)
{
	pf_core_sipcompress(s, last);
	s->v2 ^= 0xff;
	pf_core_sipround(s);
	pf_core_sipround(s);
	pf_core_sipround(s);
	pf_core_sipround(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

static __always_inline __u64 pf_core_siphash(const __u8 key[16], const __u8 *in, __u32 len)
{
	struct pf_core_sipstate s = pf_core_sipinit(pf_core_load_le64(key), pf_core_load_le64(key + 8));
	__u64 last = (__u64)len << 56;
	__u32 whole = len & ~7u;

	for (__u32 i = 0; i < whole; i += 8)
		pf_core_sipcompress(&s, pf_core_load_le64(in + i));
	for (__u32 i = 0; i < (len & 7u); i++)
		last |= (__u64)in[whole + i] << (8 * i);
	return pf_core_sipfinish(&s, last);
}

#endif
