/* Globs over cgroup paths: matching one component per '/', and whether
 * two apps' globs can match one cgroup (a `check` error). */
#include <criterion/criterion.h>

#include "config/cgroup_glob.h"

Test(cgroup_glob, matches_one_component_per_slash)
{
	cr_expect(pf_cgroup_glob_match("system.slice/docker-*.scope", "system.slice/docker-4f2a.scope"));
	cr_expect(pf_cgroup_glob_match("/system.slice/docker-*.scope", "/system.slice/docker-4f2a.scope"));
	cr_expect(pf_cgroup_glob_match("pfctr-*", "pfctr-17"));
	cr_expect_not(pf_cgroup_glob_match("pfctr-*", "pfctr-17/sub"), "* never crosses into a child");
	cr_expect_not(pf_cgroup_glob_match("machine.slice/*", "machine.slice"));
	cr_expect(pf_cgroup_glob_match("machine.slice/*", "machine.slice/c1"));
}

Test(cgroup_glob, leads_to_a_match)
{
	cr_expect(pf_cgroup_glob_leads("kubepods.slice/*/cri-*.scope", "kubepods.slice"));
	cr_expect(pf_cgroup_glob_leads("kubepods.slice/*/cri-*.scope", "kubepods.slice/pod1.slice"));
	cr_expect_not(pf_cgroup_glob_leads("kubepods.slice/*/cri-*.scope", "kubepods.slice/pod1.slice/cri-a.scope"));
	cr_expect_not(pf_cgroup_glob_leads("kubepods.slice/*/cri-*.scope", "system.slice"));
	cr_expect(pf_cgroup_glob_leads("pfctr-*", ""), "the root leads to every glob");
}

Test(cgroup_glob, under_the_mount)
{
	const char *mount = "/sys/fs/cgroup/unified";
	const char *written = "/sys/fs/cgroup/unified/system.slice/x-*";

	cr_expect_str_eq(pf_cgroup_under_mount(written, mount), "/system.slice/x-*");
	const char *relative[] = {"system.slice/x-*", "/system.slice/x-*", "/sys/fs/cgroup/unifiedx/a",
				  "/sys/fs/cgroup/unified"};
	for (size_t i = 0; i < sizeof(relative) / sizeof(*relative); i++)
		cr_expect_eq(pf_cgroup_under_mount(relative[i], mount), relative[i], "%s", relative[i]);
	cr_expect_eq(pf_cgroup_under_mount(written, "/"), written, "\"/\" is no prefix");
	cr_expect_eq(pf_cgroup_under_mount(written, ""), written, "\"\" is no prefix");
}

Test(cgroup_glob, intersection_is_exact)
{
	static const struct { const char *a, *b; bool meet; } cases[] = {
		{"system.slice/docker-*.scope", "system.slice/docker-*.scope", true},
		{"system.slice/docker-*.scope", "system.slice/*-[0-9a-f]*.scope", true},
		{"system.slice/docker-*.scope", "system.slice/legacy.service", false},
		{"system.slice/docker-*.scope", "system.slice/docker-1.scope", true},
		{"pfctr-a*", "pfctr-b*", false},
		{"pfctr-*", "*-x", true},
		{"pfctr-[0-4]*", "pfctr-[5-9]*", false},
		{"pfctr-[!a]", "pfctr-a", false},
		{"pfctr-?", "pfctr-10", false},
		{"pfctr-??", "pfctr-1*", true},
		{"machine.slice/*", "machine.slice/*/*", false},
		{"a*b*c", "*x*", true},
		{"a*b", "*c", false},
		{"pfctr-\\*", "pfctr-x", false},
		{"pfctr-\\*", "pfctr-*", true},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_expect_eq(pf_cgroup_globs_intersect(cases[i].a, cases[i].b), cases[i].meet, "%s vs %s",
			     cases[i].a, cases[i].b);
		cr_expect_eq(pf_cgroup_globs_intersect(cases[i].b, cases[i].a), cases[i].meet, "%s vs %s",
			     cases[i].b, cases[i].a);
	}
}

Test(cgroup_glob, malformed)
{
	cr_expect_not_null(pf_cgroup_glob_invalid("pfctr-[0-9"));
	cr_expect_not_null(pf_cgroup_glob_invalid("a//b"));
	cr_expect_not_null(pf_cgroup_glob_invalid("a/../b"));
	cr_expect_not_null(pf_cgroup_glob_invalid("/"));
	cr_expect_null(pf_cgroup_glob_invalid("system.slice/docker-*.scope"));
	cr_expect_null(pf_cgroup_glob_invalid("/machine.slice/[a-z]?*"));
}
