/* Swapping a spent socket for a fresh one the application cannot tell
 * apart: same fd number, same file flags, same socket options. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif

struct option_id {
	int level, name;
};

/* What an application plausibly sets before connect().  Values are
 * compared as bytes, so ints, struct linger, struct timeval and the
 * string options all copy the same way. */
static const struct option_id socket_options[] = {
	{SOL_SOCKET, SO_KEEPALIVE}, {SOL_SOCKET, SO_LINGER}, {SOL_SOCKET, SO_RCVBUF},
	{SOL_SOCKET, SO_SNDBUF}, {SOL_SOCKET, SO_RCVTIMEO}, {SOL_SOCKET, SO_SNDTIMEO},
	{SOL_SOCKET, SO_PRIORITY}, {SOL_SOCKET, SO_MARK}, {SOL_SOCKET, SO_OOBINLINE},
	{SOL_SOCKET, SO_BROADCAST}, {SOL_SOCKET, SO_BINDTODEVICE}, {SOL_SOCKET, SO_REUSEPORT},
	{SOL_SOCKET, SO_RCVLOWAT}, {SOL_SOCKET, SO_TIMESTAMP}, {SOL_SOCKET, SO_BUSY_POLL},
	{SOL_SOCKET, SO_ZEROCOPY}, {SOL_SOCKET, SO_DONTROUTE},
	{IPPROTO_IP, IP_TOS}, {IPPROTO_IP, IP_TTL}, {IPPROTO_IP, IP_FREEBIND},
	{IPPROTO_IP, IP_TRANSPARENT}, {IPPROTO_IP, IP_MTU_DISCOVER}, {IPPROTO_IP, IP_RECVERR},
	{IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT}, {IPPROTO_IP, IP_LOCAL_PORT_RANGE},
};

static const struct option_id tcp_options[] = {
	{IPPROTO_TCP, TCP_NODELAY}, {IPPROTO_TCP, TCP_MAXSEG}, {IPPROTO_TCP, TCP_CORK},
	{IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL}, {IPPROTO_TCP, TCP_KEEPCNT},
	{IPPROTO_TCP, TCP_SYNCNT}, {IPPROTO_TCP, TCP_LINGER2}, {IPPROTO_TCP, TCP_WINDOW_CLAMP},
	{IPPROTO_TCP, TCP_QUICKACK}, {IPPROTO_TCP, TCP_CONGESTION},
	{IPPROTO_TCP, TCP_USER_TIMEOUT}, {IPPROTO_TCP, TCP_NOTSENT_LOWAT},
	{IPPROTO_TCP, TCP_FASTOPEN_CONNECT},
};

static const struct option_id ipv6_options[] = {
	{IPPROTO_IPV6, IPV6_V6ONLY}, {IPPROTO_IPV6, IPV6_TCLASS},
	{IPPROTO_IPV6, IPV6_UNICAST_HOPS}, {IPPROTO_IPV6, IPV6_RECVERR},
	{IPPROTO_IPV6, IPV6_MTU_DISCOVER},
};

static void copy_option(int from, int to, struct option_id id)
{
	unsigned char old_value[64], new_value[64];
	socklen_t old_len = sizeof(old_value), new_len = sizeof(new_value);

	if (getsockopt(from, id.level, id.name, old_value, &old_len) < 0)
		return;
	if (getsockopt(to, id.level, id.name, new_value, &new_len) == 0 && old_len == new_len &&
	    memcmp(old_value, new_value, old_len) == 0)
		return;
	/* The kernel reports buffer sizes doubled and doubles what is set. */
	if (id.level == SOL_SOCKET && (id.name == SO_RCVBUF || id.name == SO_SNDBUF) &&
	    old_len == sizeof(int)) {
		int half;
		memcpy(&half, old_value, sizeof(half));
		half /= 2;
		memcpy(old_value, &half, sizeof(half));
	}
	setsockopt(to, id.level, id.name, old_value, old_len);
}

static void copy_options(int from, int to, const struct pf_sock *sock)
{
	for (size_t i = 0; i < sizeof(socket_options) / sizeof(*socket_options); i++)
		copy_option(from, to, socket_options[i]);
	if (!sock->udp)
		for (size_t i = 0; i < sizeof(tcp_options) / sizeof(*tcp_options); i++)
			copy_option(from, to, tcp_options[i]);
	if (sock->family == AF_INET6)
		for (size_t i = 0; i < sizeof(ipv6_options) / sizeof(*ipv6_options); i++)
			copy_option(from, to, ipv6_options[i]);
}

int pf_replace_socket(struct pf_sock *sock)
{
	int status_flags = fcntl(sock->fd, F_GETFL);
	int fd_flags = fcntl(sock->fd, F_GETFD);
	int protocol;
	socklen_t len = sizeof(protocol);

	if (status_flags < 0 || fd_flags < 0)
		return -1;
	if (getsockopt(sock->fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) < 0)
		protocol = sock->protocol;
	int fresh = real_socket(sock->family, sock->type | SOCK_CLOEXEC, protocol);
	if (fresh < 0)
		return -1;
	copy_options(sock->fd, fresh, sock);
	int file_flags = status_flags & (O_NONBLOCK | O_ASYNC);
	if (file_flags && fcntl(fresh, F_SETFL, file_flags) < 0)
		goto fail;
	if (real_dup3(fresh, sock->fd, fd_flags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0)
		goto fail;
	real_close(fresh);
	return 0;
fail:;
	int saved = errno;
	real_close(fresh);
	errno = saved;
	return -1;
}
