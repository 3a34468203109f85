/* "ADDR:PORT" (IPv4) as the helper programs take a destination; a bad
 * one ends the program with status 2. */
#ifndef PORTFENCE_HELPERS_DEST_H
#define PORTFENCE_HELPERS_DEST_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline struct sockaddr_in parse(const char *text)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	char host[64];
	unsigned port;
	if (sscanf(text, "%63[^:]:%u", host, &port) != 2 || inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
		fprintf(stderr, "bad destination %s\n", text);
		exit(2);
	}
	sin.sin_port = htons((uint16_t)port);
	return sin;
}

#endif
