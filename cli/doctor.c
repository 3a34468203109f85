/* portfence doctor: what this host has and lacks for each backend, one
 * line per fact, then whether each backend can be used here.  Exit 0
 * when both can, 1 otherwise.  It changes nothing on the host: bpffs is
 * tried in a mount namespace of a child, the BPF program it loads is
 * closed at once. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#if PF_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#endif

#include "bpf_cli.h"
#include "cli.h"

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif
#define BPFFS "/sys/fs/bpf"
#define VMLINUX_BTF "/sys/kernel/btf/vmlinux"

/* ok: has it; lacks: the backend cannot be used without it; note: a
 * convenience or an option, the backend works without it. */
enum level { OK, LACKS, NOTE };

struct backend {
	const char *name;
	bool usable;
};

static void fact(struct backend *backend, enum level level, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void fact(struct backend *backend, enum level level, const char *what, const char *fmt, ...)
{
	static const char *const words[] = {"ok", "lacks", "note"};
	char detail[1024];
	va_list args;

	va_start(args, fmt);
	vsnprintf(detail, sizeof(detail), fmt, args);
	va_end(args);
	if (level == LACKS)
		backend->usable = false;
	printf("%-4s %-5s %-20s %s\n", backend->name, words[level], what, detail);
}

#if PF_HAVE_BPF
static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	(void)level, (void)fmt, (void)args;
	return 0;
}
#endif

static bool kernel_at_least(const struct utsname *host, int major, int minor)
{
	int have_major = 0, have_minor = 0;
	if (sscanf(host->release, "%d.%d", &have_major, &have_minor) != 2)
		return false;
	return have_major > major || (have_major == major && have_minor >= minor);
}

/* The kernel's per-socket range (Linux >= 6.3), tried on a socket. */
static int local_port_range_error(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint32_t range = 61000u | (61099u << 16);
	int error = 0;

	if (fd < 0)
		return errno;
	if (setsockopt(fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &range, sizeof(range)) < 0)
		error = errno;
	close(fd);
	return error;
}

static const struct pf_app *kernel_algorithm_app(const struct pf_policy *policy)
{
	for (size_t i = 0; policy && i < policy->app_count; i++)
		if (policy->apps[i].algorithm == PF_ALGO_KERNEL)
			return &policy->apps[i];
	return NULL;
}

/* The policy, when one is named or the default exists: loaded into
 * policy (true), its first error reported otherwise. */
static bool check_policy(struct backend *shim, const char *config, bool named, struct pf_policy *policy)
{
	struct pf_diags diags = {0};
	struct stat info;

	if (!named && stat(config, &info) < 0) {
		fact(shim, NOTE, "policy", "none at %s (not checked; name one with -c POLICY)", config);
		return false;
	}
	enum pf_load_status status = pf_policy_load(config, policy, &diags);
	if (status == PF_LOAD_OK)
		fact(shim, OK, "policy", "%s: valid, %zu app%s", config, policy->app_count,
		     policy->app_count == 1 ? "" : "s");
	else
		fact(shim, LACKS, "policy", "%s", diags.count ? diags.lines[0] : "cannot be used");
	pf_diags_free(&diags);
	if (status != PF_LOAD_OK)
		pf_policy_free(policy);
	return status == PF_LOAD_OK;
}

static void check_shim(struct backend *shim, const struct pf_policy *policy)
{
	char path[PATH_MAX];

	if (cli_find_shim(path, sizeof(path)) == 0)
		fact(shim, OK, "shim library", "%s", path);
	else
		fact(shim, LACKS, "shim library", "no libportfence.so next to the tool or in %s", path);
	int error = local_port_range_error();
	const struct pf_app *kernel = kernel_algorithm_app(policy);
	if (!error)
		fact(shim, OK, "IP_LOCAL_PORT_RANGE", "available (algorithm \"kernel\")");
	else
		fact(shim, kernel ? LACKS : NOTE, "IP_LOCAL_PORT_RANGE",
		     "unavailable (%s; Linux >= 6.3): algorithm \"kernel\" cannot be used%s%s", strerror(error),
		     kernel ? ", and app " : "", kernel ? kernel->name : "");
}

/* bpffs at /sys/fs/bpf, or whether the BPF commands could mount it
 * there: tried in a child's own mount namespace, so the host keeps its
 * mounts. */
static void check_bpffs(struct backend *bpf)
{
	struct statfs fs;

	if (statfs(BPFFS, &fs) == 0 && fs.f_type == BPF_FS_MAGIC) {
		fact(bpf, OK, "bpffs", "mounted at %s", BPFFS);
		return;
	}
	int status = 0;
	pid_t child = fork();
	if (child == 0) {
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(errno & 0xff);
		if (mkdir(BPFFS, 0700) < 0 && errno != EEXIST)
			_exit(errno & 0xff);
		_exit(mount("bpf", BPFFS, "bpf", 0, "mode=0700") < 0 ? errno & 0xff : 0);
	}
	if (child < 0 || waitpid(child, &status, 0) < 0 || !WIFEXITED(status))
		fact(bpf, LACKS, "bpffs", "not mounted at %s, and it could not be tried", BPFFS);
	else if (WEXITSTATUS(status))
		fact(bpf, LACKS, "bpffs", "not mounted at %s, and cannot be mounted there: %s", BPFFS,
		     strerror(WEXITSTATUS(status)));
	else
		fact(bpf, OK, "bpffs", "not mounted at %s; mountable (the BPF commands mount it)", BPFFS);
}

#if PF_HAVE_BPF
/* The least the backend's programs are: a cgroup connect4 program. */
static void check_program_load(struct backend *bpf)
{
	const struct bpf_insn allow[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_CGROUP_INET4_CONNECT);
	int fd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "pf_doctor", "GPL", allow, 2, &opts);

	if (fd < 0) {
		fact(bpf, LACKS, "BPF program load", "refused: %s", strerror(-fd));
		return;
	}
	close(fd);
	fact(bpf, OK, "BPF program load", "allowed (a cgroup/connect4 program)");
}

/* The exec watch (tp_btf/sched_process_exec) finds its tracepoint in BTF. */
static void check_exec_names(struct backend *bpf)
{
	libbpf_set_print(quiet);
	int id = libbpf_find_vmlinux_btf_id("sched_process_exec", BPF_TRACE_RAW_TP);
	if (id >= 0)
		fact(bpf, OK, "exec names", "tracepoint sched_process_exec in BTF (tp_btf)");
	else
		fact(bpf, NOTE, "exec names", "no tracepoint sched_process_exec in BTF (%s): records name programs "
		     "from /proc/PID/exe or comm", strerror(-id));
}
#else
static void check_program_load(struct backend *bpf)
{
	fact(bpf, LACKS, "BPF backend", "this build has none (built with BPF=0)");
}

static void check_exec_names(struct backend *bpf)
{
	(void)bpf;
}
#endif

static void check_bpf(struct backend *bpf)
{
	struct utsname host;
	char mount_point[PATH_MAX];

	if (geteuid() == 0)
		fact(bpf, OK, "root", "yes");
	else
		fact(bpf, LACKS, "root", "not root (the BPF backend needs CAP_BPF and CAP_SYS_ADMIN)");
	uname(&host);
	/* 6.2 for bpf_rdonly_cast (bpf/cgroups.bpf.h); SPEC says 5.18. */
	fact(bpf, kernel_at_least(&host, 6, 2) ? OK : LACKS, "Linux >= 6.2", "%s", host.release);
	if (pf_cgroup2_mount(mount_point, sizeof(mount_point)) < 0)
		fact(bpf, LACKS, "cgroup v2", "no cgroup2 hierarchy is mounted");
	else if (access(mount_point, W_OK) < 0)
		fact(bpf, LACKS, "cgroup v2", "mounted at %s, not writable here: %s", mount_point, strerror(errno));
	else
		fact(bpf, OK, "cgroup v2", "mounted at %s", mount_point);
	if (access(VMLINUX_BTF, R_OK) == 0)
		fact(bpf, OK, "BTF", "%s", VMLINUX_BTF);
	else
		fact(bpf, LACKS, "BTF", "%s: %s (a kernel built with CONFIG_DEBUG_INFO_BTF)", VMLINUX_BTF,
		     strerror(errno));
	check_bpffs(bpf);
	check_program_load(bpf);
	check_exec_names(bpf);
	fact(bpf, NOTE, "tracefs, debugfs", "not needed");
}

int cmd_doctor(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'}, {0}};
	const char *config = NULL;
	struct pf_policy policy;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:", options)) != -1) {
		if (opt == 'c')
			config = optarg;
		else
			return usage_error("doctor: unknown option");
	}
	if (optind != argc)
		return usage_error("doctor takes no arguments");
	struct backend shim = {"shim", true}, bpf = {"bpf", true};
	bool loaded = check_policy(&shim, config ? config : cli_config_from_env(), config != NULL, &policy);
	check_shim(&shim, loaded ? &policy : NULL);
	check_bpf(&bpf);
	if (loaded)
		pf_policy_free(&policy);
	printf("shim: %s\nbpf: %s\n", shim.usable ? "usable" : "not usable here",
	       bpf.usable ? "usable" : "not usable here");
	return shim.usable && bpf.usable ? 0 : 1;
}
