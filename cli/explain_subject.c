/* The program `portfence explain` explains: a COMMAND resolved as `run`
 * would start it, or a running process read from /proc (its exe, comm,
 * PORTFENCE_APP and LD_PRELOAD, and its cgroup). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "explain.h"

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* A script's /proc/self/exe is its interpreter's. */
static void exe_of_command(const char *command, char *out, size_t len)
{
	char line[PATH_MAX];
	FILE *f = fopen(command, "re");

	if (f && fgets(line, sizeof(line), f) && line[0] == '#' && line[1] == '!') {
		char *interp = line + 2 + strspn(line + 2, " \t");
		interp[strcspn(interp, " \t\n")] = '\0';
		if (interp[0] && realpath(interp, out)) {
			fclose(f);
			return;
		}
	}
	if (f)
		fclose(f);
	if (!realpath(command, out))
		snprintf(out, len, "%s", command);
}

int explain_subject_of_command(struct subject *s, const char *name)
{
	char command[PATH_MAX];

	if (!cli_resolve_command(name, command, sizeof(command))) {
		fprintf(stderr, "portfence: explain: %s: command not found\n", name);
		return -1;
	}
	exe_of_command(command, s->exe, sizeof(s->exe));
	/* The kernel names the process after the file it executed. */
	snprintf(s->comm, sizeof(s->comm), "%.15s", base_name(command));
	snprintf(s->argv0_buf, sizeof(s->argv0_buf), "%s", base_name(name));
	s->argv0 = s->argv0_buf;
	const char *forced = secure_getenv("PORTFENCE_APP");
	s->forced = forced && forced[0] ? forced : NULL;
	return 0;
}

static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t got = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[got] = '\0';
	return (ssize_t)got;
}

static void read_environ(struct subject *s)
{
	static char env[256 * 1024];
	ssize_t got = read_proc(s->pid, "environ", env, sizeof(env));

	if (got < 0) {
		snprintf(s->environ_error, sizeof(s->environ_error), "cannot read /proc/%d/environ: %s",
			 (int)s->pid, strerror((int)-got));
		return;
	}
	s->environ_read = true;
	for (char *var = env; var < env + got; var += strlen(var) + 1) {
		if (strncmp(var, "PORTFENCE_APP=", 14) == 0 && var[14]) {
			snprintf(s->forced_buf, sizeof(s->forced_buf), "%s", var + 14);
			s->forced = s->forced_buf;
		} else if (strncmp(var, "LD_PRELOAD=", 11) == 0 && strstr(var + 11, SHIM_NAME)) {
			s->has_shim = true;
		}
	}
}

int explain_subject_of_pid(struct subject *s, const char *text)
{
	char path[64], buf[PATH_MAX];
	char *end;
	long pid = strtol(text, &end, 10);

	if (*end || pid <= 0 || pid > INT32_MAX) {
		usage_error("explain: --pid takes a process id");
		return -2;
	}
	s->pid = (pid_t)pid;
	snprintf(path, sizeof(path), "/proc/%ld", pid);
	if (access(path, F_OK) < 0) {
		fprintf(stderr, "portfence: explain: no process %ld\n", pid);
		return -1;
	}
	snprintf(path, sizeof(path), "/proc/%ld/exe", pid);
	ssize_t n = readlink(path, s->exe, sizeof(s->exe) - 1);
	s->exe[n > 0 ? n : 0] = '\0';
	if (read_proc(s->pid, "comm", s->comm, sizeof(s->comm)) > 0)
		s->comm[strcspn(s->comm, "\n")] = '\0';
	if (read_proc(s->pid, "cmdline", buf, sizeof(buf)) > 0) {
		snprintf(s->argv0_buf, sizeof(s->argv0_buf), "%s", base_name(buf));
		s->argv0 = s->argv0_buf;
	}
	if (read_proc(s->pid, "cgroup", buf, sizeof(buf)) > 0) {
		for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
			if (strncmp(line, "0::", 3) == 0)
				snprintf(s->cgroup, sizeof(s->cgroup), "%s", line + 3 + (line[3] == '/'));
	}
	read_environ(s);
	return 0;
}
