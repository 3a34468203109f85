/* The held 4-tuple each connected socket keeps in the app's memory until
 * it closes.  One word per fd, swapped out whole so that two closes never
 * release twice:  fork generation (12 bits) | slot (20) | key (32).
 *
 * A socket open across a fork lives on in the other process after one
 * side closes it, so its close then tells memory nothing, and the next
 * connect to that 4-tuple asks the kernel.  The generation counts forks
 * begun (the atfork prepare handler), so a socket that another thread
 * closes while a fork is under way counts as shared too. */
#include <string.h>

#include "core/hot.h"
#include "fdholds.h"

/* The holds close_range and closefrom keep at once (on the stack). */
#define TAKEN_HOLDS_MAX 64

PF_HOT_DATA _Atomic uint64_t pf_forks_begun;
PF_HOT_DATA _Atomic int pf_fd_holds_end;

void pf_fd_holds_fork_begins(void)
{
	atomic_fetch_add(&pf_forks_begun, 1);
}

/* Marks fd's hold as one of an older generation, as though a fork had
 * begun since it was kept: its close forgets the 4-tuple, not releases. */
void pf_fd_hold_shared(int fd)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE)
		return;
	_Atomic uint64_t *hold = &pf_fd_table[fd].hold;
	uint64_t word = atomic_load_explicit(hold, memory_order_acquire), now = pf_fd_hold_generation();
	uint64_t older = ((now + 0x800) & 0xfff) << PF_HOLD_GENERATION_SHIFT;

	while (word && word >> PF_HOLD_GENERATION_SHIFT == now &&
	       !atomic_compare_exchange_weak(hold, &word, (word & ((1ull << PF_HOLD_GENERATION_SHIFT) - 1)) | older))
		;
}

void pf_fd_holds_passed(const struct msghdr *msg)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			pf_fd_hold_shared(fd);
		}
	}
}

/* For a socket the kernel has already let go of (dup2 replaced it). */
void pf_fd_release_hold(int fd)
{
	int saved = errno;

	pf_fd_release_taken(pf_fd_take_hold(fd));
	errno = saved;
}

/* The holds of first..last, at most max of them, taken into `taken`;
 * *end: the last fd covered (last, or the fd of the max-th hold). */
static unsigned take_holds(unsigned int first, unsigned int last, struct pf_taken_hold *taken, unsigned max,
			   unsigned int *end)
{
	unsigned n = 0;

	*end = last;
	for (unsigned int fd = first; fd <= last && fd < PF_FD_TABLE_SIZE; fd++) {
		struct pf_taken_hold one = pf_fd_take_hold((int)fd);
		if (!one.word)
			continue;
		taken[n++] = one;
		if (n == max) {
			*end = fd;
			break;
		}
	}
	return n;
}

/* A close that failed closed nothing (close_range checks its flags, and
 * unshares the table, before it closes any fd): its sockets keep their
 * holds.  Their entries stay forgotten: the next call classifies them. */
static void put_back(const struct pf_taken_hold *taken, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct pf_fd_entry *entry = &pf_fd_table[taken[i].fd];
		if (taken[i].abortive)
			atomic_store_explicit(&entry->closes_abortively, 1, memory_order_relaxed);
		atomic_store_explicit(&entry->hold, taken[i].word, memory_order_release);
	}
}

int pf_fd_close_releasing(unsigned int first, unsigned int last, pf_close_piece_fn close_piece, void *arg)
{
	for (;;) {
		struct pf_taken_hold holds[TAKEN_HOLDS_MAX];
		unsigned int end;
		unsigned held = take_holds(first, last, holds, TAKEN_HOLDS_MAX, &end);
		pf_fd_forget_range(first, end);
		int result = close_piece(first, end, arg);
		int saved = errno;
		if (result != 0)
			put_back(holds, held);
		else
			for (unsigned i = 0; i < held; i++)
				pf_fd_release_taken(holds[i]);
		errno = saved;
		if (result != 0 || end >= last)
			return result;
		first = end + 1;
	}
}

/* At exit: the kernel closes what the program left open, past every
 * hook, so no close tells memory.  Each socket still holding a 4-tuple
 * is forgotten, left to the kernel as a socket open across a fork is:
 * the next connect to it asks, and finds it busy while the kernel
 * closes it, free once gone.  Kept, its claim counted as a connect under
 * way for a second, and a range of short-lived processes that exit
 * without closing looked full to the next ones.  Threads still running
 * may connect after the sweep: their claims lapse as before. */
__attribute__((destructor)) static void forget_holds_at_exit(void)
{
	int end = atomic_load_explicit(&pf_fd_holds_end, memory_order_acquire);

	if (!end)
		return;	/* no hold kept: the runtime is not asked for (or made) */
	const struct pf_runtime *rt = pf_runtime();
	if (rt->status != PF_STATUS_ACTIVE)
		return;
	for (int fd = 0; fd < end; fd++) {
		struct pf_taken_hold taken = pf_fd_take_hold(fd);
		if (taken.word) {
			struct pf_hold_ref hold = pf_fd_taken_ref(taken);
			pf_hold_forget(pf_runtime_state(rt), &hold);
		}
	}
}
