/* The daemon's dispatcher: one program per hook, attached where several
 * of the daemon's apps' programs would stand (two services in
 * system.slice), which finds the socket's app once (cgroup_apps,
 * bpf/cgroups.bpf.h) and tail-calls that app's own program
 * (bpf/portfence.bpf.c), found in the hook's program array at the app's
 * id.  Without it, each app's programs stood at the shared parent and
 * every socket below ran all of them, if only to find they were not its
 * app's: a connect paid for every app there.  Now a socket runs one
 * program per hook however many apps share the parent, and a socket of
 * no app leaves each hook after the one lookup.  A tail call that finds
 * no program (an app id the daemon has not filled) falls through: the
 * socket proceeds unjudged, as one of no app.  Where one app stands
 * alone, its programs are attached themselves, without this hop. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "bpf/cgroups.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Each hook: a program array (a tail call stays within its program's
 * type and attach type; the loader sizes it to the daemon's apps) and
 * pfd_HOOK, which tail-calls the socket's app's program there.  sk is
 * how the program's context names the socket. */
#define PFD_TARGETS(hook)                              \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY); \
		__uint(max_entries, 1);                \
		__type(key, __u32);                    \
		__type(value, __u32);                  \
	} to_##hook SEC(".maps")

#define PFD_HOOK(section, hook, context, sk)                                \
	PFD_TARGETS(hook);                                                  \
	SEC(section) int pfd_##hook(context *ctx)                           \
	{                                                                   \
		bpf_tail_call(ctx, &to_##hook, pfb_socket_app(sk));          \
		return 1;                                                   \
	}

PFD_HOOK("cgroup/connect4", connect4, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/connect6", connect6, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/sendmsg4", sendmsg4, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/sendmsg6", sendmsg6, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/bind4", bind4, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/bind6", bind6, struct bpf_sock_addr, ctx->sk)
PFD_HOOK("cgroup/post_bind4", post_bind4, struct bpf_sock, ctx)
PFD_HOOK("cgroup/post_bind6", post_bind6, struct bpf_sock, ctx)
PFD_HOOK("cgroup/sock_release", sock_release, struct bpf_sock, ctx)

/* The kernel calls sockops several times a connect; the app's program
 * acts on two of its callbacks only (pfb_sockops), so the others return
 * here, before the lookup. */
PFD_TARGETS(sockops);
SEC("sockops")
int pfd_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_TCP_LISTEN_CB)
		return 1;
	bpf_tail_call(skops, &to_sockops, pfb_socket_app(skops->sk));
	return 1;
}

/* Only the protocols the app's program judges at creation (pfb_sock_create:
 * MPTCP, UDP-Lite, SCTP, DCCP) reach it: a TCP or UDP socket returns here,
 * before the lookup. */
PFD_TARGETS(sock_create);
SEC("cgroup/sock_create")
int pfd_sock_create(struct bpf_sock *sk)
{
	__u32 protocol = sk->protocol;

	if (protocol != IPPROTO_MPTCP && protocol != IPPROTO_UDPLITE && protocol != IPPROTO_SCTP &&
	    protocol != IPPROTO_DCCP)
		return 1;
	bpf_tail_call(sk, &to_sock_create, pfb_socket_app(sk));
	return 1;
}
