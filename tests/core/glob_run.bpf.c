/* The kernel's cgroup glob matcher (bpf/glob.bpf.h, the birth program's)
 * alone: a BPF_PROG_TYPE_SYSCALL program, so that BPF_PROG_TEST_RUN can
 * run it; the test (tests/unit/test_glob_kernel.c) fills path and glob
 * and reads matched back. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bpf/portfence_api.h"
#include "bpf/glob.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

char path[PF_BPF_GLOB_PATH];
char glob[PF_BPF_GLOB_LEN];
int matched;

SEC("syscall")
int glob_run(void *ctx)
{
	struct pfb_glob_scratch *s = pfb_glob_scratch();

	(void)ctx;
	if (!s)
		return 1;
	__builtin_memcpy(s->path, path, sizeof(s->path));
	__builtin_memcpy(s->glob, glob, sizeof(s->glob));
	matched = pfb_glob_matches(s);
	return 0;
}
