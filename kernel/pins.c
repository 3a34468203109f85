#include "kernel/pins.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

int pf_pin_name_encode(const char *cgroup_path, char *out, size_t out_len)
{
	size_t len = 0;

	while (*cgroup_path == '/')
		cgroup_path++;
	if (!*cgroup_path)
		return -1;
	for (const char *c = cgroup_path; *c; c++) {
		const char *piece = *c == '%' ? "%25" : *c == '/' ? "%2F" : *c == '.' ? "%2E" : NULL;
		size_t piece_len = piece ? 3 : 1;
		if (len + piece_len >= out_len)
			return -1;
		if (piece)
			memcpy(out + len, piece, 3);
		else
			out[len] = *c;
		len += piece_len;
	}
	out[len] = '\0';
	return (int)len;
}

int pf_pin_name_decode(const char *pin_name, char *out, size_t out_len)
{
	size_t len = 0;

	if (!*pin_name)
		return -1;
	for (const char *c = pin_name; *c; c++) {
		char plain = *c;
		if (plain == '/')
			return -1;
		if (plain == '%') {
			if (strncmp(c, "%25", 3) == 0)
				plain = '%';
			else if (strncmp(c, "%2F", 3) == 0 || strncmp(c, "%2f", 3) == 0)
				plain = '/';
			else if (strncmp(c, "%2E", 3) == 0 || strncmp(c, "%2e", 3) == 0)
				plain = '.';
			else
				return -1;
			c += 2;
		}
		if (len + 1 >= out_len)
			return -1;
		out[len++] = plain;
	}
	out[len] = '\0';
	return (int)len;
}

int pf_pin_app_dir(const char *root, const char *app_name, char *out, size_t out_len)
{
	char name[1024];

	if (pf_pin_name_encode(app_name, name, sizeof(name)) < 0)
		return -1;
	int n = snprintf(out, out_len, "%s/%s", root, name);
	return n < 0 || (size_t)n >= out_len ? -1 : n;
}

/* The attachments in one app's directory; true when each stopped. */
static bool each_in_app_dir(DIR *dir, const char *app_name, pf_pin_fn *each, void *opaque)
{
	struct dirent *entry;

	while ((entry = readdir(dir))) {
		char cgroup_path[PATH_MAX];
		if (entry->d_name[0] == '.' || (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) ||
		    pf_pin_name_decode(entry->d_name, cgroup_path, sizeof(cgroup_path)) < 0)
			continue;
		if (each(opaque, app_name, cgroup_path))
			return true;
	}
	return false;
}

int pf_pin_app_dirs_each(const char *root, pf_pin_dir_fn *each, void *opaque)
{
	DIR *apps = opendir(root);
	struct dirent *entry;
	bool stopped = false;

	if (!apps)
		return -errno;
	while (!stopped && (entry = readdir(apps))) {
		char app_dir[PATH_MAX * 2];
		if (entry->d_name[0] == '.')
			continue;
		snprintf(app_dir, sizeof(app_dir), "%s/%s", root, entry->d_name);
		stopped = each(opaque, app_dir);
	}
	closedir(apps);
	return 0;
}

int pf_pin_entries_each(const char *app_dir, pf_pin_entry_fn *each, void *opaque)
{
	DIR *dir = opendir(app_dir);
	struct dirent *entry;

	if (!dir)
		return -errno;
	while ((entry = readdir(dir)))
		if (entry->d_name[0] != '.' && each(opaque, app_dir, entry->d_name))
			break;
	closedir(dir);
	return 0;
}

/* What a two-level walk carries to each app directory, and whether its
 * callback stopped it. */
struct app_walk {
	pf_pin_entry_fn *each_entry;
	pf_pin_fn *each_pin;
	void *opaque;
	bool stopped;
};

static bool stop_entry(void *opaque, const char *app_dir, const char *name)
{
	struct app_walk *walk = opaque;

	walk->stopped = walk->each_entry(walk->opaque, app_dir, name);
	return walk->stopped;
}

static bool entries_of_app(void *opaque, const char *app_dir)
{
	struct app_walk *walk = opaque;

	pf_pin_entries_each(app_dir, stop_entry, walk);
	return walk->stopped;
}

int pf_pins_each_entry(const char *root, pf_pin_entry_fn *each, void *opaque)
{
	struct app_walk walk = {.each_entry = each, .opaque = opaque};

	return pf_pin_app_dirs_each(root, entries_of_app, &walk);
}

/* The attachments of one app directory, its name decoded (one that does
 * not decode is passed over). */
static bool pins_of_app(void *opaque, const char *app_dir)
{
	struct app_walk *walk = opaque;
	char app_name[PATH_MAX];

	if (pf_pin_name_decode(strrchr(app_dir, '/') + 1, app_name, sizeof(app_name)) < 0)
		return false;
	DIR *dir = opendir(app_dir);
	if (!dir)
		return false;
	walk->stopped = each_in_app_dir(dir, app_name, walk->each_pin, walk->opaque);
	closedir(dir);
	return walk->stopped;
}

int pf_pins_each(const char *root, pf_pin_fn *each, void *opaque)
{
	struct app_walk walk = {.each_pin = each, .opaque = opaque};

	return pf_pin_app_dirs_each(root, pins_of_app, &walk);
}

int pf_pins_each_of_app(const char *root, const char *app_name, pf_pin_fn *each, void *opaque)
{
	char app_dir[PATH_MAX];

	/* A name too long for a pin directory was never attached. */
	if (pf_pin_app_dir(root, app_name, app_dir, sizeof(app_dir)) < 0)
		return -ENOENT;
	DIR *dir = opendir(app_dir);
	if (!dir)
		return -errno;
	each_in_app_dir(dir, app_name, each, opaque);
	closedir(dir);
	return 0;
}
