#include "kernel/bpf_progs.h"

#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int pf_bpf_prog_next(__u32 *id)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.start_id = *id;
	if (syscall(SYS_bpf, BPF_PROG_GET_NEXT_ID, &attr, sizeof(attr)) < 0)
		return -1;
	*id = attr.next_id;
	return 0;
}

/* The facts of the program or map behind fd, len bytes of them. */
static int object_info(int fd, void *info, __u32 len)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (__u32)fd;
	attr.info.info_len = len;
	attr.info.info = (__u64)(unsigned long)info;
	return syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) < 0 ? -1 : 0;
}

/* Fills *info, whose map_ids buffer (if any) the caller has set. */
static int prog_info(__u32 id, struct bpf_prog_info *info)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_id = id;
	int fd = (int)syscall(SYS_bpf, BPF_PROG_GET_FD_BY_ID, &attr, sizeof(attr));
	if (fd < 0)
		return -1;
	int rc = object_info(fd, info, sizeof(*info));
	close(fd);
	return rc;
}

int pf_bpf_prog_info(__u32 id, struct bpf_prog_info *info)
{
	memset(info, 0, sizeof(*info));
	return prog_info(id, info);
}

int pf_bpf_prog_maps(__u32 id, __u32 *map_ids, __u32 *count)
{
	struct bpf_prog_info info;

	memset(&info, 0, sizeof(info));
	info.nr_map_ids = *count;
	info.map_ids = (__u64)(unsigned long)map_ids;
	if (prog_info(id, &info) < 0)
		return -1;
	*count = info.nr_map_ids;
	return 0;
}

int pf_bpf_map_by_id(__u32 id, struct bpf_map_info *info)
{
	union bpf_attr attr;

	memset(info, 0, sizeof(*info));
	memset(&attr, 0, sizeof(attr));
	attr.map_id = id;
	int fd = (int)syscall(SYS_bpf, BPF_MAP_GET_FD_BY_ID, &attr, sizeof(attr));
	if (fd >= 0 && object_info(fd, info, sizeof(*info)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

bool pf_bpf_prog_is_portfence(const char *name)
{
	return strncmp(name, "pfb_", 4) == 0 || strncmp(name, "pfd_", 4) == 0;
}
