/* CLOCK_MONOTONIC in ns, for bounded waits: the shim's, and the ring's
 * drain (record/ring.c), which runs in the shim and in the collector. */
#ifndef PORTFENCE_CORE_CLOCK_H
#define PORTFENCE_CORE_CLOCK_H

#include <time.h>

/* clock_gettime: libc's, or the vDSO's own entry where the shim found it
 * (real.c).  libc's wrapper reads the vDSO's address from the dynamic
 * loader's data: its code and that data are more lines, on two more
 * pages, to bring back after each connect's kernel work (core/hot.h). */
typedef int (*pf_clock_fn)(clockid_t, struct timespec *);
extern pf_clock_fn pf_clock_gettime;

static inline long pf_monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec * 1000000000L + now.tv_nsec;
}

#endif
