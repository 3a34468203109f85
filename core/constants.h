/* The numbers both backends must agree on, defined once.  This header,
 * like every header in core/, compiles as BPF C (clang -target bpf) and
 * as host C: kernel types only, no libc.  Where user space has its own
 * name for a value (enum pf_algorithm, errno.h, PF_BPF_*), the value is
 * taken from here or tied to it by _Static_assert (core/decide.c,
 * loader/core_ties.c). */
#ifndef PORTFENCE_CORE_CONSTANTS_H
#define PORTFENCE_CORE_CONSTANTS_H

#include <linux/types.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* The algorithms, in the order of enum pf_algorithm and PF_BPF_ALGO_*.
 * The state file and the BPF config carry these numbers. */
#define PF_CORE_ALGO_SEQUENTIAL 0
#define PF_CORE_ALGO_RANDOM 1		/* RFC 6056 §3.3.1 */
#define PF_CORE_ALGO_RANDOM_REDRAW 2	/* RFC 6056 §3.3.2 */
#define PF_CORE_ALGO_HASH 3		/* RFC 6056 §3.3.3 */
#define PF_CORE_ALGO_DOUBLE_HASH 4	/* RFC 6056 §3.3.4 */
#define PF_CORE_ALGO_RANDOM_INCREMENTS 5	/* RFC 6056 §3.3.5 */
#define PF_CORE_ALGO_KERNEL 6		/* IP_LOCAL_PORT_RANGE (shim only) */
#define PF_CORE_ALGO_COUNT 7

/* An app's protocols (bit mask): stream (TCP, MPTCP), datagram (UDP,
 * UDP-Lite). */
#define PF_CORE_PROTO_TCP 1u
#define PF_CORE_PROTO_UDP 2u

/* A range's bounds: a port is 1..65535, so a range holds at most 65535. */
#define PF_CORE_PORT_MIN 1
#define PF_CORE_PORT_MAX 65535
/* RFC 6056 §3.3.4's table[] of per-destination-class counters. */
#define PF_CORE_DH_TABLE_LEN 256
/* RFC 6056 §3.3.5's N, as the RFC suggests it (capped below the range's
 * size: see pf_core_increments_n). */
#define PF_CORE_INCREMENTS_N 500

/* A record's event, as the shim's enum pf_event and the BPF records
 * carry it. */
#define PF_CORE_EVENT_ASSIGN 0
#define PF_CORE_EVENT_DENY 1
#define PF_CORE_EVENT_ERROR 2
#define PF_CORE_EVENT_AUDIT 3
/* the program bound a port of its own choosing (port != 0) */
#define PF_CORE_EVENT_BIND 4

/* The errno values the verdicts answer (Linux's asm-generic numbers;
 * core/decide.c asserts them against <errno.h>). */
#define PF_CORE_EPERM 1
#define PF_CORE_EAGAIN 11
#define PF_CORE_EACCES 13
#define PF_CORE_EADDRINUSE 98
#define PF_CORE_EADDRNOTAVAIL 99
/* An error record's errno when the BPF hooks could not see it: a call
 * that failed in the kernel after a hook had given its port. */
#define PF_CORE_ERROR_UNSEEN 0xffff

/* Address families as the kernel numbers them. */
#define PF_CORE_AF_INET 2
#define PF_CORE_AF_INET6 10

#endif
