/* Inside `portfence explain`: the program explained, as
 * cli/explain_subject.c gathers it for cli/explain.c. */
#ifndef PORTFENCE_CLI_EXPLAIN_H
#define PORTFENCE_CLI_EXPLAIN_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#define SHIM_NAME "libportfence.so"

/* What is known of the program explained. */
struct subject {
	pid_t pid;			/* --pid, else 0 */
	char exe[PATH_MAX];		/* "" with -a alone */
	char comm[32];
	const char *argv0;
	char argv0_buf[PATH_MAX];
	const char *forced;		/* PORTFENCE_APP */
	char forced_buf[256];
	bool environ_read;		/* --pid: /proc/PID/environ could be read */
	char environ_error[128];
	bool has_shim;			/* --pid: LD_PRELOAD holds the shim */
	char cgroup[PATH_MAX];		/* --pid: its cgroup v2 path, without the leading / */
};

/* COMMAND as `run` would start it: its executable and names.  0, or -1
 * with one line on stderr. */
int explain_subject_of_command(struct subject *s, const char *name);
/* A running process (--pid TEXT): its executable, comm, environment and
 * cgroup from /proc.  0; -1 with one line on stderr (no such process);
 * -2 after a usage error (TEXT is no pid). */
int explain_subject_of_pid(struct subject *s, const char *text);

#endif
