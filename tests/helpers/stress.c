/* stress: many threads and processes through one range, run under the
 * shim by the hardening tests.  It counts what it saw; the tests compare
 * the counts with the servers and the audit log.
 *
 *   stress threads LO HI DEST DEST DEST DEST UDPDEST
 *   stress forkloop LO HI DEST
 *   stress udphold N SECONDS DEST
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dest.h"

#define TCP_THREADS 8
#define TCP_CONNECTS 2000
#define UDP_THREADS 2
#define UDP_SENDS 500
#define UDP_WINDOW 20

static struct sockaddr_in tcp_dests[4], udp_dest;
static unsigned range_lo, range_hi;
static atomic_int assignments, failures, out_of_range, tcp_ok, udp_ok, dup_ok;
static atomic_int stop_background;

static void check_port(int fd)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return;
	unsigned port = ntohs(local.sin_port);
	if (port < range_lo || port > range_hi) {
		atomic_fetch_add(&out_of_range, 1);
		fprintf(stderr, "port %u outside %u-%u\n", port, range_lo, range_hi);
	}
}

static void failed(const char *what)
{
	atomic_fetch_add(&failures, 1);
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
}

/* connect, read the greeting, close (the client first). */
static bool one_connection(const struct sockaddr_in *dest)
{
	char greeting[8];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (const struct sockaddr *)dest, sizeof(*dest)) < 0) {
		failed("connect");
		close(fd);
		return false;
	}
	atomic_fetch_add(&assignments, 1);
	check_port(fd);
	if (read(fd, greeting, sizeof(greeting)) <= 0)
		failed("read");
	close(fd);
	return true;
}

static void *tcp_thread(void *arg)
{
	int id = (int)(long)arg;
	for (int i = 0; i < TCP_CONNECTS; i++)
		if (one_connection(&tcp_dests[(i + id) % 4]))
			atomic_fetch_add(&tcp_ok, 1);
	return NULL;
}

/* UDP sockets kept in a sliding window, so that many are live at once
 * and closes happen while other threads assign. */
static void *udp_thread(void *arg)
{
	int window[UDP_WINDOW];
	(void)arg;
	for (int i = 0; i < UDP_WINDOW; i++)
		window[i] = -1;
	for (int i = 0; i < UDP_SENDS; i++) {
		int slot = i % UDP_WINDOW;
		if (window[slot] >= 0)
			close(window[slot]);
		window[slot] = socket(AF_INET, SOCK_DGRAM, 0);
		if (sendto(window[slot], "x", 1, 0, (struct sockaddr *)&udp_dest, sizeof(udp_dest)) != 1) {
			failed("udp sendto");
			continue;
		}
		atomic_fetch_add(&assignments, 1);
		atomic_fetch_add(&udp_ok, 1);
		check_port(window[slot]);
	}
	for (int i = 0; i < UDP_WINDOW; i++)
		if (window[i] >= 0)
			close(window[i]);
	return NULL;
}

int one_connection_on(int fd);

/* dup2 over managed fds: a fresh TCP socket dup2'ed over a UDP socket the
 * shim already bound must still get a range port at connect. */
static void *dup_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300; i++) {
		int udp = socket(AF_INET, SOCK_DGRAM, 0);
		int tcp = socket(AF_INET, SOCK_STREAM, 0);
		if (sendto(udp, "x", 1, 0, (struct sockaddr *)&udp_dest, sizeof(udp_dest)) != 1) {
			failed("dup udp sendto");
		} else {
			atomic_fetch_add(&assignments, 1);
		}
		if (dup2(tcp, udp) < 0) {
			failed("dup2");
		} else if (one_connection_on(udp)) {
			atomic_fetch_add(&dup_ok, 1);
		}
		close(tcp);
		close(udp);
	}
	return NULL;
}

int one_connection_on(int fd)
{
	char greeting[8];
	if (connect(fd, (struct sockaddr *)&tcp_dests[0], sizeof(tcp_dests[0])) < 0) {
		failed("connect after dup2");
		return 0;
	}
	atomic_fetch_add(&assignments, 1);
	check_port(fd);
	if (read(fd, greeting, sizeof(greeting)) <= 0)
		failed("read after dup2");
	return 1;
}

/* The child first closes what it inherited, as a forked worker would:
 * its copies of the UDP threads' 40 sockets would otherwise keep their
 * ports bound for as long as it lives, and the parent's UDP threads,
 * binding 40 more, would find the 64-port range full (under TSan the
 * child lives long enough for that every time). */
static int child_connects(void)
{
	alarm(20);
	closefrom(3);
	int before = atomic_load(&failures) + atomic_load(&out_of_range);
	one_connection(&tcp_dests[0]);
	return atomic_load(&failures) + atomic_load(&out_of_range) == before ? 0 : 1;
}

static int cmd_threads(void)
{
	pthread_t tcp[TCP_THREADS], udp[UDP_THREADS], dup;
	for (long i = 0; i < TCP_THREADS; i++)
		pthread_create(&tcp[i], NULL, tcp_thread, (void *)i);
	for (long i = 0; i < UDP_THREADS; i++)
		pthread_create(&udp[i], NULL, udp_thread, NULL);
	pthread_create(&dup, NULL, dup_thread, NULL);

	usleep(100000);
	fflush(NULL);
	pid_t child = fork();
	if (child == 0)
		_exit(child_connects());
	int status = -1;
	waitpid(child, &status, 0);

	for (int i = 0; i < TCP_THREADS; i++)
		pthread_join(tcp[i], NULL);
	for (int i = 0; i < UDP_THREADS; i++)
		pthread_join(udp[i], NULL);
	pthread_join(dup, NULL);
	bool child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	printf("tcp_ok %d\nudp_ok %d\ndup_ok %d\nfailures %d\nout_of_range %d\nchild_ok %d\nassignments %d\n",
	       atomic_load(&tcp_ok), atomic_load(&udp_ok), atomic_load(&dup_ok), atomic_load(&failures),
	       atomic_load(&out_of_range), child_ok, atomic_load(&assignments) + child_ok);
	return 0;
}

static void *background_connects(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop_background))
		one_connection(&tcp_dests[0]);
	return NULL;
}

/* fork() while another thread is inside the shim; each child connects. */
static int cmd_forkloop(void)
{
	pthread_t busy;
	int children_ok = 0;
	pthread_create(&busy, NULL, background_connects, NULL);
	for (int i = 0; i < 100; i++) {
		fflush(NULL);
		pid_t child = fork();
		if (child == 0)
			_exit(child_connects());
		int status;
		waitpid(child, &status, 0);
		children_ok += WIFEXITED(status) && WEXITSTATUS(status) == 0;
	}
	atomic_store(&stop_background, 1);
	pthread_join(busy, NULL);
	printf("children_ok %d\nfailures %d\nout_of_range %d\n", children_ok, atomic_load(&failures),
	       atomic_load(&out_of_range));
	return 0;
}

/* N UDP sockets bound through the shim, held for SECONDS. */
static int cmd_udphold(int n, double seconds)
{
	int *fds = calloc((size_t)n, sizeof(int));
	for (int i = 0; i < n; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (sendto(fds[i], "x", 1, 0, (struct sockaddr *)&udp_dest, sizeof(udp_dest)) != 1) {
			printf("err %s\n", strerror(errno));
			continue;
		}
		struct sockaddr_in local;
		socklen_t len = sizeof(local);
		getsockname(fds[i], (struct sockaddr *)&local, &len);
		printf("ok %u\n", ntohs(local.sin_port));
	}
	fflush(stdout);
	usleep((useconds_t)(seconds * 1e6));
	for (int i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 9 && strcmp(argv[1], "threads") == 0) {
		range_lo = (unsigned)atoi(argv[2]);
		range_hi = (unsigned)atoi(argv[3]);
		for (int i = 0; i < 4; i++)
			tcp_dests[i] = parse(argv[4 + i]);
		udp_dest = parse(argv[8]);
		return cmd_threads();
	}
	if (argc == 5 && strcmp(argv[1], "forkloop") == 0) {
		range_lo = (unsigned)atoi(argv[2]);
		range_hi = (unsigned)atoi(argv[3]);
		tcp_dests[0] = parse(argv[4]);
		return cmd_forkloop();
	}
	if (argc == 5 && strcmp(argv[1], "udphold") == 0) {
		udp_dest = parse(argv[4]);
		return cmd_udphold(atoi(argv[2]), atof(argv[3]));
	}
	fprintf(stderr, "usage: see the comment at the top of stress.c\n");
	return 2;
}
