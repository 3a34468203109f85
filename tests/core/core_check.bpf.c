/* Proves the core (every header in core/) builds for the BPF target, driven as the
 * BPF programs will drive it: the verdict from a hook's question, the
 * flow key hashed with SipHash, and a candidate sequence walked with
 * bpf_loop.  Compiled by `make core-check` (run by make unit and make
 * test), never loaded. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "core/constants.h"
#include "core/flow.h"
#include "core/sequence.h"
#include "core/siphash.h"
#include "core/verdict.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct core_check_walk {
	struct pf_core_walk w;
	__u32 ports;	/* sum of the candidates, so nothing is optimised away */
};

static long next_candidate(__u32 k, void *arg)
{
	struct core_check_walk *c = arg;
	__u32 bound = pf_core_draw_bound(&c->w, k);
	__u32 draw = bound ? bpf_get_prandom_u32() % bound : 0;

	c->ports += pf_core_candidate(&c->w, k, draw);
	return 0;
}

static __noinline __u64 flow_hash4(const __u8 *key, const __u8 *local, const __u8 *remote,
				   __u16 remote_port)
{
	__u8 buf[PF_CORE_FLOW_MAX] = {};
	__u32 len = pf_core_flow_key(buf, local, 4, remote, 4, remote_port);

	return len == 10 ? pf_core_siphash(key, buf, 10) : 0;
}

SEC("cgroup/connect4")
int core_check_connect4(struct bpf_sock_addr *ctx)
{
	struct pf_core_question q = {
		.family = PF_CORE_AF_INET, .udp = ctx->type == 2, .call = PF_CORE_CALL_CONNECT,
		.policy = PF_CORE_POLICY_APP, .protocol_managed = 1,
		.has_port = ctx->sk ? ctx->sk->src_port != 0 : 0, .late_udp_send = 1,
	};
	struct pf_core_answer a = pf_core_decide(&q);
	__u8 key[16] = {1, 2, 3}, local[4] = {}, remote[4];
	__u32 ip4 = ctx->user_ip4;
	struct core_check_walk c = {};

	if (a.verdict != PF_CORE_ASSIGN)
		return 1;
	__builtin_memcpy(remote, &ip4, 4);
	pf_core_walk_init(&c.w, PF_CORE_ALGO_DOUBLE_HASH, 61000, 61099);
	c.w.offset = pf_core_hash_offset(flow_hash4(key, local, remote, 80), c.w.num);
	c.w.counter = pf_core_dh_index(flow_hash4(key, remote, local, 80));
	bpf_loop(pf_core_tries(&c.w) & 0xffff, next_candidate, &c, 0);
	return c.ports != 0;
}
