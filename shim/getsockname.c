/* getsockname: a deferred bind(addr, 0) gets its port when the program
 * asks for the name. */
#include <errno.h>
#include <netinet/in.h>

#include "shim.h"

/* A socket whose bind(addr, 0) we deferred gets its port when the
 * program asks for its name: it must see a real port from the range. */
int pf_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct pf_sock sock;

	if (fd >= 0 && fd < PF_FD_TABLE_SIZE &&
	    (atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed) &
	     (PF_FD_STATUS_MASK | PF_FD_ADDRESS | PF_FD_UDP)) == (PF_FD_FRESH | PF_FD_ADDRESS) &&
	    pf_sock_lookup(fd, &sock) && !pf_program_defers_port(fd)) {
		struct sockaddr_storage bound;
		socklen_t bound_len = sizeof(bound);
		if (real_getsockname(fd, (struct sockaddr *)&bound, &bound_len) == 0) {
			struct pf_call call = {
				.action = PF_ACT_NAME, .bind_addr = (struct sockaddr *)&bound,
				.bind_len = bound_len,
			};
			pf_managed(&sock, &call, true);
		}
	}
	return real_getsockname(fd, addr, len);
}
