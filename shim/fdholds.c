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

/* The holds close_range and closefrom keep at once (on the stack). */
#define TAKEN_HOLDS_MAX 64

PF_HOT_DATA static _Atomic uint64_t forks_begun;

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

/* The fd's entry gives up its hold (the word is 0 when it kept none).
 * Taken before the fd is closed: once the number is free, another
 * thread's new socket may take it, and its entry is not ours to clear. */
PF_HOT struct pf_taken_hold pf_fd_take_hold(int fd)
{
	struct pf_taken_hold taken = {0};

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

/* Memory frees the 4-tuple once the kernel has: released after the
 * close, never before.  Another process given the 4-tuple while our
 * socket still held it would fail its connect (EADDRNOTAVAIL, or
 * ECONNREFUSED from the server's side of our connection): seen when a
 * process lost the CPU between the release and the close. */
PF_HOT void pf_fd_release_taken(struct pf_taken_hold taken)
{
	if (!taken.word)
		return;
	const struct pf_runtime *rt = pf_runtime();
	struct pf_hold_ref hold = {
		.slot = (uint32_t)((taken.word >> SLOT_SHIFT) & SLOT_MASK), .key = (uint32_t)taken.word,
	};
	if (rt->status != PF_STATUS_ACTIVE)
		return;
	if (taken.word >> GENERATION_SHIFT != generation())
		pf_hold_forget(pf_runtime_state(rt), &hold);
	else
		pf_hold_release(pf_runtime_state(rt), &hold, taken.abortive ? 0 : pf_hold_now_ms());
}

/* For a socket the kernel has already let go of (dup2 replaced it). */
PF_HOT void pf_fd_release_hold(int fd)
{
	pf_fd_release_taken(pf_fd_take_hold(fd));
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

int pf_fd_close_releasing(unsigned int first, unsigned int last, pf_close_piece_fn close_piece, void *arg)
{
	for (;;) {
		struct pf_taken_hold holds[TAKEN_HOLDS_MAX];
		unsigned int end;
		unsigned held = take_holds(first, last, holds, TAKEN_HOLDS_MAX, &end);
		pf_fd_forget_range(first, end);
		int result = close_piece(first, end, arg);
		int saved = errno;
		for (unsigned i = 0; i < held; i++)
			pf_fd_release_taken(holds[i]);
		errno = saved;
		if (result != 0 || end >= last)
			return result;
		first = end + 1;
	}
}
