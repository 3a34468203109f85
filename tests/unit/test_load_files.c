/* Policy paths that are not regular files (FIFO, device), named directly,
 * in a policy directory, or by @include, are refused at once, never
 * waited on; and many apps load in O(n log n), their clashes still found. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"

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
