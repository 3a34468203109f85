/* Policy paths that are not regular files (FIFO, device), named directly,
 * in a policy directory, or by @include, are refused at once, never
 * waited on; and many apps load in O(n log n), their clashes still found. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/policy.h"

static char dir[] = "/tmp/pf-unit-files-XXXXXX";

static void make_dir(void)
{
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(load_files, .init = make_dir, .fini = remove_dir, .timeout = 20);

static const char *in_dir(const char *name)
{
	static char paths[4][256];
	static int next;
	char *path = paths[next++ % 4];
	snprintf(path, 256, "%s/%s", dir, name);
	return path;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	fclose(f);
}

static bool diags_have(const struct pf_diags *diags, const char *wanted)
{
	for (size_t i = 0; i < diags->count; i++)
		if (strcmp(diags->lines[i], wanted) == 0)
			return true;
	return false;
}

static void expect_refused(const char *policy_path, const char *wanted)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_expect_eq(pf_policy_load(policy_path, &policy, &diags), PF_LOAD_UNREADABLE);
	cr_expect(diags_have(&diags, wanted), "no \"%s\" (first: %s)", wanted,
		  diags.count ? diags.lines[0] : "none");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

Test(load_files, fifo_policy_refused)
{
	const char *fifo = in_dir("policy.conf");
	char wanted[300];

	cr_assert_eq(mkfifo(fifo, 0644), 0);
	snprintf(wanted, sizeof(wanted), "%s: not a regular file (a FIFO)", fifo);
	expect_refused(fifo, wanted);
}

Test(load_files, device_policy_refused)
{
	expect_refused("/dev/zero", "/dev/zero: not a regular file (a character device)");
}

Test(load_files, fifo_in_policy_directory_refused)
{
	const char *fifo = in_dir("20-fifo.conf");
	char wanted[300];

	write_file(in_dir("10-web.conf"), "apps = ( { name = \"web\"; range = [ 61000, 61099 ]; } );\n");
	cr_assert_eq(mkfifo(fifo, 0644), 0);
	snprintf(wanted, sizeof(wanted), "%s: not a regular file (a FIFO)", fifo);
	expect_refused(dir, wanted);
}

Test(load_files, included_fifo_refused)
{
	const char *fifo = in_dir("apps.inc"), *inner = in_dir("inner.inc"), *top = in_dir("top.conf");
	char text[600], wanted[300];

	cr_assert_eq(mkfifo(fifo, 0644), 0);
	snprintf(text, sizeof(text), "on_error = \"pass\";\n  @include \"%s\"\n", fifo);
	write_file(top, text);
	snprintf(wanted, sizeof(wanted), "%s: not a regular file (a FIFO)", fifo);
	expect_refused(top, wanted);

	/* One include further down. */
	snprintf(text, sizeof(text), "@include \"%s\"\n", fifo);
	write_file(inner, text);
	snprintf(text, sizeof(text), "version = 1;\n@include \"%s\"\n", inner);
	write_file(top, text);
	expect_refused(top, wanted);

	struct pf_policy policy;
	struct pf_diags diags = {0};
	snprintf(text, sizeof(text), "@include \"%s\"\n", fifo);
	cr_expect_eq(pf_policy_load_text("text", text, &policy, &diags), PF_LOAD_UNREADABLE);
	cr_expect(diags_have(&diags, wanted), "%s", diags.count ? diags.lines[0] : "none");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

Test(load_files, regular_include_still_loads)
{
	const char *inc = in_dir("apps.inc"), *top = in_dir("top.conf");
	char text[600];

	write_file(inc, "apps = ( { name = \"web\"; range = [ 61000, 61099 ]; } );\n");
	snprintf(text, sizeof(text), "version = 1;\n@include \"%s\"\n", inc);
	write_file(top, text);
	struct pf_policy policy;
	struct pf_diags diags = {0};
	cr_expect_eq(pf_policy_load(top, &policy, &diags), PF_LOAD_OK, "%s",
		     diags.count ? diags.lines[0] : "");
	cr_expect_eq(policy.app_count, 1);
	cr_expect_str_eq(policy.apps[0].file ? policy.apps[0].name : "", "web");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

/* 20,000 apps, the clashes checked by sorting: an overlap and a duplicate
 * name are still found, each with both places. */
Test(load_files, many_apps_clashes_found)
{
	const unsigned count = 20000;
	size_t cap = (size_t)count * 120 + 64, used = 0;
	char *text = malloc(cap);

	cr_assert_not_null(text);
	used += (size_t)snprintf(text + used, cap - used, "apps = (\n");
	for (unsigned i = 0; i < count; i++) {
		unsigned lo = 1024 + 3 * i, hi = lo + 2 + (i == 777);
		/* App 15000 takes app 4242's name. */
		used += (size_t)snprintf(text + used, cap - used,
					 "  { name = \"app%u\";\n    range = [ %u, %u ]; }%s\n",
					 i == 15000 ? 4242 : i, lo, hi, i + 1 < count ? "," : "");
	}
	snprintf(text + used, cap - used, ");\n");

	struct pf_policy policy;
	struct pf_diags diags = {0};
	cr_expect_eq(pf_policy_load_text("many.conf", text, &policy, &diags), PF_LOAD_INVALID);
	cr_expect_eq(policy.app_count, count);
	/* App i opens on line 2 + 2i, its range on the next line. */
	cr_expect(diags_have(&diags, "many.conf:1559: range 3358-3360 of app 'app778' overlaps "
				     "range 3355-3358 of app 'app777' (many.conf:1557)"),
		  "%s", diags.count ? diags.lines[0] : "none");
	cr_expect(diags_have(&diags, "many.conf:30002: duplicate app name 'app4242' "
				     "(first defined at many.conf:8486)"),
		  "%s", diags.count > 1 ? diags.lines[1] : "none");
	cr_expect_eq(diags.count, 2, "%s", diags.count ? diags.lines[0] : "none");
	cr_expect_eq(pf_policy_find_app(&policy, "app4242"), 4242, "the first of the two");
	cr_expect_eq(pf_policy_find_app(&policy, "app19999"), 19999);
	cr_expect_eq(pf_policy_find_app(&policy, "app20000"), PF_SELECT_UNKNOWN_APP);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	free(text);
}
