/* The compiled rule tries decide exactly as the linear scan does, on
 * many random policies and destinations; and a judgement costs about the
 * same with 100,000 rules as with one (printed, never asserted). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/policy.h"
#include "test_random.h"

/* Addresses come from a few bases so that rules nest, share prefixes and
 * meet the destinations drawn next to them. */
static void random_address(uint8_t addr[16], bool v6)
{
	static const uint8_t bases[][16] = {
		{0}, {127, 0, 0, 1}, {10, 1, 2, 3}, {192, 168, 4, 0},
		{0x20, 0x01, 0x0d, 0xb8}, {0xfe, 0x80, [15] = 1}, {[15] = 1}, {0xff, 0xff, 0xff, 0xff},
	};
	memcpy(addr, bases[next_random() % 8], 16);
	unsigned bytes = v6 ? 16 : 4, flips = next_random() % 4;
	for (unsigned i = 0; i < flips; i++)
		addr[next_random() % bytes] ^= (uint8_t)(1u << (next_random() % 8));
	if (!v6)
		memset(addr + 4, 0, 12);
}

static uint16_t random_port(void)
{
	static const uint16_t ports[] = {1, 25, 80, 443, 1000, 2000, 65535};
	return next_random() % 2 ? ports[next_random() % 7] : (uint16_t)(1 + next_random() % 65535);
}

static struct pf_rule random_rule(void)
{
	struct pf_rule rule = {.family = next_random() % 2 ? AF_INET : AF_INET6};
	bool v6 = rule.family == AF_INET6;
	unsigned max = v6 ? 128 : 32;
	char text[128], addr_text[64];

	random_address(rule.addr, v6);
	rule.prefix = (uint8_t)(next_random() % 3 == 0 ? max : next_random() % (max + 1));
	inet_ntop(rule.family, rule.addr, addr_text, sizeof(addr_text));
	uint16_t a = random_port(), b = random_port();
	int len = snprintf(text, sizeof(text), v6 ? "[%s/%u]" : "%s/%u", addr_text, rule.prefix);
	if (next_random() % 3)
		snprintf(text + len, sizeof(text) - (size_t)len, ":%u-%u", a < b ? a : b, a < b ? b : a);
	const char *why = NULL;
	cr_assert_eq(pf_rule_parse(text, &rule, &why), 0, "%s: %s", text, why);
	return rule;
}

static void random_rules(struct pf_rule_list *list, size_t max)
{
	list->count = next_random() % (max + 1);
	list->rules = calloc(list->count + 1, sizeof(*list->rules));
	for (size_t i = 0; i < list->count; i++)
		list->rules[i] = random_rule();
}

/* A destination of either family, sometimes IPv4-mapped or unspecified. */
static socklen_t random_destination(struct sockaddr_storage *ss)
{
	uint8_t addr[16];
	uint16_t port = random_port();
	unsigned shape = next_random() % 4;

	memset(ss, 0, sizeof(*ss));
	random_address(addr, shape == 1);
	if (shape == 0) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	if (shape == 2) { /* ::ffff:a.b.c.d */
		sin6->sin6_addr.s6_addr[10] = sin6->sin6_addr.s6_addr[11] = 0xff;
		memcpy(sin6->sin6_addr.s6_addr + 12, addr, 4);
	} else if (shape == 1) {
		memcpy(sin6->sin6_addr.s6_addr, addr, 16);
	} /* shape 3: :: */
	return sizeof(*sin6);
}

static void free_app(struct pf_app *app)
{
	pf_app_free_rule_index(app);
	free(app->allow.rules);
	free(app->deny.rules);
}

Test(rule_index, decides_as_the_linear_scan)
{
	uint64_t seed = seed_random(); /* printed on failure */
	unsigned permitted = 0, refused = 0;

	for (int policy = 0; policy < 3000; policy++) {
		struct pf_app app = {.has_allow = next_random() % 2};
		random_rules(&app.deny, 12);
		random_rules(&app.allow, app.has_allow ? 12 : 0);
		struct pf_app linear = app;
		cr_assert_eq(pf_app_index_rules(&app), 0);
		for (int d = 0; d < 40; d++) {
			struct sockaddr_storage ss;
			socklen_t len = random_destination(&ss);
			bool want = pf_app_permits_linear(&linear, (struct sockaddr *)&ss, len);
			bool got = pf_app_permits(&app, (struct sockaddr *)&ss, len);
			cr_assert_eq(got, want, "seed %#llx policy %d destination %d: trie says %d, scan %d",
				     (unsigned long long)seed, policy, d, got, want);
			want ? permitted++ : refused++;
		}
		free_app(&app);
	}
	/* Both answers must be common, or the comparison proves little. */
	cr_expect_gt(permitted, 10000);
	cr_expect_gt(refused, 10000);
}

static struct pf_app app_of_deny_rules(size_t count)
{
	struct pf_app app = {0};
	app.deny.rules = calloc(count, sizeof(*app.deny.rules));
	app.deny.count = count;
	for (size_t i = 0; i < count; i++) {
		char text[64];
		const char *why;
		/* 10.x.y.z/32, every one a different host, port 25. */
		snprintf(text, sizeof(text), "10.%zu.%zu.%zu:25", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		cr_assert_eq(pf_rule_parse(text, &app.deny.rules[i], &why), 0);
	}
	cr_assert_eq(pf_app_index_rules(&app), 0);
	return app;
}

static double ns_per_judgement(const struct pf_app *app, const struct sockaddr_in *dests, size_t n)
{
	struct timespec start, end;
	unsigned permitted = 0;
	int rounds = 200;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int r = 0; r < rounds; r++)
		for (size_t i = 0; i < n; i++)
			permitted += pf_app_permits(app, (const struct sockaddr *)&dests[i], sizeof(dests[i]));
	clock_gettime(CLOCK_MONOTONIC, &end);
	cr_assert_gt(permitted, 0);
	return ((double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec)) /
	       ((double)rounds * (double)n);
}

Test(rule_index, hundred_thousand_rules_judged)
{
	struct pf_app one = app_of_deny_rules(1), many = app_of_deny_rules(100000);
	struct sockaddr_in dests[1000];

	for (size_t i = 0; i < 1000; i++) {
		dests[i] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(i % 2 ? 25 : 80)};
		dests[i].sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)(i * 97));
	}
	/* The many-rules app refuses the hosts it lists on port 25. */
	cr_expect_not(pf_app_permits(&many, (const struct sockaddr *)&dests[1], sizeof(dests[1])));
	cr_expect(pf_app_permits(&one, (const struct sockaddr *)&dests[1], sizeof(dests[1])));
	double base = ns_per_judgement(&one, dests, 1000), big = ns_per_judgement(&many, dests, 1000);
	fprintf(stderr, "rule_index: %.0f ns per judgement with 1 rule, %.0f ns with 100000 (%.2fx)\n",
		base, big, big / base);
	free_app(&one);
	free_app(&many);
}
