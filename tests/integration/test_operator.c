/* What an administrator meets: the README's scenarios run verbatim,
 * `portfence report` on logs of known content, install and man pages. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "core/state.h"

/* The sh block that follows "<!-- scenario: NAME -->" in README.md. */
static char *scenario(const char *name)
{
	static char text[8192];
	char marker[128], line[1024];
	FILE *readme = fopen("README.md", "r");
	bool found = false, inside = false;
	size_t len = 0;

	cr_assert_not_null(readme, "run from the top of the source tree");
	snprintf(marker, sizeof(marker), "<!-- scenario: %s -->\n", name);
	while (fgets(line, sizeof(line), readme)) {
		if (!found) {
			found = strcmp(line, marker) == 0;
		} else if (!inside) {
			inside = strncmp(line, "```sh", 5) == 0;
		} else if (strncmp(line, "```", 3) == 0) {
			break;
		} else {
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s", line);
		}
	}
	fclose(readme);
	cr_assert(found && inside && len > 0, "README.md has no scenario '%s'", name);
	return text;
}

/* Runs a scenario as written, in a private network namespace so that its
 * sysctls and its port 8080 are its own. */
static void run_scenario(struct run_result *r, const char *name)
{
	char script_path[] = "/tmp/pf-scenario-XXXXXX", cwd[1024], cmd[2048];
	int fd = mkstemp(script_path);
	const char *text = scenario(name);

	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	snprintf(cmd, sizeof(cmd), "ip link set lo up && cd '%s' && bash -e '%s' 2>&1", cwd, script_path);
	char *argv[] = {"unshare", "-n", "sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
	unlink(script_path);
	/* example.conf's state_dir is its own, not the run's. */
	pf_state_remove_all("/tmp/portfence-example-state");
}

/* Ports of the "server saw 127.0.0.1:PORT" lines, in order. */
static int seen_ports(const char *out, unsigned *ports, int max)
{
	int n = 0;
	for (const char *p = out; n < max && (p = strstr(p, "server saw 127.0.0.1:")); p++)
		ports[n++] = (unsigned)atoi(p + strlen("server saw 127.0.0.1:"));
	return n;
}

Test(operator, scenario_legacy_client, .timeout = 60)
{
	struct run_result r;
	unsigned ports[8];

	skip_if_sanitized("curl");
	run_scenario(&r, "legacy");
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_expect_eq(seen_ports(r.out, ports, 8), 3, "%s", r.out);
	for (int i = 0; i < 3; i++) {
		char local[64];
		cr_expect(ports[i] >= 61000 && ports[i] <= 61099, "port %u", ports[i]);
		snprintf(local, sizeof(local), "\"local\":\"127.0.0.1:%u\"", ports[i]);
		cr_expect(strstr(r.out, local) != NULL, "no audit record for port %u", ports[i]);
	}
	cr_expect_eq(count_lines_starting(r.out, "hello"), 3);
}

Test(operator, scenario_two_apps_isolated, .timeout = 60)
{
	struct run_result r;
	unsigned ports[8];

	skip_if_sanitized("curl");
	run_scenario(&r, "isolated");
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_expect(strstr(r.out, "isolate them with: sysctl -w net.ipv4.ip_local_reserved_ports=40000-40299\n"),
		  "%s", r.out);
	cr_expect_eq(count_lines_starting(r.out, "  isolation: NOT isolated"), 3);
	cr_expect_eq(count_lines_starting(r.out, "  isolation: isolated (reserved"), 3);
	cr_assert_eq(seen_ports(r.out, ports, 8), 2, "%s", r.out);
	cr_expect(ports[0] >= 40000 && ports[0] <= 40099, "curl (billing) came from %u", ports[0]);
	cr_expect(ports[1] >= 40100 && ports[1] <= 40199, "wget (reports) came from %u", ports[1]);
	cr_expect(strstr(r.out, "PermissionError") && strstr(r.out, "tools may not take a billing port"),
		  "%s", r.out);
}

Test(operator, scenario_audit_then_report, .timeout = 60)
{
	struct run_result r;

	skip_if_sanitized("wget");
	run_scenario(&r, "audit");
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_expect(strstr(r.out, "app legacy-web\n"), "%s", r.out);
	cr_expect(strstr(r.out, "audit records 5 (enforce would have refused 1)"), "%s", r.out);
	cr_expect(strstr(r.out, "assignments 0,"), "audit mode assigns nothing: %s", r.out);
}

Test(operator, scenario_bpf_backend, .timeout = 90)
{
	struct run_result r;
	unsigned ports[8];

	if (geteuid() != 0)
		cr_skip_test("skipped: the BPF backend needs root");
	skip_if_sanitized("curl");
	run_scenario(&r, "bpf");
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_assert_eq(seen_ports(r.out, ports, 8), 2, "%s", r.out);
	for (int i = 0; i < 2; i++) {
		char local[64];
		cr_expect(ports[i] >= 61000 && ports[i] <= 61099, "port %u", ports[i]);
		snprintf(local, sizeof(local), "\"local\":\"127.0.0.1:%u\"", ports[i]);
		cr_expect(strstr(r.out, local) != NULL, "no audit record for port %u", ports[i]);
	}
	cr_expect(strstr(r.out, "\"comm\":\"curl\"") && strstr(r.out, "\"cgroup\":\"/portfence/legacy-web-"),
		  "%s", r.out);
}

/* ---- report ---- */

static void write_known_log(const char *path)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	/* web: 6 assignments over ports 61000-61003, attempts 1,1,2,1,4,1 */
	static const unsigned ports[] = {61000, 61001, 61002, 61000, 61003, 61001};
	static const unsigned attempts[] = {1, 1, 2, 1, 4, 1};
	for (int i = 0; i < 6; i++)
		fprintf(f, "{\"ts\":\"2026-11-21T10:00:0%d.000000Z\",\"event\":\"assign\",\"app\":\"web\",\"pid\":1,"
			   "\"exe\":\"/usr/bin/cu\\\"rl\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"127.0.0.1:%u\","
			   "\"remote\":\"127.0.0.1:80\",\"algorithm\":\"random\",\"attempts\":%u,\"result\":\"ok\"}\n",
			i, ports[i], attempts[i]);
	fputs("{\"ts\":\"2026-11-21T10:00:07.000000Z\",\"event\":\"deny\",\"app\":\"web\",\"pid\":1,\"exe\":\"x\","
	      "\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"0.0.0.0:0\",\"remote\":\"192.0.2.1:25\","
	      "\"algorithm\":\"random\",\"attempts\":0,\"result\":\"EPERM\"}\n", f);
	fputs("{\"ts\":\"2026-11-21T10:00:08.000000Z\",\"event\":\"error\",\"app\":\"web\",\"pid\":1,\"exe\":\"x\","
	      "\"proto\":\"udp\",\"family\":\"ipv4\",\"local\":\"0.0.0.0:0\",\"remote\":\"127.0.0.1:53\","
	      "\"algorithm\":\"random\",\"attempts\":4,\"result\":\"EAGAIN\"}\n", f);
	/* dns: 2 assignments, one before 10:00:05 */
	fputs("{\"ts\":\"2026-11-21T09:59:00.000000Z\",\"event\":\"assign\",\"app\":\"dns\",\"pid\":2,\"exe\":\"d\","
	      "\"proto\":\"udp\",\"family\":\"ipv6\",\"local\":\"[::1]:62000\",\"remote\":\"[::1]:53\","
	      "\"algorithm\":\"hash\",\"attempts\":3,\"result\":\"ok\"}\n", f);
	fputs("{\"ts\":\"2026-11-21T10:00:09.000000Z\",\"event\":\"assign\",\"app\":\"dns\",\"pid\":2,\"exe\":\"d\","
	      "\"proto\":\"udp\",\"family\":\"ipv6\",\"local\":\"[::1]:62001\",\"remote\":\"[::1]:53\","
	      "\"algorithm\":\"hash\",\"attempts\":1,\"result\":\"ok\"}\n", f);
	fputs("not json at all\n{\"ts\":\"x\"}\n\n{\"event\":\"assign\",\"app\":\"web\"\n", f);
	fclose(f);
}

static json_t *report_json(const char *log, const char *extra)
{
	char cmd[512];
	struct run_result r;
	snprintf(cmd, sizeof(cmd), "'%s' report --json %s '%s'", build_path("portfence"), extra, log);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "report --json printed no JSON: %s", r.out);
	return root;
}

#define INT_OF(e, k) json_integer_value(json_object_get((e), (k)))

Test(operator, report_counts_a_known_log)
{
	char log[] = "/tmp/pf-report-XXXXXX";
	int fd = mkstemp(log);
	close(fd);
	write_known_log(log);
	default_policy(NULL);	/* no range but -c's */

	json_t *root = report_json(log, "");
	cr_expect_eq(INT_OF(root, "malformed_lines"), 3, "blank lines are not counted");
	json_t *web = app_entry(root, "web");
	cr_assert_not_null(web);
	cr_expect_eq(INT_OF(web, "assignments"), 6);
	cr_expect_eq(INT_OF(web, "distinct_ports"), 4);
	cr_expect_eq(INT_OF(web, "denials"), 1);
	cr_expect_eq(INT_OF(web, "errors"), 1);
	cr_expect_eq(INT_OF(web, "attempts_max"), 4);
	cr_expect_float_eq(json_real_value(json_object_get(web, "attempts_mean")), 10.0 / 6, 1e-9);
	json_t *dns = app_entry(root, "dns");
	cr_assert_not_null(dns);
	cr_expect_eq(INT_OF(dns, "assignments"), 2);
	json_decref(root);

	root = report_json(log, "--app dns");
	cr_expect_eq(json_array_size(json_object_get(root, "apps")), 1);
	cr_expect_not_null(app_entry(root, "dns"));
	json_decref(root);

	root = report_json(log, "--since 2026-11-21T10:00:05");
	cr_expect_eq(INT_OF(app_entry(root, "web"), "assignments"), 1, "only 10:00:05 and later");
	cr_expect_eq(INT_OF(app_entry(root, "dns"), "assignments"), 1);
	json_decref(root);

	struct run_result r;
	char *bare[] = {(char *)build_path("portfence"), "report", log, NULL};
	run_program(&r, bare, NULL, NULL);
	cr_assert_eq(r.status, 0);
	cr_expect(strstr(r.out, "app web\n  assignments 6, distinct ports 4 (range unknown"),
		  "no range guessed from the ports seen: %s", r.out);
	cr_expect(!strstr(r.out, "  ports 61000 |"), "no histogram without a range: %s", r.out);
	char policy[] = "/tmp/pf-report-policy-XXXXXX";
	int pfd = mkstemp(policy);
	dprintf(pfd, "version = 1;\napps = ( { name = \"web\"; range = [ 61000, 61099 ]; } );\n");
	close(pfd);
	char *argv[] = {(char *)build_path("portfence"), "report", "-c", policy, log, NULL};
	run_program(&r, argv, NULL, NULL);
	unlink(policy);
	cr_assert_eq(r.status, 0);
	cr_expect(strstr(r.out, "app web\n  assignments 6, distinct ports 4 of 100 (range 61000-61099): coverage 4.0%"),
		  "%s", r.out);
	cr_expect(strstr(r.out, "attempts mean 1.67, max 4"), "%s", r.out);
	cr_expect(strstr(r.out, "  ports 61000 |"), "histogram: %s", r.out);
	cr_expect(strstr(r.out, "malformed lines skipped: 3"), "%s", r.out);
	unlink(log);
}

Test(operator, report_streams_a_large_log, .timeout = 120)
{
	char log[] = "/tmp/pf-biglog-XXXXXX", cmd[1024];
	int fd = mkstemp(log);
	FILE *f = fdopen(fd, "w");
	const unsigned lines = 400000;

	for (unsigned i = 0; i < lines; i++)
		fprintf(f, "{\"ts\":\"2026-11-21T10:00:00.%06uZ\",\"event\":\"assign\",\"app\":\"app%u\",\"pid\":%u,"
			   "\"exe\":\"/usr/bin/curl\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"127.0.0.1:%u\","
			   "\"remote\":\"127.0.0.1:80\",\"algorithm\":\"double-hash\",\"attempts\":1,\"result\":\"ok\"}\n",
			i % 1000000, i % 4, i, 61000 + i % 1000);
	fclose(f);
	/* The report's peak memory, measured from outside it.  Under ASan its
	 * quarantine of freed memory (256 MB by default) would be measured,
	 * not the report: it is turned off there. */
	snprintf(cmd, sizeof(cmd),
		 "import resource, subprocess, os\n"
		 "env = dict(os.environ, ASAN_OPTIONS='quarantine_size_mb=0:detect_leaks=0')\n"
		 "out = subprocess.run(['%s', 'report', '--json', '%s'], capture_output=True, text=True, env=env).stdout\n"
		 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\nprint(out)",
		 build_path("portfence"), log);
	char *argv[] = {"python3", "-c", cmd, NULL};
	struct run_result r;
	run_program(&r, argv, NULL, NULL);
	unlink(log);
	cr_assert_eq(r.status, 0, "%s", r.err);
	long max_rss_kb = atol(r.out);
	json_error_t error;
	json_t *root = json_loads(strchr(r.out, '\n') + 1, 0, &error);
	cr_assert_not_null(root, "%s", r.out);
	for (int a = 0; a < 4; a++) {
		char name[8];
		snprintf(name, sizeof(name), "app%d", a);
		cr_expect_eq(INT_OF(app_entry(root, name), "assignments"), lines / 4);
		cr_expect_eq(INT_OF(app_entry(root, name), "distinct_ports"), 250);
	}
	/* ~100 MB of log; memory must not grow with it. */
	cr_expect_lt(max_rss_kb, 32 * 1024, "report used %ld KiB", max_rss_kb);
	json_decref(root);
}

Test(operator, install_into_destdir_and_run_from_there, .timeout = 120)
{
	char dir[] = "/tmp/pf-install-XXXXXX", cmd[2048];
	struct run_result r;
	struct server srv;

	cr_assert_not_null(mkdtemp(dir));
	const char *build = getenv("PORTFENCE_BUILD");
	snprintf(cmd, sizeof(cmd), "make -s install BUILD='%s' PREFIX=/opt/pf DESTDIR='%s'", build ? build : "build", dir);
	char *make[] = {"sh", "-c", cmd, NULL};
	run_program(&r, make, NULL, NULL);
	cr_assert_eq(r.status, 0, "make install: %s%s", r.out, r.err);
	static const char *const installed[] = {
		"opt/pf/bin/portfence", "opt/pf/lib/portfence/libportfence.so",
		"opt/pf/share/man/man1/portfence.1", "opt/pf/share/man/man5/portfence.conf.5",
		"opt/pf/share/doc/portfence/example.conf", "etc/logrotate.d/portfence",
		"opt/pf/lib/systemd/system/portfence.service",
		"opt/pf/share/bash-completion/completions/portfence",
		"opt/pf/share/doc/portfence/examples/systemd/shim-dropin.conf",
		"opt/pf/share/doc/portfence/examples/systemd/bpf-slice-dropin.conf",
	};
	for (size_t i = 0; i < sizeof(installed) / sizeof(*installed); i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, installed[i]);
		cr_expect_eq(access(path, F_OK), 0, "%s not installed", installed[i]);
	}
	/* groff with every warning on finds nothing to say. */
	snprintf(cmd, sizeof(cmd), "groff -man -ww -z %s/opt/pf/share/man/man1/portfence.1 "
				   "%s/opt/pf/share/man/man5/portfence.conf.5", dir, dir);
	char *groff[] = {"sh", "-c", cmd, NULL};
	run_program(&r, groff, NULL, NULL);
	cr_expect_eq(r.status, 0);
	cr_expect_str_eq(r.err, "", "groff warnings: %s", r.err);
	/* Every command and key of SPEC is documented. */
	static const char *const documented[][2] = {
		{"man1/portfence.1", "B portfence status"},  {"man1/portfence.1", "B portfence attach"},
		{"man1/portfence.1", "B portfence detach"},  {"man1/portfence.1", "B portfence daemon"},
		{"man1/portfence.1", "RB [ \\-\\-bpf"}, {"man1/portfence.1", "portfence_ports_in_use"},
		{"man1/portfence.1", "B portfence explain"}, {"man1/portfence.1", "RB [ \\-\\-user"},
		{"man1/portfence.1", "B portfence \\-\\-version"}, {"man1/portfence.1", "B portfence help"},
		{"man1/portfence.1", "B \\-\\-until"},
		{"man5/portfence.conf.5", "B cgroups = "},  {"man5/portfence.conf.5", "B udp_unbound = "},
	};
	for (size_t i = 0; i < sizeof(documented) / sizeof(*documented); i++) {
		snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' %s/opt/pf/share/man/%s", documented[i][1], dir,
			 documented[i][0]);
		cr_expect_eq(system(cmd), 0, "%s does not document '%s'", documented[i][0], documented[i][1]);
	}

	/* The installed tool finds the installed library, not the build's. */
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	char tool[512], policy[512], code[256];
	snprintf(tool, sizeof(tool), "%s/opt/pf/bin/portfence", dir);
	snprintf(policy, sizeof(policy), "%s/policy.conf", dir);
	FILE *f = fopen(policy, "w");
	fprintf(f, "state_dir = \"%s/state\";\ndefault = \"i\";\napps = ( { name = \"i\"; range = [ 63300, 63399 ]; } );\n", dir);
	fclose(f);
	snprintf(code, sizeof(code), "import socket, os\ns = socket.create_connection(('127.0.0.1', %u))\n"
				     "print(s.getsockname()[1], os.environ['LD_PRELOAD'])\n", srv.port);
	char *run[] = {tool, "run", "-c", policy, "--", "python3", "-c", code, NULL};
	run_program(&r, run, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = 0;
	char preload[1024] = "";
	cr_assert_eq(sscanf(r.out, "%u %1023s", &port, preload), 2, "%s", r.out);
	cr_expect(port >= 63300 && port <= 63399, "port %u", port);
	char expected[600];
	snprintf(expected, sizeof(expected), "%s/opt/pf/lib/portfence/libportfence.so", dir);
	cr_expect(strstr(preload, expected) != NULL, "preloaded %s", preload);
	snprintf(cmd, sizeof(cmd), "%s/state", dir);
	pf_state_remove_all(cmd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}
