/* The held 4-tuple each connected socket keeps in the app's memory until
 * it closes.  One word per fd, swapped out whole so that two closes never
 * release twice:  fork generation (12 bits) | slot (20) | key (32).
 *
 * A socket open across a fork lives on in the other process after one
 * side closes it, so its close then tells memory nothing, and the next
 * connect to that 4-tuple asks the kernel.  The generation counts forks
 * begun (the atfork prepare handler), so a socket that another thread
 * closes while a fork is under way counts as shared too. */
#include "core/hot.h"
#include "shim.h"

#define GENERATION_SHIFT 52
#define SLOT_SHIFT 32
#define SLOT_MASK ((1ull << 20) - 1)

/* Both live in the fd's entry (shim.h, pf_fd_table): the hold word, and
 * whether the program asked for an abortive close (SO_LINGER on, 0 s):
 * its 4-tuple is gone the moment it closes, with no quarantine. */

PF_HOT void pf_fd_note_linger(int fd, bool abortive)
{
	if (fd >= 0 && fd < PF_FD_TABLE_SIZE)
		atomic_store_explicit(&pf_fd_table[fd].closes_abortively, abortive, memory_order_relaxed);
}
static _Atomic uint64_t forks_begun;

void pf_fd_holds_fork_begins(void)
{
	atomic_fetch_add(&forks_begun, 1);
}

static PF_HOT uint64_t generation(void)
{
	return atomic_load_explicit(&forks_begun, memory_order_acquire) & 0xfff;
}

/* A new socket on fd: nothing of the old one's is kept. */
PF_HOT void pf_fd_new_socket(int fd)
{
	pf_fd_release_hold(fd);
	pf_fd_note_linger(fd, false);
}

PF_HOT void pf_fd_keep_hold(int fd, const struct pf_hold_ref *hold)
{
	if (fd >= 0 && fd < PF_FD_TABLE_SIZE && hold->slot <= SLOT_MASK)
		atomic_store_explicit(&pf_fd_table[fd].hold,
				      generation() << GENERATION_SHIFT |
					      (uint64_t)hold->slot << SLOT_SHIFT | hold->key,
				      memory_order_release);
}

PF_HOT void pf_fd_release_hold(int fd)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE ||
	    !atomic_load_explicit(&pf_fd_table[fd].hold, memory_order_relaxed))
		return;
	uint64_t kept = atomic_exchange(&pf_fd_table[fd].hold, 0);
	if (!kept)
		return;
	/* Only the close that took the hold reads the flag: a plain load
	 * and store, no second locked exchange. */
	bool abortive = atomic_load_explicit(&pf_fd_table[fd].closes_abortively, memory_order_relaxed);
	if (abortive)
		atomic_store_explicit(&pf_fd_table[fd].closes_abortively, 0, memory_order_relaxed);
	const struct pf_runtime *rt = pf_runtime();
	struct pf_hold_ref hold = {
		.slot = (uint32_t)((kept >> SLOT_SHIFT) & SLOT_MASK), .key = (uint32_t)kept,
	};
	if (rt->status != PF_STATUS_ACTIVE)
		return;
	if (kept >> GENERATION_SHIFT != generation())
		pf_hold_forget(pf_runtime_state(rt), &hold);
	else
		pf_hold_release(pf_runtime_state(rt), &hold, abortive ? 0 : pf_hold_now_ms());
}

void pf_fd_release_holds(unsigned int first, unsigned int last)
{
	for (unsigned int fd = first; fd <= last && fd < PF_FD_TABLE_SIZE; fd++)
		pf_fd_release_hold((int)fd);
}
