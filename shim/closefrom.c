/* closefrom: as close_range to the last fd. */
#include "shim.h"

void pf_closefrom(int low_fd)
{
	if (low_fd < 0)
		low_fd = 0;
	struct pf_taken_hold holds[PF_TAKEN_HOLDS_MAX];

	pf_fd_forget_range((unsigned)low_fd, ~0u);
	unsigned held = pf_fd_take_holds((unsigned)low_fd, ~0u, holds, PF_TAKEN_HOLDS_MAX);
	pf_fd_lock();
	int log = pf_log_fd();
	if (log >= low_fd)
		pf_close_range_sparing_log((unsigned)low_fd, ~0u, 0);
	else
		real_closefrom(low_fd);
	pf_fd_unlock();
	for (unsigned i = 0; i < held; i++)
		pf_fd_release_taken(holds[i]);
}
