#include "shim.h"

PF_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	if (msg && pf_send_passes(fd, msg->msg_name != NULL))
		return pf_fast_real_sendmsg(fd, msg, flags);
	return pf_sendmsg(fd, msg, flags);
}
