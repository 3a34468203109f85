/* What the BPF programs and their loader share: the app's configuration,
 * its counters and the record the programs hand to user space.  This
 * header compiles both as BPF C and as host C, so it uses only the
 * kernel's fixed-width types. */
#ifndef PORTFENCE_BPF_API_H
#define PORTFENCE_BPF_API_H

#include <linux/types.h>

/* enum pf_algorithm's values (config/policy.h), fixed here because the
 * BPF side cannot include the policy library. */
#define PF_BPF_ALGO_SEQUENTIAL 0
#define PF_BPF_ALGO_RANDOM 1
#define PF_BPF_ALGO_RANDOM_REDRAW 2
#define PF_BPF_ALGO_HASH 3
#define PF_BPF_ALGO_DOUBLE_HASH 4
#define PF_BPF_ALGO_RANDOM_INCREMENTS 5

#define PF_BPF_PROTO_TCP 1u
#define PF_BPF_PROTO_UDP 2u

#define PF_BPF_DH_TABLE_LEN 256
/* Local addresses a 4-tuple is checked against when the socket names
 * none: the host's own, filled in by the loader. */
#define PF_BPF_LOCAL_ADDRS 16

struct pf_bpf_config {
	__u16 range_lo, range_hi;
	__u32 algorithm;
	__u32 protocols;
	__u32 audit_mode;	/* 1: log what enforce would do, change nothing */
	__u32 deny_explicit_bind;
	__u32 udp_unbound_audit;
	__u32 has_allow;
	__u32 increments_n;	/* Algorithm 5's N */
	__u32 records;		/* 0: no log, so no record is made */
	__u8 hash_key[16];	/* F()'s secret_key, from the app's state */
	__u8 index_key[16];	/* G()'s secret_key2 */
};

struct pf_bpf_counters {
	__u32 sequential_next;
	__u32 hash_next;
	__u32 increments_next;
	__u32 table[PF_BPF_DH_TABLE_LEN];
};

/* One local address (IPv4 in v4, or IPv6 in v6) of this host. */
struct pf_bpf_local_addr {
	__u32 family;	/* AF_INET, AF_INET6, or 0: unused */
	__u32 addr[4];	/* network order; IPv4 in addr[0] */
};

/* Every port of the other apps' ranges, one bit each (port / 64, port
 * % 64): a bind there is refused whatever explicit_bind says. */
struct pf_bpf_port_bits {
	__u64 bits[65536 / 64];
};

/* A record's error when the programs could not see it (pf_errno_name
 * gives "EUNKNOWN" for it). */
#define PF_BPF_ERROR_UNSEEN 0xffff

/* The core's events (PF_CORE_EVENT_*, tied in loader/core_ties.c);
 * PF_BPF_BIND: the program bound a port of its own choosing (port != 0),
 * recorded with its port in local_port and the bind's errno. */
enum pf_bpf_event { PF_BPF_ASSIGN = 0, PF_BPF_DENY = 1, PF_BPF_ERROR = 2, PF_BPF_AUDIT = 3, PF_BPF_BIND = 4 };

/* A record as the programs see it; user space adds the wall-clock
 * time, exe and the cgroup's path, and formats it. */
struct pf_bpf_record {
	__u64 monotonic_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 event;
	__u32 error;		/* 0, or the errno the program saw */
	__u32 attempts;
	__u16 family;		/* AF_INET or AF_INET6 */
	__u16 udp;
	__u16 local_port, remote_port;	/* host order */
	__u32 local_addr[4];	/* network order; IPv4 in [0] */
	__u32 remote_addr[4];
	char comm[16];
	__u32 uid;		/* the process's, for the journal's OBJECT_UID */
};

/* The record_loss map's entries: records the ring had no room for
 * (counted by the programs), and how many of them user space has
 * reported in an error record. */
#define PF_BPF_LOSS_LOST 0
#define PF_BPF_LOSS_REPORTED 1
#define PF_BPF_LOSS_ENTRIES 2

/* The outcomes map's entries (per CPU): ports the programs gave from the
 * range, and calls that found none free (the shim's shared-state
 * counters, status --prometheus). */
#define PF_BPF_OUTCOME_ASSIGNED 0
#define PF_BPF_OUTCOME_FAILED 1
#define PF_BPF_OUTCOME_ENTRIES 2

/* The program a process last exec'd, by pid, as execve(2) was given
 * it; the one it ran before ("" when unknown: exec'd before the watch,
 * or forked from one that was); and when (CLOCK_MONOTONIC ns, as the
 * records are stamped).  A record drained after its process exec'd
 * again, or was gone, is named by them, not by /proc/PID/exe. */
#define PF_BPF_EXE_LEN 256
struct pf_bpf_exe {
	char path[PF_BPF_EXE_LEN];
	char before[PF_BPF_EXE_LEN];
	__u64 exec_ns;
};

/* The cgroups one attachment serves (bpf/cgroups.bpf.h): cgroup_apps
 * maps a cgroup id to its app (an app's pfb_app_id, from 1), and
 * cgroup_globs holds the policy's globs for the birth program, each as
 * an absolute path under the cgroup v2 mount ("/system.slice/x-*.scope"),
 * the first entry with app 0 ending the table.  A glob the kernel's
 * matcher cannot take ('[', '\', too long) is left to the watch. */
#define PF_BPF_CGROUPS 65536
#define PF_BPF_GLOBS 64
#define PF_BPF_GLOB_LEN 128	/* with its NUL */
#define PF_BPF_GLOB_PATH 256	/* a longer cgroup path is left to the watch */
struct pf_bpf_cgroup_glob {
	__u32 app;
	char glob[PF_BPF_GLOB_LEN];
};

#endif
