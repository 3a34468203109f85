/* A statically linked client whose calls go straight to the kernel
 * (syscall(2)): only the BPF backend can confine it.
 *   bpf-static-client tcp HOST PORT          connect, read the greeting
 *   bpf-static-client loop HOST PORT         one connect per line read on stdin (a line
 *                                            "HOST2 PORT2" connects there instead)
 *   bpf-static-client udp-unbound HOST PORT  sendto on a socket never bound
 *   bpf-static-client udp-unbound-connect HOST PORT
 *                                            the same, then (whatever sendto said)
 *                                            connect that socket and send on it
 *   bpf-static-client cgroup                 this process's cgroup v2 path
 * It prints "pid N", then "local ADDR:PORT" or "error ENAME" per call. */
#include <stdbool.h>
#include <sys/syscall.h>

#include "bpf_client.h"

static int raw_connect(int fd, const struct sockaddr_in *dest)
{
	return syscall(SYS_connect, fd, dest, sizeof(*dest)) == 0 ? 0 : errno;
}

static int tcp_once(const struct sockaddr_in *dest, int greeted)
{
	int fd = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return report_error("socket", errno);
	int error = raw_connect(fd, dest);
	if (error) {
		close(fd);
		return report_error("connect", error);
	}
	print_local(fd);
	error = greeted ? read_greeting(fd) : 0;
	close(fd);
	return error ? report_error("read", error) : 0;
}

/* Stays alive for the tests that attach to its cgroup while it runs:
 * the status of the last connect. */
static int tcp_loop(const struct sockaddr_in *dest)
{
	char line[64], host[32], port[16];
	int status = 0;

	while (fgets(line, sizeof(line), stdin)) {
		struct sockaddr_in other;
		bool elsewhere = sscanf(line, "%31s %15s", host, port) == 2;
		if (elsewhere)
			parse_ipv4(&other, host, port);
		status = tcp_once(elsewhere ? &other : dest, 0);
	}
	return status;
}

static int udp_unbound(const struct sockaddr_in *dest)
{
	int fd = (int)syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return report_error("socket", errno);
	if (syscall(SYS_sendto, fd, "hello\n", 6, 0, dest, sizeof(*dest)) != 6) {
		int error = errno;
		close(fd);
		return report_error("sendto", error);
	}
	print_local(fd);
	close(fd);
	return 0;
}

/* What a program does when its unconnected send was refused with the
 * advice to connect first: connects the same socket, and sends. */
static int udp_unbound_then_connect(const struct sockaddr_in *dest)
{
	int fd = (int)syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return report_error("socket", errno);
	if (syscall(SYS_sendto, fd, "hello\n", 6, 0, dest, sizeof(*dest)) != 6)
		report_error("sendto", errno);
	int error = raw_connect(fd, dest);
	if (!error && syscall(SYS_sendto, fd, "again\n", 6, 0, NULL, 0) != 6)
		error = errno;
	if (!error)
		print_local(fd);
	close(fd);
	return error ? report_error("connect", error) : 0;
}

static int print_cgroup(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[4096];

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "0::", 3) == 0) {
			printf("cgroup %s", line + 3);
			fclose(f);
			return 0;
		}
	if (f)
		fclose(f);
	return report_error("/proc/self/cgroup", ENOENT);
}

int main(int argc, char **argv)
{
	struct sockaddr_in dest;

	printf("pid %d\n", (int)getpid());
	fflush(stdout);
	if (argc == 2 && strcmp(argv[1], "cgroup") == 0)
		return print_cgroup();
	if (argc != 4) {
		fprintf(stderr, "usage: %s tcp|loop|udp-unbound|udp-unbound-connect HOST PORT | cgroup\n", argv[0]);
		return EXIT_USAGE;
	}
	parse_ipv4(&dest, argv[2], argv[3]);
	if (strcmp(argv[1], "tcp") == 0)
		return tcp_once(&dest, 1);
	if (strcmp(argv[1], "loop") == 0)
		return tcp_loop(&dest);
	if (strcmp(argv[1], "udp-unbound") == 0)
		return udp_unbound(&dest);
	if (strcmp(argv[1], "udp-unbound-connect") == 0)
		return udp_unbound_then_connect(&dest);
	fprintf(stderr, "unknown mode %s\n", argv[1]);
	return EXIT_USAGE;
}
