/* portfence run: exec a command with the shim preloaded. */
#include <elf.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"
#include "config/policy.h"

#ifndef PF_LIBDIR
#define PF_LIBDIR "/usr/local/lib/portfence"
#endif
#define SHIM_NAME "libportfence.so"

static bool is_file(const char *path)
{
	struct stat info;
	return stat(path, &info) == 0 && S_ISREG(info.st_mode);
}

/* Next to the tool (the build tree), then where `make install` puts it
 * relative to the tool, then the configured library directory. */
int cli_find_shim(char *out, size_t len)
{
	static const char *const relative[] = {"", "../lib/portfence/", "../lib/"};
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash)
			slash[1] = '\0';
		for (size_t i = 0; i < sizeof(relative) / sizeof(*relative); i++) {
			char candidate[PATH_MAX + 64];
			snprintf(candidate, sizeof(candidate), "%s%s%s", self, relative[i], SHIM_NAME);
			if (is_file(candidate) && realpath(candidate, out))
				return 0;
		}
	}
	snprintf(out, len, "%s/%s", PF_LIBDIR, SHIM_NAME);
	return is_file(out) ? 0 : -ENOENT;
}

bool cli_resolve_command(const char *name, char *out, size_t len)
{
	if (strchr(name, '/')) {
		snprintf(out, len, "%s", name);
		return access(out, X_OK) == 0 && is_file(out);
	}
	const char *path = getenv("PATH");
	char *copy = strdup(path && path[0] ? path : "/usr/local/bin:/usr/bin:/bin");
	bool found = false;
	for (char *dir = strtok(copy, ":"); dir && !found; dir = strtok(NULL, ":")) {
		snprintf(out, len, "%s/%s", dir[0] ? dir : ".", name);
		found = access(out, X_OK) == 0 && is_file(out);
	}
	free(copy);
	return found;
}

/* The ELF header of path, or false for a script, a 32-bit or an
 * unreadable file. */
static bool read_elf_header(int fd, Elf64_Ehdr *header)
{
	return read(fd, header, sizeof(*header)) == (ssize_t)sizeof(*header) &&
	       memcmp(header->e_ident, ELFMAG, SELFMAG) == 0 &&
	       header->e_ident[EI_CLASS] == ELFCLASS64;
}

/* An ELF executable without PT_INTERP is static: no dynamic loader will
 * ever read LD_PRELOAD for it. */
static bool is_static_elf(int fd, const Elf64_Ehdr *header)
{
	if (header->e_phentsize != sizeof(Elf64_Phdr))
		return false;
	for (unsigned i = 0; i < header->e_phnum; i++) {
		Elf64_Phdr ph;
		off_t at = (off_t)(header->e_phoff + (Elf64_Off)i * sizeof(ph));
		if (pread(fd, &ph, sizeof(ph), at) != (ssize_t)sizeof(ph))
			return false;
		if (ph.p_type == PT_INTERP)
			return false;
	}
	return true;
}

/* Go's linker names two sections of every Go program, cgo or not,
 * stripped or not: .go.buildinfo and .note.go.buildid. */
static bool is_go_elf(int fd, const Elf64_Ehdr *header)
{
	Elf64_Shdr names;
	char name[32];

	if (header->e_shentsize != sizeof(Elf64_Shdr) || header->e_shstrndx == SHN_UNDEF ||
	    header->e_shstrndx >= header->e_shnum ||
	    pread(fd, &names, sizeof(names),
		  (off_t)(header->e_shoff + (Elf64_Off)header->e_shstrndx * sizeof(names))) != (ssize_t)sizeof(names))
		return false;
	for (unsigned i = 0; i < header->e_shnum; i++) {
		Elf64_Shdr section;
		if (pread(fd, &section, sizeof(section),
			  (off_t)(header->e_shoff + (Elf64_Off)i * sizeof(section))) != (ssize_t)sizeof(section) ||
		    section.sh_name >= names.sh_size)
			continue;
		ssize_t n = pread(fd, name, sizeof(name) - 1, (off_t)(names.sh_offset + section.sh_name));
		if (n <= 0)
			continue;
		name[n] = '\0';
		if (strcmp(name, ".go.buildinfo") == 0 || strcmp(name, ".note.go.buildid") == 0)
			return true;
	}
	return false;
}

/* What an ELF file says that keeps the shim out: Go, or static. */
static const char *elf_reason(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr header;
	const char *reason = NULL;

	if (fd < 0)
		return NULL;
	if (read_elf_header(fd, &header)) {
		if (is_go_elf(fd, &header))
			reason = "is a Go program: Go makes its own system calls, which the shim cannot see; "
				 "portfence run --bpf confines it";
		else if (is_static_elf(fd, &header))
			reason = "is statically linked: there is no dynamic loader to preload the shim; "
				 "portfence run --bpf confines it";
	}
	close(fd);
	return reason;
}

/* The loader ignores LD_PRELOAD of a non-system path for a program that
 * gains privileges; say so instead of running it unconfined. */
const char *unreachable_reason(const char *path)
{
	struct stat info;

	if (stat(path, &info) == 0 && (info.st_mode & (S_ISUID | S_ISGID)))
		return "is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it; "
		       "portfence run --bpf confines it";
	if (getxattr(path, "security.capability", NULL, 0) > 0)
		return "has file capabilities (setcap): the dynamic loader ignores LD_PRELOAD for it; "
		       "portfence run --bpf confines it";
	return elf_reason(path);
}

static bool is_sanitizer_runtime(const char *entry, size_t len)
{
	static const char *const runtimes[] = {"libasan", "libtsan", "libubsan", "liblsan", "libclang_rt."};
	const char *slash = memrchr(entry, '/', len);
	const char *base = slash ? slash + 1 : entry;
	for (size_t i = 0; i < sizeof(runtimes) / sizeof(*runtimes); i++)
		if (strncmp(base, runtimes[i], strlen(runtimes[i])) == 0)
			return true;
	return false;
}

/* The shim goes first, so that it sees the program's calls before any
 * other preloaded library; only sanitizer runtimes, which must be the
 * very first object, stay ahead of it. */
static int set_preload(const char *shim)
{
	const char *existing = getenv("LD_PRELOAD");
	size_t room = strlen(shim) + (existing ? strlen(existing) : 0) + 2;
	char *runtimes = calloc(1, room), *others = calloc(1, room), *value = calloc(1, room + 1);

	if (!runtimes || !others || !value)
		return -1;
	if (existing && strstr(existing, shim))
		return 0;
	for (const char *p = existing; p && *p;) {
		size_t len = strcspn(p, ": ");
		if (len) {
			char *into = is_sanitizer_runtime(p, len) ? runtimes : others;
			if (into[0])
				strcat(into, ":");
			strncat(into, p, len);
		}
		p += len + (p[len] != '\0');
	}
	snprintf(value, room + 1, "%s%s%s%s%s", runtimes, runtimes[0] ? ":" : "", shim,
		 others[0] ? ":" : "", others);
	return setenv("LD_PRELOAD", value, 1);
}

static int export_config(const char *config)
{
	char absolute[PATH_MAX];

	/* The command may change directory; give it a path that still works. */
	if (realpath(config, absolute))
		config = absolute;
	return setenv("PORTFENCE_CONFIG", config, 1);
}

/* What the policy lets run do before anything starts. */
enum gate { GATE_CONFINE, GATE_UNCONFINED, GATE_REFUSE };

/* The identity the shim will see, as far as the launcher can know it:
 * the command's real path, its name as comm (15 bytes) and argv[0].
 * With match_line, the line of the glob that matched (0: none did). */
static int predict_app(const struct pf_policy *policy, const char *command, const char *arg0,
		       int *match_line)
{
	char real[PATH_MAX], comm[16];
	const char *base = strrchr(command, '/'), *name = strrchr(arg0, '/');

	snprintf(comm, sizeof(comm), "%s", base ? base + 1 : command);
	struct pf_process_identity who = {
		.forced_app = secure_getenv("PORTFENCE_APP"),
		.exe_path = realpath(command, real) ? real : command,
		.comm = comm,
		.program_name = name ? name + 1 : arg0,
	};
	int index = pf_policy_select(policy, &who);
	const char *subject;
	if (match_line)
		*match_line = 0;
	if (match_line && index >= 0)
		(void)pf_app_match_why(&policy->apps[index], &who, &subject, match_line);
	return index;
}

static void say_match(const struct pf_policy *policy, int index, const char *app, const char *command,
		      const char *arg0, const char *path)
{
	const char *forced = secure_getenv("PORTFENCE_APP");

	if (index < 0) {
		fprintf(stderr, "portfence: %s matches no app in %s, and default = \"pass\": it runs unconfined "
				"(name one with -a APP)\n", command, path);
		return;
	}
	const struct pf_app *chosen = &policy->apps[index];
	struct pf_policy without_default = *policy;
	without_default.default_app = PF_SELECT_PASS;
	int match_line = 0;
	const char *why = app ? "named by -a"
			  : forced && forced[0] ? "named by PORTFENCE_APP"
			  : predict_app(&without_default, command, arg0, &match_line) != index ? "the policy's default"
			  : "its match";
	int line = strcmp(why, "its match") == 0 && match_line ? match_line : chosen->line;
	fprintf(stderr, "portfence: %s runs as app '%s' (%s; %s:%d): range %u-%u, algorithm %s\n", command,
		chosen->name, why, chosen->file, line, chosen->range_lo, chosen->range_hi,
		pf_algorithm_name(chosen->algorithm));
}

/* run loads and checks the policy before it starts anything: with
 * on_error = "deny" an unusable policy, or an -a app it does not
 * define, stops here (125); with "pass" one line warns and COMMAND runs
 * unconfined. */
static enum gate run_gate(const char *config, const char *app, const char *command, const char *arg0,
			  bool verbose, char **chosen)
{
	const char *path = config ? config : cli_config_from_env();
	struct pf_policy policy;
	struct pf_diags diags = {0};
	enum pf_load_status status = pf_policy_load(path, &policy, &diags);
	enum gate gate = GATE_CONFINE;
	/* -a, else PORTFENCE_APP, which the shim would apply. */
	const char *named = app ? app : secure_getenv("PORTFENCE_APP");

	if (named && !named[0])
		named = NULL;
	if (status != PF_LOAD_OK) {
		if (status == PF_LOAD_INVALID && policy.on_error_pass) {
			fprintf(stderr, "portfence: policy unusable, %s runs unconfined (on_error = \"pass\"): %s%s\n",
				command, diags.count ? diags.lines[0] : path,
				diags.count > 1 ? " (and more: run portfence check)" : "");
			gate = GATE_UNCONFINED;
		} else {
			for (size_t i = 0; i < diags.count; i++)
				fprintf(stderr, "%s\n", diags.lines[i]);
			if (diags.count == 0)
				fprintf(stderr, "%s: cannot be used\n", path);
			fprintf(stderr, "portfence: policy unusable (on_error = \"deny\"): %s not started\n", command);
			gate = GATE_REFUSE;
		}
	} else if (named && pf_policy_find_app(&policy, named) < 0) {
		char tail[PATH_MAX + 64];
		snprintf(tail, sizeof(tail), "%s; %s %s", app ? "" : "; PORTFENCE_APP names it", command,
			 policy.on_error_pass ? "runs unconfined (on_error = \"pass\")" : "not started");
		cli_no_such_app(&policy, path, named, tail);
		gate = policy.on_error_pass ? GATE_UNCONFINED : GATE_REFUSE;
	} else {
		int index = app ? pf_policy_find_app(&policy, app) : predict_app(&policy, command, arg0, NULL);
		if (verbose)
			say_match(&policy, index, app, command, arg0, path);
		if (index >= 0)
			*chosen = strdup(policy.apps[index].name);
	}
	pf_diags_free(&diags);
	pf_policy_free(&policy);
	return gate;
}

/* Why COMMAND was not found, in one line: 127 when nothing by that
 * name exists, 126 when a path names something that cannot be executed
 * (a file without x, a directory), as env(1) and the shell tell them
 * apart. */
static int not_runnable(const char *name)
{
	struct stat info;

	if (strchr(name, '/') && stat(name, &info) == 0) {
		fprintf(stderr, "portfence: %s: %s\n", name, strerror(S_ISDIR(info.st_mode) ? EISDIR : EACCES));
		return 126;
	}
	fprintf(stderr, "portfence: %s: command not found\n", name);
	return 127;
}

/* Execs COMMAND (with the shim when the environment names it; without
 * on_error = "pass"): returns only when it could not, with the status. */
static int exec_command(const char *command, char **argv)
{
	execv(command, argv);
	int saved = errno;
	fprintf(stderr, "portfence: %s: %s\n", command, strerror(saved));
	return saved == ENOENT ? 127 : 126;
}

/* COMMAND with the shim preloaded and the run's settings in its
 * environment. */
static int exec_with_shim(const char *command, char **argv, const char *config, const char *app, bool audit)
{
	char shim[PATH_MAX];

	if (cli_find_shim(shim, sizeof(shim)) < 0) {
		fprintf(stderr, "portfence: cannot find %s next to the tool or in %s\n", SHIM_NAME, PF_LIBDIR);
		return 127;
	}
	if (set_preload(shim) < 0 || (config && export_config(config) < 0) ||
	    (app && setenv("PORTFENCE_APP", app, 1) < 0) ||
	    (audit && setenv("PORTFENCE_MODE", "audit", 1) < 0)) {
		fprintf(stderr, "portfence: cannot set the environment: %s\n", strerror(errno));
		return 126;
	}
	return exec_command(command, argv);
}

int cmd_run(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"app", required_argument, NULL, 'a'},
		{"audit", no_argument, NULL, 'A'},
		{"bpf", no_argument, NULL, 'B'},
		{"user", required_argument, NULL, 'U'},
		{"verbose", no_argument, NULL, 'v'},
		{0},
	};
	const char *config = NULL, *app = NULL, *user = NULL;
	bool audit = false, bpf = false, verbose = false;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:a:v", options)) != -1) {
		if (opt == 'v')
			verbose = true;
		else if (opt == 'c')
			config = optarg;
		else if (opt == 'a')
			app = optarg;
		else if (opt == 'A')
			audit = true;
		else if (opt == 'B')
			bpf = true;
		else if (opt == 'U')
			user = optarg;
		else
			return usage_error("run: unknown option");
	}
	if (optind >= argc)
		return usage_error("run needs a COMMAND");
	if (user && !bpf)
		return usage_error("run: --user goes with --bpf");

	char command[PATH_MAX];
	if (!cli_resolve_command(argv[optind], command, sizeof(command)))
		return not_runnable(argv[optind]);
	/* What keeps the shim out is said first: no policy would help. */
	const char *reason = bpf ? NULL : unreachable_reason(command);
	if (reason) {
		fprintf(stderr, "portfence: %s %s\n", command, reason);
		return 126;
	}
	/* The app the shim would apply, chosen once here for both backends
	 * (NULL: none does, default = "pass"; it lives until the exec). */
	char *chosen = NULL;
	enum gate gate = run_gate(config, app, command, argv[optind], verbose, &chosen);
	if (gate == GATE_REFUSE)
		return EXIT_WRAPPER_FAILED;
	if (gate == GATE_UNCONFINED || (bpf && !chosen && !user))
		return exec_command(command, argv + optind);
	/* -v: the notices of every app, for this run. */
	if (verbose && setenv("PORTFENCE_NOTIFY", "stderr", 1) < 0)
		return 126;
	if (bpf)
		return cmd_run_bpf(config, chosen, audit, user, argv + optind);
	return exec_with_shim(command, argv + optind, config, app, audit);
}
