/* Which processes hold the sockets of the ranges: one pass over every
 * /proc/PID/fd, reading each link relative to its directory's fd
 * ("socket:[INODE]"), and a hash lookup of the inode.  A socket shared by
 * several processes (fork, SCM_RIGHTS) counts for each; a process holding
 * one socket under several fds counts it once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procapp.h"
#include "status.h"

/* Adds to counts[app] every socket of a range that pid holds. */
static bool count_sockets(struct status *status, int proc_fd, pid_t pid, unsigned long *counts)
{
	char path[32];
	snprintf(path, sizeof(path), "%d/fd", pid);
	int fd_dir = openat(proc_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd_dir < 0 ? NULL : fdopendir(fd_dir);
	struct dirent *entry;
	bool any = false;

	if (!dir) {
		if (fd_dir >= 0)
			close(fd_dir);
		return false;
	}
	while ((entry = readdir(dir))) {
		uint8_t key[24] = {0};
		uint32_t inode;
		if (entry->d_name[0] == '.' || !proc_socket_inode(fd_dir, entry->d_name, &inode))
			continue;
		memcpy(key, &inode, sizeof(inode));
		struct key_entry *found = key_table_get(&status->inodes, key);
		if (!found || found->last_pid == pid)
			continue;
		found->last_pid = pid;
		counts[found->app]++;
		any = true;
	}
	closedir(dir);
	return any;
}

static void read_comm(int proc_fd, pid_t pid, char *comm, size_t len)
{
	char path[32];
	snprintf(path, sizeof(path), "%d/comm", pid);
	int fd = openat(proc_fd, path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, comm, len - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		n = 0;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
}

/* Keeps the TOP_PROCESSES holding the most sockets, most first (ties:
 * the lower pid first, as /proc lists them). */
static void offer(struct app_status *app, pid_t pid, unsigned long ports, const char *comm)
{
	size_t at = app->top_count;
	while (at > 0 && app->top[at - 1].ports < ports)
		at--;
	if (at >= TOP_PROCESSES)
		return;
	size_t last = app->top_count < TOP_PROCESSES ? app->top_count : TOP_PROCESSES - 1;
	memmove(&app->top[at + 1], &app->top[at], (last - at) * sizeof(app->top[0]));
	app->top[at].pid = pid;
	app->top[at].ports = ports;
	snprintf(app->top[at].comm, sizeof(app->top[at].comm), "%s", comm);
	if (app->top_count < TOP_PROCESSES)
		app->top_count++;
}

int status_find_processes(struct status *status)
{
	int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *proc = proc_fd < 0 ? NULL : fdopendir(proc_fd);
	unsigned long *counts = calloc(status->app_count + 1, sizeof(*counts));
	struct dirent *entry;

	if (!proc || !counts) {
		if (proc_fd >= 0 && !proc)
			close(proc_fd);
		free(counts);
		return -1;
	}
	while ((entry = readdir(proc))) {
		char *end;
		long pid = strtol(entry->d_name, &end, 10);
		if (*end || pid <= 0 || !count_sockets(status, proc_fd, (pid_t)pid, counts))
			continue;
		char comm[64];
		read_comm(proc_fd, (pid_t)pid, comm, sizeof(comm));
		for (size_t a = 0; a < status->app_count; a++) {
			if (counts[a])
				offer(&status->apps[a], (pid_t)pid, counts[a], comm);
			counts[a] = 0;
		}
	}
	closedir(proc);
	free(counts);
	return 0;
}
