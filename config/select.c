/* Which app of the policy applies to a process. */
#include "config/policy.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

static const struct pf_app *apps_being_sorted;

static int compare_names(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int order = strcmp(apps_being_sorted[x].name, apps_being_sorted[y].name);

	if (order)
		return order;
	return x < y ? -1 : x > y;
}

int pf_policy_index_names(struct pf_policy *policy)
{
	size_t *order = malloc((policy->app_count + 1) * sizeof(*order));

	free(policy->by_name);
	policy->by_name = order;
	if (!order)
		return -1;
	for (size_t i = 0; i < policy->app_count; i++)
		order[i] = i;
	apps_being_sorted = policy->apps;
	qsort(order, policy->app_count, sizeof(*order), compare_names);
	return 0;
}

static int compare_ranges(const void *a, const void *b)
{
	const struct pf_app *x = &apps_being_sorted[*(const size_t *)a];
	const struct pf_app *y = &apps_being_sorted[*(const size_t *)b];

	return (x->range_lo > y->range_lo) - (x->range_lo < y->range_lo);
}

int pf_policy_index_ranges(struct pf_policy *policy)
{
	size_t *order = malloc((policy->app_count + 1) * sizeof(*order));

	free(policy->by_range);
	policy->by_range = order;
	if (!order)
		return -1;
	for (size_t i = 0; i < policy->app_count; i++)
		order[i] = i;
	apps_being_sorted = policy->apps;
	qsort(order, policy->app_count, sizeof(*order), compare_ranges);
	return 0;
}

int pf_policy_app_at_port(const struct pf_policy *policy, uint16_t port)
{
	if (!policy->by_range) {
		for (size_t i = 0; i < policy->app_count; i++)
			if (port >= policy->apps[i].range_lo && port <= policy->apps[i].range_hi)
				return (int)i;
		return -1;
	}
	/* The last app whose range starts at or below port. */
	size_t lo = 0, hi = policy->app_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (policy->apps[policy->by_range[mid]].range_lo <= port)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	const struct pf_app *app = &policy->apps[policy->by_range[lo - 1]];
	return port <= app->range_hi ? (int)policy->by_range[lo - 1] : -1;
}

int pf_policy_find_app(const struct pf_policy *policy, const char *name)
{
	if (!policy->by_name) {
		for (size_t i = 0; i < policy->app_count; i++)
			if (strcmp(policy->apps[i].name, name) == 0)
				return (int)i;
		return PF_SELECT_UNKNOWN_APP;
	}
	/* The first index whose name is not below name. */
	size_t lo = 0, hi = policy->app_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(policy->apps[policy->by_name[mid]].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < policy->app_count && strcmp(policy->apps[policy->by_name[lo]].name, name) == 0)
		return (int)policy->by_name[lo];
	return PF_SELECT_UNKNOWN_APP;
}

static const char *glob_matching(const struct pf_glob_list *list, const char *subject, int *line)
{
	if (!subject)
		return NULL;
	for (size_t i = 0; i < list->count; i++)
		if (fnmatch(list->globs[i], subject, 0) == 0) {
			if (line)
				*line = list->lines ? list->lines[i] : 0;
			return list->globs[i];
		}
	return NULL;
}

const char *pf_app_match_why(const struct pf_app *app, const struct pf_process_identity *who,
			     const char **subject, int *line)
{
	const char *glob;

	if ((glob = glob_matching(&app->exe_globs, who->exe_path, line))) {
		*subject = "exe";
		return glob;
	}
	/* comm is truncated to 15 bytes by the kernel; argv[0]'s basename is
	 * not, so a glob written for the full name still matches. */
	if ((glob = glob_matching(&app->comm_globs, who->comm, line))) {
		*subject = "comm";
		return glob;
	}
	if ((glob = glob_matching(&app->comm_globs, who->program_name, line)))
		*subject = "argv[0]";
	return glob;
}

static bool app_matches(const struct pf_app *app,
			const struct pf_process_identity *who)
{
	const char *subject;
	return pf_app_match_why(app, who, &subject, NULL) != NULL;
}

/* PORTFENCE_APP first, then the match globs in file order, then default. */
int pf_policy_select(const struct pf_policy *policy,
		     const struct pf_process_identity *who)
{
	if (who->forced_app && who->forced_app[0])
		return pf_policy_find_app(policy, who->forced_app);
	for (size_t i = 0; i < policy->app_count; i++)
		if (app_matches(&policy->apps[i], who))
			return (int)i;
	return policy->default_app;
}
