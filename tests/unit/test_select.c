/* App selection: PORTFENCE_APP, exe globs, program-name globs, default. */
#include <criterion/criterion.h>

#include "config/policy.h"

static struct pf_policy policy;

static void load(void)
{
	cr_assert_eq(pf_policy_load("tests/fixtures/valid/full.conf", &policy, NULL), PF_LOAD_OK);
}

static void unload(void)
{
	pf_policy_free(&policy);
}

TestSuite(select, .init = load, .fini = unload);

Test(select, forced_app_wins)
{
	struct pf_process_identity who = {.forced_app = "db", .exe_path = "/usr/bin/curl"};
	cr_expect_eq(pf_policy_select(&policy, &who), 1);
	who.forced_app = "nosuch";
	cr_expect_eq(pf_policy_select(&policy, &who), PF_SELECT_UNKNOWN_APP);
}

Test(select, exe_glob)
{
	struct pf_process_identity who = {.exe_path = "/usr/bin/curl-7.88", .comm = "x"};
	cr_expect_eq(pf_policy_select(&policy, &who), 0);
}

Test(select, program_name_glob)
{
	struct pf_process_identity by_comm = {.exe_path = "/opt/wget", .comm = "wget"};
	cr_expect_eq(pf_policy_select(&policy, &by_comm), 0);
	struct pf_process_identity by_argv0 = {.exe_path = "/opt/w", .comm = "w", .program_name = "wget"};
	cr_expect_eq(pf_policy_select(&policy, &by_argv0), 0);
}

Test(select, unmatched_gets_default_app)
{
	struct pf_process_identity who = {.exe_path = "/usr/bin/python3", .comm = "python3"};
	cr_expect_eq(pf_policy_select(&policy, &who), 1, "full.conf says default = \"db\"");
}

Test(select, unmatched_with_default_pass)
{
	struct pf_policy minimal;
	cr_assert_eq(pf_policy_load("tests/fixtures/valid/minimal.conf", &minimal, NULL), PF_LOAD_OK);
	struct pf_process_identity who = {.exe_path = "/usr/bin/python3", .comm = "python3"};
	cr_expect_eq(pf_policy_select(&minimal, &who), PF_SELECT_PASS);
	pf_policy_free(&minimal);
}

Test(select, first_matching_app_in_file_order)
{
	struct pf_policy dir;
	cr_assert_eq(pf_policy_load("tests/fixtures/valid/dir", &dir, NULL), PF_LOAD_OK);
	struct pf_process_identity dig = {.comm = "dig"}, curl = {.comm = "curl"};
	cr_expect_eq(pf_policy_select(&dir, &dig), 1);
	cr_expect_eq(pf_policy_select(&dir, &curl), 0);
	pf_policy_free(&dir);
}

Test(select, the_app_owning_a_port_is_found_by_range)
{
	struct pf_policy policy;
	struct pf_diags diags = {0};
	cr_assert_eq(pf_policy_load_text("ranges.conf",
		"apps = ( { name = \"c\"; range = [ 7000, 7009 ]; },\n"
		"         { name = \"a\"; range = [ 5000, 5000 ]; },\n"
		"         { name = \"b\"; range = [ 6000, 6099 ]; } );\n", &policy, &diags), PF_LOAD_OK);
	cr_expect_eq(pf_policy_app_at_port(&policy, 4999), -1);
	cr_expect_eq(pf_policy_app_at_port(&policy, 5000), 1);
	cr_expect_eq(pf_policy_app_at_port(&policy, 5001), -1);
	cr_expect_eq(pf_policy_app_at_port(&policy, 6050), 2);
	cr_expect_eq(pf_policy_app_at_port(&policy, 7009), 0);
	cr_expect_eq(pf_policy_app_at_port(&policy, 7010), -1);
	pf_policy_free(&policy);
	pf_diags_free(&diags);
}

/* What explain says: the glob that matched, and against what. */
Test(select, match_why_names_the_glob_and_the_subject)
{
	const char *subject = NULL;
	struct pf_process_identity by_exe = {.exe_path = "/usr/bin/curl-7.88", .comm = "wget"};
	cr_expect_str_eq(pf_app_match_why(&policy.apps[0], &by_exe, &subject, NULL), "/usr/bin/curl*");
	cr_expect_str_eq(subject, "exe", "the exe is tried first");
	struct pf_process_identity by_comm = {.exe_path = "/opt/wget", .comm = "wget"};
	cr_expect_str_eq(pf_app_match_why(&policy.apps[0], &by_comm, &subject, NULL), "wget");
	cr_expect_str_eq(subject, "comm");
	struct pf_process_identity by_argv0 = {.exe_path = "/opt/w", .comm = "w", .program_name = "wget"};
	cr_expect_str_eq(pf_app_match_why(&policy.apps[0], &by_argv0, &subject, NULL), "wget");
	cr_expect_str_eq(subject, "argv[0]");
	struct pf_process_identity none = {.exe_path = "/bin/true", .comm = "true"};
	cr_expect_null(pf_app_match_why(&policy.apps[0], &none, &subject, NULL));
}
