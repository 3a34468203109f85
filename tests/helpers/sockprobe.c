/* sockprobe: a small client the integration tests run under the shim for
 * behaviour that stock clients cannot show (holding many connections,
 * churn, option survival, exhaustion, pass-through of foreign calls).
 * It prints what it observed; the tests compare that with what the
 * servers saw. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int parse_dest(const char *text, struct sockaddr_storage *addr, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof(host))
		return -1;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	int port = atoi(colon + 1);
	memset(addr, 0, sizeof(*addr));
	struct sockaddr_in *sin = (struct sockaddr_in *)addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
		return 0;
	}
	char *bare = host[0] == '[' ? host + 1 : host;
	bare[strcspn(bare, "]")] = '\0';
	if (inet_pton(AF_INET6, bare, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static int local_port(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return -1;
	if (local.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&local)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&local)->sin6_port);
}

/* hold N DEST...: N connections round-robin over DESTs, all open at once. */
static int cmd_hold(int n, char **dests, int ndest)
{
	int *fds = calloc((size_t)n, sizeof(int)), failures = 0;
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage addr;
		socklen_t len;
		if (parse_dest(dests[i % ndest], &addr, &len) < 0)
			return 2;
		fds[i] = socket(addr.ss_family, SOCK_STREAM, 0);
		if (connect(fds[i], (struct sockaddr *)&addr, len) < 0) {
			printf("fail %s %s\n", dests[i % ndest], strerror(errno));
			failures++;
			continue;
		}
		printf("ok %s %d\n", dests[i % ndest], local_port(fds[i]));
	}
	fflush(stdout);
	/* Let the servers record every connection before any closes. */
	usleep(300000);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return failures ? 1 : 0;
}

/* cycles N DEST: connect and close at once (the client first; the server
 * reads to the end and closes), N times.  across N DEST COMMAND: the
 * same, the shell COMMAND run after the first half (a route change).  A
 * connect gives up after 3 s.  Prints the failures, the connects of a
 * second or more (a SYN sent again) and the slowest; exits 0 whatever
 * they were: the test judges them. */
static int cmd_across(int n, const char *dest, const char *command)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int failures = 0, stalls = 0;
	double worst = 0;
	struct timeval limit = {.tv_sec = 3};

	if (parse_dest(dest, &addr, &len) < 0)
		return 2;
	for (int i = 0; i < n; i++) {
		if (command && i == n / 2 && system(command) != 0) {
			fprintf(stderr, "%s: failed\n", command);
			return 2;
		}
		struct timespec start, end;
		int fd = socket(addr.ss_family, SOCK_STREAM, 0);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
		clock_gettime(CLOCK_MONOTONIC, &start);
		int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&addr, len);
		clock_gettime(CLOCK_MONOTONIC, &end);
		double ms = (double)(end.tv_sec - start.tv_sec) * 1e3 + (double)(end.tv_nsec - start.tv_nsec) / 1e6;
		worst = ms > worst ? ms : worst;
		stalls += ms >= 1000;
		if (rc < 0 && failures++ < 3)
			fprintf(stderr, "connect %d: %s\n", i, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	printf("failures %d stalls %d worst_ms %.1f\n", failures, stalls, worst);
	return 0;
}

/* churn N DEST: connect, read the server's greeting, close (the client
 * first), N times. */
static int cmd_churn(int n, const char *dest)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int failures = 0;
	if (parse_dest(dest, &addr, &len) < 0)
		return 2;
	for (int i = 0; i < n; i++) {
		int fd = socket(addr.ss_family, SOCK_STREAM, 0);
		char greeting[8];
		if (fd < 0 || connect(fd, (struct sockaddr *)&addr, len) < 0) {
			if (failures++ < 5)
				fprintf(stderr, "connect %d: %s\n", i, strerror(errno));
		} else if (read(fd, greeting, sizeof(greeting)) <= 0) {
			if (failures++ < 5)
				fprintf(stderr, "read %d: %s\n", i, strerror(errno));
		}
		close(fd);
	}
	printf("failures %d of %d\n", failures, n);
	return failures ? 1 : 0;
}

static int flag_set(int fd, int level, int name)
{
	int value = 0;
	socklen_t len = sizeof(value);
	return getsockopt(fd, level, name, &value, &len) == 0 && value != 0;
}

/* options DEST: set options and flags, connect (non-blocking), report them. */
static int cmd_options(const char *dest)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int one = 1, fd;
	if (parse_dest(dest, &addr, &len) < 0)
		return 2;
	fd = socket(addr.ss_family, SOCK_STREAM, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	int before = fd;
	if (connect(fd, (struct sockaddr *)&addr, len) < 0 && errno != EINPROGRESS) {
		printf("connect failed %s\n", strerror(errno));
		return 1;
	}
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	poll(&pfd, 1, 3000);
	int error = 0;
	socklen_t elen = sizeof(error);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &elen);
	printf("fd_same %d\nconnected %d\nport %d\nnodelay %d\nkeepalive %d\nnonblock %d\ncloexec %d\n",
	       fd == before, error == 0, local_port(fd), flag_set(fd, IPPROTO_TCP, TCP_NODELAY),
	       flag_set(fd, SOL_SOCKET, SO_KEEPALIVE), (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0,
	       (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
	close(fd);
	return 0;
}

/* udp N DEST: N sockets, one datagram each, all kept open. */
static int cmd_udp(int n, const char *dest)
{
	struct sockaddr_storage addr;
	socklen_t len;
	if (parse_dest(dest, &addr, &len) < 0)
		return 2;
	int *fds = calloc((size_t)n, sizeof(int));
	for (int i = 0; i < n; i++) {
		fds[i] = socket(addr.ss_family, SOCK_DGRAM, 0);
		if (sendto(fds[i], "x", 1, 0, (struct sockaddr *)&addr, len) < 0)
			printf("err %s\n", errno == EAGAIN ? "EAGAIN" : strerror(errno));
		else
			printf("ok %d\n", local_port(fds[i]));
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

/* sendmmsg N DEST [DENIED]: one batch of N datagrams from an unbound UDP
 * socket; with DENIED, message N/2 goes there instead. */
static int cmd_sendmmsg(int n, const char *dest, const char *denied)
{
	struct sockaddr_storage addr, bad;
	socklen_t len, bad_len = 0;
	if (parse_dest(dest, &addr, &len) < 0 || (denied && parse_dest(denied, &bad, &bad_len) < 0))
		return 2;
	struct mmsghdr *msgs = calloc((size_t)n, sizeof(*msgs));
	struct iovec iov = {.iov_base = "x", .iov_len = 1};
	for (int i = 0; i < n; i++) {
		bool to_bad = denied && i == n / 2;
		msgs[i].msg_hdr.msg_name = to_bad ? &bad : &addr;
		msgs[i].msg_hdr.msg_namelen = to_bad ? bad_len : len;
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	int fd = socket(addr.ss_family, SOCK_DGRAM, 0);
	int sent = sendmmsg(fd, msgs, (unsigned)n, 0);
	printf("sent %d errno %s port %d\n", sent, sent < 0 ? strerror(errno) : "-", local_port(fd));
	close(fd);
	free(msgs);
	return 0;
}

static void report(const char *what, long rc)
{
	printf("%s rc=%ld errno=%s\n", what, rc, rc < 0 ? strerror(errno) : "-");
	errno = 0;
}

/* Addresses no program may read (NULL's page, past the user half):
 * the kernel says EFAULT, and so must the call under the shim, which
 * must not read them first.  Each on a fresh socket. */
static void bad_pointers(void)
{
	static const struct {
		const char *name;
		uintptr_t at;
	} bad[] = {{"0x10", 0x10}, {"-1", (uintptr_t)-1}};
	char line[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		void *p = (void *)bad[i].at;
		struct msghdr named = {.msg_name = p, .msg_namelen = sizeof(struct sockaddr_in)};
		struct mmsghdr batch = {.msg_hdr = named};
#define BAD(what, call)                                                       \
	do {                                                                  \
		snprintf(line, sizeof(line), "%s at %s", what, bad[i].name);  \
		report(line, call);                                           \
	} while (0)
		BAD("tcp connect", connect(socket(AF_INET, SOCK_STREAM, 0), p, sizeof(struct sockaddr_in)));
		BAD("udp connect", connect(socket(AF_INET6, SOCK_DGRAM, 0), p, sizeof(struct sockaddr_in6)));
		BAD("tcp bind", bind(socket(AF_INET, SOCK_STREAM, 0), p, sizeof(struct sockaddr_in)));
		BAD("udp sendto", sendto(socket(AF_INET, SOCK_DGRAM, 0), "x", 1, 0, p, sizeof(struct sockaddr_in)));
		BAD("udp sendmsg", sendmsg(socket(AF_INET, SOCK_DGRAM, 0), p, 0));
		BAD("udp sendmsg name", sendmsg(socket(AF_INET, SOCK_DGRAM, 0), &named, 0));
		BAD("udp sendmmsg", sendmmsg(socket(AF_INET, SOCK_DGRAM, 0), p, 1, 0));
		BAD("udp sendmmsg name", sendmmsg(socket(AF_INET, SOCK_DGRAM, 0), &batch, 1, 0));
#undef BAD
	}
}

/* A socket whose connect is under way (SYN_SENT: a listener whose
 * backlog is full drops the SYN) connecting elsewhere, even somewhere
 * the rules refuse: the kernel says EALREADY. */
static void still_connecting(void)
{
	struct sockaddr_in at = {.sin_family = AF_INET}, refused = {.sin_family = AF_INET, .sin_port = htons(80)};
	socklen_t at_len = sizeof(at);
	int listener = socket(AF_INET, SOCK_STREAM, 0);

	inet_pton(AF_INET, "127.0.0.1", &at.sin_addr);
	inet_pton(AF_INET, "192.0.2.1", &refused.sin_addr);
	bind(listener, (struct sockaddr *)&at, sizeof(at));
	listen(listener, 0);
	getsockname(listener, (struct sockaddr *)&at, &at_len);
	for (int i = 0; i < 3; i++) {
		int filler = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		connect(filler, (struct sockaddr *)&at, sizeof(at));
	}
	usleep(50000);
	int pending = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	report("connect to a full backlog", connect(pending, (struct sockaddr *)&at, sizeof(at)));
	report("connect elsewhere while connecting", connect(pending, (struct sockaddr *)&refused, sizeof(refused)));
}

/* passthrough DIR: calls the shim must not change, results printed. */
static int cmd_passthrough(const char *dir)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(9)};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int pair[2], pipefd[2];
	char buf[16];

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	report("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, pair));
	report("unix send", send(pair[0], "hi", 2, 0));
	report("unix sendto", sendto(pair[0], "hi", 2, 0, NULL, 0));
	report("unix recv", recv(pair[1], buf, sizeof(buf), 0));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/probe.sock", dir);
	unlink(sun.sun_path);
	int server = socket(AF_UNIX, SOCK_DGRAM, 0);
	report("unix bind", bind(server, (struct sockaddr *)&sun, sizeof(sun)));
	int unix_client = socket(AF_UNIX, SOCK_DGRAM, 0);
	report("unix connect", connect(unix_client, (struct sockaddr *)&sun, sizeof(sun)));
	report("unix dgram sendto", sendto(unix_client, "x", 1, 0, (struct sockaddr *)&sun, sizeof(sun)));
	report("unix listen dgram", listen(server, 1));
	int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl snl = {.nl_family = AF_NETLINK};
	report("netlink bind", bind(nl, (struct sockaddr *)&snl, sizeof(snl)));
	report("netlink port nonzero", local_port(nl) != 0 ? 1 : 0);
	report("connect fd -1", connect(-1, (struct sockaddr *)&sin, sizeof(sin)));
	/* A number surely closed (900 is where the shim keeps its log). */
	int closed_fd = dup(0);
	close(closed_fd);
	report("connect closed fd", connect(closed_fd, (struct sockaddr *)&sin, sizeof(sin)));
	report("pipe", pipe(pipefd));
	report("connect pipe", connect(pipefd[0], (struct sockaddr *)&sin, sizeof(sin)));
	report("sendto pipe", sendto(pipefd[1], "x", 1, 0, (struct sockaddr *)&sin, sizeof(sin)));
	int tcp = socket(AF_INET, SOCK_STREAM, 0);
	report("connect NULL", connect(tcp, NULL, sizeof(sin)));
	report("connect len 0", connect(tcp, (struct sockaddr *)&sin, 0));
	report("connect len short", connect(tcp, (struct sockaddr *)&sin, 4));
	report("bind NULL", bind(tcp, NULL, sizeof(sin)));
	report("bind len short", bind(tcp, (struct sockaddr *)&sin, 3));
	report("sendto unconnected tcp", sendto(tcp, "x", 1, MSG_NOSIGNAL, NULL, 0));
	report("sendmsg NULL", sendmsg(tcp, NULL, 0));
	report("sendmmsg NULL", sendmmsg(tcp, NULL, 1, 0));
	report("listen bad fd", listen(-5, 1));
	report("close bad fd", close(-1));
	report("dup2 bad fd", dup2(-1, 5));
	int udp = socket(AF_INET, SOCK_DGRAM, 0);
	report("udp sendto no dest", sendto(udp, "x", 1, 0, NULL, 0));
	report("udp sendto AF_UNSPEC len 2", sendto(udp, "x", 1, 0, (struct sockaddr *)&sin, 2));
	int listening = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in any = {.sin_family = AF_INET};
	report("listen bind", bind(listening, (struct sockaddr *)&any, sizeof(any)));
	report("listen", listen(listening, 4));
	struct sockaddr_in self;
	socklen_t self_len = sizeof(self);
	getsockname(listening, (struct sockaddr *)&self, &self_len);
	inet_pton(AF_INET, "127.0.0.1", &self.sin_addr);
	report("connect listening socket", connect(listening, (struct sockaddr *)&self, sizeof(self)));
	int client = socket(AF_INET, SOCK_STREAM, 0);
	report("connect to self", connect(client, (struct sockaddr *)&self, sizeof(self)) == 0 ? 0 : -1);
	report("connect already connected", connect(client, (struct sockaddr *)&self, sizeof(self)));
	report("bind already connected", bind(client, (struct sockaddr *)&any, sizeof(any)));
	report("listen already connected", listen(client, 1));
	struct sockaddr unspec = {.sa_family = AF_UNSPEC};
	report("udp connect AF_UNSPEC", connect(udp, &unspec, sizeof(unspec)));
	bad_pointers();
	/* A second bind: the kernel refuses it once the first gave a port
	 * (EINVAL), whatever the shim deferred. */
	struct sockaddr_in loop_any = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &loop_any.sin_addr);
	int twice = socket(AF_INET, SOCK_STREAM, 0);
	report("bind(addr, 0)", bind(twice, (struct sockaddr *)&loop_any, sizeof(loop_any)));
	report("bind(addr, 0) again", bind(twice, (struct sockaddr *)&loop_any, sizeof(loop_any)));
	loop_any.sin_port = htons(5557);
	report("bind(addr, 5557) after it", bind(twice, (struct sockaddr *)&loop_any, sizeof(loop_any)));
	/* An IPv6-only socket cannot reach an IPv4 address: the kernel's
	 * ENETUNREACH, not a refused bind of a v4-mapped source. */
	struct sockaddr_in6 mapped = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.sin6_addr);
	int only6 = socket(AF_INET6, SOCK_STREAM, 0), on = 1;
	setsockopt(only6, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	report("v6only tcp connect v4-mapped", connect(only6, (struct sockaddr *)&mapped, sizeof(mapped)));
	only6 = socket(AF_INET6, SOCK_DGRAM, 0);
	setsockopt(only6, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	report("v6only udp connect v4-mapped", connect(only6, (struct sockaddr *)&mapped, sizeof(mapped)));
	report("v6only udp sendto v4-mapped", sendto(only6, "x", 1, 0, (struct sockaddr *)&mapped, sizeof(mapped)));
	still_connecting();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "hold") == 0)
		return cmd_hold(atoi(argv[2]), argv + 3, argc - 3);
	if (argc == 5 && strcmp(argv[1], "across") == 0)
		return cmd_across(atoi(argv[2]), argv[3], argv[4]);
	if (argc == 4 && strcmp(argv[1], "cycles") == 0)
		return cmd_across(atoi(argv[2]), argv[3], NULL);
	if (argc == 4 && strcmp(argv[1], "churn") == 0)
		return cmd_churn(atoi(argv[2]), argv[3]);
	if (argc == 3 && strcmp(argv[1], "options") == 0)
		return cmd_options(argv[2]);
	if (argc == 4 && strcmp(argv[1], "udp") == 0)
		return cmd_udp(atoi(argv[2]), argv[3]);
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "sendmmsg") == 0)
		return cmd_sendmmsg(atoi(argv[2]), argv[3], argc == 5 ? argv[4] : NULL);
	if (argc == 3 && strcmp(argv[1], "passthrough") == 0)
		return cmd_passthrough(argv[2]);
	fprintf(stderr, "usage: sockprobe hold N DEST... | churn N DEST | cycles N DEST | across N DEST COMMAND | options DEST | udp N DEST | passthrough DIR\n");
	return 2;
}
