/* Where cgroups are: the cgroup v2 mount and paths under it, for the BPF
 * backend, the tool and the benchmark. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kernel/cgroup.h"

int pf_cgroup2_mount(char *buf, size_t len)
{
	FILE *mounts = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!mounts)
		return -errno;
	while (rc != 0 && fgets(line, sizeof(line), mounts)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE ... */
		char mount_point[PATH_MAX], *dash = strstr(line, " - ");
		if (!dash || strncmp(dash + 3, "cgroup2 ", 8) != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mount_point) == 1 &&
		    (size_t)snprintf(buf, len, "%s", mount_point) < len)
			rc = 0;
	}
	fclose(mounts);
	return rc;
}

int pf_cgroup_resolve(const char *cgroup, char *full, size_t full_len, char *relative,
		      size_t relative_len)
{
	char mount_point[PATH_MAX];
	int rc = pf_cgroup2_mount(mount_point, sizeof(mount_point));
	size_t mount_len = strlen(mount_point);

	if (rc < 0)
		return rc;
	const char *rest = cgroup;
	if (strncmp(cgroup, mount_point, mount_len) == 0 && (cgroup[mount_len] == '/' || !cgroup[mount_len]))
		rest = cgroup + mount_len;
	while (*rest == '/')
		rest++;
	if (strstr(rest, "..") || (size_t)snprintf(relative, relative_len, "%s", rest) >= relative_len)
		return -EINVAL;
	size_t rel_len = strlen(relative);
	while (rel_len && relative[rel_len - 1] == '/')
		relative[--rel_len] = '\0';
	if ((size_t)snprintf(full, full_len, "%s%s%s", mount_point, rel_len ? "/" : "", relative) >= full_len)
		return -ENAMETOOLONG;
	return 0;
}

bool pf_cgroup_populated(const char *full)
{
	char path[PATH_MAX + 32], text[256];
	snprintf(path, sizeof(path), "%s/cgroup.events", full);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	return strstr(text, "populated 1") != NULL;
}
