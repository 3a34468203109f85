/* connprobe: what an application sees of its own TCP socket across a
 * connect the shim handles, for the tests of the connect path
 * (test_connect.c).  Destinations are ports on 127.0.0.1.  Each command
 * prints "key value" lines; the tests compare them with what the servers
 * saw and with the same program run without the shim. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static struct sockaddr_in loopback_port(const char *port_text)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port_text))};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

static int local_port(int fd)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return -1;
	return ntohs(local.sin_port);
}

static int int_option(int fd, int level, int name)
{
	int value = -1;
	socklen_t len = sizeof(value);
	if (getsockopt(fd, level, name, &value, &len) < 0)
		return -1;
	return value;
}

static const char *errno_name(long rc)
{
	if (rc >= 0)
		return "-";
	const char *name = strerrorname_np(errno);
	return name ? name : "?";
}

/* hold PORT...: one connection to each, kept until the process is
 * killed (the test stops it; 50 s at most). */
static int cmd_hold(char **ports, int count)
{
	for (int i = 0; i < count; i++) {
		struct sockaddr_in dest = loopback_port(ports[i]);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&dest, sizeof(dest)) < 0) {
			printf("fail %s %s\n", ports[i], strerror(errno));
			return 1;
		}
		printf("held %d\n", local_port(fd));
	}
	printf("ready\n");
	fflush(stdout);
	alarm(50);
	for (;;)
		pause();
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Waits (5 s at most) for an EPOLLOUT on fd that finds it connected. */
static int epoll_sees_connected(int epfd, int fd)
{
	double deadline = now_ms() + 5000;
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);

	for (double left; (left = deadline - now_ms()) > 0;) {
		struct epoll_event ev;
		int n = epoll_wait(epfd, &ev, 1, (int)left + 1);
		if (n < 0 && errno != EINTR)
			return 0;
		if (n == 1 && ev.data.fd == fd && (ev.events & EPOLLOUT) &&
		    getpeername(fd, (struct sockaddr *)&peer, &len) == 0)
			return 1;
	}
	return 0;
}

/* epoll PORT: registered (edge-triggered, as nginx does) before a
 * non-blocking connect; reports whether the connect's EPOLLOUT arrived. */
static int cmd_epoll(const char *port)
{
	struct sockaddr_in dest = loopback_port(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int epfd = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = fd};

	if (fd < 0 || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return 2;
	int rc = connect(fd, (struct sockaddr *)&dest, sizeof(dest));
	if (rc < 0 && errno != EINPROGRESS) {
		printf("connect %s\n", errno_name(rc));
		return 1;
	}
	printf("epollout %d\nport %d\n", epoll_sees_connected(epfd, fd), local_port(fd));
	return 0;
}

static unsigned long long cookie_of(int fd)
{
	unsigned long long cookie = 0;
	socklen_t len = sizeof(cookie);
	getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len);
	return cookie;
}

/* keeps PORT: sets what a program may set on its socket before connect,
 * connects (blocking), and reports what is left of it. */
static int cmd_keeps(const char *port)
{
	struct sockaddr_in dest = loopback_port(port);
	/* Accept every packet whole: three instructions, so that the length
	 * read back is this filter's. */
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
		BPF_STMT(BPF_MISC | BPF_TAX, 0),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog filter = {.len = 3, .filter = code};
	int fd = socket(AF_INET, SOCK_STREAM, 0), tos = IPTOS_LOWDELAY, priority = 5;

	unsigned long long cookie = cookie_of(fd);
	if (fcntl(fd, F_SETOWN, getpid()) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof(filter)) < 0 ||
	    setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &priority, sizeof(priority)) < 0) {
		printf("setup %s\n", strerror(errno));
		return 2;
	}
	int rc = connect(fd, (struct sockaddr *)&dest, sizeof(dest));
	socklen_t filter_len = 0;
	getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, NULL, &filter_len);
	printf("connect %s\nport %d\ncookie_same %d\nowner_same %d\nfilter_len %u\npriority %d\n"
	       "tos %d\nreuseaddr %d\n",
	       errno_name(rc), local_port(fd), cookie != 0 && cookie_of(fd) == cookie,
	       fcntl(fd, F_GETOWN) == getpid(), (unsigned)filter_len,
	       int_option(fd, SOL_SOCKET, SO_PRIORITY), int_option(fd, IPPROTO_IP, IP_TOS),
	       int_option(fd, SOL_SOCKET, SO_REUSEADDR));
	return 0;
}

/* sendto ADDR [PORT]: a TCP socket, connected to PORT if given, sends
 * with ADDR:9 as sendto's address (Linux ignores it on a connected
 * socket). */
static int cmd_sendto(const char *addr, const char *port)
{
	struct sockaddr_in other = {.sin_family = AF_INET, .sin_port = htons(9)};
	static const char data[] = "through the connection";

	if (inet_pton(AF_INET, addr, &other.sin_addr) != 1)
		return 2;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (port) {
		struct sockaddr_in dest = loopback_port(port);
		if (connect(fd, (struct sockaddr *)&dest, sizeof(dest)) < 0) {
			printf("connect %s\n", strerror(errno));
			return 1;
		}
	}
	ssize_t rc = sendto(fd, data, sizeof(data) - 1, MSG_NOSIGNAL, (struct sockaddr *)&other,
			    sizeof(other));
	printf("sendto %zd %s\n", rc, errno_name(rc));
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 3 && strcmp(argv[1], "hold") == 0)
		return cmd_hold(argv + 2, argc - 2);
	if (argc == 3 && strcmp(argv[1], "epoll") == 0)
		return cmd_epoll(argv[2]);
	if (argc == 3 && strcmp(argv[1], "keeps") == 0)
		return cmd_keeps(argv[2]);
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "sendto") == 0)
		return cmd_sendto(argv[2], argv[3]);
	fprintf(stderr, "usage: connprobe hold PORT... | epoll PORT | keeps PORT | sendto ADDR [PORT]\n");
	return 2;
}
