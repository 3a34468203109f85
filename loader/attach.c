/* Attaching an app's programs to a cgroup, pinned or held. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "loader/loader_internal.h"
#include "kernel/pins.h"
#include "portfence.skel.h"

#define PROGRAM_COUNT PF_BPF_PROGRAM_COUNT

struct pf_bpf_attachment {
	struct bpf_link *links[PROGRAM_COUNT];
	/* An entry in a shared cgroup map (pf_bpf_confine): its fd, -1 when
	 * the attachment is links, and the entry's key and value. */
	int map_fd;
	uint64_t cgroup_id;
	uint32_t app_id;
	char pin_dir[PATH_MAX];	/* "" when not pinned */
	char cgroup_full[PATH_MAX];
	ino_t cgroup_ino;
};

struct bpf_program *pf_bpf_app_program(const struct pf_bpf_app *loaded, int i)
{
	struct portfence_bpf *skel = loaded->skel;
	struct bpf_program *programs[PROGRAM_COUNT] = {
		skel->progs.pfb_connect4, skel->progs.pfb_connect6, skel->progs.pfb_sendmsg4,
		skel->progs.pfb_sendmsg6, skel->progs.pfb_bind4, skel->progs.pfb_bind6,
		skel->progs.pfb_post_bind4, skel->progs.pfb_post_bind6, skel->progs.pfb_sock_release,
		skel->progs.pfb_sockops, skel->progs.pfb_sock_create,
	};
	return programs[i];
}

static bool unlink_pin(void *opaque, const char *dir, const char *name)
{
	char path[PATH_MAX * 2];

	(void)opaque;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) < sizeof(path))
		unlink(path);
	return false;
}

void pf_bpf_remove_pins(const char *dir)
{
	if (pf_pin_entries_each(dir, unlink_pin, NULL) == 0)
		rmdir(dir);
}

void pf_bpf_detach(struct pf_bpf_attachment *attachment)
{
	bool linked = false;

	if (!attachment)
		return;
	for (int i = 0; i < PROGRAM_COUNT; i++)
		if (attachment->links[i]) {
			linked = true;
			bpf_link__detach(attachment->links[i]);
			bpf_link__destroy(attachment->links[i]);
		}
	if (attachment->map_fd >= 0) {
		uint32_t app = 0;
		if (bpf_map_lookup_elem(attachment->map_fd, &attachment->cgroup_id, &app) == 0 &&
		    app == attachment->app_id)
			bpf_map_delete_elem(attachment->map_fd, &attachment->cgroup_id);
		close(attachment->map_fd);
	}
	/* A daemon's attachment (its cgroup in the map, no links of its own)
	 * leaves the directory empty: it goes only if it still is, for an
	 * `attach` of the same app and cgroup pins its links there too. */
	if (attachment->pin_dir[0] && linked)
		pf_bpf_remove_pins(attachment->pin_dir);
	else if (attachment->pin_dir[0])
		rmdir(attachment->pin_dir);
	free(attachment);
}

void pf_bpf_attachment_release(struct pf_bpf_attachment *attachment)
{
	if (!attachment)
		return;
	for (int i = 0; i < PROGRAM_COUNT; i++)
		bpf_link__destroy(attachment->links[i]);
	if (attachment->map_fd >= 0)
		close(attachment->map_fd);
	free(attachment);
}

bool pf_bpf_attachment_alive(const struct pf_bpf_attachment *attachment)
{
	struct stat now;
	return stat(attachment->cgroup_full, &now) == 0 && now.st_ino == attachment->cgroup_ino;
}

static int pin_links(struct pf_bpf_app *loaded, struct pf_bpf_attachment *attachment,
		     const char *cgroup_relative, const char *pin_root)
{
	char name[PATH_MAX], app_dir[PATH_MAX], path[PATH_MAX * 2];

	if (pf_pin_name_encode(cgroup_relative, name, sizeof(name)) < 0)
		snprintf(name, sizeof(name), "%%2F");	/* the root cgroup */
	if (pf_pin_app_dir(pin_root, loaded->app_name, app_dir, sizeof(app_dir)) < 0 ||
	    (size_t)snprintf(attachment->pin_dir, sizeof(attachment->pin_dir), "%s/%s", app_dir, name) >=
		    sizeof(attachment->pin_dir))
		return -ENAMETOOLONG;
	/* A sweep of a dead daemon's empty directories waits meanwhile. */
	int root = pf_bpf_lock_pin_root(), rc = 0;
	if (mkdir(attachment->pin_dir, 0700) < 0 && errno != EEXIST)
		rc = -errno;
	for (int i = 0; i < PROGRAM_COUNT && rc == 0; i++) {
		snprintf(path, sizeof(path), "%s/%s", attachment->pin_dir,
			 bpf_program__name(pf_bpf_app_program(loaded, i)));
		unlink(path);
		rc = bpf_link__pin(attachment->links[i], path);
	}
	if (root >= 0)
		close(root);
	return rc;
}

/* Which cgroup, from cgroup_full up to the mount, holds another
 * manager's exclusive attachment (flags without BPF_F_ALLOW_MULTI) of
 * type: said in blocker, "" when none is found. */
static void exclusive_blocker(const char *cgroup_full, enum bpf_attach_type type, char *blocker, size_t len)
{
	char dir[PATH_MAX];
	struct statfs fs;

	snprintf(dir, sizeof(dir), "%s", cgroup_full);
	for (;;) {
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		__u32 flags = 0, count = 0;
		if (fd >= 0 && bpf_prog_query(fd, type, 0, &flags, NULL, &count) == 0 && count > 0 &&
		    !(flags & BPF_F_ALLOW_MULTI)) {
			close(fd);
			snprintf(blocker, len, ": another manager holds an exclusive %s attachment (not BPF_F_ALLOW_MULTI) "
				 "at cgroup %s", libbpf_bpf_attach_type_str(type), dir);
			return;
		}
		if (fd >= 0)
			close(fd);
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			return;
		*slash = '\0';
		if (statfs(dir, &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
			return;	/* above the mount */
	}
}

int pf_bpf_attach(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
		  bool pin, struct pf_bpf_attachment **out, char *why, size_t len)
{
	return pf_bpf_attach_under(loaded, cgroup_full, cgroup_relative, pin ? PF_BPF_PIN_ROOT : NULL, out,
				   why, len);
}

int pf_bpf_attach_programs(struct bpf_program *const programs[PROGRAM_COUNT], const char *cgroup_full,
			   struct pf_bpf_attachment **out, char *why, size_t len)
{
	struct pf_bpf_attachment *attachment = calloc(1, sizeof(*attachment));
	struct stat info;
	int rc = 0, fd = open(cgroup_full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	*out = NULL;
	if (attachment)
		attachment->map_fd = -1;
	if (fd < 0 || fstat(fd, &info) < 0 || !attachment) {
		rc = -errno;
		snprintf(why, len, "cannot open cgroup %s: %s", cgroup_full, strerror(errno));
		goto fail;
	}
	snprintf(attachment->cgroup_full, sizeof(attachment->cgroup_full), "%s", cgroup_full);
	attachment->cgroup_ino = info.st_ino;
	for (int i = 0; i < PROGRAM_COUNT; i++) {
		attachment->links[i] = bpf_program__attach_cgroup(programs[i], fd);
		if (!attachment->links[i]) {
			rc = -errno;
			char blocker[PATH_MAX + 128] = "";
			if (rc == -EPERM)
				exclusive_blocker(cgroup_full, bpf_program__expected_attach_type(programs[i]), blocker,
						  sizeof(blocker));
			snprintf(why, len, "cannot attach %s to cgroup %s: %s%s", bpf_program__name(programs[i]),
				 cgroup_full, strerror(-rc),
				 blocker[0] ? blocker
				 : rc == -EPERM ? " (another tool's exclusive attachment above it?)" : "");
			goto fail;
		}
	}
	close(fd);
	*out = attachment;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	pf_bpf_detach(attachment);
	return rc < 0 ? rc : -EINVAL;
}

int pf_bpf_attach_under(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
			const char *pin_root, struct pf_bpf_attachment **out, char *why, size_t len)
{
	struct bpf_program *programs[PROGRAM_COUNT];
	struct pf_bpf_attachment *attachment;
	int rc;

	for (int i = 0; i < PROGRAM_COUNT; i++)
		programs[i] = pf_bpf_app_program(loaded, i);
	if ((rc = pf_bpf_attach_programs(programs, cgroup_full, &attachment, why, len)) < 0)
		return rc;
	/* Its own map: the programs judge the sockets of this cgroup (and
	 * below), and leave alone those of another attachment's cgroups. */
	if (loaded->own_cgroups) {
		uint64_t id = (uint64_t)attachment->cgroup_ino;
		if (bpf_map_update_elem(bpf_map__fd(loaded->skel->maps.cgroup_apps), &id, &loaded->app_id, BPF_ANY) < 0) {
			rc = -errno;
			snprintf(why, len, "cannot confine cgroup %s: %s", cgroup_full, strerror(errno));
			goto fail;
		}
	}
	if (pin_root && (rc = pin_links(loaded, attachment, cgroup_relative, pin_root)) < 0) {
		snprintf(why, len, "cannot pin the links under %s: %s", attachment->pin_dir, strerror(-rc));
		goto fail;
	}
	*out = attachment;
	return 0;
fail:
	pf_bpf_detach(attachment);
	return rc < 0 ? rc : -EINVAL;
}

int pf_bpf_confine(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
		   struct pf_bpf_attachment **out, char *why, size_t len)
{
	struct pf_bpf_attachment *attachment = calloc(1, sizeof(*attachment));
	struct stat info;
	char name[PATH_MAX];

	*out = NULL;
	if (!attachment) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	attachment->map_fd = -1;
	int gone = stat(cgroup_full, &info) < 0 ? -errno : 0;
	if (gone || !S_ISDIR(info.st_mode)) {
		int rc = gone ? gone : -ENOTDIR;
		snprintf(why, len, "cannot open cgroup %s: %s", cgroup_full, strerror(-rc));
		free(attachment);
		return rc;
	}
	snprintf(attachment->cgroup_full, sizeof(attachment->cgroup_full), "%s", cgroup_full);
	attachment->cgroup_ino = info.st_ino;
	attachment->cgroup_id = (uint64_t)info.st_ino;
	attachment->app_id = loaded->app_id;
	attachment->map_fd = fcntl(bpf_map__fd(loaded->skel->maps.cgroup_apps), F_DUPFD_CLOEXEC, 0);
	if (attachment->map_fd < 0 ||
	    bpf_map_update_elem(attachment->map_fd, &attachment->cgroup_id, &attachment->app_id, BPF_ANY) < 0) {
		int rc = -errno;
		snprintf(why, len, "cannot confine cgroup %s: %s", cgroup_full, strerror(errno));
		pf_bpf_detach(attachment);
		return rc;
	}
	if (pf_pin_name_encode(cgroup_relative, name, sizeof(name)) < 0)
		snprintf(name, sizeof(name), "%%2F");	/* the root cgroup */
	if ((size_t)snprintf(attachment->pin_dir, sizeof(attachment->pin_dir), "%s/%s", loaded->pin_dir, name) >=
		    sizeof(attachment->pin_dir) ||
	    (mkdir(attachment->pin_dir, 0700) < 0 && errno != EEXIST))
		attachment->pin_dir[0] = '\0';	/* status does not list it; it is confined all the same */
	*out = attachment;
	return 0;
}

void pf_bpf_unconfine(int cgroup_apps_fd, const char *cgroup_full)
{
	struct stat info;
	uint64_t id;

	if (cgroup_apps_fd < 0 || stat(cgroup_full, &info) < 0)
		return;
	id = (uint64_t)info.st_ino;
	bpf_map_delete_elem(cgroup_apps_fd, &id);
}

static bool detach_link(void *opaque, const char *dir, const char *name)
{
	char path[PATH_MAX * 3];

	(void)opaque;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return false;
	struct bpf_link *link = bpf_link__open(path);
	if (link) {
		bpf_link__detach(link);
		bpf_link__destroy(link);
	}
	return false;
}

int pf_bpf_unpin_links(const char *dir)
{
	if (pf_pin_entries_each(dir, detach_link, NULL) < 0)
		return 0;
	pf_bpf_remove_pins(dir);
	return 1;
}

/* The pinned links of one app's cgroup: detached, then their pins. */
static int detach_app_pins(const char *app_dir, const char *pin_name)
{
	char dir[PATH_MAX * 2];

	if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", app_dir, pin_name) >= sizeof(dir))
		return 0;
	return pf_bpf_unpin_links(dir);
}

/* Whether the pinned ring of an app (its directory) holds records no
 * drain has read: its producer ahead of its consumer. */
static bool ring_unread(const char *app_dir)
{
	char path[PATH_MAX + 16];
	long page = sysconf(_SC_PAGESIZE);
	bool unread = false;

	snprintf(path, sizeof(path), "%s/records", app_dir);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return false;
	/* The consumer's position heads the first page, the producer's the
	 * second. */
	void *consumer = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, 0);
	void *producer = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, page);
	if (consumer != MAP_FAILED && producer != MAP_FAILED)
		unread = __atomic_load_n((unsigned long *)producer, __ATOMIC_ACQUIRE) !=
			 __atomic_load_n((unsigned long *)consumer, __ATOMIC_ACQUIRE);
	if (consumer != MAP_FAILED)
		munmap(consumer, (size_t)page);
	if (producer != MAP_FAILED)
		munmap(producer, (size_t)page);
	close(fd);
	return unread;
}

/* Whether the app's programs lost records that no error record has
 * reported yet. */
static bool loss_unreported(const char *app_dir)
{
	struct pf_bpf_loss loss;

	return pf_bpf_pinned_loss(app_dir, &loss) > 0 && loss.lost > loss.reported;
}

/* Whether an entry of an app's directory is a cgroup's directory (then
 * *found, and the walk stops). */
static bool find_cgroup_dir(void *found, const char *app_dir, const char *name)
{
	char path[PATH_MAX * 3];
	struct stat info;

	snprintf(path, sizeof(path), "%s/%s", app_dir, name);
	*(bool *)found = stat(path, &info) == 0 && S_ISDIR(info.st_mode);
	return *(bool *)found;
}

/* An app directory whose cgroups are all gone holds only its maps: they
 * go, unless they hold records (or a loss) not written yet, which the
 * next daemon writes (it serves every app pinned here).  Whether they
 * were kept for that. */
bool pf_bpf_app_dir_in_use(const char *app_dir)
{
	bool in_use = false;

	pf_pin_entries_each(app_dir, find_cgroup_dir, &in_use);
	return in_use;
}

static bool remove_app_if_unused(const char *app_dir)
{
	if (pf_bpf_app_dir_in_use(app_dir))
		return false;
	if (ring_unread(app_dir) || loss_unreported(app_dir))
		return true;
	pf_bpf_remove_pins(app_dir);
	return false;
}

void pf_bpf_forget_app_if_unused(const char *app_name)
{
	char app_dir[PATH_MAX];

	if (pf_pin_app_dir(PF_BPF_PIN_ROOT, app_name, app_dir, sizeof(app_dir)) >= 0)
		remove_app_if_unused(app_dir);
}

/* What pf_bpf_detach_pinned looks for in each app directory, and what
 * it found. */
struct detach_search {
	const char *only_app_dir;	/* NULL: every app's; "": none */
	char pin_name[PATH_MAX];	/* the cgroup's */
	int detached;
	bool records_kept;
};

static bool detach_in_app_dir(void *opaque, const char *app_dir)
{
	struct detach_search *search = opaque;

	if (search->only_app_dir && strcmp(search->only_app_dir, app_dir) != 0)
		return false;
	int here = detach_app_pins(app_dir, search->pin_name);
	search->detached += here;
	if (remove_app_if_unused(app_dir) && here)
		search->records_kept = true;
	return false;
}

int pf_bpf_detach_pinned(const char *app_name, const char *cgroup_relative, bool *records_kept)
{
	struct detach_search search = {0};
	char app_dir[PATH_MAX];

	if (pf_pin_name_encode(cgroup_relative, search.pin_name, sizeof(search.pin_name)) < 0)
		snprintf(search.pin_name, sizeof(search.pin_name), "%%2F");	/* the root cgroup */
	/* An app whose name makes no pin directory was never attached. */
	if (app_name && pf_pin_app_dir(PF_BPF_PIN_ROOT, app_name, app_dir, sizeof(app_dir)) < 0)
		app_dir[0] = '\0';
	search.only_app_dir = app_name ? app_dir : NULL;
	int rc = pf_pin_app_dirs_each(PF_BPF_PIN_ROOT, detach_in_app_dir, &search);
	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;
	if (search.records_kept)
		*records_kept = true;
	int detached = search.detached;
	/* A cgroup a daemon confines has a pin directory and no links: its
	 * entry in the daemon's cgroup map goes too. */
	char mount_point[PATH_MAX], full[PATH_MAX * 2];
	int map_fd = detached ? bpf_obj_get(PF_BPF_CGROUPS_PIN) : -1;
	if (map_fd >= 0 && pf_cgroup2_mount(mount_point, sizeof(mount_point)) == 0) {
		snprintf(full, sizeof(full), "%s/%s", mount_point, cgroup_relative[0] == '/' ? cgroup_relative + 1
												 : cgroup_relative);
		pf_bpf_unconfine(map_fd, full);
	}
	if (map_fd >= 0)
		close(map_fd);
	return detached;
}
