/* portfence run --bpf: a cgroup for the run, the app's programs attached
 * to it, COMMAND started inside it, its records written while any of its
 * processes runs, then the cgroup removed. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"

#define DRAIN_INTERVAL_MS 50

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

/* The app named, else the one the policy selects for COMMAND. */
static const struct pf_app *choose_app(const struct pf_policy *policy, const char *name,
				       const char *command)
{
	if (name)
		return bpf_cli_find_app(policy, name);
	const char *base = strrchr(command, '/');
	struct pf_process_identity who = {.exe_path = command, .comm = base ? base + 1 : command,
					  .program_name = base ? base + 1 : command};
	int index = pf_policy_select(policy, &who);
	if (index < 0) {
		fprintf(stderr, "portfence: no app of the policy matches %s; name one with -a APP\n", command);
		return NULL;
	}
	return &policy->apps[index];
}

static int make_run_cgroup(const char *app_name, char *full, size_t full_len, char *relative,
			   size_t relative_len, char *why, size_t why_len)
{
	char parent_full[PATH_MAX], parent_relative[PATH_MAX];
	int rc = pf_cgroup_resolve("portfence", parent_full, sizeof(parent_full), parent_relative,
				   sizeof(parent_relative));

	if (rc == 0 && mkdir(parent_full, 0755) < 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0) {
		char name[PATH_MAX];
		snprintf(name, sizeof(name), "portfence/%s-%ld", app_name, (long)getpid());
		rc = pf_cgroup_resolve(name, full, full_len, relative, relative_len);
	}
	if (rc == 0 && mkdir(full, 0755) < 0)
		rc = -errno;
	if (rc < 0) {
		snprintf(why, why_len, "cannot create the cgroup %s: %s", full[0] ? full : "portfence/...",
			 strerror(-rc));
		full[0] = '\0';	/* not ours to remove */
	}
	return rc;
}

static bool cgroup_populated(const char *full)
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

static void remove_cgroup(const char *full)
{
	for (int i = 0; i < 100 && rmdir(full) < 0 && errno == EBUSY; i++)
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
}

/* The child joins the cgroup, then becomes COMMAND.  An exec failure
 * goes back to the parent over the pipe. */
static void start_in_cgroup(const char *cgroup_full, const char *command, char **argv, int report_fd)
{
	char path[PATH_MAX + 32];
	int error = 0;

	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup_full);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1)
		error = errno ? errno : EIO;
	else
		execv(command, argv), error = errno;
	ssize_t ignored = write(report_fd, &error, sizeof(error));
	(void)ignored;
	_exit(error == ENOENT ? 127 : 126);
}

static int wait_and_drain(pid_t child, const char *cgroup_full, struct pf_bpf_app *loaded,
			  struct pf_record_sink *sink)
{
	int status = 0;
	bool exited = false;

	while (!exited || cgroup_populated(cgroup_full)) {
		if (!exited && waitpid(child, &status, WNOHANG) == child)
			exited = true;
		pf_bpf_app_drain(loaded, sink);
		pf_bpf_wait_records(&loaded, 1, DRAIN_INTERVAL_MS);
	}
	pf_bpf_app_drain(loaded, sink);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int run_attached(struct pf_bpf_app *loaded, const char *cgroup_full, const char *command,
			char **argv, struct pf_record_sink *sink)
{
	int report[2];

	if (pipe2(report, O_CLOEXEC) < 0)
		return bpf_cli_refuse("cannot create a pipe");
	pid_t child = fork();
	if (child < 0)
		return bpf_cli_refuse("cannot fork");
	if (child == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		close(report[0]);
		start_in_cgroup(cgroup_full, command, argv, report[1]);
	}
	child_pid = child;
	close(report[1]);
	int exec_error = 0;
	ssize_t got = read(report[0], &exec_error, sizeof(exec_error));
	close(report[0]);
	if (got == (ssize_t)sizeof(exec_error) && exec_error)
		fprintf(stderr, "portfence: %s: %s\n", command, strerror(exec_error));
	return wait_and_drain(child, cgroup_full, loaded, sink);
}

int cmd_run_bpf(const char *config, const char *app_name, bool audit, char **command_argv)
{
	char why[1024] = "", command[PATH_MAX], full[PATH_MAX] = "", relative[PATH_MAX];
	struct pf_policy policy;
	struct pf_bpf_app *loaded = NULL;
	struct pf_bpf_attachment *attachment = NULL;

	if (pf_bpf_unavailable(why, sizeof(why)))
		return bpf_cli_refuse(why);
	if (!cli_resolve_command(command_argv[0], command, sizeof(command))) {
		fprintf(stderr, "portfence: %s: command not found\n", command_argv[0]);
		return 127;
	}
	if (cli_load_policy(config ? config : cli_config_from_env(), &policy) < 0)
		return 1;
	const struct pf_app *chosen = choose_app(&policy, app_name, command);
	if (!chosen) {
		pf_policy_free(&policy);
		return 1;
	}
	struct pf_app app = *chosen;
	if (audit)
		app.mode = PF_MODE_AUDIT;
	int status = 1;
	if (pf_bpf_app_load(&policy, &app, false, &loaded, why, sizeof(why)) < 0 ||
	    make_run_cgroup(app.name, full, sizeof(full), relative, sizeof(relative), why, sizeof(why)) < 0 ||
	    pf_bpf_attach(loaded, full, relative, false, &attachment, why, sizeof(why)) < 0) {
		bpf_cli_refuse(why);
	} else {
		struct pf_record_sink *sink = pf_record_sink_open(bpf_cli_log_path(&policy), policy.log_syslog);
		signal(SIGINT, SIG_IGN);
		signal(SIGQUIT, SIG_IGN);
		signal(SIGTERM, forward_signal);
		signal(SIGHUP, forward_signal);
		status = run_attached(loaded, full, command, command_argv, sink);
		pf_record_sink_close(sink);
	}
	pf_bpf_detach(attachment);
	if (full[0])
		remove_cgroup(full);
	pf_bpf_app_free(loaded);
	pf_policy_free(&policy);
	return status;
}
