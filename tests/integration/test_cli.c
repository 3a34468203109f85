/* The command line as people expect it (issue 20, items 4, 6, 7, 8):
 * --version and help, one command's usage on a usage error, report's -c,
 * --since/--until forms, escaped text output and damaged lines, status
 * saying what it could not read, `explain` against what real clients
 * see under both backends, `run --bpf --user`, and make install/uninstall. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* portfence ARGS... (NULL-terminated), with extra environment env. */
static void tool_env(struct run_result *r, char *const env[], ...)
{
	char *argv[32];
	int n = 0;
	va_list ap;

	argv[n++] = (char *)build_path("portfence");
	va_start(ap, env);
	for (char *arg; n < 31 && (arg = va_arg(ap, char *));)
		argv[n++] = arg;
	va_end(ap);
	argv[n] = NULL;
	run_program(r, argv, NULL, env);
}
#define tool(r, ...) tool_env(r, NULL, __VA_ARGS__, NULL)

/* portfence ARGS... as nobody (uid and gid 65534, no groups). */
static void tool_as_nobody(struct run_result *r, ...)
{
	char *argv[32] = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			  (char *)build_path_for_others("portfence")};
	int n = 5;
	va_list ap;

	va_start(ap, r);
	for (char *arg; n < 31 && (arg = va_arg(ap, char *));)
		argv[n++] = arg;
	va_end(ap);
	argv[n] = NULL;
	run_program(r, argv, NULL, NULL);
}

static struct run_result *result(void)
{
	struct run_result *r = malloc(sizeof(*r));
	cr_assert_not_null(r);
	return r;
}

/* ---- --version, help, usage ---- */

static const char *const commands[] = {"run", "check", "explain", "report", "status",
				       "attach", "detach", "daemon", NULL};

Test(cli, version)
{
	struct run_result *r = result();
	tool(r, "--version");
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strncmp(r->out, "portfence ", 10) == 0 && strlen(r->out) > 11, "--version printed '%s'", r->out);
	char first[256];
	snprintf(first, sizeof(first), "%s", r->out);
	tool(r, "-V");
	cr_expect_eq(r->status, 0);
	cr_expect_str_eq(r->out, first, "-V and --version differ");
	free(r);
}

/* Only the usage line of that command: no other command is named. */
static void expect_only_usage_of(const char *text, const char *command, const char *what)
{
	char own[64];
	snprintf(own, sizeof(own), "portfence %s", command);
	cr_expect(strstr(text, own), "%s: '%s' missing in:\n%s", what, own, text);
	for (int i = 0; commands[i]; i++) {
		char other[64];
		if (strcmp(commands[i], command) == 0)
			continue;
		snprintf(other, sizeof(other), "portfence %s ", commands[i]);
		cr_expect(!strstr(text, other), "%s: '%s' printed too:\n%s", what, other, text);
	}
}

Test(cli, help_and_command_help)
{
	struct run_result *r = result();
	tool(r, "help");
	cr_expect_eq(r->status, 0, "%s", r->err);
	for (int i = 0; commands[i]; i++) {
		char line[64];
		snprintf(line, sizeof(line), "portfence %s", commands[i]);
		cr_expect(strstr(r->out, line), "help lacks '%s':\n%s", line, r->out);
	}
	cr_expect(strstr(r->out, "--version"), "help lacks --version:\n%s", r->out);
	for (int i = 0; commands[i]; i++) {
		char what[64];
		tool(r, "help", (char *)commands[i]);
		snprintf(what, sizeof(what), "help %s", commands[i]);
		cr_expect_eq(r->status, 0, "%s: %d %s", what, r->status, r->err);
		expect_only_usage_of(r->out, commands[i], what);
		char via_help[sizeof(r->out)];
		snprintf(via_help, sizeof(via_help), "%s", r->out);
		tool(r, (char *)commands[i], "--help");
		snprintf(what, sizeof(what), "%s --help", commands[i]);
		cr_expect_eq(r->status, 0, "%s: %d %s", what, r->status, r->err);
		cr_expect_str_eq(r->out, via_help, "%s differs from help %s", what, commands[i]);
	}
	tool(r, "help", "nosuchcommand");
	cr_expect_eq(r->status, 2, "help of an unknown command: %d", r->status);
	free(r);
}

/* help is a command too: `help help` and `help --help` print its own
 * usage, as `COMMAND --help` does for the others, and exit 0. */
Test(cli, help_of_help)
{
	struct run_result *r = result();
	char *first = NULL;
	static const char *const asked[][2] = {{"help", "help"}, {"help", "--help"}, {"help", "-h"}};
	for (size_t i = 0; i < sizeof(asked) / sizeof(*asked); i++) {
		char what[64];
		snprintf(what, sizeof(what), "%s %s", asked[i][0], asked[i][1]);
		tool(r, (char *)asked[i][0], (char *)asked[i][1]);
		cr_expect_eq(r->status, 0, "%s: exit %d\n%s", what, r->status, r->err);
		cr_expect_str_eq(r->err, "", "%s said on stderr:\n%s", what, r->err);
		cr_expect(strncmp(r->out, "usage: portfence help [COMMAND]\n", 32) == 0, "%s:\n%s", what, r->out);
		expect_only_usage_of(r->out, "help", what);
		if (!first)
			first = strdup(r->out);
		cr_expect_str_eq(r->out, first, "%s differs from help help", what);
	}
	free(first);
	free(r);
}

Test(cli, usage_error_prints_that_command_only)
{
	struct run_result *r = result();
	for (int i = 0; commands[i]; i++) {
		char what[64];
		tool(r, (char *)commands[i], "--no-such-option");
		snprintf(what, sizeof(what), "%s --no-such-option", commands[i]);
		cr_expect_eq(r->status, 2, "%s: exit %d", what, r->status);
		expect_only_usage_of(r->err, commands[i], what);
		cr_expect(strstr(r->err, "--no-such-option"), "%s: the option is not named:\n%s", what, r->err);
	}
	/* A missing argument is said once, and rightly. */
	tool(r, "run", "-c");
	cr_expect_eq(r->status, 2);
	cr_expect(strstr(r->err, "-c") && strstr(r->err, "argument"), "run -c: %s", r->err);
	cr_expect(!strstr(r->err, "unknown option"), "run -c says unknown option:\n%s", r->err);
	cr_expect_eq(count_lines_starting(r->err, "portfence: "), 1, "run -c:\n%s", r->err);
	/* A malformed argument is named, with what was expected. */
	tool(r, "who", "127.0.0.1:99999");
	cr_expect_eq(r->status, 2);
	cr_expect(strstr(r->err, "'127.0.0.1:99999'") && strstr(r->err, "1-65535"), "who 127.0.0.1:99999:\n%s",
		  r->err);
	cr_expect_eq(count_lines_starting(r->err, "portfence: "), 1, "who 127.0.0.1:99999:\n%s", r->err);
	tool(r, "who");
	cr_expect_eq(r->status, 2);
	cr_expect(strstr(r->err, "who needs ADDR:PORT"), "who:\n%s", r->err);
	tool(r, "nosuchcommand");
	cr_expect_eq(r->status, 2);
	tool_env(r, NULL, NULL);
	cr_expect_eq(r->status, 2);
	free(r);
}

/* ---- report ---- */

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(text, 1, len, f), len);
	fclose(f);
}

/* An app the policy lacks is said in one line by every command that
 * takes one: the command, the policy file, the name, and the apps the
 * file does define, so a typo shows at once. */
Test(cli, an_app_the_policy_lacks_is_one_line_naming_the_file_and_its_apps)
{
	char dir[] = "/tmp/pf-noapp-XXXXXX", conf[64], line[256];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/p.conf", dir);
	static const char policy[] = "version = 1;\nlog = { file = \"/dev/null\"; };\napps = (\n"
				     "  { name = \"web\"; range = [ 40000, 40009 ]; },\n"
				     "  { name = \"mail\"; range = [ 40010, 40019 ]; }\n);\n";
	write_file(conf, policy, sizeof(policy) - 1);

	static const struct {
		const char *command;
		int status;
		const char *argv[8];
	} cases[] = {
		{"run", 125, {"run", "-c", "CONF", "-a", "wbe", "--", "true"}},
		{"explain", 1, {"explain", "-c", "CONF", "-a", "wbe"}},
		{"status", 1, {"status", "-c", "CONF", "--app", "wbe"}},
		{"attach", 1, {"attach", "-c", "CONF", "-a", "wbe", "/"}},
	};
	struct run_result *r = result();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[10] = {(char *)build_path("portfence")};
		for (int k = 0; k < 8 && cases[i].argv[k]; k++)
			argv[k + 1] = strcmp(cases[i].argv[k], "CONF") == 0 ? conf : (char *)cases[i].argv[k];
		run_program(r, argv, NULL, NULL);
		cr_expect_eq(r->status, cases[i].status, "%s: exit %d\n%s", cases[i].command, r->status, r->err);
		snprintf(line, sizeof(line), "portfence: %s: %s defines no app 'wbe' (its apps: web, mail)",
			 cases[i].command, conf);
		cr_expect(strncmp(r->err, line, strlen(line)) == 0, "%s: expected \"%s\", said:\n%s",
			  cases[i].command, line, r->err);
		cr_expect_eq(count_lines_starting(r->err, ""), 1, "%s: more than one line:\n%s", cases[i].command,
			     r->err);
	}
	free(r);
	snprintf(line, sizeof(line), "rm -rf %s", dir);
	cr_assert_eq(system(line), 0);
}

static int record(char *out, size_t len, time_t when, const char *app, unsigned port)
{
	struct tm tm;
	char ts[40];
	gmtime_r(&when, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	return snprintf(out, len,
			"{\"ts\":\"%s.000001Z\",\"event\":\"assign\",\"app\":\"%s\",\"pid\":1,\"exe\":\"/bin/x\","
			"\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"127.0.0.1:%u\",\"remote\":\"127.0.0.1:80\","
			"\"algorithm\":\"random\",\"attempts\":1,\"result\":\"ok\"}\n",
			ts, app, port);
}

/* report --json of log with extra arguments: assignments of app "a"
 * (-1: no entry), malformed lines into *malformed. */
static long report_count(const char *log, long *malformed, ...)
{
	struct run_result *r = result();
	char *argv[16];
	int n = 0;
	va_list ap;
	default_policy(NULL);
	argv[n++] = (char *)build_path("portfence");
	argv[n++] = "report";
	argv[n++] = "--json";
	va_start(ap, malformed);
	for (char *arg; n < 14 && (arg = va_arg(ap, char *));)
		argv[n++] = arg;
	va_end(ap);
	argv[n++] = (char *)log;
	argv[n] = NULL;
	run_program(r, argv, NULL, NULL);
	cr_assert_eq(r->status, 0, "report %s: %d %s", argv[3], r->status, r->err);
	json_error_t error;
	json_t *root = json_loads(r->out, 0, &error);
	cr_assert_not_null(root, "%s", r->out);
	json_t *entry = app_entry(root, "a");
	long count = entry ? (long)json_integer_value(json_object_get(entry, "assignments")) : 0;
	if (malformed)
		*malformed = (long)json_integer_value(json_object_get(root, "malformed_lines"));
	json_decref(root);
	free(r);
	return count;
}

Test(cli, report_honours_c_for_the_log)
{
	struct sandbox sb;
	char text[2048];
	int n;
	sandbox_init(&sb, "apps = ( { name = \"a\"; range = [ 61000, 61099 ]; } );");
	n = record(text, sizeof(text), time(NULL), "a", 61001);
	n += record(text + n, sizeof(text) - (size_t)n, time(NULL), "a", 61002);
	write_file(sb.log, text, (size_t)n);
	struct run_result *r = result();
	char *env[] = {"PORTFENCE_CONFIG=/nonexistent/portfence.conf", NULL};
	tool_env(r, env, "report", "--json", "-c", sb.policy, NULL);
	cr_expect_eq(r->status, 0, "report -c: %d %s", r->status, r->err);
	cr_expect(strstr(r->out, "\"assignments\":2"), "report -c read another log: %s %s", r->out, r->err);
	cr_expect(strstr(r->out, "\"range_lo\":61000"), "report -c's ranges: %s", r->out);
	free(r);
	sandbox_cleanup(&sb);
}

/* portfence ARGV... (NULL-terminated, "LOG" standing for log) with env. */
static void tool_argv(struct run_result *r, char *const env[], const char *log, const char *const argv[])
{
	char *full[16] = {(char *)build_path("portfence")};
	for (int i = 0; i < 14 && argv[i]; i++)
		full[i + 1] = strcmp(argv[i], "LOG") == 0 ? (char *)log : (char *)argv[i];
	run_program(r, full, NULL, env);
}

/* report and who read a policy for its ranges, rules and apps: one named
 * (-c, or PORTFENCE_CONFIG) that cannot be used is said, FILE:LINE, and
 * exit 1, as explain and status do: never a report that quietly lacks
 * it.  The default policy, when there is none, leaves the range out;
 * when there is one, it is judged as a named one. */
Test(cli, report_and_who_say_the_errors_of_their_policy)
{
	struct sandbox sb;
	char text[1024], invalid[192], fifo[192], env_invalid[256], env_none[] = "PORTFENCE_CONFIG=/nonexistent.conf";
	sandbox_init(&sb, "apps = ( { name = \"a\"; range = [ 61000, 61099 ]; } );");
	int n = record(text, sizeof(text), time(NULL) - 60, "a", 61001);
	write_file(sb.log, text, (size_t)n);
	static const char broken[] = "version = 1;\napps = ( { name = \"a\"; range = [ 61099, 61000 ]; } );\n";
	snprintf(invalid, sizeof(invalid), "%s/invalid.conf", sb.dir);
	write_file(invalid, broken, sizeof(broken) - 1);
	snprintf(fifo, sizeof(fifo), "%s/fifo.conf", sb.dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	snprintf(env_invalid, sizeof(env_invalid), "PORTFENCE_CONFIG=%s", invalid);
	char *by_env_invalid[] = {env_invalid, NULL}, *by_env_none[] = {env_none, NULL};
	char invalid_line[256];
	snprintf(invalid_line, sizeof(invalid_line), "%s:2: range [ 61099, 61000 ] has lo > hi", invalid);

	static const char *const commands_of[][8] = {
		{"report", "POLICY", "LOG"},
		{"report", "--json", "POLICY", "LOG"},
		{"report", "--suggest", "POLICY", "LOG"},
		{"who", "127.0.0.1:61001", "POLICY"},
		{"who", "127.0.0.1:61001", "--at", "now", "POLICY", "LOG"},
	};
	struct {
		const char *c;		/* -c's argument, or NULL */
		char **env;
		const char *said;	/* a line stderr must hold */
	} policies[] = {
		{"/nonexistent.conf", NULL, "/nonexistent.conf"},
		{invalid, NULL, invalid_line},
		{fifo, NULL, fifo},
		{NULL, by_env_invalid, invalid_line},
		{NULL, by_env_none, "/nonexistent.conf"},
	};
	struct run_result *r = result();
	for (size_t c = 0; c < sizeof(commands_of) / sizeof(*commands_of); c++)
		for (size_t p = 0; p < sizeof(policies) / sizeof(*policies); p++) {
			const char *argv[12];
			char what[512] = "";
			int k = 0;
			for (int i = 0; commands_of[c][i]; i++) {
				if (strcmp(commands_of[c][i], "POLICY") != 0)
					argv[k++] = commands_of[c][i];
				else if (policies[p].c) {
					argv[k++] = "-c";
					argv[k++] = policies[p].c;
				}
			}
			argv[k] = NULL;
			for (int i = 0; i < k; i++)
				snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s ", argv[i]);
			if (policies[p].env)
				snprintf(what + strlen(what), sizeof(what) - strlen(what), "(%s)", policies[p].env[0]);
			time_t started = time(NULL);
			tool_argv(r, policies[p].env, sb.log, argv);
			cr_expect_eq(r->status, 1, "%s: exit %d\n%s%s", what, r->status, r->out, r->err);
			cr_expect(strstr(r->err, policies[p].said), "%s: '%s' not said:\n%s", what, policies[p].said, r->err);
			cr_expect_str_eq(r->out, "", "%s printed a result:\n%s", what, r->out);
			cr_expect_leq(time(NULL) - started, 5, "%s waited on the FIFO", what);
		}

	/* No policy named and none at /etc/portfence.conf: the range is left
	 * out, never guessed. */
	default_policy(NULL);
	static const char *const report_only[] = {"report", "LOG", NULL};
	tool_argv(r, NULL, sb.log, report_only);
	cr_expect_eq(r->status, 0, "report, no default policy: %d\n%s", r->status, r->err);
	cr_expect(strstr(r->out, "(range unknown"), "report, no default policy:\n%s", r->out);
	static const char *const who_now[] = {"who", "127.0.0.1:61001", NULL};
	tool_argv(r, NULL, sb.log, who_now);
	cr_expect_eq(r->status, 1, "who, no default policy: %d\n%s", r->status, r->err);
	cr_expect(strstr(r->out, "no socket holds local port 61001"), "who, no default policy:\n%s", r->out);
	cr_expect_str_eq(r->err, "", "who, no default policy:\n%s", r->err);

	/* The default policy, there but invalid: its errors, exit 1. */
	default_policy(broken);
	for (int i = 0; i < 2; i++) {
		tool_argv(r, NULL, sb.log, i ? who_now : report_only);
		cr_expect_eq(r->status, 1, "%s, an invalid default policy: %d\n%s%s", i ? "who" : "report", r->status,
			     r->out, r->err);
		cr_expect(strstr(r->err, "/etc/portfence.conf:2: range [ 61099, 61000 ] has lo > hi"),
			  "%s, an invalid default policy:\n%s", i ? "who" : "report", r->err);
		cr_expect_str_eq(r->out, "", "%s, an invalid default policy:\n%s", i ? "who" : "report", r->out);
	}
	/* ... which a named policy stands in for. */
	static const char *const report_named[] = {"report", "--json", "-c", "POLICY", "LOG", NULL};
	const char *argv[6];
	memcpy(argv, report_named, sizeof(argv));
	argv[3] = sb.policy;
	tool_argv(r, NULL, sb.log, argv);
	cr_expect_eq(r->status, 0, "report -c, an invalid default policy: %d\n%s", r->status, r->err);
	cr_expect(strstr(r->out, "\"range_lo\":61000"), "%s", r->out);
	free(r);
	sandbox_cleanup(&sb);
}

/* report --against POLICY2 counts the assignments outside POLICY2's
 * range out of all the app's: 3 assignments in 61000-61002, of which none,
 * one or all three fall outside the new range. */
Test(cli, report_against_counts_outside_of_all_assignments)
{
	struct sandbox sb;
	char text[2048], other[192], line[256];
	sandbox_init(&sb, "apps = ( { name = \"a\"; range = [ 61000, 61099 ]; } );");
	size_t n = 0;
	for (unsigned i = 0; i < 3; i++)
		n += (size_t)record(text + n, sizeof(text) - n, time(NULL) - 60, "a", 61000 + i);
	write_file(sb.log, text, n);
	snprintf(other, sizeof(other), "%s/other.conf", sb.dir);
	static const struct {
		unsigned lo, hi;
		const char *said;
		int ports, outside;
	} cases[] = {
		{61000, 61199, "0 (0 of 3 assignments)", 0, 0},
		{61001, 61099, "1 (1 of 3 assignments)", 1, 1},
		{62000, 62099, "3 (3 of 3 assignments)", 3, 3},
	};
	struct run_result *r = result();
	for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		snprintf(text, sizeof(text), "version = 1;\napps = ( { name = \"a\"; range = [ %u, %u ]; } );\n",
			 cases[c].lo, cases[c].hi);
		write_file(other, text, strlen(text));
		tool(r, "report", "--against", other, "-c", sb.policy, sb.log);
		cr_expect_eq(r->status, 0, "%s", r->err);
		snprintf(line, sizeof(line), "  ports outside the new range %u-%u: %s\n", cases[c].lo, cases[c].hi,
			 cases[c].said);
		cr_expect(strstr(r->out, line), "expected \"%s\" in:\n%s", line, r->out);
		tool(r, "report", "--against", other, "--json", "-c", sb.policy, sb.log);
		json_t *root = json_loads(r->out, 0, NULL), *outside = json_object_get(app_entry(root, "a"), "outside_range");
		cr_assert_not_null(outside, "%s", r->out);
		cr_expect_eq(json_integer_value(json_object_get(outside, "ports")), cases[c].ports, "%s", r->out);
		cr_expect_eq(json_integer_value(json_object_get(outside, "assignments")), cases[c].outside, "%s", r->out);
		cr_expect_eq(json_integer_value(json_object_get(outside, "assignments_total")), 3, "%s", r->out);
		json_decref(root);
	}
	/* One assignment in all: "1 of 1 assignment". */
	n = (size_t)record(text, sizeof(text), time(NULL) - 60, "a", 61000);
	write_file(sb.log, text, n);
	tool(r, "report", "--against", other, "-c", sb.policy, sb.log);
	cr_expect(strstr(r->out, ": 1 (1 of 1 assignment)\n"), "%s", r->out);
	free(r);
	sandbox_cleanup(&sb);
}

/* SPEC: records lost before they could be written are reported by one
 * error record with "lost":N.  report sums them per app ("records lost
 * N", and "lost" in --json), whichever reader takes the line. */
Test(cli, report_sums_the_records_lost)
{
	struct temp_dir temp;
	char text[4096];
	default_policy(NULL);
	temp_dir_make(&temp, "lost");
	size_t n = (size_t)record(text, sizeof(text), time(NULL) - 60, "a", 61000);
	n += (size_t)record(text + n, sizeof(text) - n, time(NULL) - 60, "b", 61100);
#define LOST_RECORD(app, tail)                                                                             \
	"{\"ts\":\"2020-01-01T00:00:00.000001Z\",\"event\":\"error\",\"app\":\"" app "\",\"pid\":7,"            \
	"\"exe\":\"/bin/x\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"0.0.0.0:0\","                   \
	"\"remote\":\"0.0.0.0:0\",\"algorithm\":\"\",\"attempts\":0,\"result\":\"ok\","                          \
	"\"reason\":\"records lost: the ring was full\"" tail "}\n"
	static const char lost[] =
		LOST_RECORD("a", ",\"lost\":40")
		/* non-ASCII: read by jansson, not the scanner */
		LOST_RECORD("a", ",\"comm\":\"caf\u00e9\",\"lost\":2")
		LOST_RECORD("a", "")			/* an error that lost nothing */
		LOST_RECORD("a", ",\"lost\":\"3\"")	/* no integer: not counted */
		LOST_RECORD("b", ",\"lost\":1");
#undef LOST_RECORD
	memcpy(text + n, lost, sizeof(lost) - 1);
	n += sizeof(lost) - 1;
	write_file(temp.log, text, n);

	struct run_result *r = result();
	tool(r, "report", temp.log);
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "app a\n  assignments 1, distinct ports 1 (range unknown: no policy names this app)\n"
				 "  denials 0, errors 4, records lost 42, audit records 0"), "%s", r->out);
	cr_expect(strstr(r->out, "app b\n  assignments 1, distinct ports 1 (range unknown: no policy names this app)\n"
				 "  denials 0, errors 1, records lost 1, audit records 0"), "%s", r->out);
	tool(r, "report", "--json", temp.log);
	json_t *root = json_loads(r->out, 0, NULL);
	cr_assert_not_null(root, "%s", r->out);
	cr_expect_eq(json_integer_value(json_object_get(app_entry(root, "a"), "lost")), 42, "%s", r->out);
	cr_expect_eq(json_integer_value(json_object_get(app_entry(root, "a"), "errors")), 4, "%s", r->out);
	cr_expect_eq(json_integer_value(json_object_get(app_entry(root, "b"), "lost")), 1, "%s", r->out);
	json_decref(root);
	/* none lost: 0, said */
	tool(r, "report", "--json", "--since", "1h", temp.log);
	root = json_loads(r->out, 0, NULL);
	cr_assert_not_null(root, "%s", r->out);
	json_t *lost_a = json_object_get(app_entry(root, "a"), "lost");
	cr_expect(json_is_integer(lost_a) && json_integer_value(lost_a) == 0, "%s", r->out);
	json_decref(root);
	free(r);
	temp_dir_remove(&temp);
}

Test(cli, since_and_until_forms)
{
	struct temp_dir temp;
	char text[8192];
	time_t now = time(NULL), midnight = now - now % 86400;
	/* Ten minutes, three hours, yesterday just after midnight, three
	 * days back. */
	time_t at[] = {now - 600, now - 3 * 3600, midnight - 86400 + 1, now - 3 * 86400};
	size_t n = 0;
	temp_dir_make(&temp, "since");
	for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++)
		n += (size_t)record(text + n, sizeof(text) - n, at[i], "a", 61000 + (unsigned)i);
	write_file(temp.log, text, n);

	struct {
		const char *option, *value;
		time_t bound;
	} cases[] = {
		{"--since", "1h", now - 3600},	     {"--since", "90m", now - 5400},
		{"--since", "4h", now - 4 * 3600},    {"--since", "2d", now - 2 * 86400},
		{"--since", "7200s", now - 7200},     {"--since", "today", midnight},
		{"--since", "yesterday", midnight - 86400},
		{"--until", "today", midnight},	     {"--until", "1h", now - 3600},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		long expected = 0;
		for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++)
			expected += cases[c].option[2] == 's' ? at[i] >= cases[c].bound : at[i] < cases[c].bound;
		long got = report_count(temp.log, NULL, cases[c].option, cases[c].value, NULL);
		cr_expect_eq(got, expected, "%s %s: %ld records, expected %ld", cases[c].option, cases[c].value, got,
			     expected);
	}
	/* ISO 8601: a date, a UTC time, an offset. */
	char day[32], stamp[32], offset[40];
	struct tm tm;
	time_t yesterday = midnight - 86400;
	gmtime_r(&yesterday, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	cr_expect_eq(report_count(temp.log, NULL, "--since", day, NULL), 3, "--since %s", day);
	time_t two_hours = now - 7200;
	gmtime_r(&two_hours, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cr_expect_eq(report_count(temp.log, NULL, "--since", stamp, NULL), 1, "--since %s", stamp);
	time_t local = two_hours + 3600;	/* the same instant, written at +01:00 */
	gmtime_r(&local, &tm);
	strftime(offset, sizeof(offset), "%Y-%m-%dT%H:%M:%S+01:00", &tm);
	cr_expect_eq(report_count(temp.log, NULL, "--since", offset, NULL), 1, "--since %s", offset);
	/* Yesterday's: counted from the stamps, as above (in the first three
	 * hours after midnight UTC, ten minutes and three hours ago are
	 * yesterday too). */
	long yesterdays = 0;
	for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++)
		yesterdays += at[i] >= midnight - 86400 && at[i] < midnight;
	cr_expect_eq(report_count(temp.log, NULL, "--since", "yesterday", "--until", "today", NULL), yesterdays,
		     "yesterday's records");

	struct run_result *r = result();
	tool(r, "report", "--since", "soon", temp.log);
	cr_expect_eq(r->status, 2, "--since soon: %d", r->status);
	tool(r, "report", "--until", "3x", temp.log);
	cr_expect_eq(r->status, 2, "--until 3x: %d", r->status);
	free(r);
	temp_dir_remove(&temp);
}

/* A date the calendar lacks is a usage error that names the argument,
 * never a day the clock rolls over to (2026-02-30 is no 2026-03-02). */
Test(cli, impossible_dates_are_usage_errors)
{
	struct temp_dir temp;
	char text[512];
	default_policy(NULL);
	temp_dir_make(&temp, "dates");
	write_file(temp.log, text, (size_t)record(text, sizeof(text), time(NULL) - 60, "a", 61000));
	static const char *const impossible[] = {"2026-02-30", "2026-02-29", "2026-04-31", "2026-02-30T10:00:00Z",
						 "2026-04-31 10:00", "2026-13-01", "2026-12-31T23:59:60Z"};
	struct run_result *r = result();
	for (size_t i = 0; i < sizeof(impossible) / sizeof(*impossible); i++)
		for (int c = 0; c < 3; c++) {
			static const char *const options[] = {"--since", "--until", "--at"};
			char named[64];
			if (c < 2)
				tool(r, "report", (char *)options[c], (char *)impossible[i], temp.log);
			else
				tool(r, "who", "127.0.0.1:61000", "--at", (char *)impossible[i], temp.log);
			cr_expect_eq(r->status, 2, "%s %s: exit %d\n%s", options[c], impossible[i], r->status, r->out);
			snprintf(named, sizeof(named), "%s '%s'", options[c], impossible[i]);
			cr_expect(strstr(r->err, named), "%s %s: the argument is not named:\n%s", options[c],
				  impossible[i], r->err);
			cr_expect_eq(count_lines_starting(r->err, "portfence: "), 1, "%s", r->err);
			cr_expect_str_eq(r->out, "", "%s %s", options[c], impossible[i]);
		}
	/* The days that are. */
	static const char *const possible[] = {"2028-02-29", "2026-02-28", "2026-04-30T23:59:59Z", "2026-12-31"};
	for (size_t i = 0; i < sizeof(possible) / sizeof(*possible); i++) {
		tool(r, "report", "--since", (char *)possible[i], temp.log);
		cr_expect_eq(r->status, 0, "--since %s: exit %d\n%s", possible[i], r->status, r->err);
	}
	free(r);
	temp_dir_remove(&temp);
}

/* who --at TIME: a record at TIME exactly is at or before it, one later
 * in the same second is after it; "at" in --json is in a record's form.
 * A TIME with a fraction is taken to the microsecond, by report too. */
Test(cli, who_at_compares_to_the_microsecond)
{
	struct temp_dir temp;
	char text[2048];
	default_policy(NULL);
	temp_dir_make(&temp, "who-at");
	static const char *const stamps[] = {"2026-12-06T03:06:10.000000Z", "2026-12-06T03:06:30.000000Z",
					     "2026-12-06T03:06:30.565063Z"};
	size_t n = 0;
	for (int i = 0; i < 3; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
				      "{\"ts\":\"%s\",\"event\":\"assign\",\"app\":\"a\",\"pid\":%d,\"exe\":\"/bin/x\","
				      "\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"127.0.0.1:61000\","
				      "\"remote\":\"127.0.0.1:80\",\"algorithm\":\"random\",\"attempts\":1,\"result\":\"ok\"}\n",
				      stamps[i], i + 1);
	write_file(temp.log, text, n);

	static const struct {
		const char *at, *json_at;
		int pid, reused_by;	/* 0: none */
	} cases[] = {
		{"2026-12-06T03:06:29Z", "2026-12-06T03:06:29.000000Z", 1, 2},
		{"2026-12-06T03:06:30Z", "2026-12-06T03:06:30.000000Z", 2, 3},
		{"2026-12-06T04:06:30+01:00", "2026-12-06T03:06:30.000000Z", 2, 3},
		{"2026-12-06T03:06:30.565062Z", "2026-12-06T03:06:30.565062Z", 2, 3},
		{"2026-12-06T03:06:30.565063Z", "2026-12-06T03:06:30.565063Z", 3, 0},
		{"2026-12-06T03:06:30.6Z", "2026-12-06T03:06:30.600000Z", 3, 0},
		{"2026-12-06T03:06:31Z", "2026-12-06T03:06:31.000000Z", 3, 0},
	};
	struct run_result *r = result();
	for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		tool(r, "who", "127.0.0.1:61000", "--at", (char *)cases[c].at, "--json", temp.log);
		cr_expect_eq(r->status, 0, "--at %s: exit %d %s", cases[c].at, r->status, r->err);
		json_t *root = json_loads(r->out, 0, NULL);
		cr_assert_not_null(root, "--at %s: %s", cases[c].at, r->out);
		json_t *at = json_object_get(root, "at"), *next = json_object_get(root, "reused_by");
		cr_expect_str_eq(json_string_value(at) ? json_string_value(at) : "", cases[c].json_at, "--at %s: %s",
				 cases[c].at, r->out);
		cr_expect_eq(json_integer_value(json_object_get(json_object_get(root, "record"), "pid")), cases[c].pid,
			     "--at %s: %s", cases[c].at, r->out);
		cr_expect_eq(json_integer_value(json_object_get(next, "pid")), cases[c].reused_by, "--at %s: %s",
			     cases[c].at, r->out);
		json_decref(root);
	}
	tool(r, "who", "127.0.0.1:61000", "--at", "2026-12-06T03:06:30Z", temp.log);
	cr_expect(strstr(r->out, "at 2026-12-06T03:06:30Z: tcp 127.0.0.1:61000 was assigned at "
				 "2026-12-06T03:06:30.000000Z to pid 2"), "%s", r->out);
	cr_expect(strstr(r->out, "reused at 2026-12-06T03:06:30.565063Z by pid 3"), "%s", r->out);
	free(r);
	/* report's --since and --until, to the microsecond as well */
	cr_expect_eq(report_count(temp.log, NULL, "--since", "2026-12-06T03:06:30Z", NULL), 2);
	cr_expect_eq(report_count(temp.log, NULL, "--since", "2026-12-06T03:06:30.5Z", NULL), 1);
	cr_expect_eq(report_count(temp.log, NULL, "--until", "2026-12-06T03:06:30Z", NULL), 1);
	cr_expect_eq(report_count(temp.log, NULL, "--until", "2026-12-06T03:06:30.565064Z", NULL), 3);
	temp_dir_remove(&temp);
}

/* A report with nothing to show says so, and what it looked for: not
 * a bare "malformed lines skipped: 0". */
Test(cli, report_of_nothing_says_so)
{
	struct temp_dir temp;
	char empty[128], text[512], expected[256];
	default_policy(NULL);
	temp_dir_make(&temp, "nothing");
	snprintf(empty, sizeof(empty), "%s/empty.jsonl", temp.dir);
	size_t n = (size_t)record(text, sizeof(text), time(NULL) - 60, "a", 61000);
	write_file(temp.log, text, n);
	write_file(empty, "", 0);

	struct run_result *r = result();
	tool(r, "report", empty);
	cr_expect_eq(r->status, 0, "%s", r->err);
	snprintf(expected, sizeof(expected), "no records in %s\n", empty);
	cr_expect(strstr(r->out, expected), "report of an empty log:\n%s", r->out);
	tool(r, "report", "--app", "b", temp.log);
	snprintf(expected, sizeof(expected), "no records of app b in %s\n", temp.log);
	cr_expect(strstr(r->out, expected), "report --app b:\n%s", r->out);
	tool(r, "report", "--app", "a", temp.log);
	cr_expect(!strstr(r->out, "no records"), "report --app a:\n%s", r->out);
	free(r);
	temp_dir_remove(&temp);
}

/* A log that is a directory cannot be read: one line naming it and why,
 * exit 1; never "no records in /tmp". */
Test(cli, a_directory_is_no_log)
{
	char dir[] = "/tmp/pf-dirlog-XXXXXX", line[128];
	default_policy(NULL);
	cr_assert_not_null(mkdtemp(dir));
	snprintf(line, sizeof(line), "portfence: %s: Is a directory\n", dir);
	struct run_result *r = result();
	for (int i = 0; i < 4; i++) {
		static const char *const what[] = {"report", "report --json", "report --suggest", "who --at"};
		if (i == 0)
			tool(r, "report", dir);
		else if (i == 1)
			tool(r, "report", "--json", dir);
		else if (i == 2)
			tool(r, "report", "--suggest", dir);
		else
			tool(r, "who", "127.0.0.1:61000", "--at", "now", dir);
		cr_expect_eq(r->status, 1, "%s DIR: exit %d\n%s", what[i], r->status, r->out);
		cr_expect_str_eq(r->err, line, "%s DIR", what[i]);
		cr_expect_str_eq(r->out, "", "%s DIR", what[i]);
	}
	char *env[] = {NULL, NULL}, log_env[128];
	snprintf(log_env, sizeof(log_env), "PORTFENCE_LOG=%s", dir);
	env[0] = log_env;
	tool_env(r, env, "report", NULL);
	cr_expect_eq(r->status, 1, "report, PORTFENCE_LOG a directory: exit %d\n%s", r->status, r->out);
	cr_expect_str_eq(r->err, line);
	free(r);
	rmdir(dir);
}

Test(cli, report_text_escapes_control_bytes)
{
	struct temp_dir temp;
	char text[2048];
	default_policy(NULL);
	temp_dir_make(&temp, "esc");
	int n = record(text, sizeof(text), time(NULL), "evil\\u001b]0;owned\\u0007\\u001b[31m\\nfake line\\r", 61000);
	write_file(temp.log, text, (size_t)n);
	struct run_result *r = result();
	tool(r, "report", temp.log);
	cr_expect_eq(r->status, 0, "%s", r->err);
	for (const char *p = r->out; *p; p++)
		cr_expect((unsigned char)*p >= 0x20 || *p == '\n', "raw control byte 0x%02x in:\n%s", *p, r->out);
	cr_expect(!strstr(r->out, "\nfake line"), "the name's newline starts a line:\n%s", r->out);
	cr_expect(strstr(r->out, "evil"), "%s", r->out);
	free(r);
	temp_dir_remove(&temp);
}

Test(cli, report_counts_a_nul_line_alone)
{
	struct temp_dir temp;
	char text[4096];
	temp_dir_make(&temp, "nul");
	size_t n = (size_t)record(text, sizeof(text), time(NULL), "a", 61000);
	static const char damaged[] = "{\"ts\":\"2026-11-21T10:00:00Z\",\"ev\0ent\":\"assign\"}\n";
	memcpy(text + n, damaged, sizeof(damaged) - 1);
	n += sizeof(damaged) - 1;
	n += (size_t)record(text + n, sizeof(text) - n, time(NULL), "a", 61001);
	/* A NUL at the very start of a line, then a good record. */
	text[n++] = '\0';
	text[n++] = '\n';
	n += (size_t)record(text + n, sizeof(text) - n, time(NULL), "a", 61002);
	write_file(temp.log, text, n);
	long malformed = -1;
	long count = report_count(temp.log, &malformed, NULL);
	cr_expect_eq(count, 3, "records counted: %ld of 3", count);
	cr_expect_eq(malformed, 2, "malformed lines: %ld, expected 2", malformed);
	temp_dir_remove(&temp);
}

/* ---- explain ---- */

#define EXPLAIN_APPS                                                                                   \
	"apps = ( { name = \"t\"; range = [ 63000, 63015 ];\n"                                         \
	"  match = { exe = [ \"*/table-client\" ]; };\n"                                                \
	"  deny = [ \"127.0.0.2/32\" ];\n"                                                             \
	"  allow = [ \"127.0.0.0/8\",\n"                                                              \
	"            \"[::1]\" ]; },\n"                                                               \
	"  { name = \"o\"; range = [ 63100, 63115 ]; algorithm = \"sequential\"; } );"

static json_t *explain_json(struct run_result *r, char *const env[], const char *policy, ...)
{
	char *argv[32];
	int n = 0;
	va_list ap;
	argv[n++] = (char *)build_path("portfence");
	argv[n++] = "explain";
	argv[n++] = "--json";
	argv[n++] = "-c";
	argv[n++] = (char *)policy;
	va_start(ap, policy);
	for (char *arg; n < 31 && (arg = va_arg(ap, char *));)
		argv[n++] = arg;
	va_end(ap);
	argv[n] = NULL;
	run_program(r, argv, NULL, env);
	cr_assert_eq(r->status, 0, "explain: %d %s", r->status, r->err);
	json_error_t error;
	json_t *root = json_loads(r->out, 0, &error);
	cr_assert_not_null(root, "explain --json printed: %s", r->out);
	return root;
}

static const char *str(json_t *object, const char *key)
{
	const char *value = json_string_value(json_object_get(object, key));
	return value ? value : "";
}

Test(explain_command, which_app_and_why)
{
	struct sandbox sb;
	struct run_result *r = result();
	char client[PATH_MAX];
	sandbox_init(&sb, EXPLAIN_APPS);
	cr_assert_not_null(realpath(build_path("table-client"), client));

	json_t *j = explain_json(r, NULL, sb.policy, "-a", "o", NULL);
	cr_expect_str_eq(str(j, "app"), "o");
	cr_expect_str_eq(str(j, "selected_by"), "-a");
	cr_expect_eq(json_integer_value(json_array_get(json_object_get(j, "range"), 0)), 63100);
	cr_expect_eq(json_integer_value(json_array_get(json_object_get(j, "range"), 1)), 63115);
	cr_expect_str_eq(str(j, "algorithm"), "sequential");
	json_decref(j);

	j = explain_json(r, NULL, sb.policy, "--", client, "tcp4", "connect", NULL);
	cr_expect_str_eq(str(j, "app"), "t");
	cr_expect_str_eq(str(j, "selected_by"), "match");
	cr_expect(strstr(str(j, "why"), "*/table-client"), "why: %s", str(j, "why"));
	cr_expect_str_eq(str(j, "algorithm"), "double-hash");
	json_decref(j);

	char *forced[] = {"PORTFENCE_APP=o", NULL};
	j = explain_json(r, forced, sb.policy, "--", client, NULL);
	cr_expect_str_eq(str(j, "app"), "o");
	cr_expect_str_eq(str(j, "selected_by"), "PORTFENCE_APP");
	json_decref(j);

	j = explain_json(r, NULL, sb.policy, "--", "true", NULL);
	cr_expect(json_is_null(json_object_get(j, "app")), "true matched %s", str(j, "app"));
	cr_expect_str_eq(str(j, "selected_by"), "default");
	json_decref(j);

	/* The text form says the same. */
	char *argv[] = {(char *)build_path("portfence"), "explain", "-c", sb.policy, "--", client, NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "t") && strstr(r->out, "63000-63015") && strstr(r->out, "double-hash") &&
			  strstr(r->out, "*/table-client"),
		  "explain text:\n%s", r->out);

	/* A running process, by pid: its PORTFENCE_APP is read. */
	char *sleeper_argv[] = {"sleep", "30", NULL};
	pid_t sleeper = spawn_under(&sb, "o", sleeper_argv, "/dev/null");
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)sleeper);
	for (int i = 0; i < 100; i++) {
		char exe[PATH_MAX], link[64];
		snprintf(link, sizeof(link), "/proc/%d/exe", (int)sleeper);
		ssize_t got = readlink(link, exe, sizeof(exe) - 1);
		if (got > 0 && (exe[got] = '\0', strstr(exe, "sleep")))
			break;
		usleep(20000);
	}
	j = explain_json(r, NULL, sb.policy, "--pid", pid, NULL);
	cr_expect_str_eq(str(j, "app"), "o");
	cr_expect_str_eq(str(j, "selected_by"), "PORTFENCE_APP");
	cr_expect_eq(json_object_get(json_object_get(j, "shim"), "reaches"), json_true(),
		     "a process started by portfence run holds the shim: %s", r->out);
	json_decref(j);
	kill(sleeper, SIGKILL);
	wait_child(sleeper);

	/* Errors: no such app, no such pid, two subjects. */
	char *bad1[] = {(char *)build_path("portfence"), "explain", "-c", sb.policy, "-a", "nosuch", NULL};
	run_program(r, bad1, NULL, NULL);
	cr_expect_eq(r->status, 1, "-a nosuch: %d", r->status);
	char *bad2[] = {(char *)build_path("portfence"), "explain", "-c", sb.policy, "-a", "t", "--pid", "1", NULL};
	run_program(r, bad2, NULL, NULL);
	cr_expect_eq(r->status, 2, "-a and --pid: %d", r->status);
	free(r);
	sandbox_cleanup(&sb);
}

Test(explain_command, backends_for_static_and_dynamic_programs)
{
	struct sandbox sb;
	struct run_result *r = result();
	char cgroup_mount[PATH_MAX];
	bool bpf_here = bpf_machine_missing(cgroup_mount, sizeof(cgroup_mount)) == NULL;
	sandbox_init(&sb, EXPLAIN_APPS);

	json_t *j = explain_json(r, NULL, sb.policy, "-a", "t", "--", build_path("static-hello"), NULL);
	json_t *shim = json_object_get(j, "shim"), *bpf = json_object_get(j, "bpf");
	cr_expect_eq(json_object_get(shim, "reaches"), json_false(), "the shim reaches a static binary: %s", r->out);
	cr_expect(strstr(str(shim, "why"), "static"), "shim why: %s", str(shim, "why"));
	cr_expect_eq(json_object_get(bpf, "reaches"), bpf_here ? json_true() : json_false(), "%s", r->out);
	json_decref(j);

	j = explain_json(r, NULL, sb.policy, "-a", "t", "--", build_path("table-client"), NULL);
	cr_expect_eq(json_object_get(json_object_get(j, "shim"), "reaches"), json_true(), "%s", r->out);
	json_decref(j);

	/* Not root: only the shim. */
	chmod(sb.policy, 0644);
	tool_as_nobody(r, "explain", "--json", "-c", sb.policy, "-a", "t", "--", build_path_for_others("static-hello"),
		       NULL);
	cr_expect_eq(r->status, 0, "as nobody: %d %s", r->status, r->err);
	j = json_loads(r->out, 0, NULL);
	cr_assert_not_null(j, "%s", r->out);
	bpf = json_object_get(j, "bpf");
	cr_expect_eq(json_object_get(bpf, "reaches"), json_false(), "%s", r->out);
	cr_expect(strstr(str(bpf, "why"), "root"), "bpf why as nobody: %s", str(bpf, "why"));
	json_decref(j);
	free(r);
	sandbox_cleanup(&sb);
}

/* A process of an attached cgroup: the BPF backend reaches it, the shim
 * does not (it was not started with the shim), and its app is the one
 * attached. */
Test(explain_command, pid_in_an_attached_cgroup, .timeout = 60)
{
	char cgroup_mount[PATH_MAX], full[PATH_MAX + 128], procs[PATH_MAX + 160], relative[64], pid_text[16];
	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct sandbox sb;
	struct run_result *r = result();
	sandbox_init(&sb, EXPLAIN_APPS);
	snprintf(relative, sizeof(relative), "pf-cli-explain-%d", (int)getpid());
	/* Attached above: the process sits in a child cgroup. */
	snprintf(full, sizeof(full), "%s/%s", cgroup_mount, relative);
	cr_assert_eq(mkdir(full, 0755), 0, "%s: %s", full, strerror(errno));
	strcat(full, "/leaf");
	cr_assert_eq(mkdir(full, 0755), 0, "%s: %s", full, strerror(errno));
	tool(r, "attach", "-c", sb.policy, "-a", "o", relative);
	cr_assert_eq(r->status, 0, "attach: %s", r->err);
	pid_t sleeper = fork();
	if (sleeper == 0) {
		execlp("sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", full);
	snprintf(pid_text, sizeof(pid_text), "%d", (int)sleeper);
	FILE *f = fopen(procs, "w");
	cr_assert_not_null(f);
	fputs(pid_text, f);
	cr_assert_eq(fclose(f), 0, "moving %d into %s: %s", (int)sleeper, full, strerror(errno));

	json_t *j = explain_json(r, NULL, sb.policy, "--pid", pid_text, NULL);
	cr_expect_str_eq(str(j, "app"), "o", "%s", r->out);
	cr_expect_str_eq(str(j, "selected_by"), "cgroup", "%s", r->out);
	cr_expect_eq(json_object_get(json_object_get(j, "bpf"), "reaches"), json_true(), "%s", r->out);
	cr_expect(strstr(str(json_object_get(j, "bpf"), "why"), relative), "%s", r->out);
	cr_expect_eq(json_object_get(json_object_get(j, "shim"), "reaches"), json_false(), "%s", r->out);
	json_decref(j);

	kill(sleeper, SIGKILL);
	wait_child(sleeper);
	tool(r, "detach", "-a", "o", relative);
	cr_expect_eq(r->status, 0, "detach: %s", r->err);
	rmdir(full);
	*strrchr(full, '/') = '\0';
	rmdir(full);
	free(r);
	sandbox_cleanup(&sb);
}

/* explain --to against a real client under each backend: its verdict is
 * what the program sees, and the rule it names is the policy's line. */
static void client_result(struct run_result *r, const struct sandbox *sb, bool bpf, const char *to,
			  const char *port, char *out, size_t len)
{
	char *argv[16];
	int n = 0;
	argv[n++] = (char *)build_path("portfence");
	argv[n++] = "run";
	if (bpf)
		argv[n++] = "--bpf";
	char *const rest[] = {"-c", (char *)sb->policy, "-a", "t", "--", (char *)build_path("table-client"),
			      "tcp4", "connect", "0", (char *)to, (char *)port, NULL};
	memcpy(argv + n, rest, sizeof(rest));
	run_program(r, argv, NULL, NULL);
	long got_port = 0;
	char step[32];
	out[0] = '\0';
	if (sscanf(r->out, "%ld %31s %31s", &got_port, out, step) != 3)
		snprintf(out, len, "status %d: %.40s %.60s", r->status, r->out, r->err);
}

Test(explain_command, verdict_and_rule_match_both_backends, .timeout = 120)
{
	struct sandbox sb;
	struct server one, two, three;
	struct run_result *r = result();
	char cgroup_mount[PATH_MAX];
	const char *missing = bpf_machine_missing(cgroup_mount, sizeof(cgroup_mount));
	sandbox_init(&sb, EXPLAIN_APPS);
	server_start(&one, "127.0.0.1", SERVE_GREET_CLOSE);
	server_start(&two, "127.0.0.2", SERVE_GREET_CLOSE);
	server_start(&three, "127.0.0.3", SERVE_GREET_CLOSE);

	struct {
		struct server *srv;
		const char *addr, *verdict, *rule, *result;
	} cases[] = {
		{&one, "127.0.0.1", "allow", "127.0.0.0/8", "OK"},
		{&two, "127.0.0.2", "deny", "127.0.0.2/32", "EPERM"},
		{&three, "127.0.0.3", "allow", "127.0.0.0/8", "OK"},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
		char to[64], port[8], seen[128];
		snprintf(port, sizeof(port), "%u", cases[c].srv->port);
		snprintf(to, sizeof(to), "%s:%s", cases[c].addr, port);
		json_t *j = explain_json(r, NULL, sb.policy, "-a", "t", "--to", to, NULL);
		cr_expect_str_eq(str(j, "verdict"), cases[c].verdict, "--to %s: %s", to, r->out);
		cr_expect(strstr(str(j, "rule"), cases[c].rule), "--to %s: rule '%s'", to, str(j, "rule"));
		cr_expect(strstr(str(j, "rule"), "policy.conf:"), "--to %s: rule without FILE:LINE '%s'", to,
			  str(j, "rule"));
		json_decref(j);
		client_result(r, &sb, false, cases[c].addr, port, seen, sizeof(seen));
		cr_expect_str_eq(seen, cases[c].result, "shim, %s: the client saw %s", to, seen);
		if (!missing) {
			client_result(r, &sb, true, cases[c].addr, port, seen, sizeof(seen));
			cr_expect_str_eq(seen, cases[c].result, "bpf, %s: the client saw %s", to, seen);
		}
	}
	/* The deny line is the policy's third line of apps (line 6 of the
	 * sandbox file: version, log, state_dir, then the apps). */
	json_t *j = explain_json(r, NULL, sb.policy, "-a", "t", "--to", "127.0.0.2:80", NULL);
	cr_expect(strstr(str(j, "rule"), "policy.conf:6"), "deny rule line: %s", str(j, "rule"));
	json_decref(j);
	j = explain_json(r, NULL, sb.policy, "-a", "t", "--to", "[::1]:80", NULL);
	cr_expect_str_eq(str(j, "verdict"), "allow", "%s", r->out);
	cr_expect(strstr(str(j, "rule"), "policy.conf:8"), "[::1] rule line: %s", str(j, "rule"));
	json_decref(j);
	j = explain_json(r, NULL, sb.policy, "-a", "t", "--to", "192.0.2.1:443", NULL);
	cr_expect_str_eq(str(j, "verdict"), "deny", "not in the allow list: %s", r->out);
	json_decref(j);
	if (missing)
		cr_log_warn("bpf half skipped: %s", missing);
	server_stop(&one);
	server_stop(&two);
	server_stop(&three);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- status as non-root ---- */

Test(cli, status_says_what_it_cannot_read, .timeout = 60)
{
	char cgroup_mount[PATH_MAX], full[PATH_MAX + 64], relative[64];
	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct sandbox sb;
	struct run_result *r = result();
	sandbox_init(&sb, "apps = ( { name = \"st\"; range = [ 62500, 62509 ]; } );");
	chmod(sb.policy, 0644);
	snprintf(relative, sizeof(relative), "pf-cli-status-%d", (int)getpid());
	snprintf(full, sizeof(full), "%s/%s", cgroup_mount, relative);
	cr_assert_eq(mkdir(full, 0755), 0, "%s: %s", full, strerror(errno));
	tool(r, "attach", "-c", sb.policy, "-a", "st", relative);
	cr_assert_eq(r->status, 0, "attach: %s", r->err);
	tool(r, "status", "--json", "-c", sb.policy);
	cr_expect(strstr(r->out, relative), "root sees the cgroup: %s", r->out);

	tool_as_nobody(r, "status", "--json", "-c", sb.policy, NULL);
	cr_expect(strstr(r->err, "/sys/fs/bpf") && strstr(r->err, "Permission denied"),
		  "status as nobody says nothing of what it could not read: exit %d, stderr '%s'", r->status, r->err);
	cr_expect(strstr(r->out, "\"app\":\"st\""), "status as nobody still reports: %s", r->out);

	tool(r, "detach", "-a", "st", relative);
	cr_expect_eq(r->status, 0, "detach: %s", r->err);
	rmdir(full);
	free(r);
	sandbox_cleanup(&sb);
}

Test(cli, status_says_whose_sockets_it_cannot_see, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result *r = result();
	char code[512], out[192];
	sandbox_init(&sb, "apps = ( { name = \"sp\"; range = [ 62520, 62529 ]; } );");
	chmod(sb.policy, 0644);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(out, sizeof(out), "%s/client.out", sb.dir);
	/* A root process holds a port of the range. */
	snprintf(code, sizeof(code),
		 "import socket, time\ns = socket.create_connection(('127.0.0.1', %u))\n"
		 "open('/proc/self/comm', 'w').write('pf\\x1b[2Jevil')\n"
		 "print(s.getsockname()[1], flush=True)\ntime.sleep(30)\n",
		 srv.port);
	char *client[] = {"python3", "-c", code, NULL};
	pid_t pid = spawn_under(&sb, "sp", client, out);
	char text[64] = "";
	for (int i = 0; i < 200 && !text[0]; i++) {
		usleep(20000);
		read_all(out, text, sizeof(text));
	}
	cr_assert(atoi(text) >= 62520 && atoi(text) <= 62529, "the client holds '%s'", text);
	tool(r, "status", "--json", "-c", sb.policy);
	cr_expect(strstr(r->out, "\"pid\":"), "root sees the process: %s", r->out);
	/* Its comm, chosen by the program, is text to escape. */
	tool(r, "status", "-c", sb.policy);
	cr_expect(strstr(r->out, "evil"), "%s", r->out);
	cr_expect(!strchr(r->out, '\x1b'), "status prints a raw escape sequence:\n%s", r->out);
	tool_as_nobody(r, "status", "--json", "-c", sb.policy, NULL);
	cr_expect(strstr(r->err, "/proc/PID/fd") && strstr(r->err, "Permission denied"),
		  "status as nobody hides that it could not see whose sockets they are: '%s'", r->err);
	kill(pid, SIGKILL);
	wait_child(pid);
	server_stop(&srv);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- run --bpf --user ---- */

Test(cli, run_bpf_user_drops_to_the_user_inside_the_cgroup, .timeout = 120)
{
	char cgroup_mount[PATH_MAX];
	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct sandbox sb;
	struct server srv;
	struct run_result *r = result();
	char script[16384], port[8];
	sandbox_init(&sb, "apps = ( { name = \"u\"; range = [ 62600, 62615 ]; } );");
	chmod(sb.policy, 0644);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(port, sizeof(port), "%u", srv.port);
	/* Who it runs as, where, whether it can move itself out (to the
	 * cgroup above, or the root), and a connect from the range. */
	snprintf(script, sizeof(script),
		 "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)\n"
		 "grep NoNewPrivs /proc/self/status\n"
		 "rel=$(sed -n 's/^0:://p' /proc/self/cgroup)\n"
		 "echo cgroup=$rel\n"
		 "for target in \"%s${rel%%/*}\" \"%s\"; do\n"
		 "  if echo $$ > \"$target/cgroup.procs\" 2>/dev/null; then echo escaped=$target; fi\n"
		 "done\n"
		 "[ \"$(sed -n 's/^0:://p' /proc/self/cgroup)\" = \"$rel\" ] && echo stayed\n"
		 "%s tcp4 connect 0 127.0.0.1 %s\n",
		 cgroup_mount, cgroup_mount, build_path_for_others("table-client"), port);
	char *argv[] = {(char *)build_path("portfence"), "run", "--bpf", "-c", sb.policy, "-a", "u", "--user",
			"nobody", "--", "sh", "-c", script, NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "run --bpf --user: %d %s", r->status, r->err);
	cr_expect(strstr(r->out, "uid=65534 gid=65534 groups=65534\n"), "identity:\n%s", r->out);
	cr_expect(strstr(r->out, "NoNewPrivs:\t1"), "a setuid program could regain root:\n%s", r->out);
	cr_expect(strstr(r->out, "cgroup=/portfence/u-"), "cgroup:\n%s", r->out);
	cr_expect(!strstr(r->out, "escaped="), "the user left its cgroup:\n%s", r->out);
	cr_expect(strstr(r->out, "stayed"), "%s", r->out);
	long got = 0;
	const char *line = strstr(r->out, "stayed\n");
	cr_expect(line && sscanf(line + 7, "%ld", &got) == 1 && got >= 62600 && got <= 62615,
		  "the connect as nobody took port %ld:\n%s", got, r->out);
	cr_expect(server_saw(&srv, (uint16_t)got), "the server never saw port %ld", got);

	/* USER:GROUP, numeric; the group is the one named. */
	char *argv2[] = {(char *)build_path("portfence"), "run", "--bpf", "-c", sb.policy, "-a", "u", "--user",
			 "65534:daemon", "--", "id", NULL};
	run_program(r, argv2, NULL, NULL);
	cr_expect_eq(r->status, 0, "--user 65534:daemon: %d %s", r->status, r->err);
	cr_expect(strstr(r->out, "uid=65534") && strstr(r->out, "gid=1(daemon)") && !strstr(r->out, "groups=0"),
		  "id: %s", r->out);

	/* Errors: an unknown user starts nothing; --user needs --bpf. */
	char *argv3[] = {(char *)build_path("portfence"), "run", "--bpf", "-c", sb.policy, "-a", "u", "--user",
			 "no-such-user-here", "--", "touch", "/tmp/pf-cli-should-not-exist", NULL};
	run_program(r, argv3, NULL, NULL);
	cr_expect_neq(r->status, 0);
	cr_expect(strstr(r->err, "no-such-user-here"), "%s", r->err);
	cr_expect_neq(access("/tmp/pf-cli-should-not-exist", F_OK), 0, "COMMAND ran with an unknown user");
	char *argv4[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--user", "nobody", "--", "true", NULL};
	run_program(r, argv4, NULL, NULL);
	cr_expect_eq(r->status, 2, "--user without --bpf: %d", r->status);
	server_stop(&srv);
	free(r);
	sandbox_cleanup(&sb);
}

/* ---- make install / uninstall, make demo's packages ---- */

Test(cli, make_uninstall_removes_what_install_put, .timeout = 180)
{
	char dir[] = "/tmp/pf-uninstall-XXXXXX", cmd[2048];
	struct run_result *r = result();
	cr_assert_not_null(mkdtemp(dir));
	const char *build = getenv("PORTFENCE_BUILD");
	snprintf(cmd, sizeof(cmd),
		 "set -e; make -s install BUILD='%s' PREFIX=/opt/pf DESTDIR='%s'\n"
		 "test -f '%s/opt/pf/share/doc/portfence/README.md'\n"
		 "test -f '%s/opt/pf/share/doc/portfence/example.conf'\n"
		 "make -s uninstall BUILD='%s' PREFIX=/opt/pf DESTDIR='%s'\n"
		 "find '%s' -mindepth 1 -not -type d",
		 build ? build : "build", dir, dir, dir, build ? build : "build", dir, dir);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "install/uninstall: %s%s", r->out, r->err);
	cr_expect_str_eq(r->out, "", "left after make uninstall:\n%s", r->out);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
	free(r);
}

Test(cli, make_demo_needs_only_the_demo_packages)
{
	struct run_result *r = result();
	char *argv[] = {"sh", "tests/install-deps.sh", "demo", "list", NULL};
	run_program(r, argv, NULL, NULL);
	cr_expect_eq(r->status, 0, "%s", r->err);
	cr_expect(strstr(r->out, "curl") && strstr(r->out, "python3"), "demo packages: %s", r->out);
	static const char *const not_for_the_demo[] = {"nginx", "golang", "prometheus", "systemd", "criterion", "dnsmasq"};
	for (size_t i = 0; i < sizeof(not_for_the_demo) / sizeof(*not_for_the_demo); i++)
		cr_expect(!strstr(r->out, not_for_the_demo[i]), "make demo installs %s: %s", not_for_the_demo[i], r->out);
	free(r);
	/* The Makefile's demo asks for exactly that list. */
	char *make[] = {"make", "-n", "demo", NULL};
	run_program(r = result(), make, NULL, NULL);
	cr_expect(strstr(r->out, "install-deps.sh demo"), "make demo: %s", r->out);
	free(r);
}
