/* Which app a running process belongs to (procapp.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernel/pins.h"
#include "procapp.h"

struct pins_of_app {
	struct proc_apps *apps;
	int app;	/* its index in the policy */
	bool run;	/* under PF_PIN_RUN_ROOT */
};

static bool add_attached(void *opaque, const char *app_name, const char *cgroup_path)
{
	struct pins_of_app *pins = opaque;
	struct proc_apps *apps = pins->apps;
	struct attached_cgroup *grown = realloc(apps->cgroups, (apps->cgroup_count + 1) * sizeof(*grown));

	(void)app_name;
	if (!grown)
		return true;
	apps->cgroups = grown;
	const char *relative = cgroup_path + strspn(cgroup_path, "/");
	grown[apps->cgroup_count] = (struct attached_cgroup){pins->app, strdup(relative), pins->run};
	if (grown[apps->cgroup_count].path)
		apps->cgroup_count++;
	return false;
}

static void read_pins(struct proc_apps *apps, const char *root, bool run)
{
	for (size_t a = 0; a < apps->policy->app_count; a++) {
		struct pins_of_app pins = {apps, (int)a, run};
		pf_pins_each_of_app(root, apps->policy->apps[a].name, add_attached, &pins);
	}
}

void proc_apps_init(struct proc_apps *apps, const struct pf_policy *policy)
{
	memset(apps, 0, sizeof(*apps));
	apps->policy = policy;
	read_pins(apps, PF_PIN_ROOT, false);
	read_pins(apps, PF_PIN_RUN_ROOT, true);
}

void proc_apps_free(struct proc_apps *apps)
{
	for (size_t i = 0; i < apps->cgroup_count; i++)
		free(apps->cgroups[i].path);
	free(apps->cgroups);
	apps->cgroups = NULL;
	apps->cgroup_count = 0;
}

/* The whole file (at most len - 1 bytes), NUL-terminated; its length or -1. */
static ssize_t read_small(int proc_fd, pid_t pid, const char *what, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "%d/%s", pid, what);
	int fd = openat(proc_fd, path, O_RDONLY | O_CLOEXEC);
	size_t total = 0;

	if (fd < 0)
		return -1;
	while (total + 1 < len) {
		ssize_t n = read(fd, buf + total, len - 1 - total);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 && total == 0) {
				close(fd);
				return -1;
			}
			break;
		}
		total += (size_t)n;
	}
	close(fd);
	buf[total] = '\0';
	return (ssize_t)total;
}

void proc_unit_of(const char *cgroup, char *out, size_t len)
{
	static const char *const suffixes[] = {".service", ".scope", ".socket", ".mount", ".swap"};
	const char *end = cgroup + strlen(cgroup);

	out[0] = '\0';
	while (end > cgroup) {
		const char *start = end;
		while (start > cgroup && start[-1] != '/')
			start--;
		size_t n = (size_t)(end - start);
		for (size_t s = 0; s < sizeof(suffixes) / sizeof(*suffixes); s++) {
			size_t sl = strlen(suffixes[s]);
			if (n > sl && memcmp(start + n - sl, suffixes[s], sl) == 0) {
				snprintf(out, len, "%.*s", (int)n, start);
				return;
			}
		}
		end = start > cgroup ? start - 1 : cgroup;
	}
}

const char *proc_backend_name(enum proc_backend backend)
{
	static const char *const names[] = {"none", "shim", "bpf", "unknown"};
	return names[backend];
}

static bool under(const char *path, const char *attached)
{
	size_t n = strlen(attached);
	return strncmp(path, attached, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* PORTFENCE_APP from the environment block, when readable. */
static bool forced_app_of(int proc_fd, pid_t pid, char *out, size_t len)
{
	static char env[65536];
	ssize_t n = read_small(proc_fd, pid, "environ", env, sizeof(env));
	for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(env + i) + 1)
		if (strncmp(env + i, "PORTFENCE_APP=", 14) == 0 && env[i + 14]) {
			snprintf(out, len, "%s", env + i + 14);
			return true;
		}
	return false;
}

bool proc_apps_identify(struct proc_apps *apps, int proc_fd, pid_t pid, struct proc_info *info)
{
	static char maps[1 << 20];
	char buf[4096];

	memset(info, 0, sizeof(*info));
	info->pid = pid;
	info->app = -1;
	if (read_small(proc_fd, pid, "comm", info->comm, sizeof(info->comm)) < 0)
		return false;
	info->comm[strcspn(info->comm, "\n")] = '\0';
	if (read_small(proc_fd, pid, "cgroup", buf, sizeof(buf)) > 0) {
		char *line = strstr(buf, "0::");
		while (line && line != buf && line[-1] != '\n')
			line = strstr(line + 1, "0::");
		if (line) {
			line += 3;
			snprintf(info->cgroup, sizeof(info->cgroup), "%.*s", (int)strcspn(line, "\n"), line);
			proc_unit_of(info->cgroup, info->unit, sizeof(info->unit));
		}
	}
	const char *relative = info->cgroup;
	while (*relative == '/')
		relative++;
	for (size_t i = 0; info->cgroup[0] && i < apps->cgroup_count; i++)
		if (under(relative, apps->cgroups[i].path)) {
			info->app = apps->cgroups[i].app;
			info->backend = PROC_BPF;
			return true;
		}
	/* The shim: its library mapped.  Only the lines' ends are looked at. */
	ssize_t n = read_small(proc_fd, pid, "maps", maps, sizeof(maps));
	if (n < 0) {
		apps->unreadable_maps++;
		info->backend = PROC_UNKNOWN;
		return true;
	}
	if (!strstr(maps, "/libportfence.so"))
		return true;
	char forced[256], exe[4096], cmdline[4096], path[64];
	struct pf_process_identity who = {.comm = info->comm};
	if (forced_app_of(proc_fd, pid, forced, sizeof(forced)))
		who.forced_app = forced;
	snprintf(path, sizeof(path), "%d/exe", pid);
	ssize_t len = readlinkat(proc_fd, path, exe, sizeof(exe) - 1);
	if (len > 0) {
		exe[len] = '\0';
		who.exe_path = exe;
	}
	if (read_small(proc_fd, pid, "cmdline", cmdline, sizeof(cmdline)) > 0) {
		const char *slash = strrchr(cmdline, '/');
		who.program_name = slash ? slash + 1 : cmdline;
	}
	int app = pf_policy_select(apps->policy, &who);
	info->backend = PROC_SHIM;
	info->app = app >= 0 ? app : -1;
	return true;
}

bool proc_socket_inode(int fd_dir, const char *name, uint32_t *inode)
{
	char link[64];
	ssize_t n = readlinkat(fd_dir, name, link, sizeof(link) - 1);

	if (n < 9 || memcmp(link, "socket:[", 8) != 0)
		return false;
	link[n] = '\0';
	*inode = (uint32_t)strtoul(link + 8, NULL, 10);
	return true;
}

