#ifndef PORTFENCE_CLI_H
#define PORTFENCE_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* Exit status for usage errors, as SPEC fixes it. */
#define EXIT_USAGE 2
/* run: the wrapper itself failed (the policy is unusable), as env(1) and
 * timeout(1) use it. */
#define EXIT_WRAPPER_FAILED 125

int cmd_check(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
int cmd_explain(int argc, char **argv);

/* Prints message (if any) and the running command's usage to stderr;
 * returns EXIT_USAGE. */
int usage_error(const char *message);
struct option;
/* getopt_long for a command ("+" implied): --help (and -h where the
 * command has no -h) prints its help and exits 0; an unknown option or
 * a missing argument says which, prints its usage and exits 2. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
/* COMMAND found as execvp would (PATH), as an absolute path. */
bool cli_resolve_command(const char *name, char *out, size_t len);
struct pf_policy;
/* Loads and validates the policy, printing its FILE:LINE errors on
 * stderr; 0, or -1 with the policy freed. */
int cli_load_policy(const char *config, struct pf_policy *policy);
/* libportfence.so next to the tool (the build tree), where `make
 * install` puts it relative to the tool, or in PF_LIBDIR: its path into
 * out, 0; -ENOENT with the PF_LIBDIR path in out. */
int cli_find_shim(char *out, size_t len);
/* Why the shim cannot reach the program at path (static, Go,
 * setuid/setcap), naming --bpf; NULL when it can. */
const char *unreachable_reason(const char *path);
/* text with control bytes written \xHH and backslashes doubled, into
 * out (cut to fit); returns out. */
const char *cli_escape(const char *text, char *out, size_t len);
/* PORTFENCE_CONFIG, else the default policy path. */
const char *cli_config_from_env(void);

#endif
