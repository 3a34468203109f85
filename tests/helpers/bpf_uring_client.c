/* Connects through io_uring (IORING_OP_CONNECT): the kernel makes the
 * call, no library function is involved, so only the BPF backend can
 * confine it.
 *   bpf-uring-client HOST PORT
 * It prints "pid N", then "local ADDR:PORT" or "error ENAME"; status 69
 * when this kernel refuses io_uring itself. */
#include <liburing.h>

#include "bpf_client.h"

static int uring_connect(struct io_uring *ring, int fd, const struct sockaddr_in *dest)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct io_uring_cqe *cqe;

	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)dest, sizeof(*dest));
	int error = io_uring_submit(ring) == 1 ? 0 : EIO;
	if (!error)
		error = -io_uring_wait_cqe(ring, &cqe);
	if (!error) {
		error = -cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	return error;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dest;
	struct io_uring ring;

	if (argc != 3) {
		fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
		return EXIT_USAGE;
	}
	printf("pid %d\n", (int)getpid());
	fflush(stdout);
	parse_ipv4(&dest, argv[1], argv[2]);
	int error = -io_uring_queue_init(4, &ring, 0);
	if (error) {
		report_error("io_uring_queue_init", error);
		return EXIT_NO_IO_URING;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return report_error("socket", errno);
	error = uring_connect(&ring, fd, &dest);
	io_uring_queue_exit(&ring);
	if (error) {
		close(fd);
		return report_error("io_uring connect", error);
	}
	print_local(fd);
	error = read_greeting(fd);
	close(fd);
	return error ? report_error("read", error) : 0;
}
