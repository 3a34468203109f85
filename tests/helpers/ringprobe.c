/* ringprobe: a client run under the shim by the collector tests.
 *
 *   ringprobe connect N ADDR:PORT      N TCP connects (closed with RST), prints "ok N"
 *   ringprobe paced N MS ADDR:PORT     the same, MS milliseconds apart
 *   ringprobe signalled N ADDR:PORT    prints "ready" once registered, then
 *                                      makes the N connects at SIGUSR1
 *   ringprobe threads N US ADDR:PORT...
 *                                      one thread per destination, each N
 *                                      connects US microseconds apart;
 *                                      prints "ok K" per thread
 *   ringprobe hold N ADDR:PORT         N TCP connects kept open until the end
 *                                      (a small range runs out), prints "ok K"
 *   ringprobe batch N ROUNDS ADDR:PORT [closefrom]
 *                                      ROUNDS times: N TCP connects kept open
 *                                      (SO_LINGER 0), then one close_range
 *                                      (or closefrom) over them all; prints
 *                                      "ok K" (of N x ROUNDS)
 *   ringprobe die ADDR:PORT kill|_exit
 *                                      one TCP connect, the server's greeting
 *                                      read, "ok" printed; then the process
 *                                      dies with the socket open: SIGKILL, or
 *                                      _exit (no atexit, no destructor)
 *   ringprobe handed ADDR:PORT N spawn|system|popen|scm|dup|dup2|dupfd|dupfd64
 *                                      one TCP connect, its socket handed to
 *                                      another process that keeps it open 4 s
 *                                      (inherited through posix_spawn, system
 *                                      or popen, or sent over a UNIX socket),
 *                                      or to another fd of this process (dup,
 *                                      dup2, fcntl or fcntl64 F_DUPFD) kept open to the
 *                                      end; the first fd closed; 2.2 s later (past the
 *                                      shim's quarantine) N connects, each
 *                                      reading the greeting to the server's
 *                                      close; prints "ok K of N"
 *   ringprobe hostile ADDR:PORT LOG SOCKET
 *       a confined program that attacks its records: one real connect,
 *       then garbage and a made-up record written into its own ring,
 *       the collector's log opened for writing and truncated, a forged
 *       registration sent to the collector, one more real connect.
 *       Prints what each attempt gave.
 *   ringprobe older SOCKET
 *       registers a ring as a shim of the previous ring version would
 *       (a program started before an upgrade); prints "answer N" (N the
 *       bytes of the collector's answer read, 1 for a yes).
 *   ringprobe unsealed SOCKET
 *       registers a ring whose memfd is not sealed against shrinking (a
 *       program that could make the collector's reads fault); the same.
 *   ringprobe rings SOCKET N
 *       registers N rings from one process, each kept; an answer each.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#include "record/ring.h"
#include "dest.h"

static int connect_once(const struct sockaddr_in *dest)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int rc = connect(fd, (const struct sockaddr *)dest, sizeof(*dest));
	if (rc < 0)
		fprintf(stderr, "connect: %s\n", strerror(errno));
	struct linger hard = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
	close(fd);
	return rc;
}

/* The ring the shim mapped into this process, found as a program
 * would find it. */
static struct pf_ring_header *find_ring(void)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	char line[512];
	void *found = NULL;

	while (maps && fgets(line, sizeof(line), maps))
		if (strstr(line, "portfence-ring")) {
			unsigned long start;
			if (sscanf(line, "%lx-", &start) == 1)
				found = (void *)start;
			break;
		}
	if (maps)
		fclose(maps);
	return found;
}

/* A slot claimed and committed as the shim does, its body random. */
static void put_raw(struct pf_ring_header *h, const unsigned char *body)
{
	struct pf_ring_slot *slots = pf_ring_slots(h);
	uint64_t pos = atomic_fetch_add(&h->head, 1);
	struct pf_ring_slot *slot = &slots[pos & (PF_RING_SLOTS - 1)];
	memcpy((char *)slot + 8, body, sizeof(*slot) - 8);
	atomic_store(&slot->seq, pos + 1);
}

static int hostile(const char *dest_text, const char *log, const char *socket_path)
{
	struct sockaddr_in dest = parse(dest_text);
	unsigned char body[56];

	printf("connect1 %d\n", connect_once(&dest));
	struct pf_ring_header *h = find_ring();
	printf("ring %s\n", h ? "found" : "none");
	if (h) {
		srand(42);
		for (int i = 0; i < 10; i++) {
			for (size_t b = 0; b < sizeof(body); b++)
				body[b] = (unsigned char)rand();
			body[8] = 0x7f;	/* never an event */
			put_raw(h, body);
		}
		/* A well-formed record of a connect that never happened: it
		 * can only ever carry this process's identity. */
		struct sockaddr_in fake_remote = parse("10.9.9.9:25");
		struct pf_ring_entry e;
		pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, (struct sockaddr *)&fake_remote, 1, 0);
		printf("forged %d\n", pf_ring_put(h, &e));
	}
	int fd = open(log, O_WRONLY | O_APPEND);
	printf("open-log %s\n", fd >= 0 ? "ok" : strerror(errno));
	printf("truncate-log %s\n", truncate(log, 0) == 0 ? "ok" : strerror(errno));
	if (fd >= 0)
		close(fd);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		char junk[300];
		memset(junk, 'A', sizeof(junk));
		printf("forged-registration %zd\n", write(s, junk, sizeof(junk)));
		char answer;
		printf("answer %zd\n", read(s, &answer, 1));
	}
	close(s);
	printf("connect2 %d\n", connect_once(&dest));
	return 0;
}

/* Registers a ring of version with the collector at socket_path, its
 * memfd sealed against shrinking or not, as a shim would; prints
 * "answer N" (N the bytes of the answer read, "yes" for a yes).  The
 * socket and the ring stay open until the process exits. */
static int register_ring(const char *socket_path, uint32_t version, bool sealed)
{
	int memfd = memfd_create("portfence-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	struct pf_ring_register message = {.magic = PF_REGISTER_MAGIC, .version = version, .app = "svc",
					    .algorithm = "sequential"};
	char control[CMSG_SPACE(sizeof(int))] = {0}, answer = 0;
	struct iovec iov = {.iov_base = &message, .iov_len = sizeof(message)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	if (memfd < 0 || ftruncate(memfd, PF_RING_BYTES) < 0)
		return 1;
	struct pf_ring_header *h = mmap(NULL, PF_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (h == MAP_FAILED ||
	    (sealed && fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0))
		return 1;
	pf_ring_init(h);
	h->version = version;
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &memfd, sizeof(int));
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || sendmsg(s, &msg, 0) != (ssize_t)sizeof(message))
		return 1;
	ssize_t got = read(s, &answer, 1);
	printf("answer %zd%s\n", got, got == 1 && answer == '1' ? " yes" : "");
	fflush(stdout);
	return 0;
}

struct paced_thread {
	struct sockaddr_in dest;
	int n, us, ok;
	pthread_t thread;
};

static void *paced_loop(void *arg)
{
	struct paced_thread *t = arg;
	for (int i = 0; i < t->n; i++) {
		t->ok += connect_once(&t->dest) == 0;
		if (t->us)
			usleep((useconds_t)t->us);
	}
	return NULL;
}

static int threads(int n, int us, int count, char **dests)
{
	struct paced_thread t[count];
	int all = 1;
	for (int i = 0; i < count; i++) {
		t[i] = (struct paced_thread){.dest = parse(dests[i]), .n = n, .us = us};
		pthread_create(&t[i].thread, NULL, paced_loop, &t[i]);
	}
	for (int i = 0; i < count; i++) {
		pthread_join(t[i].thread, NULL);
		printf("ok %d\n", t[i].ok);
		all &= t[i].ok == n;
	}
	return all ? 0 : 1;
}

/* n connects to dest (ADDR:PORT), pace_ms apart; "ok K", and 0 when
 * all succeeded. */
static int connects(int n, int pace_ms, const char *dest_text)
{
	struct sockaddr_in dest = parse(dest_text);
	int ok = 0;

	for (int i = 0; i < n; i++) {
		ok += connect_once(&dest) == 0;
		if (pace_ms)
			usleep((useconds_t)pace_ms * 1000);
	}
	printf("ok %d\n", ok);
	return ok == n ? 0 : 1;
}

/* n UDP connects (no datagram sent), as fast as they go: a burst of
 * records faster than TCP's handshakes make one. */
static int udp_connects(int n, const char *dest_text)
{
	struct sockaddr_in dest = parse(dest_text);
	int ok = 0;

	for (int i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		ok += fd >= 0 && connect(fd, (const struct sockaddr *)&dest, sizeof(dest)) == 0;
		if (fd >= 0)
			close(fd);
	}
	printf("ok %d\n", ok);
	return ok == n ? 0 : 1;
}

/* Rounds of n open connections closed by one close_range (or closefrom). */
static int batches(int n, int rounds, const char *dest_text, bool use_closefrom)
{
	struct sockaddr_in dest = parse(dest_text);
	struct linger hard = {.l_onoff = 1, .l_linger = 0};
	int ok = 0;

	for (int round = 0; round < rounds; round++) {
		int first = -1;
		for (int i = 0; i < n; i++) {
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			if (fd < 0)
				break;
			if (first < 0)
				first = fd;
			if (connect(fd, (const struct sockaddr *)&dest, sizeof(dest)) == 0)
				ok++;
			else
				fprintf(stderr, "connect: %s\n", strerror(errno));
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
		}
		if (first >= 0 && use_closefrom)
			closefrom(first);
		else if (first >= 0 && close_range((unsigned)first, ~0u, 0) != 0)
			fprintf(stderr, "close_range: %s\n", strerror(errno));
	}
	printf("ok %d\n", ok);
	return ok == n * rounds ? 0 : 1;
}

/* Dies holding a connected socket, as a program killed by a signal or
 * leaving by _exit does: no close, no exit handler. */
static int die_connected(const char *dest_text, const char *how)
{
	struct sockaddr_in dest = parse(dest_text);
	char greeting[16];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (const struct sockaddr *)&dest, sizeof(dest)) != 0) {
		printf("failed %s\n", strerror(errno));
		return 1;
	}
	if (read(fd, greeting, sizeof(greeting)) <= 0) {
		printf("failed no greeting\n");
		return 1;
	}
	printf("ok\n");
	fflush(stdout);
	if (strcmp(how, "_exit") == 0)
		_exit(0);
	raise(SIGKILL);
	return 1;
}

/* One connect that reads the server's greeting to its close. */
static int greeted(const struct sockaddr_in *dest, int keep)
{
	char buf[64];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (const struct sockaddr *)dest, sizeof(*dest)) != 0) {
		fprintf(stderr, "connect: %s\n", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	if (keep)
		return fd;
	close(fd);
	return 0;
}

/* A child that waits for one fd over the UNIX socket, then keeps it. */
static pid_t fd_keeper(int *to_keeper)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		char byte;
		char control[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {&byte, 1};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
				     .msg_controllen = sizeof(control)};
		close(pair[0]);
		if (recvmsg(pair[1], &msg, 0) == 1)
			sleep(4);
		_exit(0);
	}
	close(pair[1]);
	*to_keeper = pair[0];
	return pid;
}

static int send_fd(int channel, int fd)
{
	char byte = 'x';
	char control[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {&byte, 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(channel, &msg, 0) == 1 ? 0 : -1;
}

/* Another process keeps the connected socket fd: 0, or -1. */
static int hand_over(int fd, const char *how, int channel)
{
	if (strcmp(how, "scm") == 0)
		return send_fd(channel, fd);
	if (strcmp(how, "dup") == 0)
		return dup(fd) >= 0 ? 0 : -1;
	if (strcmp(how, "dup2") == 0)
		return dup2(fd, 200) == 200 ? 0 : -1;
	if (strcmp(how, "dupfd") == 0)
		return fcntl(fd, F_DUPFD, 300) >= 0 ? 0 : -1;
	if (strcmp(how, "dupfd64") == 0)	/* what a program built with 64-bit offsets calls */
		return fcntl64(fd, F_DUPFD_CLOEXEC, 300) >= 0 ? 0 : -1;
	if (strcmp(how, "system") == 0)
		return system("sleep 4 >/dev/null 2>&1 &") == 0 ? 0 : -1;
	if (strcmp(how, "popen") == 0)
		return popen("sleep 4 >/dev/null 2>&1", "r") ? 0 : -1;
	posix_spawn_file_actions_t actions;
	char *const args[] = {"sleep", "4", NULL};
	pid_t pid;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
	int rc = posix_spawnp(&pid, "sleep", &actions, NULL, args, environ);
	posix_spawn_file_actions_destroy(&actions);
	return rc == 0 ? 0 : -1;
}

/* A socket that lives on in another process after this one closes it:
 * the 4-tuple stays taken there. */
static int handed(const char *dest_text, int n, const char *how)
{
	struct sockaddr_in dest = parse(dest_text);
	int channel = -1, ok = 0;

	if (strcmp(how, "scm") == 0 && fd_keeper(&channel) < 0)
		return 1;
	int fd = greeted(&dest, 1);
	if (fd < 0 || hand_over(fd, how, channel) != 0) {
		printf("failed to hand the socket over\n");
		return 1;
	}
	close(fd);
	struct timespec past_quarantine = {2, 200000000};
	nanosleep(&past_quarantine, NULL);
	for (int i = 0; i < n; i++)
		ok += greeted(&dest, 0) == 0;
	printf("ok %d of %d\n", ok, n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "handed") == 0)
		return handed(argv[2], atoi(argv[3]), argv[4]);
	if (argc == 4 && strcmp(argv[1], "die") == 0)
		return die_connected(argv[2], argv[3]);
	if (argc >= 5 && argc <= 20 && strcmp(argv[1], "threads") == 0)
		return threads(atoi(argv[2]), atoi(argv[3]), argc - 4, argv + 4);
	if (argc == 4 && strcmp(argv[1], "connect") == 0)
		return connects(atoi(argv[2]), 0, argv[3]);
	if (argc == 4 && strcmp(argv[1], "udp") == 0)
		return udp_connects(atoi(argv[2]), argv[3]);
	if (argc == 4 && strcmp(argv[1], "signalled") == 0) {
		/* The shim registered its ring before main: the test stops
		 * the collector now, then lets the connects go. */
		sigset_t go;
		int sig;
		sigemptyset(&go);
		sigaddset(&go, SIGUSR1);
		sigprocmask(SIG_BLOCK, &go, NULL);
		printf("ready\n");
		fflush(stdout);
		sigwait(&go, &sig);
		return connects(atoi(argv[2]), 0, argv[3]);
	}
	if (argc == 5 && strcmp(argv[1], "paced") == 0)
		return connects(atoi(argv[2]), atoi(argv[3]), argv[4]);
	if (argc == 4 && strcmp(argv[1], "hold") == 0) {
		struct sockaddr_in dest = parse(argv[3]);
		int n = atoi(argv[2]), ok = 0;
		for (int i = 0; i < n; i++) {
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			ok += fd >= 0 && connect(fd, (const struct sockaddr *)&dest, sizeof(dest)) == 0;
		}
		printf("ok %d\n", ok);
		return 0;
	}
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "batch") == 0)
		return batches(atoi(argv[2]), atoi(argv[3]), argv[4], argc == 6 && strcmp(argv[5], "closefrom") == 0);
	if (argc == 5 && strcmp(argv[1], "hostile") == 0)
		return hostile(argv[2], argv[3], argv[4]);
	if (argc == 3 && strcmp(argv[1], "older") == 0)
		return register_ring(argv[2], PF_RING_VERSION - 1, true);
	if (argc == 3 && strcmp(argv[1], "unsealed") == 0)
		return register_ring(argv[2], PF_RING_VERSION, false);
	if (argc == 4 && strcmp(argv[1], "rings") == 0) {
		for (int i = 0, n = atoi(argv[3]); i < n; i++)
			if (register_ring(argv[2], PF_RING_VERSION, true) != 0)
				return 1;
		return 0;
	}
	fprintf(stderr, "usage: ringprobe connect N ADDR:PORT | udp N ADDR:PORT | paced N MS ADDR:PORT | signalled N ADDR:PORT | threads N US ADDR:PORT... | hold N ADDR:PORT | batch N ROUNDS ADDR:PORT [closefrom] | die ADDR:PORT kill|_exit | handed ADDR:PORT N spawn|system|popen|scm|dup|dup2|dupfd|dupfd64 | hostile ADDR:PORT LOG SOCKET | older SOCKET | unsealed SOCKET | rings SOCKET N\n");
	return 2;
}
