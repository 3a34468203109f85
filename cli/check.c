/* portfence check: validate a policy and show what each app will get. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include "cli.h"
#include "config/policy.h"
#include "kernel/cgroup.h"
#include "kernel/kernel_ports.h"

static const char *protocol_text(unsigned protocols)
{
	if (protocols == (PF_PROTO_TCP | PF_PROTO_UDP))
		return "tcp+udp";
	return protocols == PF_PROTO_TCP ? "tcp" : "udp";
}

/* Errors that depend on this host's kernel settings, not on the file. */
static int check_kernel_algorithm(const struct pf_app *app,
				  const struct pf_kernel_ports *ports)
{
	struct pf_range_fit fit;

	if (app->algorithm != PF_ALGO_KERNEL)
		return 0;
	pf_range_fit(ports, app->range_lo, app->range_hi, &fit);
	if (!fit.inside_ephemeral) {
		fprintf(stderr,
			"%s:%d: algorithm \"kernel\" cannot serve range %u-%u of app '%s': the kernel "
			"clamps a per-socket range to net.ipv4.ip_local_port_range (%u-%u)\n",
			app->file, app->algorithm_line, app->range_lo, app->range_hi, app->name,
			ports->ephemeral_lo, ports->ephemeral_hi);
		return 1;
	}
	if (fit.reserved) {
		fprintf(stderr,
			"%s:%d: algorithm \"kernel\" cannot serve range %u-%u of app '%s': %u of its "
			"ports %s in net.ipv4.ip_local_reserved_ports, which the kernel never chooses\n",
			app->file, app->algorithm_line, app->range_lo, app->range_hi, app->name,
			fit.reserved, fit.reserved == 1 ? "is" : "are");
		return 1;
	}
	return 0;
}

/* The kernel's reserved ports plus every range that should join them,
 * as one sysctl value: one line to run, adjacent ranges merged. */
static void print_isolation_fix(const struct pf_kernel_ports *ports, const uint8_t *wanted)
{
	uint8_t merged[65536 / 8];
	bool first = true;

	for (size_t i = 0; i < sizeof(merged); i++)
		merged[i] = ports->reserved[i] | wanted[i];
	fprintf(stderr, "isolate them with: sysctl -w net.ipv4.ip_local_reserved_ports=");
	for (uint32_t port = 1; port < 65536; port++) {
		if (!(merged[port / 8] & (1u << (port % 8))))
			continue;
		uint32_t end = port;
		while (end + 1 < 65536 && (merged[(end + 1) / 8] & (1u << ((end + 1) % 8))))
			end++;
		fprintf(stderr, first ? "" : ",");
		first = false;
		if (end == port)
			fprintf(stderr, "%u", port);
		else
			fprintf(stderr, "%u-%u", port, end);
		port = end;
	}
	fprintf(stderr, "\n");
}

/* Returns true when the range should be added to the reserved ports. */
static bool warn_isolation(const struct pf_app *app, const struct pf_kernel_ports *ports,
			   const struct pf_range_fit *fit)
{
	if (fit->overlap_unreserved == 0)
		return false;
	if (app->algorithm == PF_ALGO_KERNEL) {
		fprintf(stderr,
			"%s:%d: warning: range %u-%u of app '%s' lies in the kernel's ephemeral range, "
			"so other programs may be given its ports; algorithm \"kernel\" needs it there "
			"and unreserved, so it cannot be isolated (choose a user-space algorithm to "
			"isolate it)\n",
			app->file, app->range_line, app->range_lo, app->range_hi, app->name);
		return false;
	}
	fprintf(stderr,
		"%s:%d: warning: range %u-%u of app '%s' overlaps net.ipv4.ip_local_port_range "
		"(%u-%u) on %u port%s not in net.ipv4.ip_local_reserved_ports: the kernel may give "
		"%s to other programs\n",
		app->file, app->range_line, app->range_lo, app->range_hi, app->name,
		ports->ephemeral_lo, ports->ephemeral_hi, fit->overlap_unreserved,
		fit->overlap_unreserved == 1 ? "" : "s", fit->overlap_unreserved == 1 ? "it" : "them");
	return true;
}

static const char *isolation_text(const struct pf_range_fit *fit)
{
	if (fit->overlap_ephemeral == 0)
		return "isolated (outside the kernel's ephemeral range)";
	if (fit->overlap_unreserved == 0)
		return "isolated (reserved in ip_local_reserved_ports)";
	return "NOT isolated (shares the kernel's ephemeral range)";
}

/* Prints the app; returns true when its range needs reserving. */
static bool print_app(const struct pf_app *app, const struct pf_kernel_ports *ports, bool have_ports)
{
	struct pf_range_fit fit = {0};

	if (have_ports)
		pf_range_fit(ports, app->range_lo, app->range_hi, &fit);
	printf("app %s: ports %u-%u (%u), algorithm %s, binding %s, %s, mode %s, explicit_bind %s, "
	       "rules %zu allow%s / %zu deny\n",
	       app->name, app->range_lo, app->range_hi, app->range_hi - app->range_lo + 1u,
	       pf_algorithm_name(app->algorithm),
	       app->algorithm == PF_ALGO_KERNEL ? "kernel (IP_LOCAL_PORT_RANGE)" : "explicit bind",
	       protocol_text(app->protocols), app->mode == PF_MODE_AUDIT ? "audit" : "enforce",
	       app->deny_explicit_bind ? "deny" : "allow", app->allow.count,
	       app->has_allow ? "" : " (none: all allowed)", app->deny.count);
	if (app->bind_allow_count) {
		printf("  bind_allow:");
		for (size_t i = 0; i < app->bind_allow_count; i++)
			printf(app->bind_allow[i].lo == app->bind_allow[i].hi ? "%s %u" : "%s %u-%u", i ? "," : "",
			       app->bind_allow[i].lo, app->bind_allow[i].hi);
		printf(" (explicit_bind %s)\n", app->deny_explicit_bind ? "deny" : "allow: bind_allow changes nothing");
	}
	if (app->notify_stderr)
		printf("  notify: stderr\n");
	printf("  isolation: %s\n", have_ports ? isolation_text(&fit) : "unknown (cannot read sysctls)");
	return have_ports && warn_isolation(app, ports, &fit);
}

/* As the loader says its errors, straight to stderr. */
static void say_on_stderr(void *unused, const char *file, int line, const char *fmt, va_list args)
{
	(void)unused;
	fprintf(stderr, "%s:%d: ", file, line);
	vfprintf(stderr, fmt, args);
	fputc('\n', stderr);
}

/* Two apps' globs that meet once the mount is taken off one of them:
 * the daemon matches them so, and the loader, which reads no mount,
 * compared them as written. The count. */
static int check_cgroups_under_mount(const struct pf_policy *policy)
{
	char mount[4096];

	if (pf_cgroup2_mount(mount, sizeof(mount)) < 0)
		return 0;
	return (int)pf_policy_cgroup_overlaps(policy, mount, say_on_stderr, NULL);
}

static void print_summary(const char *path, const struct pf_policy *policy)
{
	printf("%s: valid, %zu app%s; default %s; on_error %s; log %s%s\n", path,
	       policy->app_count, policy->app_count == 1 ? "" : "s",
	       policy->default_app < 0 ? "pass" : policy->apps[policy->default_app].name,
	       policy->on_error_pass ? "pass" : "deny",
	       policy->log_file ? policy->log_file : "none",
	       policy->log_syslog ? " + syslog" : "");
}

int cmd_check(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{0},
	};
	const char *path = NULL;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:", options)) != -1) {
		if (opt != 'c')
			return usage_error("check: unknown option");
		path = optarg;
	}
	if (optind != argc)
		return usage_error("check takes no arguments besides -c POLICY");
	if (!path)
		path = cli_config_from_env();

	struct pf_policy policy;
	if (cli_load_policy(path, &policy) < 0)
		return 1;

	static struct pf_kernel_ports ports;
	bool have_ports = pf_kernel_ports_read(NULL, &ports) == 0;
	int errors = check_cgroups_under_mount(&policy);
	for (size_t i = 0; i < policy.app_count && have_ports; i++)
		errors += check_kernel_algorithm(&policy.apps[i], &ports);
	if (!errors) {
		static uint8_t wanted[65536 / 8];
		bool any = false;
		print_summary(path, &policy);
		for (size_t i = 0; i < policy.app_count; i++) {
			const struct pf_app *app = &policy.apps[i];
			if (!print_app(app, &ports, have_ports))
				continue;
			any = true;
			for (uint32_t port = app->range_lo; port <= app->range_hi; port++)
				wanted[port / 8] |= (uint8_t)(1u << (port % 8));
		}
		if (any)
			print_isolation_fix(&ports, wanted);
	}
	pf_policy_free(&policy);
	return errors ? 1 : 0;
}
