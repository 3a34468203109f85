/* The app's rules, compiled by config/bpf_rules.c, into the programs'
 * LPM tries: sized before the load, filled after it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "config/bpf_rules.h"
#include "loader/loader_internal.h"
#include "portfence.skel.h"

static uint32_t at_least_one(size_t count)
{
	return count ? (uint32_t)count : 1;
}

static int compile(const struct pf_app *app, struct pf_bpf_rules *rules, char *why, size_t len)
{
	struct pf_diags diags = {0};
	int rc = pf_bpf_rules_compile(app, rules, &diags);

	if (rc < 0)
		snprintf(why, len, "%s", diags.count ? diags.lines[0] : "out of memory compiling the rules");
	pf_diags_free(&diags);
	return rc < 0 ? -EINVAL : 0;
}

int pf_bpf_size_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len)
{
	struct pf_bpf_rules rules = {0};
	int rc = compile(app, &rules, why, len);

	if (rc == 0) {
		bpf_map__set_max_entries(loaded->skel->maps.deny4, at_least_one(rules.deny4.count));
		bpf_map__set_max_entries(loaded->skel->maps.deny6, at_least_one(rules.deny6.count));
		bpf_map__set_max_entries(loaded->skel->maps.allow4, at_least_one(rules.allow4.count));
		bpf_map__set_max_entries(loaded->skel->maps.allow6, at_least_one(rules.allow6.count));
	}
	pf_bpf_rules_free(&rules);
	return rc;
}

static int fill4(struct bpf_map *map, const struct pf_bpf_table4 *table)
{
	for (size_t i = 0; i < table->count; i++)
		if (bpf_map_update_elem(bpf_map__fd(map), &table->entries[i].key, &table->entries[i].spans,
					BPF_ANY) < 0)
			return -errno;
	return 0;
}

static int fill6(struct bpf_map *map, const struct pf_bpf_table6 *table)
{
	for (size_t i = 0; i < table->count; i++)
		if (bpf_map_update_elem(bpf_map__fd(map), &table->entries[i].key, &table->entries[i].spans,
					BPF_ANY) < 0)
			return -errno;
	return 0;
}

int pf_bpf_fill_rules(struct pf_bpf_app *loaded, const struct pf_app *app, char *why, size_t len)
{
	struct pf_bpf_rules rules = {0};
	int rc = compile(app, &rules, why, len);

	if (rc == 0 && ((rc = fill4(loaded->skel->maps.deny4, &rules.deny4)) < 0 ||
			(rc = fill4(loaded->skel->maps.allow4, &rules.allow4)) < 0 ||
			(rc = fill6(loaded->skel->maps.deny6, &rules.deny6)) < 0 ||
			(rc = fill6(loaded->skel->maps.allow6, &rules.allow6)) < 0))
		snprintf(why, len, "cannot fill the rules of app '%s': %s", app->name, strerror(-rc));
	pf_bpf_rules_free(&rules);
	return rc;
}
