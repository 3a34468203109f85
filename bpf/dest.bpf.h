/* What a hook knows of its call: the address it names, whether the app's
 * rules permit it, and the question for the decision core
 * (core/verdict.h), which answers it for both backends. */
#ifndef PORTFENCE_BPF_DEST_BPF_H
#define PORTFENCE_BPF_DEST_BPF_H

#include "bpf/maps.bpf.h"
#include "core/verdict.h"

#define AF_INET PF_CORE_AF_INET
#define AF_INET6 PF_CORE_AF_INET6
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOL_SOCKET 1
#define SO_REUSEADDR 2

/* A cgroup hook's verdicts. */
#define PFB_PROCEED 1
#define PFB_REFUSE 0

/* An address as the rules and the 4-tuple check see it: IPv4-mapped
 * addresses folded to IPv4; sock_family is the socket's own, which the
 * record and the flow hash show (a v4-mapped destination of an AF_INET6
 * socket stays IPv6 there, as the shim writes and hashes it). */
struct pfb_dest {
	__u32 family;
	__u32 sock_family;
	__u32 addr[4];	/* network order; IPv4 in addr[0] */
	__u16 port;	/* host order */
};

static __always_inline int pfb_is_v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

static __always_inline int pfb_is_zero(const __u32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

static __always_inline void pfb_dest_from_v4(const struct bpf_sock_addr *ctx, struct pfb_dest *d)
{
	d->family = AF_INET;
	d->sock_family = AF_INET;
	d->addr[0] = ctx->user_ip4;
	d->addr[1] = d->addr[2] = d->addr[3] = 0;
	d->port = bpf_ntohs((__u16)ctx->user_port);
}

static __always_inline void pfb_dest_from_v6(const struct bpf_sock_addr *ctx, struct pfb_dest *d)
{
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};

	d->port = bpf_ntohs((__u16)ctx->user_port);
	d->sock_family = AF_INET6;
	if (pfb_is_v4_mapped(ip6)) {
		d->family = AF_INET;
		d->addr[0] = ip6[3];
		d->addr[1] = d->addr[2] = d->addr[3] = 0;
		return;
	}
	d->family = AF_INET6;
	d->addr[0] = ip6[0];
	d->addr[1] = ip6[1];
	d->addr[2] = ip6[2];
	d->addr[3] = ip6[3];
}

/* The app's rules, folded as user space folds them (bpf/rules_api.h):
 * the unspecified address is judged as loopback, where the kernel sends
 * it. */
static __always_inline int pfb_permits(const struct pf_bpf_config *cfg, const struct pfb_dest *d)
{
	const struct pf_bpf_port_spans *deny_hit, *allow_hit = 0;

	if (d->family == AF_INET) {
		struct pf_bpf_lpm4_key key;
		pf_bpf_lpm4_key_set(&key, pf_bpf_fold_dest4(d->addr[0]));
		deny_hit = bpf_map_lookup_elem(&deny4, &key);
		if (cfg->has_allow)
			allow_hit = bpf_map_lookup_elem(&allow4, &key);
	} else {
		struct pf_bpf_lpm6_key key;
		__u32 ip6[4] = {d->addr[0], d->addr[1], d->addr[2], d->addr[3]}, ip4 = 0;
		pf_bpf_fold_dest6(ip6, &ip4);	/* never v4 here: pfb_dest_from_v6 folded those */
		pf_bpf_lpm6_key_set(&key, ip6);
		deny_hit = bpf_map_lookup_elem(&deny6, &key);
		if (cfg->has_allow)
			allow_hit = bpf_map_lookup_elem(&allow6, &key);
	}
	return pf_bpf_rules_permit(deny_hit, allow_hit, cfg->has_allow, d->port);
}

/* ICMP echo ("ping") sockets run the connect hook too, but are no
 * protocol of portfence's (SPEC: stream and datagram sockets, UDP-Lite
 * and MPTCP): untouched, as the shim leaves them. */
static __always_inline int pfb_protocol_managed(const struct pf_bpf_config *cfg, __u32 type, __u32 protocol)
{
	if (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6)
		return 0;
	if (type == SOCK_STREAM)
		return cfg->protocols & PF_BPF_PROTO_TCP;
	if (type == SOCK_DGRAM)
		return cfg->protocols & PF_BPF_PROTO_UDP;
	return 0;
}

/* The question every hook starts from: one loaded object serves one
 * app, so its policy always applies; what the BPF backend can do is
 * fixed (it cannot bind an address without a port; an unbound UDP send
 * reaches it already given a port). */
static __always_inline struct pf_core_question pfb_question(const struct pf_bpf_config *cfg, __u32 call,
							    __u32 sock_type, __u32 protocol, __u32 family)
{
	struct pf_core_question q = {
		.family = (__u8)family,
		.udp = sock_type == SOCK_DGRAM,
		.call = (__u8)call,
		.policy = PF_CORE_POLICY_APP,
		.protocol_managed = pfb_protocol_managed(cfg, sock_type, protocol) != 0,
		.audit = cfg->audit_mode != 0,
		.deny_explicit_bind = cfg->deny_explicit_bind != 0,
		.late_udp_send = 1,
		.udp_unbound_audit = cfg->udp_unbound_audit != 0,
	};
	return q;
}

/* Where an explicitly bound port lies. */
static __always_inline __u8 pfb_port_place(const struct pf_bpf_config *cfg, __u16 port)
{
	if (port >= cfg->range_lo && port <= cfg->range_hi)
		return PF_CORE_PORT_OWN;
	return pfb_foreign_port(port) ? PF_CORE_PORT_OTHER_APP : PF_CORE_PORT_OUTSIDE;
}

/* A hook must return 0 or 1, provably: the compiler may load a return
 * value from a stack slot the verifier cannot read back as a constant. */
static __always_inline int pfb_verdict(int proceed)
{
	asm volatile("%0 &= 1" : "+r"(proceed));
	return proceed;
}

/* A refusal: the errno the program sees. */
static __always_inline int pfb_refuse(__u32 error)
{
	bpf_set_retval(-(int)error);
	return PFB_REFUSE;
}

#endif
