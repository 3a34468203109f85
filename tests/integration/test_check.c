/* `portfence check` as a user runs it: exit codes 0/1/2, FILE:LINE on
 * stderr, and the kernel-dependent verdicts, in a private network
 * namespace whose sysctls start at the kernel's defaults. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void check(struct run_result *r, const char *policy, const char *sysctl)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "%s%s'%s' check -c '%s'", sysctl ? sysctl : "", sysctl ? " && " : "",
		 build_path("portfence"), policy);
	char *argv[] = {"unshare", "-n", "sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
}

Test(check, example_conf_is_valid)
{
	struct run_result r;
	check(&r, "example.conf", NULL);
	cr_expect_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.out, "example.conf: valid, 3 apps"), "%s", r.out);
	cr_expect(strstr(r.out, "app legacy-web: ports 61000-61099 (100), algorithm double-hash, "
				"binding explicit bind"), "%s", r.out);
	cr_expect_str_eq(r.err, "", "example.conf is isolated: no warning");
}

Test(check, every_invalid_fixture_exits_1_with_its_line)
{
	DIR *dir = opendir("tests/fixtures/invalid");
	struct dirent *entry;
	int checked = 0;

	cr_assert_not_null(dir);
	while ((entry = readdir(dir))) {
		size_t len = strlen(entry->d_name);
		if (len < 6 || strcmp(entry->d_name + len - 5, ".conf") != 0)
			continue;
		char policy[512], expect_path[512], expected[512], wanted[1024];
		snprintf(policy, sizeof(policy), "tests/fixtures/invalid/%s", entry->d_name);
		snprintf(expect_path, sizeof(expect_path), "%.*s.expect", (int)strlen(policy) - 5, policy);
		FILE *f = fopen(expect_path, "r");
		cr_assert_not_null(f, "%s has no .expect", policy);
		cr_assert_not_null(fgets(expected, sizeof(expected), f));
		fclose(f);
		expected[strcspn(expected, "\n")] = '\0';
		snprintf(wanted, sizeof(wanted), "%s:%s", policy, expected);

		struct run_result r;
		check(&r, policy, NULL);
		cr_expect_eq(r.status, 1, "%s exited %d", policy, r.status);
		cr_expect(strstr(r.err, wanted) != NULL, "%s: want \"%s\", got %s",
			  policy, wanted, r.err);
		cr_expect_str_eq(r.out, "", "an invalid policy prints no summary");
		checked++;
	}
	closedir(dir);
	cr_expect_eq(checked, 24);
}

Test(check, usage_errors_exit_2)
{
	struct run_result r;
	char *extra[] = {(char *)build_path("portfence"), "check", "stray", NULL};
	run_program(&r, extra, NULL, NULL);
	cr_expect_eq(r.status, 2);
	char *unknown[] = {(char *)build_path("portfence"), "check", "--frobnicate", NULL};
	run_program(&r, unknown, NULL, NULL);
	cr_expect_eq(r.status, 2);
	char *missing[] = {(char *)build_path("portfence"), "check", "-c", NULL};
	run_program(&r, missing, NULL, NULL);
	cr_expect_eq(r.status, 2);
	char *nothing[] = {(char *)build_path("portfence"), NULL};
	run_program(&r, nothing, NULL, NULL);
	cr_expect_eq(r.status, 2);
	cr_expect(strstr(r.err, "usage: portfence run"), "%s", r.err);
}

static void write_policy(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

Test(check, isolation_warning_and_kernel_algorithm_verdicts)
{
	struct temp_dir temp;
	char shared[256], kernel_out[256], kernel_in[256];
	struct run_result r;

	temp_dir_make(&temp, "check");
	snprintf(shared, sizeof(shared), "%s/shared.conf", temp.dir);
	write_policy(shared, "apps = ( { name = \"s\";\n  range = [ 40000, 40009 ]; } );\n");
	check(&r, shared, "sysctl -qw net.ipv4.ip_local_reserved_ports=5000");
	cr_expect_eq(r.status, 0, "a warning keeps exit 0: %s", r.err);
	char wanted[512];
	snprintf(wanted, sizeof(wanted), "%s:2: warning: range 40000-40009 of app 's' overlaps "
		 "net.ipv4.ip_local_port_range (32768-60999)", shared);
	cr_expect(strstr(r.err, wanted), "%s", r.err);
	cr_expect(strstr(r.err, "isolate them with: sysctl -w net.ipv4.ip_local_reserved_ports=5000,40000-40009\n"),
		  "the existing reservation is kept: %s", r.err);

	cr_expect(strstr(r.err, "(32768-60999) on 10 ports not in net.ipv4.ip_local_reserved_ports"), "%s", r.err);
	/* One port in common: said in the singular. */
	char one[256];
	snprintf(one, sizeof(one), "%s/one.conf", temp.dir);
	write_policy(one, "apps = ( { name = \"o\";\n  range = [ 60999, 61008 ]; } );\n");
	check(&r, one, "sysctl -qw net.ipv4.ip_local_port_range='32768 60999'");
	cr_expect_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.err, "(32768-60999) on 1 port not in net.ipv4.ip_local_reserved_ports: the kernel may "
				"give it to other programs"), "%s", r.err);

	check(&r, shared, "sysctl -qw net.ipv4.ip_local_reserved_ports=40000-40009");
	cr_expect_eq(r.status, 0);
	cr_expect_str_eq(r.err, "", "reserved: isolated, no warning");
	cr_expect(strstr(r.out, "isolation: isolated (reserved in ip_local_reserved_ports)"), "%s", r.out);

	snprintf(kernel_out, sizeof(kernel_out), "%s/kernel-out.conf", temp.dir);
	write_policy(kernel_out, "apps = ( { name = \"k\"; range = [ 61000, 61099 ];\n  algorithm = \"kernel\"; } );\n");
	check(&r, kernel_out, NULL);
	cr_expect_eq(r.status, 1, "a range the kernel would clamp");
	snprintf(wanted, sizeof(wanted), "%s:2: algorithm \"kernel\" cannot serve range 61000-61099", kernel_out);
	cr_expect(strstr(r.err, wanted), "%s", r.err);

	snprintf(kernel_in, sizeof(kernel_in), "%s/kernel-in.conf", temp.dir);
	write_policy(kernel_in, "apps = ( { name = \"k\"; range = [ 40000, 40099 ];\n  algorithm = \"kernel\"; } );\n");
	check(&r, kernel_in, NULL);
	cr_expect_eq(r.status, 0, "inside the ephemeral range: %s", r.err);
	cr_expect(strstr(r.out, "binding kernel (IP_LOCAL_PORT_RANGE)"), "%s", r.out);
	check(&r, kernel_in, "sysctl -qw net.ipv4.ip_local_reserved_ports=40050");
	cr_expect_eq(r.status, 1, "a reserved port the kernel would skip");
	cr_expect(strstr(r.err, "1 of its ports is in net.ipv4.ip_local_reserved_ports"), "%s", r.err);

	temp_dir_remove(&temp);
}

/* A cgroup written as its path under the cgroup v2 mount is the cgroup
 * the daemon confines (it strips the mount), so two apps naming one
 * cgroup, one of them with the mount, are refused by check too. */
Test(check, one_cgroup_named_with_and_without_the_mount_is_refused)
{
	struct temp_dir temp;
	char mount[256], path[128], text[1024];
	bpf_machine_missing(mount, sizeof(mount));
	if (mount[0] != '/')
		cr_skip_test("no cgroup v2 mount on this machine");
	temp_dir_make(&temp, "cgmount");
	snprintf(path, sizeof(path), "%s/p.conf", temp.dir);
	static const char *const pairs[][2] = {
		{"%s/system.slice/x.service", "system.slice/x.service"},
		{"%s/system.slice/*", "/system.slice/x.service"},
	};
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		char first[300];
		snprintf(first, sizeof(first), pairs[i][0], mount);
		snprintf(text, sizeof(text),
			 "version = 1;\napps = (\n  { name = \"a\"; range = [ 61000, 61099 ];\n"
			 "    cgroups = [ \"%s\" ]; },\n  { name = \"b\"; range = [ 62000, 62099 ];\n"
			 "    cgroups = [ \"%s\" ]; }\n);\n",
			 first, pairs[i][1]);
		write_policy(path, text);
		struct run_result r;
		check(&r, path, NULL);
		char where[160];
		snprintf(where, sizeof(where), "%s:6: ", path);
		cr_expect_eq(r.status, 1, "\"%s\" and \"%s\": exit %d\n%s", first, pairs[i][1], r.status, r.err);
		cr_expect(strstr(r.err, where) && strstr(r.err, "can match the same cgroup"),
			  "\"%s\" and \"%s\":\n%s", first, pairs[i][1], r.err);
	}
	temp_dir_remove(&temp);
}

/* libconfig 1.5 wraps an integer written past 32 bits without an L
 * suffix (4294996296 reads as 29000): each is an error at its own line
 * naming the literal as written, and the wrapped value is not judged
 * again (no "lo > hi" for 4294967297 read as 1).  Strings and comments
 * are not integers; an L literal is judged as written. */
Test(check, integers_past_32_bits_name_the_literal)
{
	static const struct {
		const char *text, *err; /* err: %1$s is the policy's path */
	} cases[] = {
		{"apps = ( { name = \"a\";\n  range = [ 4294996296, 4294996396 ]; } );\n",
		 "%1$s:2: integer 4294996296 does not fit in 32 bits\n"
		 "%1$s:2: integer 4294996396 does not fit in 32 bits\n"},
		{"apps = ( { name = \"a\"; range = [ 61000,\n  4294967297 ]; } );\n",
		 "%1$s:2: integer 4294967297 does not fit in 32 bits\n"},
		{"version = 4294967297;\napps = ( );\n",
		 "%1$s:1: integer 4294967297 does not fit in 32 bits\n"},
		{"apps = ( { name = \"a\"; range = [ 61000, 61010 ];\n  explicit_bind = \"deny\";\n"
		 "  bind_allow = [ 21, 4294967317 ]; } );\n",
		 "%1$s:3: integer 4294967317 does not fit in 32 bits\n"},
		{"apps = ( { name = \"a\"; range = [ 0x10000EE48, -4294906286 ]; } );\n",
		 "%1$s:1: integer 0x10000EE48 does not fit in 32 bits\n"
		 "%1$s:1: integer -4294906286 does not fit in 32 bits\n"},
		{"apps = ( { name = \"a\"; range = [ 61000, 99999999999999999999 ]; } );\n",
		 "%1$s:1: integer 99999999999999999999 does not fit in 32 bits\n"},
		{"apps = ( { name = \"a\"; range = [ 61000L, 4294967297L ]; } );\n",
		 "%1$s:1: port 4294967297 outside 1..65535\n"},
		{"# 4294967297\nversion = 1; // 4294967297\n/* 4294967297\n 4294967297 */\n"
		 "apps = ( { name = \"a4294967297\"; range = [ 61000, 61010 ];\n"
		 "  allow = [ \"0.0.0.0/0:4294967297\" ]; } );\n",
		 "%1$s:6: malformed rule \"0.0.0.0/0:4294967297\""},
	};
	struct temp_dir temp;
	char path[256], wanted[1024];
	struct run_result r;

	temp_dir_make(&temp, "check");
	snprintf(path, sizeof(path), "%s/wide.conf", temp.dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_policy(path, cases[i].text);
		check(&r, path, NULL);
		snprintf(wanted, sizeof(wanted), cases[i].err, path);
		cr_expect_eq(r.status, 1, "case %zu exited %d", i, r.status);
		if (strstr(cases[i].err, "\n"))
			cr_expect_str_eq(r.err, wanted, "case %zu: %s", i, r.err);
		else
			cr_expect(strncmp(r.err, wanted, strlen(wanted)) == 0, "case %zu: %s", i, r.err);
	}
	temp_dir_remove(&temp);
}

/* An app's name becomes a directory (BPF pins, its cgroup, state
 * files): empty, ".", "..", a '/' or a control character is refused at
 * the name's line, the control character shown escaped. */
Test(check, app_names_that_cannot_be_directories_are_refused)
{
	static const struct {
		const char *name, *err; /* err: %1$s is the policy's path */
	} cases[] = {
		{"a/b", "%1$s:2: app name \"a/b\" holds '/' (an app's name names its directories)\n"},
		{"../../etc/x", "%1$s:2: app name \"../../etc/x\" holds '/' (an app's name names its directories)\n"},
		{"", "%1$s:2: app name is empty\n"},
		{".", "%1$s:2: app name \".\" is \".\" or \"..\" (an app's name names its directories)\n"},
		{"..", "%1$s:2: app name \"..\" is \".\" or \"..\" (an app's name names its directories)\n"},
		{"a\\tb", "%1$s:2: app name \"a\\x09b\" holds a control character (an app's name names its directories)\n"},
		{"a\\x7f", "%1$s:2: app name \"a\\x7f\" holds a control character (an app's name names its directories)\n"},
	};
	struct temp_dir temp;
	char path[256], text[512], wanted[1024];
	struct run_result r;

	temp_dir_make(&temp, "check");
	snprintf(path, sizeof(path), "%s/names.conf", temp.dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "apps = ( { range = [ 61000, 61010 ];\n  name = \"%s\"; } );\n",
			 cases[i].name);
		write_policy(path, text);
		check(&r, path, NULL);
		snprintf(wanted, sizeof(wanted), cases[i].err, path);
		cr_expect_eq(r.status, 1, "%s exited %d", cases[i].name, r.status);
		cr_expect_str_eq(r.err, wanted, "%s: %s", cases[i].name, r.err);
	}
	write_policy(path, "apps = ( { name = \"web-1.x_2 \\u00e9\"; range = [ 61000, 61010 ]; },\n"
			   "  { name = \"...\"; range = [ 61011, 61020 ]; } );\n");
	check(&r, path, NULL);
	cr_expect_eq(r.status, 0, "dots, dashes, blanks and UTF-8 are names: %s", r.err);
	temp_dir_remove(&temp);
}
