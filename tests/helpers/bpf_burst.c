/* A burst of denied connects, as fast as one process makes them: the
 * record-loss tests of the BPF backend.
 *   bpf-burst [-g CGROUP_DIR] HOST PORT N
 * With -g it first moves itself into that cgroup (a full path).  One TCP
 * socket connects N times to HOST:PORT, a destination the policy denies,
 * so each connect is refused and leaves the socket free for the next
 * (one that succeeds is closed and replaced).  Prints "pid P", then
 * "denied D", "other O" (connects not refused with EPERM) and
 * "seconds S".  Exit 0 when all N were denied, 1 otherwise. */
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#include "bpf_client.h"

static int join_cgroup(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	FILE *f = fopen(path, "w");
	if (!f || fputs("0", f) < 0 || fclose(f) != 0) {
		fprintf(stderr, "cannot join %s: %s\n", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dest;
	int arg = 1;

	if (argc == 6 && strcmp(argv[1], "-g") == 0) {
		if (join_cgroup(argv[2]) < 0)
			return EXIT_ERROR;
		arg = 3;
	}
	if (argc - arg != 3) {
		fprintf(stderr, "usage: %s [-g CGROUP_DIR] HOST PORT N\n", argv[0]);
		return EXIT_USAGE;
	}
	printf("pid %d\n", (int)getpid());
	fflush(stdout);
	parse_ipv4(&dest, argv[arg], argv[arg + 1]);
	long count = atol(argv[arg + 2]), denied = 0, other = 0;
	int fd = -1;
	double start = now();
	for (long i = 0; i < count; i++) {
		if (fd < 0 && (fd = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0)) < 0)
			return report_error("socket", errno);
		if (syscall(SYS_connect, fd, &dest, sizeof(dest)) < 0 && errno == EPERM) {
			denied++;
			continue;
		}
		other++;
		close(fd);
		fd = -1;
	}
	double seconds = now() - start;
	printf("denied %ld\nother %ld\nseconds %.6f\n", denied, other, seconds);
	return denied == count ? 0 : EXIT_ERROR;
}
