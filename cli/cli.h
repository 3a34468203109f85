#ifndef PORTFENCE_CLI_H
#define PORTFENCE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

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
int cmd_who(int argc, char **argv);

/* TIME as SPEC gives it (ISO 8601 UTC, 90s/15m/1h/2d back from now,
 * today, yesterday) in the log's form, to the second and the fraction
 * given (at most 6 digits, no trailing zero): "2026-12-02T10:00:00",
 * "2026-12-02T10:00:00.5"; cli_time_cmp() compares a record's "ts" with it.
 * 0, -1 when text is no TIME, CLI_TIME_NO_SUCH_DAY for a day (or time
 * of day) the calendar lacks. */
#define CLI_TIME_LEN 40
#define CLI_TIME_NO_SUCH_DAY (-2)	/* well formed, but not in the calendar: 2026-02-30 */
int cli_parse_time(const char *text, char out[CLI_TIME_LEN]);
/* A record's "ts" (2026-12-02T10:00:00.123456Z) against a TIME of
 * cli_parse_time(): <0 before it, 0 at it, >0 after it. */
int cli_time_cmp(const char *ts, const char *time);
/* A TIME of cli_parse_time() in a record's form, 2026-12-02T10:00:00.500000Z. */
void cli_time_record_form(const char *time, char out[CLI_TIME_LEN]);
/* TIME of option (--since) into out: 0, or the usage error said, naming
 * the option and the argument (EXIT_USAGE). */
int cli_time_option(const char *option, const char *text, char out[CLI_TIME_LEN]);
/* The command being run ("report"), or "portfence". */
const char *cli_command_name(void);
struct pf_policy;
/* The audit log a command reads by default: PORTFENCE_LOG, else the
 * policy's log (policy from cli_load_optional_policy); NULL when neither
 * names one. */
const char *cli_default_log(const struct pf_policy *policy);
/* The audit log at path ("-": standard input), open for reading, or
 * NULL with one line said (a directory included); cli_close_log() closes
 * it (never stdin): 0, or -1 when a read failed, said in one line naming
 * path (none when path is NULL). */
FILE *cli_open_log(const char *path);
int cli_close_log(FILE *log, const char *path);
struct sockaddr_storage;
struct pf_app;
/* "127.0.0.1:80" or "[::1]:53" into ss; 0, or -1 when it is neither. */
int cli_parse_endpoint(const char *text, struct sockaddr_storage *ss, unsigned *len);
/* Whether app's rules refuse remote ("ADDR:PORT"), and then the rule
 * that does, 'deny "0.0.0.0/0:25" FILE:LINE' or 'allow (no rule matches)
 * FILE:LINE', into out. */
bool cli_refusing_rule(const struct pf_app *app, const char *remote, char *out, size_t len);
int cmd_explain(int argc, char **argv);

/* Prints message (if any) and the running command's usage to stderr;
 * returns EXIT_USAGE. */
int usage_error(const char *message);
struct option;
/* getopt_long for a command (shortopts starting "+": options end at the
 * first other word; without it they may follow one, which optind then
 * names after the options): --help (and -h where the
 * command has no -h) prints its help and exits 0; an unknown option or
 * a missing argument says which, prints its usage and exits 2. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
/* COMMAND found as execvp would (PATH), as an absolute path. */
bool cli_resolve_command(const char *name, char *out, size_t len);
struct pf_policy;
/* Loads and validates the policy, printing its FILE:LINE errors on
 * stderr; 0, or -1 with the policy freed. */
int cli_load_policy(const char *config, struct pf_policy *policy);
/* The policy of the commands that can do without one (report, who): the
 * one named (config, from -c; else PORTFENCE_CONFIG) is loaded as
 * cli_load_policy does, its errors said; with none named, the default
 * when want_default and it exists (absent, there is none: the range is
 * left out, never guessed).  1 loaded; 0 none, *policy empty; -1 its
 * errors said, *policy freed. */
int cli_load_optional_policy(const char *config, bool want_default, struct pf_policy *policy);
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
/* One line on stderr for an app the policy at path lacks: "portfence:
 * COMMAND: PATH defines no app 'NAME' (its apps: A, B)", then tail. */
void cli_no_such_app(const struct pf_policy *policy, const char *path, const char *name, const char *tail);
/* PORTFENCE_CONFIG, else the default policy path. */
const char *cli_config_from_env(void);

#endif
