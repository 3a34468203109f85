/* The BPF programs loaded on the machine and their maps, read by id with
 * bpf(2) itself (no libbpf): what the integration tests count and look
 * into, and the bench times. */
#ifndef PORTFENCE_BPF_PROGS_H
#define PORTFENCE_BPF_PROGS_H

#include <linux/bpf.h>
#include <stdbool.h>

/* The id of the loaded program after *id (0: the first) in *id: 0, or
 * -1 when there is none (errno ENOENT) or bpf(2) refused. */
int pf_bpf_prog_next(__u32 *id);
/* Program id's facts (name, run time, verified instructions, ...) in
 * *info, zeroed first: 0, or -1 when it is gone or bpf(2) refused. */
int pf_bpf_prog_info(__u32 id, struct bpf_prog_info *info);
/* The ids of the maps program id uses, at most *count of them, in
 * map_ids; how many it uses in *count: 0, or -1 as pf_bpf_prog_info. */
int pf_bpf_prog_maps(__u32 id, __u32 *map_ids, __u32 *count);
/* An fd of map id (the caller closes it), its facts (name, size, ...)
 * in *info: or -1 when it is gone or bpf(2) refused. */
int pf_bpf_map_by_id(__u32 id, struct bpf_map_info *info);
/* Whether a program's name is the backend's: "pfb_..." (an app's
 * programs) or "pfd_..." (the daemon's dispatcher). */
bool pf_bpf_prog_is_portfence(const char *name);

#endif
