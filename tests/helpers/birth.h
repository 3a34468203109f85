/* One child that joins a new cgroup the moment it exists and connects
 * at once, with nothing in between (the worst case for confinement at
 * birth): shared by the containers test and the bench's leak count. */
#ifndef PORTFENCE_TESTS_HELPERS_BIRTH_H
#define PORTFENCE_TESTS_HELPERS_BIRTH_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

/* Forks a child that waits for FULL/cgroup.procs, joins it, connects to
 * 127.0.0.1:port, and writes the local port it got (0 when it could not
 * connect) to out.  The child's pid. */
static inline pid_t join_and_connect_at_birth(const char *full, uint16_t port, int out)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	char procs[PATH_MAX + 64], text[16];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", full);
	int fd;
	while ((fd = open(procs, O_WRONLY)) < 0)
		;	/* the parent is making it */
	int len = snprintf(text, sizeof(text), "%d", (int)getpid());
	ssize_t joined = write(fd, text, (size_t)len);
	close(fd);
	uint16_t local = 0;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
	struct sockaddr_in me;
	socklen_t me_len = sizeof(me);
	if (joined == len && connect(s, (struct sockaddr *)&to, sizeof(to)) == 0 &&
	    getsockname(s, (struct sockaddr *)&me, &me_len) == 0)
		local = ntohs(me.sin_port);
	ssize_t written = write(out, &local, sizeof(local));
	_exit(written == sizeof(local) ? 0 : 1);
}

#endif
