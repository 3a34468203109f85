/* The BPF backend's commands in a build without it (make BPF=0): each
 * says so in one line and exits 1, the backend's refusal status. */
#include <stdio.h>
#include <string.h>

#include "bpf_cli.h"
#include "loader/loader.h"

static int absent(void)
{
	fputs("portfence: this build has no BPF backend (built with BPF=0)\n", stderr);
	return 1;
}

int cmd_run_bpf(const char *config, const char *app_name, bool audit, const char *user, char **command)
{
	(void)config, (void)app_name, (void)audit, (void)user, (void)command;
	return absent();
}

int cmd_attach(int argc, char **argv)
{
	(void)argc, (void)argv;
	return absent();
}

int cmd_detach(int argc, char **argv)
{
	(void)argc, (void)argv;
	return absent();
}

int cmd_daemon(int argc, char **argv)
{
	(void)argc, (void)argv;
	return absent();
}

const char *bpf_cli_unavailable(char *why, size_t len)
{
	snprintf(why, len, "this build has no BPF backend (built with BPF=0)");
	return why;
}

/* status and the sweep find nothing of a backend this build lacks. */
long long pf_bpf_records_lost(const char *app_name)
{
	(void)app_name;
	return 0;
}

int pf_bpf_outcomes(const char *app_name, uint64_t *assigned, uint64_t *failed)
{
	(void)app_name;
	*assigned = *failed = 0;
	return 0;
}

void pf_bpf_sweep_leftovers(void)
{
}
