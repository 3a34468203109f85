#include "shim.h"

PF_EXPORT int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	return pf_sendmmsg(fd, msgs, vlen, flags);
}
