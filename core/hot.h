/* Layout for the shim's connect cycle (socket, connect, setsockopt,
 * close).  Between two interposed calls the kernel's work (about 12 µs
 * per connect) evicts the shim's lines from the first level caches and
 * its pages from the TLB, so what a connect costs above the system calls
 * it makes is mostly how many lines it brings back (2-4 ns each here)
 * and, less, how many pages they lie on (docs/performance.md,
 * 2026-12-04).
 *
 * PF_HOT functions go to .text.hot, which shim/hot.ld puts ahead of the
 * rest of the code, side by side; PF_COLD marks the rare paths
 * (.text.unlikely), so the hot ones stay dense.  PF_HOT_DATA variables
 * (then PF_HOT_LINES', then PF_HOT_TAIL's: a large struct whose first
 * line holds the hot fields) share section pf_hot, a few lines on one page, instead
 * of lying one per line across six pages of .data and .bss.  Outside
 * the shim's link the sections are ordinary data. */
#ifndef PORTFENCE_CORE_HOT_H
#define PORTFENCE_CORE_HOT_H

#define PF_HOT __attribute__((hot))
#define PF_COLD __attribute__((cold))
#define PF_HOT_DATA __attribute__((section("pf_hot_data")))
/* A hot array or table of its own lines (pf_resolved, the decision
 * memo): after the scalars, from a line boundary, so that the part a
 * connect reads is one line. */
#define PF_HOT_LINES __attribute__((section("pf_hot_lines"), aligned(64)))
#define PF_HOT_TAIL __attribute__((section("pf_hot_tail"), aligned(64)))

#endif
