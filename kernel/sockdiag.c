/* One request, one answer: SOCK_DIAG_BY_FAMILY without NLM_F_DUMP makes
 * the kernel look the 4-tuple up in its established hash (TIME_WAIT
 * sockets included) and fall back to a listener on the local port.  The
 * calls are raw system calls: inside the shim they must not re-enter the
 * interposed socket functions, and errno is the caller's. */
#include "kernel/sockdiag.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A TIME_WAIT socket's timer runs TIME_WAIT_MS from its entry (or from
 * the peer's last retransmitted FIN); the kernel reports what is left
 * (idiag_expires, in whole jiffies).  A 4-tuple that entered TIME_WAIT
 * this instant is not yet free for a remote peer: our last ACK and the
 * new SYN leave from different CPUs and can swap on the way, and a SYN
 * that reaches the peer still in LAST_ACK is dropped and sent again a
 * second later (seen across a veth router, 1 run in 30).  The kernel
 * itself waits 1 s (tcp_tw_reuse_delay); 8 ms as reported is at least
 * two jiffies at HZ=250, over 4 ms of real age. */
#define TIME_WAIT_MS 60000u
#define TIME_WAIT_SETTLE_MS 8u

struct diag_request {
	struct nlmsghdr header;
	struct inet_diag_req_v2 body;
};

/* An IPv4-mapped IPv6 address is looked up as the IPv4 address it is:
 * the kernel hashes such connections with the IPv4 ones. */
static bool fill_end(const struct sockaddr *addr, int family, __be32 out[4], __be16 *port)
{
	memset(out, 0, 16);
	if (addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		out[0] = sin->sin_addr.s_addr;
		*port = sin->sin_port;
		return family == AF_INET;
	}
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
	if (family == AF_INET)
		memcpy(out, &sin6->sin6_addr.s6_addr[12], 4);
	else
		memcpy(out, sin6->sin6_addr.s6_addr, 16);
	*port = sin6->sin6_port;
	return true;
}

static bool v4_mapped(const struct sockaddr *addr)
{
	static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	return addr->sa_family == AF_INET6 &&
	       memcmp(((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr, prefix, 12) == 0;
}

static bool build_request(const struct sockaddr *local, const struct sockaddr *remote,
			  struct diag_request *req)
{
	int family = local->sa_family == AF_INET || (v4_mapped(local) && v4_mapped(remote))
			     ? AF_INET : AF_INET6;

	memset(req, 0, sizeof(*req));
	req->header.nlmsg_len = sizeof(*req);
	req->header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req->header.nlmsg_flags = NLM_F_REQUEST;
	req->body.sdiag_family = (__u8)family;
	req->body.sdiag_protocol = IPPROTO_TCP;
	req->body.idiag_states = ~0u;
	req->body.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req->body.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	return fill_end(local, family, req->body.id.idiag_src, &req->body.id.idiag_sport) &&
	       fill_end(remote, family, req->body.id.idiag_dst, &req->body.id.idiag_dport);
}

/* The answer to request seq; answers to requests that an interrupted
 * caller left behind on a kept socket are skipped. */
static enum pf_tuple_use read_answer(const char *buf, long len, uint32_t seq, bool *stale)
{
	const struct nlmsghdr *header = (const struct nlmsghdr *)buf;

	*stale = false;
	if (len < (long)sizeof(*header) || !NLMSG_OK(header, (unsigned)len))
		return PF_TUPLE_UNKNOWN;
	if (header->nlmsg_seq != seq) {
		*stale = true;
		return PF_TUPLE_UNKNOWN;
	}
	if (header->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *error = NLMSG_DATA(header);
		return error->error == -ENOENT ? PF_TUPLE_FREE : PF_TUPLE_UNKNOWN;
	}
	if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    header->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
		return PF_TUPLE_UNKNOWN;
	const struct inet_diag_msg *msg = NLMSG_DATA(header);
	/* A TIME_WAIT socket reports its substate: FIN_WAIT2 there means the
	 * peer has not closed yet, and a new SYN would meet its old socket. */
	if (msg->idiag_state == TCP_TIME_WAIT)
		return msg->idiag_expires > TIME_WAIT_MS - TIME_WAIT_SETTLE_MS ? PF_TUPLE_SETTLING
										: PF_TUPLE_TIME_WAIT;
	/* Timer 3 is the TIME_WAIT timer: an orphan in FIN_WAIT2. */
	if (msg->idiag_state == TCP_FIN_WAIT2 && msg->idiag_timer == 3)
		return PF_TUPLE_LINGERING;
	if (msg->idiag_state == TCP_FIN_WAIT1 || msg->idiag_state == TCP_CLOSING ||
	    msg->idiag_state == TCP_LAST_ACK)
		return PF_TUPLE_CLOSING;
	return msg->idiag_state == TCP_LISTEN ? PF_TUPLE_FREE : PF_TUPLE_BUSY;
}

static enum pf_tuple_use ask(long fd, struct diag_request *req)
{
	static _Atomic uint32_t next_seq = 1;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	char answer[512] __attribute__((aligned(8)));

	req->header.nlmsg_seq = atomic_fetch_add(&next_seq, 1);
	if (syscall(SYS_sendto, fd, req, sizeof(*req), 0, &kernel, sizeof(kernel)) != (long)sizeof(*req))
		return PF_TUPLE_UNKNOWN;
	/* The kernel answers within sendto: an empty queue means the answer
	 * went elsewhere (a reader sharing the socket), never a wait. */
	for (int reads = 0; reads < 8; reads++) {
		long n = syscall(SYS_recvfrom, fd, answer, sizeof(answer), MSG_DONTWAIT, NULL, NULL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		bool stale;
		enum pf_tuple_use use = read_answer(answer, n, req->header.nlmsg_seq, &stale);
		if (!stale)
			return use;
	}
	return PF_TUPLE_UNKNOWN;
}

enum pf_tuple_use pf_tcp_tuple_use(const struct sockaddr *local, const struct sockaddr *remote,
				   int netlink_fd)
{
	struct diag_request req;
	int saved = errno;
	long fd = netlink_fd;

	if (!build_request(local, remote, &req))
		return PF_TUPLE_UNKNOWN;
	if (fd < 0)
		fd = syscall(SYS_socket, AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	enum pf_tuple_use use = fd < 0 ? PF_TUPLE_UNKNOWN : ask(fd, &req);
	if (netlink_fd < 0 && fd >= 0)
		syscall(SYS_close, fd);
	errno = saved;
	return use;
}

/* ---- dump of the sockets in port ranges ---- */
/* For the tool only (never called inside the shim): plain libc calls. */

/* One block per range, walked in order: S_GE lo (no: next block), S_LE
 * hi (no: next block), then a JMP to the end, which accepts.  The last
 * block's "no" jumps past the end, which rejects.  The kernel's audit
 * follows the "yes" path and accepts a "no" only onto an op it passes
 * through, hence the linear layout and the JMP rather than a jump from
 * S_LE straight to the end. */
#define BLOCK_LEN (5 * sizeof(struct inet_diag_bc_op))
#define MAX_DUMP_RANGES 2048

static size_t build_port_filter(const struct pf_port_range *ranges, size_t count,
				struct inet_diag_bc_op *ops)
{
	size_t total = count * BLOCK_LEN;

	for (size_t i = 0; i < count; i++) {
		struct inet_diag_bc_op *block = ops + i * (BLOCK_LEN / sizeof(*ops));
		size_t at = i * BLOCK_LEN;
		bool last = i + 1 == count;
		/* From an op at offset op_at, the next block, or past the end. */
#define MISS(op_at) (unsigned short)(last ? total - (op_at) + 4 : at + BLOCK_LEN - (op_at))
		block[0] = (struct inet_diag_bc_op){INET_DIAG_BC_S_GE, 8, MISS(at)};
		block[1] = (struct inet_diag_bc_op){INET_DIAG_BC_NOP, 0, ranges[i].lo};
		block[2] = (struct inet_diag_bc_op){INET_DIAG_BC_S_LE, 8, MISS(at + 8)};
		block[3] = (struct inet_diag_bc_op){INET_DIAG_BC_NOP, 0, ranges[i].hi};
		block[4] = (struct inet_diag_bc_op){INET_DIAG_BC_JMP, 4,
						    (unsigned short)(total - (at + 16))};
#undef MISS
	}
	return total;
}

/* The request: the v2 header (SOCK_DIAG_BY_FAMILY, one family) or the
 * older TCPDIAG_GETSOCK one, whose family is AF_UNSPEC: the kernel then
 * walks its TCP tables once for IPv4 and IPv6 together instead of once
 * per family (the walk of every hash bucket is most of a dump's cost). */
struct dump_request {
	struct nlmsghdr header;
	union {
		struct inet_diag_req_v2 v2;
		struct inet_diag_req compat;
	} body;
	/* the filter attribute follows the body */
	char rest[NLA_HDRLEN + MAX_DUMP_RANGES * BLOCK_LEN];
};

static void entry_from_msg(const struct inet_diag_msg *msg, uint8_t protocol,
			   struct pf_socket_entry *entry)
{
	size_t addr_len = msg->idiag_family == AF_INET ? 4 : 16;

	memset(entry, 0, sizeof(*entry));
	entry->family = msg->idiag_family;
	entry->protocol = protocol;
	entry->state = msg->idiag_state;
	entry->local_port = ntohs(msg->id.idiag_sport);
	entry->remote_port = ntohs(msg->id.idiag_dport);
	memcpy(entry->local_addr, msg->id.idiag_src, addr_len);
	memcpy(entry->remote_addr, msg->id.idiag_dst, addr_len);
	entry->inode = msg->idiag_inode;
	entry->uid = msg->idiag_uid;
}

/* Reads the answers to one dump up to NLMSG_DONE: 1 when done, 0 to
 * read on, or -errno. */
static int read_dump(int fd, char *buf, size_t buf_len, uint16_t type, uint8_t protocol,
		     pf_socket_visit visit, void *ctx)
{
	ssize_t n = recv(fd, buf, buf_len, 0);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
		if (h->nlmsg_type == NLMSG_DONE)
			return 1;
		if (h->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *error = NLMSG_DATA(h);
			return error->error ? error->error : 1;
		}
		if (h->nlmsg_type != type || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
			continue;
		const struct inet_diag_msg *msg = NLMSG_DATA(h);
		if (msg->idiag_family != AF_INET && msg->idiag_family != AF_INET6)
			continue;
		struct pf_socket_entry entry;
		entry_from_msg(msg, protocol, &entry);
		visit(&entry, ctx);
	}
	return 0;
}

/* family AF_UNSPEC: the TCPDIAG_GETSOCK request (TCP only). */
static int dump_one(int fd, struct dump_request *req, const char *filter_attr, size_t filter_attr_len,
		    uint8_t family, uint8_t protocol, pf_socket_visit visit, void *ctx)
{
	static char buf[64 * 1024] __attribute__((aligned(8)));
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	size_t body = family == AF_UNSPEC ? sizeof(req->body.compat) : sizeof(req->body.v2);
	size_t len = NLMSG_LENGTH(body) + filter_attr_len;

	memset(&req->body, 0, sizeof(req->body));
	memmove((char *)req + NLMSG_LENGTH(body), filter_attr, filter_attr_len);
	req->header.nlmsg_len = (uint32_t)len;
	req->header.nlmsg_seq++;
	req->header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	if (family == AF_UNSPEC) {
		req->header.nlmsg_type = TCPDIAG_GETSOCK;
		req->body.compat.idiag_states = ~0u;
	} else {
		req->header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
		req->body.v2.sdiag_family = family;
		req->body.v2.sdiag_protocol = protocol;
		req->body.v2.idiag_states = ~0u;
	}
	if (sendto(fd, req, len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) != (ssize_t)len)
		return -errno;
	int rc;
	while ((rc = read_dump(fd, buf, sizeof(buf), req->header.nlmsg_type, protocol, visit, ctx)) == 0)
		;
	/* No diag module for this protocol here: nothing of it to show. */
	if (family != AF_UNSPEC && (rc == -ENOENT || rc == -EOPNOTSUPP))
		return 0;
	return rc < 0 ? rc : 0;
}

int pf_sockdiag_dump_ports(const struct pf_port_range *ranges, size_t count,
			   pf_socket_visit visit, void *ctx)
{
	static const uint8_t families[] = {AF_INET, AF_INET6};

	if (count == 0)
		return 0;
	if (count > MAX_DUMP_RANGES)
		return -E2BIG;
	struct dump_request *req = calloc(1, sizeof(*req));
	char *filter_attr = malloc(NLA_HDRLEN + count * BLOCK_LEN);
	if (!req || !filter_attr) {
		free(req);
		free(filter_attr);
		return -ENOMEM;
	}
	size_t filter_len = build_port_filter(ranges, count, (struct inet_diag_bc_op *)(filter_attr + NLA_HDRLEN));
	struct nlattr attr = {.nla_len = (uint16_t)(NLA_HDRLEN + filter_len), .nla_type = INET_DIAG_REQ_BYTECODE};
	memcpy(filter_attr, &attr, sizeof(attr));
	size_t attr_len = NLA_HDRLEN + filter_len;

	int rc = 0, fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		rc = -errno;
	/* TCP in one walk; a kernel refusing the old request, per family.  A
	 * refusal comes before any answer, so nothing is visited twice. */
	if (fd >= 0)
		rc = dump_one(fd, req, filter_attr, attr_len, AF_UNSPEC, IPPROTO_TCP, visit, ctx);
	if (rc == -EINVAL || rc == -ENOENT || rc == -EOPNOTSUPP) {
		rc = 0;
		for (size_t f = 0; rc == 0 && f < 2; f++)
			rc = dump_one(fd, req, filter_attr, attr_len, families[f], IPPROTO_TCP, visit, ctx);
	}
	for (size_t f = 0; fd >= 0 && rc == 0 && f < 2; f++)
		rc = dump_one(fd, req, filter_attr, attr_len, families[f], IPPROTO_UDP, visit, ctx);
	if (fd >= 0)
		close(fd);
	free(req);
	free(filter_attr);
	return rc;
}
