/* The kernel's socket tables, filtered by port range in the kernel. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernel/sockdiag.h"

struct seen {
	int count;
	struct pf_socket_entry entries[64];
};

static void remember(const struct pf_socket_entry *entry, void *ctx)
{
	struct seen *seen = ctx;
	if (seen->count < 64)
		seen->entries[seen->count] = *entry;
	seen->count++;
}

static int bound_socket(int family, int type, uint16_t *port)
{
	struct sockaddr_storage addr = {0};
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int fd = socket(family, type, 0);

	cr_assert_geq(fd, 0);
	addr.ss_family = (sa_family_t)family;
	if (family == AF_INET)
		((struct sockaddr_in *)&addr)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&addr)->sin6_addr = in6addr_loopback;
	cr_assert_eq(bind(fd, (struct sockaddr *)&addr, len), 0);
	if (type == SOCK_STREAM)
		cr_assert_eq(listen(fd, 1), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&addr)->sin_port
					: ((struct sockaddr_in6 *)&addr)->sin6_port);
	return fd;
}

static const struct pf_socket_entry *find(const struct seen *seen, uint16_t port, int protocol)
{
	for (int i = 0; i < seen->count && i < 64; i++)
		if (seen->entries[i].local_port == port && seen->entries[i].protocol == protocol)
			return &seen->entries[i];
	return NULL;
}

Test(sockdiag, dump_finds_only_the_ranges_asked)
{
	uint16_t tcp4, udp6, outside;
	int a = bound_socket(AF_INET, SOCK_STREAM, &tcp4);
	int b = bound_socket(AF_INET6, SOCK_DGRAM, &udp6);
	int c = bound_socket(AF_INET, SOCK_STREAM, &outside);
	struct pf_port_range ranges[] = {{tcp4, tcp4}, {udp6, udp6}};
	struct seen seen = {0};

	cr_assert_neq(outside, tcp4);
	cr_assert_eq(pf_sockdiag_dump_ports(ranges, 2, remember, &seen), 0);
	const struct pf_socket_entry *listener = find(&seen, tcp4, IPPROTO_TCP);
	cr_assert_not_null(listener);
	cr_expect_eq(listener->family, AF_INET);
	cr_expect_eq(listener->state, TCP_LISTEN);
	cr_expect_neq(listener->inode, 0u);
	const struct pf_socket_entry *udp = find(&seen, udp6, IPPROTO_UDP);
	cr_assert_not_null(udp);
	cr_expect_eq(udp->family, AF_INET6);
	cr_expect_eq(memcmp(udp->local_addr, &in6addr_loopback, 16), 0);
	cr_expect_null(find(&seen, outside, IPPROTO_TCP), "port %u is in no range", outside);
	for (int i = 0; i < seen.count && i < 64; i++)
		cr_expect(seen.entries[i].local_port == tcp4 || seen.entries[i].local_port == udp6,
			  "port %u reported", seen.entries[i].local_port);
	close(a);
	close(b);
	close(c);
}

Test(sockdiag, empty_range_list_finds_nothing)
{
	struct seen seen = {0};
	cr_expect_eq(pf_sockdiag_dump_ports(NULL, 0, remember, &seen), 0);
	cr_expect_eq(seen.count, 0);
}

static uint32_t inode_of(int fd)
{
	struct stat st;

	cr_assert_eq(fstat(fd, &st), 0);
	return (uint32_t)st.st_ino;
}

static int times_seen(const struct seen *seen, int fd)
{
	uint32_t inode = inode_of(fd);
	int times = 0;

	for (int i = 0; i < seen->count && i < 64; i++)
		times += seen->entries[i].inode == inode;
	return times;
}

static const struct pf_socket_entry *entry_of(const struct seen *seen, int fd)
{
	uint32_t inode = inode_of(fd);

	for (int i = 0; i < seen->count && i < 64; i++)
		if (seen->entries[i].inode == inode)
			return &seen->entries[i];
	return NULL;
}

/* TCP is dumped in one walk for both families (the older request with
 * AF_UNSPEC): each socket of either family is found, and only once. The
 * tests share the host's sockets with whatever else runs, so a socket is
 * told from others on the same port by its inode, not by a count. */
Test(sockdiag, one_tcp_walk_finds_both_families_once)
{
	uint16_t tcp4, tcp6;
	int a = bound_socket(AF_INET, SOCK_STREAM, &tcp4);
	int b = bound_socket(AF_INET6, SOCK_STREAM, &tcp6);
	struct pf_port_range ranges[] = {{tcp4, tcp4}, {tcp6, tcp6}};
	struct seen seen = {0};

	cr_assert_eq(pf_sockdiag_dump_ports(ranges, 2, remember, &seen), 0);
	cr_expect_eq(times_seen(&seen, a), 1, "the IPv4 listener reported %d times", times_seen(&seen, a));
	cr_expect_eq(times_seen(&seen, b), 1, "the IPv6 listener reported %d times", times_seen(&seen, b));
	const struct pf_socket_entry *v4 = entry_of(&seen, a), *v6 = entry_of(&seen, b);
	cr_assert_not_null(v4);
	cr_assert_not_null(v6);
	cr_expect_eq(v4->local_port, tcp4);
	cr_expect_eq(v6->local_port, tcp6);
	cr_expect_eq(v4->family, AF_INET);
	cr_expect_eq(v6->family, AF_INET6);
	cr_expect_eq(memcmp(v6->local_addr, &in6addr_loopback, 16), 0);
	close(a);
	close(b);
}
