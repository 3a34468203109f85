/* portfence: the command-line tool. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bpf_cli.h"
#include "cli.h"
#include "config/policy.h"

#ifndef PF_VERSION
#define PF_VERSION "unknown"
#endif

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *usage;	/* after "usage: portfence " */
	const char *options;	/* what `help NAME` adds */
};

static const struct command commands[] = {
	{"run", cmd_run,
	 "run [-c POLICY] [-a APP] [--audit] [-v] [--bpf [--user USER[:GROUP]]] -- COMMAND [ARG...]",
	 "Runs COMMAND confined to its app's port range: with the shim preloaded, or\n"
	 "with --bpf inside a cgroup of its own under the cgroup-BPF backend (root).\n"
	 "  -c, --config POLICY   the policy (default: PORTFENCE_CONFIG, else /etc/portfence.conf)\n"
	 "  -a, --app APP         apply APP whatever the policy's match says\n"
	 "      --audit           record what enforce would do, change nothing\n"
	 "  -v, --verbose         say which app matched, and print a line per deny or exhaustion\n"
	 "      --bpf             use the cgroup-BPF backend instead of the shim\n"
	 "      --user USER[:GROUP]  with --bpf: run COMMAND as USER (and GROUP, else USER's\n"
	 "                        group, with no supplementary groups) inside the cgroup\n"},
	{"check", cmd_check, "check [-c POLICY]",
	 "Validates the policy: a per-app summary (exit 0), or FILE:LINE errors (exit 1).\n"
	 "  -c, --config POLICY   the policy (default: PORTFENCE_CONFIG, else /etc/portfence.conf)\n"},
	{"explain", cmd_explain,
	 "explain [-c POLICY] (-a APP | --pid PID | -- COMMAND [ARG...]) [--to ADDR:PORT] [--json]",
	 "Says which app applies to a program and why, its range and algorithm, which\n"
	 "backend reaches it and why not the other, and with --to the verdict and the rule.\n"
	 "  -c, --config POLICY   the policy (default: PORTFENCE_CONFIG, else /etc/portfence.conf)\n"
	 "  -a, --app APP         the app named\n"
	 "      --pid PID         a running process\n"
	 "      --to ADDR:PORT    a destination (IPv6 as [ADDR]:PORT)\n"
	 "      --json            one JSON object\n"},
	{"report", cmd_report,
	 "report [--json] [--app NAME] [--since TIME] [--until TIME] [--suggest | --against POLICY2] [-c POLICY] [LOGFILE]",
	 "Summarises an audit log (default: PORTFENCE_LOG, else the policy's log).\n"
	 "  -c, --config POLICY   the policy: its log and its ranges\n"
	 "      --app NAME        only that app\n"
	 "      --since TIME      records at or after TIME\n"
	 "      --until TIME      records before TIME\n"
	 "      --suggest         allow rules covering what was seen, and a range size\n"
	 "      --against POLICY2 what would change under POLICY2\n"
	 "      --json            one JSON object\n"
	 "TIME: 2026-12-02T10:00:00Z (or with an offset, +01:00), 2026-12-02, a duration\n"
	 "back from now (90s, 15m, 1h, 2d, 1w), today, yesterday or now (UTC days).\n"},
	{"who", cmd_who, "who ADDR:PORT [--at TIME] [--proto tcp|udp] [-c POLICY] [--json] [LOGFILE]",
	 "Says which socket holds ADDR:PORT as a local address now (pid, comm, app,\n"
	 "cgroup, unit), or with --at which record last assigned it at or before TIME.\n"
	 "  -c, --config POLICY   the policy (its apps, and its log for --at)\n"
	 "      --at TIME         the audit log's answer for TIME instead of the kernel's\n"
	 "      --proto tcp|udp   one protocol only\n"
	 "      --json            one JSON object\n"},
	{"status", cmd_status, "status [-c POLICY] [--app NAME] [--json | --prometheus | --watch]",
	 "Shows each app's range as the kernel holds it now: its processes' sockets,\n"
	 "intruders, cgroups, counters.\n"
	 "  -c, --config POLICY   the policy\n"
	 "  -a, --app NAME        only that app\n"
	 "      --json            one JSON object\n"
	 "      --prometheus      the Prometheus text exposition format\n"
	 "      --watch           a live view, refreshed each second (q quits)\n"},
	{"attach", cmd_attach, "attach [-c POLICY] -a APP CGROUP",
	 "Confines every process of CGROUP with APP's policy (BPF backend, root), until detach.\n"
	 "  -c, --config POLICY   the policy\n"
	 "  -a, --app APP         the app\n"},
	{"detach", cmd_detach, "detach [-a APP] CGROUP",
	 "Undoes attach.\n"
	 "  -a, --app APP         only that app's attachment\n"},
	{"daemon", cmd_daemon, "daemon [-c POLICY]",
	 "Attaches each app to the cgroups its policy lists and writes their records;\n"
	 "SIGHUP reloads, SIGTERM detaches and exits.\n"
	 "  -c, --config POLICY   the policy\n"},
	{"doctor", cmd_doctor, "doctor [-c POLICY]",
	 "Says what this host lacks for each backend, and what the policy would meet.\n"
	 "  -c, --config POLICY   the policy\n"},
};
#define COMMAND_COUNT (sizeof(commands) / sizeof(*commands))

/* help is asked of itself as the others are: `help help`, `help --help`. */
static const struct command help_command = {
	"help", NULL, "help [COMMAND]",
	"Prints the usage of every command, or with COMMAND that command's usage and\n"
	"options (as COMMAND --help does).\n"};

static bool asks_help(const char *word)
{
	return strcmp(word, "--help") == 0 || strcmp(word, "-h") == 0;
}

/* The command being run: its usage is the one a usage error prints. */
static const struct command *current;

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void print_all_usage(FILE *out)
{
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		fprintf(out, "%s portfence %s\n", i ? "      " : "usage:", commands[i].usage);
	fputs("       portfence --version | -V\n"
	      "       portfence help [COMMAND]      (and COMMAND --help)\n",
	      out);
}

static int help_of(const struct command *command)
{
	if (!command) {
		print_all_usage(stdout);
		return 0;
	}
	printf("usage: portfence %s\n\n%s", command->usage, command->options);
	return 0;
}

const char *cli_command_name(void)
{
	return current ? current->name : "portfence";
}

int usage_error(const char *message)
{
	if (message)
		fprintf(stderr, "portfence: %s\n", message);
	if (current)
		fprintf(stderr, "usage: portfence %s\n", current->usage);
	else
		print_all_usage(stderr);
	return EXIT_USAGE;
}

void cli_no_such_app(const struct pf_policy *policy, const char *path, const char *name, const char *tail)
{
	/* The apps it does define, so that a typo shows at once; a long
	 * policy's list is cut, its count kept. */
	char apps[256] = "", escaped[128];
	size_t used = 0;
	for (size_t i = 0; i < policy->app_count && used < sizeof(apps); i++) {
		int n = snprintf(apps + used, sizeof(apps) - used, "%s%s", i ? ", " : "", policy->apps[i].name);
		if (n < 0 || (size_t)n >= sizeof(apps) - used) {
			snprintf(apps + used, sizeof(apps) - used, ", ... (%zu in all)", policy->app_count);
			break;
		}
		used += (size_t)n;
	}
	fprintf(stderr, "portfence: %s: %s defines no app '%s' (%s%s)%s\n", current ? current->name : "portfence",
		path, cli_escape(name, escaped, sizeof(escaped)), policy->app_count ? "its apps: " : "it defines none",
		apps, tail ? tail : "");
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
	char spec[64];
	char message[256];

	/* "+": options end at the first word that is not one (run's
	 * COMMAND); without it they may follow (who ADDR:PORT --at TIME). */
	snprintf(spec, sizeof(spec), "%s:%s", shortopts[0] == '+' ? "+" : "", shortopts + (shortopts[0] == '+'));
	opterr = 0;
	int opt = getopt_long(argc, argv, spec, longopts, NULL);
	if (opt != '?' && opt != ':')
		return opt;
	const char *word = optind > 0 && optind <= argc ? argv[optind - 1] : "";
	if (opt == '?' && (strcmp(word, "--help") == 0 || (optopt == 'h' && strcmp(word, "-h") == 0)))
		exit(help_of(current));
	if (optopt && !(word[0] == '-' && word[1] == '-'))
		snprintf(message, sizeof(message), opt == ':' ? "%s: option -%c needs an argument"
							     : "%s: unknown option -%c",
			 current ? current->name : "portfence", optopt);
	else
		snprintf(message, sizeof(message), opt == ':' ? "%s: option %.128s needs an argument"
							     : "%s: unknown option %.128s",
			 current ? current->name : "portfence", word);
	exit(usage_error(message));
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
	const char *first = argv[1];
	if (asks_help(first))
		return help_of(NULL);
	if (strcmp(first, "--version") == 0 || strcmp(first, "-V") == 0) {
		printf("portfence %s\n", PF_VERSION);
		return 0;
	}
	if (strcmp(first, "help") == 0) {
		current = &help_command;
		if (argc > 3)
			return usage_error("help takes at most one COMMAND");
		if (argc == 3 && (strcmp(argv[2], "help") == 0 || asks_help(argv[2])))
			return help_of(&help_command);
		const struct command *command = argc == 3 ? find_command(argv[2]) : NULL;
		if (argc == 3 && !command) {
			/* as for an unknown command: every usage, to choose from */
			fprintf(stderr, "portfence: help: no command '%s'\n", argv[2]);
			print_all_usage(stderr);
			return EXIT_USAGE;
		}
		return help_of(command);
	}
	current = find_command(first);
	if (!current) {
		fprintf(stderr, "portfence: unknown command '%s'\n", first);
		return usage_error(NULL);
	}
	/* Before the command, which may not parse options in this build
	 * (BPF=0). */
	if (argc == 3 && asks_help(argv[2]))
		return help_of(current);
	return current->run(argc - 1, argv + 1);
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

int cli_load_optional_policy(const char *config, bool want_default, struct pf_policy *policy)
{
	const char *env = secure_getenv("PORTFENCE_CONFIG");
	struct stat info;

	if (!config && !(env && env[0]) &&
	    (!want_default || (stat(PF_DEFAULT_CONFIG, &info) < 0 && errno == ENOENT))) {
		memset(policy, 0, sizeof(*policy));
		policy->default_app = PF_SELECT_PASS;
		return 0;
	}
	return cli_load_policy(config ? config : cli_config_from_env(), policy) < 0 ? -1 : 1;
}
