/* The BPF backend's rule maps decide exactly as pf_app_permits() does.
 * The policy is compiled (policy/bpf_rules.c), the kernel's LPM lookup is
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

#include "bpf_rules.h"
#include "policy.h"
#include "test_random.h"

/* ---- the BPF side, emulated ---- */

static bool key_bits_match(const __u8 *entry, const __u8 *key, unsigned len)
{
	for (unsigned bit = 0; bit < len; bit++) {
		unsigned shift = 7 - bit % 8;
		if (((entry[bit / 8] >> shift) & 1) != ((key[bit / 8] >> shift) & 1))
			return false;
	}
	return true;
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

/* Every value well formed, every key masked, and no key twice: two
 * entries with one key would overwrite each other in the map. */
#define CHECK_TABLE(table)                                                                 \
	for (size_t i_ = 0; i_ < (table)->count; i_++) {                                   \
		check_spans(&(table)->entries[i_].spans);                                  \
		check_key((table)->entries[i_].key.addr, sizeof((table)->entries[i_].key.addr), \
			  (table)->entries[i_].key.prefixlen);                             \
		for (size_t j_ = 0; j_ < i_; j_++)                                         \
			cr_assert(memcmp(&(table)->entries[j_].key, &(table)->entries[i_].key, \
					 sizeof((table)->entries[i_].key)) != 0, "one key twice"); \
	}

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
#define DESTINATIONS 300

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
