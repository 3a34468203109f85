/* The BPF backend's hooks: cgroup socket programs that give every client
 * socket of a confined cgroup a port from its app's range, refuse what the
 * app's rules deny, and hand a record of each decision to user space.
 * Each hook gathers the question, asks the decision core
 * (pf_core_decide, core/verdict.h, the shim's own), and acts on the
 * answer.  This file holds the hooks only: their work is in
 * bpf/connect.bpf.h, bpf/bind.bpf.h and bpf/close.bpf.h, the walk in
 * bpf/walk.bpf.h (core/sequence.h with bpf_loop), the records in
 * bpf/records.bpf.h, the maps in bpf/maps.bpf.h.  One
 * loaded object serves one app; the loader (loader/) fills its maps from
 * the policy and the app's state.  Which sockets are the app's is in
 * bpf/cgroups.bpf.h: one attachment serves many cgroups, each hook
 * acting only for a socket whose cgroup's nearest confined ancestor is
 * the app's (pfb_ours); a new cgroup gets its app inside mkdir
 * (bpf/births.bpf.h).  Where several of the daemon's apps share the
 * cgroup their programs would stand at, the dispatcher
 * (bpf/dispatch.bpf.c) stands there and tail-calls these. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/births.bpf.h"
#include "bpf/bind.bpf.h"
#include "bpf/close.bpf.h"
#include "bpf/connect.bpf.h"
#include "bpf/dest.bpf.h"
#include "bpf/maps.bpf.h"
#include "bpf/records.bpf.h"

/* The kernel lets only GPL-compatible programs call GPL-only helpers
 * (bpf_probe_read_kernel_str); the project's own licence is not chosen
 * yet (debian/copyright says so). */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- connect (bpf/connect.bpf.h) ------------------------------------ */

SEC("cgroup/connect4")
int pfb_connect4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	return pfb_verdict(pfb_connect(ctx, &d));
}

SEC("cgroup/connect6")
int pfb_connect6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_connect(ctx, &d));
}

/* ---- unconnected sends (bpf/connect.bpf.h) ------------------------- */

SEC("cgroup/sendmsg4")
int pfb_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	/* An AF_INET6 socket's send to a v4-mapped address runs this hook,
	 * with the address as IPv4: its record is the socket's own. */
	if (ctx->sk && ctx->sk->family == AF_INET6)
		d.sock_family = AF_INET6;
	return pfb_verdict(pfb_sendmsg(ctx, &d));
}

SEC("cgroup/sendmsg6")
int pfb_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_sendmsg(ctx, &d));
}

/* ---- bind (bpf/bind.bpf.h) ----------------------------------------- */

SEC("cgroup/bind4")
int pfb_bind4(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v4(ctx, &d);
	return pfb_verdict(pfb_bind(ctx, &d));
}

SEC("cgroup/bind6")
int pfb_bind6(struct bpf_sock_addr *ctx)
{
	struct pfb_dest d;
	pfb_dest_from_v6(ctx, &d);
	return pfb_verdict(pfb_bind(ctx, &d));
}

SEC("cgroup/post_bind4")
int pfb_post_bind4(struct bpf_sock *sk)
{
	return pfb_verdict(pfb_post_bind(sk, 0));
}

SEC("cgroup/post_bind6")
int pfb_post_bind6(struct bpf_sock *sk)
{
	return pfb_verdict(pfb_post_bind(sk, 1));
}

/* ---- close and the kernel's later word (bpf/close.bpf.h) ----------- */

/* What the socket's port's slot and its state still hold at close goes
 * out or is undone, and the state goes.  A socket counted in its port's
 * slot has no state (pfb_assign_for_connect makes none, and no later
 * hook does for a socket with a port): the lookup, which would miss and
 * was most of the hook's time (docs/performance.md), is spared. */
SEC("cgroup/sock_release")
int pfb_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	if (pfb_release_port(sk, cookie))
		return PFB_PROCEED;
	struct pfb_sock_state *st = pfb_state(cookie);

	if (!st)
		return PFB_PROCEED;
	pfb_send_unfinished(&st->kept, &st->has_kept);
	if (st->has_pick) {
		/* bound: a TCP bind(addr, 0) that never connected (a listener,
		 * or closed unused); else a bind the kernel refused. */
		struct pfb_bind_pick *pick = &st->pick;
		int udp = sk->type == SOCK_DGRAM;
		if (!pick->bound)
			pfb_refused_pick(st, sk->family, udp);
		else
			pfb_record_bind(sk->family, sk->family, pick->addr, pick->port, PF_CORE_EVENT_ASSIGN, 0,
					pick->attempts, udp);
		st->has_pick = 0;
	}
	pfb_uncount_port(st->flags);
	bpf_map_delete_elem(&sock_state, &cookie);
	return PFB_PROCEED;
}

/* A connect is hashed (TCP_CONNECT_CB): its claim goes and its record
 * goes out.  A listen sends a bind(addr, 0)'s record.  The kernel calls
 * this program several times a connect (its other ops): those return at
 * once. */
SEC("sockops")
int pfb_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_TCP_LISTEN_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB && pfb_connect_hashed(skops, cookie))
		return 1;
	struct pfb_sock_state *st = pfb_state(cookie);
	if (!st)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_LISTEN_CB)
		pfb_listening(skops, st);
	else
		pfb_send_connected(skops, &st->kept, &st->has_kept);
	return 1;
}

/* ---- protocols no hook confines ----------------------------------- */

/* The kernel gives these ports, but no hook here can confine them:
 * UDP-Lite runs no connect hook (it connects from a kernel port,
 * unseen), SCTP and DCCP bind through their own code, past the bind
 * hook.  A confined app's socket of one is refused (EPERM, a deny
 * record), unless the app does not manage its kind (protocols) or only
 * audits.  MPTCP is confined through its TCP subflows, which run the TCP
 * hooks (connect, bind, sockops) on the app's cgroup; here its socket
 * only gets its cookie, under which its subflow's port is counted. */
SEC("cgroup/sock_create")
int pfb_sock_create(struct bpf_sock *sk)
{
	struct pf_bpf_config *cfg = pfb_config();
	__u32 family = sk->family, protocol = sk->protocol;

	if (!cfg || (family != AF_INET && family != AF_INET6))
		return 1;
	if (protocol == IPPROTO_MPTCP) {
		bpf_get_socket_cookie(sk);	/* made now: its subflow's port is counted under it */
		return 1;
	}
	if (protocol != IPPROTO_UDPLITE && protocol != IPPROTO_SCTP && protocol != IPPROTO_DCCP)
		return 1;
	if (!pfb_ours(sk))
		return 1;
	int udp = protocol == IPPROTO_UDPLITE;
	if (!(cfg->protocols & (udp ? PF_BPF_PROTO_UDP : PF_BPF_PROTO_TCP)))
		return 1;
	struct pfb_dest nowhere = {.family = family, .sock_family = family};
	pfb_record_simple(&nowhere, cfg->audit_mode ? PF_CORE_EVENT_AUDIT : PF_CORE_EVENT_DENY, PF_CORE_EPERM, udp);
	return cfg->audit_mode ? 1 : 0;
}

/* ---- exe --------------------------------------------------------- */

/* The exec tracepoint attached by name through BTF (tp_btf), so that
 * neither tracefs nor debugfs is needed: its arguments are
 * (struct task_struct *, pid_t old_pid, struct linux_binprm *).  Only
 * the binprm's filename is read, relocated against the running kernel's
 * BTF (CO-RE). */
struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

SEC("tp_btf/sched_process_exec")
int pfb_exec(__u64 *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	__u32 pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	__u32 zero = 0;
	struct pf_bpf_exe *scratch = bpf_map_lookup_elem(&exe_scratch, &zero);

	if (!scratch)
		return 0;
	struct pf_bpf_exe *last = bpf_map_lookup_elem(&exes, &pid);
	if (!last || bpf_probe_read_kernel_str(scratch->before, sizeof(scratch->before), last->path) < 0)
		scratch->before[0] = '\0';
	bpf_probe_read_kernel_str(scratch->path, sizeof(scratch->path), BPF_CORE_READ(bprm, filename));
	scratch->exec_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&exes, &pid, scratch, BPF_ANY);
	return 0;
}
