/* A library whose constructor connects before the shim's constructor has
 * run (the program links this library; the shim is preloaded, and the
 * loader initialises the program's own dependencies first).  libfaketime
 * tests its early hooks the same way. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void connect_early(void)
{
	const char *port = getenv("EARLY_CONNECT_PORT");
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct sockaddr_in local;
	socklen_t len = sizeof(local);

	if (!port)
		return;
	sin.sin_port = htons((uint16_t)atoi(port));
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		perror("early connect");
		return;
	}
	getsockname(fd, (struct sockaddr *)&local, &len);
	printf("early_local_port %u\n", ntohs(local.sin_port));
	fflush(stdout);
	close(fd);
}

__attribute__((visibility("default"))) void early_connect_linked(void)
{
}
