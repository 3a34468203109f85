/* portfence attach / detach: an existing cgroup confined by an app's
 * programs, pinned so that the confinement outlives the command. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"
#include "kernel/pins.h"

/* Whether one of the cgroups a and b (relative, no leading '/') is the
 * other or below it: the programs of either judge the other's sockets. */
static bool nested(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), shorter = la < lb ? la : lb;

	if (strncmp(a, b, shorter) != 0)
		return false;
	return la == lb || shorter == 0 || (la < lb ? b[la] : a[lb]) == '/';
}

struct another_app {
	const char *mine;	/* the app being attached, whose own pins do not count */
	const char *relative;	/* its cgroup, no leading '/' */
	char *other, *where;
	size_t other_len, where_len;
	bool found;
};

static bool note_another_app(void *opaque, const char *app_name, const char *cgroup_path)
{
	struct another_app *search = opaque;
	const char *path = cgroup_path + strspn(cgroup_path, "/");

	if (strcmp(app_name, search->mine) == 0 || !nested(path, search->relative))
		return false;
	snprintf(search->other, search->other_len, "%s", app_name);
	snprintf(search->where, search->where_len, "%s", path[0] ? path : "/");
	search->found = true;
	return true;
}

/* Another app attached at the cgroup, above it or below it (pins of
 * attach, daemon and run --bpf alike): its name and cgroup into other
 * and where; false when there is none. */
static bool confined_by_another(const char *app_name, const char *relative, char *other, size_t other_len,
				char *where, size_t where_len)
{
	struct another_app search = {app_name, relative + strspn(relative, "/"), other, where, other_len, where_len,
				     false};

	pf_pins_each(PF_PIN_ROOT, note_another_app, &search);
	if (!search.found)
		pf_pins_each(PF_PIN_RUN_ROOT, note_another_app, &search);
	return search.found;
}

int cmd_attach(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"app", required_argument, NULL, 'a'}, {0}};
	const char *config = NULL, *app_name = NULL;
	char why[1024], full[PATH_MAX], relative[PATH_MAX];
	struct stat info;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:a:", options)) != -1) {
		if (opt == 'c')
			config = optarg;
		else if (opt == 'a')
			app_name = optarg;
		else
			return usage_error("attach: unknown option");
	}
	if (!app_name || optind + 1 != argc)
		return usage_error("attach needs -a APP and one CGROUP");
	if (pf_bpf_unavailable(why, sizeof(why)))
		return bpf_cli_refuse(why);
	pf_bpf_sweep_leftovers();
	if (pf_cgroup_resolve(argv[optind], full, sizeof(full), relative, sizeof(relative)) < 0 ||
	    stat(full, &info) < 0 || !S_ISDIR(info.st_mode)) {
		snprintf(why, sizeof(why), "no cgroup %s in the cgroup v2 hierarchy", argv[optind]);
		return bpf_cli_refuse(why);
	}
	const char *path = config ? config : cli_config_from_env();
	struct pf_policy policy;
	if (cli_load_policy(path, &policy) < 0)
		return 1;
	const struct pf_app *app = bpf_cli_find_app(&policy, path, app_name);
	char other[PATH_MAX], where[PATH_MAX];
	if (app && confined_by_another(app_name, relative, other, sizeof(other), where, sizeof(where))) {
		char line[PATH_MAX * 4];
		snprintf(line, sizeof(line), "attach: app '%s' is attached to %s; a cgroup takes one app, "
					     "and %s is that cgroup or in its line",
			 other, where, relative[0] ? relative : "/");
		pf_policy_free(&policy);
		return bpf_cli_refuse(line);
	}
	int status = app ? bpf_cli_attach_pinned(&policy, app, full, relative) : 1;
	pf_policy_free(&policy);
	if (status == 0)
		printf("portfence: %s attached to %s\n", app_name, relative[0] ? relative : "/");
	return status;
}

/* Attaches app to a cgroup, pinned, replacing an attachment of the same
 * app there; 0, or 1 after the one-line reason. */
int bpf_cli_attach_pinned(const struct pf_policy *policy, const struct pf_app *app, const char *full,
			  const char *relative)
{
	char why[1024];
	struct pf_bpf_app *loaded = NULL;
	struct pf_bpf_attachment *attachment = NULL;

	if (pf_bpf_app_load(policy, app, true, &loaded, why, sizeof(why)) < 0 ||
	    pf_bpf_attach(loaded, full, relative, true, &attachment, why, sizeof(why)) < 0) {
		pf_bpf_app_free(loaded);
		pf_bpf_forget_app_if_unused(app->name);
		return bpf_cli_refuse(why);
	}
	pf_bpf_attachment_release(attachment);
	pf_bpf_app_free(loaded);
	return 0;
}

int cmd_detach(int argc, char **argv)
{
	static const struct option options[] = {{"app", required_argument, NULL, 'a'}, {0}};
	const char *app_name = NULL;
	char why[1024], full[PATH_MAX], relative[PATH_MAX];
	int opt;

	while ((opt = cli_getopt(argc, argv, "+a:", options)) != -1) {
		if (opt == 'a')
			app_name = optarg;
		else
			return usage_error("detach: unknown option");
	}
	if (optind + 1 != argc)
		return usage_error("detach needs one CGROUP");
	if (geteuid() != 0)
		return bpf_cli_refuse("the BPF backend needs root (CAP_BPF and CAP_SYS_ADMIN)");
	pf_bpf_sweep_leftovers();
	if (pf_cgroup_resolve(argv[optind], full, sizeof(full), relative, sizeof(relative)) < 0) {
		snprintf(why, sizeof(why), "no cgroup %s in the cgroup v2 hierarchy", argv[optind]);
		return bpf_cli_refuse(why);
	}
	bool records_kept = false;
	int detached = pf_bpf_detach_pinned(app_name, relative, &records_kept);
	if (detached < 0) {
		snprintf(why, sizeof(why), "cannot read %s: %s", PF_BPF_PIN_ROOT, strerror(-detached));
		return bpf_cli_refuse(why);
	}
	if (detached == 0) {
		/* The pins outlive a removed cgroup, so a missing one is only
		 * said, not refused first. */
		const char *missing = access(full, F_OK) == 0 ? "" : " (no such cgroup)";
		if (app_name)
			snprintf(why, sizeof(why), "app %s is not attached to %s%s", app_name, argv[optind], missing);
		else
			snprintf(why, sizeof(why), "no app is attached to %s%s", argv[optind], missing);
		return bpf_cli_refuse(why);
	}
	printf("portfence: detached %s from %s%s\n", app_name ? app_name : "every app", relative[0] ? relative : "/",
	       records_kept ? "; its records not written yet stay pinned until `portfence daemon` writes them" : "");
	return 0;
}
