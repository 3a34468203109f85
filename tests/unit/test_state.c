/* The shared state file: atomic creation, modes, concurrency. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "algorithm.h"

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/pf-state-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(state, .init = make_dir, .fini = remove_dir);

static int always_free(void *ctx, uint16_t port)
{
	(void)ctx;
	(void)port;
	return PF_TRY_TAKEN;
}

static unsigned count_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	unsigned n = 0;
	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

Test(state, concurrent_creators_share_one_file_and_lose_no_increment)
{
	enum { CHILDREN = 8, PICKS = 2000 };
	int go[2];
	cr_assert_eq(pipe(go), 0);
	for (int c = 0; c < CHILDREN; c++) {
		if (fork() == 0) {
			char byte;
			close(go[1]);
			/* All children block here, then race to create the file. */
			if (read(go[0], &byte, 1) != 0)
				_exit(3);
			struct pf_state st;
			struct pf_rng rng;
			struct pf_pick pick;
			pf_rng_seed(&rng, (uint64_t)c);
			if (pf_state_open(dir, "racer", &st) != 0)
				_exit(1);
			for (int i = 0; i < PICKS; i++)
				if (pf_algorithm_pick(PF_ALGO_SEQUENTIAL, 1, 65535, NULL, &st, &rng,
						      always_free, NULL, &pick) != 0)
					_exit(2);
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]);
	for (int c = 0; c < CHILDREN; c++) {
		int status;
		cr_assert_gt(wait(&status), 0);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %d", status);
	}
	cr_expect_eq(count_entries(dir), 1, "one state file, no temporary leftovers");
	struct pf_state st;
	cr_assert_eq(pf_state_open(dir, "racer", &st), 0);
	cr_expect_eq(atomic_load(&st.shared->sequential_next), CHILDREN * PICKS);
	pf_state_close(&st);
}

Test(state, file_mode_and_owner)
{
	struct pf_state st;
	char path[128];
	struct stat info;

	cr_assert_eq(pf_state_open(dir, "web", &st), 0);
	cr_expect(st.file_backed);
	snprintf(path, sizeof(path), "%s/web.state", dir);
	cr_assert_eq(lstat(path, &info), 0);
	cr_expect(S_ISREG(info.st_mode));
	cr_expect_eq(info.st_mode & 07777, 0600);
	cr_expect_eq(info.st_uid, geteuid());
	cr_expect_eq(info.st_size, (off_t)sizeof(struct pf_shared_state));
	pf_state_close(&st);
}

Test(state, keys_are_random_and_persist)
{
	struct pf_state a, b;
	cr_assert_eq(pf_state_open(dir, "one", &a), 0);
	cr_assert_eq(pf_state_open(dir, "two", &b), 0);
	cr_expect_neq(memcmp(a.shared->hash_key, b.shared->hash_key, 16), 0);
	uint8_t saved[16];
	memcpy(saved, a.shared->hash_key, 16);
	pf_state_close(&a);
	cr_assert_eq(pf_state_open(dir, "one", &a), 0);
	cr_expect_eq(memcmp(a.shared->hash_key, saved, 16), 0);
	pf_state_close(&a);
	pf_state_close(&b);
}

Test(state, symlink_is_not_followed)
{
	char link_path[128], target[128];
	struct pf_state st;

	snprintf(target, sizeof(target), "%s/target", dir);
	snprintf(link_path, sizeof(link_path), "%s/web.state", dir);
	cr_assert_eq(symlink(target, link_path), 0);
	cr_expect_lt(pf_state_open(dir, "web", &st), 0);
	cr_expect_neq(access(target, F_OK), 0, "the symlink's target must not be created");
}

Test(state, corrupt_file_is_rebuilt)
{
	char path[128];
	struct pf_state st;

	snprintf(path, sizeof(path), "%s/web.state", dir);
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "garbage", 7), 7);
	close(fd);
	cr_assert_eq(pf_state_open(dir, "web", &st), 0);
	cr_expect_eq(st.shared->magic, PF_STATE_MAGIC);
	pf_state_close(&st);
}

Test(state, odd_app_names_make_safe_file_names)
{
	char name[64];
	cr_assert_eq(pf_state_file_name("../etc/x y", name, sizeof(name)), 0);
	cr_expect_str_eq(name, "%2E%2E%2Fetc%2Fx%20y.state");
	struct pf_state st;
	cr_assert_eq(pf_state_open(dir, "../escape", &st), 0);
	pf_state_close(&st);
	cr_expect_eq(count_entries(dir), 1);
}

Test(state, world_writable_directory_is_refused)
{
	struct pf_state st;
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/open", dir);
	cr_assert_eq(mkdir(sub, 0777), 0);
	cr_assert_eq(chmod(sub, 0777), 0);
	cr_expect_eq(pf_state_open(sub, "web", &st), -EPERM);
}

Test(state, default_dir)
{
	char buf[128], want[64];
	cr_assert_eq(pf_state_default_dir("/run/user/1000", buf, sizeof(buf)), 0);
	cr_expect_str_eq(buf, "/run/user/1000/portfence");
	cr_assert_eq(pf_state_default_dir(NULL, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "/tmp/portfence-%u", (unsigned)geteuid());
	cr_expect_str_eq(buf, want);
}
