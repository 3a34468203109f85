/* One daemon per host, and what dead commands left pinned swept.
 *
 * The daemon holds a lock on PF_BPF_PIN_ROOT for its life.  It holds its
 * links itself (they die with it) and writes one empty directory per
 * confined cgroup there, for status; after `kill -9` those directories
 * and its cgroup map stay.  A command that finds the lock free knows
 * that no daemon is alive, and removes them. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loader/loader_internal.h"

/* A sweep holds the daemon's lock for a moment: a starting daemon waits
 * that long before it concludes that another one is alive. */
#define CLAIM_PATIENCE_MS 2000

/* An app's entry, removed when it is an empty directory (a daemon's):
 * rmdir takes no pin (a file) and no directory holding attach's links. */
static bool remove_if_empty_dir(void *opaque, const char *app_dir, const char *name)
{
	char dir[PATH_MAX * 3];

	(void)opaque;
	snprintf(dir, sizeof(dir), "%s/%s", app_dir, name);
	rmdir(dir);
	return false;
}

/* The daemon's directories: every empty one below an app's, then the
 * cgroup map.  The caller knows no daemon is alive, and holds the pin
 * root's lock. */
static void sweep_daemon_pins(void)
{
	pf_pins_each_entry(PF_BPF_PIN_ROOT, remove_if_empty_dir, NULL);
	unlink(PF_BPF_CGROUPS_PIN);
}

/* The pin root opened (made when missing) and locked without waiting:
 * its fd, -EWOULDBLOCK while a daemon holds it, or another -errno. */
static int try_daemon_lock(void)
{
	if (mkdir(PF_BPF_PIN_ROOT, 0700) < 0 && errno != EEXIST)
		return -errno;
	int fd = open(PF_BPF_PIN_ROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int error = errno;
		close(fd);
		return -error;
	}
	return fd;
}

/* With the lock on the pin root that directories are made under, so
 * that an attach's directory is never taken between its mkdir and its
 * pins. */
static void sweep_daemon_pins_in_turn(void)
{
	int root = pf_bpf_lock_pin_root();

	sweep_daemon_pins();
	if (root >= 0)
		close(root);
}

void pf_bpf_sweep_leftovers(void)
{
	if (geteuid() != 0)
		return;
	pf_bpf_sweep_runs();
	if (access(PF_BPF_PIN_ROOT, F_OK) < 0)
		return;
	int daemon_lock = try_daemon_lock();
	if (daemon_lock < 0)
		return;	/* a daemon is alive */
	sweep_daemon_pins_in_turn();
	close(daemon_lock);
}

int pf_bpf_daemon_claim(char *why, size_t len)
{
	int rc = pf_bpf_ensure_bpffs();
	const struct timespec pause = {.tv_nsec = 50 * 1000000};

	for (int waited = 0; rc >= 0; waited += 50) {
		rc = try_daemon_lock();
		if (rc != -EWOULDBLOCK || waited >= CLAIM_PATIENCE_MS)
			break;
		nanosleep(&pause, NULL);
	}
	if (rc == -EWOULDBLOCK) {
		snprintf(why, len, "another portfence daemon is running (it holds a lock on %s); one serves the host",
			 PF_BPF_PIN_ROOT);
		return rc;
	}
	if (rc < 0) {
		snprintf(why, len, "cannot lock %s: %s", PF_BPF_PIN_ROOT, strerror(-rc));
		return rc;
	}
	sweep_daemon_pins_in_turn();
	pf_bpf_sweep_runs();
	return rc;
}
