#include "shim.h"

PF_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	return pf_sendmsg(fd, msg, flags);
}
