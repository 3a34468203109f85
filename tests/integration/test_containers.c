/* Containers confined at birth (issue 22): real runc containers, each in
 * the new cgroup runc makes for it (`/pfctr-...` on this hybrid layout),
 * are confined by `portfence daemon` through the policy's `cgroups`
 * globs, from their first connect, with no action of the daemon's
 * operator.  The rootfs is busybox-static plus the static client, built
 * by the test; the containers share the test's network namespace, where
 * the test's server sees their source ports. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tests/helpers/birth.h"

#define RUNC "/usr/sbin/runc"

static struct {
	char cgroups[4][PATH_MAX];	/* made by the test, removed deepest first */
	int cgroup_count;
	struct sandbox sb;
	bool sandboxed;
	char bundles[PATH_MAX], rootfs[PATH_MAX];
	pid_t daemon;
	struct server srv;
	bool serving;
} fx;

static void stop_daemon(void)
{
	if (fx.daemon <= 0)
		return;
	kill(fx.daemon, SIGTERM);
	for (int i = 0; i < 100 && waitpid(fx.daemon, NULL, WNOHANG) == 0; i++)
		usleep(100000);
	kill(fx.daemon, SIGKILL);
	waitpid(fx.daemon, NULL, 0);
	fx.daemon = 0;
}

static void teardown(void)
{
	stop_daemon();
	while (fx.cgroup_count > 0)
		rmdir(fx.cgroups[--fx.cgroup_count]);
	if (fx.serving)
		server_stop(&fx.srv);
	if (fx.sandboxed)
		sandbox_cleanup(&fx.sb);
	memset(&fx, 0, sizeof(fx));
}

TestSuite(containers, .fini = teardown, .timeout = 300);

/* The machine facts the backend needs, and runc (`make deps` installs
 * it, with busybox-static). */
static void require_containers(void)
{
	skip_unless_bpf_machine();
	cr_assert_eq(access(RUNC, X_OK), 0, "%s is missing: `make deps` installs runc", RUNC);
	cr_assert_eq(access("/bin/busybox", X_OK), 0, "/bin/busybox is missing: `make deps` installs busybox-static");
}

static void copy_file(const char *from, const char *to)
{
	char cmd[PATH_MAX * 2 + 32];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0755 '%s'", from, to, to);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* The sandbox (policy apps_text), a busybox-static rootfs with the static
 * client in it, and the test's server. */
static void setup(const char *apps_text)
{
	sandbox_init(&fx.sb, apps_text);
	fx.sandboxed = true;
	snprintf(fx.rootfs, sizeof(fx.rootfs), "%s/rootfs", fx.sb.dir);
	snprintf(fx.bundles, sizeof(fx.bundles), "%s/bundles", fx.sb.dir);
	static const char *const dirs[] = {"", "/bin", "/proc", "/dev", "/sys", "/tmp"};
	char path[PATH_MAX + 16];
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", fx.rootfs, dirs[i]);
		cr_assert_eq(mkdir(path, 0755), 0, "mkdir %s: %s", path, strerror(errno));
	}
	cr_assert_eq(mkdir(fx.bundles, 0755), 0);
	snprintf(path, sizeof(path), "%s/bin/busybox", fx.rootfs);
	copy_file("/bin/busybox", path);
	snprintf(path, sizeof(path), "%s/bin/sh", fx.rootfs);
	cr_assert_eq(symlink("busybox", path), 0);
	snprintf(path, sizeof(path), "%s/bin/client", fx.rootfs);
	copy_file(build_path("bpf-static-client"), path);
	server_start(&fx.srv, "127.0.0.1", SERVE_GREET);
	fx.serving = true;
}

/* A bundle for container id (its cgroup: /id), whose process connects to
 * the test's server at once: runc's own spec, the network namespace
 * left out (the test's is shared), the rootfs read-only. */
static void make_bundle(const char *id, char *bundle, size_t len)
{
	char config[PATH_MAX + 16], port[16];
	cr_assert_lt((size_t)snprintf(bundle, len, "%.200s/%.60s", fx.bundles, id), len);
	cr_assert_eq(mkdir(bundle, 0755), 0, "mkdir %s: %s", bundle, strerror(errno));
	char *spec[] = {RUNC, "spec", "--bundle", bundle, NULL};
	struct run_result r;
	run_program(&r, spec, NULL, NULL);
	cr_assert_eq(r.status, 0, "runc spec: %s", r.err);
	snprintf(config, sizeof(config), "%s/config.json", bundle);
	json_error_t error;
	json_t *root = json_load_file(config, 0, &error);
	cr_assert_not_null(root, "%s: %s", config, error.text);
	json_t *process = json_object_get(root, "process"), *linux_part = json_object_get(root, "linux");
	snprintf(port, sizeof(port), "%u", fx.srv.port);
	json_object_set_new(process, "terminal", json_false());
	json_object_set_new(process, "args", json_pack("[ssss]", "/bin/client", "tcp", "127.0.0.1", port));
	json_object_set_new(json_object_get(root, "root"), "path", json_string(fx.rootfs));
	json_object_set_new(json_object_get(root, "root"), "readonly", json_true());
	json_t *kept = json_array(), *ns;
	size_t i;
	json_array_foreach(json_object_get(linux_part, "namespaces"), i, ns)
		if (strcmp(json_string_value(json_object_get(ns, "type")), "network") != 0)
			json_array_append(kept, ns);
	json_object_set_new(linux_part, "namespaces", kept);
	char cgroup[PATH_MAX];
	snprintf(cgroup, sizeof(cgroup), "/%s", id);
	json_object_set_new(linux_part, "cgroupsPath", json_string(cgroup));
	cr_assert_eq(json_dump_file(root, config, JSON_INDENT(1)), 0);
	json_decref(root);
}

/* `runc run` of the bundle: the port its one connect left from (0 when
 * it failed; the container's output goes to out). */
static uint16_t run_container(const char *bundle, const char *id, char *out, size_t len)
{
	char *argv[] = {RUNC, "run", "--bundle", (char *)bundle, (char *)id, NULL};
	static struct run_result r;
	run_program(&r, argv, NULL, NULL);
	int n = snprintf(out, len, "status %d: %.400s%.400s", r.status, r.out, r.err);
	(void)n;
	const char *local = strstr(r.out, "local ");
	return r.status == 0 && local ? address_port(local + 6) : 0;
}

/* portfence daemon in the background; waits (10 s at most) for its
 * line saying it watches the hierarchy. */
static void daemon_start(void)
{
	fx.daemon = daemon_spawn(&fx.sb);
	for (int tenths = 0; tenths < 100; tenths++) {
		const char *text = daemon_text(&fx.sb);
		if (strstr(text, "watching"))
			return;
		cr_assert_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", text);
		usleep(100000);
	}
}

static const char *daemon_output(void)
{
	return daemon_text(&fx.sb);
}

static bool in_range(uint16_t port, int lo, int hi)
{
	return port >= lo && port <= hi;
}

/* The assign record of port, once the daemon wrote it (10 s at most). */
static json_t *assign_record(uint16_t port, json_t **records)
{
	for (int tenths = 0; tenths < 100; tenths++) {
		*records = audit_records(fx.sb.log);
		json_t *record;
		for (int i = 0; (record = audit_find(*records, "assign", i)); i++)
			if (address_port(json_string_value(json_object_get(record, "local"))) == port)
				return record;
		json_decref(*records);
		usleep(100000);
	}
	*records = NULL;
	return NULL;
}

/* App "ctr", range [lo, hi], cgroups "pfctr-PID-*", under the daemon. */
static void one_app_serving(int lo, int hi)
{
	char apps[512];
	require_containers();
	snprintf(apps, sizeof(apps), "apps = ( { name = \"ctr\"; range = [ %d, %d ]; cgroups = [ \"pfctr-%d-*\" ]; } );",
		 lo, hi, (int)getpid());
	setup(apps);
	daemon_start();
}

Test(containers, a_glob_matched_container_connects_from_its_apps_range)
{
	enum { LO = 62700, HI = 62719 };
	char id[64], bundle[PATH_MAX], out[1024];

	one_app_serving(LO, HI);
	snprintf(id, sizeof(id), "pfctr-%d-web", (int)getpid());
	make_bundle(id, bundle, sizeof(bundle));
	uint16_t port = run_container(bundle, id, out, sizeof(out));
	cr_assert(in_range(port, LO, HI), "the container connected from %u, outside [%d, %d] (%s)\ndaemon:\n%s", port,
		  LO, HI, out, daemon_output());
	cr_expect(server_saw(&fx.srv, port) || (usleep(300000), server_saw(&fx.srv, port)),
		  "the server never saw port %u", port);
	json_t *records, *record = assign_record(port, &records);
	cr_assert_not_null(record, "no assign record for port %u\ndaemon:\n%s", port, daemon_output());
	const char *app = json_string_value(json_object_get(record, "app"));
	const char *cgroup = json_string_value(json_object_get(record, "cgroup"));
	cr_expect_str_eq(app ? app : "(none)", "ctr");
	cr_expect(cgroup && strstr(cgroup, id), "the record's cgroup %s does not name %s", cgroup ? cgroup : "(none)",
		  id);
	cr_expect_null(json_object_get(record, "unit"), "a runc cgroup names no systemd unit");
	json_decref(records);
}

Test(containers, two_containers_of_two_apps_get_disjoint_ranges)
{
	char apps[1024], id[2][64], bundle[2][PATH_MAX], out[1024];
	static const int ranges[2][2] = {{62720, 62739}, {62740, 62759}};

	require_containers();
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"front\"; range = [ %d, %d ]; cgroups = [ \"pfctr-%d-front-*\" ]; },\n"
		 "         { name = \"back\"; range = [ %d, %d ]; cgroups = [ \"pfctr-%d-back-*\" ]; } );",
		 ranges[0][0], ranges[0][1], (int)getpid(), ranges[1][0], ranges[1][1], (int)getpid());
	setup(apps);
	daemon_start();
	snprintf(id[0], sizeof(id[0]), "pfctr-%d-front-1", (int)getpid());
	snprintf(id[1], sizeof(id[1]), "pfctr-%d-back-1", (int)getpid());
	for (int c = 0; c < 2; c++) {
		make_bundle(id[c], bundle[c], sizeof(bundle[c]));
		uint16_t port = run_container(bundle[c], id[c], out, sizeof(out));
		cr_expect(in_range(port, ranges[c][0], ranges[c][1]), "%s connected from %u, outside [%d, %d] (%s)\n%s",
			  id[c], port, ranges[c][0], ranges[c][1], out, daemon_output());
	}
}

/* runc removes a container's cgroup when it ends; the next run makes a
 * new one at the same path, which the daemon confines again unasked. */
Test(containers, a_restarted_container_is_confined_again)
{
	enum { LO = 62760, HI = 62779 };
	char id[64], bundle[PATH_MAX], out[1024];

	one_app_serving(LO, HI);
	snprintf(id, sizeof(id), "pfctr-%d-again", (int)getpid());
	make_bundle(id, bundle, sizeof(bundle));
	for (int run = 0; run < 3; run++) {
		uint16_t port = run_container(bundle, id, out, sizeof(out));
		cr_expect(in_range(port, LO, HI), "run %d connected from %u, outside [%d, %d] (%s)\n%s", run, port, LO,
			  HI, out, daemon_output());
	}
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* 100 containers started and stopped one after another, each connecting
 * the moment it starts: none leaves from outside its app's range. */
Test(containers, a_hundred_containers_connect_at_birth_without_a_leak)
{
	enum { LO = 62800, HI = 62999, COUNT = 100 };
	char id[64], bundle[PATH_MAX], out[1024], first_leak[1200] = "";
	int leaks = 0, failed = 0, confined = 0;

	one_app_serving(LO, HI);
	struct timespec start, end;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < COUNT; i++) {
		snprintf(id, sizeof(id), "pfctr-%d-n%d", (int)getpid(), i);
		make_bundle(id, bundle, sizeof(bundle));
		uint16_t port = run_container(bundle, id, out, sizeof(out));
		if (port == 0)
			failed++;
		else if (in_range(port, LO, HI))
			confined++;
		else if (leaks++ == 0)
			snprintf(first_leak, sizeof(first_leak), "%s from %u: %s", id, port, out);
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
	fprintf(stderr, "containers: %d started in %.1f s, %d confined at birth, %d leaks, %d failed\n", COUNT,
		seconds, confined, leaks, failed);
	cr_expect_eq(leaks, 0, "%d of %d containers connected from outside [%d, %d]; first: %s", leaks, COUNT, LO, HI,
		     first_leak);
	cr_expect_eq(failed, 0, "%d containers could not connect", failed);
	/* Each ended container's cgroup went, and with it its links and pins. */
	int pinned = -1;
	for (int tenths = 0; tenths < 50 && pinned != 0; tenths++) {
		struct run_result r;
		char *count[] = {"sh", "-c", "find /sys/fs/bpf/portfence/ctr -mindepth 1 -type d | wc -l", NULL};
		run_program(&r, count, NULL, NULL);
		pinned = atoi(r.out);
		if (pinned)
			usleep(100000);
	}
	cr_expect_eq(pinned, 0, "%d cgroups of ended containers are still pinned", pinned);
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* A cgroup one app's glob matches, inside a cgroup another app confines:
 * the programs of both would judge its sockets, so the daemon refuses it
 * with one line naming both apps (never a silent choice); it stays
 * confined by the enclosing app, whose attachment it inherits. */
Test(containers, a_cgroup_inside_another_apps_is_refused_with_a_line)
{
	enum { OUTER_LO = 62600, OUTER_HI = 62619, INNER_LO = 62620, INNER_HI = 62639 };
	char mount[PATH_MAX], apps[1024], outer[128], command[PATH_MAX * 2];
	skip_unless_bpf_machine_at(mount, sizeof(mount));
	snprintf(outer, sizeof(outer), "pf-test-%d-outer", (int)getpid());
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"outer\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; },\n"
		 "         { name = \"inner\"; range = [ %d, %d ]; cgroups = [ \"%s/*\" ]; } );",
		 OUTER_LO, OUTER_HI, outer, INNER_LO, INNER_HI, outer);
	sandbox_init(&fx.sb, apps);
	fx.sandboxed = true;
	server_start(&fx.srv, "127.0.0.1", SERVE_GREET);
	fx.serving = true;
	snprintf(fx.cgroups[0], PATH_MAX, "%.3000s/%s", mount, outer);
	cr_assert_eq(mkdir(fx.cgroups[0], 0755), 0, "mkdir %s: %s", fx.cgroups[0], strerror(errno));
	fx.cgroup_count = 1;
	daemon_start();
	cr_assert(strstr(daemon_output(), "outer attached to"), "the existing cgroup was not confined at start:\n%s",
		  daemon_output());
	snprintf(fx.cgroups[1], PATH_MAX, "%.3000s/%s/box", mount, outer);
	cr_assert_eq(mkdir(fx.cgroups[1], 0755), 0, "mkdir %s: %s", fx.cgroups[1], strerror(errno));
	fx.cgroup_count = 2;
	for (int tenths = 0; tenths < 50 && !strstr(daemon_output(), "refused"); tenths++)
		usleep(100000);
	const char *said = strstr(daemon_output(), "refused");
	cr_expect(said && strstr(daemon_output(), "'inner'") && strstr(daemon_output(), "'outer'"),
		  "no line refusing %s/box naming both apps:\n%s", outer, daemon_output());
	snprintf(command, sizeof(command), "echo $$ > '%s/cgroup.procs' && exec '%s' tcp 127.0.0.1 %u", fx.cgroups[1],
		 build_path("bpf-static-client"), fx.srv.port);
	char *argv[] = {"sh", "-c", command, NULL};
	static struct run_result r;
	run_program(&r, argv, NULL, NULL);
	const char *local = strstr(r.out, "local ");
	uint16_t port = local ? address_port(local + 6) : 0;
	cr_expect(in_range(port, OUTER_LO, OUTER_HI), "a process in %s/box connected from %u, not from the enclosing "
		  "app's [%d, %d]: %s%s", outer, port, OUTER_LO, OUTER_HI, r.out, r.err);
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* `count` cgroups mount/base-N made one after another, a child joining
 * each and connecting the moment it exists (no runtime's start-up to
 * hide the race): how many connected from outside [lo, hi]. */
static int births_outside(const char *mount, const char *base, int count, int lo, int hi, int *connected,
			  char *first, size_t first_len)
{
	char full[PATH_MAX];
	int leaks = 0;

	*connected = 0;
	for (int i = 0; i < count; i++) {
		int pipe_fds[2];
		uint16_t local = 0;
		snprintf(full, sizeof(full), "%.3000s/%s-%d", mount, base, i);
		cr_assert_eq(pipe(pipe_fds), 0);
		pid_t child = join_and_connect_at_birth(full, fx.srv.port, pipe_fds[1]);
		cr_assert_eq(mkdir(full, 0755), 0, "mkdir %s: %s", full, strerror(errno));
		close(pipe_fds[1]);
		if (read(pipe_fds[0], &local, sizeof(local)) == sizeof(local) && local) {
			(*connected)++;
			if (!in_range(local, lo, hi) && leaks++ == 0)
				snprintf(first, first_len, "%s from %u", full, local);
		}
		close(pipe_fds[0]);
		waitpid(child, NULL, 0);
		rmdir(full);
	}
	return leaks;
}

/* The sandbox (policy apps_text) and the test's server, then the daemon. */
static void births_serving(const char *apps_text)
{
	sandbox_init(&fx.sb, apps_text);
	fx.sandboxed = true;
	server_start(&fx.srv, "127.0.0.1", SERVE_GREET);
	fx.serving = true;
	daemon_start();
}

/* births_outside, expecting every child to connect from [lo, hi]. */
static void expect_born_confined(const char *mount, const char *base, int count, int lo, int hi)
{
	char first[PATH_MAX + 64] = "";
	int connected = 0, leaks = births_outside(mount, base, count, lo, hi, &connected, first, sizeof(first));
	fprintf(stderr, "containers: %d processes joined a new cgroup %s-N and connected at once: %d connected, %d leaks\n",
		count, base, connected, leaks);
	cr_expect_eq(leaks, 0, "%d of %d connects at birth left from outside [%d, %d]; first: %s\ndaemon:\n%s", leaks,
		     connected, lo, hi, first, daemon_output());
	cr_expect_eq(connected, count, "only %d of %d children connected", connected, count);
}

/* The birth race: a process that joins a brand-new cgroup and connects
 * at once is confined from that first connect.  The daemon's programs
 * stand at a common ancestor, and the new cgroup is given its app inside
 * mkdir(2) (tp_btf/cgroup_mkdir), before any process can join it; an
 * attachment made after mkdir, on inotify's news, left about a third of
 * these connects outside the range. */
Test(containers, a_process_joining_a_new_cgroup_connects_from_the_range_at_once)
{
	enum { LO = 62640, HI = 62699, COUNT = 1000 };
	char mount[PATH_MAX], apps[512], base[64];

	skip_unless_bpf_machine_at(mount, sizeof(mount));
	snprintf(base, sizeof(base), "pf-born-%d", (int)getpid());
	snprintf(apps, sizeof(apps), "apps = ( { name = \"born\"; range = [ %d, %d ]; cgroups = [ \"%s-*\" ]; } );", LO,
		 HI, base);
	births_serving(apps);
	expect_born_confined(mount, base, COUNT, LO, HI);
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* The birth race with two apps whose cgroups share a parent (here the
 * mount's root): the daemon's dispatcher stands there and routes each
 * socket to its app's programs through the cgroup map, which the birth
 * program fills inside mkdir(2); each app's new cgroups connect from its
 * own range from the first connect. */
Test(containers, two_apps_behind_one_dispatcher_confine_their_cgroups_at_birth)
{
	enum { A_LO = 62600, A_HI = 62619, B_LO = 62620, B_HI = 62639, COUNT = 200 };
	char mount[PATH_MAX], apps[1024], base_a[64], base_b[64];

	skip_unless_bpf_machine_at(mount, sizeof(mount));
	snprintf(base_a, sizeof(base_a), "pf-born-a-%d", (int)getpid());
	snprintf(base_b, sizeof(base_b), "pf-born-b-%d", (int)getpid());
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"borna\"; range = [ %d, %d ]; cgroups = [ \"%s-*\" ]; },\n"
		 "         { name = \"bornb\"; range = [ %d, %d ]; cgroups = [ \"%s-*\" ]; } );",
		 A_LO, A_HI, base_a, B_LO, B_HI, base_b);
	births_serving(apps);
	cr_assert(strstr(daemon_output(), "borna, bornb stand once at cgroup"),
		  "the two apps do not share one dispatcher:\n%s", daemon_output());
	expect_born_confined(mount, base_a, COUNT, A_LO, A_HI);
	expect_born_confined(mount, base_b, COUNT, B_LO, B_HI);
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* Two apps whose globs `check` cannot see meet (one names the mount,
 * which only the running host knows): a cgroup both match is refused
 * with one line naming both apps, and neither confines it, neither in
 * the kernel at its birth nor in the watch after. */
Test(containers, a_cgroup_two_apps_match_at_runtime_is_refused_not_chosen)
{
	enum { A_LO = 62580, A_HI = 62589, B_LO = 62590, B_HI = 62599 };
	char mount[PATH_MAX], apps[PATH_MAX + 512], command[PATH_MAX * 4];

	skip_unless_bpf_machine_at(mount, sizeof(mount));
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"left\"; range = [ %d, %d ]; cgroups = [ \"%.3000s/pf-both-%d-*\" ]; },\n"
		 "         { name = \"right\"; range = [ %d, %d ]; cgroups = [ \"pf-both-%d-*\" ]; } );",
		 A_LO, A_HI, mount, (int)getpid(), B_LO, B_HI, (int)getpid());
	births_serving(apps);
	cr_assert(strstr(daemon_output(), "watching"), "the daemon did not start:\n%s", daemon_output());
	snprintf(fx.cgroups[0], PATH_MAX, "%.3000s/pf-both-%d-1", mount, (int)getpid());
	snprintf(command, sizeof(command), "mkdir '%.3000s' && echo $$ > '%.3000s/cgroup.procs' && exec '%.3000s' tcp 127.0.0.1 %u",
		 fx.cgroups[0], fx.cgroups[0], build_path("bpf-static-client"), fx.srv.port);
	fx.cgroup_count = 1;
	char *argv[] = {"sh", "-c", command, NULL};
	static struct run_result r;
	run_program(&r, argv, NULL, NULL);
	const char *local = strstr(r.out, "local ");
	uint16_t port = local ? address_port(local + 6) : 0;
	cr_assert_neq(port, 0, "the client did not connect: %s%s", r.out, r.err);
	cr_expect(!in_range(port, A_LO, B_HI), "a cgroup both apps match connected from %u: an app was chosen (%s)\n%s",
		  port, r.out, daemon_output());
	for (int tenths = 0; tenths < 50 && !strstr(daemon_output(), "refused"); tenths++)
		usleep(100000);
	cr_expect(strstr(daemon_output(), "refused") && strstr(daemon_output(), "'left'") &&
			  strstr(daemon_output(), "'right'"),
		  "no line refusing the cgroup naming both apps:\n%s", daemon_output());
	cr_expect_eq(waitpid(fx.daemon, NULL, WNOHANG), 0, "the daemon exited:\n%s", daemon_output());
}

/* The kernel's own match at birth takes `*` and `?` at any depth, under
 * an attachment standing at the glob's fixed part (here pf-nest-PID,
 * not the root): 100 children joining pf-nest-PID/mid/x-7-N at its birth
 * all connect from the range; a sibling the glob does not match
 * (y-7-N) is left alone. */
Test(containers, a_nested_glob_is_matched_in_the_kernel_at_birth)
{
	enum { LO = 62560, HI = 62579, COUNT = 100 };
	char mount[PATH_MAX], apps[512], base[128], first[PATH_MAX + 64] = "";

	skip_unless_bpf_machine_at(mount, sizeof(mount));
	snprintf(fx.cgroups[0], PATH_MAX, "%.3000s/pf-nest-%d", mount, (int)getpid());
	snprintf(fx.cgroups[1], PATH_MAX, "%.3000s/pf-nest-%d/mid", mount, (int)getpid());
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(mkdir(fx.cgroups[i], 0755), 0, "mkdir %s: %s", fx.cgroups[i], strerror(errno));
		fx.cgroup_count = i + 1;
	}
	snprintf(apps, sizeof(apps), "apps = ( { name = \"nest\"; range = [ %d, %d ]; cgroups = [ \"pf-nest-%d/*/x-?-*\" ]; } );",
		 LO, HI, (int)getpid());
	births_serving(apps);
	cr_assert(strstr(daemon_output(), "stand once at cgroup pf-nest-"), "the attachment is not at the glob's "
		  "fixed part:\n%s", daemon_output());
	snprintf(base, sizeof(base), "pf-nest-%d/mid/x-7", (int)getpid());
	expect_born_confined(mount, base, COUNT, LO, HI);
	int connected = 0;
	snprintf(base, sizeof(base), "pf-nest-%d/mid/y-7", (int)getpid());
	int outside = births_outside(mount, base, 10, LO, HI, &connected, first, sizeof(first));
	cr_expect_eq(outside, connected, "a cgroup the glob does not match was confined (%d of %d outside)", outside,
		     connected);
}
