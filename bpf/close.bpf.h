/* The release and sockops hooks' work (bpf/portfence.bpf.c holds the
 * hooks): at close, a port's claim and count undone and what the socket
 * kept recorded; at TCP_CONNECT_CB, the connect's record sent with the
 * local address the kernel chose, and that source learned; at
 * TCP_LISTEN_CB, a listening bind(addr, 0)'s record. */
#ifndef PORTFENCE_CLOSE_BPF_H
#define PORTFENCE_CLOSE_BPF_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/bind.bpf.h"
#include "bpf/maps.bpf.h"
#include "bpf/records.bpf.h"
#include "bpf/walk.bpf.h"

/* The local port of the socket the release hook runs for, or 0.  Its
 * context gives no src_port (the kernel lets only post_bind read it) and
 * no helper casts it to a TCP socket; the context is the kernel's socket
 * itself, whose head (struct sock_common) holds the port at an offset
 * relocated against the running kernel's BTF (CO-RE). */
static __always_inline __u16 pfb_release_port_of(struct bpf_sock *sk)
{
	__u8 head[32];
	__u32 at = bpf_core_field_offset(struct sock_common___pfb, skc_num);
	__u16 port;

	if (at > sizeof(head) - sizeof(port) || bpf_probe_read_kernel(head, sizeof(head), sk) < 0)
		return 0;
	__builtin_memcpy(&port, head + at, sizeof(port));
	return port;
}

/* A connect's marks in its port's slot (pfb_assign_for_connect) at
 * close: a TCP claim still its own is a connect that never reached
 * sockops, whose record goes out as a failure; a count it owns is
 * dropped (true: the socket was counted there).  The port is the
 * socket's own: the hook bound it (SOCK_BINDPORT_LOCK), so even a failed
 * connect keeps it. */
static __always_inline int pfb_release_port(struct bpf_sock *sk, __u64 cookie)
{
	__u32 protocol = sk->protocol;

	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	struct pf_bpf_config *cfg = pfb_config();
	__u16 port = pfb_release_port_of(sk);
	struct pfb_port_slot *slot = pfb_port_slot(cfg, port);

	if (!slot)
		return 0;
	if (protocol == IPPROTO_TCP && pfb_unclaim_port(port, cookie))
		pfb_send_unfinished(&slot->kept, &slot->has_kept);
	return pfb_disown_port(cfg, slot, port, cookie);
}

/* A TCP bind(addr, 0) that listens: its record goes out now, as the
 * shim's does at listen(2), not at close. */
static __always_inline void pfb_listening(struct bpf_sock_ops *skops, struct pfb_sock_state *st)
{
	struct pfb_bind_pick *pick = &st->pick;
	__u32 family = skops->family;

	if (!st->has_pick || !pick->bound || pick->explicit_port)
		return;
	pfb_record_bind(family, family, pick->addr, pick->port, PF_CORE_EVENT_ASSIGN, 0, pick->attempts, 0);
	st->has_pick = 0;
}

/* The kernel has chosen the local address: a record kept for it gets it
 * and goes out. */
static __always_inline void pfb_send_connected(struct bpf_sock_ops *skops, struct pf_bpf_record *kept,
					       __u8 *has_kept)
{
	if (!*has_kept)
		return;
	__u32 family = skops->family, ip4 = skops->local_ip4;
	__u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
	if (family == AF_INET) {
		kept->local_addr[0] = ip4;
	} else if (pfb_is_v4_mapped(ip6) && kept->family == AF_INET) {
		kept->local_addr[0] = ip6[3];
	} else {
		for (int i = 0; i < 4; i++)
			kept->local_addr[i] = ip6[i];
	}
	kept->local_port = (__u16)skops->local_port;
	pfb_send_kept(kept);
	*has_kept = 0;
}

/* The source the kernel chose for a wildcard-bound connect, for the
 * next walk toward its destination (pfb_learned_source): an AF_INET6
 * socket's v4-mapped addresses as IPv4, as struct pfb_dest has them. */
static __always_inline void pfb_learn_connected_source(struct bpf_sock_ops *skops)
{
	__u32 family = skops->family, dest[4] = {0, 0, 0, 0}, source[4] = {0, 0, 0, 0};
	__u32 remote4 = skops->remote_ip4, local4 = skops->local_ip4;
	__u32 remote6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3]};
	__u32 local6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};

	if (family == AF_INET) {
		dest[0] = remote4;
		source[0] = local4;
	} else if (pfb_is_v4_mapped(remote6)) {
		family = AF_INET;
		dest[0] = remote6[3];
		source[0] = local6[3];
	} else {
		for (int i = 0; i < 4; i++) {
			dest[i] = remote6[i];
			source[i] = local6[i];
		}
	}
	pfb_learn_source(bpf_get_netns_cookie(skops), family, dest, source);
}

/* A connect the walk gave its port is hashed: every other walk sees the
 * 4-tuple taken now, so the port's claim goes, and the record kept in
 * its slot goes out.  False when the socket held no claim there, or its
 * port has no slot (its record, if any, is in its state). */
static __always_inline int pfb_connect_hashed(struct bpf_sock_ops *skops, __u64 cookie)
{
	__u16 port = (__u16)skops->local_port;
	struct pfb_port_slot *slot = pfb_port_slot(pfb_config(), port);

	if (!pfb_unclaim_port(port, cookie) || !slot)
		return 0;
	if (slot->learn)
		pfb_learn_connected_source(skops);
	pfb_send_connected(skops, &slot->kept, &slot->has_kept);
	return 1;
}

#endif
