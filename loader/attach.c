/* Attaching an app's programs to a cgroup, pinned or held. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader/loader_internal.h"
#include "kernel/pins.h"
#include "portfence.skel.h"

#define PROGRAM_COUNT 11

struct pf_bpf_attachment {
	struct bpf_link *links[PROGRAM_COUNT];
	char pin_dir[PATH_MAX];	/* "" when not pinned */
	char cgroup_full[PATH_MAX];
	ino_t cgroup_ino;
};

static struct bpf_program *program(struct portfence_bpf *skel, int i)
{
	struct bpf_program *programs[PROGRAM_COUNT] = {
		skel->progs.pfb_connect4, skel->progs.pfb_connect6, skel->progs.pfb_sendmsg4,
		skel->progs.pfb_sendmsg6, skel->progs.pfb_bind4, skel->progs.pfb_bind6,
		skel->progs.pfb_post_bind4, skel->progs.pfb_post_bind6, skel->progs.pfb_sock_release,
		skel->progs.pfb_sockops, skel->progs.pfb_sock_create,
	};
	return programs[i];
}

static void remove_pins(const char *dir)
{
	DIR *listing = opendir(dir);
	struct dirent *entry;
	char path[PATH_MAX * 2];

	if (!listing)
		return;
	while ((entry = readdir(listing)))
		if (entry->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
			unlink(path);
		}
	closedir(listing);
	rmdir(dir);
}

void pf_bpf_detach(struct pf_bpf_attachment *attachment)
{
	if (!attachment)
		return;
	for (int i = 0; i < PROGRAM_COUNT; i++)
		if (attachment->links[i]) {
			bpf_link__detach(attachment->links[i]);
			bpf_link__destroy(attachment->links[i]);
		}
	if (attachment->pin_dir[0])
		remove_pins(attachment->pin_dir);
	free(attachment);
}

void pf_bpf_attachment_release(struct pf_bpf_attachment *attachment)
{
	if (!attachment)
		return;
	for (int i = 0; i < PROGRAM_COUNT; i++)
		bpf_link__destroy(attachment->links[i]);
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
	char name[PATH_MAX], path[PATH_MAX * 2];

	if (pf_pin_name_encode(cgroup_relative, name, sizeof(name)) < 0)
		snprintf(name, sizeof(name), "%%2F");	/* the root cgroup */
	if ((size_t)snprintf(attachment->pin_dir, sizeof(attachment->pin_dir), "%s/%s/%s", pin_root,
			     loaded->app_name, name) >= sizeof(attachment->pin_dir))
		return -ENAMETOOLONG;
	if (mkdir(attachment->pin_dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	for (int i = 0; i < PROGRAM_COUNT; i++) {
		snprintf(path, sizeof(path), "%s/%s", attachment->pin_dir,
			 bpf_program__name(program(loaded->skel, i)));
		unlink(path);
		int rc = bpf_link__pin(attachment->links[i], path);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int pf_bpf_attach(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
		  bool pin, struct pf_bpf_attachment **out, char *why, size_t len)
{
	return pf_bpf_attach_under(loaded, cgroup_full, cgroup_relative, pin ? PF_BPF_PIN_ROOT : NULL, out,
				   why, len);
}

int pf_bpf_attach_under(struct pf_bpf_app *loaded, const char *cgroup_full, const char *cgroup_relative,
			const char *pin_root, struct pf_bpf_attachment **out, char *why, size_t len)
{
	struct pf_bpf_attachment *attachment = calloc(1, sizeof(*attachment));
	struct stat info;
	int rc = 0, fd = open(cgroup_full, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	*out = NULL;
	if (fd < 0 || fstat(fd, &info) < 0 || !attachment) {
		rc = -errno;
		snprintf(why, len, "cannot open cgroup %s: %s", cgroup_full, strerror(errno));
		goto fail;
	}
	snprintf(attachment->cgroup_full, sizeof(attachment->cgroup_full), "%s", cgroup_full);
	attachment->cgroup_ino = info.st_ino;
	for (int i = 0; i < PROGRAM_COUNT; i++) {
		attachment->links[i] = bpf_program__attach_cgroup(program(loaded->skel, i), fd);
		if (!attachment->links[i]) {
			rc = -errno;
			snprintf(why, len, "cannot attach %s to cgroup %s: %s%s",
				 bpf_program__name(program(loaded->skel, i)), cgroup_full, strerror(errno),
				 errno == EPERM ? " (another tool's exclusive attachment above it?)" : "");
			goto fail;
		}
	}
	if (pin_root && (rc = pin_links(loaded, attachment, cgroup_relative, pin_root)) < 0) {
		snprintf(why, len, "cannot pin the links under %s: %s", attachment->pin_dir, strerror(-rc));
		goto fail;
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

int pf_bpf_unpin_links(const char *dir)
{
	char path[PATH_MAX * 3];
	DIR *listing = opendir(dir);
	struct dirent *entry;

	if (!listing)
		return 0;
	while ((entry = readdir(listing))) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, entry->d_name);
		struct bpf_link *link = bpf_link__open(path);
		if (link) {
			bpf_link__detach(link);
			bpf_link__destroy(link);
		}
	}
	closedir(listing);
	remove_pins(dir);
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

/* An app directory whose cgroups are all gone holds only its maps. */
static void remove_app_if_unused(const char *app_dir)
{
	DIR *listing = opendir(app_dir);
	struct dirent *entry;
	char path[PATH_MAX * 2];
	struct stat info;
	bool in_use = false;

	if (!listing)
		return;
	while ((entry = readdir(listing)) && !in_use) {
		snprintf(path, sizeof(path), "%s/%s", app_dir, entry->d_name);
		in_use = entry->d_name[0] != '.' && stat(path, &info) == 0 && S_ISDIR(info.st_mode);
	}
	closedir(listing);
	if (!in_use)
		remove_pins(app_dir);
}

void pf_bpf_forget_app_if_unused(const char *app_name)
{
	char app_dir[PATH_MAX];

	snprintf(app_dir, sizeof(app_dir), "%s/%s", PF_BPF_PIN_ROOT, app_name);
	remove_app_if_unused(app_dir);
}

int pf_bpf_detach_pinned(const char *app_name, const char *cgroup_relative)
{
	char name[PATH_MAX], app_dir[PATH_MAX * 2];
	DIR *apps = opendir(PF_BPF_PIN_ROOT);
	struct dirent *entry;
	int detached = 0;

	if (!apps)
		return errno == ENOENT ? 0 : -errno;
	if (pf_pin_name_encode(cgroup_relative, name, sizeof(name)) < 0)
		snprintf(name, sizeof(name), "%%2F");	/* the root cgroup */
	while ((entry = readdir(apps))) {
		if (entry->d_name[0] == '.' || (app_name && strcmp(app_name, entry->d_name) != 0))
			continue;
		snprintf(app_dir, sizeof(app_dir), "%s/%s", PF_BPF_PIN_ROOT, entry->d_name);
		detached += detach_app_pins(app_dir, name);
		remove_app_if_unused(app_dir);
	}
	closedir(apps);
	return detached;
}
