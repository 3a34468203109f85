/* Pin names: a cgroup path as one directory name, and back. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernel/pins.h"

static void expect_round_trip(const char *path, const char *encoded)
{
	char name[256], back[256];
	cr_assert_eq(pf_pin_name_encode(path, name, sizeof(name)), (int)strlen(encoded), "%s", path);
	cr_expect_str_eq(name, encoded);
	cr_assert_eq(pf_pin_name_decode(name, back, sizeof(back)), (int)strlen(back));
	cr_expect_str_eq(back, path[0] == '/' ? path + 1 : path);
}

Test(pins, encodes_slashes_and_percents)
{
	expect_round_trip("system.slice/legacy.service", "system%2Eslice%2Flegacy%2Eservice");
	expect_round_trip("a%2Fb/c", "a%252Fb%2Fc");
	expect_round_trip("plain", "plain");
	expect_round_trip("/portfence/web-42", "portfence%2Fweb-42");
	expect_round_trip("%", "%25");
	expect_round_trip("x/y/z%", "x%2Fy%2Fz%25");
	expect_round_trip("..", "%2E%2E");
}

Test(pins, decodes_lower_case_slash)
{
	char out[64];
	cr_assert_eq(pf_pin_name_decode("a%2fb", out, sizeof(out)), 3);
	cr_expect_str_eq(out, "a/b");
}

Test(pins, refuses_what_encode_never_writes)
{
	char out[64];
	cr_expect_eq(pf_pin_name_decode("", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a/b", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%2", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%41", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("///", out, sizeof(out)), -1);
}

Test(pins, never_overflows)
{
	char out[8];
	cr_expect_eq(pf_pin_name_encode("abcdefg", out, sizeof(out)), 7);
	cr_expect_eq(pf_pin_name_encode("abcdefgh", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("abcde/", out, sizeof(out)), -1, "the escape does not fit");
	cr_expect_eq(pf_pin_name_decode("abcdefg", out, sizeof(out)), 7);
	cr_expect_eq(pf_pin_name_decode("abcdefgh", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("abcdefg%25", out, sizeof(out)), -1);
}

/* What pf_pins_each saw, "APP|PATH" in the order it called. */
struct seen {
	char lines[8][64];
	size_t count;
	size_t stop_after;	/* 0: never stop */
};

static bool note(void *opaque, const char *app_name, const char *cgroup_path)
{
	struct seen *seen = opaque;
	cr_assert_lt(seen->count, 8);
	snprintf(seen->lines[seen->count++], sizeof(seen->lines[0]), "%s|%s", app_name, cgroup_path);
	return seen->count == seen->stop_after;
}

static int compare_lines(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void make_at(const char *root, const char *name, bool directory)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", root, name);
	if (directory) {
		cr_assert_eq(mkdir(path, 0700), 0, "%s", path);
		return;
	}
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fclose(f);
}

Test(pins, each_attachment_under_a_root)
{
	char root[] = "/tmp/pf-pins-XXXXXX", missing[64], command[64];
	static const char *const dirs[] = {
		"web%2Ex", "web%2Ex/system%2Eslice%2Fa", "web%2Ex/%2Fabs", "web%2Ex/.hidden", "web%2Ex/bad%41",
		"other", "other/x", ".dot", ".dot/y", "bad%zz", "bad%zz/z",
	};
	struct seen seen = {0};

	cr_assert_not_null(mkdtemp(root));
	for (size_t i = 0; i < sizeof(dirs) / sizeof(*dirs); i++)
		make_at(root, dirs[i], true);
	make_at(root, "web%2Ex/a-file", false);
	make_at(root, "a-file", false);

	cr_expect_eq(pf_pins_each(root, note, &seen), 0);
	qsort(seen.lines, seen.count, sizeof(seen.lines[0]), compare_lines);
	cr_assert_eq(seen.count, 3);
	cr_expect_str_eq(seen.lines[0], "other|x");
	cr_expect_str_eq(seen.lines[1], "web.x|/abs", "the path as its pin name has it");
	cr_expect_str_eq(seen.lines[2], "web.x|system.slice/a");

	seen = (struct seen){.stop_after = 1};
	cr_expect_eq(pf_pins_each(root, note, &seen), 0);
	cr_expect_eq(seen.count, 1, "true stops the walk");

	seen = (struct seen){0};
	cr_expect_eq(pf_pins_each_of_app(root, "web.x", note, &seen), 0);
	cr_expect_eq(seen.count, 2);
	cr_expect_eq(pf_pins_each_of_app(root, "never", note, &seen), -ENOENT);
	snprintf(missing, sizeof(missing), "%s/missing", root);
	cr_expect_eq(pf_pins_each(missing, note, &seen), -ENOENT);
	cr_expect_eq(seen.count, 2);

	snprintf(command, sizeof(command), "rm -rf %s", root);
	cr_assert_eq(system(command), 0);
}

/* What the raw walks saw, "DIR|NAME" (DIR relative to the root) in the
 * order they called. */
static bool note_raw(void *opaque, const char *app_dir, const char *name)
{
	struct seen *seen = opaque;
	const char *app = strrchr(app_dir, '/') + 1;
	cr_assert_lt(seen->count, 8);
	snprintf(seen->lines[seen->count++], sizeof(seen->lines[0]), "%s|%s", app, name ? name : "");
	return seen->count == seen->stop_after;
}

static bool note_app_dir(void *opaque, const char *app_dir)
{
	return note_raw(opaque, app_dir, NULL);
}

Test(pins, each_entry_by_raw_name)
{
	char root[] = "/tmp/pf-pins-XXXXXX", app_dir[64], missing[64], command[64];
	static const char *const dirs[] = {"web%2Ex", "web%2Ex/system%2Eslice%2Fa", "web%2Ex/.hidden", "bad%zz",
					   "bad%zz/z", ".dot", ".dot/y"};
	struct seen seen = {0};

	cr_assert_not_null(mkdtemp(root));
	for (size_t i = 0; i < sizeof(dirs) / sizeof(*dirs); i++)
		make_at(root, dirs[i], true);
	make_at(root, "web%2Ex/a-file", false);

	cr_expect_eq(pf_pins_each_entry(root, note_raw, &seen), 0);
	qsort(seen.lines, seen.count, sizeof(seen.lines[0]), compare_lines);
	cr_assert_eq(seen.count, 3, "names undecoded, files too, no '.' names");
	cr_expect_str_eq(seen.lines[0], "bad%zz|z");
	cr_expect_str_eq(seen.lines[1], "web%2Ex|a-file");
	cr_expect_str_eq(seen.lines[2], "web%2Ex|system%2Eslice%2Fa");

	seen = (struct seen){.stop_after = 1};
	cr_expect_eq(pf_pins_each_entry(root, note_raw, &seen), 0);
	cr_expect_eq(seen.count, 1, "true stops the walk");

	seen = (struct seen){0};
	cr_expect_eq(pf_pin_app_dirs_each(root, note_app_dir, &seen), 0);
	cr_expect_eq(seen.count, 2, "the app directories bad%%zz and web%%2Ex");
	snprintf(app_dir, sizeof(app_dir), "%s/web%%2Ex", root);
	seen = (struct seen){0};
	cr_expect_eq(pf_pin_entries_each(app_dir, note_raw, &seen), 0);
	cr_expect_eq(seen.count, 2);
	snprintf(missing, sizeof(missing), "%s/missing", root);
	cr_expect_eq(pf_pin_entries_each(missing, note_raw, &seen), -ENOENT);
	cr_expect_eq(pf_pin_app_dirs_each(missing, note_app_dir, &seen), -ENOENT);
	cr_expect_eq(pf_pins_each_entry(missing, note_raw, &seen), -ENOENT);
	cr_expect_eq(seen.count, 2);

	snprintf(command, sizeof(command), "rm -rf %s", root);
	cr_assert_eq(system(command), 0);
}
