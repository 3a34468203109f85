/* The shared state: a SysV segment (it cannot be truncated under its
 * users, unlike a mapped file) named by a small file under state_dir.
 * The file is built complete under a temporary name and linked into
 * place, so a process never sees a half-written one and concurrent
 * creators agree on one winner; a bad file is rebuilt under a lock on
 * the directory, so concurrent rebuilders agree too. */
#include "core/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"

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

static uint32_t holds_offset(void)
{
	return (sizeof(struct pf_shared_state) + PF_HOLD_ALIGN - 1) & ~(uint32_t)(PF_HOLD_ALIGN - 1);
}

static size_t segment_size(uint32_t num_ports)
{
	return holds_offset() + (size_t)num_ports * PF_HOLD_SLOTS * sizeof(uint64_t);
}

/* fresh is zeroed memory of segment_size(num_ports) bytes. */
static int fill_new_state(struct pf_shared_state *fresh, uint32_t num_ports)
{
	uint32_t increments_start;
	uint32_t table_start[PF_DH_TABLE_LEN];
	int rc;

	fresh->magic = PF_STATE_MAGIC;
	fresh->layout = PF_STATE_LAYOUT;
	fresh->size = (uint32_t)segment_size(num_ports);
	fresh->num_ports = num_ports;
	fresh->holds_offset = holds_offset();
	if ((rc = pf_random_bytes(&fresh->nonce, sizeof(fresh->nonce))) < 0 ||
	    (rc = pf_random_bytes(fresh->hash_key, sizeof(fresh->hash_key))) < 0 ||
	    (rc = pf_random_bytes(fresh->index_key, sizeof(fresh->index_key))) < 0 ||
	    (rc = pf_random_bytes(&increments_start, sizeof(increments_start))) < 0 ||
	    (rc = pf_random_bytes(table_start, sizeof(table_start))) < 0)
		return rc;
	/* RFC 6056 §3.3.5: next_ephemeral = random() % 65536 at boot. */
	atomic_init(&fresh->increments_next, increments_start % 65536);
	/* RFC 6056 §3.3.4: table[i] = random() % 65536 at boot. */
	for (int i = 0; i < PF_DH_TABLE_LEN; i++)
		atomic_init(&fresh->table[i], table_start[i] % 65536);
	return 0;
}

static void set_state(struct pf_state *state, struct pf_shared_state *shared, bool file_backed)
{
	state->shared = shared;
	state->holds = (_Atomic uint64_t *)((char *)shared + shared->holds_offset);
	state->num_ports = shared->num_ports;
	state->file_backed = file_backed;
}

static int open_state_dir(const char *dir, bool create)
{
	struct stat info;
	int dirfd;

	if (create && mkdir(dir, 0700) < 0 && errno != EEXIST)
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

/* -ESTALE: no usable state here, build a new one. */
static int read_state_file(int dirfd, const char *name, struct pf_state_file *file)
{
	struct stat info;
	/* O_NONBLOCK: a FIFO planted under the name must not hang us. */
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &info) < 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid()) {
		close(fd);
		return -EPERM;
	}
	got = info.st_size == (off_t)sizeof(*file) ? pread(fd, file, sizeof(*file), 0) : -1;
	close(fd);
	if (got != (ssize_t)sizeof(*file) || file->magic != PF_STATE_FILE_MAGIC ||
	    file->layout != PF_STATE_LAYOUT || file->size != segment_size(file->num_ports))
		return -ESTALE;
	return 0;
}

/* Attaches the segment file names, if it is ours, whole and the one the
 * file meant (its nonce). */
static int attach_segment(const struct pf_state_file *file, struct pf_shared_state **out)
{
	struct shmid_ds info;
	struct pf_shared_state *shared;

	if (shmctl(file->shmid, IPC_STAT, &info) < 0 || info.shm_perm.uid != geteuid() ||
	    (info.shm_perm.mode & 0777) != 0600 || (info.shm_perm.mode & SHM_DEST) ||
	    info.shm_segsz != file->size)
		return -ESTALE;
	shared = shmat(file->shmid, NULL, 0);
	if (shared == (void *)-1)
		return errno == ENOMEM || errno == EMFILE ? -errno : -ESTALE;
	if (shared->magic != PF_STATE_MAGIC || shared->layout != PF_STATE_LAYOUT ||
	    shared->size != file->size || shared->num_ports != file->num_ports ||
	    shared->holds_offset != holds_offset() || shared->nonce != file->nonce) {
		shmdt(shared);
		return -ESTALE;
	}
	*out = shared;
	return 0;
}

/* Frees a segment a file named, once no process uses it; a segment that
 * is not ours or not the one named (a reused id) is left alone. */
static void retire_segment(const struct pf_state_file *file)
{
	struct pf_shared_state *shared;

	if (attach_segment(file, &shared) < 0)
		return;
	shmctl(file->shmid, IPC_RMID, NULL);
	shmdt(shared);
}

/* seen: what the file held, when it was a well-formed file. */
static int attach_named(int dirfd, const char *name, uint32_t num_ports, struct pf_state_file *seen,
			struct pf_shared_state **shared)
{
	int rc = read_state_file(dirfd, name, seen);

	if (rc < 0)
		return rc;
	if (seen->num_ports != num_ports)
		return -ESTALE;
	return attach_segment(seen, shared);
}

static int create_segment(uint32_t num_ports, struct pf_state_file *file)
{
	size_t size = segment_size(num_ports);
	struct pf_shared_state *shared;
	int shmid = shmget(IPC_PRIVATE, size, IPC_CREAT | IPC_EXCL | 0600), rc;

	if (shmid < 0)
		return -errno;
	shared = shmat(shmid, NULL, 0);
	if (shared == (void *)-1) {
		rc = -errno;
		shmctl(shmid, IPC_RMID, NULL);
		return rc;
	}
	rc = fill_new_state(shared, num_ports);
	*file = (struct pf_state_file){.magic = PF_STATE_FILE_MAGIC, .layout = PF_STATE_LAYOUT,
				       .num_ports = num_ports, .shmid = shmid,
				       .size = (uint32_t)size, .nonce = shared->nonce};
	shmdt(shared);
	if (rc < 0)
		shmctl(shmid, IPC_RMID, NULL);
	return rc;
}

static int write_fresh_file(int dirfd, const char *tmp_name, const struct pf_state_file *file)
{
	int fd = openat(dirfd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (pwrite(fd, file, sizeof(*file), 0) != (ssize_t)sizeof(*file)) {
		rc = errno ? -errno : -EIO;
		unlinkat(dirfd, tmp_name, 0);
	}
	close(fd);
	return rc;
}

/* Puts file in place under name, complete and atomically; replace says
 * whether an existing (bad) file is overwritten or left to the winner of
 * a race. */
static int publish_state_file(int dirfd, const char *name, const struct pf_state_file *file,
			      bool replace)
{
	char tmp_name[300];
	uint32_t nonce = 0;
	int rc;

	/* Unique per creator, threads of one process included. */
	pf_random_bytes(&nonce, sizeof(nonce));
	snprintf(tmp_name, sizeof(tmp_name), ".%s.%ld.%08x.tmp", name, (long)getpid(), nonce);
	unlinkat(dirfd, tmp_name, 0);
	if ((rc = write_fresh_file(dirfd, tmp_name, file)) < 0)
		return rc;
	if (replace)
		rc = renameat(dirfd, tmp_name, dirfd, name) < 0 ? -errno : 0;
	else
		rc = linkat(dirfd, tmp_name, dirfd, name, 0) < 0 && errno != EEXIST ? -errno : 0;
	unlinkat(dirfd, tmp_name, 0);
	return rc;
}

/* A new segment, published under name; whoever's state name holds then
 * is attached, and ours is freed if it lost. */
static int build_and_attach(int dirfd, const char *name, uint32_t num_ports, bool replace,
			    struct pf_shared_state **shared)
{
	struct pf_state_file mine, now;
	int rc = create_segment(num_ports, &mine);

	if (rc < 0)
		return rc;
	rc = publish_state_file(dirfd, name, &mine, replace);
	if (rc == 0)
		rc = attach_named(dirfd, name, num_ports, &now, shared);
	if (rc < 0 || now.nonce != mine.nonce)
		retire_segment(&mine);
	return rc;
}

/* Rebuilders wait their turn (briefly: a directory another user can lock,
 * like /tmp, must not hang us), and the first one's state serves all. */
static int rebuild(int dirfd, const char *name, uint32_t num_ports, struct pf_shared_state **shared)
{
	struct pf_state_file seen;
	bool locked = false;
	int rc;

	for (int tries = 0; tries < 1000 && !locked; tries++)
		if (!(locked = flock(dirfd, LOCK_EX | LOCK_NB) == 0))
			usleep(1000);
	rc = attach_named(dirfd, name, num_ports, &seen, shared);
	if (rc == -ESTALE || rc == -ENOENT) {
		bool named = rc == -ESTALE && read_state_file(dirfd, name, &seen) == 0;
		rc = build_and_attach(dirfd, name, num_ports, true, shared);
		/* The state it replaces (a changed range) is freed once its
		 * last user goes. */
		if (rc == 0 && named)
			retire_segment(&seen);
	}
	if (locked)
		flock(dirfd, LOCK_UN);
	return rc;
}

static int open_in_dir(int dirfd, const char *name, uint32_t num_ports,
		       struct pf_shared_state **shared)
{
	struct pf_state_file seen;
	int rc = attach_named(dirfd, name, num_ports, &seen, shared);

	if (rc == -ENOENT)
		rc = build_and_attach(dirfd, name, num_ports, false, shared);
	if (rc == -ESTALE)
		rc = rebuild(dirfd, name, num_ports, shared);
	return rc;
}

int pf_state_open(const char *dir, const char *app_name, uint32_t num_ports,
		  struct pf_state *state)
{
	struct pf_shared_state *shared;
	char name[256];
	int dirfd, rc;

	*state = (struct pf_state){0};
	if (num_ports == 0 || num_ports > 65536)
		return -EINVAL;
	if ((rc = pf_state_file_name(app_name, name, sizeof(name))) < 0)
		return rc;
	if ((dirfd = open_state_dir(dir, true)) < 0)
		return dirfd;
	rc = open_in_dir(dirfd, name, num_ports, &shared);
	close(dirfd);
	if (rc == 0)
		set_state(state, shared, true);
	return rc;
}

/* The existing state directory, with app_name's file name in name. */
static int open_app_dir(const char *dir, const char *app_name, char name[256])
{
	int rc = pf_state_file_name(app_name, name, 256);
	return rc < 0 ? rc : open_state_dir(dir, false);
}

int pf_state_read_counters(const char *dir, const char *app_name, uint32_t num_ports,
			   uint64_t *assignments, uint64_t *failures)
{
	struct pf_shared_state *shared;
	struct pf_state_file file;
	char name[256];
	int dirfd, rc;

	if ((dirfd = open_app_dir(dir, app_name, name)) < 0)
		return dirfd;
	rc = attach_named(dirfd, name, num_ports, &file, &shared);
	close(dirfd);
	if (rc < 0)
		return rc == -ESTALE ? -ENOENT : rc;
	*assignments = atomic_load_explicit(&shared->assignments, memory_order_relaxed);
	*failures = atomic_load_explicit(&shared->failures, memory_order_relaxed);
	shmdt(shared);
	return 0;
}

int pf_state_open_private(uint32_t num_ports, struct pf_state *state)
{
	size_t size = segment_size(num_ports);
	void *map;
	int rc;

	*state = (struct pf_state){0};
	if (num_ports == 0 || num_ports > 65536)
		return -EINVAL;
	/* MAP_SHARED so that forked children still continue one sequence. */
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	if ((rc = fill_new_state(map, num_ports)) < 0) {
		munmap(map, size);
		return rc;
	}
	set_state(state, map, false);
	return 0;
}

void pf_state_close(struct pf_state *state)
{
	if (state->shared && state->file_backed)
		shmdt(state->shared);
	else if (state->shared)
		munmap(state->shared, segment_size(state->num_ports));
	*state = (struct pf_state){0};
}

static int remove_in_dir(int dirfd, const char *name)
{
	struct pf_state_file file;

	if (read_state_file(dirfd, name, &file) == 0)
		retire_segment(&file);
	return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
}

int pf_state_remove(const char *dir, const char *app_name)
{
	char name[256];
	int dirfd, rc;

	if ((dirfd = open_app_dir(dir, app_name, name)) < 0)
		return dirfd;
	rc = remove_in_dir(dirfd, name);
	close(dirfd);
	return rc;
}

static bool ends_with(const char *text, const char *suffix)
{
	size_t len = strlen(text), suffix_len = strlen(suffix);
	return len >= suffix_len && strcmp(text + len - suffix_len, suffix) == 0;
}

/* Temporary files count too: a creator that died before linking its
 * file leaves the segment named only there. */
int pf_state_remove_all(const char *dir)
{
	int dirfd = open_state_dir(dir, false), rc = 0;
	struct dirent *entry;
	DIR *listing;

	if (dirfd < 0)
		return dirfd;
	if (!(listing = fdopendir(dirfd))) {
		close(dirfd);
		return -errno;
	}
	while ((entry = readdir(listing)))
		if (ends_with(entry->d_name, ".state") || ends_with(entry->d_name, ".tmp")) {
			int removed = remove_in_dir(dirfd, entry->d_name);
			rc = rc ? rc : removed;
		}
	closedir(listing);
	return rc;
}
