/* The BPF side of the differential test, run in the kernel: the walk of
 * core/sequence.h driven with bpf_loop, the flow hashed with
 * core/flow.h and core/siphash.h, and the counters taken from and given
 * back to a struct pf_bpf_counters, as the cgroup programs do.  A
 * BPF_PROG_TYPE_SYSCALL program, so that BPF_PROG_TEST_RUN can run it;
 * the test (tests/unit/test_sequence.c) fills its globals and reads the
 * candidates back.  The random draws come from the test (the cgroup
 * programs take bpf_get_prandom_u32() % bound), so both walks see the
 * same ones. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bpf/portfence_api.h"
#include "core/flow.h"
#include "core/sequence.h"
#include "core/siphash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Ranges up to 128 ports: two walks of the range. */
#define RUN_MAX_TRIES 256

struct pf_bpf_config cfg;
struct pf_bpf_counters counters;
__u8 local_addr[16], remote_addr[16];
__u32 v6;
__u32 remote_port, free_port;
__u32 draws[RUN_MAX_TRIES];

__u32 ports[RUN_MAX_TRIES];
__u32 count, taken;

static __always_inline __u64 flow_hash(const __u8 *key)
{
	__u8 buf[PF_CORE_FLOW_MAX] = {};

	if (v6) {
		pf_core_flow_key(buf, local_addr, 16, remote_addr, 16, (__u16)remote_port);
		return pf_core_siphash(key, buf, 34);
	}
	pf_core_flow_key(buf, local_addr, 4, remote_addr, 4, (__u16)remote_port);
	return pf_core_siphash(key, buf, 10);
}

static long try_candidate(__u32 k, void *arg)
{
	struct pf_core_walk *w = arg;
	__u32 draw = 0, port;

	if (k >= RUN_MAX_TRIES)
		return 1;
	if (pf_core_draw_bound(w, k))
		draw = draws[k];
	port = pf_core_candidate(w, k, draw);
	if (count < RUN_MAX_TRIES)
		ports[count] = port;
	count++;
	if (port != free_port)
		return 0;
	taken = port;
	return 1;
}

SEC("syscall")
int sequence_run(void *ctx)
{
	struct pf_core_walk w;
	__u32 *counter = 0;

	pf_core_walk_init(&w, cfg.algorithm, cfg.range_lo, cfg.range_hi);
	w.n = cfg.increments_n;
	if (pf_core_hashes_flow(w.algorithm))
		w.offset = pf_core_hash_offset(flow_hash(cfg.hash_key), w.num);
	switch (pf_core_counter_of(w.algorithm)) {
	case PF_CORE_COUNTER_SEQUENTIAL:
		counter = &counters.sequential_next;
		break;
	case PF_CORE_COUNTER_HASH:
		counter = &counters.hash_next;
		break;
	case PF_CORE_COUNTER_TABLE:
		counter = &counters.table[pf_core_dh_index(flow_hash(cfg.index_key)) & (PF_CORE_DH_TABLE_LEN - 1)];
		break;
	case PF_CORE_COUNTER_INCREMENTS:
		counter = &counters.increments_next;
		break;
	}
	pf_core_walk_counter(&w, counter ? *counter : 0);
	count = taken = 0;
	bpf_loop(pf_core_tries(&w), try_candidate, &w, 0);
	/* The counter goes on from where the walk's tries left it. */
	if (counter)
		__sync_fetch_and_add(counter, pf_core_counter_advance(&w, count));
	return 0;
}
