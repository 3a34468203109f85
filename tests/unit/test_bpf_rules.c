/* The BPF backend's rule maps decide exactly as pf_app_permits() does.
 * The policy is compiled (config/bpf_rules.c), the kernel's LPM lookup is
 * emulated by brute force (the entry with the longest prefix that holds
 * the key), and the verdict is taken with bpf/rules_api.h called the way
 * the BPF programs call it: from the raw user_ip4 / user_ip6 / user_port
 * of bpf_sock_addr. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/bpf_rules.h"
#include "config/policy.h"
#include "test_random.h"

/* ---- the BPF side, emulated ---- */

static bool key_bits_match(const __u8 *entry, const __u8 *key, unsigned len)
{
	unsigned whole = len / 8, rest = len % 8;

	if (memcmp(entry, key, whole) != 0)
		return false;
	return rest == 0 || ((entry[whole] ^ key[whole]) & (0xff << (8 - rest))) == 0;
}

/* The kernel's lookup: the longest prefix holding the key (check_tables
 * makes sure no two entries share a key). */
#define LPM_LOOKUP(table, lookup_key)                                                    \
	({                                                                               \
		const struct pf_bpf_port_spans *hit_ = NULL;                             \
		long best_ = -1;                                                         \
		for (size_t i_ = 0; i_ < (table)->count; i_++) {                         \
			const __typeof__((table)->entries[0]) *e_ = &(table)->entries[i_]; \
			if ((long)e_->key.prefixlen > best_ &&                           \
			    key_bits_match(e_->key.addr, (lookup_key)->addr, e_->key.prefixlen)) { \
				best_ = e_->key.prefixlen;                               \
				hit_ = &e_->spans;                                       \
			}                                                                \
		}                                                                        \
		hit_;                                                                    \
	})

static bool bpf_judge4(const struct pf_bpf_rules *rules, __u32 ip4, __u16 port)
{
	struct pf_bpf_lpm4_key k4;

	pf_bpf_lpm4_key_set(&k4, ip4);
	return pf_bpf_rules_permit(LPM_LOOKUP(&rules->deny4, &k4),
				   rules->has_allow ? LPM_LOOKUP(&rules->allow4, &k4) : NULL,
				   rules->has_allow, port);
}

/* What connect4/6 decide for this sockaddr. */
static bool bpf_permits(const struct pf_bpf_rules *rules, const struct sockaddr *dest)
{
	if (dest->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)dest;
		__u32 user_ip4 = sin->sin_addr.s_addr, user_port = sin->sin_port;
		return bpf_judge4(rules, pf_bpf_fold_dest4(user_ip4), pf_bpf_port_of(user_port));
	}
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)dest;
	__u32 ip6[4], ip4, user_port = sin6->sin6_port;
	memcpy(ip6, sin6->sin6_addr.s6_addr, sizeof(ip6));
	__u16 port = pf_bpf_port_of(user_port);
	if (pf_bpf_fold_dest6(ip6, &ip4) == PF_BPF_DEST_V4)
		return bpf_judge4(rules, ip4, port);
	struct pf_bpf_lpm6_key k6;
	pf_bpf_lpm6_key_set(&k6, ip6);
	return pf_bpf_rules_permit(LPM_LOOKUP(&rules->deny6, &k6),
				   rules->has_allow ? LPM_LOOKUP(&rules->allow6, &k6) : NULL,
				   rules->has_allow, port);
}

/* Values sorted, disjoint, not touching, within the cap. */
static void check_spans(const struct pf_bpf_port_spans *spans)
{
	cr_assert_leq(spans->count, PF_BPF_PORT_SPANS);
	cr_assert_gt(spans->count, 0);
	for (__u32 i = 0; i < spans->count; i++) {
		cr_assert_leq(spans->span[i].lo, spans->span[i].hi);
		if (i)
			cr_assert_gt((unsigned)spans->span[i].lo, (unsigned)spans->span[i - 1].hi + 1);
	}
}

static void check_key(const __u8 *addr, size_t addr_len, __u32 prefixlen)
{
	uint8_t masked[16] = {0};

	cr_assert_leq(prefixlen, addr_len * 8);
	for (unsigned bit = 0; bit < prefixlen; bit++)
		masked[bit / 8] |= addr[bit / 8] & (0x80 >> (bit % 8));
	cr_assert_arr_eq(masked, addr, addr_len, "host bits set past /%u", prefixlen);
}

static size_t sorted_key_size;

static int compare_keys(const void *a, const void *b)
{
	return memcmp(a, b, sorted_key_size);
}

/* keys: count keys of key_size bytes, copied out of the entries. */
static void check_no_key_twice(void *keys, size_t count, size_t key_size)
{
	sorted_key_size = key_size;
	qsort(keys, count, key_size, compare_keys);
	for (size_t i = 1; i < count; i++)
		cr_assert_neq(compare_keys((char *)keys + (i - 1) * key_size, (char *)keys + i * key_size),
			      0, "one key twice");
	free(keys);
}

/* Every value well formed, every key masked, and no key twice: two
 * entries with one key would overwrite each other in the map. */
#define CHECK_TABLE(table)                                                                   \
	do {                                                                                 \
		__typeof__((table)->entries[0].key) *keys_ =                                 \
			calloc((table)->count + 1, sizeof(*keys_));                          \
		for (size_t i_ = 0; i_ < (table)->count; i_++) {                             \
			check_spans(&(table)->entries[i_].spans);                            \
			check_key((table)->entries[i_].key.addr,                             \
				  sizeof((table)->entries[i_].key.addr),                     \
				  (table)->entries[i_].key.prefixlen);                       \
			keys_[i_] = (table)->entries[i_].key;                                \
		}                                                                            \
		check_no_key_twice(keys_, (table)->count, sizeof(*keys_));                   \
	} while (0)

static void check_tables(const struct pf_bpf_rules *rules)
{
	CHECK_TABLE(&rules->deny4);
	CHECK_TABLE(&rules->allow4);
	CHECK_TABLE(&rules->deny6);
	CHECK_TABLE(&rules->allow6);
}

/* ---- random policies ---- */

static bool one_in(unsigned n)
{
	return next_random() % n == 0;
}

static const uint16_t port_pool[] = {1, 2, 25, 26, 79, 80, 81, 443, 1000, 2000, 65534, 65535};
#define POOL_SIZE (sizeof(port_pool) / sizeof(port_pool[0]))

static uint16_t random_port(void)
{
	return one_in(2) ? port_pool[next_random() % POOL_SIZE] : (uint16_t)(1 + next_random() % 65535);
}

/* Fresh addresses come from a few bases, loopback among them, so that
 * rules meet each other and the folded unspecified destinations. */
static void base_address(uint8_t addr[16], bool v6)
{
	static const uint8_t bases[][16] = {
		{0}, {127, 0, 0, 1}, {10, 1, 2, 3}, {192, 168, 4, 0},
		{0x20, 0x01, 0x0d, 0xb8}, {0xfe, 0x80, [15] = 1}, {[15] = 1}, {0xff, 0xff, 0xff, 0xff},
		{[10] = 0xff, [11] = 0xff, 10, 1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	};
	memcpy(addr, bases[next_random() % (sizeof(bases) / sizeof(bases[0]))], 16);
	unsigned bytes = v6 ? 16 : 4, flips = next_random() % 3;
	for (unsigned i = 0; i < flips; i++)
		addr[next_random() % bytes] ^= (uint8_t)(1u << (next_random() % 8));
	if (!v6)
		memset(addr + 4, 0, 12);
}

static void flip_bit(uint8_t *addr, unsigned bit)
{
	addr[bit / 8] ^= (uint8_t)(0x80 >> (bit % 8));
}

/* A rule's prefix: fresh, or nested in / around / equal to an earlier
 * rule's of the same family (so ancestors and duplicates are common). */
static struct pf_rule random_prefix(const struct pf_rule *earlier, size_t count, bool v6)
{
	struct pf_rule rule = {.family = v6 ? AF_INET6 : AF_INET};
	unsigned max = v6 ? 128 : 32;
	const struct pf_rule *near = count ? &earlier[next_random() % count] : NULL;

	if (near && near->family == rule.family && !one_in(3)) {
		memcpy(rule.addr, near->addr, 16);
		int len = (int)near->prefix + (int)(next_random() % 13) - 4;
		rule.prefix = (uint8_t)(len < 0 ? 0 : len > (int)max ? (int)max : len);
		for (unsigned bit = near->prefix; bit < rule.prefix; bit++)
			if (one_in(2))
				flip_bit(rule.addr, bit);
		return rule;
	}
	base_address(rule.addr, v6);
	unsigned shape = next_random() % 6;
	rule.prefix = (uint8_t)(shape == 0 ? 0 : shape == 1 ? max : next_random() % (max + 1));
	return rule;
}

/* Written out and parsed, as a policy file gives it: a v4 prefix is
 * sometimes written IPv4-mapped (the parser folds it back). */
static struct pf_rule parse_random_rule(const struct pf_rule *prefix)
{
	char text[128], addr_text[64];
	int len;

	inet_ntop(prefix->family, prefix->addr, addr_text, sizeof(addr_text));
	if (prefix->family == AF_INET && one_in(4))
		len = snprintf(text, sizeof(text), "[::ffff:%s/%u]", addr_text, 96u + prefix->prefix);
	else
		len = snprintf(text, sizeof(text), prefix->family == AF_INET6 ? "[%s/%u]" : "%s/%u",
			       addr_text, prefix->prefix);
	uint16_t a = random_port(), b = one_in(2) ? a : random_port();
	if (!one_in(4))
		snprintf(text + len, sizeof(text) - (size_t)len, ":%u-%u", a < b ? a : b, a < b ? b : a);
	struct pf_rule rule;
	const char *why = NULL;
	cr_assert_eq(pf_rule_parse(text, &rule, &why), 0, "%s: %s", text, why);
	return rule;
}

/* At most PF_BPF_PORT_SPANS rules per list, so no entry can exceed the
 * cap and every random policy compiles. */
static void random_rules(struct pf_rule_list *list, struct pf_rule *pool, size_t *pool_count)
{
	size_t max = one_in(4) ? PF_BPF_PORT_SPANS : 8;

	list->count = next_random() % (max + 1);
	list->rules = calloc(list->count + 1, sizeof(*list->rules));
	for (size_t i = 0; i < list->count; i++) {
		struct pf_rule prefix = random_prefix(pool, *pool_count, one_in(2));
		list->rules[i] = parse_random_rule(&prefix);
		pool[(*pool_count)++] = list->rules[i];
	}
}

static uint16_t port_near(const struct pf_rule *rule)
{
	switch (next_random() % 6) {
	case 0: return rule->port_lo;
	case 1: return rule->port_hi;
	case 2: return (uint16_t)(rule->port_lo - 1); /* 0 when lo is 1 */
	case 3: return (uint16_t)(rule->port_hi + 1); /* 0 when hi is 65535 */
	default: return random_port();
	}
}

/* An address inside a rule's prefix, or one bit outside it. */
static void address_near(const struct pf_rule *rule, uint8_t addr[16])
{
	unsigned max = rule->family == AF_INET ? 32 : 128;

	memcpy(addr, rule->addr, 16);
	for (unsigned bit = rule->prefix; bit < max; bit++)
		if (one_in(2))
			flip_bit(addr, bit);
	if (rule->prefix > 0 && one_in(4))
		flip_bit(addr, rule->prefix - 1 - next_random() % (rule->prefix < 3 ? rule->prefix : 3));
}

static socklen_t sockaddr_of(struct sockaddr_storage *ss, sa_family_t family, const uint8_t *addr,
			     uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET && !one_in(3)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		*sin = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port)};
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	*sin6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons(port)};
	if (family == AF_INET) { /* ::ffff:a.b.c.d */
		sin6->sin6_addr.s6_addr[10] = sin6->sin6_addr.s6_addr[11] = 0xff;
		memcpy(sin6->sin6_addr.s6_addr + 12, addr, 4);
	} else {
		memcpy(sin6->sin6_addr.s6_addr, addr, 16);
	}
	return sizeof(*sin6);
}

/* Mostly at or next to a rule's prefix and ports; otherwise anywhere,
 * unspecified (0.0.0.0, ::, ::ffff:0.0.0.0) among them. */
static socklen_t random_destination(struct sockaddr_storage *ss, const struct pf_rule *pool,
				    size_t pool_count)
{
	uint8_t addr[16] = {0};

	if (pool_count && !one_in(4)) {
		const struct pf_rule *rule = &pool[next_random() % pool_count];
		address_near(rule, addr);
		return sockaddr_of(ss, rule->family, addr, port_near(rule));
	}
	bool v6 = one_in(2);
	if (!one_in(3))
		base_address(addr, v6);
	return sockaddr_of(ss, v6 ? AF_INET6 : AF_INET, addr, random_port());
}

static void free_app(struct pf_app *app)
{
	pf_app_free_rule_index(app);
	free(app->allow.rules);
	free(app->deny.rules);
}

static void compile_or_fail(const struct pf_app *app, struct pf_bpf_rules *rules)
{
	struct pf_diags diags = {0};

	cr_assert_eq(pf_bpf_rules_compile(app, rules, &diags), 0, "compile: %s",
		     diags.count ? diags.lines[0] : "no message");
	pf_diags_free(&diags);
	check_tables(rules);
}

#define POLICIES 3000
#define DESTINATIONS 500

Test(bpf_rules, decide_as_pf_app_permits)
{
	uint64_t seed = seed_random(); /* printed on failure */
	unsigned permitted = 0, refused = 0;
	struct timespec start, end;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int policy = 0; policy < POLICIES; policy++) {
		struct pf_rule pool[2 * PF_BPF_PORT_SPANS];
		size_t pool_count = 0;
		struct pf_app app = {.has_allow = one_in(3)};
		random_rules(&app.deny, pool, &pool_count);
		if (app.has_allow)
			random_rules(&app.allow, pool, &pool_count);
		struct pf_app linear = app;
		cr_assert_eq(pf_app_index_rules(&app), 0);
		struct pf_bpf_rules rules;
		compile_or_fail(&app, &rules);
		for (int d = 0; d < DESTINATIONS; d++) {
			struct sockaddr_storage ss;
			socklen_t len = random_destination(&ss, pool, pool_count);
			bool want = pf_app_permits(&app, (struct sockaddr *)&ss, len);
			bool got = bpf_permits(&rules, (struct sockaddr *)&ss);
			cr_assert_eq(pf_app_permits_linear(&linear, (struct sockaddr *)&ss, len), want);
			cr_assert_eq(got, want, "seed %#llx (PF_TEST_SEED) policy %d destination %d: "
				     "BPF maps say %d, pf_app_permits %d",
				     (unsigned long long)seed, policy, d, got, want);
			want ? permitted++ : refused++;
		}
		pf_bpf_rules_free(&rules);
		free_app(&app);
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	fprintf(stderr, "bpf_rules: %d policies x %d destinations in %.2f s (%u permitted, %u refused)\n",
		POLICIES, DESTINATIONS,
		(double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9,
		permitted, refused);
	/* Both answers must be common, or the comparison proves little. */
	cr_expect_gt(permitted, POLICIES * DESTINATIONS / 10);
	cr_expect_gt(refused, POLICIES * DESTINATIONS / 10);
}

/* ---- chosen policies ---- */

struct compiled_app {
	struct pf_policy policy;
	const struct pf_app *app;
	struct pf_bpf_rules rules;
};

/* One app "web" (line 3 of bpf.conf) with the given allow/deny settings,
 * loaded as a file would be, so that it has a file and line. */
static void load_web_app(const char *rule_settings, struct pf_policy *policy)
{
	char *text = NULL;
	struct pf_diags diags = {0};

	cr_assert_gt(asprintf(&text, "version = 1;\napps = (\n  {\n    name = \"web\";\n"
				     "    range = [ 61000, 61099 ];\n    %s\n  }\n);\n", rule_settings), 0);
	cr_assert_eq(pf_policy_load_text("bpf.conf", text, policy, &diags), PF_LOAD_OK, "%s",
		     diags.count ? diags.lines[0] : text);
	pf_diags_free(&diags);
	free(text);
}

static struct compiled_app *compile_policy(const char *rule_settings)
{
	static struct compiled_app c;

	load_web_app(rule_settings, &c.policy);
	c.app = &c.policy.apps[0];
	compile_or_fail(c.app, &c.rules);
	return &c;
}

static void release(struct compiled_app *c)
{
	pf_bpf_rules_free(&c->rules);
	pf_policy_free(&c->policy);
}

struct verdict {
	const char *addr;	/* v4 or v6 text */
	uint16_t port;
	bool permitted;
};

/* Both judges give the expected verdict. */
static void expect_verdict(const struct compiled_app *c, const char *addr, uint16_t port, bool want)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len = sizeof(*sin);

	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	} else {
		cr_assert_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1, "%s", addr);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	}
	cr_expect_eq(pf_app_permits(c->app, (struct sockaddr *)&ss, len), want,
		     "pf_app_permits %s port %u", addr, port);
	cr_expect_eq(bpf_permits(&c->rules, (struct sockaddr *)&ss), want, "BPF maps %s port %u",
		     addr, port);
}

static void expect_verdicts(const struct compiled_app *c, const struct verdict *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		expect_verdict(c, cases[i].addr, cases[i].port, cases[i].permitted);
}

#define EXPECT_VERDICTS(c, ...)                                                     \
	expect_verdicts(c, (const struct verdict[]){__VA_ARGS__},                   \
			sizeof((const struct verdict[]){__VA_ARGS__}) / sizeof(struct verdict))

Test(bpf_rules, nested_prefixes_union_their_ports)
{
	struct compiled_app *c = compile_policy("deny = [ \"10.0.0.0/8:25\", \"10.1.0.0/16:80\" ];");

	EXPECT_VERDICTS(c,
			{"10.1.2.3", 25, false}, /* only the /8 says 25 */
			{"10.1.2.3", 80, false},
			{"10.1.2.3", 443, true},
			{"10.2.0.1", 25, false},
			{"10.2.0.1", 80, true},
			{"::ffff:10.1.2.3", 25, false});
	cr_assert_eq(c->rules.deny4.count, 2);
	const struct pf_bpf_entry4 *inner = &c->rules.deny4.entries[1];
	cr_expect_eq(inner->key.prefixlen, 16);
	cr_expect_eq(inner->spans.count, 2);
	cr_expect_eq(inner->spans.span[0].lo, 25);
	cr_expect_eq(inner->spans.span[1].lo, 80);
	release(c);
}

Test(bpf_rules, zero_length_prefixes)
{
	struct compiled_app *c = compile_policy("deny = [ \"0.0.0.0/0:25\", \"[::/0]:25\" ];\n"
						"    allow = [ \"0.0.0.0/0\", \"[::/0]:1-1000\" ];");

	EXPECT_VERDICTS(c,
			{"1.2.3.4", 25, false},
			{"1.2.3.4", 26, true},
			{"255.255.255.255", 65535, true},
			{"2001:db8::1", 26, true},
			{"2001:db8::1", 1001, false},
			{"::ffff:1.2.3.4", 2000, true}); /* judged by the v4 /0 */
	cr_expect_eq(c->rules.allow4.entries[0].key.prefixlen, 0);
	release(c);
}

Test(bpf_rules, host_prefixes)
{
	struct compiled_app *c = compile_policy("allow = [ \"192.0.2.7\", \"[2001:db8::1]:443\" ];");

	EXPECT_VERDICTS(c,
			{"192.0.2.7", 1, true},
			{"192.0.2.6", 1, false},
			{"192.0.2.8", 1, false},
			{"2001:db8::1", 443, true},
			{"2001:db8::1", 444, false},
			{"2001:db8::2", 443, false});
	cr_expect_eq(c->rules.allow4.entries[0].key.prefixlen, 32);
	cr_expect_eq(c->rules.allow6.entries[0].key.prefixlen, 128);
	release(c);
}

Test(bpf_rules, mapped_rules_and_destinations)
{
	/* A mapped v6 rule is an IPv4 rule; a v6 /0 does not reach mapped
	 * destinations, which are judged as IPv4. */
	struct compiled_app *c = compile_policy("deny = [ \"[::ffff:10.0.0.0/104]:80\", \"[::/0]:443\","
						" \"[::ffff:0:0/95]:22\" ];");

	EXPECT_VERDICTS(c,
			{"10.9.9.9", 80, false},
			{"::ffff:10.9.9.9", 80, false},
			{"::ffff:10.9.9.9", 443, true},
			{"::ffff:10.9.9.9", 22, true},
			{"::fffe:10.9.9.9", 22, false},
			{"2001:db8::1", 443, false},
			{"10.9.9.9", 443, true});
	cr_assert_eq(c->rules.deny4.count, 1);
	cr_expect_eq(c->rules.deny4.entries[0].key.prefixlen, 8);
	cr_expect_eq(c->rules.deny4.entries[0].key.addr[0], 10);
	release(c);
}

Test(bpf_rules, unspecified_destinations_are_loopback)
{
	struct compiled_app *c = compile_policy("allow = [ \"127.0.0.0/8\", \"[::1]:53\" ];");

	EXPECT_VERDICTS(c,
			{"0.0.0.0", 80, true},
			{"::ffff:0.0.0.0", 80, true},
			{"::", 53, true},
			{"::", 80, false},
			{"::2", 53, false});
	release(c);
}

Test(bpf_rules, empty_allow_list_refuses_everything)
{
	struct compiled_app *c = compile_policy("allow = [ ];");

	cr_expect(c->rules.has_allow);
	EXPECT_VERDICTS(c,
			{"127.0.0.1", 80, false},
			{"::1", 80, false},
			{"0.0.0.0", 80, false});
	release(c);
}

Test(bpf_rules, no_rules_permit_everything)
{
	struct compiled_app *c = compile_policy("");

	cr_expect_not(c->rules.has_allow);
	cr_expect_eq(c->rules.deny4.count + c->rules.deny6.count + c->rules.allow4.count +
			     c->rules.allow6.count, 0);
	EXPECT_VERDICTS(c,
			{"192.0.2.1", 25, true},
			{"2001:db8::1", 25, true});
	release(c);
}

Test(bpf_rules, duplicate_prefixes_make_one_entry)
{
	struct compiled_app *c = compile_policy(
		"deny = [ \"10.0.0.0/8:25\", \"10.0.0.0/8:25\", \"10.0.0.0/8:26\","
		" \"10.0.0.0/8:100-200\", \"10.0.0.0/8:150-300\", \"10.9.8.7/8:24\" ];");

	cr_assert_eq(c->rules.deny4.count, 1);
	const struct pf_bpf_port_spans *spans = &c->rules.deny4.entries[0].spans;
	cr_assert_eq(spans->count, 2);
	cr_expect(spans->span[0].lo == 24 && spans->span[0].hi == 26);
	cr_expect(spans->span[1].lo == 100 && spans->span[1].hi == 300);
	EXPECT_VERDICTS(c,
			{"10.200.0.1", 300, false},
			{"10.200.0.1", 301, true});
	release(c);
}

/* "deny = [ "PREFIX:first", "PREFIX:first+2", ... count rules ]" */
static char *rules_on_odd_ports(const char *list, const char *prefix, int count, int first)
{
	size_t size = 64 + (size_t)count * (strlen(prefix) + 12);
	char *text = malloc(size);
	int len = snprintf(text, size, "%s = [ ", list);

	for (int i = 0; i < count; i++)
		len += snprintf(text + len, size - (size_t)len, "%s\"%s:%d\"", i ? ", " : "", prefix,
				first + 2 * i);
	snprintf(text + len, size - (size_t)len, " ];");
	return text;
}

/* Compiling must fail with exactly this diagnostic, leaving no entries. */
static void expect_over_cap(const char *settings, const char *message)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	struct pf_bpf_rules rules;

	load_web_app(settings, &policy);
	cr_expect_eq(pf_bpf_rules_compile(&policy.apps[0], &rules, &diags), -1);
	cr_assert_eq(diags.count, 1);
	cr_expect_str_eq(diags.lines[0], message);
	cr_expect_eq(rules.deny4.count + rules.deny6.count + rules.allow4.count + rules.allow6.count, 0);
	cr_expect_null(rules.deny4.entries);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

Test(bpf_rules, over_the_span_cap_names_file_and_line)
{
	char *fits = rules_on_odd_ports("deny", "10.0.0.0/8", PF_BPF_PORT_SPANS, 1);
	struct compiled_app *c = compile_policy(fits);
	cr_expect_eq(c->rules.deny4.entries[0].spans.count, PF_BPF_PORT_SPANS);
	release(c);
	free(fits);

	char *one_more = rules_on_odd_ports("deny", "10.0.0.0/8", PF_BPF_PORT_SPANS + 1, 1);
	expect_over_cap(one_more, "bpf.conf:3: app \"web\": deny rules for 10.0.0.0/8 (with those of the "
				  "prefixes containing it) need more than 32 separate port ranges, the most "
				  "the BPF backend holds");
	free(one_more);

	char *v6 = rules_on_odd_ports("allow", "[2001:db8::/32]", PF_BPF_PORT_SPANS + 1, 1001);
	expect_over_cap(v6, "bpf.conf:3: app \"web\": allow rules for [2001:db8::/32] (with those of the "
			    "prefixes containing it) need more than 32 separate port ranges, the most the "
			    "BPF backend holds");
	free(v6);
}

Test(bpf_rules, over_the_cap_through_ancestors)
{
	/* 20 ports on the /8 and 13 more on the /16: only the /16 needs 33. */
	char *outer = rules_on_odd_ports("deny", "10.0.0.0/8", 20, 1);
	char *inner = rules_on_odd_ports("deny", "10.1.0.0/16", 13, 1001);
	char settings[4096];

	/* One deny list: join the two "[ ... ]" bodies. */
	snprintf(settings, sizeof(settings), "%.*s, %s", (int)(strlen(outer) - 3), outer,
		 inner + strlen("deny = [ "));
	expect_over_cap(settings, "bpf.conf:3: app \"web\": deny rules for 10.1.0.0/16 (with those of the "
				  "prefixes containing it) need more than 32 separate port ranges, the most "
				  "the BPF backend holds");
	free(outer);
	free(inner);
}

/* 100,000 host rules under a few shared prefixes, given in no order. */
static struct pf_app app_of_many_rules(size_t count)
{
	struct pf_app app = {.name = "many", .file = "many.conf", .line = 1};

	app.deny.rules = calloc(count, sizeof(*app.deny.rules));
	app.deny.count = count;
	for (size_t i = 0; i < count; i++) {
		size_t host = (i * 40503u) % count;
		char text[64];
		const char *why;
		if (i % 1000 == 0)
			snprintf(text, sizeof(text), "10.%zu.0.0/16:80", (host >> 16) & 255);
		else
			snprintf(text, sizeof(text), "10.%zu.%zu.%zu:%zu", (host >> 16) & 255,
				 (host >> 8) & 255, host & 255, 25 + i % 3);
		cr_assert_eq(pf_rule_parse(text, &app.deny.rules[i], &why), 0);
	}
	return app;
}

Test(bpf_rules, hundred_thousand_rules)
{
	struct pf_app app = app_of_many_rules(100000);
	struct pf_bpf_rules rules;
	struct timespec start, end;

	clock_gettime(CLOCK_MONOTONIC, &start);
	cr_assert_eq(pf_bpf_rules_compile(&app, &rules, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &end);
	/* Printed, never asserted: the machine is shared. */
	fprintf(stderr, "bpf_rules: 100000 rules compiled in %.3f s (%zu entries)\n",
		(double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9,
		rules.deny4.count);
	check_tables(&rules);
	cr_assert_gt(rules.deny4.count, 90000);
	cr_assert_eq(pf_app_index_rules(&app), 0);
	for (uint32_t i = 0; i < 64; i++) {
		struct sockaddr_in dest = {.sin_family = AF_INET, .sin_port = htons(25 + i % 4 + (i % 5 == 0) * 55)};
		dest.sin_addr.s_addr = htonl(0x0a000000u | ((i * 1566083941u) % 100000u));
		cr_expect_eq(bpf_permits(&rules, (struct sockaddr *)&dest),
			     pf_app_permits(&app, (struct sockaddr *)&dest, sizeof(dest)), "destination %u", i);
	}
	pf_bpf_rules_free(&rules);
	free_app(&app);
}
