/* What run --bpf, attach, detach and daemon share: the policy and the
 * app, the log, and the one-line refusal. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_cli.h"
#include "cli.h"

int bpf_cli_load_policy(const char *config, struct pf_policy *policy)
{
	struct pf_diags diags = {0};
	enum pf_load_status status = pf_policy_load(config, policy, &diags);

	for (size_t i = 0; i < diags.count; i++)
		fprintf(stderr, "%s\n", diags.lines[i]);
	pf_diags_free(&diags);
	if (status != PF_LOAD_OK) {
		if (status == PF_LOAD_UNREADABLE && diags.count == 0)
			fprintf(stderr, "portfence: cannot read policy %s\n", config);
		pf_policy_free(policy);
		return -1;
	}
	return 0;
}

const struct pf_app *bpf_cli_find_app(const struct pf_policy *policy, const char *name)
{
	int index = pf_policy_find_app(policy, name);

	if (index < 0) {
		fprintf(stderr, "portfence: no app named '%s' in the policy\n", name);
		return NULL;
	}
	return &policy->apps[index];
}

const char *bpf_cli_log_path(const struct pf_policy *policy)
{
	const char *override = secure_getenv("PORTFENCE_LOG");
	return override && override[0] ? override : policy->log_file;
}

int bpf_cli_refuse(const char *why)
{
	fprintf(stderr, "portfence: %s\n", why);
	return 1;
}
