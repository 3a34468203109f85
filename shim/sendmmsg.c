/* sendmmsg: the first message takes the port; the destination rules
 * judge each message. */
#include <errno.h>
#include <netinet/in.h>

#include "shim.h"

/* The first message the policy refuses ends the batch, as a failing
 * message does in the kernel's own sendmmsg. */
static unsigned permitted_prefix(const struct pf_runtime *rt, struct mmsghdr *msgs,
				 unsigned vlen, int *refused_at)
{
	*refused_at = -1;
	if (rt->status != PF_STATUS_ACTIVE || !rt->rules)
		return vlen;
	for (unsigned i = 0; i < vlen; i++) {
		const struct msghdr *m = &msgs[i].msg_hdr;
		if (pf_inet_address(m->msg_name, m->msg_namelen) &&
		    !pf_app_permits(rt->app, m->msg_name, m->msg_namelen)) {
			*refused_at = (int)i;
			return i;
		}
	}
	return vlen;
}

static int send_batch(struct pf_sock *sock, struct mmsghdr *msgs, unsigned vlen, int flags)
{
	const struct pf_runtime *rt = pf_runtime();
	int refused_at;
	unsigned allowed = permitted_prefix(rt, msgs, vlen, &refused_at);
	struct pf_call first = {
		.action = PF_ACT_SENDMSG, .dest = msgs[0].msg_hdr.msg_name,
		.dest_len = msgs[0].msg_hdr.msg_namelen, .msg = &msgs[0].msg_hdr, .flags = flags,
	};

	if (refused_at >= 0 && rt->mode == PF_MODE_ENFORCE) {
		const struct msghdr *m = &msgs[refused_at].msg_hdr;
		pf_audit_event(rt, sock, PF_EVENT_DENY, NULL, m->msg_name, EPERM);
		if (allowed == 0) {
			errno = EPERM;
			return -1;
		}
		vlen = allowed;
	}
	/* The first message takes the port (and is checked and audited as a
	 * sendmsg); the rest follow on the now bound socket. */
	ssize_t sent = pf_managed_send(sock, &first);
	if (sent < 0)
		return -1;
	msgs[0].msg_len = (unsigned)sent;
	if (vlen == 1)
		return 1;
	int rest = real_sendmmsg(sock->fd, msgs + 1, vlen - 1, flags);
	return rest < 0 ? 1 : rest + 1;
}

/* A UNIX socket's messages may pass fds: read once the kernel has sent
 * them, so never from a bad pointer. */
static int sent_passing(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	int sent = real_sendmmsg(fd, msgs, vlen, flags);

	for (int i = 0; i < sent; i++)
		if (msgs[i].msg_hdr.msg_controllen)
			pf_fd_holds_passed(&msgs[i].msg_hdr);
	return sent;
}

int pf_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	struct pf_sock sock;

	if (vlen == 0 || !pf_user_readable(msgs, (size_t)vlen * sizeof(*msgs)) || !pf_sock_lookup(fd, &sock) ||
	    !pf_send_is_ours(&sock, flags))
		return sent_passing(fd, msgs, vlen, flags);
	const struct msghdr *head = &msgs[0].msg_hdr;
	bool has_dest = pf_inet_address(head->msg_name, head->msg_namelen);
	const struct pf_runtime *rt = pf_runtime();
	bool checks_dests = rt->status == PF_STATUS_DENY ||
			    (rt->status == PF_STATUS_ACTIVE && rt->rules && pf_runtime_manages(rt, &sock));
	if (!pf_send_needs_port(&sock, has_dest, flags) && !checks_dests)
		return real_sendmmsg(fd, msgs, vlen, flags);
	return send_batch(&sock, msgs, vlen, flags);
}
