/* `portfence report` on a log of many distinct app names: each counted
 * right, in time and memory that grow with the number of apps only. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define NAMES 40000

/* App i: two assignments (ports 61000 + i % 100 and the next one), and a
 * denial for every third app. */
static void write_log(const char *path)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	for (unsigned i = 0; i < NAMES; i++) {
		for (unsigned k = 0; k < 2; k++)
			fprintf(f, "{\"ts\":\"2026-11-21T10:00:00.%06uZ\",\"event\":\"assign\",\"app\":\"app-%05u\","
				   "\"pid\":%u,\"exe\":\"/usr/bin/curl\",\"proto\":\"tcp\",\"family\":\"ipv4\","
				   "\"local\":\"127.0.0.1:%u\",\"remote\":\"127.0.0.1:80\",\"algorithm\":\"random\","
				   "\"attempts\":%u,\"result\":\"ok\"}\n",
				i, i, i, 61000 + (i + k) % 100, 1 + k);
		if (i % 3 == 0)
			fprintf(f, "{\"ts\":\"2026-11-21T10:00:01.000000Z\",\"event\":\"deny\",\"app\":\"app-%05u\","
				   "\"pid\":1,\"exe\":\"x\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"0.0.0.0:0\","
				   "\"remote\":\"192.0.2.1:25\",\"algorithm\":\"random\",\"attempts\":0,\"result\":\"EPERM\"}\n",
				i);
	}
	fclose(f);
}

static void expect_app(json_t *entry, unsigned i)
{
	char name[16];
	snprintf(name, sizeof(name), "app-%05u", i);
	cr_assert_str_eq(json_string_value(json_object_get(entry, "app")), name, "apps in log order");
	cr_expect_eq(json_integer_value(json_object_get(entry, "assignments")), 2, "%s", name);
	cr_expect_eq(json_integer_value(json_object_get(entry, "distinct_ports")), 2, "%s", name);
	cr_expect_eq(json_integer_value(json_object_get(entry, "denials")), i % 3 == 0, "%s", name);
	cr_expect_eq(json_integer_value(json_object_get(entry, "attempts_max")), 2, "%s", name);
}

Test(report_names, many_distinct_names_counted, .timeout = 300)
{
	struct temp_dir temp;
	char out[128], cmd[1024];
	struct run_result r;
	struct timespec start, end;

	temp_dir_make(&temp, "names");
	snprintf(out, sizeof(out), "%s/report.json", temp.dir);
	write_log(temp.log);
	/* Peak memory measured from outside; ASan's quarantine of freed
	 * memory would be measured, not the report, so it is off. */
	snprintf(cmd, sizeof(cmd),
		 "import resource, subprocess, os\n"
		 "env = dict(os.environ, ASAN_OPTIONS='quarantine_size_mb=0:detect_leaks=0')\n"
		 "with open('%s', 'w') as out:\n"
		 "    rc = subprocess.run(['%s', 'report', '--json', '%s'], stdout=out, env=env).returncode\n"
		 "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n",
		 out, build_path("portfence"), temp.log);
	char *argv[] = {"python3", "-c", cmd, NULL};
	clock_gettime(CLOCK_MONOTONIC, &start);
	run_program(&r, argv, NULL, NULL);
	clock_gettime(CLOCK_MONOTONIC, &end);
	int rc = -1;
	long max_rss_kb = 0;
	cr_assert_eq(sscanf(r.out, "%d %ld", &rc, &max_rss_kb), 2, "%s %s", r.out, r.err);
	cr_assert_eq(rc, 0, "%s", r.err);
	fprintf(stderr, "report_names: %u names in %.2f s, peak %ld KiB\n", NAMES,
		(double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9,
		max_rss_kb);

	json_error_t error;
	json_t *root = json_load_file(out, 0, &error);
	cr_assert_not_null(root, "%s: %s", out, error.text);
	json_t *apps = json_object_get(root, "apps");
	cr_assert_eq(json_array_size(apps), NAMES);
	for (unsigned i = 0; i < NAMES; i += 997)
		expect_app(json_array_get(apps, i), i);
	expect_app(json_array_get(apps, NAMES - 1), NAMES - 1);
	cr_expect_eq(json_integer_value(json_object_get(root, "malformed_lines")), 0);
	/* A few hundred bytes per app; a page or more per app (160 MiB)
	 * would show.  AddressSanitizer's redzones and quarantine about
	 * triple a build's heap (22 MiB plain, 76 MiB sanitized, measured). */
	const char *sanitized = getenv("PORTFENCE_TEST_PRELOAD");
	long limit_kb = sanitized && sanitized[0] ? 128 * 1024 : 64 * 1024;
	cr_expect_lt(max_rss_kb, limit_kb, "report used %ld KiB for %u apps", max_rss_kb, NAMES);
	json_decref(root);
	temp_dir_remove(&temp);
}
