/* The shared state file.  It is built complete under a temporary name and
 * linked into place, so a process never sees a half-written file, and
 * concurrent creators agree on one winner. */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rng.h"

int pf_state_default_dir(const char *xdg_runtime_dir, char *buf, size_t len)
{
	int n;

	if (xdg_runtime_dir && xdg_runtime_dir[0] == '/')
		n = snprintf(buf, len, "%s/portfence", xdg_runtime_dir);
	else
		n = snprintf(buf, len, "/tmp/portfence-%u", (unsigned)geteuid());
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* App names are free text; a file name must not hold '/' or start '.',
 * so anything but [A-Za-z0-9_-] is written as %XX. */
int pf_state_file_name(const char *app_name, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t out = 0;

	for (const unsigned char *p = (const unsigned char *)app_name; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
		if (out + 4 >= len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[out++] = (char)*p;
		} else {
			buf[out++] = '%';
			buf[out++] = hex[*p >> 4];
			buf[out++] = hex[*p & 15];
		}
	}
	if (out + sizeof(".state") > len)
		return -ENAMETOOLONG;
	memcpy(buf + out, ".state", sizeof(".state"));
	return 0;
}

static int fill_new_state(struct pf_shared_state *fresh)
{
	uint32_t increments_start;
	int rc;

	memset(fresh, 0, sizeof(*fresh));
	fresh->magic = PF_STATE_MAGIC;
	fresh->layout = PF_STATE_LAYOUT;
	fresh->size = sizeof(*fresh);
	if ((rc = pf_random_bytes(fresh->hash_key, sizeof(fresh->hash_key))) < 0 ||
	    (rc = pf_random_bytes(fresh->index_key, sizeof(fresh->index_key))) < 0 ||
	    (rc = pf_random_bytes(&increments_start, sizeof(increments_start))) < 0)
		return rc;
	/* RFC 6056 §3.3.5: next_ephemeral = random() % 65536 at boot. */
	atomic_init(&fresh->increments_next, increments_start % 65536);
	/* RFC 6056 §3.3.4: table[i] = random() % 65536 at boot. */
	uint32_t table_start[PF_DH_TABLE_LEN];
	if ((rc = pf_random_bytes(table_start, sizeof(table_start))) < 0)
		return rc;
	for (int i = 0; i < PF_DH_TABLE_LEN; i++)
		atomic_init(&fresh->table[i], table_start[i] % 65536);
	return 0;
}

static int open_state_dir(const char *dir)
{
	struct stat info;
	int dirfd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* Another user must not be able to swap our files under us. */
	if (fstat(dirfd, &info) < 0 || (info.st_uid != geteuid() && info.st_uid != 0) ||
	    ((info.st_mode & S_IWOTH) && !(info.st_mode & S_ISVTX))) {
		close(dirfd);
		return -EPERM;
	}
	return dirfd;
}

static int write_fresh_file(int dirfd, const char *tmp_name)
{
	struct pf_shared_state fresh;
	int fd, rc = fill_new_state(&fresh);

	if (rc < 0)
		return rc;
	fd = openat(dirfd, tmp_name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (pwrite(fd, &fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
		rc = errno ? -errno : -EIO;
		close(fd);
		unlinkat(dirfd, tmp_name, 0);
		return rc;
	}
	close(fd);
	return 0;
}

/* Creates name complete and atomically; replace says whether an existing
 * (corrupt) file is overwritten or left to the winner of a race. */
static int create_state_file(int dirfd, const char *name, bool replace)
{
	char tmp_name[300];
	uint32_t nonce = 0;
	int rc;

	/* Unique per creator, threads of one process included. */
	pf_random_bytes(&nonce, sizeof(nonce));
	snprintf(tmp_name, sizeof(tmp_name), ".%s.%ld.%08x.tmp", name, (long)getpid(), nonce);
	unlinkat(dirfd, tmp_name, 0);
	if ((rc = write_fresh_file(dirfd, tmp_name)) < 0)
		return rc;
	if (replace)
		rc = renameat(dirfd, tmp_name, dirfd, name) < 0 ? -errno : 0;
	else
		rc = linkat(dirfd, tmp_name, dirfd, name, 0) < 0 && errno != EEXIST ? -errno : 0;
	unlinkat(dirfd, tmp_name, 0);
	return rc;
}

static int map_state_file(int dirfd, const char *name, struct pf_shared_state **out)
{
	struct stat info;
	void *map;
	int fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &info) < 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid()) {
		close(fd);
		return -EPERM;
	}
	if (info.st_size != (off_t)sizeof(struct pf_shared_state)) {
		close(fd);
		return -EINVAL;
	}
	map = mmap(NULL, sizeof(struct pf_shared_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return -errno;
	struct pf_shared_state *shared = map;
	if (shared->magic != PF_STATE_MAGIC || shared->layout != PF_STATE_LAYOUT ||
	    shared->size != sizeof(*shared)) {
		munmap(map, sizeof(*shared));
		return -EINVAL;
	}
	*out = shared;
	return 0;
}

static int open_in_dir(int dirfd, const char *name, struct pf_shared_state **shared)
{
	int rc = map_state_file(dirfd, name, shared);

	if (rc == -ENOENT) {
		if ((rc = create_state_file(dirfd, name, false)) < 0)
			return rc;
		rc = map_state_file(dirfd, name, shared);
	}
	if (rc == -EINVAL) {
		/* Corrupt or from another layout: rebuild it rather than
		 * leave the app without shared state. */
		if ((rc = create_state_file(dirfd, name, true)) < 0)
			return rc;
		rc = map_state_file(dirfd, name, shared);
	}
	return rc;
}

int pf_state_open(const char *dir, const char *app_name, struct pf_state *state)
{
	char name[256];
	int dirfd, rc;

	state->shared = NULL;
	state->file_backed = false;
	if ((rc = pf_state_file_name(app_name, name, sizeof(name))) < 0)
		return rc;
	if ((dirfd = open_state_dir(dir)) < 0)
		return dirfd;
	rc = open_in_dir(dirfd, name, &state->shared);
	close(dirfd);
	state->file_backed = rc == 0;
	return rc;
}

int pf_state_open_private(struct pf_state *state)
{
	/* MAP_SHARED so that forked children still continue one sequence. */
	void *map = mmap(NULL, sizeof(struct pf_shared_state), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int rc;

	state->shared = NULL;
	state->file_backed = false;
	if (map == MAP_FAILED)
		return -errno;
	if ((rc = fill_new_state(map)) < 0) {
		munmap(map, sizeof(struct pf_shared_state));
		return rc;
	}
	state->shared = map;
	return 0;
}

void pf_state_close(struct pf_state *state)
{
	if (state->shared)
		munmap(state->shared, sizeof(*state->shared));
	state->shared = NULL;
}
