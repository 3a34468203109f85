/* The birth programs (bpf/cgroups.bpf.h): the policy's globs handed to
 * the kernel, and tp_btf/cgroup_mkdir and cgroup_rmdir attached, so
 * that a new cgroup is given its app inside mkdir(2). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader/loader_internal.h"
#include "portfence.skel.h"

int pf_bpf_cgroup_map_fd(const struct pf_bpf_app *loaded)
{
	return bpf_map__fd(loaded->skel->maps.cgroup_apps);
}

uint64_t pf_bpf_cgroup_id(const char *cgroup_full)
{
	struct stat info;
	return stat(cgroup_full, &info) == 0 ? (uint64_t)info.st_ino : 0;
}

int pf_bpf_set_birth_glob(struct pf_bpf_app *births, uint32_t index, uint32_t app_id, const char *glob)
{
	struct pf_bpf_cgroup_glob entry = {.app = app_id};

	if (index >= PF_BPF_GLOBS)
		return -E2BIG;
	if (app_id && (strpbrk(glob, "[\\") || glob[0] != '/' ||
		       (size_t)snprintf(entry.glob, sizeof(entry.glob), "%s", glob) >= sizeof(entry.glob)))
		return -EINVAL;
	if (bpf_map_update_elem(bpf_map__fd(births->skel->maps.cgroup_globs), &index, &entry, BPF_ANY) < 0)
		return -errno;
	return 0;
}

int pf_bpf_watch_births(struct pf_bpf_app *births, char *why, size_t len)
{
	struct bpf_program *programs[2] = {births->skel->progs.pfb_cgroup_mkdir, births->skel->progs.pfb_cgroup_rmdir};

	for (int i = 0; i < 2; i++) {
		if (births->birth_links[i])
			continue;
		births->birth_links[i] = bpf_program__attach(programs[i]);
		if (!births->birth_links[i]) {
			int rc = -errno;
			snprintf(why, len, "cannot attach %s (tp_btf, through the kernel's BTF): %s",
				 bpf_program__section_name(programs[i]), strerror(errno));
			return rc;
		}
	}
	return 0;
}
