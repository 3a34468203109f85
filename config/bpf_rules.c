/* Compiles an app's rules into LPM trie entries.  A kernel LPM lookup
 * returns only the longest matching prefix, while every rule whose prefix
 * holds the destination counts; so an entry's spans are the union of the
 * ports of its own rules and of every rule whose prefix contains it.  The
 * prefixes containing a destination form one chain, and the longest of
 * them then carries the whole chain's ports.
 *
 * Sorted by address then length, prefixes come in depth-first order (a
 * prefix before the ones inside it), so a stack of the open ancestors
 * gives each entry its parent's union: O(n log n) for n rules. */
#include "config/bpf_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct prefix_ports {
	uint8_t addr[16];	/* bits past len zero */
	uint8_t len;
	uint16_t lo, hi;
};

struct trie_entry {
	uint8_t addr[16];
	uint8_t len;
	struct pf_bpf_port_spans spans;
};

struct entry_list {
	struct trie_entry *entries;
	size_t count;
};

enum { BUILD_OK = 0, BUILD_NO_MEMORY = -1, BUILD_OVER_CAP = -2 };

static void mask_prefix(uint8_t addr[16], unsigned len)
{
	for (unsigned i = 0; i < 16; i++) {
		int bits_left = (int)len - (int)i * 8;
		if (bits_left >= 8)
			continue;
		addr[i] &= bits_left <= 0 ? 0 : (uint8_t)(0xff << (8 - bits_left));
	}
}

static bool prefix_contains(const struct trie_entry *outer, const struct prefix_ports *inner)
{
	uint8_t masked[16];

	if (outer->len > inner->len)
		return false;
	memcpy(masked, inner->addr, sizeof(masked));
	mask_prefix(masked, outer->len);
	return memcmp(masked, outer->addr, sizeof(masked)) == 0;
}

static bool same_prefix(const struct prefix_ports *a, const struct prefix_ports *b)
{
	return a->len == b->len && memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

static int compare_prefix_ports(const void *a, const void *b)
{
	const struct prefix_ports *x = a, *y = b;
	int by_addr = memcmp(x->addr, y->addr, sizeof(x->addr));

	if (by_addr != 0)
		return by_addr;
	if (x->len != y->len)
		return (int)x->len - (int)y->len;
	return (int)x->lo - (int)y->lo;
}

/* Spans arrive in ascending lo; one that overlaps or touches the last
 * extends it.  -1 when a new span would not fit. */
static int add_span(struct pf_bpf_port_spans *spans, uint16_t lo, uint16_t hi)
{
	struct pf_bpf_port_span *last = spans->count ? &spans->span[spans->count - 1] : NULL;

	if (last && (uint32_t)lo <= (uint32_t)last->hi + 1) {
		if (hi > last->hi)
			last->hi = hi;
		return 0;
	}
	if (spans->count == PF_BPF_PORT_SPANS)
		return -1;
	spans->span[spans->count++] = (struct pf_bpf_port_span){lo, hi};
	return 0;
}

/* out = parent's spans (NULL: none) with own[0..n) added, both sorted. */
static int merge_spans(const struct pf_bpf_port_spans *parent, const struct prefix_ports *own,
		       size_t n, struct pf_bpf_port_spans *out)
{
	size_t from_parent = 0, parent_count = parent ? parent->count : 0, from_own = 0;

	memset(out, 0, sizeof(*out));
	while (from_parent < parent_count || from_own < n) {
		bool take_parent = from_own == n ||
				   (from_parent < parent_count &&
				    parent->span[from_parent].lo <= own[from_own].lo);
		int rc = take_parent ? add_span(out, parent->span[from_parent].lo,
						parent->span[from_parent].hi)
				     : add_span(out, own[from_own].lo, own[from_own].hi);
		if (rc < 0)
			return -1;
		take_parent ? from_parent++ : from_own++;
	}
	return 0;
}

/* A v6 rule inside ::ffff:0:0/96 can match nothing: pf_app_permits judges
 * such destinations as IPv4 (and the parser folds such rules to IPv4). */
static bool v6_rule_unreachable(const struct pf_rule *rule)
{
	static const uint8_t v4_mapped[12] = {[10] = 0xff, [11] = 0xff};

	return rule->prefix >= 96 && memcmp(rule->addr, v4_mapped, sizeof(v4_mapped)) == 0;
}

/* The list's rules of one family, masked and sorted; NULL when out of
 * memory. */
static struct prefix_ports *gather_rules(const struct pf_rule_list *list, sa_family_t family,
					 size_t *count)
{
	struct prefix_ports *rules = malloc((list->count + 1) * sizeof(*rules));
	unsigned max_len = family == AF_INET ? 32 : 128;

	*count = 0;
	if (!rules)
		return NULL;
	for (size_t i = 0; i < list->count; i++) {
		const struct pf_rule *rule = &list->rules[i];
		if (rule->family != family || rule->prefix > max_len ||
		    (family == AF_INET6 && v6_rule_unreachable(rule)))
			continue;
		struct prefix_ports *to = &rules[(*count)++];
		memset(to->addr, 0, sizeof(to->addr));
		memcpy(to->addr, rule->addr, family == AF_INET ? 4 : 16);
		mask_prefix(to->addr, rule->prefix);
		to->len = rule->prefix;
		to->lo = rule->port_lo;
		to->hi = rule->port_hi;
	}
	qsort(rules, *count, sizeof(*rules), compare_prefix_ports);
	return rules;
}

/* One entry per distinct prefix.  BUILD_OVER_CAP leaves the offending
 * prefix as the last entry. */
static int build_entries(const struct prefix_ports *rules, size_t count, struct entry_list *out)
{
	size_t ancestors[130], depth = 0;

	out->count = 0;
	out->entries = malloc((count + 1) * sizeof(*out->entries));
	if (!out->entries)
		return BUILD_NO_MEMORY;
	for (size_t first = 0, end; first < count; first = end) {
		for (end = first + 1; end < count && same_prefix(&rules[first], &rules[end]); end++)
			;
		while (depth && !prefix_contains(&out->entries[ancestors[depth - 1]], &rules[first]))
			depth--;
		struct trie_entry *entry = &out->entries[out->count];
		memcpy(entry->addr, rules[first].addr, sizeof(entry->addr));
		entry->len = rules[first].len;
		const struct pf_bpf_port_spans *parent =
			depth ? &out->entries[ancestors[depth - 1]].spans : NULL;
		out->count++;
		if (merge_spans(parent, &rules[first], end - first, &entry->spans) < 0)
			return BUILD_OVER_CAP;
		ancestors[depth++] = out->count - 1;
	}
	return BUILD_OK;
}

static int copy_table4(const struct entry_list *list, struct pf_bpf_table4 *table)
{
	table->entries = calloc(list->count + 1, sizeof(*table->entries));
	if (!table->entries)
		return -1;
	for (size_t i = 0; i < list->count; i++) {
		table->entries[i].key.prefixlen = list->entries[i].len;
		memcpy(table->entries[i].key.addr, list->entries[i].addr, 4);
		table->entries[i].spans = list->entries[i].spans;
	}
	table->count = list->count;
	return 0;
}

static int copy_table6(const struct entry_list *list, struct pf_bpf_table6 *table)
{
	table->entries = calloc(list->count + 1, sizeof(*table->entries));
	if (!table->entries)
		return -1;
	for (size_t i = 0; i < list->count; i++) {
		table->entries[i].key.prefixlen = list->entries[i].len;
		memcpy(table->entries[i].key.addr, list->entries[i].addr, 16);
		table->entries[i].spans = list->entries[i].spans;
	}
	table->count = list->count;
	return 0;
}

static const char *app_file(const struct pf_app *app)
{
	return app->file ? app->file : "(policy)";
}

static void report_no_memory(const struct pf_app *app, struct pf_diags *diags)
{
	pf_diags_add(diags, app_file(app), app->line,
		     "app \"%s\": out of memory compiling its rules for BPF",
		     app->name ? app->name : "?");
}

static void report_over_cap(const struct pf_app *app, const char *list_name, sa_family_t family,
			    const struct trie_entry *entry, struct pf_diags *diags)
{
	char addr[INET6_ADDRSTRLEN];

	inet_ntop(family, entry->addr, addr, sizeof(addr));
	pf_diags_add(diags, app_file(app), app->line,
		     family == AF_INET ? "app \"%s\": %s rules for %s/%u (with those of the prefixes containing it) "
					 "need more than %d separate port ranges, the most the BPF backend holds"
				       : "app \"%s\": %s rules for [%s/%u] (with those of the prefixes containing it) "
					 "need more than %d separate port ranges, the most the BPF backend holds",
		     app->name ? app->name : "?", list_name, addr, entry->len, PF_BPF_PORT_SPANS);
}

/* Builds one map's entries: 0, or -1 with the reason in diags. */
static int compile_list(const struct pf_app *app, const struct pf_rule_list *list,
			const char *list_name, sa_family_t family, struct entry_list *out,
			struct pf_diags *diags)
{
	size_t count;
	struct prefix_ports *rules = gather_rules(list, family, &count);
	int rc = rules ? build_entries(rules, count, out) : BUILD_NO_MEMORY;

	free(rules);
	if (rc == BUILD_OVER_CAP)
		report_over_cap(app, list_name, family, &out->entries[out->count - 1], diags);
	else if (rc == BUILD_NO_MEMORY)
		report_no_memory(app, diags);
	return rc == BUILD_OK ? 0 : -1;
}

static int compile_into(const struct pf_app *app, struct pf_bpf_rules *out, struct pf_diags *diags)
{
	struct entry_list lists[4] = {{0}};
	int rc = 0;

	if (compile_list(app, &app->deny, "deny", AF_INET, &lists[0], diags) < 0 ||
	    compile_list(app, &app->deny, "deny", AF_INET6, &lists[1], diags) < 0 ||
	    compile_list(app, &app->allow, "allow", AF_INET, &lists[2], diags) < 0 ||
	    compile_list(app, &app->allow, "allow", AF_INET6, &lists[3], diags) < 0)
		rc = -1;
	else if (copy_table4(&lists[0], &out->deny4) < 0 || copy_table6(&lists[1], &out->deny6) < 0 ||
		 copy_table4(&lists[2], &out->allow4) < 0 || copy_table6(&lists[3], &out->allow6) < 0) {
		report_no_memory(app, diags);
		rc = -1;
	}
	for (int i = 0; i < 4; i++)
		free(lists[i].entries);
	return rc;
}

int pf_bpf_rules_compile(const struct pf_app *app, struct pf_bpf_rules *out,
			 struct pf_diags *diags)
{
	memset(out, 0, sizeof(*out));
	out->has_allow = app->has_allow;
	if (compile_into(app, out, diags) < 0) {
		pf_bpf_rules_free(out);
		return -1;
	}
	return 0;
}

void pf_bpf_rules_free(struct pf_bpf_rules *rules)
{
	free(rules->deny4.entries);
	free(rules->allow4.entries);
	free(rules->deny6.entries);
	free(rules->allow6.entries);
	memset(rules, 0, sizeof(*rules));
}
