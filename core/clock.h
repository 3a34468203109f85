/* CLOCK_MONOTONIC in ns, for bounded waits: the shim's, and the ring's
 * drain (record/ring.c), which runs in the shim and in the collector. */
#ifndef PORTFENCE_CORE_CLOCK_H
#define PORTFENCE_CORE_CLOCK_H

#include <time.h>

static inline long pf_monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec * 1000000000L + now.tv_nsec;
}

#endif
