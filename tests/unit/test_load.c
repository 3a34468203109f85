/* Loading policies: every invalid class names its file and line; valid
 * policies load to the model they describe. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/policy.h"

#define FIXTURES "tests/fixtures"

static char *read_expectation(const char *name)
{
	char path[256];
	static char line[512];
	snprintf(path, sizeof(path), FIXTURES "/invalid/%s.expect", name);
	FILE *file = fopen(path, "r");
	cr_assert_not_null(file, "missing %s", path);
	cr_assert_not_null(fgets(line, sizeof(line), file));
	fclose(file);
	line[strcspn(line, "\n")] = '\0';
	return line;
}

static bool diags_contain(const struct pf_diags *diags, const char *wanted)
{
	for (size_t i = 0; i < diags->count; i++)
		if (strstr(diags->lines[i], wanted) == diags->lines[i])
			return true;
	return false;
}

struct invalid_case { char name[32]; };

ParameterizedTestParameters(load, invalid_fixture)
{
	static struct invalid_case cases[] = {
		{"unknown-key"}, {"unknown-app-key"}, {"wrong-type-range"}, {"wrong-type-name"},
		{"wrong-type-syslog"}, {"port-zero"}, {"port-too-big"}, {"lo-above-hi"},
		{"overlap"}, {"duplicate-name"}, {"unknown-algorithm"}, {"malformed-rule"},
		{"malformed-rule-v6"}, {"syntax-error"}, {"unknown-default"}, {"bad-mode"},
		{"bad-protocol"}, {"missing-range"}, {"bad-version"}, {"kernel-cgroups"},
		{"bad-udp-unbound"}, {"bad-cgroup"}, {"cgroup-glob-overlap"}, {"bad-cgroup-glob"},
	};
	return cr_make_param_array(struct invalid_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct invalid_case *c, load, invalid_fixture)
{
	char path[256], wanted[800];
	struct pf_policy policy;
	struct pf_diags diags = {0};

	snprintf(path, sizeof(path), FIXTURES "/invalid/%s.conf", c->name);
	snprintf(wanted, sizeof(wanted), "%s:%s", path, read_expectation(c->name));
	enum pf_load_status status = pf_policy_load(path, &policy, &diags);
	cr_expect_neq(status, PF_LOAD_OK, "%s loaded as valid", path);
	cr_expect(diags_contain(&diags, wanted), "%s: no diagnostic starting \"%s\" (first: %s)",
		  c->name, wanted, diags.count ? diags.lines[0] : "none");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

Test(load, every_invalid_fixture_is_in_the_list)
{
	/* A fixture added without a test case would silently go untested. */
	FILE *ls = popen("ls " FIXTURES "/invalid/*.conf | wc -l", "r");
	int count = 0;
	cr_assert_eq(fscanf(ls, "%d", &count), 1);
	pclose(ls);
	cr_expect_eq(count, 24);
}

Test(load, full_valid_policy)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_assert_eq(pf_policy_load(FIXTURES "/valid/full.conf", &policy, &diags), PF_LOAD_OK,
		     "%s", diags.count ? diags.lines[0] : "");
	cr_expect_str_eq(policy.log_file, "/tmp/pf-full.jsonl");
	cr_expect(policy.log_syslog);
	cr_expect(policy.on_error_pass);
	cr_expect_str_eq(policy.state_dir, "/tmp/pf-full-state");
	cr_assert_eq(policy.app_count, 2);
	cr_expect_eq(policy.default_app, 1);

	const struct pf_app *web = &policy.apps[0];
	cr_expect_str_eq(web->name, "web");
	cr_expect_eq(web->exe_globs.count, 1);
	cr_expect_str_eq(web->exe_globs.globs[0], "/usr/bin/curl*");
	cr_expect_str_eq(web->comm_globs.globs[0], "wget");
	cr_expect_eq(web->range_lo, 61000);
	cr_expect_eq(web->range_hi, 61099);
	cr_expect_eq(web->algorithm, PF_ALGO_DOUBLE_HASH);
	cr_expect_eq(web->protocols, PF_PROTO_TCP | PF_PROTO_UDP);
	cr_expect_eq(web->mode, PF_MODE_ENFORCE);
	cr_expect_not(web->deny_explicit_bind);
	cr_expect(web->has_allow);
	cr_expect_eq(web->allow.count, 3);
	cr_expect_eq(web->deny.count, 1);
	cr_expect_eq(web->line, 7, "the line of the app's opening brace");

	const struct pf_app *db = &policy.apps[1];
	cr_expect_eq(db->algorithm, PF_ALGO_SEQUENTIAL);
	cr_expect_eq(db->protocols, PF_PROTO_TCP);
	cr_expect_eq(db->mode, PF_MODE_AUDIT);
	cr_expect(db->deny_explicit_bind);
	cr_expect_not(db->has_allow);
	cr_expect_eq(db->cgroups.count, 2);
	cr_expect_str_eq(db->cgroups.globs[1], "/system.slice/db2.service");
	cr_expect(db->udp_unbound_audit);
	cr_expect_eq(web->cgroups.count, 0);
	cr_expect_not(web->udp_unbound_audit);
	pf_policy_free(&policy);
}

Test(load, minimal_policy_gets_defaults)
{
	struct pf_policy policy;

	cr_assert_eq(pf_policy_load(FIXTURES "/valid/minimal.conf", &policy, NULL), PF_LOAD_OK);
	cr_expect_null(policy.log_file);
	cr_expect_not(policy.on_error_pass);
	cr_expect_eq(policy.default_app, PF_SELECT_PASS);
	cr_expect_eq(policy.apps[0].range_lo, 50000);
	cr_expect_eq(policy.apps[0].range_hi, 50000);
	cr_expect_eq(policy.apps[0].mode, PF_MODE_ENFORCE);
	cr_expect_eq(policy.apps[0].protocols, PF_PROTO_TCP | PF_PROTO_UDP);
	pf_policy_free(&policy);
}

Test(load, directory_reads_conf_files_in_name_order)
{
	struct pf_policy policy;

	cr_assert_eq(pf_policy_load(FIXTURES "/valid/dir", &policy, NULL), PF_LOAD_OK);
	cr_assert_eq(policy.app_count, 2);
	cr_expect_str_eq(policy.apps[0].name, "web");
	cr_expect_str_eq(policy.apps[1].name, "dns");
	cr_expect_eq(policy.apps[1].algorithm, PF_ALGO_RANDOM_INCREMENTS);
	cr_expect_str_eq(policy.log_file, "/tmp/pf-dir.jsonl");
	cr_expect(strstr(policy.apps[1].file, "20-dns.conf") != NULL);
	pf_policy_free(&policy);
}

static void write_file(const char *path, const char *text)
{
	FILE *file = fopen(path, "w");
	cr_assert_not_null(file);
	fputs(text, file);
	fclose(file);
}

Test(load, overlap_across_files_names_both)
{
	char dir[] = "/tmp/pf-unit-XXXXXX";
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_assert_not_null(mkdtemp(dir));
	char a[300], b[300], wanted[700];
	snprintf(a, sizeof(a), "%s/a.conf", dir);
	snprintf(b, sizeof(b), "%s/b.conf", dir);
	write_file(a, "apps = ( { name = \"one\"; range = [ 1000, 1100 ]; } );\n");
	write_file(b, "\napps = ( { name = \"two\";\n range = [ 1100, 1200 ]; } );\n");
	cr_expect_eq(pf_policy_load(dir, &policy, &diags), PF_LOAD_INVALID);
	snprintf(wanted, sizeof(wanted), "%s:3: range 1100-1200 of app 'two' overlaps range 1000-1100 of app 'one' (%s:1)", b, a);
	cr_expect(diags_contain(&diags, wanted), "got %s", diags.count ? diags.lines[0] : "none");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

Test(load, setting_in_two_files_is_an_error)
{
	char dir[] = "/tmp/pf-unit-XXXXXX";
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_assert_not_null(mkdtemp(dir));
	char a[300], b[300], wanted[700];
	snprintf(a, sizeof(a), "%s/a.conf", dir);
	snprintf(b, sizeof(b), "%s/b.conf", dir);
	write_file(a, "on_error = \"pass\";\n");
	write_file(b, "on_error = \"deny\";\n");
	cr_expect_eq(pf_policy_load(dir, &policy, &diags), PF_LOAD_INVALID);
	snprintf(wanted, sizeof(wanted), "%s:1: 'on_error' is already set at %s:1", b, a);
	cr_expect(diags_contain(&diags, wanted));
	/* The first setting stays in force, so on_error is still honoured. */
	cr_expect(policy.on_error_pass);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

Test(load, invalid_policy_keeps_its_on_error)
{
	char path[] = "/tmp/pf-unit-XXXXXX";
	int fd = mkstemp(path);
	struct pf_policy policy;

	cr_assert_geq(fd, 0);
	close(fd);
	write_file(path, "on_error = \"pass\";\napps = ( { name = \"x\"; range = [ 5, 1 ]; } );\n");
	cr_expect_eq(pf_policy_load(path, &policy, NULL), PF_LOAD_INVALID);
	cr_expect(policy.on_error_pass);
	pf_policy_free(&policy);
	unlink(path);
}

Test(load, unreadable_and_unparsable_mean_deny)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_expect_eq(pf_policy_load("/nonexistent/portfence.conf", &policy, &diags), PF_LOAD_UNREADABLE);
	cr_expect_not(policy.on_error_pass);
	cr_expect(diags_contain(&diags, "/nonexistent/portfence.conf: cannot read"));
	pf_diags_free(&diags);
	pf_policy_free(&policy);

	cr_expect_eq(pf_policy_load(FIXTURES "/invalid/syntax-error.conf", &policy, NULL), PF_LOAD_UNREADABLE);
	cr_expect_not(policy.on_error_pass);
	pf_policy_free(&policy);
}

Test(load, each_malformed_rule_names_its_own_line)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	const char *text = "apps = ( { name = \"r\"; range = [ 1000, 1100 ];\n"
			   "  deny = ( 25,\n"
			   "    \"10.0.0.0/8\",\n"
			   "    \"10.0.0.0/99\" ); } );\n";

	/* A list, as an array may not mix types in libconfig. */
	cr_assert_eq(pf_policy_load_text("rules.conf", text, &policy, &diags), PF_LOAD_INVALID);
	cr_assert_eq(policy.app_count, 1);
	cr_expect(diags_contain(&diags, "rules.conf:2: deny must hold only strings"));
	cr_expect(diags_contain(&diags, "rules.conf:4: malformed rule \"10.0.0.0/99\""),
		  "got %s", diags.count > 1 ? diags.lines[1] : "one line");
	cr_expect_eq(policy.apps[0].deny.count, 1);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}

Test(load, empty_file_is_refused)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_expect_eq(pf_policy_load_text("empty.conf", "", &policy, &diags), PF_LOAD_INVALID);
	cr_expect(diags_contain(&diags, "empty.conf: holds no settings"));
	cr_expect_not(policy.on_error_pass);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	cr_expect_eq(pf_policy_load_text("c.conf", "# only a comment\n", &policy, NULL), PF_LOAD_INVALID);
	pf_policy_free(&policy);
	cr_expect_eq(pf_policy_load_text("none.conf", "apps = ( );\n", &policy, NULL), PF_LOAD_OK,
		     "an explicit empty app list is the way to confine nothing");
	pf_policy_free(&policy);
}

Test(load, empty_directory_is_unusable)
{
	char dir[] = "/tmp/pf-unit-XXXXXX";
	struct pf_policy policy;
	struct pf_diags diags = {0};

	cr_assert_not_null(mkdtemp(dir));
	cr_expect_eq(pf_policy_load(dir, &policy, &diags), PF_LOAD_UNREADABLE);
	cr_expect_eq(diags.count, 1);
	cr_expect(strstr(diags.lines[0], "no *.conf file") != NULL);
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	rmdir(dir);
}

/* A cgroup written with a trailing '/' is the same cgroup: the daemon's
 * matcher and the kernel's birth table must see one path, or a cgroup
 * is confined when it is made after the daemon starts and not when it
 * was there before. */
Test(load, a_cgroup_with_a_trailing_slash_is_the_same_cgroup)
{
	struct pf_policy policy;
	const char *text = "version = 1;\napps = ( { name = \"a\"; range = [ 61000, 61009 ];\n"
			   "  cgroups = [ \"system.slice/x.service/\", \"/system.slice/y-*//\" ]; } );\n";

	cr_assert_eq(pf_policy_load_text("t.conf", text, &policy, NULL), PF_LOAD_OK);
	cr_expect_str_eq(policy.apps[0].cgroups.globs[0], "system.slice/x.service");
	cr_expect_str_eq(policy.apps[0].cgroups.globs[1], "/system.slice/y-*");
	pf_policy_free(&policy);
}

static void add_diag(void *diags, const char *file, int line, const char *fmt, va_list args)
{
	pf_diags_vadd(diags, file, line, fmt, args);
}

/* One cgroup written with the mount and without: the loader, which
 * reads no mount, takes the two; `check` passes the mount and refuses
 * them, and does not say again a pair the loader refused as written. */
Test(load, cgroup_overlap_once_the_mount_is_taken_off)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	const char *text = "version = 1;\napps = (\n"
			   "  { name = \"a\"; range = [ 61000, 61009 ]; cgroups = [ \"/sys/fs/cgroup/x.slice/y\", \"p/*\" ]; },\n"
			   "  { name = \"b\"; range = [ 61010, 61019 ]; cgroups = [ \"x.slice/*\", \"p/z\" ]; } );\n";

	cr_assert_eq(pf_policy_load_text("t.conf", text, &policy, &diags), PF_LOAD_INVALID);
	cr_assert_eq(diags.count, 1);
	cr_expect_str_eq(diags.lines[0], "t.conf:4: cgroup \"p/z\" of app 'b' and \"p/*\" of app 'a' (t.conf:3) "
					 "can match the same cgroup");
	pf_diags_free(&diags);
	cr_expect_eq(pf_policy_cgroup_overlaps(&policy, "/sys/fs/cgroup", add_diag, &diags), 1);
	cr_assert_eq(diags.count, 1);
	cr_expect_str_eq(diags.lines[0], "t.conf:4: cgroup \"x.slice/*\" of app 'b' and \"/sys/fs/cgroup/x.slice/y\" "
					 "of app 'a' (t.conf:3) can match the same cgroup");
	pf_diags_free(&diags);
	pf_policy_free(&policy);
}
