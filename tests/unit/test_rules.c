/* Destination rules: parsing and matching. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "config/policy.h"

static struct sockaddr_in v4(const char *addr, uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	cr_assert_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	return sin;
}

static struct sockaddr_in6 v6(const char *addr, uint16_t port)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	cr_assert_eq(inet_pton(AF_INET6, addr, &sin6.sin6_addr), 1);
	return sin6;
}

static struct pf_rule rule(const char *text)
{
	struct pf_rule r;
	const char *why = NULL;
	cr_assert_eq(pf_rule_parse(text, &r, &why), 0, "%s: %s", text, why);
	return r;
}

#define MATCHES(r, sa) pf_rule_matches(&(r), (const struct sockaddr *)&(sa), sizeof(sa))

Test(rules, ipv4_cidr_and_ports)
{
	struct pf_rule net = rule("127.0.0.0/8");
	struct sockaddr_in in_net = v4("127.1.2.3", 80), outside = v4("10.0.0.1", 80);
	cr_expect(MATCHES(net, in_net));
	cr_expect_not(MATCHES(net, outside));

	struct pf_rule single = rule("0.0.0.0/0:443");
	struct sockaddr_in https = v4("192.0.2.1", 443), http = v4("192.0.2.1", 80);
	cr_expect(MATCHES(single, https));
	cr_expect_not(MATCHES(single, http));

	struct pf_rule range = rule("10.0.0.0/24:1000-2000");
	struct sockaddr_in lo_edge = v4("10.0.0.9", 1000), hi_edge = v4("10.0.0.9", 2000),
			   beyond = v4("10.0.0.9", 2001), other_net = v4("10.0.1.9", 1500);
	cr_expect(MATCHES(range, lo_edge));
	cr_expect(MATCHES(range, hi_edge));
	cr_expect_not(MATCHES(range, beyond));
	cr_expect_not(MATCHES(range, other_net));

	struct pf_rule host = rule("192.0.2.7");
	struct sockaddr_in same = v4("192.0.2.7", 1), next = v4("192.0.2.8", 1);
	cr_expect(MATCHES(host, same));
	cr_expect_not(MATCHES(host, next));
}

Test(rules, odd_prefix_lengths)
{
	struct pf_rule r = rule("192.168.4.0/22");
	struct sockaddr_in first = v4("192.168.4.0", 1), last = v4("192.168.7.255", 1),
			   after = v4("192.168.8.0", 1);
	cr_expect(MATCHES(r, first));
	cr_expect(MATCHES(r, last));
	cr_expect_not(MATCHES(r, after));
}

Test(rules, ipv6_with_brackets)
{
	struct pf_rule loopback = rule("[::1]");
	struct sockaddr_in6 one = v6("::1", 53), two = v6("::2", 53);
	cr_expect(MATCHES(loopback, one));
	cr_expect_not(MATCHES(loopback, two));

	struct pf_rule doc = rule("[2001:db8::/32]:443");
	struct sockaddr_in6 inside = v6("2001:db8:1::5", 443), wrong_port = v6("2001:db8::5", 80),
			    outside = v6("2001:db9::5", 443);
	cr_expect(MATCHES(doc, inside));
	cr_expect_not(MATCHES(doc, wrong_port));
	cr_expect_not(MATCHES(doc, outside));

	struct pf_rule ranged = rule("[fe80::/10]:5000-5010");
	struct sockaddr_in6 link = v6("fe80::1", 5005);
	cr_expect(MATCHES(ranged, link));
}

Test(rules, v4_mapped_judged_as_ipv4)
{
	struct pf_rule r = rule("127.0.0.0/8:8080");
	struct sockaddr_in6 mapped = v6("::ffff:127.0.0.1", 8080);
	cr_expect(MATCHES(r, mapped));

	struct pf_rule v6_any = rule("[::/0]");
	cr_expect_not(MATCHES(v6_any, mapped), "a mapped address is IPv4, not IPv6");
}

Test(rules, v4_mapped_rule_means_its_ipv4_network)
{
	struct pf_rule host = rule("[::ffff:127.0.0.1]:80");
	cr_expect_eq(host.family, AF_INET);
	cr_expect_eq(host.prefix, 32);
	struct sockaddr_in plain = v4("127.0.0.1", 80);
	struct sockaddr_in6 mapped = v6("::ffff:127.0.0.1", 80);
	cr_expect(MATCHES(host, plain));
	cr_expect(MATCHES(host, mapped));

	struct pf_rule net = rule("[::ffff:10.0.0.0/104]");
	cr_expect_eq(net.prefix, 8);
	struct sockaddr_in ten = v4("10.9.8.7", 1);
	cr_expect(MATCHES(net, ten));
}

Test(rules, malformed_rules_rejected)
{
	static const char *const bad[] = {
		"", "127.0.0.0/33", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:80-70",
		"300.0.0.1", "::1", "[::1", "[::1]443", "[::1/129]", "[127.0.0.1]",
		"10.0.0.0/8:", "10.0.0.0/8:http", "10.0.0.0/", "10.0.0.1:1-", "[::1]:1:2",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct pf_rule r;
		const char *why = NULL;
		cr_expect_eq(pf_rule_parse(bad[i], &r, &why), -1, "\"%s\" accepted", bad[i]);
		cr_expect_not_null(why);
	}
}

static struct pf_app app_with(const char *const *allow, size_t allow_n,
			      const char *const *deny, size_t deny_n)
{
	static struct pf_rule allow_rules[8], deny_rules[8];
	struct pf_app app = {0};
	for (size_t i = 0; i < allow_n; i++)
		allow_rules[i] = rule(allow[i]);
	for (size_t i = 0; i < deny_n; i++)
		deny_rules[i] = rule(deny[i]);
	app.has_allow = allow != NULL;
	app.allow = (struct pf_rule_list){allow_rules, allow_n};
	app.deny = (struct pf_rule_list){deny_rules, deny_n};
	return app;
}

#define PERMITS(app, sa) pf_app_permits(&(app), (const struct sockaddr *)&(sa), sizeof(sa))

Test(rules, deny_wins_over_allow)
{
	const char *allow[] = {"127.0.0.0/8"}, *deny[] = {"127.0.0.0/8:25"};
	struct pf_app app = app_with(allow, 1, deny, 1);
	struct sockaddr_in web = v4("127.0.0.1", 80), smtp = v4("127.0.0.1", 25),
			   away = v4("192.0.2.1", 80);
	cr_expect(PERMITS(app, web));
	cr_expect_not(PERMITS(app, smtp));
	cr_expect_not(PERMITS(app, away), "not in the allow list");
}

Test(rules, no_allow_list_permits_all_but_denied)
{
	const char *deny[] = {"0.0.0.0/0:25", "[::/0]:25"};
	struct pf_app app = app_with(NULL, 0, deny, 2);
	struct sockaddr_in web = v4("192.0.2.1", 80), smtp = v4("192.0.2.1", 25);
	struct sockaddr_in6 smtp6 = v6("2001:db8::1", 25), mapped_smtp = v6("::ffff:192.0.2.1", 25);
	cr_expect(PERMITS(app, web));
	cr_expect_not(PERMITS(app, smtp));
	cr_expect_not(PERMITS(app, smtp6));
	cr_expect_not(PERMITS(app, mapped_smtp));
}

Test(rules, empty_allow_list_permits_nothing)
{
	const char *none[] = {NULL};
	struct pf_app app = app_with(none, 0, NULL, 0);
	struct sockaddr_in any = v4("127.0.0.1", 80);
	cr_expect_not(PERMITS(app, any));
}

Test(rules, short_or_foreign_addresses_are_not_judged)
{
	const char *allow[] = {"127.0.0.1"};
	struct pf_app app = app_with(allow, 1, NULL, 0);
	struct sockaddr_in sin = v4("10.0.0.1", 80);
	cr_expect_not(pf_rule_matches(&app.allow.rules[0], (struct sockaddr *)&sin, 4));
	cr_expect_not(pf_rule_matches(&app.allow.rules[0], NULL, 0));
}

/* The kernel sends a connect to an unspecified address to loopback, so
 * such a destination is judged as the loopback address of its family. */
Test(rules, unspecified_addresses_judged_as_loopback)
{
	const char *deny[] = {"127.0.0.1:25", "[::1]:25"};
	struct pf_app app = app_with(NULL, 0, deny, 2);
	struct sockaddr_in any4 = v4("0.0.0.0", 25), any4_web = v4("0.0.0.0", 80);
	struct sockaddr_in6 any6 = v6("::", 25), mapped_any = v6("::ffff:0.0.0.0", 25);
	cr_expect_not(PERMITS(app, any4));
	cr_expect_not(PERMITS(app, any6));
	cr_expect_not(PERMITS(app, mapped_any));
	cr_expect(PERMITS(app, any4_web));
	cr_assert_eq(pf_app_index_rules(&app), 0);
	cr_expect_not(PERMITS(app, any4), "compiled rules");
	cr_expect_not(PERMITS(app, any6), "compiled rules");
	cr_expect_not(PERMITS(app, mapped_any), "compiled rules");
	cr_expect(PERMITS(app, any4_web), "compiled rules");
	pf_app_free_rule_index(&app);

	const char *allow[] = {"127.0.0.0/8", "[::1]"};
	struct pf_app loopback_only = app_with(allow, 2, NULL, 0);
	cr_expect(PERMITS(loopback_only, any4));
	cr_expect(PERMITS(loopback_only, any6));
	cr_expect(PERMITS(loopback_only, mapped_any));

	const char *allow_any[] = {"0.0.0.0/32", "[::/128]"};
	struct pf_app unspecified_rules = app_with(allow_any, 2, NULL, 0);
	cr_expect_not(PERMITS(unspecified_rules, any4), "0.0.0.0 goes to 127.0.0.1, which is not allowed");
	cr_expect_not(PERMITS(unspecified_rules, any6));
}
