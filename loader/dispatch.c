/* The daemon's dispatcher (bpf/dispatch.bpf.c): loaded once over the
 * daemon's cgroup map, its program arrays filled with each app's
 * programs at the app's id, attached where the apps' cgroups meet. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "dispatch.skel.h"
#include "loader/loader_internal.h"

struct pf_bpf_dispatch {
	struct dispatch_bpf *skel;
};

/* Hook i's program and program array, in the order of
 * pf_bpf_app_program. */
struct hook {
	struct bpf_program *program;
	struct bpf_map *targets;
};

static struct hook hook(const struct pf_bpf_dispatch *dispatch, int i)
{
	struct dispatch_bpf *skel = dispatch->skel;
	const struct hook hooks[PF_BPF_PROGRAM_COUNT] = {
		{skel->progs.pfd_connect4, skel->maps.to_connect4},
		{skel->progs.pfd_connect6, skel->maps.to_connect6},
		{skel->progs.pfd_sendmsg4, skel->maps.to_sendmsg4},
		{skel->progs.pfd_sendmsg6, skel->maps.to_sendmsg6},
		{skel->progs.pfd_bind4, skel->maps.to_bind4},
		{skel->progs.pfd_bind6, skel->maps.to_bind6},
		{skel->progs.pfd_post_bind4, skel->maps.to_post_bind4},
		{skel->progs.pfd_post_bind6, skel->maps.to_post_bind6},
		{skel->progs.pfd_sock_release, skel->maps.to_sock_release},
		{skel->progs.pfd_sockops, skel->maps.to_sockops},
		{skel->progs.pfd_sock_create, skel->maps.to_sock_create},
	};
	return hooks[i];
}

int pf_bpf_dispatch_load(int cgroup_apps_fd, uint32_t apps, struct pf_bpf_dispatch **out, char *why, size_t len)
{
	struct pf_bpf_dispatch *dispatch = calloc(1, sizeof(*dispatch));
	int rc;

	*out = NULL;
	if (!dispatch) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	dispatch->skel = dispatch_bpf__open();
	if (!dispatch->skel) {
		rc = -errno;
		snprintf(why, len, "BPF refused: cannot open the dispatcher: %s", strerror(errno));
		goto fail;
	}
	for (int i = 0; i < PF_BPF_PROGRAM_COUNT; i++)
		if ((rc = bpf_map__set_max_entries(hook(dispatch, i).targets, apps + 1)) < 0) {
			snprintf(why, len, "cannot size the dispatcher for %u apps: %s", apps, strerror(-rc));
			goto fail;
		}
	if ((rc = bpf_map__reuse_fd(dispatch->skel->maps.cgroup_apps, cgroup_apps_fd)) < 0) {
		snprintf(why, len, "cannot give the dispatcher the cgroup map: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = dispatch_bpf__load(dispatch->skel)) < 0) {
		snprintf(why, len, "BPF refused: the kernel did not load the dispatcher (%s)", strerror(-rc));
		goto fail;
	}
	*out = dispatch;
	return 0;
fail:
	pf_bpf_dispatch_free(dispatch);
	return rc < 0 ? rc : -EINVAL;
}

int pf_bpf_dispatch_route(struct pf_bpf_dispatch *dispatch, const struct pf_bpf_app *loaded, char *why, size_t len)
{
	for (int i = 0; i < PF_BPF_PROGRAM_COUNT; i++) {
		struct bpf_program *target = pf_bpf_app_program(loaded, i);
		int fd = bpf_program__fd(target);
		if (bpf_map_update_elem(bpf_map__fd(hook(dispatch, i).targets), &loaded->app_id, &fd, BPF_ANY) < 0) {
			int rc = -errno;
			snprintf(why, len, "cannot route %s's %s through the dispatcher: %s", loaded->app_name,
				 bpf_program__name(target), strerror(errno));
			return rc;
		}
	}
	return 0;
}

int pf_bpf_dispatch_attach(struct pf_bpf_dispatch *dispatch, const char *cgroup_full,
			   struct pf_bpf_attachment **out, char *why, size_t len)
{
	struct bpf_program *programs[PF_BPF_PROGRAM_COUNT];

	for (int i = 0; i < PF_BPF_PROGRAM_COUNT; i++)
		programs[i] = hook(dispatch, i).program;
	return pf_bpf_attach_programs(programs, cgroup_full, out, why, len);
}

void pf_bpf_dispatch_free(struct pf_bpf_dispatch *dispatch)
{
	if (!dispatch)
		return;
	dispatch_bpf__destroy(dispatch->skel);
	free(dispatch);
}
