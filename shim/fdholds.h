/* The hold word each fd's entry keeps (fdholds.c says what it is for),
 * and the steps of a close and a new socket, inline: they run in every
 * connect cycle, and each call of its own was one more line of code
 * after the kernel's work (core/hot.h). */
#ifndef PF_SHIM_FDHOLDS_H
#define PF_SHIM_FDHOLDS_H

#include "core/holds.h"
#include "shim.h"

/* fork generation (12 bits) | slot (20) | key (32) */
#define PF_HOLD_GENERATION_SHIFT 52
#define PF_HOLD_SLOT_SHIFT 32
#define PF_HOLD_SLOT_MASK ((1ull << 20) - 1)

/* Forks begun (the atfork prepare handler counts them). */
extern _Atomic uint64_t pf_forks_begun __attribute__((visibility("hidden")));

static inline uint64_t pf_fd_hold_generation(void)
{
	return atomic_load_explicit(&pf_forks_begun, memory_order_acquire) & 0xfff;
}

/* One past the highest fd that has kept a hold: how far the exit's
 * sweep (fdholds.c) looks. */
extern _Atomic int pf_fd_holds_end __attribute__((visibility("hidden")));

static inline void pf_fd_note_holder(int fd)
{
	int end = atomic_load_explicit(&pf_fd_holds_end, memory_order_relaxed);

	while (fd >= end && !atomic_compare_exchange_weak(&pf_fd_holds_end, &end, fd + 1))
		;
}

/* The connected socket on fd keeps its hold until its close. */
static inline void pf_fd_keep_hold(int fd, const struct pf_hold_ref *hold)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE || hold->slot > PF_HOLD_SLOT_MASK)
		return;
	pf_fd_note_holder(fd);
	atomic_store_explicit(&pf_fd_table[fd].hold,
			      pf_fd_hold_generation() << PF_HOLD_GENERATION_SHIFT |
				      (uint64_t)hold->slot << PF_HOLD_SLOT_SHIFT | hold->key,
			      memory_order_release);
}

/* The fd's entry gives up its hold (the word is 0 when it kept none).
 * Taken before the fd is closed: once the number is free, another
 * thread's new socket may take it, and its entry is not ours to clear. */
static inline struct pf_taken_hold pf_fd_take_hold(int fd)
{
	struct pf_taken_hold taken = {.fd = fd};

	if (fd < 0 || fd >= PF_FD_TABLE_SIZE ||
	    !atomic_load_explicit(&pf_fd_table[fd].hold, memory_order_relaxed))
		return taken;
	taken.word = atomic_exchange(&pf_fd_table[fd].hold, 0);
	if (!taken.word)
		return taken;
	/* Only the close that took the hold reads the flag: a plain load
	 * and store, no second locked exchange. */
	taken.abortive = atomic_load_explicit(&pf_fd_table[fd].closes_abortively, memory_order_relaxed);
	if (taken.abortive)
		atomic_store_explicit(&pf_fd_table[fd].closes_abortively, 0, memory_order_relaxed);
	return taken;
}

/* The table slot and key a taken hold names. */
static inline struct pf_hold_ref pf_fd_taken_ref(struct pf_taken_hold taken)
{
	return (struct pf_hold_ref){
		.slot = (uint32_t)((taken.word >> PF_HOLD_SLOT_SHIFT) & PF_HOLD_SLOT_MASK),
		.key = (uint32_t)taken.word,
	};
}

/* Memory frees the 4-tuple once the kernel has: released after the
 * close, never before.  Another process given the 4-tuple while our
 * socket still held it would fail its connect (EADDRNOTAVAIL, or
 * ECONNREFUSED from the server's side of our connection): seen when a
 * process lost the CPU between the release and the close. */
static inline void pf_fd_release_taken(struct pf_taken_hold taken)
{
	if (!taken.word)
		return;
	const struct pf_runtime *rt = pf_runtime();
	struct pf_hold_ref hold = pf_fd_taken_ref(taken);
	if (rt->status != PF_STATUS_ACTIVE)
		return;
	if (taken.word >> PF_HOLD_GENERATION_SHIFT != pf_fd_hold_generation())
		pf_hold_forget(pf_runtime_state(rt), &hold);
	else
		pf_hold_release(pf_runtime_state(rt), &hold, taken.abortive ? 0 : pf_hold_now_ms());
}

/* A new socket on fd: nothing of the old one's is kept (a hold is left
 * only where the program closed it past the hooks: a raw system call). */
static inline void pf_fd_new_socket(int fd)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE)
		return;
	if (atomic_load_explicit(&pf_fd_table[fd].hold, memory_order_relaxed))
		pf_fd_release_hold(fd);
	if (atomic_load_explicit(&pf_fd_table[fd].closes_abortively, memory_order_relaxed))
		atomic_store_explicit(&pf_fd_table[fd].closes_abortively, 0, memory_order_relaxed);
}

#endif
