/* The BPF programs' assignment and failure counters (the outcomes map),
 * for status: the app's pinned map (attach, daemon: it stays pinned
 * after a detach, as record_loss does), and the maps of the programs of
 * the links pinned for it under PF_BPF_PIN_ROOT and PF_BPF_RUN_ROOT
 * (each `run --bpf` while it lives), link -> program -> its maps; each
 * distinct outcomes map counts once (the loads of attach and daemon
 * share the pinned one, each run has its own). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/portfence_api.h"
#include "loader/loader.h"

#define MAX_MAPS 64	/* outcomes maps of one app counted */

struct tally {
	uint32_t seen[MAX_MAPS];
	size_t count;
	uint64_t assigned, failed;
	int error;	/* the first -errno met, 0 */
};

static uint64_t percpu_sum(int map_fd, uint32_t key, int cpus, uint64_t *values, int *error)
{
	uint64_t sum = 0;
	if (bpf_map_lookup_elem(map_fd, &key, values) < 0) {
		if (!*error)
			*error = -errno;
		return 0;
	}
	for (int c = 0; c < cpus; c++)
		sum += values[c];
	return sum;
}

/* Adds the map of fd when it is an outcomes map not counted yet; true
 * when it is one. */
static bool add_map(struct tally *t, int fd)
{
	struct bpf_map_info map = {0};
	uint32_t map_len = sizeof(map);
	bool outcomes = bpf_obj_get_info_by_fd(fd, &map, &map_len) == 0 && strcmp(map.name, "outcomes") == 0 &&
			map.type == BPF_MAP_TYPE_PERCPU_ARRAY && map.value_size == sizeof(uint64_t) &&
			map.max_entries >= PF_BPF_OUTCOME_ENTRIES;
	bool seen = false;

	for (size_t i = 0; outcomes && i < t->count; i++)
		seen |= t->seen[i] == map.id;
	if (outcomes && !seen && t->count < MAX_MAPS) {
		int cpus = libbpf_num_possible_cpus();
		uint64_t *values = cpus > 0 ? calloc((size_t)cpus, sizeof(*values)) : NULL;
		if (values) {
			t->seen[t->count++] = map.id;
			t->assigned += percpu_sum(fd, PF_BPF_OUTCOME_ASSIGNED, cpus, values, &t->error);
			t->failed += percpu_sum(fd, PF_BPF_OUTCOME_FAILED, cpus, values, &t->error);
		}
		free(values);
	}
	return outcomes;
}

/* Adds the outcomes map among prog_fd's maps; true when the program has
 * one. */
static bool add_program(struct tally *t, int prog_fd)
{
	uint32_t ids[64];
	struct bpf_prog_info info = {.nr_map_ids = 64, .map_ids = (uint64_t)(uintptr_t)ids};
	uint32_t len = sizeof(info);

	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) < 0)
		return false;
	for (uint32_t m = 0; m < info.nr_map_ids && m < 64; m++) {
		int fd = bpf_map_get_fd_by_id(ids[m]);
		if (fd < 0)
			continue;
		bool outcomes = add_map(t, fd);
		close(fd);
		if (outcomes)
			return true;
	}
	return false;
}

/* The links pinned in one attachment's directory: the first whose
 * program has an outcomes map stands for them all (one load). */
static void add_attachment(struct tally *t, const char *dir_path)
{
	DIR *dir = opendir(dir_path);
	struct dirent *entry;
	char path[PATH_MAX];

	while (dir && (entry = readdir(dir))) {
		if (entry->d_name[0] == '.' ||
		    (size_t)snprintf(path, sizeof(path), "%s/%s", dir_path, entry->d_name) >= sizeof(path))
			continue;
		int link_fd = bpf_obj_get(path);
		struct bpf_link_info link = {0};
		uint32_t len = sizeof(link);
		if (link_fd < 0)
			continue;
		int prog_fd = bpf_obj_get_info_by_fd(link_fd, &link, &len) == 0 ? bpf_prog_get_fd_by_id(link.prog_id)
										   : -1;
		close(link_fd);
		bool found = prog_fd >= 0 && add_program(t, prog_fd);
		if (prog_fd >= 0)
			close(prog_fd);
		if (found)
			break;
	}
	if (dir)
		closedir(dir);
}

int pf_bpf_outcomes(const char *app_name, uint64_t *assigned, uint64_t *failed)
{
	static const char *const roots[] = {PF_BPF_PIN_ROOT, PF_BPF_RUN_ROOT};
	struct tally t = {0};
	char dir[PATH_MAX], path[PATH_MAX + 16], attachment[PATH_MAX * 2];

	/* the app's own pinned map (attach, daemon): kept after a detach */
	if (pf_pin_app_dir(PF_BPF_PIN_ROOT, app_name, dir, sizeof(dir)) < 0)
		return -ENAMETOOLONG;
	snprintf(path, sizeof(path), "%s/outcomes", dir);
	int pinned = bpf_obj_get(path);
	if (pinned >= 0) {
		add_map(&t, pinned);
		close(pinned);
	}
	for (size_t r = 0; r < 2; r++) {
		pf_pin_app_dir(roots[r], app_name, path, sizeof(path));
		DIR *dir = opendir(path);
		struct dirent *entry;
		if (!dir && errno != ENOENT && !t.error)
			t.error = -errno;
		while (dir && (entry = readdir(dir))) {
			if (entry->d_name[0] == '.' || (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) ||
			    (size_t)snprintf(attachment, sizeof(attachment), "%s/%s", path, entry->d_name) >=
				    sizeof(attachment))
				continue;
			add_attachment(&t, attachment);
		}
		if (dir)
			closedir(dir);
	}
	*assigned = t.assigned;
	*failed = t.failed;
	return t.count ? 0 : t.error;
}
