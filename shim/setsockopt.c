/* setsockopt and getsockopt, watched for what the connect path needs:
 * whether the program chose SO_REUSEADDR itself, and whether it steers
 * routing (then the kernel picks the source address at connect).
 *
 * A TCP client socket is bound with SO_REUSEADDR so that its port is
 * shared across destinations; the program must still read what it set.
 * Turning the option off at once would end the sharing for that port
 * (every later bind to it conflicts), so it is turned off when the
 * program looks at it or sets it, and only then. */
#include "core/hot.h"
#include "shim.h"

/* A SOL_SOCKET option that steers routing. */
static bool steers_routing(int name)
{
	return name == SO_BINDTODEVICE || name == SO_BINDTOIFINDEX || name == SO_MARK || name == SO_DONTROUTE;
}

PF_HOT int pf_setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	int result = real_setsockopt(fd, level, name, value, len);
	uint8_t bits;

	/* What follows touches only the fd table: errno stays libc's. */
	if (result != 0 || level != SOL_SOCKET || !pf_fd_ours(fd, &bits))
		return result;
	if (name == SO_REUSEADDR)
		pf_fd_set_options(fd, PF_FD_REUSE_APP, PF_FD_REUSE_OURS);
	else if (name == SO_LINGER && value && len >= sizeof(struct linger))
		pf_fd_note_linger(fd, ((const struct linger *)value)->l_onoff &&
					      !((const struct linger *)value)->l_linger);
	else if (steers_routing(name))
		pf_fd_set_options(fd, PF_FD_ROUTED, 0);
	return result;
}
