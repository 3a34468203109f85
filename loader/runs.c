/* The pins of each `run --bpf`: made and locked by the run, swept when
 * no process of portfence holds them and the run's cgroup is empty or
 * gone. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader/loader_internal.h"

#define BPFFS "/sys/fs/bpf"

/* Making a run's directory and sweeping runs take turns: both hold a
 * lock on bpffs's root, so that a sweep never finds a run directory made
 * but not yet locked (attach's directories and the sweep of a dead
 * daemon's take the same turns).  The fd, or -errno. */
int pf_bpf_lock_pin_root(void)
{
	int fd = open(BPFFS, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			int error = errno;
			close(fd);
			return -error;
		}
	return fd;
}

static int make_dir(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

/* PF_BPF_RUN_ROOT/APP and PF_BPF_RUN_ROOT/APP/NAME; false when too long. */
static bool run_dirs(const char *app_name, const char *cgroup_relative, char *app_dir, size_t app_len,
		     char *dir, size_t dir_len)
{
	char name[PATH_MAX];

	return pf_pin_name_encode(cgroup_relative, name, sizeof(name)) >= 0 &&
	       pf_pin_app_dir(PF_BPF_RUN_ROOT, app_name, app_dir, app_len) >= 0 &&
	       (size_t)snprintf(dir, dir_len, "%s/%s", app_dir, name) < dir_len;
}

int pf_bpf_run_claim(const char *app_name, const char *cgroup_relative, char *why, size_t len)
{
	char app_dir[PATH_MAX], dir[PATH_MAX * 2];
	int rc, root = -1, claim = -1;

	if (!run_dirs(app_name, cgroup_relative, app_dir, sizeof(app_dir), dir, sizeof(dir))) {
		snprintf(why, len, "cannot pin the run under %s: name too long", PF_BPF_RUN_ROOT);
		return -ENAMETOOLONG;
	}
	if ((rc = pf_bpf_ensure_bpffs()) < 0 || (rc = root = pf_bpf_lock_pin_root()) < 0 ||
	    (rc = make_dir(PF_BPF_RUN_ROOT)) < 0 || (rc = make_dir(app_dir)) < 0 || (rc = make_dir(dir)) < 0)
		goto out;
	claim = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (claim < 0)
		rc = -errno;
	else if (flock(claim, LOCK_EX | LOCK_NB) < 0)
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
out:
	if (rc < 0) {
		snprintf(why, len, "cannot pin the run under %s: %s", PF_BPF_RUN_ROOT, strerror(-rc));
		if (claim >= 0)
			close(claim);
		claim = rc;
	}
	if (root >= 0)
		close(root);
	return claim;
}

void pf_bpf_run_release(int claim, const char *app_name, const char *cgroup_relative)
{
	char app_dir[PATH_MAX], dir[PATH_MAX * 2];
	int root = pf_bpf_lock_pin_root();

	if (run_dirs(app_name, cgroup_relative, app_dir, sizeof(app_dir), dir, sizeof(dir))) {
		rmdir(dir);
		rmdir(app_dir);
	}
	rmdir(PF_BPF_RUN_ROOT);
	if (root >= 0)
		close(root);
	if (claim >= 0)
		close(claim);
}

/* One run's directory (app_dir/name): left alone while a process holds
 * it or its cgroup has processes; else its cgroup removed, its links
 * detached and its pins removed. */
static bool sweep_run(void *opaque, const char *app_dir, const char *name)
{
	char dir[PATH_MAX * 3], relative[PATH_MAX], full[PATH_MAX], unused[PATH_MAX];

	(void)opaque;
	if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", app_dir, name) >= sizeof(dir))
		return false;
	int held = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (held < 0)
		return false;
	if (flock(held, LOCK_EX | LOCK_NB) == 0) {
		bool cgroup_known = pf_pin_name_decode(name, relative, sizeof(relative)) >= 0 &&
				    pf_cgroup_resolve(relative, full, sizeof(full), unused, sizeof(unused)) == 0;
		if (!cgroup_known || !pf_cgroup_populated(full)) {
			if (cgroup_known)
				rmdir(full);
			pf_bpf_unpin_links(dir);
		}
	}
	close(held);
	return false;
}

/* An app's runs swept, then its directory when that left it empty. */
static bool sweep_runs_of_app(void *opaque, const char *app_dir)
{
	(void)opaque;
	pf_pin_entries_each(app_dir, sweep_run, NULL);
	rmdir(app_dir);
	return false;
}

void pf_bpf_sweep_runs(void)
{
	if (geteuid() != 0 || access(PF_BPF_RUN_ROOT, F_OK) < 0)
		return;
	int root = pf_bpf_lock_pin_root();
	pf_pin_app_dirs_each(PF_BPF_RUN_ROOT, sweep_runs_of_app, NULL);
	rmdir(PF_BPF_RUN_ROOT);
	if (root >= 0)
		close(root);
}
