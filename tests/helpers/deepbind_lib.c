/* A library that runtime_probe opens with RTLD_DEEPBIND, as PHP opens its
 * curl and sockets extensions: its own references to connect() are looked
 * up in its own scope (itself, then libc) before the preloaded shim. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* Connects to 127.0.0.1:port; returns the local port, or -errno. */
__attribute__((visibility("default"))) int deep_connect(int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	int fd = socket(AF_INET, SOCK_STREAM, 0), result;

	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		result = -errno;
	else
		result = getsockname(fd, (struct sockaddr *)&local, &len) == 0 ? ntohs(local.sin_port) : -1;
	close(fd);
	return result;
}
