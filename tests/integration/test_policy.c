/* What the policy decides, seen from outside: unspecified destinations
 * judged as the loopback they reach, policy paths that are no regular
 * file refused at once, and a policy of many apps checked in full. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

Test(policy, unspecified_addresses_judged_as_loopback, .timeout = 60)
{
	struct server v4, v6;
	struct sandbox sb;
	struct run_result r;
	char apps[512], code[1024];

	server_start(&v4, "127.0.0.1", SERVE_DRAIN);
	server_start(&v6, "::1", SERVE_DRAIN);
	snprintf(apps, sizeof(apps),
		 "default = \"c\";\napps = ( { name = \"c\"; range = [ 63600, 63699 ]; "
		 "deny = [ \"127.0.0.1:%u\", \"[::1]:%u\" ]; } );", v4.port, v6.port);
	sandbox_init(&sb, apps);
	snprintf(code, sizeof(code),
		 "import socket, errno\n"
		 "for family, host, port in ((socket.AF_INET, '0.0.0.0', %u), (socket.AF_INET6, '::', %u),\n"
		 "                           (socket.AF_INET6, '::ffff:0.0.0.0', %u)):\n"
		 "    s = socket.socket(family)\n"
		 "    try:\n        s.connect((host, port)); print(host, 'connected')\n"
		 "    except OSError as e:\n        print(host, errno.errorcode[e.errno])\n"
		 "    s.close()\n", v4.port, v6.port, v4.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&v4);
	server_stop(&v6);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "0.0.0.0 EPERM\n:: EPERM\n::ffff:0.0.0.0 EPERM\n");
	cr_expect_eq(atomic_load(&v4.count), 0, "the IPv4 loopback server saw a connection");
	cr_expect_eq(atomic_load(&v6.count), 0, "the IPv6 loopback server saw a connection");
	json_t *records = audit_records(sb.log);
	for (int i = 0; i < 3; i++) {
		json_t *deny = audit_find(records, "deny", i);
		cr_expect_not_null(deny, "deny record %d of 3", i + 1);
		if (deny)
			cr_expect_str_eq(json_string_value(json_object_get(deny, "result")), "EPERM");
	}
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* `timeout` ends a hung check with 124, so a wait fails the test rather
 * than the run. */
static void check_within(struct run_result *r, const char *policy)
{
	char *argv[] = {"timeout", "10", (char *)build_path("portfence"), "check", "-c",
			(char *)policy, NULL};
	run_program(r, argv, NULL, NULL);
}

Test(policy, check_refuses_a_fifo_at_once, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	char fifo[256], include[300], expected[400];

	sandbox_init(&sb, "");
	snprintf(fifo, sizeof(fifo), "%s/fifo.conf", sb.dir);
	cr_assert_eq(mkfifo(fifo, 0644), 0);

	check_within(&r, fifo);
	snprintf(expected, sizeof(expected), "%s: not a regular file (a FIFO)\n", fifo);
	cr_expect_eq(r.status, 1, "a FIFO as the policy: exit %d", r.status);
	cr_expect_str_eq(r.err, expected);

	/* Included from a regular policy. */
	FILE *f = fopen(sb.policy, "a");
	fprintf(f, "@include \"%s\"\n", fifo);
	fclose(f);
	check_within(&r, sb.policy);
	cr_expect_eq(r.status, 1, "an included FIFO: exit %d", r.status);
	cr_expect_str_eq(r.err, expected);

	/* A FIFO named *.conf in a policy directory. */
	snprintf(include, sizeof(include), "%s/10-first.conf", sb.dir);
	f = fopen(include, "w");
	fputs("apps = ( );\n", f);
	fclose(f);
	unlink(sb.policy);
	check_within(&r, sb.dir);
	cr_expect_eq(r.status, 1, "a FIFO in the directory: exit %d", r.status);
	cr_expect(strstr(r.err, expected) != NULL, "%s", r.err);

	check_within(&r, "/dev/null");
	cr_expect_eq(r.status, 1);
	cr_expect_str_eq(r.err, "/dev/null: not a regular file (a character device)\n");
	sandbox_cleanup(&sb);
}

static void write_text(const char *dir, const char *name, const char *text)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	fclose(f);
}

/* A relative @include names a file beside the file that includes it,
 * from any working directory: in the policy, in an included file and in
 * a policy directory's *.conf; what goes wrong names the included file. */
Test(policy, include_resolves_from_the_including_file, .timeout = 60)
{
	struct sandbox sb;
	struct server s;
	struct run_result r;
	char apps[300], conf_d[300], expected[1200];

	sandbox_init(&sb, "@include \"apps/web.inc\"");
	snprintf(apps, sizeof(apps), "%s/apps", sb.dir);
	cr_assert_eq(mkdir(apps, 0755), 0);
	write_text(apps, "web.inc", "apps = ( { name = \"web\"; range = [ 63700, 63799 ];\n"
				       "  bind_allow = [ 21, \"1024-2048\" ]; } );\n@include \"more.inc\"\n");
	write_text(apps, "more.inc", "default = \"web\";\n");

	check_within(&r, sb.policy);
	cr_expect_eq(r.status, 0, "%s", r.err);
	snprintf(expected, sizeof(expected), "%s: valid, 1 app; default web", sb.policy);
	cr_expect(strstr(r.out, expected) != NULL, "%s", r.out);

	server_start(&s, "127.0.0.1", SERVE_DRAIN);
	char code[200];
	snprintf(code, sizeof(code), "import socket\ns = socket.create_connection(('127.0.0.1', %u))\n"
		 "print(s.getsockname()[1])\n", s.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&s);
	cr_expect_eq(r.status, 0, "%s", r.err);
	long port = strtol(r.out, NULL, 10);
	cr_expect(port >= 63700 && port <= 63799, "source port %s", r.out);

	write_text(apps, "more.inc", "default = \"web\";\nbogus = 1;\n");
	check_within(&r, sb.policy);
	cr_expect_eq(r.status, 1);
	snprintf(expected, sizeof(expected), "%s/more.inc:2: unknown setting 'bogus'\n", apps);
	cr_expect_str_eq(r.err, expected);

	snprintf(expected, sizeof(expected), "%s/more.inc", apps);
	unlink(expected);
	check_within(&r, sb.policy);
	cr_expect_eq(r.status, 1);
	snprintf(expected, sizeof(expected),
		 "%s/web.inc:3: cannot open include file \"%s/more.inc\": No such file or directory\n",
		 apps, apps);
	cr_expect_str_eq(r.err, expected);

	snprintf(conf_d, sizeof(conf_d), "%s/conf.d", sb.dir);
	cr_assert_eq(mkdir(conf_d, 0755), 0);
	write_text(conf_d, "10-web.conf", "version = 1;\n@include \"web.part\"\n");
	write_text(conf_d, "web.part", "apps = ( { name = \"web\"; range = [ 63700, 63799 ]; } );\n");
	check_within(&r, conf_d);
	cr_expect_eq(r.status, 0, "%s", r.err);
	sandbox_cleanup(&sb);
}

static void write_many_apps(const char *path, unsigned count, unsigned overlapping)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("version = 1;\napps = (\n", f);
	for (unsigned i = 0; i < count; i++) {
		unsigned lo = 1024 + i * 3;
		/* One app, if asked, reaches one port into its successor. */
		fprintf(f, "  { name = \"app%05u\"; match = { exe = [ \"/opt/app%05u/*\" ]; };\n"
			   "    range = [ %u, %u ]; }%s\n",
			i, i, lo, lo + 2 + (i == overlapping), i + 1 < count ? "," : "");
	}
	fputs(");\n", f);
	fclose(f);
}

Test(policy, twenty_thousand_apps_checked, .timeout = 120)
{
	struct sandbox sb;
	struct run_result r;
	char path[256], expected[1024];
	struct timespec start, end;

	sandbox_init(&sb, "");
	snprintf(path, sizeof(path), "%s/many.conf", sb.dir);
	write_many_apps(path, 20000, 20000);
	clock_gettime(CLOCK_MONOTONIC, &start);
	check_within(&r, path);
	clock_gettime(CLOCK_MONOTONIC, &end);
	cr_expect_eq(r.status, 0, "%s", r.err);
	snprintf(expected, sizeof(expected), "%s: valid, 20000 apps", path);
	cr_expect(strstr(r.out, expected) != NULL, "%.200s", r.out);
	cr_expect(strstr(r.out, "app app00001: ports 1027-1029 (3)") != NULL, "%.300s", r.out);
	fprintf(stderr, "policy: check of 20000 apps took %.3f s\n",
		(double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9);

	/* App 12345's range reaches into app 12346's; app i's range is on
	 * line 4 + 2i. */
	write_many_apps(path, 20000, 12345);
	check_within(&r, path);
	cr_expect_eq(r.status, 1);
	unsigned lo = 1024 + 12345 * 3;
	snprintf(expected, sizeof(expected),
		 "%s:%u: range %u-%u of app 'app12346' overlaps range %u-%u of app 'app12345' (%s:%u)\n",
		 path, 4 + 2 * 12346, lo + 3, lo + 5, lo, lo + 3, path, 4 + 2 * 12345);
	cr_expect_str_eq(r.err, expected);
	sandbox_cleanup(&sb);
}

/* Every pair of overlapping ranges is reported, once, not only
 * neighbours in port order: c (61099) lies inside a as well as b. */
Test(policy, check_reports_every_overlapping_pair, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	char expected[1200];

	sandbox_init(&sb, "apps = (\n  { name = \"a\"; range = [ 61000, 61099 ]; },\n"
			  "  { name = \"b\"; range = [ 61050, 61150 ]; },\n"
			  "  { name = \"c\"; range = [ 61099, 61099 ]; },\n"
			  "  { name = \"d\"; range = [ 61151, 61200 ]; } );");
	check_within(&r, sb.policy);
	cr_expect_eq(r.status, 1);
	snprintf(expected, sizeof(expected),
		 "%1$s:6: range 61050-61150 of app 'b' overlaps range 61000-61099 of app 'a' (%1$s:5)\n"
		 "%1$s:7: range 61099-61099 of app 'c' overlaps range 61000-61099 of app 'a' (%1$s:5)\n"
		 "%1$s:7: range 61099-61099 of app 'c' overlaps range 61050-61150 of app 'b' (%1$s:6)\n",
		 sb.policy);
	cr_expect_str_eq(r.err, expected);
	sandbox_cleanup(&sb);
}

/* The shim, given a FIFO as its policy, denies at once with one line on
 * stderr instead of waiting for a writer. */
Test(policy, shim_refuses_a_fifo_at_once, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	char fifo[256], config[300];

	sandbox_init(&sb, "");
	snprintf(fifo, sizeof(fifo), "%s/fifo.conf", sb.dir);
	cr_assert_eq(mkfifo(fifo, 0644), 0);
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", fifo);
	const char *code = "import socket, errno\ns = socket.socket()\ntry:\n"
			   "    s.connect(('127.0.0.1', 9)); print('connected')\n"
			   "except OSError as e:\n    print(errno.errorcode[e.errno])\n";
	char *argv[] = {"timeout", "20", "env", (char *)shim_preload_env(), config, "PORTFENCE_APP=",
			"python3", "-c", (char *)code, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_expect_eq(r.status, 0, "exit %d (124: it waited): %s", r.status, r.err);
	cr_expect_str_eq(r.out, "EPERM\n");
	cr_expect(strstr(r.err, "not a regular file (a FIFO)") != NULL, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "%s", r.err);
	sandbox_cleanup(&sb);
}
