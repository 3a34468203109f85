/* What run --bpf, attach, detach and daemon share: the policy and the
 * app, the log, and the one-line refusal. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_cli.h"
#include "cli.h"

const struct pf_app *bpf_cli_find_app(const struct pf_policy *policy, const char *path, const char *name)
{
	int index = pf_policy_find_app(policy, name);

	if (index < 0) {
		cli_no_such_app(policy, path, name, NULL);
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

const char *bpf_cli_unavailable(char *why, size_t len)
{
	return pf_bpf_unavailable(why, len);
}
