/* sendmsg: as sendto, the destination in the message header. */
#include <errno.h>

#include "shim.h"

ssize_t pf_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct pf_sock sock;

	/* Passed through: the hot path, decided from the fd table without a
	 * system call, or a socket that is not ours (a UNIX socket may pass
	 * fds: read once the kernel has, so never from a bad pointer). */
	if (!pf_user_readable(msg, sizeof(*msg)) || pf_send_passes(fd, msg->msg_name != NULL) ||
	    !pf_sock_lookup(fd, &sock)) {
		ssize_t sent = real_sendmsg(fd, msg, flags);
		if (sent >= 0 && msg && msg->msg_controllen)
			pf_fd_holds_passed(msg);
		return sent;
	}
	struct pf_call call = {
		.action = PF_ACT_SENDMSG, .dest = msg->msg_name, .dest_len = msg->msg_namelen,
		.msg = msg, .flags = flags,
	};
	return pf_managed_send(&sock, &call);
}
