/* report --suggest and report --against, from the figures of one pass
 * over the log (report.h).
 *
 * --suggest writes allow rules that cover every destination the log
 * shows an app using (and, for audit-mode logs, the ones enforce would
 * refuse), merged into prefixes and port ranges only where that is
 * exact: a /31 only when both addresses were seen, a port range only
 * when every port of it was seen with the same prefix.  The range size
 * it recommends is the model of the man page: max(16, ceil(2.5 P)), P
 * the most assignments to one destination in one clock minute (a 60 s
 * window holds at most 2P; a quarter more is headroom).
 *
 * Measured against churn (bench/suggest_churn): a port is unusable for
 * one destination while its connection lives and until the peer has
 * closed, not for TIME_WAIT's 60 s (the walk reuses a TIME_WAIT 4-tuple
 * at once), so what a range needs is the peak of connections open at
 * once, plus those closing.  The log has no lifetimes: the model holds
 * when connections live at most about a minute, and then overshoots by
 * about 60 s / lifetime (2.5x for connections held 30 s, 25-50x for 1 s,
 * thousands of times for sequential churn, where it reaches 65535). */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/policy.h"
#include "report.h"

struct net {
	uint8_t family;
	uint8_t prefix;
	uint16_t port_lo, port_hi;
	uint8_t addr[16];
};

static unsigned bits_of(const struct net *n)
{
	return n->family == AF_INET ? 32 : 128;
}

static int bit(const uint8_t *addr, unsigned i)
{
	return (addr[i / 8] >> (7 - i % 8)) & 1;
}

static int by_port_then_addr(const void *a, const void *b)
{
	const struct net *x = a, *y = b;
	if (x->family != y->family)
		return x->family - y->family;
	if (x->port_lo != y->port_lo)
		return x->port_lo - y->port_lo;
	return memcmp(x->addr, y->addr, 16);
}

static int by_addr_then_port(const void *a, const void *b)
{
	const struct net *x = a, *y = b;
	int order = x->family != y->family ? x->family - y->family : memcmp(x->addr, y->addr, 16);
	if (order)
		return order;
	if (x->prefix != y->prefix)
		return x->prefix - y->prefix;
	return x->port_lo - y->port_lo;
}

/* a and b (same family, port and prefix p) are the two halves of one
 * prefix p - 1: the same first p - 1 bits, a's bit p - 1 clear, b's set. */
static bool halves(const struct net *a, const struct net *b)
{
	unsigned p = a->prefix;
	if (p == 0 || b->prefix != p || a->family != b->family || a->port_lo != b->port_lo)
		return false;
	for (unsigned i = 0; i + 1 < p; i++)
		if (bit(a->addr, i) != bit(b->addr, i))
			return false;
	return bit(a->addr, p - 1) == 0 && bit(b->addr, p - 1) == 1;
}

/* Merges sorted, distinct host addresses (one port) into the fewest
 * prefixes that hold exactly them: a stack, merging its top two while
 * they are halves of one prefix.  Returns the new count. */
static size_t merge_prefixes(struct net *nets, size_t count)
{
	size_t top = 0;
	for (size_t i = 0; i < count; i++) {
		nets[top++] = nets[i];
		while (top >= 2 && halves(&nets[top - 2], &nets[top - 1])) {
			top--;
			nets[top - 1].prefix--;
		}
	}
	return top;
}

/* The rules covering the app's destinations, sorted; *count of them. */
static struct net *cover(const struct app_stats *app, size_t *count)
{
	size_t n = 0, cap = 0, out = 0;
	struct net *nets = NULL;

	for (int kind = 0; kind < DEST_KINDS; kind++) {
		if (kind == DEST_DENIED)
			continue;
		for (const struct dest_stats *d = app->dests[kind]; d; d = d->next) {
			struct sockaddr_storage ss;
			unsigned len;
			if (cli_parse_endpoint(d->remote, &ss, &len) < 0)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				nets = g_renew(struct net, nets, cap);
			}
			struct net *net = &nets[n++];
			memset(net, 0, sizeof(*net));
			net->family = (uint8_t)ss.ss_family;
			if (ss.ss_family == AF_INET) {
				net->port_lo = ntohs(((struct sockaddr_in *)&ss)->sin_port);
				memcpy(net->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
			} else {
				net->port_lo = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
				memcpy(net->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
			}
			net->port_hi = net->port_lo;
			net->prefix = (uint8_t)bits_of(net);
		}
	}
	if (!n) {
		*count = 0;
		return nets;
	}
	qsort(nets, n, sizeof(*nets), by_port_then_addr);
	/* distinct, then merged per (family, port) */
	size_t distinct = 0;
	for (size_t i = 0; i < n; i++)
		if (!distinct || by_port_then_addr(&nets[distinct - 1], &nets[i]) != 0)
			nets[distinct++] = nets[i];
	for (size_t start = 0; start < distinct;) {
		size_t end = start;
		while (end < distinct && nets[end].family == nets[start].family && nets[end].port_lo == nets[start].port_lo)
			end++;
		size_t merged = merge_prefixes(&nets[start], end - start);
		memmove(&nets[out], &nets[start], merged * sizeof(*nets));
		out += merged;
		start = end;
	}
	/* consecutive ports of one prefix into a port range */
	qsort(nets, out, sizeof(*nets), by_addr_then_port);
	n = 0;
	for (size_t i = 0; i < out; i++) {
		struct net *last = n ? &nets[n - 1] : NULL;
		if (last && last->family == nets[i].family && last->prefix == nets[i].prefix &&
		    memcmp(last->addr, nets[i].addr, 16) == 0 && last->port_hi + 1 == nets[i].port_lo)
			last->port_hi = nets[i].port_hi;
		else
			nets[n++] = nets[i];
	}
	*count = n;
	return nets;
}

static void format_net(const struct net *net, char *out, size_t len)
{
	char addr[INET6_ADDRSTRLEN], prefix[8] = "", port[16];
	inet_ntop(net->family, net->addr, addr, sizeof(addr));
	if (net->prefix != bits_of(net))
		snprintf(prefix, sizeof(prefix), "/%u", net->prefix);
	if (net->port_lo == net->port_hi)
		snprintf(port, sizeof(port), ":%u", net->port_lo);
	else
		snprintf(port, sizeof(port), ":%u-%u", net->port_lo, net->port_hi);
	snprintf(out, len, net->family == AF_INET6 ? "[%s%s]%s" : "%s%s%s", addr, prefix, port);
}

/* The most assignments to one destination in one clock minute. */
static unsigned long peak_minute(const struct app_stats *app)
{
	unsigned long peak = 0;
	for (int kind = 0; kind < DEST_KINDS; kind++)
		for (const struct dest_stats *d = app->dests[kind]; d; d = d->next)
			if (d->peak_minute > peak)
				peak = d->peak_minute;
	return peak;
}

static unsigned long recommended_size(unsigned long peak)
{
	unsigned long size = (peak * 5 + 1) / 2;
	return size < 16 ? 16 : size > 65535 ? 65535 : size;
}

void report_suggest(const struct report *rep, bool json)
{
	json_t *apps = json_array();

	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		size_t count;
		struct net *nets = cover(app, &count);
		unsigned long peak = peak_minute(app);
		json_t *allow = json_array();
		for (size_t r = 0; r < count; r++) {
			char text[96];
			format_net(&nets[r], text, sizeof(text));
			json_array_append_new(allow, json_string(text));
		}
		g_free(nets);
		json_t *entry = json_pack("{s:s, s:o, s:I, s:I}", "app", app->name, "allow", allow, "peak_per_minute",
					  (json_int_t)peak, "recommended_range_size",
					  (json_int_t)recommended_size(peak));
		if (app->range_lo)
			json_object_set_new(entry, "range", json_pack("[i,i]", app->range_lo, app->range_hi));
		bool partial = app->untracked[DEST_USED] || app->untracked[DEST_WOULD_DENY];
		json_object_set_new(entry, "complete", json_boolean(!partial));
		json_array_append_new(apps, entry);
		if (json)
			continue;
		printf("app %s\n  allow = [", app->name);
		for (size_t r = 0; r < json_array_size(allow); r++)
			printf("%s \"%s\"", r ? "," : "", json_string_value(json_array_get(allow, r)));
		printf(" ];\n");
		if (partial)
			printf("  (the log has more destinations than report keeps: these rules cover only part)\n");
		printf("  range size: %lu ports (peak %lu assignments to one destination in a minute",
		       recommended_size(peak), peak);
		if (app->range_lo)
			printf("; the range now has %u", app->range_hi - app->range_lo + 1);
		printf(")\n");
	}
	if (json) {
		json_t *root = json_pack("{s:o}", "apps", apps);
		json_dumpf(root, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(root);
	} else {
		json_decref(apps);
	}
}

static json_t *refused_under(const struct app_stats *app, const struct pf_app *other, bool refused)
{
	json_t *list = json_array();
	for (int kind = 0; kind < DEST_KINDS; kind++) {
		/* would be denied: what went through (or only audit said no);
		 * would be allowed: what was denied or audit refused */
		if ((refused && kind == DEST_DENIED) || (!refused && kind == DEST_USED))
			continue;
		for (const struct dest_stats *d = app->dests[kind]; d; d = d->next) {
			char rule[512];
			bool no = cli_refusing_rule(other, d->remote, rule, sizeof(rule));
			if (no != refused)
				continue;
			json_t *entry = json_pack("{s:s, s:I}", "remote", d->remote, "count", (json_int_t)d->count);
			if (refused)
				json_object_set_new(entry, "rule", json_string(rule));
			json_array_append_new(list, entry);
		}
	}
	return list;
}

static json_t *outside_range(const struct app_stats *app, const struct pf_app *other)
{
	unsigned long ports = 0, uses = 0;
	GHashTableIter iter;
	gpointer key, value;

	if (app->port_uses) {
		g_hash_table_iter_init(&iter, app->port_uses);
		while (g_hash_table_iter_next(&iter, &key, &value)) {
			unsigned port = GPOINTER_TO_UINT(key);
			if (port < other->range_lo || port > other->range_hi) {
				ports++;
				uses += GPOINTER_TO_UINT(value);
			}
		}
	}
	/* assignments: those outside; assignments_total: the app's all */
	return json_pack("{s:I, s:I, s:I}", "ports", (json_int_t)ports, "assignments", (json_int_t)uses,
			 "assignments_total", (json_int_t)app->assignments);
}

static json_t *rematched(const struct app_stats *app, const struct pf_policy *policy)
{
	json_t *list = json_array();
	GHashTableIter iter;
	gpointer key, value;

	if (!app->programs)
		return list;
	g_hash_table_iter_init(&iter, app->programs);
	while (g_hash_table_iter_next(&iter, &key, &value)) {
		const char *program = key, *comm = value, *slash = strrchr(program, '/');
		struct pf_process_identity who = {
			.exe_path = program[0] == '/' ? program : NULL,
			.comm = comm[0] ? comm : NULL,
			.program_name = slash ? slash + 1 : program,
		};
		int selected = pf_policy_select(policy, &who);
		const char *name = selected >= 0 ? policy->apps[selected].name : NULL;
		if (name && strcmp(name, app->name) == 0)
			continue;
		json_array_append_new(list, json_pack("{s:s, s:o}", "program", program, "app",
						      name ? json_string(name) : json_null()));
	}
	return list;
}

static void print_list(const char *title, json_t *list, bool with_rule)
{
	if (!json_array_size(list))
		return;
	printf("  %s:\n", title);
	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *e = json_array_get(list, i);
		printf("    %s  count %lld", json_string_value(json_object_get(e, "remote")),
		       (long long)json_integer_value(json_object_get(e, "count")));
		if (with_rule)
			printf(", rule %s", json_string_value(json_object_get(e, "rule")));
		putchar('\n');
	}
}

int report_against(const struct report *rep, const char *policy_path, bool json)
{
	struct pf_policy policy;
	json_t *apps = json_array();

	if (cli_load_policy(policy_path, &policy) < 0)
		return 1;
	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		int index = pf_policy_find_app(&policy, app->name);
		json_t *entry = json_pack("{s:s, s:b}", "app", app->name, "in_policy", index >= 0);
		json_t *moved = rematched(app, &policy);
		json_object_set_new(entry, "rematched", moved);
		if (index >= 0) {
			const struct pf_app *other = &policy.apps[index];
			json_object_set_new(entry, "would_deny", refused_under(app, other, true));
			json_object_set_new(entry, "would_allow", refused_under(app, other, false));
			json_object_set_new(entry, "outside_range", outside_range(app, other));
			json_object_set_new(entry, "range", json_pack("[i,i]", other->range_lo, other->range_hi));
			json_object_set_new(entry, "mode", json_string(other->mode == PF_MODE_AUDIT ? "audit" : "enforce"));
		}
		json_array_append_new(apps, entry);
		if (json)
			continue;
		printf("app %s\n", app->name);
		if (index < 0) {
			printf("  not in %s: its programs would run as it says for them\n", policy_path);
		} else {
			json_t *out = json_object_get(entry, "outside_range");
			print_list("would be denied", json_object_get(entry, "would_deny"), true);
			print_list("would be allowed", json_object_get(entry, "would_allow"), false);
			printf("  ports outside the new range %u-%u: %lld (%lld of %lu assignment%s)\n",
			       policy.apps[index].range_lo, policy.apps[index].range_hi,
			       (long long)json_integer_value(json_object_get(out, "ports")),
			       (long long)json_integer_value(json_object_get(out, "assignments")), app->assignments,
			       app->assignments == 1 ? "" : "s");
		}
		for (size_t m = 0; m < json_array_size(moved); m++) {
			json_t *e = json_array_get(moved, m), *to = json_object_get(e, "app");
			printf("  %s would match %s%s\n", json_string_value(json_object_get(e, "program")),
			       json_is_string(to) ? "app " : "no app (unconfined)",
			       json_is_string(to) ? json_string_value(to) : "");
		}
	}
	if (json) {
		json_t *root = json_pack("{s:s, s:o}", "against", policy_path, "apps", apps);
		json_dumpf(root, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(root);
	} else {
		json_decref(apps);
	}
	pf_policy_free(&policy);
	return 0;
}
