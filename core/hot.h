/* Code layout for the shim's connect path.  PF_HOT functions go to
 * .text.hot, side by side: between two interposed calls the kernel's
 * work (about 12 µs per connect) evicts the shim's code from the first
 * level caches, and scattered over 80 KB of text the path missed on
 * most of its lines and pages again at each connect.  PF_COLD marks the
 * rare paths (.text.unlikely), so the hot ones stay dense. */
#ifndef PORTFENCE_CORE_HOT_H
#define PORTFENCE_CORE_HOT_H

#define PF_HOT __attribute__((hot))
#define PF_COLD __attribute__((cold))

#endif
