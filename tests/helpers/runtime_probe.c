/* runtime_probe: programs that meet the shim at awkward moments (a signal
 * handler inside malloc, a cancelled thread, children made without fork(),
 * fds the hooks never saw change hands, a library loaded with
 * RTLD_DEEPBIND).  Each mode prints what it observed, one "key value"
 * per line; the tests compare that with the servers and the audit log. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in dest_of(const char *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	return sin;
}

static int local_port(int fd)
{
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	return getsockname(fd, (struct sockaddr *)&local, &len) == 0 ? ntohs(local.sin_port) : -1;
}

/* Connects fd to 127.0.0.1:port; returns the local port or -errno. */
static int connect_fd(int fd, const char *port)
{
	struct sockaddr_in sin = dest_of(port);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -errno;
	return local_port(fd);
}

static int connect_new(const char *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int result = connect_fd(fd, port);
	close(fd);
	return result;
}

/* Written with write(2) only: usable from a handler and a raw child. */
static void say(const char *key, long value)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "%s %ld\n", key, value);
	ssize_t ignored = write(STDOUT_FILENO, line, (size_t)n);
	(void)ignored;
}

/* ---- handler PORT: the process's first connect, in a SIGPROF handler
 * that interrupts malloc (a second thread makes malloc take its locks) */
static const char *handler_port;
static atomic_int handler_started, handler_done;

/* The signal may land on either thread: main waits for done, set only
 * once the line is written, or it could return (and end the process)
 * while the other thread's handler is still connecting. */
static void on_prof(int sig)
{
	int saved = errno;

	(void)sig;
	if (!atomic_exchange(&handler_started, 1)) {
		say("handler_port", connect_new(handler_port));
		atomic_store(&handler_done, 1);
	}
	errno = saved;
}

static void *idle_thread(void *arg)
{
	(void)arg;
	pause();
	return NULL;
}

static int mode_handler(const char *port)
{
	pthread_t idle;
	struct sigaction sa = {.sa_handler = on_prof};
	struct itimerval every = {.it_interval = {0, 300}, .it_value = {0, 300}};
	void *blocks[64] = {0};

	handler_port = port;
	pthread_create(&idle, NULL, idle_thread, NULL);
	pthread_detach(idle);
	sigaction(SIGPROF, &sa, NULL);
	setitimer(ITIMER_PROF, &every, NULL);
	for (unsigned i = 0; !atomic_load(&handler_done); i++) {
		free(blocks[i % 64]);
		blocks[i % 64] = malloc(2048 + (i * 7919) % 60000);
	}
	struct itimerval off = {0};
	setitimer(ITIMER_PROF, &off, NULL);
	return 0;
}

/* ---- cancel PORT: a thread cancelled in its first connect; then the
 * program connects and forks */
static void *cancelled_first_connect(void *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	/* Pending before the call: acted on at its first cancellation point. */
	pthread_cancel(pthread_self());
	connect_fd(fd, port);
	say("cancel_not_honoured", 1);
	return NULL;
}

static int mode_cancel(const char *port)
{
	pthread_t thread;
	void *result;

	pthread_create(&thread, NULL, cancelled_first_connect, (void *)port);
	pthread_join(thread, &result);
	say("thread_cancelled", result == PTHREAD_CANCELED);
	say("main_port", connect_new(port));
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		alarm(10);
		say("child_port", connect_new(port));
		_exit(0);
	}
	int status;
	waitpid(child, &status, 0);
	say("child_status", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 0;
}

/* ---- children PORT1 PORT2: children made by _Fork(), syscall(SYS_clone)
 * and clone() each connect to PORT2 once; after each, the parent connects
 * to PORT1.  A child that replays the parent's random sequence takes the
 * port the parent takes next. */
static const char *child_port_text;

static int child_body(void *arg)
{
	(void)arg;
	say("child_pid", (long)syscall(SYS_getpid));
	say("child_port", connect_new(child_port_text));
	return 0;
}

static pid_t child_by(const char *how)
{
	static char stack[256 * 1024] __attribute__((aligned(16)));

	if (strcmp(how, "_Fork") == 0) {
		pid_t pid = _Fork();
		if (pid == 0)
			_exit(child_body(NULL));
		return pid;
	}
	if (strcmp(how, "SYS_clone") == 0) {
		pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
		if (pid == 0)
			_exit(child_body(NULL));
		return pid;
	}
	return clone(child_body, stack + sizeof(stack), SIGCHLD, NULL);
}

static int mode_children(const char *parent_port, const char *child_port)
{
	static const char *const methods[] = {"_Fork", "SYS_clone", "clone"};

	child_port_text = child_port;
	say("parent_pid", getpid());
	say("parent_port", connect_new(parent_port));
	for (int i = 0; i < 3; i++) {
		printf("method %s\n", methods[i]);
		fflush(stdout);
		pid_t pid = child_by(methods[i]);
		int status = -1;
		if (pid > 0)
			waitpid(pid, &status, 0);
		say("child_status", status);
		say("parent_port", connect_new(parent_port));
	}
	return 0;
}

/* ---- stale dup|scm PORT: a connected socket closed inside libc
 * (fclose(fdopen())), then a fresh socket on its number that the hooks
 * did not see created (dup(), or received over a unix socket) */
/* Hands fd over a unix socket pair and returns the number it arrives as. */
static int pass_over(int fd, const int pair[2])
{
	char byte = 'x', control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
			     .msg_controllen = sizeof(control)};
	int received = -1;

	memset(control, 0, sizeof(control));
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(pair[0], &msg, 0) != 1)
		return -1;
	close(fd);
	msg.msg_controllen = sizeof(control);
	if (recvmsg(pair[1], &msg, 0) == 1 && CMSG_FIRSTHDR(&msg))
		memcpy(&received, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	return received;
}

static int mode_stale(const char *how, const char *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	say("first_port", connect_fd(fd, port));
	/* Prepared before the close, so that the new socket takes fd's number. */
	int spare = socket(AF_INET, SOCK_STREAM, 0), pair[2] = {-1, -1};
	if (strcmp(how, "scm") == 0)
		socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
	fclose(fdopen(fd, "r+"));
	int fresh;
	if (strcmp(how, "dup") == 0) {
		fresh = dup(spare);
		close(spare);
	} else {
		fresh = pass_over(spare, pair);
	}
	say("same_number", fresh == fd);
	say("second_port", connect_fd(fresh, port));
	return 0;
}

/* ---- deepbind LIB PORT now|lazy|plain: a library opened with
 * RTLD_DEEPBIND (plain: without) connects.  LIB may be a bare name, found
 * through this program's RUNPATH ($ORIGIN). */
static int mode_deepbind(const char *lib, const char *port, const char *binding)
{
	int mode = strcmp(binding, "lazy") == 0 ? RTLD_LAZY | RTLD_DEEPBIND
		   : strcmp(binding, "plain") == 0 ? RTLD_NOW
						   : RTLD_NOW | RTLD_DEEPBIND;
	void *handle = dlopen(lib, mode);
	if (!handle) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	int (*deep_connect)(int) = (int (*)(int))dlsym(handle, "deep_connect");
	if (!deep_connect)
		return 2;
	say("deep_port", deep_connect(atoi(port)));
	return 0;
}

/* ---- forklock ROUNDS: a child made by _Fork() (no atfork handler) while
 * another thread moves fds with dup2 must still move its own: the shim
 * holds a lock around every such move, and the child inherits it held by
 * a thread it does not have.  Each child's dup2 must return; a hang ends
 * in the alarm (status 142). */
static void *dup2_forever(void *unused)
{
	int spare = dup(0);
	(void)unused;
	for (;;)
		dup2(spare, 40);
	return NULL;
}

static int mode_forklock(const char *rounds_text)
{
	pthread_t mover;
	int rounds = atoi(rounds_text), finished = 0;

	/* A _Fork() child takes about a second under ThreadSanitizer. */
	alarm(10 + 3 * (unsigned)rounds);
	pthread_create(&mover, NULL, dup2_forever, NULL);
	for (int i = 0; i < rounds; i++) {
		pid_t child = _Fork();
		if (child == 0) {
			alarm(2);
			_exit(dup2(2, 41) == 41 ? 0 : 1);
		}
		int status = 0;
		waitpid(child, &status, 0);
		finished += WIFEXITED(status) && WEXITSTATUS(status) == 0;
	}
	say("children_finished", finished);
	return 0;
}

int main(int argc, char **argv)
{
	/* A hang is the failure some modes look for: it ends in SIGALRM. */
	alarm(10);
	if (argc == 3 && strcmp(argv[1], "handler") == 0)
		return mode_handler(argv[2]);
	if (argc == 3 && strcmp(argv[1], "cancel") == 0)
		return mode_cancel(argv[2]);
	if (argc == 4 && strcmp(argv[1], "children") == 0)
		return mode_children(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "stale") == 0)
		return mode_stale(argv[2], argv[3]);
	if (argc == 5 && strcmp(argv[1], "deepbind") == 0)
		return mode_deepbind(argv[2], argv[3], argv[4]);
	if (argc == 3 && strcmp(argv[1], "forklock") == 0)
		return mode_forklock(argv[2]);
	fprintf(stderr, "usage: runtime_probe handler PORT | cancel PORT | children PORT1 PORT2 |"
			" stale dup|scm PORT | deepbind LIB PORT now|lazy|plain | forklock ROUNDS\n");
	return 2;
}
