/* portfence run --bpf: a cgroup for the run, the app's programs attached
 * to it, COMMAND started inside it, its records written while any of its
 * processes runs, then the cgroup removed.  The links are pinned and a
 * keeper process writes the records and cleans up, so that the run's
 * confinement outlives its launcher. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"

#define DRAIN_INTERVAL_MS 50
/* An emptied cgroup that stays busy this many intervals is left. */
#define RMDIR_PATIENCE_TICKS 40

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

/* The app run chose as the shim would (-a, PORTFENCE_APP, the match or
 * the default; cmd_run).  None is chosen only where default = "pass" and
 * --user asks for the cgroup anyway: said, NULL. */
static const struct pf_app *choose_app(const struct pf_policy *policy, const char *path, const char *name,
				       const char *command)
{
	if (name)
		return bpf_cli_find_app(policy, path, name);
	fprintf(stderr, "portfence: no app of %s applies to %s; name one with -a APP\n", path, command);
	return NULL;
}

/* --user USER[:GROUP]: who COMMAND runs as once inside the cgroup. */
struct run_user {
	bool set;
	uid_t uid;
	gid_t gid;
	char name[256], home[PATH_MAX];	/* "" when USER was a number no account has */
};

/* USER and GROUP as names or numbers; GROUP defaults to USER's own. */
static int parse_user(const char *text, struct run_user *who)
{
	char user[256];
	const char *colon = strchr(text, ':');
	size_t len = colon ? (size_t)(colon - text) : strlen(text);
	char *end;

	if (len == 0 || len >= sizeof(user) || (colon && !colon[1])) {
		fprintf(stderr, "portfence: --user takes USER or USER:GROUP, not '%s'\n", text);
		return -1;
	}
	memcpy(user, text, len);
	user[len] = '\0';
	struct passwd *pw = getpwnam(user);
	unsigned long number = strtoul(user, &end, 10);
	if (!pw && *end == '\0')
		pw = getpwuid((uid_t)number);
	if (!pw && *end != '\0') {
		fprintf(stderr, "portfence: --user: no user '%s'\n", user);
		return -1;
	}
	who->uid = pw ? pw->pw_uid : (uid_t)number;
	who->gid = pw ? pw->pw_gid : (gid_t)number;
	if (pw) {
		snprintf(who->name, sizeof(who->name), "%s", pw->pw_name);
		snprintf(who->home, sizeof(who->home), "%s", pw->pw_dir);
	}
	if (colon) {
		struct group *gr = getgrnam(colon + 1);
		number = strtoul(colon + 1, &end, 10);
		if (!gr && *end != '\0') {
			fprintf(stderr, "portfence: --user: no group '%s'\n", colon + 1);
			return -1;
		}
		who->gid = gr ? gr->gr_gid : (gid_t)number;
	}
	who->set = true;
	return 0;
}

/* In the child, after it joined the cgroup: the groups go first, then
 * the group, then the user, so that none can be taken back; no new
 * privileges (a setuid program) either, so the cgroup cannot be left. */
static int become(const struct run_user *who)
{
	if (!who->set)
		return 0;
	if (setgroups(1, &who->gid) < 0 || setgid(who->gid) < 0 || setuid(who->uid) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return errno ? errno : EPERM;
	if (who->name[0]) {
		setenv("USER", who->name, 1);
		setenv("LOGNAME", who->name, 1);
		setenv("HOME", who->home, 1);
	}
	return 0;
}

/* What a run holds: its programs, its cgroup, its links (pinned under
 * the run's locked directory when bpffs allows) and its log. */
struct run {
	struct pf_bpf_app *loaded;
	struct pf_bpf_attachment *attachment;
	struct pf_record_sink *sink;
	const char *app_name;
	char full[PATH_MAX], relative[PATH_MAX];
	bool made_cgroup;
	struct run_user user;
	int claim;	/* the run's pin directory, locked; -1: links held by fds only */
};

static int make_run_cgroup(struct run *run, char *why, size_t why_len)
{
	char parent_full[PATH_MAX], parent_relative[PATH_MAX];
	int rc = pf_cgroup_resolve("portfence", parent_full, sizeof(parent_full), parent_relative,
				   sizeof(parent_relative));

	if (rc == 0 && mkdir(parent_full, 0755) < 0 && errno != EEXIST)
		rc = -errno;
	if (rc == 0 && mkdir(run->full, 0755) < 0)
		rc = -errno;
	if (rc < 0)
		snprintf(why, why_len, "cannot create the cgroup %.512s: %s", run->full, strerror(-rc));
	run->made_cgroup = rc == 0;
	/* Its records name it even when drained after its removal: the last
	 * drain follows the rmdir, and a program that sends and exits at
	 * once leaves its record to that drain (fresh-ci saw a deny record
	 * with cgroup "" so).  The daemon notes the cgroups it watches the
	 * same way. */
	struct stat info;
	if (rc == 0 && stat(run->full, &info) == 0)
		pf_bpf_note_cgroup((uint64_t)info.st_ino, run->relative);
	return rc;
}

/* The cgroup, the run's pin directory, the links.  Without the pins
 * (no bpffs) the run is confined while its keeper lives, and says so. */
static int prepare_run(struct run *run, char *why, size_t len)
{
	char name[PATH_MAX], warning[1024];

	snprintf(name, sizeof(name), "portfence/%s-%ld", run->app_name, (long)getpid());
	if (pf_cgroup_resolve(name, run->full, sizeof(run->full), run->relative, sizeof(run->relative)) < 0) {
		snprintf(why, len, "cannot create the cgroup %.512s: no cgroup v2 path for it", name);
		return -EINVAL;
	}
	run->claim = pf_bpf_run_claim(run->app_name, run->relative, warning, sizeof(warning));
	if (run->claim < 0)
		fprintf(stderr, "portfence: %s; the run is confined while its keeper process lives\n", warning);
	if (make_run_cgroup(run, why, len) < 0)
		return -1;
	return pf_bpf_attach_under(run->loaded, run->full, run->relative, run->claim >= 0 ? PF_BPF_RUN_ROOT : NULL,
				   &run->attachment, why, len);
}

static void remove_cgroup(const char *full)
{
	for (int i = 0; i < 100 && rmdir(full) < 0 && errno == EBUSY; i++)
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
}

/* Undoes what the run made (a run that never started a process). */
static void abandon_run(struct run *run)
{
	pf_bpf_detach(run->attachment);
	if (run->made_cgroup)
		remove_cgroup(run->full);
	if (run->claim >= 0)
		pf_bpf_run_release(run->claim, run->app_name, run->relative);
	pf_record_sink_close(run->sink);
	pf_bpf_app_free(run->loaded);
}

/* The keeper keeps only what portfence opened (close-on-exec): what the
 * launcher was given (a terminal, a caller's pipe, a socket) is the
 * run's, not the keeper's to hold open.  stderr stays: with
 * PORTFENCE_LOG=- the records go there, and so do the log's warnings. */
static void keeper_leave_caller(void)
{
	static const int ignored[] = {SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGPIPE};
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	DIR *fds = opendir("/proc/self/fd");
	struct dirent *entry;

	setsid();
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		signal(ignored[i], SIG_IGN);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
	while (fds && (entry = readdir(fds))) {
		int fd = atoi(entry->d_name);
		int flags = fd > STDERR_FILENO && fd != dirfd(fds) ? fcntl(fd, F_GETFD) : -1;
		if (flags >= 0 && !(flags & FD_CLOEXEC))
			close(fd);
	}
	if (fds)
		closedir(fds);
}

/* The keeper: writes the run's records until its cgroup is empty, then
 * removes the cgroup, detaches and unpins.  Once told that COMMAND has
 * joined (a byte on start, or the launcher gone: EOF), an empty cgroup
 * is the run's end; it is removed before the links go, so that no
 * process joins it unconfined. */
static int keep_run(struct run *run, int start)
{
	bool started = false;
	int busy = 0;

	for (;;) {
		struct pollfd told = {.fd = start, .events = POLLIN};
		if (!started && poll(&told, 1, DRAIN_INTERVAL_MS) > 0) {
			char byte;
			ssize_t ignored = read(start, &byte, 1);
			(void)ignored;
			started = true;
			close(start);
		} else if (started) {
			/* Woken early when the ring passes its mark (a burst). */
			pf_bpf_wait_records(&run->loaded, 1, DRAIN_INTERVAL_MS);
		}
		pf_bpf_app_drain(run->loaded, run->sink);
		if (!started || pf_cgroup_populated(run->full))
			busy = 0;
		else if (rmdir(run->full) == 0 || errno == ENOENT || ++busy > RMDIR_PATIENCE_TICKS)
			break;
	}
	pf_bpf_app_drain(run->loaded, run->sink);
	run->made_cgroup = false;
	abandon_run(run);
	return 0;
}

/* The child joins the cgroup, then becomes COMMAND.  An exec failure
 * goes back to the parent over the pipe. */
static void start_in_cgroup(const char *cgroup_full, const struct run_user *who, const char *command, char **argv,
			    int report_fd)
{
	char path[PATH_MAX + 32];
	int error = 0;

	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup_full);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1)
		error = errno ? errno : EIO;
	else if (!(error = become(who)))
		execv(command, argv), error = errno;
	ssize_t ignored = write(report_fd, &error, sizeof(error));
	(void)ignored;
	_exit(error == ENOENT ? 127 : 126);
}

static int wait_for(pid_t pid)
{
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* COMMAND, started once the keeper runs; its status, when the keeper
 * has finished too (the run's records written, its cgroup removed). */
static int start_command(struct run *run, pid_t keeper, int start, const char *command, char **argv)
{
	int report[2], status = 1;

	if (pipe2(report, O_CLOEXEC) < 0) {
		bpf_cli_refuse("cannot create a pipe");
	} else if ((child_pid = fork()) < 0) {
		child_pid = 0;
		bpf_cli_refuse("cannot fork");
	} else if (child_pid == 0) {
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		close(report[0]);
		start_in_cgroup(run->full, &run->user, command, argv, report[1]);
	} else {
		close(report[1]);
		int exec_error = 0;
		ssize_t got = read(report[0], &exec_error, sizeof(exec_error));
		close(report[0]);
		if (got == (ssize_t)sizeof(exec_error) && exec_error)
			fprintf(stderr, "portfence: %s: %s\n", command, strerror(exec_error));
	}
	ssize_t told = write(start, "", 1);
	(void)told;
	close(start);
	if (child_pid > 0) {
		status = wait_for(child_pid);
		child_pid = 0;
	}
	/* A keeper killed before its end leaves the run to the sweep. */
	if (wait_for(keeper) != 0)
		pf_bpf_sweep_leftovers();
	return status;
}

/* The run's links and records go to a keeper of their own, in a session
 * of its own and outside the run's cgroup: kill -9 of the launcher (or
 * of its process group) leaves the run confined and recorded. */
static int run_kept(struct run *run, const char *command, char **argv)
{
	int start[2];

	if (pipe2(start, O_CLOEXEC) < 0) {
		abandon_run(run);
		return bpf_cli_refuse("cannot create a pipe");
	}
	fflush(NULL);
	pid_t keeper = fork();
	if (keeper < 0) {
		close(start[0]);
		close(start[1]);
		abandon_run(run);
		return bpf_cli_refuse("cannot fork");
	}
	if (keeper == 0) {
		close(start[1]);
		keeper_leave_caller();
		_exit(keep_run(run, start[0]));
	}
	/* The launcher lets go of the run: the keeper holds its lock, and
	 * its objects are not ours to free (freeing would detach them). */
	close(start[0]);
	if (run->claim >= 0)
		close(run->claim);
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	signal(SIGTERM, forward_signal);
	signal(SIGHUP, forward_signal);
	int status = start_command(run, keeper, start[1], command, argv);
	/* The run's objects stay unfreed on purpose (the keeper's now): the
	 * launcher ends here, without exit()'s handlers, which in a
	 * sanitizer build would report them as leaks. */
	fflush(NULL);
	_exit(status);
}

int cmd_run_bpf(const char *config, const char *app_name, bool audit, const char *user, char **command_argv)
{
	char why[1024] = "", command[PATH_MAX];
	struct pf_policy policy;
	struct run run = {.claim = -1};

	if (pf_bpf_unavailable(why, sizeof(why)))
		return bpf_cli_refuse(why);
	/* Nothing starts for a user or group that does not exist: the
	 * wrapper itself failed (125, as env(1) says it). */
	if (user && parse_user(user, &run.user) < 0)
		return 125;
	if (!cli_resolve_command(command_argv[0], command, sizeof(command))) {
		fprintf(stderr, "portfence: %s: command not found\n", command_argv[0]);
		return 127;
	}
	const char *path = config ? config : cli_config_from_env();
	/* Records name the rule's file as the shim's do: absolute. */
	char absolute[PATH_MAX];
	if (realpath(path, absolute))
		path = absolute;
	if (cli_load_policy(path, &policy) < 0)
		return 1;
	const struct pf_app *chosen = choose_app(&policy, path, app_name, command);
	if (!chosen) {
		pf_policy_free(&policy);
		return 1;
	}
	struct pf_app app = *chosen;
	if (audit)
		app.mode = PF_MODE_AUDIT;
	run.app_name = app.name;
	pf_bpf_sweep_leftovers();
	int status;
	if (pf_bpf_app_load(&policy, &app, false, &run.loaded, why, sizeof(why)) < 0 ||
	    prepare_run(&run, why, sizeof(why)) < 0) {
		status = bpf_cli_refuse(why);
		abandon_run(&run);
	} else {
		const char *notify = getenv("PORTFENCE_NOTIFY");
		pf_bpf_app_notify(run.loaded, app.notify_stderr || (notify && strcmp(notify, "stderr") == 0));
		run.sink = pf_record_sink_open(bpf_cli_log_path(&policy), policy.log_syslog);
		status = run_kept(&run, command, command_argv);
	}
	pf_policy_free(&policy);
	return status;
}
