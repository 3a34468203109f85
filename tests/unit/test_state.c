/* The shared state: atomic creation, modes, concurrency, and a file that
 * others may truncate, garble or replace. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/algorithm.h"

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/pf-state-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];
	pf_state_remove_all(dir);
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

static void state_path(const char *app, char *path, size_t len)
{
	char name[64];
	cr_assert_eq(pf_state_file_name(app, name, sizeof(name)), 0);
	snprintf(path, len, "%s/%s", dir, name);
}

static void read_header(const char *app, struct pf_state_file *file)
{
	char path[128];
	state_path(app, path, sizeof(path));
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(read(fd, file, sizeof(*file)), (ssize_t)sizeof(*file));
	close(fd);
}

static void write_bytes(const char *path, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, bytes, len), (ssize_t)len);
	close(fd);
}

static bool segment_exists(int shmid)
{
	struct shmid_ds info;
	return shmctl(shmid, IPC_STAT, &info) == 0 && !(info.shm_perm.mode & SHM_DEST);
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

/* CHILDREN processes open the state at once and count in it. */
static void race_to_open(void)
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
			if (pf_state_open(dir, "racer", 100, &st) != 0)
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
	cr_assert_eq(pf_state_open(dir, "racer", 100, &st), 0);
	cr_expect_eq(atomic_load(&st.shared->sequential_next), CHILDREN * PICKS);
	pf_state_close(&st);
}

Test(state, concurrent_creators_share_one_file_and_lose_no_increment)
{
	race_to_open();
}

Test(state, concurrent_rebuilders_of_a_garbled_file_agree)
{
	char path[128];
	state_path("racer", path, sizeof(path));
	write_bytes(path, "garbage", 7);
	race_to_open();
}

Test(state, concurrent_rebuilders_after_a_range_change_agree)
{
	struct pf_state st;
	struct pf_state_file old;
	cr_assert_eq(pf_state_open(dir, "racer", 50, &st), 0);
	read_header("racer", &old);
	pf_state_close(&st);
	race_to_open();
	cr_expect_not(segment_exists(old.shmid));
}

Test(state, file_mode_and_owner)
{
	struct pf_state st;
	char path[128];
	struct stat info;

	cr_assert_eq(pf_state_open(dir, "web", 100, &st), 0);
	cr_expect(st.file_backed);
	snprintf(path, sizeof(path), "%s/web.state", dir);
	cr_assert_eq(lstat(path, &info), 0);
	cr_expect(S_ISREG(info.st_mode));
	cr_expect_eq(info.st_mode & 07777, 0600);
	cr_expect_eq(info.st_uid, geteuid());
	cr_expect_eq(info.st_size, (off_t)sizeof(struct pf_state_file));
	struct pf_state_file file;
	read_header("web", &file);
	struct shmid_ds segment;
	cr_assert_eq(shmctl(file.shmid, IPC_STAT, &segment), 0);
	cr_expect_eq(segment.shm_perm.uid, geteuid());
	cr_expect_eq(segment.shm_perm.mode & 0777, 0600);
	pf_state_close(&st);
}

Test(state, keys_are_random_and_persist)
{
	struct pf_state a, b;
	cr_assert_eq(pf_state_open(dir, "one", 100, &a), 0);
	cr_assert_eq(pf_state_open(dir, "two", 100, &b), 0);
	cr_expect_neq(memcmp(a.shared->hash_key, b.shared->hash_key, 16), 0);
	uint8_t saved[16];
	memcpy(saved, a.shared->hash_key, 16);
	pf_state_close(&a);
	cr_assert_eq(pf_state_open(dir, "one", 100, &a), 0);
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
	cr_expect_lt(pf_state_open(dir, "web", 100, &st), 0);
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
	cr_assert_eq(pf_state_open(dir, "web", 100, &st), 0);
	cr_expect_eq(st.shared->magic, PF_STATE_MAGIC);
	pf_state_close(&st);
}

Test(state, odd_app_names_make_safe_file_names)
{
	char name[64];
	cr_assert_eq(pf_state_file_name("../etc/x y", name, sizeof(name)), 0);
	cr_expect_str_eq(name, "%2E%2E%2Fetc%2Fx%20y.state");
	struct pf_state st;
	cr_assert_eq(pf_state_open(dir, "../escape", 100, &st), 0);
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
	cr_expect_eq(pf_state_open(sub, "web", 100, &st), -EPERM);
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

/* The holder keeps its segment whatever becomes of the file; the next
 * open builds a new state (the holder's segment, now named by nothing,
 * is removed by the test). */
static void survives(void (*change)(const char *path, const struct pf_state_file *file))
{
	struct pf_state holder, next;
	struct pf_state_file file;
	char path[128];

	cr_assert_eq(pf_state_open(dir, "web", 100, &holder), 0);
	read_header("web", &file);
	atomic_store(&holder.shared->sequential_next, 41);
	state_path("web", path, sizeof(path));
	change(path, &file);
	/* Every byte of the holder's state is still there to use. */
	cr_expect_eq(atomic_fetch_add(&holder.shared->sequential_next, 1), 41);
	cr_expect_eq(atomic_fetch_add(&holder.holds[100 * PF_HOLD_SLOTS - 1], 1), 0);
	cr_assert_eq(pf_state_open(dir, "web", 100, &next), 0);
	cr_expect_neq(next.shared->nonce, holder.shared->nonce, "a new state was built");
	cr_expect_eq(atomic_load(&next.shared->sequential_next), 0);
	struct stat info;
	cr_assert_eq(stat(path, &info), 0);
	cr_expect_eq(info.st_size, (off_t)sizeof(struct pf_state_file));
	cr_expect_eq(atomic_load(&holder.shared->sequential_next), 42);
	shmctl(file.shmid, IPC_RMID, NULL);
	pf_state_close(&holder);
	pf_state_close(&next);
}

static void truncate_to_zero(const char *path, const struct pf_state_file *file)
{
	(void)file;
	cr_assert_eq(truncate(path, 0), 0);
}

static void truncate_to_half(const char *path, const struct pf_state_file *file)
{
	(void)file;
	cr_assert_eq(truncate(path, sizeof(*file) / 2), 0);
}

static void garble(const char *path, const struct pf_state_file *file)
{
	char garbage[sizeof(*file)];
	memset(garbage, 0xa5, sizeof(garbage));
	write_bytes(path, garbage, sizeof(garbage));
}

/* A well-formed file naming our segment under another nonce: what a
 * reused shmid looks like.  It must not be taken for our state. */
static void wrong_nonce(const char *path, const struct pf_state_file *file)
{
	struct pf_state_file forged = *file;
	forged.nonce ^= 1;
	write_bytes(path, &forged, sizeof(forged));
}

/* Replaced (rename over it) by a file naming a segment that is gone. */
static void replaced_by_dead_state(const char *path, const struct pf_state_file *file)
{
	struct pf_state other;
	struct pf_state_file dead;
	char other_path[128];
	(void)file;
	cr_assert_eq(pf_state_open(dir, "other", 100, &other), 0);
	read_header("other", &dead);
	pf_state_close(&other);
	cr_assert_eq(shmctl(dead.shmid, IPC_RMID, NULL), 0);
	state_path("other", other_path, sizeof(other_path));
	cr_assert_eq(rename(other_path, path), 0);
}

/* The segment itself removed by someone (ipcrm). */
static void segment_removed(const char *path, const struct pf_state_file *file)
{
	(void)path;
	cr_assert_eq(shmctl(file->shmid, IPC_RMID, NULL), 0);
}

Test(state, file_truncated_to_zero_while_attached)
{
	survives(truncate_to_zero);
}

Test(state, file_truncated_to_half_while_attached)
{
	survives(truncate_to_half);
}

Test(state, file_garbled_while_attached)
{
	survives(garble);
}

Test(state, file_naming_our_segment_with_another_nonce)
{
	survives(wrong_nonce);
}

Test(state, file_replaced_while_attached)
{
	survives(replaced_by_dead_state);
}

Test(state, segment_removed_while_attached)
{
	survives(segment_removed);
}

Test(state, holds_table_is_zeroed_aligned_and_sized_by_the_range)
{
	static const uint32_t sizes[] = {1, 7, 100, 65535};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct pf_state st;
		struct pf_state_file file;
		struct shmid_ds segment;
		uint32_t num_ports = sizes[i];
		cr_assert_eq(pf_state_open(dir, "holds", num_ports, &st), 0);
		cr_expect_eq(st.num_ports, num_ports);
		read_header("holds", &file);
		cr_assert_eq(shmctl(file.shmid, IPC_STAT, &segment), 0);
		size_t table_end = (size_t)((char *)(st.holds + num_ports * PF_HOLD_SLOTS) -
					    (char *)st.shared);
		cr_expect_eq(segment.shm_segsz, table_end, "%u ports: the table ends the segment",
			     num_ports);
		cr_expect_geq((char *)st.holds, (char *)(st.shared + 1), "after the counters");
		for (uint32_t port = 0; port < num_ports; port++) {
			_Atomic uint64_t *block = st.holds + port * PF_HOLD_SLOTS;
			cr_assert_eq((uintptr_t)block % 64, 0, "port %u's block", port);
			for (int slot = 0; slot < PF_HOLD_SLOTS; slot++)
				cr_assert_eq(atomic_load(&block[slot]), 0);
		}
		pf_state_close(&st);
	}
}

Test(state, a_changed_range_rebuilds_and_frees_the_old_segment)
{
	struct pf_state st;
	struct pf_state_file old, now;

	cr_assert_eq(pf_state_open(dir, "web", 100, &st), 0);
	atomic_store(&st.shared->sequential_next, 77);
	read_header("web", &old);
	pf_state_close(&st);
	cr_assert_eq(pf_state_open(dir, "web", 200, &st), 0);
	cr_expect_eq(st.num_ports, 200);
	cr_expect_eq(st.shared->num_ports, 200);
	cr_expect_eq(atomic_load(&st.shared->sequential_next), 0);
	read_header("web", &now);
	cr_expect_eq(now.num_ports, 200);
	cr_expect_not(segment_exists(old.shmid), "the old segment is removed");
	pf_state_close(&st);
	cr_assert_eq(pf_state_open(dir, "web", 200, &st), 0);
	cr_expect_eq(st.shared->nonce, now.nonce, "the same size keeps the state");
	pf_state_close(&st);
}

static void fork_shares(struct pf_state *st)
{
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		for (int i = 0; i < 1000; i++)
			atomic_fetch_add(&st->shared->sequential_next, 1);
		atomic_store(&st->holds[3 * PF_HOLD_SLOTS + 5], 0x1234);
		_exit(0);
	}
	int status;
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_expect_eq(atomic_load(&st->shared->sequential_next), 1000);
	cr_expect_eq(atomic_load(&st->holds[3 * PF_HOLD_SLOTS + 5]), 0x1234);
}

Test(state, a_forked_child_shares_the_state)
{
	struct pf_state st;
	cr_assert_eq(pf_state_open(dir, "web", 10, &st), 0);
	fork_shares(&st);
	pf_state_close(&st);
}

Test(state, a_forked_child_shares_the_private_state)
{
	struct pf_state st;
	cr_assert_eq(pf_state_open_private(10, &st), 0);
	cr_expect_not(st.file_backed);
	cr_expect_eq((uintptr_t)st.holds % 64, 0);
	fork_shares(&st);
	pf_state_close(&st);
}

Test(state, remove_frees_the_segment_and_the_file)
{
	struct pf_state st;
	struct pf_state_file file;
	char path[128];

	cr_assert_eq(pf_state_open(dir, "web", 100, &st), 0);
	read_header("web", &file);
	cr_assert_eq(pf_state_remove(dir, "web"), 0);
	cr_expect_not(segment_exists(file.shmid));
	state_path("web", path, sizeof(path));
	cr_expect_neq(access(path, F_OK), 0);
	atomic_fetch_add(&st.shared->sequential_next, 1);
	pf_state_close(&st);
	cr_expect_eq(pf_state_remove(dir, "web"), -ENOENT);
}

Test(state, remove_all_frees_every_segment)
{
	struct pf_state st;
	struct pf_state_file files[3];
	const char *apps[] = {"a", "b", "c d"};

	for (int i = 0; i < 3; i++) {
		cr_assert_eq(pf_state_open(dir, apps[i], 100, &st), 0);
		read_header(apps[i], &files[i]);
		pf_state_close(&st);
	}
	cr_assert_eq(pf_state_remove_all(dir), 0);
	for (int i = 0; i < 3; i++)
		cr_expect_not(segment_exists(files[i].shmid), "%s", apps[i]);
	cr_expect_eq(count_entries(dir), 0);
}
