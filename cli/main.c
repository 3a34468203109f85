/* portfence: the command-line tool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_cli.h"
#include "cli.h"
#include "config/policy.h"

static const char usage_text[] =
	"usage: portfence run [-c POLICY] [-a APP] [--audit] [--bpf] -- COMMAND [ARG...]\n"
	"       portfence check [-c POLICY]\n"
	"       portfence report [--json] [--app NAME] [--since TIME] [--until TIME] [-c POLICY] [LOGFILE]\n"
	"       portfence who ADDR:PORT [--at TIME] [--proto tcp|udp] [-c POLICY] [--json] [LOGFILE]\n"
	"       portfence status [-c POLICY] [--app NAME] [--json | --prometheus | --watch]\n"
	"       portfence attach [-c POLICY] -a APP CGROUP\n"
	"       portfence detach [-a APP] CGROUP\n"
	"       portfence daemon [-c POLICY]\n"
	"       portfence doctor [-c POLICY]\n";

int usage_error(const char *message)
{
	if (message)
		fprintf(stderr, "portfence: %s\n", message);
	fputs(usage_text, stderr);
	return EXIT_USAGE;
}

const char *cli_config_from_env(void)
{
	const char *path = secure_getenv("PORTFENCE_CONFIG");
	return path && path[0] ? path : PF_DEFAULT_CONFIG;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error(NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "report") == 0)
		return cmd_report(argc - 1, argv + 1);
	if (strcmp(argv[1], "who") == 0)
		return cmd_who(argc - 1, argv + 1);
	if (strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (strcmp(argv[1], "attach") == 0)
		return cmd_attach(argc - 1, argv + 1);
	if (strcmp(argv[1], "detach") == 0)
		return cmd_detach(argc - 1, argv + 1);
	if (strcmp(argv[1], "daemon") == 0)
		return cmd_daemon(argc - 1, argv + 1);
	if (strcmp(argv[1], "doctor") == 0)
		return cmd_doctor(argc - 1, argv + 1);
	return usage_error("unknown command");
}

int cli_load_policy(const char *config, struct pf_policy *policy)
{
	struct pf_diags diags = {0};
	enum pf_load_status status = pf_policy_load(config, policy, &diags);

	for (size_t i = 0; i < diags.count; i++)
		fprintf(stderr, "%s\n", diags.lines[i]);
	pf_diags_free(&diags);
	if (status != PF_LOAD_OK) {
		pf_policy_free(policy);
		return -1;
	}
	return 0;
}
