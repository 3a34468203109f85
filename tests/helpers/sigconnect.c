/* sigconnect ALLOWED_PORT DENIED_PORT HANDLER_CALLS
 * The main thread connects to 127.0.0.1:ALLOWED_PORT in a loop, so a
 * timer signal often lands while it is inside the shim; the handler then
 * connects to 127.0.0.1:DENIED_PORT.  Prints how the handler's connects
 * ended: "handler ok N eperm N other N". */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static struct sockaddr_in allowed, denied;
static volatile sig_atomic_t ok, eperm, other, calls, wanted;

static void on_alarm(int sig)
{
	(void)sig;
	/* A signal after the last call, before the timer stops, must not
	 * make one more (the test counts exactly `wanted`). */
	if (calls >= wanted)
		return;
	int saved = errno, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (connect(fd, (struct sockaddr *)&denied, sizeof(denied)) == 0)
		ok++;
	else if (errno == EPERM)
		eperm++;
	else
		other++;
	close(fd);
	calls++;
	errno = saved;
}

static struct sockaddr_in loopback(const char *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	allowed = loopback(argv[1]);
	denied = loopback(argv[2]);
	wanted = atoi(argv[3]);
	struct sigaction action = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &action, NULL);
	struct itimerval every = {{0, 300}, {0, 300}};
	setitimer(ITIMER_REAL, &every, NULL);
	while (calls < wanted) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		connect(fd, (struct sockaddr *)&allowed, sizeof(allowed));
		close(fd);
	}
	struct itimerval stop = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &stop, NULL);
	printf("handler ok %d eperm %d other %d\n", (int)ok, (int)eperm, (int)other);
	return 0;
}
