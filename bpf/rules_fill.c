/* The app's rules into the programs' LPM tries. */
#include <errno.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader_internal.h"
#include "portfence.skel.h"
#include "rules_api.h"

/* TEMPORARY: one entry per rule, no union with containing prefixes. */
static int count_family(const struct pf_rule_list *rules, sa_family_t family)
{
	int n = 0;
	for (size_t i = 0; i < rules->count; i++)
		n += rules->rules[i].family == family;
	return n ? n : 1;
}

int pf_bpf_size_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len)
{
	(void)why;
	(void)len;
	bpf_map__set_max_entries(loaded->skel->maps.deny4, (uint32_t)count_family(&app->deny, AF_INET));
	bpf_map__set_max_entries(loaded->skel->maps.deny6, (uint32_t)count_family(&app->deny, AF_INET6));
	bpf_map__set_max_entries(loaded->skel->maps.allow4, (uint32_t)count_family(&app->allow, AF_INET));
	bpf_map__set_max_entries(loaded->skel->maps.allow6, (uint32_t)count_family(&app->allow, AF_INET6));
	return 0;
}

static void fill(struct bpf_map *map4, struct bpf_map *map6, const struct pf_rule_list *rules)
{
	for (size_t i = 0; i < rules->count; i++) {
		const struct pf_rule *rule = &rules->rules[i];
		struct pf_bpf_port_spans spans = {.count = 1, .lo = {rule->port_lo}, .hi = {rule->port_hi}};
		if (rule->family == AF_INET) {
			struct pf_bpf_lpm4_key key = {.prefixlen = rule->prefix};
			memcpy(key.addr, rule->addr, 4);
			bpf_map_update_elem(bpf_map__fd(map4), &key, &spans, BPF_ANY);
		} else {
			struct pf_bpf_lpm6_key key = {.prefixlen = rule->prefix};
			memcpy(key.addr, rule->addr, 16);
			bpf_map_update_elem(bpf_map__fd(map6), &key, &spans, BPF_ANY);
		}
	}
}

int pf_bpf_fill_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len)
{
	(void)why;
	(void)len;
	fill(loaded->skel->maps.deny4, loaded->skel->maps.deny6, &app->deny);
	fill(loaded->skel->maps.allow4, loaded->skel->maps.allow6, &app->allow);
	return 0;
}
