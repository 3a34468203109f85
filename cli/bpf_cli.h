/* The commands of the BPF backend: run --bpf, attach, detach, daemon. */
#ifndef PORTFENCE_BPF_CLI_H
#define PORTFENCE_BPF_CLI_H

#include <stdbool.h>

#include "loader/loader.h"
#include "config/policy.h"

/* user: "USER[:GROUP]" (names or numbers) to run COMMAND as, or NULL. */
int cmd_run_bpf(const char *config, const char *app_name, bool audit, const char *user, char **command);
int cmd_attach(int argc, char **argv);
int cmd_detach(int argc, char **argv);
int cmd_daemon(int argc, char **argv);

/* The app by name, or NULL after saying so. */
const struct pf_app *bpf_cli_find_app(const struct pf_policy *policy, const char *path, const char *name);
/* PORTFENCE_LOG, else the policy's log file (NULL: none). */
const char *bpf_cli_log_path(const struct pf_policy *policy);
/* Attaches app to a cgroup, pinned; 0, or 1 after the one-line reason. */
int bpf_cli_attach_pinned(const struct pf_policy *policy, const struct pf_app *app, const char *full,
			  const char *relative);
/* Why the BPF backend cannot be used here (not root, old kernel, no
 * cgroup v2, a build without it) into why; NULL when it can. */
const char *bpf_cli_unavailable(char *why, size_t len);
/* Prints the one-line reason; returns 1, the backend's refusal status. */
int bpf_cli_refuse(const char *why);

#endif
