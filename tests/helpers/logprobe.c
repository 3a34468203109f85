/* logprobe: a program that leans on the audit log's fd and on fd 2 the
 * way real programs do, for the log suite.
 *   logprobe dup2race HOST:PORT COUNT DATAFILE
 *     one thread sends COUNT datagrams from fresh sockets while another
 *     dup2()s DATAFILE onto the first fd from 900 up it finds open (where
 *     the shim keeps its log), then closes that copy; prints "sends=N dup2s=M".
 *   logprobe closed-stderr HOST:PORT DATAFILE
 *     closes fds 0-2 as a daemon does, opens /dev/null twice and DATAFILE
 *     (which becomes fd 2), then connects once.
 *   logprobe connect HOST:PORT
 *     connects once. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in dest;
static atomic_int connecting_done;
static int data_fd = -1;

static int parse_dest(const char *text)
{
	char host[64];
	const char *colon = strrchr(text, ':');

	if (!colon || (size_t)(colon - text) >= sizeof(host))
		return -1;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = '\0';
	dest.sin_family = AF_INET;
	dest.sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &dest.sin_addr) == 1 ? 0 : -1;
}

static int connect_once(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&dest, sizeof(dest));

	if (fd >= 0)
		close(fd);
	return rc;
}

/* The first open fd from 900 up is the log (this program opens nothing
 * there): wherever the shim moves it, the loop follows. */
/* A datagram from an unbound socket: an assignment, and a record, that
 * leaves no TIME_WAIT behind to crowd the range for later tests. */
static int send_once(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	ssize_t rc = fd < 0 ? -1 : sendto(fd, "x", 1, 0, (struct sockaddr *)&dest, sizeof(dest));

	if (fd >= 0)
		close(fd);
	return rc == 1 ? 0 : -1;
}

static void *dup2_loop(void *arg)
{
	unsigned long *dups = arg;
	struct rlimit limit;
	int top = getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536 ? (int)limit.rlim_cur : 65536;

	while (!atomic_load(&connecting_done)) {
		int fd = 900;
		while (fd < top && (fd == data_fd || fcntl(fd, F_GETFD) < 0))
			fd++;
		if (fd < top && dup2(data_fd, fd) == fd) {
			(*dups)++;
			close(fd);
		}
	}
	return NULL;
}

static int dup2race(int count, const char *data_path)
{
	pthread_t thread;
	unsigned long dups = 0;
	int sends = 0;

	data_fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (data_fd < 0)
		return 2;
	pthread_create(&thread, NULL, dup2_loop, &dups);
	for (int i = 0; i < count; i++)
		sends += send_once() == 0;
	atomic_store(&connecting_done, 1);
	pthread_join(thread, NULL);
	printf("sends=%d dup2s=%lu\n", sends, dups);
	return 0;
}

static int closed_stderr(const char *data_path)
{
	close(0);
	close(1);
	close(2);
	if (open("/dev/null", O_RDONLY) != 0 || open("/dev/null", O_WRONLY) != 1)
		return 2;
	if (open(data_path, O_WRONLY | O_CREAT | O_APPEND, 0644) != 2)
		return 3;
	return connect_once() == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc < 3 || parse_dest(argv[2]) < 0) {
		fprintf(stderr, "usage: logprobe dup2race|closed-stderr|connect HOST:PORT ...\n");
		return 2;
	}
	if (strcmp(argv[1], "dup2race") == 0 && argc == 5)
		return dup2race(atoi(argv[3]), argv[4]);
	if (strcmp(argv[1], "closed-stderr") == 0 && argc == 4)
		return closed_stderr(argv[3]);
	if (strcmp(argv[1], "connect") == 0)
		return connect_once() == 0 ? 0 : 1;
	return 2;
}
