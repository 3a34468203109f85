/* Checks across apps, once every file of a policy is read: two apps with
 * one name, ranges that overlap, cgroup globs two apps can both match
 * (also for `check`, which knows the cgroup v2 mount), and the app
 * `default` names. */
#include "config/cgroup_glob.h"
#include "config/load_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Equal names sort by position, so each run's head is the first one. */
static void report_duplicate_names(struct loader *ld)
{
	const struct pf_policy *policy = ld->policy;
	const struct pf_app *first = policy->app_count ? &policy->apps[policy->by_name[0]] : NULL;

	for (size_t i = 1; i < policy->app_count; i++) {
		const struct pf_app *app = &policy->apps[policy->by_name[i]];
		if (strcmp(first->name, app->name) != 0) {
			first = app;
			continue;
		}
		if (!app->name[0])
			continue;
		ld->invalid = true;
		pf_diags_add(ld->diags, app->file, app->name_line,
			     "duplicate app name '%s' (first defined at %s:%d)", app->name,
			     first->file, first->line);
	}
}

static const struct pf_app *apps_being_sorted;

static int compare_range_lo(const void *a, const void *b)
{
	const struct pf_app *x = &apps_being_sorted[*(const size_t *)a];
	const struct pf_app *y = &apps_being_sorted[*(const size_t *)b];

	if (x->range_lo != y->range_lo)
		return x->range_lo < y->range_lo ? -1 : 1;
	return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* In port order, the apps that overlap one are those after it that
 * start at or below its end: each pair is found once, from the app that
 * starts first, in O(n log n + pairs).  The later of the two in the
 * files is reported, naming the earlier. */
static void report_overlap(struct loader *ld, size_t one, size_t other)
{
	const struct pf_app *apps = ld->policy->apps;
	const struct pf_app *later = &apps[one > other ? one : other];
	const struct pf_app *earlier = &apps[one > other ? other : one];

	ld->invalid = true;
	pf_diags_add(ld->diags, later->file, later->range_line,
		     "range %u-%u of app '%s' overlaps range %u-%u of app '%s' (%s:%d)",
		     later->range_lo, later->range_hi, later->name, earlier->range_lo,
		     earlier->range_hi, earlier->name, earlier->file, earlier->range_line);
}

static void report_overlaps(struct loader *ld)
{
	const struct pf_policy *policy = ld->policy;
	size_t *order = malloc((policy->app_count + 1) * sizeof(*order)), count = 0;

	if (!order)
		return;
	for (size_t i = 0; i < policy->app_count; i++)
		if (policy->apps[i].range_lo)
			order[count++] = i;
	apps_being_sorted = policy->apps;
	qsort(order, count, sizeof(*order), compare_range_lo);
	for (size_t i = 0; i < count; i++) {
		const struct pf_app *first = &policy->apps[order[i]];
		for (size_t j = i + 1; j < count && policy->apps[order[j]].range_lo <= first->range_hi; j++)
			report_overlap(ld, order[i], order[j]);
	}
	free(order);
}

static void say(pf_say_fn *say_fn, void *opaque, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void say(pf_say_fn *say_fn, void *opaque, const char *file, int line, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	say_fn(opaque, file, line, fmt, args);
	va_end(args);
}

/* With a mount, only a pair with one glob at least written under it
 * (pf_cgroup_under_mount gives any other back as it is): a pair written
 * without it was compared as written, by the loader. */
static bool globs_meet(const char *a, const char *b, const char *mount)
{
	if (!mount)
		return pf_cgroup_globs_intersect(a, b);
	const char *a_relative = pf_cgroup_under_mount(a, mount);
	const char *b_relative = pf_cgroup_under_mount(b, mount);
	return (a_relative != a || b_relative != b) && pf_cgroup_globs_intersect(a_relative, b_relative);
}

/* The pairs of later's globs and earlier's that meet; how many. */
static size_t app_pair_overlaps(const struct pf_app *later, const struct pf_app *earlier, const char *mount,
				pf_say_fn *say_fn, void *opaque)
{
	size_t count = 0;

	for (size_t g = 0; g < later->cgroups.count; g++)
		for (size_t h = 0; h < earlier->cgroups.count; h++) {
			const char *a = later->cgroups.globs[g], *b = earlier->cgroups.globs[h];
			if (!globs_meet(a, b, mount))
				continue;
			say(say_fn, opaque, later->file, later->cgroups_line,
			    "cgroup \"%s\" of app '%s' and \"%s\" of app '%s' (%s:%d) can match the same cgroup",
			    a, later->name, b, earlier->name, earlier->file, earlier->cgroups_line);
			count++;
		}
	return count;
}

size_t pf_policy_cgroup_overlaps(const struct pf_policy *policy, const char *mount, pf_say_fn *say_fn,
				 void *opaque)
{
	size_t count = 0;

	for (size_t j = 1; j < policy->app_count; j++)
		for (size_t i = 0; i < j; i++)
			count += app_pair_overlaps(&policy->apps[j], &policy->apps[i], mount, say_fn, opaque);
	return count;
}

static void add_diag(void *diags, const char *file, int line, const char *fmt, va_list args)
{
	pf_diags_vadd(diags, file, line, fmt, args);
}

/* A cgroup that two apps' globs can both match: known here, so refused
 * here, rather than by the daemon when such a cgroup appears. */
static void report_cgroup_overlaps(struct loader *ld)
{
	if (pf_policy_cgroup_overlaps(ld->policy, NULL, add_diag, ld->diags))
		ld->invalid = true;
}

/* Two apps with one name, or ranges that overlap: sorted, so that a
 * policy of many apps costs O(n log n), not a comparison per pair. */
void pf_load_check_apps_apart(struct loader *ld)
{
	if (ld->policy->by_name)
		report_duplicate_names(ld);
	report_overlaps(ld);
	report_cgroup_overlaps(ld);
}

void pf_load_resolve_default(struct loader *ld)
{
	struct pf_policy *policy = ld->policy;

	policy->default_app = PF_SELECT_PASS;
	if (!ld->default_name || strcmp(ld->default_name, "pass") == 0)
		return;
	policy->default_app = pf_policy_find_app(policy, ld->default_name);
	if (policy->default_app < 0) {
		ld->invalid = true;
		pf_diags_add(ld->diags, ld->default_file, ld->default_line,
			     "default names app '%s', which the policy does not define",
			     ld->default_name);
		policy->default_app = PF_SELECT_PASS;
	}
}
