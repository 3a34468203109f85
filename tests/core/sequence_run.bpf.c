/* The BPF side of the differential test, run in the kernel: the cgroup
 * programs' own walk (bpf/walk.bpf.h: pfb_walk_start and pfb_next_port,
 * core/sequence.h driven with bpf_loop, the flow hashed with core/flow.h
 * and core/siphash.h, the counter taken per try by atomic add), with the
 * test's counters and draws in place of the app's counters map and
 * bpf_get_prandom_u32(), so that both walks see the same ones.  A
 * BPF_PROG_TYPE_SYSCALL program, so that BPF_PROG_TEST_RUN can run it;
 * the test (tests/unit/test_sequence.c) fills its globals and reads the
 * candidates back. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/portfence_api.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Ranges up to 128 ports: two walks of the range. */
#define RUN_MAX_TRIES 256

struct pf_bpf_config cfg;
struct pf_bpf_counters run_counters;
__u8 local_addr[16], remote_addr[16];
__u32 v6;
__u32 remote_port, free_port;
__u32 draws[RUN_MAX_TRIES];

__u32 ports[RUN_MAX_TRIES];
__u32 count, taken;

#define PFB_DRAW(k, bound) ((bound) && (k) < RUN_MAX_TRIES ? draws[(k) & (RUN_MAX_TRIES - 1)] : 0)
#define PFB_COUNTERS() (&run_counters)
#include "bpf/walk.bpf.h"

static long try_candidate(__u32 k, void *arg)
{
	struct pfb_walk *w = arg;
	__u32 port = pfb_next_port(&w->seq, k);

	if (!port)
		return 1;
	if (count < RUN_MAX_TRIES)
		ports[count & (RUN_MAX_TRIES - 1)] = port;
	count++;
	if (port != free_port)
		return 0;
	taken = port;
	return 1;
}

SEC("syscall")
int sequence_run(void *ctx)
{
	struct pfb_walk w = {};

	w.d.family = w.d.sock_family = v6 ? AF_INET6 : AF_INET;
	w.d.port = (__u16)remote_port;
	__builtin_memcpy(w.d.addr, remote_addr, 16);
	__builtin_memcpy(w.source, local_addr, 16);
	pfb_walk_start(&w, &cfg, 0);
	/* The test gives Algorithm 5's N (the loader's, from the range). */
	w.seq.cw.n = cfg.increments_n;
	count = taken = 0;
	bpf_loop(pfb_max_tries(&w), try_candidate, &w, 0);
	return 0;
}
