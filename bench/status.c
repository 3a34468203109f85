/* status_20000: `portfence status --json` over a policy whose ranges hold
 * 20,000 sockets.  A child opens them: clients bound (SO_REUSEADDR) to
 * ports of one app's range, each port connected to up to three listeners
 * whose ports lie in a second app's range, so that the accepted sockets
 * count too.  Everything is closed with a reset: no TIME_WAIT is left to
 * crowd later measures. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define CLIENT_LO 62000
#define CLIENT_HI 65499
#define LISTEN_LO 65500
#define LISTENERS 3

static int bound_socket(uint16_t port, bool listening)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    (!listening || listen(fd, 4096) == 0))
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static bool connect_pair(uint16_t port, int listener, uint16_t listen_port)
{
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(listen_port)};
	struct linger reset = {1, 0};
	int client = bound_socket(port, false);

	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (client < 0 || connect(client, (struct sockaddr *)&to, sizeof(to)) < 0) {
		if (client >= 0)
			close(client);
		return false;
	}
	int accepted = accept(listener, NULL, NULL);
	setsockopt(client, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	if (accepted >= 0)
		setsockopt(accepted, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	return accepted >= 0;
}

/* One process may not hold them all (its descriptor limit): a holder
 * near its limit forks the next, which keeps only the listeners. */
static int fd_budget(int sockets)
{
	struct rlimit files = {(rlim_t)sockets + 256, (rlim_t)sockets + 256};
	if (setrlimit(RLIMIT_NOFILE, &files) < 0)
		getrlimit(RLIMIT_NOFILE, &files);
	return (int)files.rlim_cur - 32;
}

static int keep_only(const int *keep, int count)
{
	int kept = 3;
	for (int fd = 3; fd < 65536; fd++) {
		bool wanted = false;
		for (int k = 0; k < count; k++)
			wanted |= keep[k] == fd;
		if (wanted)
			kept++;
		else
			close(fd);
	}
	return kept;
}

/* The children: open about `sockets` sockets, the last writes how many
 * to ready_fd; each waits for EOF on wait_fd, and exiting closes its
 * sockets (reset). */
static void hold_sockets(int sockets, int ready_fd, int wait_fd)
{
	int keep[LISTENERS + 2] = {ready_fd, wait_fd}, budget = fd_budget(sockets);
	int opened = 0, ports = CLIENT_HI - CLIENT_LO + 1, here = 8;
	bool last = true;
	char ignored;

	for (int l = 0; l < LISTENERS; l++)
		opened += (keep[2 + l] = bound_socket((uint16_t)(LISTEN_LO + l), true)) >= 0;
	for (int i = 0; i < LISTENERS * ports && opened < sockets; i++) {
		int l = i / ports;
		if (here + 2 > budget) {
			if (fork() != 0) {
				last = false;
				break;
			}
			here = keep_only(keep, LISTENERS + 2);
		}
		if (keep[2 + l] >= 0 && connect_pair((uint16_t)(CLIENT_LO + i % ports), keep[2 + l],
						     (uint16_t)(LISTEN_LO + l))) {
			opened += 2;
			here += 2;
		}
	}
	if (last && write(ready_fd, &opened, sizeof(opened)) != sizeof(opened))
		_exit(1);
	while (read(wait_fd, &ignored, 1) > 0)
		;
	_exit(0);
}

static double time_status(const char *tool, const char *policy)
{
	struct timespec start, end;
	char *argv[] = {(char *)tool, "status", "--json", "-c", (char *)policy, NULL};
	clock_gettime(CLOCK_MONOTONIC, &start);
	pid_t pid = bench_spawn_quiet(argv, false);
	int status;
	waitpid(pid, &status, 0);
	clock_gettime(CLOCK_MONOTONIC, &end);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
}

/* Opens about `sockets` sockets in the ranges of a two-app policy,
 * runs probe(tool, policy, ctx) while they are open, and returns what it
 * returns (-1 when nothing could be opened). */
double bench_with_sockets(int sockets, int *opened, double (*probe)(const char *tool, const char *policy, void *ctx),
			  void *ctx)
{
	char policy[256];
	const char *tool = settings.tool;
	int ready[2], hold[2];
	double result = -1;

	snprintf(policy, sizeof(policy), "%s/status.conf", settings.dir);
	FILE *f = fopen(policy, "w");
	if (!f || pipe(ready) < 0 || pipe(hold) < 0)
		return -1;
	fprintf(f, "apps = ( { name = \"clients\"; range = [ %u, %u ]; },\n"
		   "         { name = \"servers\"; range = [ %u, %u ]; } );\n",
		CLIENT_LO, CLIENT_HI, LISTEN_LO, LISTEN_LO + 9);
	fclose(f);
	fflush(NULL);
	pid_t child = fork();
	if (child == 0) {
		close(ready[0]);
		close(hold[1]);
		hold_sockets(sockets, ready[1], hold[0]);
	}
	close(ready[1]);
	close(hold[0]);
	if (read(ready[0], opened, sizeof(*opened)) != sizeof(*opened))
		*opened = 0;
	if (*opened > 0)
		result = probe(tool, policy, ctx);
	close(hold[1]);
	close(ready[0]);
	waitpid(child, NULL, 0);
	return result;
}

static double median_of_status(const char *tool, const char *policy, void *ctx)
{
	double times[9];
	int runs = settings.quick ? 1 : 9, n = 0;
	(void)ctx;
	for (int i = 0; i < runs; i++) {
		double t = time_status(tool, policy);
		if (t >= 0)
			times[n++] = t;
	}
	return n ? median(times, n) : -1;
}

double bench_status_seconds(int sockets, int *opened)
{
	return bench_with_sockets(sockets, opened, median_of_status, NULL);
}
