/* Pieces shared by the BPF backend's C clients: address parsing, the
 * lines they print, and their exit statuses (those of goclient, from
 * sysexits.h, none of which `portfence` itself uses). */
#ifndef PORTFENCE_BPF_CLIENT_H
#define PORTFENCE_BPF_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { EXIT_ERROR = 1, EXIT_USAGE = 64, EXIT_NO_IO_URING = 69, EXIT_EPERM = 77 };

static inline void parse_ipv4(struct sockaddr_in *sin, const char *host, const char *port)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)atoi(port));
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
		fprintf(stderr, "not an IPv4 address: %s\n", host);
		exit(EXIT_USAGE);
	}
}

/* "local ADDR:PORT" of a socket. */
static inline void print_local(int fd)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	char text[INET_ADDRSTRLEN] = "?";

	if (getsockname(fd, (struct sockaddr *)&local, &len) == 0)
		inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
	printf("local %s:%u\n", text, ntohs(local.sin_port));
	fflush(stdout);
}

/* "error ENAME" and the status that says which. */
static inline int report_error(const char *call, int error)
{
	const char *name = strerrorname_np(error);
	printf("error %s\n", name ? name : "EUNKNOWN");
	fflush(stdout);
	fprintf(stderr, "%s: %s\n", call, strerror(error));
	return error == EPERM ? EXIT_EPERM : EXIT_ERROR;
}

/* Waits (10 s at most) for the server's greeting line. */
static inline int read_greeting(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char buf[64];

	if (poll(&pfd, 1, 10000) != 1)
		return ETIMEDOUT;
	return read(fd, buf, sizeof(buf)) > 0 ? 0 : errno ? errno : ECONNRESET;
}

#endif
