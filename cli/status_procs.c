/* Which processes hold the sockets the dump found: one pass over every
 * /proc/PID/fd, reading each link relative to its directory's fd
 * ("socket:[INODE]"), and a hash lookup of the inode; a process holding
 * any is identified (procapp.h: its attached cgroup, or the shim's
 * selection).  A socket shared by several processes (fork, SCM_RIGHTS)
 * counts once for the app and for each process's figure; a process
 * holding one socket under several fds counts it once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procapp.h"
#include "status.h"

/* The sockets (indices into status->sockets) pid holds, each once. */
struct held_list {
	size_t *items;
	size_t count, cap;
};

static bool list_sockets(struct status *status, int proc_fd, pid_t pid, struct held_list *held)
{
	char path[32];
	snprintf(path, sizeof(path), "%d/fd", pid);
	int fd_dir = openat(proc_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd_dir < 0 ? NULL : fdopendir(fd_dir);
	struct dirent *entry;

	held->count = 0;
	if (!dir) {
		if (fd_dir < 0 && (errno == EACCES || errno == EPERM))
			status->unreadable++;
		if (fd_dir >= 0)
			close(fd_dir);
		return false;
	}
	while ((entry = readdir(dir))) {
		uint32_t inode;
		if (entry->d_name[0] == '.' || !proc_socket_inode(fd_dir, entry->d_name, &inode))
			continue;
		long socket = inode_index_get(&status->inodes, inode);
		if (socket < 0 || status->last_pid[socket] == pid)
			continue;
		status->last_pid[socket] = pid;
		if (held->count == held->cap) {
			size_t cap = held->cap ? held->cap * 2 : 64;
			size_t *grown = realloc(held->items, cap * sizeof(*grown));
			if (!grown)
				break;
			held->items = grown;
			held->cap = cap;
		}
		held->items[held->count++] = (size_t)socket;
	}
	closedir(dir);
	return held->count > 0;
}

/* The process's cgroup v2 path, from the "0::" line of /proc/PID/cgroup. */

/* Keeps the TOP_PROCESSES holding the most sockets, most first (ties:
 * the lower pid first, as /proc lists them). */
static void offer_to(struct top_process *top, size_t *top_count, pid_t pid, unsigned long ports,
		     const char *comm, const char *cgroup)
{
	size_t at = *top_count;
	while (at > 0 && top[at - 1].ports < ports)
		at--;
	if (at >= TOP_PROCESSES)
		return;
	size_t last = *top_count < TOP_PROCESSES ? *top_count : TOP_PROCESSES - 1;
	memmove(&top[at + 1], &top[at], (last - at) * sizeof(top[0]));
	top[at].pid = pid;
	top[at].ports = ports;
	snprintf(top[at].comm, sizeof(top[at].comm), "%s", comm);
	snprintf(top[at].cgroup, sizeof(top[at].cgroup), "%s", cgroup);
	if (*top_count < TOP_PROCESSES)
		(*top_count)++;
}

/* Each socket pid holds: its app's when the app is pid's (any port for
 * an audit-mode app), an intruder in the range's app when pid is known
 * to be another's or none's, the range's app's when pid's app is not
 * known (its maps unreadable). */
static void judge_sockets(struct status *status, const struct proc_info *process, const struct held_list *held,
			  unsigned long *own, unsigned long *intruding)
{
	const struct pf_policy *policy = status->policy;
	const struct proc_info info = *process;
	pid_t pid = info.pid;
	int mine = info.app >= 0 ? status->status_of_policy_app[info.app] : -1;
	bool audit = info.app >= 0 && policy->apps[info.app].mode == PF_MODE_AUDIT;
	for (size_t i = 0; i < held->count; i++) {
		size_t s = held->items[i];
		const struct pf_socket_entry *entry = &status->sockets[s];
		int range_policy_app = pf_policy_app_at_port(policy, entry->local_port);
		int range_app = range_policy_app < 0 ? -1 : status->status_of_policy_app[range_policy_app];
		bool server_side = status->listening[entry->local_port / 8] & (1u << (entry->local_port % 8));
		if (info.app >= 0 && (range_policy_app == info.app || (audit && !server_side))) {
			if (mine < 0)
				continue;
			if (!status->claimed[s])
				status_count_socket(status, mine, entry);
			status->claimed[s] = true;
			own[mine]++;
		} else if (range_app >= 0 && info.backend != PROC_UNKNOWN) {
			if (!status->claimed[s])
				status->apps[range_app].intruder_sockets++;
			status->port_state[entry->local_port] = PORT_INTRUDER;
			status->claimed[s] = true;
			intruding[range_app]++;
		} else if (range_app >= 0) {
			if (!status->claimed[s])
				status_count_socket(status, range_app, entry);
			status->claimed[s] = true;
			own[range_app]++;
		}
	}
	for (size_t a = 0; a < status->app_count; a++) {
		struct app_status *app = &status->apps[a];
		if (own[a])
			offer_to(app->top, &app->top_count, pid, own[a], info.comm, info.cgroup);
		if (intruding[a])
			offer_to(app->intruders, &app->intruder_count, pid, intruding[a], info.comm, info.cgroup);
		own[a] = intruding[a] = 0;
	}
}

/* --watch: what a full pass found, kept for the refreshes between two:
 * each process's identity and the inodes it held. */
struct proc_cache_entry {
	struct proc_info info;
	uint32_t *inodes;
	size_t count;
};

void status_cache_free(struct proc_cache *cache)
{
	for (size_t i = 0; i < cache->count; i++)
		free(cache->entries[i].inodes);
	free(cache->entries);
	memset(cache, 0, sizeof(*cache));
}

static void cache_add(struct proc_cache *cache, const struct status *status, const struct proc_info *info,
		      const struct held_list *held)
{
	if (cache->count == cache->cap) {
		size_t cap = cache->cap ? cache->cap * 2 : 64;
		struct proc_cache_entry *grown = realloc(cache->entries, cap * sizeof(*grown));
		if (!grown)
			return;
		cache->entries = grown;
		cache->cap = cap;
	}
	struct proc_cache_entry *entry = &cache->entries[cache->count];
	entry->info = *info;
	entry->count = held->count;
	if (!(entry->inodes = malloc((held->count + 1) * sizeof(uint32_t))))
		return;
	for (size_t i = 0; i < held->count; i++)
		entry->inodes[i] = status->sockets[held->items[i]].inode;
	cache->count++;
}

/* A refresh from the cache: each cached process's sockets that still
 * exist; sockets new since the last pass count for their range's app. */
static void replay(struct status *status, struct held_list *held, unsigned long *own, unsigned long *intruding)
{
	const struct proc_cache *cache = status->cache;
	for (size_t i = 0; i < cache->count; i++) {
		const struct proc_cache_entry *entry = &cache->entries[i];
		held->count = 0;
		for (size_t k = 0; k < entry->count; k++) {
			long socket = inode_index_get(&status->inodes, entry->inodes[k]);
			if (socket < 0 || held->count == held->cap)
				continue;
			held->items[held->count++] = (size_t)socket;
		}
		if (held->count)
			judge_sockets(status, &entry->info, held, own, intruding);
	}
}

int status_find_processes(struct status *status)
{
	int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *proc = proc_fd < 0 ? NULL : fdopendir(proc_fd);
	unsigned long *own = calloc(status->app_count + 1, sizeof(*own));
	unsigned long *intruding = calloc(status->app_count + 1, sizeof(*intruding));
	struct held_list held = {0};
	struct proc_apps apps;
	struct dirent *entry;

	if (!proc || !own || !intruding) {
		if (proc_fd >= 0 && !proc)
			close(proc_fd);
		if (proc)
			closedir(proc);
		free(own);
		free(intruding);
		return -1;
	}
	if (status->cache && status->use_cache) {
		size_t most = 0;
		for (size_t i = 0; i < status->cache->count; i++)
			most = status->cache->entries[i].count > most ? status->cache->entries[i].count : most;
		held.items = malloc((most + 1) * sizeof(*held.items));
		held.cap = held.items ? most : 0;
		replay(status, &held, own, intruding);
		status->unreadable = status->cache->unreadable;
		status->cache->unknown = 0;
		for (size_t s = 0; s < status->socket_count; s++)
			status->cache->unknown += !status->claimed[s];
		goto out;
	}
	if (status->cache)
		status_cache_free(status->cache);
	proc_apps_init(&apps, status->policy);
	while ((entry = readdir(proc))) {
		char *end;
		long pid = strtol(entry->d_name, &end, 10);
		struct proc_info info;
		if (*end || pid <= 0 || !list_sockets(status, proc_fd, (pid_t)pid, &held) ||
		    !proc_apps_identify(&apps, proc_fd, (pid_t)pid, &info))
			continue;
		judge_sockets(status, &info, &held, own, intruding);
		if (status->cache)
			cache_add(status->cache, status, &info, &held);
	}
	status->unreadable += apps.unreadable_maps;
	if (status->cache)
		status->cache->unreadable = status->unreadable;
	proc_apps_free(&apps);
out:
	closedir(proc);
	free(held.items);
	free(own);
	free(intruding);
	return 0;
}
