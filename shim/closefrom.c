/* closefrom: as close_range to the last fd, in pieces of at most
 * PF_TAKEN_HOLDS_MAX held sockets (close_range.c says why). */
#include "shim.h"

void pf_closefrom(int low_fd)
{
	unsigned int first = low_fd < 0 ? 0 : (unsigned)low_fd, end;

	do {
		struct pf_taken_hold holds[PF_TAKEN_HOLDS_MAX];
		unsigned held = pf_fd_take_holds(first, ~0u, holds, PF_TAKEN_HOLDS_MAX, &end);
		pf_fd_forget_range(first, end);
		pf_fd_lock();
		int log = pf_log_fd();
		if (end != ~0u || (log >= 0 && (unsigned)log >= first))
			pf_close_range_sparing_log(first, end, 0);
		else
			real_closefrom((int)first);
		pf_fd_unlock();
		for (unsigned i = 0; i < held; i++)
			pf_fd_release_taken(holds[i]);
		first = end + 1;
	} while (end != ~0u);
}
