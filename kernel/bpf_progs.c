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

int pf_bpf_prog_info(__u32 id, struct bpf_prog_info *info)
{
	union bpf_attr attr;

	memset(info, 0, sizeof(*info));
	memset(&attr, 0, sizeof(attr));
	attr.prog_id = id;
	int fd = (int)syscall(SYS_bpf, BPF_PROG_GET_FD_BY_ID, &attr, sizeof(attr));
	if (fd < 0)
		return -1;
	memset(&attr, 0, sizeof(attr));
	attr.info.bpf_fd = (__u32)fd;
	attr.info.info_len = sizeof(*info);
	attr.info.info = (__u64)(unsigned long)info;
	int rc = (int)syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr));
	close(fd);
	return rc < 0 ? -1 : 0;
}

bool pf_bpf_prog_is_portfence(const char *name)
{
	return strncmp(name, "pfb_", 4) == 0 || strncmp(name, "pfd_", 4) == 0;
}
