/* An app's destination rules compiled into binary prefix tries, one per
 * list (deny, allow) and family, keyed on the address bits.  A node holds
 * the port ranges of the rules whose prefix ends there, merged and sorted,
 * so a judgement walks one path from the root (at most 33 or 129 nodes,
 * fewer since single-child chains are compressed) and binary-searches the
 * ranges met on the way.  The shape is the one a BPF LPM trie takes. */
#include "config/rule_index.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define NO_CHILD 0u		/* the root is never a child */
#define NO_NODE UINT32_MAX	/* out of memory */

struct port_span {
	uint16_t lo, hi;
};

struct trie_node {
	uint8_t key[16];	/* the prefix, bits past len zero */
	uint8_t len;		/* prefix length in bits */
	uint32_t child[2];	/* by the bit after the prefix */
	uint32_t span_first, span_count;
};

struct prefix_trie {
	struct trie_node *nodes;
	size_t node_count, node_cap;
	struct port_span *spans;
	size_t span_count;
};

enum { LIST_DENY, LIST_ALLOW, LIST_COUNT };
enum { FAMILY_V4, FAMILY_V6, FAMILY_COUNT };

struct pf_rule_index {
	struct prefix_trie tries[LIST_COUNT][FAMILY_COUNT];
};

/* A rule's ports waiting for its node, before spans are merged. */
struct pending_span {
	uint32_t node;
	struct port_span ports;
};

static unsigned bit_at(const uint8_t *key, unsigned index)
{
	return (key[index / 8] >> (7 - index % 8)) & 1u;
}

static unsigned common_bits(const uint8_t *a, const uint8_t *b, unsigned max)
{
	unsigned bits = 0;

	while (max - bits >= 8 && a[bits / 8] == b[bits / 8])
		bits += 8;
	while (bits < max && bit_at(a, bits) == bit_at(b, bits))
		bits++;
	return bits;
}

static bool key_matches(const uint8_t *key, const uint8_t *addr, unsigned len)
{
	unsigned whole = len / 8, rest = len % 8;

	if (memcmp(key, addr, whole) != 0)
		return false;
	return rest == 0 || ((key[whole] ^ addr[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static uint32_t new_node(struct prefix_trie *trie, const uint8_t *key, unsigned len)
{
	if (trie->node_count == trie->node_cap) {
		size_t cap = trie->node_cap ? trie->node_cap * 2 : 8;
		struct trie_node *grown = realloc(trie->nodes, cap * sizeof(*grown));
		if (!grown)
			return NO_NODE;
		trie->nodes = grown;
		trie->node_cap = cap;
	}
	struct trie_node *node = &trie->nodes[trie->node_count];
	memset(node, 0, sizeof(*node));
	node->len = (uint8_t)len;
	for (unsigned i = 0; i < (len + 7) / 8; i++)
		node->key[i] = key[i];
	if (len % 8)
		node->key[len / 8] &= (uint8_t)(0xff << (8 - len % 8));
	return (uint32_t)trie->node_count++;
}

/* Returns the node whose prefix is exactly key/len, created (and an
 * existing edge split) when missing; NO_NODE when out of memory. */
static uint32_t node_for_prefix(struct prefix_trie *trie, const uint8_t *key, unsigned len)
{
	uint32_t at = 0;

	if (trie->node_count == 0 && new_node(trie, key, 0) == NO_NODE)
		return NO_NODE;
	for (;;) {
		unsigned at_len = trie->nodes[at].len;
		if (at_len == len)
			return at;
		unsigned side = bit_at(key, at_len);
		uint32_t next = trie->nodes[at].child[side];
		if (next == NO_CHILD) {
			uint32_t leaf = new_node(trie, key, len);
			if (leaf != NO_NODE)
				trie->nodes[at].child[side] = leaf;
			return leaf;
		}
		unsigned next_len = trie->nodes[next].len;
		unsigned shared = common_bits(key, trie->nodes[next].key, len < next_len ? len : next_len);
		if (shared == next_len) {
			at = next;
			continue;
		}
		/* key leaves the edge to next after `shared` bits: a node
		 * for the shared prefix takes next's place. */
		uint32_t fork = new_node(trie, key, shared);
		if (fork == NO_NODE)
			return NO_NODE;
		trie->nodes[fork].child[bit_at(trie->nodes[next].key, shared)] = next;
		trie->nodes[at].child[side] = fork;
		at = fork;
	}
}

static int compare_pending(const void *a, const void *b)
{
	const struct pending_span *x = a, *y = b;

	if (x->node != y->node)
		return x->node < y->node ? -1 : 1;
	return (int)x->ports.lo - (int)y->ports.lo;
}

/* Sorts the pending spans by node and port, merges the ones that overlap
 * or touch, and gives each node its slice. */
static int attach_spans(struct prefix_trie *trie, struct pending_span *pending, size_t count)
{
	if (count == 0)
		return 0;
	trie->spans = malloc(count * sizeof(*trie->spans));
	if (!trie->spans)
		return -1;
	qsort(pending, count, sizeof(*pending), compare_pending);
	for (size_t i = 0; i < count; i++) {
		struct trie_node *node = &trie->nodes[pending[i].node];
		struct port_span *last = node->span_count ? &trie->spans[trie->span_count - 1] : NULL;
		if (last && (uint32_t)pending[i].ports.lo <= (uint32_t)last->hi + 1) {
			if (pending[i].ports.hi > last->hi)
				last->hi = pending[i].ports.hi;
			continue;
		}
		if (!node->span_count)
			node->span_first = (uint32_t)trie->span_count;
		node->span_count++;
		trie->spans[trie->span_count++] = pending[i].ports;
	}
	return 0;
}

static int build_trie(struct prefix_trie *trie, const struct pf_rule_list *list,
		      sa_family_t family)
{
	struct pending_span *pending = malloc((list->count + 1) * sizeof(*pending));
	size_t count = 0;
	int rc = 0;

	if (!pending)
		return -1;
	for (size_t i = 0; i < list->count && rc == 0; i++) {
		const struct pf_rule *rule = &list->rules[i];
		if (rule->family != family)
			continue;
		uint32_t node = node_for_prefix(trie, rule->addr, rule->prefix);
		if (node == NO_NODE)
			rc = -1;
		else
			pending[count++] = (struct pending_span){node, {rule->port_lo, rule->port_hi}};
	}
	if (rc == 0)
		rc = attach_spans(trie, pending, count);
	free(pending);
	return rc;
}

static bool spans_hold(const struct prefix_trie *trie, const struct trie_node *node, uint16_t port)
{
	const struct port_span *spans = trie->spans + node->span_first;
	size_t lo = 0, hi = node->span_count;

	/* The last span starting at or below port is the only candidate. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (spans[mid].lo <= port)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && port <= spans[lo - 1].hi;
}

static bool trie_matches(const struct prefix_trie *trie, const struct pf_dest *dest)
{
	unsigned max_len = dest->family == AF_INET ? 32 : 128;
	uint32_t at = 0;

	if (trie->node_count == 0)
		return false;
	for (;;) {
		const struct trie_node *node = &trie->nodes[at];
		if (node->span_count && spans_hold(trie, node, dest->port))
			return true;
		if (node->len >= max_len)
			return false;
		at = node->child[bit_at(dest->addr, node->len)];
		if (at == NO_CHILD || !key_matches(trie->nodes[at].key, dest->addr, trie->nodes[at].len))
			return false;
	}
}

bool pf_rule_index_permits(const struct pf_rule_index *index, bool has_allow,
			   const struct pf_dest *dest)
{
	int family = dest->family == AF_INET ? FAMILY_V4 : FAMILY_V6;

	if (trie_matches(&index->tries[LIST_DENY][family], dest))
		return false;
	return !has_allow || trie_matches(&index->tries[LIST_ALLOW][family], dest);
}

static void free_index(struct pf_rule_index *index)
{
	for (int list = 0; list < LIST_COUNT; list++)
		for (int family = 0; family < FAMILY_COUNT; family++) {
			free(index->tries[list][family].nodes);
			free(index->tries[list][family].spans);
		}
	free(index);
}

int pf_app_index_rules(struct pf_app *app)
{
	struct pf_rule_index *index = calloc(1, sizeof(*index));
	const struct pf_rule_list *lists[LIST_COUNT] = {[LIST_DENY] = &app->deny,
							[LIST_ALLOW] = &app->allow};
	static const sa_family_t families[FAMILY_COUNT] = {AF_INET, AF_INET6};

	pf_app_free_rule_index(app);
	if (!index)
		return -1;
	for (int list = 0; list < LIST_COUNT; list++)
		for (int family = 0; family < FAMILY_COUNT; family++)
			if (build_trie(&index->tries[list][family], lists[list], families[family]) < 0) {
				free_index(index);
				return -1;
			}
	app->rule_index = index;
	return 0;
}

void pf_app_free_rule_index(struct pf_app *app)
{
	if (app->rule_index)
		free_index(app->rule_index);
	app->rule_index = NULL;
}
