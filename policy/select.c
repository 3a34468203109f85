/* Which app of the policy applies to a process. */
#include "policy.h"

#include <fnmatch.h>
#include <string.h>

int pf_policy_find_app(const struct pf_policy *policy, const char *name)
{
	for (size_t i = 0; i < policy->app_count; i++)
		if (strcmp(policy->apps[i].name, name) == 0)
			return (int)i;
	return PF_SELECT_UNKNOWN_APP;
}

static bool any_glob_matches(const struct pf_glob_list *list, const char *subject)
{
	if (!subject)
		return false;
	for (size_t i = 0; i < list->count; i++)
		if (fnmatch(list->globs[i], subject, 0) == 0)
			return true;
	return false;
}

static bool app_matches(const struct pf_app *app,
			const struct pf_process_identity *who)
{
	if (any_glob_matches(&app->exe_globs, who->exe_path))
		return true;
	/* comm is truncated to 15 bytes by the kernel; argv[0]'s basename is
	 * not, so a glob written for the full name still matches. */
	return any_glob_matches(&app->comm_globs, who->comm) ||
	       any_glob_matches(&app->comm_globs, who->program_name);
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
