/* libFuzzer target: the policy loader on arbitrary text.  Built with
 * -DFUZZ_REPLAY it is a plain program that feeds each file named on its
 * command line to the same function (the regression run in make test). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct pf_policy policy;
	struct pf_diags diags = {0};

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* @include would open files named by the input (/dev/zero ...):
	 * that is libconfig reading the file system, not our parser. */
	if (!strstr(text, "@include")) {
		pf_policy_load_text("fuzz.conf", text, &policy, &diags);
		for (size_t i = 0; i < policy.app_count; i++)
			(void)pf_policy_find_app(&policy, policy.apps[i].name);
		pf_policy_free(&policy);
		pf_diags_free(&diags);
	}
	free(text);
	return 0;
}

#include "fuzz_replay.h"
