/* The flow key: what RFC 6056's hash algorithms feed to F() and G()
 * (§3.3.3, §3.3.4: "F(local_IP, remote_IP, remote_port, secret_key)"),
 * laid out once for both backends:
 *
 *	local address | remote address | remote port (2 bytes, big-endian)
 *
 * Addresses are in network order, 4 bytes (IPv4) or 16 (IPv6), each as
 * the socket's family gives it: an IPv6 socket connecting to a v4-mapped
 * destination hashes ::ffff:a.b.c.d (16 bytes), not a.b.c.d.
 *
 * "local" is the address the socket is bound with when its port is
 * chosen: the one the program bound (bind(addr, 0)), else the source the
 * shim learned for this destination (or, in BPF, loopback's own address
 * for a loopback destination), else the wildcard (0.0.0.0 or ::).  It is
 * never the destination.  A flow with no addresses (local_len and
 * remote_len 0, as the unit tests use) is the port alone; a bind(addr, 0)
 * hashes its address and port 0. */
#ifndef PORTFENCE_CORE_FLOW_H
#define PORTFENCE_CORE_FLOW_H

#include "core/constants.h"

/* The longest key: two IPv6 addresses and a port. */
#define PF_CORE_FLOW_MAX 34

/* Copies an address of len 16 or 4 bytes (anything else: none) and
 * returns how many it copied.  Copies of constant size: clang turns a
 * byte loop of variable length into a call to memcpy, which the BPF
 * target does not have. */
static __always_inline __u32 pf_core_flow_addr(__u8 *out, const __u8 *addr, __u32 len)
{
	if (len == 16) {
		__builtin_memcpy(out, addr, 16);
		return 16;
	}
	if (len == 4) {
		__builtin_memcpy(out, addr, 4);
		return 4;
	}
	return 0;
}

/* Writes the key into out and returns its length.  Each address is 4 or
 * 16 bytes long, or 0 (left out).  BPF: pass constant lengths, so that
 * every store lands at a constant offset. */
static __always_inline __u32 pf_core_flow_key(__u8 out[PF_CORE_FLOW_MAX], const __u8 *local,
					      __u32 local_len, const __u8 *remote,
					      __u32 remote_len, __u16 remote_port)
{
	__u32 n = pf_core_flow_addr(out, local, local_len);

	n += pf_core_flow_addr(out + n, remote, remote_len);
	out[n] = (__u8)(remote_port >> 8);
	out[n + 1] = (__u8)remote_port;
	return n + 2;
}

/* RFC 6056 §3.3.3/§3.3.4: offset = F(...) % num_ephemeral, the 64-bit
 * hash reduced before it is narrowed. */
static __always_inline __u32 pf_core_hash_offset(__u64 hash, __u32 num)
{
	return num ? (__u32)(hash % num) : 0;
}

/* RFC 6056 §3.3.4: index = G(...) into table[PF_CORE_DH_TABLE_LEN]. */
static __always_inline __u32 pf_core_dh_index(__u64 hash)
{
	return (__u32)(hash % PF_CORE_DH_TABLE_LEN);
}

#endif
