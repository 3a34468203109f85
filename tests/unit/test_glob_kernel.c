/* The kernel's cgroup glob matcher (bpf/glob.bpf.h, which the birth
 * program runs inside mkdir(2)) against fnmatch(3) with FNM_PATHNAME and
 * against the watch's matcher (config/cgroup_glob.c), on random globs
 * and paths over the characters that make the cases: literals, '/',
 * '*', '?' and '.', the globs as the policy takes them and the paths as
 * cgroups' are (no empty component).
 * ('[' and '\' never reach the kernel: such a glob is left to the
 * watch.)  The kernel's side runs through BPF_PROG_TEST_RUN
 * (tests/core/glob_run.bpf.c). */
#include <criterion/criterion.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <unistd.h>

#include "config/cgroup_glob.h"
#include "glob_run.skel.h"
#include "test_random.h"

enum { CASES = 100000 };

static struct glob_run *load_kernel_matcher(void)
{
	struct glob_run *skel = glob_run__open_and_load();

	if (!skel && geteuid() != 0)
		cr_skip_test("not root: the kernel cannot load the BPF matcher (%s)", strerror(errno));
	cr_assert_not_null(skel, "the glob matcher does not load as a BPF program: %s", strerror(errno));
	return skel;
}

static bool kernel_matches(struct glob_run *skel, const char *glob, const char *path)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);

	memset(skel->bss->path, 0, sizeof(skel->bss->path));
	memset(skel->bss->glob, 0, sizeof(skel->bss->glob));
	snprintf(skel->bss->path, sizeof(skel->bss->path), "%s", path);
	snprintf(skel->bss->glob, sizeof(skel->bss->glob), "%s", glob);
	skel->bss->matched = -1;
	cr_assert_eq(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.glob_run), &opts), 0, "test run: %s",
		     strerror(errno));
	cr_assert_eq(opts.retval, 0);
	return skel->bss->matched == 1;
}

/* An absolute path or glob of up to max characters after its '/',
 * drawn from alphabet. */
static void draw(char *out, size_t max, const char *alphabet)
{
	size_t n = next_random() % (max + 1), letters = strlen(alphabet);

	out[0] = '/';
	for (size_t i = 0; i < n; i++)
		out[1 + i] = alphabet[next_random() % letters];
	out[1 + n] = '\0';
}

/* A path as a cgroup's is: '/' and components, none empty. */
static bool canonical(const char *path)
{
	size_t n = strlen(path);
	return n > 1 && path[n - 1] != '/' && !strstr(path, "//");
}

static void expect_alike(struct glob_run *skel, const char *glob, const char *path, uint64_t seed)
{
	bool by_fnmatch = fnmatch(glob, path, FNM_PATHNAME) == 0;
	bool by_watch = pf_cgroup_glob_match(glob, path);
	bool by_kernel = kernel_matches(skel, glob, path);

	cr_assert_eq(by_kernel, by_fnmatch, "glob \"%s\", path \"%s\": the kernel says %d, fnmatch %d (PF_TEST_SEED=%#llx)",
		     glob, path, by_kernel, by_fnmatch, (unsigned long long)seed);
	cr_assert_eq(by_watch, by_fnmatch, "glob \"%s\", path \"%s\": the watch says %d, fnmatch %d (PF_TEST_SEED=%#llx)",
		     glob, path, by_watch, by_fnmatch, (unsigned long long)seed);
}

Test(glob_kernel, matches_as_fnmatch_and_the_watch_on_chosen_cases)
{
	static const char *const cases[][2] = {
		{"/system.slice/docker-*.scope", "/system.slice/docker-4f2a.scope"},
		{"/system.slice/docker-*.scope", "/system.slice/docker-4f2a.scope/sub"},
		{"/pfctr-*", "/pfctr-17/sub"},
		{"/machine.slice/*", "/machine.slice"},
		{"/a*b*c", "/aXbYbZc"},
		{"/a*/b", "/a/x/b"},
		{"/**", "/ab/c"},
		{"/*?", "/"},
		{"/a*", "/a"},
		{"/*.scope", "/.scope"},
		{"/", "/"},
	};
	struct glob_run *skel = load_kernel_matcher();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_alike(skel, cases[i][0], cases[i][1], 0);
	glob_run__destroy(skel);
}

Test(glob_kernel, matches_as_fnmatch_and_the_watch_on_random_cases, .timeout = 120)
{
	uint64_t seed = seed_random();
	char glob[32], path[32];
	struct glob_run *skel = load_kernel_matcher();

	for (int i = 0; i < CASES; i++) {
		/* A glob as the policy hands it over: one the reader takes,
		 * its trailing '/' stripped. */
		do
			draw(glob, 12, "ab/*?.");
		while (pf_cgroup_glob_invalid(glob) || glob[strlen(glob) - 1] == '/');
		/* Half the paths drawn from the glob's own shape, so that
		 * matches are not rare; each a cgroup's path. */
		if (next_random() % 2) {
			do
				draw(path, 14, "ab/.");
			while (!canonical(path));
		} else {
			size_t n = 0;
			for (const char *g = glob; *g && n < sizeof(path) - 4; g++) {
				if (*g == '*')
					for (uint32_t k = next_random() % 3; k > 0; k--)
						path[n++] = "ab."[next_random() % 3];
				else
					path[n++] = *g == '?' ? "ab./"[next_random() % 4] : *g;
			}
			path[n] = '\0';
			if (!canonical(path))
				continue;
		}
		expect_alike(skel, glob, path, seed);
	}
	glob_run__destroy(skel);
}
