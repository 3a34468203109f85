/* ADDR:PORT as the log writes it ("127.0.0.1:80", "[::1]:53"), and the
 * rule of a policy that refuses such a destination. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config/policy.h"

int cli_parse_endpoint(const char *text, struct sockaddr_storage *ss, unsigned *len)
{
	char addr[INET6_ADDRSTRLEN + 2];
	const char *colon = text ? strrchr(text, ':') : NULL;
	char *end;

	if (!colon || (size_t)(colon - text) >= sizeof(addr))
		return -1;
	long port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
		return -1;
	memcpy(addr, text, (size_t)(colon - text));
	addr[colon - text] = '\0';
	memset(ss, 0, sizeof(*ss));
	if (addr[0] == '[') {
		size_t n = strlen(addr);
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (n < 3 || addr[n - 1] != ']')
			return -1;
		addr[n - 1] = '\0';
		if (inet_pton(AF_INET6, addr + 1, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
		return -1;
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	*len = sizeof(*sin);
	return 0;
}

static void format_rule(const struct pf_rule *rule, char *out, size_t len)
{
	char addr[INET6_ADDRSTRLEN], port[16] = "";

	inet_ntop(rule->family, rule->addr, addr, sizeof(addr));
	if (rule->port_lo == rule->port_hi)
		snprintf(port, sizeof(port), ":%u", rule->port_lo);
	else if (rule->port_lo != 0 || rule->port_hi != 65535)
		snprintf(port, sizeof(port), ":%u-%u", rule->port_lo, rule->port_hi);
	if (rule->family == AF_INET6)
		snprintf(out, len, "[%s/%u]%s", addr, rule->prefix, port);
	else
		snprintf(out, len, "%s/%u%s", addr, rule->prefix, port);
}

/* The destination as the rules judge it: IPv4-mapped as IPv4, the
 * unspecified addresses as loopback (SPEC, "Policy file"). */
static void judged(struct sockaddr_storage *ss, socklen_t *len)
{
	if (ss->ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = sin6->sin6_port};
			memcpy(&sin.sin_addr, &sin6->sin6_addr.s6_addr[12], 4);
			memset(ss, 0, sizeof(*ss));
			memcpy(ss, &sin, sizeof(sin));
			*len = sizeof(sin);
		} else if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)) {
			sin6->sin6_addr = in6addr_loopback;
		}
	}
	if (ss->ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
			sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
}

bool cli_refusing_rule(const struct pf_app *app, const char *remote, char *out, size_t len)
{
	struct sockaddr_storage ss;
	unsigned ss_len;
	char text[128];

	if (cli_parse_endpoint(remote, &ss, &ss_len) < 0)
		return false;
	judged(&ss, &ss_len);
	if (pf_app_permits_linear(app, (struct sockaddr *)&ss, ss_len))
		return false;
	for (size_t i = 0; i < app->deny.count; i++)
		if (pf_rule_matches(&app->deny.rules[i], (struct sockaddr *)&ss, ss_len)) {
			format_rule(&app->deny.rules[i], text, sizeof(text));
			snprintf(out, len, "deny \"%s\" %s:%d", text, app->file ? app->file : "",
				 app->deny.rules[i].line);
			return true;
		}
	snprintf(out, len, "allow (no rule matches) %s:%d", app->file ? app->file : "",
		 app->allow.count ? app->allow.rules[0].line : app->line);
	return true;
}
