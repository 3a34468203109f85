/* libFuzzer target: the destination rule parser and matcher. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[256];
	struct pf_rule rule;
	const char *why = NULL;

	if (size >= sizeof(text))
		size = sizeof(text) - 1;
	memcpy(text, data, size);
	text[size] = '\0';
	if (pf_rule_parse(text, &rule, &why) != 0) {
		if (!why)
			abort(); /* every refusal must say why */
		return 0;
	}
	struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(rule.port_lo)};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(rule.port_hi)};
	memcpy(&v4.sin_addr, rule.addr, 4);
	memcpy(&v6.sin6_addr, rule.addr, 16);
	/* A rule always matches its own network address and ports. */
	if (rule.family == AF_INET && !pf_rule_matches(&rule, (struct sockaddr *)&v4, sizeof(v4)))
		abort();
	if (rule.family == AF_INET6 && !pf_rule_matches(&rule, (struct sockaddr *)&v6, sizeof(v6)))
		abort();
	return 0;
}

#include "fuzz_replay.h"
