/* closefrom: as close_range to the last fd (pf_fd_close_releasing);
 * libc's own closefrom for the rest once the log's fd is below it. */
#include "shim.h"

/* closefrom returns nothing: a piece that fails leaves the next ones
 * to try. */
static int close_piece(unsigned int first, unsigned int end, void *unused)
{
	(void)unused;
	pf_fd_lock();
	int log = pf_log_fd();
	if (end != ~0u || (log >= 0 && (unsigned)log >= first))
		pf_close_range_sparing_log(first, end, 0);
	else
		real_closefrom((int)first);
	pf_fd_unlock();
	return 0;
}

void pf_closefrom(int low_fd)
{
	pf_fd_close_releasing(low_fd < 0 ? 0 : (unsigned)low_fd, ~0u, close_piece, NULL);
}
