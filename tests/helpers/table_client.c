/* table_client: the one client of the behaviour table (test_table.c).
 * It makes one kind of call on one kind of socket and prints one line:
 *
 *     PORT RESULT STEP
 *
 * PORT is the local port the socket holds at the end (getsockname; 0 when
 * it holds none or its bind or listen failed), RESULT is OK or the errno name of the first call that
 * failed, STEP names that call ("-" when all succeeded).  The same
 * dynamic binary runs under `portfence run` (the shim) and under
 * `portfence run --bpf`, so both backends are judged on one program.
 *
 *   usage: table-client SOCK ACTION HOLD ADDR PORT [ARG]
 *   SOCK    tcp4 tcp6 udp4 udp6 udplite4 udplite6 mptcp4 mptcp6 icmp4 icmp6
 *   ACTION  connect    connect(ADDR:PORT), then talk to the server
 *           bind0      bind(wildcard, 0), then connect
 *           bindaddr   bind(loopback, 0), then connect
 *           bindport   bind(wildcard, ARG), then connect (an explicit bind)
 *           sendto     sendto(ADDR:PORT) on the unbound UDP socket
 *           bind0sendto bind(wildcard, 0), then sendto(ADDR:PORT) (UDP)
 *           fastopen   sendto(ADDR:PORT, MSG_FASTOPEN) on the unbound TCP socket
 *           reconnect  connect(ADDR:PORT), talk, then connect(ARG = ADDR2:PORT2)
 *           afterclose a first socket connects to ADDR:PORT and closes at once;
 *                      100 ms later (the server keeps its end open, so the
 *                      first 4-tuple waits in FIN_WAIT2) the judged socket
 *                      connects to ADDR:PORT, without talking
 *           port0      connect(ADDR:0), without talking (a rule's port
 *                      range must hold port 0: a UDP datagram goes there)
 *           listen     listen() on the unbound socket
 *           bindlisten bind(wildcard, 0), then listen (TCP) or nothing more (UDP)
 *   HOLD    how many sockets make the same call first and are kept open
 *           (a range filled before the judged call); one of them failing
 *           prints "0 ERRNO hold" and exits 3.
 *
 * "Talking" checks the call really reached the server: TCP reads the
 * server's greeting up to its close (so the server closes first and the
 * client's port is left in no TIME_WAIT); UDP sends one datagram and
 * waits for its echo (NOREPLY when none comes within TALK_WAIT_MS: no
 * row expects NOREPLY, so the wait costs nothing when the server answers,
 * and a server held off the CPU on a loaded machine has time; 3 s was
 * once too short in CI, for an MPTCP row). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

struct kind {
	int family, type, protocol;
};

static int parse_kind(const char *name, struct kind *k)
{
	static const struct {
		const char *name;
		struct kind kind;
	} kinds[] = {
		{"tcp4", {AF_INET, SOCK_STREAM, 0}},
		{"tcp6", {AF_INET6, SOCK_STREAM, 0}},
		{"udp4", {AF_INET, SOCK_DGRAM, 0}},
		{"udp6", {AF_INET6, SOCK_DGRAM, 0}},
		{"udplite4", {AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE}},
		{"udplite6", {AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE}},
		{"mptcp4", {AF_INET, SOCK_STREAM, IPPROTO_MPTCP}},
		{"mptcp6", {AF_INET6, SOCK_STREAM, IPPROTO_MPTCP}},
		/* ICMP echo ("ping") sockets: a family and type portfence
		 * manages, a protocol it does not. */
		{"icmp4", {AF_INET, SOCK_DGRAM, IPPROTO_ICMP}},
		{"icmp6", {AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6}},
	};
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].name, name) == 0) {
			*k = kinds[i].kind;
			return 0;
		}
	return -1;
}

/* ADDR and PORT into an address of the socket's family. */
static socklen_t make_address(int family, const char *addr, int port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (addr && inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
			return 0;
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons((uint16_t)port);
	if (addr && inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
		return 0;
	return sizeof(*sin6);
}

static int local_port(int fd)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return 0;
	if (local.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&local)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&local)->sin6_port);
}

struct outcome {
	int error;		/* 0, an errno, or -1 for no reply */
	const char *step;
};

static int fail(struct outcome *o, const char *step)
{
	o->error = errno;
	o->step = step;
	return -1;
}

#define TALK_WAIT_MS 15000

/* TCP: the greeting up to the server's close; UDP: one echo. */
static int talk(int fd, const struct kind *k, const struct sockaddr_storage *to, socklen_t to_len,
		struct outcome *o)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char buf[256];

	if (k->type == SOCK_STREAM) {
		size_t got = 0;
		while (poll(&pfd, 1, TALK_WAIT_MS) > 0) {
			ssize_t n = read(fd, buf, sizeof(buf));
			/* The server closes without reading what a Fast Open
			 * sent, so its close may be a reset after the greeting. */
			if (n == 0 || (n < 0 && errno == ECONNRESET && got))
				return 0;
			if (n < 0)
				return fail(o, "read");
			got += (size_t)n;
		}
		o->error = -1;
		o->step = "read";
		return -1;
	}
	ssize_t sent = to ? sendto(fd, "x", 1, 0, (const struct sockaddr *)to, to_len) : send(fd, "x", 1, 0);
	if (sent < 0)
		return fail(o, to ? "sendto" : "send");
	if (poll(&pfd, 1, TALK_WAIT_MS) <= 0 || recv(fd, buf, sizeof(buf), 0) < 0) {
		o->error = -1;
		o->step = "recv";
		return -1;
	}
	return 0;
}

static int connect_and_talk(int fd, const struct kind *k, const struct sockaddr_storage *to, socklen_t to_len,
			    struct outcome *o)
{
	if (connect(fd, (const struct sockaddr *)to, to_len) < 0)
		return fail(o, "connect");
	return talk(fd, k, NULL, 0, o);
}

static int bind_port(int fd, const struct kind *k, const char *addr, int port, struct outcome *o)
{
	struct sockaddr_storage local;
	socklen_t len = make_address(k->family, addr, port, &local);
	int one = 1;

	/* An explicit TCP port may be in TIME_WAIT from an earlier row:
	 * SO_REUSEADDR lets the bind take it (never on UDP). */
	if (port && k->type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&local, len) < 0)
		return fail(o, "bind");
	return 0;
}

/* One call of ACTION on a new socket; the socket stays open. */
static int act(const char *action, const struct kind *k, const struct sockaddr_storage *to, socklen_t to_len,
	       const char *arg, struct outcome *o)
{
	int fd = socket(k->family, k->type, k->protocol);
	if (fd < 0) {
		fail(o, "socket");
		return -1;
	}
	const char *loopback = k->family == AF_INET ? "127.0.0.1" : "::1";
	if (strcmp(action, "connect") == 0) {
		connect_and_talk(fd, k, to, to_len, o);
	} else if (strcmp(action, "bind0") == 0 || strcmp(action, "bindaddr") == 0) {
		const char *addr = strcmp(action, "bindaddr") == 0 ? loopback : NULL;
		if (bind_port(fd, k, addr, 0, o) == 0)
			connect_and_talk(fd, k, to, to_len, o);
	} else if (strcmp(action, "bindport") == 0) {
		if (bind_port(fd, k, NULL, arg ? atoi(arg) : 0, o) == 0)
			connect_and_talk(fd, k, to, to_len, o);
	} else if (strcmp(action, "sendto") == 0) {
		talk(fd, k, to, to_len, o);
	} else if (strcmp(action, "bind0sendto") == 0) {
		if (bind_port(fd, k, NULL, 0, o) == 0)
			talk(fd, k, to, to_len, o);
	} else if (strcmp(action, "fastopen") == 0) {
		/* TCP Fast Open: a connect in disguise. */
		if (sendto(fd, "x", 1, MSG_FASTOPEN, (const struct sockaddr *)to, to_len) < 0)
			fail(o, "sendto");
		else
			talk(fd, k, NULL, 0, o);
	} else if (strcmp(action, "reconnect") == 0) {
		char addr2[128];
		const char *colon = arg ? strrchr(arg, ':') : NULL;
		struct sockaddr_storage to2;
		if (!colon || (size_t)(colon - arg) >= sizeof(addr2)) {
			fprintf(stderr, "reconnect needs ADDR2:PORT2\n");
			exit(2);
		}
		snprintf(addr2, sizeof(addr2), "%.*s", (int)(colon - arg), arg);
		socklen_t len2 = make_address(k->family, addr2, atoi(colon + 1), &to2);
		if (!len2) {
			fprintf(stderr, "bad address %s\n", arg);
			exit(2);
		}
		if (connect_and_talk(fd, k, to, to_len, o) == 0 &&
		    connect(fd, (struct sockaddr *)&to2, len2) < 0)
			fail(o, "connect2");
	} else if (strcmp(action, "afterclose") == 0) {
		int first = socket(k->family, k->type, k->protocol);
		if (first < 0 || connect(first, (const struct sockaddr *)to, to_len) < 0)
			fail(o, "connect1");
		if (first >= 0)
			close(first);
		if (!o->error) {
			usleep(100000);
			if (connect(fd, (const struct sockaddr *)to, to_len) < 0)
				fail(o, "connect");
		}
	} else if (strcmp(action, "port0") == 0) {
		struct sockaddr_storage zero = *to;
		if (zero.ss_family == AF_INET)
			((struct sockaddr_in *)&zero)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&zero)->sin6_port = 0;
		if (connect(fd, (const struct sockaddr *)&zero, to_len) < 0)
			fail(o, "connect");
	} else if (strcmp(action, "listen") == 0) {
		if (listen(fd, 8) < 0)
			fail(o, "listen");
	} else if (strcmp(action, "bindlisten") == 0) {
		if (bind_port(fd, k, NULL, 0, o) == 0 && k->type == SOCK_STREAM && listen(fd, 8) < 0)
			fail(o, "listen");
	} else {
		fprintf(stderr, "unknown action %s\n", action);
		exit(2);
	}
	return fd;
}

static const char *error_name(int error)
{
	if (error == 0)
		return "OK";
	if (error < 0)
		return "NOREPLY";
	const char *name = strerrorname_np(error);
	return name ? name : "?";
}

int main(int argc, char **argv)
{
	struct kind k;
	struct sockaddr_storage to;

	if (argc < 6 || parse_kind(argv[1], &k) < 0) {
		fprintf(stderr, "usage: table-client SOCK ACTION HOLD ADDR PORT [ARG]\n");
		return 2;
	}
	const char *action = argv[2], *arg = argc > 6 ? argv[6] : NULL;
	int hold = atoi(argv[3]);
	socklen_t to_len = make_address(k.family, argv[4], atoi(argv[5]), &to);
	if (!to_len) {
		fprintf(stderr, "bad address %s\n", argv[4]);
		return 2;
	}
	for (int i = 0; i < hold; i++) {
		struct outcome o = {0, "-"};
		act(action, &k, &to, to_len, arg, &o);
		if (o.error) {
			printf("0 %s hold\n", error_name(o.error));
			return 3;
		}
	}
	struct outcome o = {0, "-"};
	int fd = act(action, &k, &to, to_len, arg, &o);
	/* A socket whose bind or listen failed holds no port, and its name is
	 * not asked: under the shim, getsockname on a socket whose
	 * bind(addr, 0) was deferred would try to assign a port again. */
	bool unbound = fd < 0 || (o.error && (strcmp(o.step, "bind") == 0 || strcmp(o.step, "listen") == 0));
	printf("%d %s %s\n", unbound ? 0 : local_port(fd), error_name(o.error), o.step);
	return 0;
}
