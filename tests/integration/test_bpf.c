/* The cgroup-BPF backend (issue 11): programs the shim cannot reach (Go,
 * static, raw system calls, io_uring) confined under `run --bpf`, deny
 * rules, R×D, attach/detach of a live cgroup, the daemon and its
 * re-attachment, udp_unbound, and what is left behind.  Each test checks
 * what the server saw and what the audit log holds.
 *
 * Whether BPF can be used is decided from the machine (root, a cgroup v2
 * mount, a kernel >= 6.2 that lets us create a BPF map), never from the
 * tool's output: a tool that does not know --bpf fails these tests, it
 * does not skip them. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/bpf.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kernel/bpf_progs.h"

/* The clients' statuses (tests/helpers/bpf_client.h, goclient). */
enum { CLIENT_NO_IO_URING = 69, CLIENT_EPERM = 77 };

/* ---- Can this machine run the backend? ---- */

static char cgroup_mount[PATH_MAX];

/* ---- What each test leaves behind, removed even when it fails ---- */

#define MAX_CGROUPS 8
#define MAX_CHILDREN 8

static struct {
	char cgroups[MAX_CGROUPS][PATH_MAX];	/* full paths */
	int cgroup_count;
	pid_t children[MAX_CHILDREN];
	int child_count;
	pid_t strays[MAX_CHILDREN];	/* not ours to reap: killed, never waited for */
	int stray_count;
	pid_t daemon;
	struct sandbox sb;
	bool sandboxed;
	char netns[2][32];	/* named network namespaces (ip netns), deleted */
} fx;

static void forget_child(pid_t pid)
{
	for (int i = 0; i < fx.child_count; i++)
		if (fx.children[i] == pid)
			fx.children[i] = fx.children[--fx.child_count];
}

/* waitpid with a deadline: the status, or -1 if the child still runs. */
static int wait_exit(pid_t pid, int seconds)
{
	int status;
	for (int tenths = 0; tenths <= seconds * 10; tenths++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		usleep(100000);
	}
	return -1;
}

static void kill_child(pid_t pid)
{
	kill(pid, SIGKILL);
	wait_exit(pid, 10);
	forget_child(pid);
}

/* An emptied cgroup may stay busy for a moment after its last process
 * was reaped. */
static bool remove_cgroup(const char *path)
{
	for (int tries = 0; tries < 50; tries++) {
		if (rmdir(path) == 0 || errno == ENOENT)
			return true;
		usleep(100000);
	}
	return false;
}

static void quiet_detach(const char *cgroup)
{
	char cmd[PATH_MAX + 256];
	snprintf(cmd, sizeof(cmd), "'%s' detach '%s' >/dev/null 2>&1", build_path("portfence"), cgroup);
	if (system(cmd) != 0) {
		/* Nothing was attached, or the test already detached. */
	}
}

static void teardown(void)
{
	if (fx.daemon > 0) {
		kill(fx.daemon, SIGTERM);
		if (wait_exit(fx.daemon, 10) < 0) {
			kill(fx.daemon, SIGKILL);
			wait_exit(fx.daemon, 10);
		}
		fx.daemon = 0;
	}
	while (fx.child_count)
		kill_child(fx.children[0]);
	while (fx.stray_count)
		kill(fx.strays[--fx.stray_count], SIGKILL);
	/* Children were made after their parents: removed before them. */
	for (int i = fx.cgroup_count - 1; i >= 0; i--) {
		quiet_detach(fx.cgroups[i]);
		if (!remove_cgroup(fx.cgroups[i]))
			fprintf(stderr, "could not remove cgroup %s: %s\n", fx.cgroups[i], strerror(errno));
	}
	fx.cgroup_count = 0;
	for (int i = 0; i < 2; i++) {
		char cmd[64];
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", fx.netns[i]);
		if (fx.netns[i][0] && system(cmd) != 0)
			fprintf(stderr, "could not remove the network namespace %s\n", fx.netns[i]);
		fx.netns[i][0] = '\0';
	}
	if (fx.sandboxed)
		sandbox_cleanup(&fx.sb);
	fx.sandboxed = false;
}

TestSuite(bpf, .fini = teardown, .timeout = 180);

/* ---- Policies, cgroups and runs ---- */

/* A sandbox whose policy has one app (the default algorithm,
 * double-hash, unless extra names one); extra goes inside its braces. */
static struct sandbox *bpf_sandbox(const char *app, int lo, int hi, const char *extra)
{
	char apps[2048];
	snprintf(apps, sizeof(apps), "apps = ( { name = \"%s\"; range = [ %d, %d ];\n  %s\n} );", app, lo, hi,
		 extra ? extra : "");
	sandbox_init(&fx.sb, apps);
	fx.sandboxed = true;
	return &fx.sb;
}

/* <cgroup v2 mount>/relative into out (PATH_MAX bytes). */
static void under_mount(char *out, const char *relative)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", cgroup_mount, relative);
	cr_assert(n > 0 && n < PATH_MAX, "cgroup path too long: %s", relative);
}

/* The cgroup at relative made, and removed by the teardown (children
 * first): its full path. */
static const char *add_cgroup(const char *relative)
{
	cr_assert_lt(fx.cgroup_count, MAX_CGROUPS);
	char *full = fx.cgroups[fx.cgroup_count];
	under_mount(full, relative);
	cr_assert_eq(mkdir(full, 0755), 0, "mkdir %s: %s", full, strerror(errno));
	fx.cgroup_count++;
	return full;
}

/* A fresh cgroup of this test, named after the test's process: its path
 * relative to the cgroup v2 mount goes to relative. */
static const char *make_cgroup(const char *name, char *relative, size_t len)
{
	snprintf(relative, len, "pf-test-%d-%s", (int)getpid(), name);
	return add_cgroup(relative);
}

/* A cgroup inside parent_relative, made after it (removed before it). */
static const char *make_child_cgroup(const char *parent_relative, const char *name, char *relative, size_t len)
{
	snprintf(relative, len, "%s/%s", parent_relative, name);
	return add_cgroup(relative);
}

/* [prefix...] TOOL run --bpf -c POLICY -a APP -- argv...  (prefix: a
 * command that runs the rest, or NULL) */
static void run_bpf_via(struct run_result *r, const char *const prefix[], const char *tool, const char *app,
			char *const argv[])
{
	char *full[32];
	int n = 0;
	for (int i = 0; prefix && prefix[i]; i++)
		full[n++] = (char *)prefix[i];
	const char *const run[] = {tool, "run", "--bpf", "-c", fx.sb.policy, "-a", app, "--"};
	for (size_t i = 0; i < sizeof(run) / sizeof(run[0]); i++)
		full[n++] = (char *)run[i];
	for (int i = 0; argv[i] && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;
	run_program(r, full, NULL, NULL);
}

static void run_bpf(struct run_result *r, const char *app, char *const argv[])
{
	run_bpf_via(r, NULL, build_path("portfence"), app, argv);
}

static void run_tool(struct run_result *r, char *const argv[])
{
	run_program(r, argv, NULL, NULL);
}

/* The value after "KEY " on the nth line starting with it, copied into
 * out, or false. */
static bool line_value(const char *text, const char *key, int nth, char *out, size_t len)
{
	size_t key_len = strlen(key);
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, key, key_len) != 0 || line[key_len] != ' ' || nth-- > 0)
			continue;
		const char *value = line + key_len + 1;
		size_t value_len = strcspn(value, " \n");
		snprintf(out, len, "%.*s", (int)(value_len < len ? value_len : len - 1), value);
		return true;
	}
	return false;
}

static bool in_range(long port, int lo, int hi)
{
	return port >= lo && port <= hi;
}

static unsigned nonempty_lines(const char *text)
{
	unsigned count = 0;
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		count += *line != '\n';
	return count;
}

/* ---- Audit records ---- */

static const char *field(json_t *record, const char *name)
{
	return json_string_value(json_object_get(record, name));
}

/* The records whose remote is remote; their number goes to count. */
static json_t *record_to(json_t *records, const char *remote, int *count)
{
	json_t *found = NULL, *record;
	size_t i;
	*count = 0;
	json_array_foreach(records, i, record) {
		const char *r = field(record, "remote");
		if (r && strcmp(r, remote) == 0) {
			found = found ? found : record;
			(*count)++;
		}
	}
	return found;
}

/* The one record of the call to remote, which must be an event. */
static json_t *only_record_to(json_t *records, const char *remote, const char *event)
{
	int count;
	json_t *record = record_to(records, remote, &count);
	cr_assert_eq(count, 1, "%d records of the call to %s in the log", count, remote);
	cr_expect_str_eq(field(record, "event") ? field(record, "event") : "", event);
	return record;
}

/* SPEC's fields, as the shim writes them, plus comm and cgroup. */
static void expect_bpf_fields(json_t *record, const char *app, const char *proto, const char *comm,
			      const char *cgroup_part)
{
	static const char *const strings[] = {"ts", "event", "app", "exe", "proto", "family", "local",
					      "remote", "algorithm", "result", "comm", "cgroup"};
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
		cr_expect(json_is_string(json_object_get(record, strings[i])), "no string field \"%s\" in %s",
			  strings[i], json_dumps(record, 0));
	cr_expect(json_is_integer(json_object_get(record, "pid")), "no pid in %s", json_dumps(record, 0));
	cr_expect(json_is_integer(json_object_get(record, "attempts")), "no attempts in %s",
		  json_dumps(record, 0));
	cr_expect_str_eq(field(record, "app") ? field(record, "app") : "", app);
	cr_expect_str_eq(field(record, "proto") ? field(record, "proto") : "", proto);
	cr_expect_str_eq(field(record, "family") ? field(record, "family") : "", "ipv4");
	cr_expect_str_eq(field(record, "comm") ? field(record, "comm") : "", comm);
	const char *cgroup = field(record, "cgroup");
	cr_expect(cgroup && strstr(cgroup, cgroup_part), "cgroup \"%s\" should name %s", cgroup ? cgroup : "",
		  cgroup_part);
}

/* The cgroup `run --bpf -a APP` made: ".../portfence/APP-" and digits. */
static bool names_run_cgroup(const char *path, const char *app)
{
	char marker[128];
	snprintf(marker, sizeof(marker), "portfence/%s-", app);
	const char *at = path ? strstr(path, marker) : NULL;
	if (!at)
		return false;
	at += strlen(marker);
	size_t digits = strspn(at, "0123456789");
	return digits > 0 && (at[digits] == '\0' || at[digits] == '\n');
}

/* ---- Confined under run --bpf ---- */

struct confined {
	const char *app;
	int lo, hi;
	const char *proto;
	const char *comm;	/* what the kernel calls the client */
};

/* The run's client printed "pid N" and "local ADDR:PORT": the server saw
 * that port, it is in the range, and the log holds one record of that
 * connection, an assignment with the BPF fields. */
static void expect_confined(const struct confined *c, struct run_result *r, struct server *srv)
{
	char local[64], pid[16], remote[64];

	cr_assert_eq(r->status, 0, "status %d\nstdout:\n%s\nstderr:\n%s", r->status, r->out, r->err);
	cr_assert(line_value(r->out, "local", 0, local, sizeof(local)), "%s", r->out);
	cr_assert(line_value(r->out, "pid", 0, pid, sizeof(pid)), "%s", r->out);
	uint16_t port = address_port(local);
	cr_expect(in_range(port, c->lo, c->hi), "local port %u outside [%d, %d]", port, c->lo, c->hi);
	cr_expect(server_saw(srv, port), "the server never saw port %u", port);

	snprintf(remote, sizeof(remote), "127.0.0.1:%u", srv->port);
	json_t *records = audit_records(fx.sb.log);
	json_t *record = only_record_to(records, remote, "assign");
	cr_expect_str_eq(field(record, "result"), "ok");
	cr_expect_str_eq(field(record, "local") ? field(record, "local") : "", local);
	cr_expect_eq(json_integer_value(json_object_get(record, "pid")), atol(pid));
	expect_bpf_fields(record, c->app, c->proto, c->comm, "portfence/");
	cr_expect(names_run_cgroup(field(record, "cgroup"), c->app), "cgroup \"%s\" is not portfence/%s-PID",
		  field(record, "cgroup"), c->app);
	json_decref(records);
}

static void go_client_confined(const char *binary, const char *comm, const char *proto)
{
	struct confined c = {.app = "goapp", .lo = 62000, .hi = 62099, .proto = proto, .comm = comm};
	struct server srv;
	struct run_result r;
	char dest[32];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox(c.app, c.lo, c.hi, NULL);
	bool udp = strcmp(proto, "udp") == 0;
	server_start(&srv, "127.0.0.1", udp ? SERVE_UDP_ECHO : SERVE_GREET);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path(binary), (char *)proto, dest, NULL};
	run_bpf(&r, c.app, argv);
	server_stop(&srv);
	expect_confined(&c, &r, &srv);
}

Test(bpf, static_go_tcp_client_is_confined)
{
	go_client_confined("goclient-static", "goclient-static", "tcp");
}

Test(bpf, static_go_udp_client_is_confined)
{
	go_client_confined("goclient-static", "goclient-static", "udp");
}

Test(bpf, dynamic_go_tcp_client_is_confined)
{
	go_client_confined("goclient-dyn", "goclient-dyn", "tcp");
}

Test(bpf, static_c_raw_syscall_client_is_confined)
{
	struct confined c = {.app = "capp", .lo = 62100, .hi = 62199, .proto = "tcp", .comm = "bpf-static-clie"};
	struct server srv;
	struct run_result r;
	char port[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox(c.app, c.lo, c.hi, NULL);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {(char *)build_path("bpf-static-client"), "tcp", "127.0.0.1", port, NULL};
	run_bpf(&r, c.app, argv);
	server_stop(&srv);
	expect_confined(&c, &r, &srv);
}

Test(bpf, io_uring_connect_is_confined)
{
	struct confined c = {.app = "uring", .lo = 62200, .hi = 62299, .proto = "tcp", .comm = "bpf-uring-clien"};
	struct server srv, baseline;
	struct run_result r;
	char port[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	/* Outside portfence first: a kernel or sandbox that refuses io_uring
	 * is the machine's doing. */
	server_start(&baseline, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", baseline.port);
	char *plain[] = {(char *)build_path("bpf-uring-client"), "127.0.0.1", port, NULL};
	run_program(&r, plain, NULL, NULL);
	server_stop(&baseline);
	if (r.status == CLIENT_NO_IO_URING)
		cr_skip_test("skipped: io_uring is refused on this machine: %s", r.err);
	cr_assert_eq(r.status, 0, "the io_uring client fails on its own: %s%s", r.out, r.err);

	bpf_sandbox(c.app, c.lo, c.hi, NULL);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {(char *)build_path("bpf-uring-client"), "127.0.0.1", port, NULL};
	run_bpf(&r, c.app, argv);
	server_stop(&srv);
	expect_confined(&c, &r, &srv);
}

/* ---- Destination rules ---- */

/* The client under `run --bpf -a app` was refused with EPERM, the server
 * saw nothing, and the log holds one record of it: a deny, EPERM. */
static void expect_refused(struct run_result *r, struct server *srv, const char *dest, const char *app,
			   const char *proto, const char *comm)
{
	char cgroup_part[64];

	cr_expect_eq(r->status, CLIENT_EPERM, "EPERM expected; status %d\n%s%s", r->status, r->out, r->err);
	cr_expect(strstr(r->out, "error EPERM") != NULL, "%s", r->out);
	cr_expect_eq(atomic_load(&srv->count), 0, "the server must see nothing");
	json_t *records = audit_records(fx.sb.log);
	json_t *deny = only_record_to(records, dest, "deny");
	cr_expect_str_eq(field(deny, "result"), "EPERM");
	snprintf(cgroup_part, sizeof(cgroup_part), "portfence/%s-", app);
	expect_bpf_fields(deny, app, proto, comm, cgroup_part);
	json_decref(records);
}

Test(bpf, denied_destination_gives_eperm_to_a_go_client)
{
	struct server srv;
	struct run_result r;
	char dest[32], rule[64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(rule, sizeof(rule), "deny = [ \"127.0.0.1:%u\" ];", srv.port);
	bpf_sandbox("denied", 62300, 62349, rule);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path("goclient-static"), "tcp", dest, NULL};
	run_bpf(&r, "denied", argv);
	usleep(200000);
	server_stop(&srv);

	expect_refused(&r, &srv, dest, "denied", "tcp", "goclient-static");
}

/* ---- R×D: every port serves every destination ---- */

static void ports_times_destinations(const char *algorithm)
{
	enum { LO = 62400, HI = 62407, DESTS = 3, PORTS = HI - LO + 1 };
	static struct server srv[DESTS];
	static const char *const addrs[DESTS] = {"127.0.0.1", "127.0.0.2", "127.0.0.3"};
	struct run_result r;
	char dests[128] = "", each[8], extra[64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	snprintf(extra, sizeof(extra), "algorithm = \"%s\";", algorithm);
	bpf_sandbox("rxd", LO, HI, extra);
	for (int i = 0; i < DESTS; i++) {
		server_start(&srv[i], addrs[i], SERVE_STALL);
		size_t len = strlen(dests);
		snprintf(dests + len, sizeof(dests) - len, "%s%s:%u", i ? "," : "", addrs[i], srv[i].port);
	}
	snprintf(each, sizeof(each), "%d", PORTS);
	char *argv[] = {(char *)build_path("goclient-static"), "hold", dests, each, NULL};
	run_bpf(&r, "rxd", argv);
	for (int i = 0; i < DESTS; i++)
		server_stop(&srv[i]);

	cr_assert_eq(r.status, 0, "all %d connections must succeed; status %d\n%s%s", PORTS * DESTS, r.status,
		     r.out, r.err);
	cr_expect_eq(count_lines_starting(r.out, "local "), PORTS * DESTS, "%s", r.out);
	for (int i = 0; i < PORTS * DESTS; i++) {
		char local[64];
		if (!line_value(r.out, "local", i, local, sizeof(local)))
			break;
		cr_expect(in_range(address_port(local), LO, HI), "connection %d from %s, outside [%d, %d]", i,
			  local, LO, HI);
	}
	for (int i = 0; i < DESTS; i++) {
		cr_expect_eq(atomic_load(&srv[i].count), PORTS, "%s saw %d connections", addrs[i],
			     atomic_load(&srv[i].count));
		for (int p = LO; p <= HI; p++)
			cr_expect(server_saw(&srv[i], (uint16_t)p), "%s never saw port %d", addrs[i], p);
	}
	json_t *records = audit_records(fx.sb.log);
	int assigned = 0;
	while (audit_find(records, "assign", assigned))
		assigned++;
	cr_expect_eq(assigned, PORTS * DESTS, "%d assign records", assigned);
	json_decref(records);
}

Test(bpf, eight_ports_times_three_destinations_give_24_sequential)
{
	ports_times_destinations("sequential");
}

/* Random draws collide: only a check of each 4-tuple finds the free
 * port every time. */
Test(bpf, eight_ports_times_three_destinations_give_24_random)
{
	ports_times_destinations("random");
}

/* ---- A long-running process in a cgroup of the test's ---- */

struct prober {
	pid_t pid;
	int to, from;	/* its stdin, its stdout */
};

/* Reads one line (ms at most); false on EOF or timeout. */
static bool read_line_within(int fd, char *buf, size_t len, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	size_t have = 0;

	while (have + 1 < len) {
		if (poll(&pfd, 1, ms) != 1 || read(fd, buf + have, 1) != 1)
			return false;
		if (buf[have++] == '\n')
			break;
	}
	buf[have] = '\0';
	return true;
}

static bool read_line(int fd, char *buf, size_t len)
{
	return read_line_within(fd, buf, len, 10000);
}

/* A child running argv, its stdin and stdout on pipes (*to, *from),
 * in cgroup (a full path) when there is one; killed by the teardown. */
static pid_t spawn_piped(const char *cgroup, char *const argv[], int *to, int *from)
{
	int in[2], out[2];
	char procs[PATH_MAX + 16];

	cr_assert_lt(fx.child_count, MAX_CHILDREN);
	cr_assert(pipe(in) == 0 && pipe(out) == 0);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup ? cgroup : "");
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = cgroup ? open(procs, O_WRONLY) : -1;
		if (cgroup && (fd < 0 || write(fd, "0\n", 2) != 2))
			_exit(120);
		if (fd >= 0)
			close(fd);
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execvp(argv[0], argv);
		_exit(127);
	}
	fx.children[fx.child_count++] = pid;
	close(in[0]);
	close(out[1]);
	*to = in[1];
	*from = out[0];
	return pid;
}

/* bpf-static-client loop, started inside cgroup (a full path). */
static void prober_start(struct prober *p, const char *cgroup, uint16_t port)
{
	char port_text[16], line[64];

	snprintf(port_text, sizeof(port_text), "%u", port);
	char *argv[] = {(char *)build_path("bpf-static-client"), "loop", "127.0.0.1", port_text, NULL};
	p->pid = spawn_piped(cgroup, argv, &p->to, &p->from);
	cr_assert(read_line(p->from, line, sizeof(line)) && strncmp(line, "pid ", 4) == 0,
		  "the prober did not start in %s", cgroup);
}

static void prober_stop(struct prober *p)
{
	close(p->to);
	close(p->from);
	kill_child(p->pid);
}

/* One connect from inside the cgroup, to "HOST PORT" (NULL: the
 * prober's own server): its local port, or 0 when it failed (its line
 * goes to failure). */
static uint16_t prober_connect_to(struct prober *p, const char *dest, char *failure, size_t len)
{
	char line[128];
	snprintf(line, sizeof(line), "%s\n", dest ? dest : "");
	failure[0] = '\0';
	cr_assert_eq(write(p->to, line, strlen(line)), (ssize_t)strlen(line));
	cr_assert(read_line(p->from, line, sizeof(line)), "the prober stopped answering");
	if (strncmp(line, "local ", 6) == 0)
		return address_port(line + 6);
	snprintf(failure, len, "%s", line);
	return 0;
}

static uint16_t prober_connect(struct prober *p, char *failure, size_t len)
{
	return prober_connect_to(p, NULL, failure, len);
}

/* Connects every 200 ms until one comes from [lo, hi] (true) or the
 * deadline passes; a watched process (the daemon) that exits ends the
 * wait at once. */
static bool wait_confined(struct prober *p, int lo, int hi, int seconds, pid_t watched, int *exit_status)
{
	char failure[128];
	time_t deadline = time(NULL) + seconds;

	*exit_status = -1;
	while (time(NULL) < deadline) {
		if (in_range(prober_connect(p, failure, sizeof(failure)), lo, hi))
			return true;
		if (watched > 0 && (*exit_status = wait_exit(watched, 0)) >= 0)
			return false;
		usleep(200000);
	}
	return false;
}

static void expect_unconfined(struct prober *p, int lo, int hi, const char *when)
{
	char failure[128];
	uint16_t port = prober_connect(p, failure, sizeof(failure));
	cr_expect(port != 0, "connect %s failed: %s", when, failure);
	cr_expect(!in_range(port, lo, hi), "connect %s came from %u, inside [%d, %d]", when, port, lo, hi);
}

/* ---- attach / detach ---- */

static void attach_then_detach(bool absolute_path, const char *cgroup_name, const char *app)
{
	enum { LO = 62500, HI = 62519 };
	struct server srv;
	struct prober p;
	struct run_result r;
	char relative[128], failure[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox(app, LO, HI, NULL);
	const char *full = make_cgroup(cgroup_name, relative, sizeof(relative));
	const char *named = absolute_path ? full : relative;
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	expect_unconfined(&p, LO, HI, "before attach");

	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", (char *)app,
			  (char *)named, NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach %s: status %d\n%s%s", named, r.status, r.out, r.err);
	for (int i = 0; i < 3; i++) {
		uint16_t port = prober_connect(&p, failure, sizeof(failure));
		cr_expect(in_range(port, LO, HI), "connect %d after attach came from %u (%s)", i, port, failure);
		cr_expect(port == 0 || server_saw(&srv, port) || (usleep(300000), server_saw(&srv, port)),
			  "the server never saw port %u", port);
	}

	char *status[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, "--json", NULL};
	run_tool(&r, status);
	cr_expect(strstr(r.out, relative), "status does not list %s as attached:\n%s%s", relative, r.out, r.err);
	char *detach[] = {(char *)build_path("portfence"), "detach", "-a", (char *)app, (char *)named, NULL};
	run_tool(&r, detach);
	cr_assert_eq(r.status, 0, "detach %s: status %d\n%s%s", named, r.status, r.out, r.err);
	expect_unconfined(&p, LO, HI, "after detach");
	prober_stop(&p);
	server_stop(&srv);
}

Test(bpf, attach_confines_a_running_process_and_detach_releases_it)
{
	attach_then_detach(false, "attach", "attached");
}

Test(bpf, attach_and_detach_take_an_absolute_cgroup_path)
{
	attach_then_detach(true, "attach", "attached");
}

/* bpffs refuses a '.' in a file name: a systemd unit's cgroup
 * (legacy.service) and an app named web.v2 must still be pinned. */
Test(bpf, attach_and_detach_a_unit_cgroup_and_an_app_with_dots)
{
	attach_then_detach(false, "legacy.service", "web.v2");
}

Test(bpf, attach_to_a_missing_cgroup_fails_with_one_line)
{
	struct run_result r;
	char relative[128], full[PATH_MAX];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("attached", 62520, 62539, NULL);
	snprintf(relative, sizeof(relative), "pf-test-%d-missing", (int)getpid());
	under_mount(full, relative);
	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "attached",
			  relative, NULL};
	run_tool(&r, attach);
	struct stat info;
	bool created = stat(full, &info) == 0;
	if (created) {
		snprintf(fx.cgroups[fx.cgroup_count++], PATH_MAX, "%s", full);
	}
	cr_expect_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(nonempty_lines(r.err), 1, "one line on stderr:\n%s", r.err);
	cr_expect(!created, "attach created %s", full);
}

/* A detach that finds nothing attached says so in one line, in plain
 * words: which app is not attached (or that none is), and when the
 * cgroup does not exist either.  It said "no app is not attached". */
Test(bpf, detach_of_what_is_not_attached_says_so_in_one_line)
{
	struct run_result r;
	char relative[128], missing[128], expected[256];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	make_cgroup("unattached", relative, sizeof(relative));
	snprintf(missing, sizeof(missing), "pf-test-%d-nowhere", (int)getpid());
	const struct {
		const char *app, *cgroup, *says;
	} cases[] = {
		{NULL, relative, "portfence: no app is attached to %s\n"},
		{"ghost", relative, "portfence: app ghost is not attached to %s\n"},
		{NULL, missing, "portfence: no app is attached to %s (no such cgroup)\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *with_app[] = {(char *)build_path("portfence"), "detach", "-a", (char *)cases[i].app,
				    (char *)cases[i].cgroup, NULL};
		char *without[] = {(char *)build_path("portfence"), "detach", (char *)cases[i].cgroup, NULL};
		run_tool(&r, cases[i].app ? with_app : without);
		snprintf(expected, sizeof(expected), cases[i].says, cases[i].cgroup);
		cr_expect_eq(r.status, 1, "detach %s: status %d\n%s", cases[i].cgroup, r.status, r.err);
		cr_expect_str_eq(r.err, expected);
	}
}

/* ---- daemon ---- */

/* `portfence daemon -c POLICY` in the background, its output in the
 * sandbox. */
static pid_t daemon_start(void)
{
	fx.daemon = daemon_spawn(&fx.sb);
	return fx.daemon;
}

static const char *daemon_output(void)
{
	return daemon_text(&fx.sb);
}

/* The assign record whose local port is port, waiting (10 s at most) for
 * the daemon to drain it into the log.  The caller owns *records. */
static json_t *wait_assign_record(uint16_t port, json_t **records)
{
	for (int tenths = 0; tenths < 100; tenths++) {
		*records = audit_records(fx.sb.log);
		json_t *record;
		for (int i = 0; (record = audit_find(*records, "assign", i)); i++)
			if (address_port(field(record, "local")) == port)
				return record;
		json_decref(*records);
		usleep(100000);
	}
	*records = NULL;
	return NULL;
}

Test(bpf, daemon_attaches_logs_and_reattaches_a_recreated_cgroup)
{
	enum { LO = 62600, HI = 62619 };
	struct server srv;
	struct prober p;
	char relative[128], extra[256], failure[128];
	int exit_status;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	char *full = (char *)make_cgroup("daemon", relative, sizeof(relative));
	snprintf(extra, sizeof(extra), "cgroups = [ \"%s\" ];", relative);
	bpf_sandbox("served", LO, HI, extra);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	pid_t daemon = daemon_start();

	bool confined = wait_confined(&p, LO, HI, 30, daemon, &exit_status);
	cr_assert(confined, "the daemon never confined %s (daemon %s, status %d):\n%s", relative,
		  exit_status >= 0 ? "exited" : "running", exit_status, daemon_output());
	uint16_t port = prober_connect(&p, failure, sizeof(failure));
	cr_assert(in_range(port, LO, HI), "connect came from %u (%s)", port, failure);
	json_t *records;
	json_t *record = wait_assign_record(port, &records);
	cr_assert_not_null(record, "no assign record of local port %u in %s", port, fx.sb.log);
	cr_expect_str_eq(field(record, "result"), "ok");
	cr_expect_eq(json_integer_value(json_object_get(record, "pid")), p.pid);
	expect_bpf_fields(record, "served", "tcp", "bpf-static-clie", relative);
	json_decref(records);

	/* A restarted service: its cgroup is removed and made again. */
	prober_stop(&p);
	cr_assert(remove_cgroup(full), "rmdir %s: %s", full, strerror(errno));
	cr_assert_eq(mkdir(full, 0755), 0, "mkdir %s: %s", full, strerror(errno));
	prober_start(&p, full, srv.port);
	confined = wait_confined(&p, LO, HI, 30, daemon, &exit_status);
	cr_assert(confined, "the re-created %s was never confined again (daemon %s, status %d):\n%s", relative,
		  exit_status >= 0 ? "exited" : "running", exit_status, daemon_output());

	kill(daemon, SIGTERM);
	exit_status = wait_exit(daemon, 20);
	fx.daemon = exit_status >= 0 ? 0 : daemon;
	cr_expect_eq(exit_status, 0, "the daemon's status on SIGTERM: %d\n%s", exit_status, daemon_output());
	expect_unconfined(&p, LO, HI, "after the daemon stopped");
	prober_stop(&p);
	server_stop(&srv);
}

/* SIGHUP: the policy file now gives the app another range; the daemon's
 * programs follow it, with no moment unconfined, and SIGTERM still ends
 * it cleanly. */
Test(bpf, daemon_reloads_the_policy_on_sighup)
{
	enum { LO = 62640, HI = 62649, NEW_LO = 62650, NEW_HI = 62659 };
	struct server srv;
	struct prober p;
	char relative[128], failure[128];
	int exit_status;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	char *full = (char *)make_cgroup("reload", relative, sizeof(relative));
	char apps[512];
	snprintf(apps, sizeof(apps), "cgroups = [ \"%s\" ];", relative);
	bpf_sandbox("reloaded", LO, HI, apps);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	pid_t daemon = daemon_start();
	cr_assert(wait_confined(&p, LO, HI, 30, daemon, &exit_status), "never confined:\n%s", daemon_output());

	FILE *f = fopen(fx.sb.policy, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s\";\n"
		   "apps = ( { name = \"reloaded\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; } );\n",
		fx.sb.log, fx.sb.state, NEW_LO, NEW_HI, relative);
	fclose(f);
	kill(daemon, SIGHUP);
	cr_assert(wait_confined(&p, NEW_LO, NEW_HI, 30, daemon, &exit_status),
		  "the reloaded range never applied:\n%s", daemon_output());
	for (int i = 0; i < 3; i++) {
		uint16_t port = prober_connect(&p, failure, sizeof(failure));
		cr_expect(in_range(port, NEW_LO, NEW_HI), "after the reload a connect came from %u (%s)", port,
			  failure);
	}
	kill(daemon, SIGTERM);
	exit_status = wait_exit(daemon, 20);
	fx.daemon = exit_status >= 0 ? 0 : daemon;
	cr_expect_eq(exit_status, 0, "the daemon's status on SIGTERM: %d\n%s", exit_status, daemon_output());
	expect_unconfined(&p, LO, NEW_HI, "after the daemon stopped");
	prober_stop(&p);
	server_stop(&srv);
}

/* The source the kernel chose for a connect from a network namespace of
 * the app's own (a container's), learned by sockops: it is the only
 * way the walk sees that namespace's 4-tuples, since the loader's
 * addresses are its own namespace's.  A reload loads the programs again
 * and must keep it, as it keeps the ports' state: one forgotten let the
 * walk give a port whose 4-tuple a live connection held, and the kernel
 * refused that connect (EADDRNOTAVAIL). */
static const char learned_source_client[] =
	"import socket, struct, sys\n"
	"far = ('10.66.0.2', 7070)\n"
	"held = socket.create_connection(far)\n"
	"print('held', held.getsockname()[1], flush=True)\n"
	"gone = socket.create_connection(far)\n"
	"print('gone', gone.getsockname()[1], flush=True)\n"
	"gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n"
	"gone.close()\n"
	"sys.stdin.readline()\n"
	"s = socket.socket()\n"
	"try:\n"
	"    s.connect(far)\n"
	"    print('after ok', s.getsockname()[1], flush=True)\n"
	"except OSError as e:\n"
	"    print('after errno', e.errno, flush=True)\n"
	"sys.stdin.readline()\n";

static const char learned_source_server[] =
	"import socket\n"
	"l = socket.socket()\n"
	"l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
	"l.bind(('10.66.0.2', 7070))\n"
	"l.listen(16)\n"
	"print('ready', flush=True)\n"
	"kept = []\n"
	"while True:\n"
	"    kept.append(l.accept()[0])\n";

/* The next line from a child without its newline, or "" after 20 s. */
static const char *line_from(int from, char *line, size_t len)
{
	if (!read_line_within(from, line, len, 20000))
		line[0] = '\0';
	line[strcspn(line, "\n")] = '\0';
	return line;
}

/* Until the daemon has said "portfence: APP attached to" times times. */
static bool wait_announced(const char *app, unsigned times)
{
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "portfence: %s attached to", app);
	for (int tenths = 0; tenths < 300; tenths++) {
		if (count_lines_starting(daemon_output(), prefix) >= times)
			return true;
		usleep(100000);
	}
	return false;
}

Test(bpf, a_reload_keeps_the_sources_learned_in_a_containers_namespace)
{
	enum { LO = 62670, HI = 62671 };
	char relative[128], extra[256], line[128], near[32], far[32], setup[1024];
	unsigned held = 0, gone = 0, after = 0;
	int server_in, server_out, client_in, client_out;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	const char *full = make_cgroup("learned", relative, sizeof(relative));
	snprintf(extra, sizeof(extra), "algorithm = \"sequential\"; cgroups = [ \"%s\" ];", relative);
	bpf_sandbox("learnt", LO, HI, extra);
	/* The container's namespace (near) and its server's (far), joined
	 * by a veth pair; neither is the daemon's. */
	snprintf(near, sizeof(near), "pfnear%d", (int)getpid());
	snprintf(far, sizeof(far), "pffar%d", (int)getpid());
	snprintf(fx.netns[0], sizeof(fx.netns[0]), "%s", near);
	snprintf(fx.netns[1], sizeof(fx.netns[1]), "%s", far);
	snprintf(setup, sizeof(setup),
		 "ip netns add %1$s && ip netns add %2$s && "
		 "ip link add pfln%3$d type veth peer name pflf%3$d && "
		 "ip link set pfln%3$d netns %1$s && ip link set pflf%3$d netns %2$s && "
		 "ip -n %1$s addr add 10.66.0.1/24 dev pfln%3$d && ip -n %1$s link set pfln%3$d up && "
		 "ip -n %2$s addr add 10.66.0.2/24 dev pflf%3$d && ip -n %2$s link set pflf%3$d up",
		 near, far, (int)getpid() % 100000);
	cr_assert_eq(system(setup), 0, "cannot make the namespaces: %s", setup);

	char *server_argv[] = {"ip", "netns", "exec", far, "python3", "-c", (char *)learned_source_server, NULL};
	spawn_piped(NULL, server_argv, &server_in, &server_out);
	cr_assert_str_eq(line_from(server_out, line, sizeof(line)), "ready");
	pid_t daemon = daemon_start();
	cr_assert(wait_announced("learnt", 1), "the daemon never attached:\n%s", daemon_output());

	char *client_argv[] = {"ip", "netns", "exec", near, "python3", "-c", (char *)learned_source_client, NULL};
	spawn_piped(full, client_argv, &client_in, &client_out);
	cr_assert_eq(sscanf(line_from(client_out, line, sizeof(line)), "held %u", &held), 1, "client: '%s'", line);
	cr_assert_eq(sscanf(line_from(client_out, line, sizeof(line)), "gone %u", &gone), 1, "client: '%s'", line);
	cr_assert(in_range((uint16_t)held, LO, HI) && in_range((uint16_t)gone, LO, HI) && held != gone,
		  "the two connects came from %u and %u", held, gone);

	kill(daemon, SIGHUP);
	cr_assert(wait_announced("learnt", 2), "the daemon never reloaded:\n%s", daemon_output());
	cr_assert_eq(write(client_in, "go\n", 3), 3);
	line_from(client_out, line, sizeof(line));
	cr_expect_eq(sscanf(line, "after ok %u", &after), 1,
		     "after the reload the connect failed ('%s'; 99 is EADDRNOTAVAIL: port %u's 4-tuple is "
		     "held from 10.66.0.1)", line, held);
	cr_expect_eq(after, gone, "after the reload the connect came from %u, not the free port %u", after, gone);

	close(client_in);
	close(server_in);
	close(client_out);
	close(server_out);
}

/* ---- The daemon fails loudly and leaves nothing behind ---- */

/* The cgroup hooks the backend attaches, for BPF_PROG_QUERY. */
static const enum bpf_attach_type backend_hooks[] = {
	BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
	BPF_CGROUP_UDP6_SENDMSG,  BPF_CGROUP_INET4_BIND,    BPF_CGROUP_INET6_BIND,
	BPF_CGROUP_INET4_POST_BIND, BPF_CGROUP_INET6_POST_BIND, BPF_CGROUP_INET_SOCK_RELEASE,
	BPF_CGROUP_SOCK_OPS,
};
enum { HOOKS = sizeof(backend_hooks) / sizeof(backend_hooks[0]) };

/* Whether program id is one of the backend's (its name "pfb_...", or
 * "pfd_..." for the daemon's dispatcher), its facts in *info. */
static bool backend_program(__u32 id, struct bpf_prog_info *info)
{
	return pf_bpf_prog_info(id, info) == 0 && pf_bpf_prog_is_portfence(info->name);
}

enum { MAX_QUERIED = 64 };

/* The ids of the programs at a hook of the cgroup (full path), at most
 * MAX_QUERIED: attached to it, or with BPF_F_QUERY_EFFECTIVE in flags,
 * those that run for its sockets (attached to it or above it); how
 * many. */
static __u32 programs_at(const char *full, enum bpf_attach_type hook, __u32 flags, __u32 ids[MAX_QUERIED])
{
	int fd = open(full, O_RDONLY | O_DIRECTORY);

	cr_assert_geq(fd, 0, "open %s: %s", full, strerror(errno));
	union bpf_attr attr = {.query = {.target_fd = (__u32)fd, .attach_type = hook, .query_flags = flags,
					 .prog_ids = (__u64)(unsigned long)ids, .prog_cnt = MAX_QUERIED}};
	cr_assert_eq(syscall(SYS_bpf, BPF_PROG_QUERY, &attr, sizeof(attr)), 0, "BPF_PROG_QUERY %s: %s", full,
		     strerror(errno));
	close(fd);
	return attr.query.prog_cnt < MAX_QUERIED ? attr.query.prog_cnt : MAX_QUERIED;
}

/* An fd of the first map program prog uses whose name starts with
 * prefix (the caller closes it), its id in *id; -1 when there is none. */
static int program_map(__u32 prog, const char *prefix, __u32 *id)
{
	__u32 maps[MAX_QUERIED], count = MAX_QUERIED;

	if (pf_bpf_prog_maps(prog, maps, &count) < 0)
		return -1;
	for (__u32 m = 0; m < count && m < MAX_QUERIED; m++) {
		struct bpf_map_info info;
		int fd = pf_bpf_map_by_id(maps[m], &info);
		if (fd >= 0 && strncmp(info.name, prefix, strlen(prefix)) == 0) {
			*id = maps[m];
			return fd;
		}
		if (fd >= 0)
			close(fd);
	}
	return -1;
}

/* How many of the backend's programs run for the cgroup's sockets (full
 * path) at its hooks: attached to it or above it (the daemon's
 * dispatcher stands once, at a common ancestor of its cgroups), as
 * bpftool cgroup show --effective counts them. */
static unsigned attached_programs(const char *full)
{
	unsigned total = 0;
	__u32 ids[MAX_QUERIED];

	for (int i = 0; i < HOOKS; i++) {
		__u32 count = programs_at(full, backend_hooks[i], BPF_F_QUERY_EFFECTIVE, ids);
		for (__u32 p = 0; p < count; p++) {
			struct bpf_prog_info info;
			total += backend_program(ids[p], &info);
		}
	}
	return total;
}

/* That the cgroup's sockets run want of the backend's programs (what
 * says which: one app's, one per hook, none). */
static void expect_programs(const char *full, unsigned want, const char *what)
{
	unsigned got = attached_programs(full);
	cr_expect_eq(got, want, "%s runs %u of the backend's programs, not %s (%u)", full, got, what, want);
}

/* How many of the backend's programs are loaded on the machine (the
 * apps' own, which the daemon's dispatcher tail-calls, included); the
 * one the verifier took the most instructions to verify in *most. */
static unsigned loaded_programs(struct bpf_prog_info *most)
{
	unsigned total = 0;
	__u32 id = 0;

	memset(most, 0, sizeof(*most));
	while (pf_bpf_prog_next(&id) == 0) {
		struct bpf_prog_info info;
		if (!backend_program(id, &info))
			continue;
		total++;
		if (info.verified_insns > most->verified_insns)
			*most = info;
	}
	return total;
}

/* The app the daemon's cgroup map (pinned at /sys/fs/bpf/portfence-cgroups)
 * gives the cgroup (full path), 0 for none: the programs standing at an
 * ancestor judge its sockets only when it has one. */
static __u32 cgroup_app(const char *full)
{
	union bpf_attr attr = {.pathname = (__u64)(unsigned long)"/sys/fs/bpf/portfence-cgroups"};
	struct stat info;
	__u64 id;
	__u32 app = 0;
	int fd = (int)syscall(SYS_bpf, BPF_OBJ_GET, &attr, sizeof(attr));

	if (fd < 0 || stat(full, &info) < 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	id = (__u64)info.st_ino;
	memset(&attr, 0, sizeof(attr));
	attr.map_fd = (__u32)fd;
	attr.key = (__u64)(unsigned long)&id;
	attr.value = (__u64)(unsigned long)&app;
	if (syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr)) < 0)
		app = 0;
	close(fd);
	return app;
}

static bool cgroup_in_map(const char *full)
{
	return cgroup_app(full) != 0;
}

/* Takes app out of every program array of the dispatcher attached at
 * the cgroup (full path; "to_HOOK", one a program), as if the daemon
 * had not put its programs there: how many arrays held it. */
static unsigned unroute_app(const char *full, __u32 app)
{
	unsigned emptied = 0;
	__u32 ids[MAX_QUERIED];

	for (int i = 0; i <= HOOKS; i++) {
		/* The dispatcher stands at one more hook: sock_create. */
		enum bpf_attach_type hook = i < HOOKS ? backend_hooks[i] : BPF_CGROUP_INET_SOCK_CREATE;
		__u32 count = programs_at(full, hook, 0, ids), map_id;
		for (__u32 p = 0; p < count; p++) {
			struct bpf_prog_info info;
			int fd = pf_bpf_prog_info(ids[p], &info) == 0 && strncmp(info.name, "pfd_", 4) == 0
					 ? program_map(ids[p], "to_", &map_id)
					 : -1;
			if (fd < 0)
				continue;
			union bpf_attr attr = {.map_fd = (__u32)fd, .key = (__u64)(unsigned long)&app};
			emptied += syscall(SYS_bpf, BPF_MAP_DELETE_ELEM, &attr, sizeof(attr)) == 0;
			close(fd);
		}
	}
	return emptied;
}

/* Whether anything of app is pinned under /sys/fs/bpf/portfence/. */
static bool app_pinned(const char *app)
{
	char path[PATH_MAX];
	struct stat info;
	snprintf(path, sizeof(path), "/sys/fs/bpf/portfence/%s", app);
	return stat(path, &info) == 0;
}

/* A map of another portfence version pinned as app's connect_claims
 * (its values laid out otherwise: 4 bytes where this build's are 8), as
 * an upgrade leaves it. */
static void pin_other_versions_map(const char *app)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	union bpf_attr attr = {.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 65536};

	snprintf(dir, sizeof(dir), "/sys/fs/bpf/portfence/%s", app);
	mkdir("/sys/fs/bpf/portfence", 0700);
	cr_assert(mkdir(dir, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", dir, strerror(errno));
	int fd = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	cr_assert_geq(fd, 0, "BPF_MAP_CREATE: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/connect_claims", dir);
	unlink(path);
	memset(&attr, 0, sizeof(attr));
	attr.pathname = (__u64)(unsigned long)path;
	attr.bpf_fd = (__u32)fd;
	cr_assert_eq(syscall(SYS_bpf, BPF_OBJ_PIN, &attr, sizeof(attr)), 0, "pin %s: %s", path, strerror(errno));
	close(fd);
}

/* Maps another portfence version pinned for the app (an upgrade): the
 * kernel refused the programs over them ("Permission denied", nothing
 * more).  With no cgroup attached with them they are replaced, said in
 * one line; with one, attach refuses and says to detach it first. */
Test(bpf, attach_replaces_another_versions_maps_or_says_why_not, .timeout = 120)
{
	enum { LO = 62790, HI = 62799 };
	struct run_result r;
	char relative[128], second[128], failure[128];
	struct server srv;
	struct prober p;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("upgraded", LO, HI, NULL);
	const char *full = make_cgroup("upgraded", relative, sizeof(relative));
	make_cgroup("upgraded-2", second, sizeof(second));
	pin_other_versions_map("upgraded");
	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "upgraded", relative,
			  NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach over another version's maps: status %d\n%s%s", r.status, r.out, r.err);
	cr_expect(strstr(r.err, "another portfence version's; replaced"), "no word of the replaced maps:\n%s", r.err);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	uint16_t port = prober_connect(&p, failure, sizeof(failure));
	cr_expect(in_range(port, LO, HI), "connect came from %u (%s)", port, failure);
	prober_stop(&p);
	server_stop(&srv);

	/* Attached with them: refused, in one line that says what to do. */
	pin_other_versions_map("upgraded");
	char *again[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "upgraded", second,
			 NULL};
	run_tool(&r, again);
	cr_expect_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(nonempty_lines(r.err), 1, "one line:\n%s", r.err);
	cr_expect(strstr(r.err, "another portfence version's") && strstr(r.err, "detach"), "%s", r.err);
}

/* Another tool's program attached to a cgroup without BPF_F_ALLOW_MULTI
 * or BPF_F_ALLOW_OVERRIDE: the kernel then refuses every attachment in
 * the cgroups below it (EPERM).  It lets every connect through, and goes
 * with the cgroup. */
static void attach_exclusive_program(const char *full)
{
	struct bpf_insn allow[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	union bpf_attr load = {.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
			       .expected_attach_type = BPF_CGROUP_INET4_CONNECT,
			       .insns = (__u64)(uintptr_t)allow, .insn_cnt = 2,
			       .license = (__u64)(uintptr_t)"GPL"};
	int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof(load));
	cr_assert_geq(prog, 0, "BPF_PROG_LOAD: %s", strerror(errno));
	int cgroup = open(full, O_RDONLY | O_DIRECTORY);
	cr_assert_geq(cgroup, 0, "open %s: %s", full, strerror(errno));
	union bpf_attr attach = {.target_fd = (__u32)cgroup, .attach_bpf_fd = (__u32)prog,
				 .attach_type = BPF_CGROUP_INET4_CONNECT, .attach_flags = 0};
	cr_assert_eq(syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof(attach)), 0, "BPF_PROG_ATTACH %s: %s",
		     full, strerror(errno));
	close(cgroup);
	close(prog);
}

/* Connects until one comes from outside [lo, hi] (true) or the deadline
 * passes. */
static bool wait_unconfined(struct prober *p, int lo, int hi, int seconds)
{
	char failure[128];
	time_t deadline = time(NULL) + seconds;

	while (time(NULL) < deadline) {
		uint16_t port = prober_connect(p, failure, sizeof(failure));
		if (port && !in_range(port, lo, hi))
			return true;
		usleep(200000);
	}
	return false;
}

/* Waits up to seconds for path to be gone: true once it is. */
static bool wait_path_gone(const char *path, int seconds)
{
	struct stat info;

	for (int tenths = 0; tenths <= 10 * seconds; tenths++) {
		if (stat(path, &info) != 0)
			return true;
		usleep(100000);
	}
	return false;
}

/* The policy file rewritten with apps_text (the sandbox's log and
 * state_dir kept), then SIGHUP. */
static void reload_with(pid_t daemon, const char *apps_text)
{
	FILE *f = fopen(fx.sb.policy, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s\";\n%s\n", fx.sb.log, fx.sb.state,
		apps_text);
	fclose(f);
	kill(daemon, SIGHUP);
}

/* SIGTERM: status 0, and the app's pins and programs are gone. */
static void stop_daemon_clean(pid_t daemon, const char *app, const char *const fulls[])
{
	kill(daemon, SIGTERM);
	int exit_status = wait_exit(daemon, 20);
	fx.daemon = exit_status >= 0 ? 0 : daemon;
	cr_expect_eq(exit_status, 0, "the daemon's status on SIGTERM: %d\n%s", exit_status, daemon_output());
	cr_expect(!app_pinned(app), "/sys/fs/bpf/portfence/%s is still there after SIGTERM", app);
	for (int i = 0; fulls[i]; i++)
		cr_expect_eq(attached_programs(fulls[i]), 0, "programs still attached to %s after SIGTERM",
			     fulls[i]);
}

/* After a reload that dropped one cgroup (dropped_full, its prober, its
 * pin directory): it is released, links and pins, while the cgroup kept
 * stays confined to [lo, hi] and the daemon runs on.  Its pins go once
 * the records its programs wrote are drained, a moment after its
 * programs stop confining it. */
static void expect_dropped(pid_t daemon, struct prober *dropped, const char *dropped_full, const char *pin,
			   int dropped_lo, int dropped_hi, struct prober *kept, int lo, int hi)
{
	char failure[128];

	cr_assert(wait_unconfined(dropped, dropped_lo, dropped_hi, 30),
		  "%s stays confined after the reload dropped it:\n%s", dropped_full, daemon_output());
	cr_expect(wait_path_gone(pin, 10), "%s is still pinned 10 s after the reload dropped it", pin);
	cr_expect(!cgroup_in_map(dropped_full), "%s is still in the daemon's cgroup map", dropped_full);
	uint16_t port = prober_connect(kept, failure, sizeof(failure));
	cr_expect(in_range(port, lo, hi), "the cgroup kept came from %u (%s) after the reload", port, failure);
	cr_expect(wait_exit(daemon, 0) < 0, "the daemon exited on the reload:\n%s", daemon_output());
}

/* SIGTERM with two cgroups served: nothing left of app (the one still
 * served), then the probers and the server stop. */
static void stop_two(pid_t daemon, const char *app, const char *full_a, struct prober *a, const char *full_b,
		     struct prober *b, struct server *srv)
{
	const char *const fulls[] = {full_a, full_b, NULL};
	stop_daemon_clean(daemon, app, fulls);
	prober_stop(a);
	prober_stop(b);
	server_stop(srv);
}

/* SPEC: a cgroup matched by two apps is refused.  attach of a second
 * app where another is attached, at the cgroup, above it or below it,
 * is refused in one line naming the other, and leaves the first as it
 * was. */
Test(bpf, attach_refuses_a_cgroup_another_app_confines, .timeout = 120)
{
	char relative[128], child_relative[256];
	struct run_result r;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	make_cgroup("taken", relative, sizeof(relative));
	make_child_cgroup(relative, "sub", child_relative, sizeof(child_relative));
	sandbox_init(&fx.sb, "apps = ( { name = \"first\"; range = [ 62690, 62694 ]; },\n"
			     "  { name = \"second\"; range = [ 62695, 62699 ]; } );");
	fx.sandboxed = true;
	char *attach_first[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "first",
				child_relative, NULL};
	run_tool(&r, attach_first);
	cr_assert_eq(r.status, 0, "attach first: %d\n%s%s", r.status, r.out, r.err);
	const char *targets[] = {child_relative, relative};
	for (int i = 0; i < 2; i++) {
		char *attach_second[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "second",
					 (char *)targets[i], NULL};
		run_tool(&r, attach_second);
		cr_expect_eq(r.status, 1, "attach second to %s: %d\n%s%s", targets[i], r.status, r.out, r.err);
		cr_expect(count_lines_starting(r.err, "portfence: ") == 1 && strstr(r.err, "'first'"),
			  "attach second to %s:\n%s", targets[i], r.err);
	}
	char *detach[] = {(char *)build_path("portfence"), "detach", "-a", "first", child_relative, NULL};
	run_tool(&r, detach);
	cr_expect_eq(r.status, 0, "detach first: %d\n%s%s", r.status, r.out, r.err);
}

/* `attach` of a cgroup the daemon also confines, as the same app: the
 * attachment outlives the daemon (SPEC: until detach or reboot), so the
 * daemon's SIGTERM must not take attach's pinned links with its own. */
Test(bpf, a_daemons_stop_leaves_an_attach_of_the_same_cgroup, .timeout = 120)
{
	enum { LO = 62680, HI = 62689 };
	char relative[128], extra[256], failure[128];
	struct server srv;
	struct prober p;
	struct run_result r;
	int exit_status;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	const char *full = make_cgroup("both", relative, sizeof(relative));
	snprintf(extra, sizeof(extra), "cgroups = [ \"%s\" ];", relative);
	bpf_sandbox("both", LO, HI, extra);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	pid_t daemon = daemon_start();
	cr_assert(wait_confined(&p, LO, HI, 30, daemon, &exit_status), "the daemon never confined %s:\n%s", relative,
		  daemon_output());
	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "both", relative, NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach: %d\n%s%s", r.status, r.out, r.err);
	kill(daemon, SIGTERM);
	exit_status = wait_exit(daemon, 20);
	fx.daemon = exit_status >= 0 ? 0 : daemon;
	cr_expect_eq(exit_status, 0, "the daemon's status on SIGTERM: %d", exit_status);
	uint16_t port = prober_connect(&p, failure, sizeof(failure));
	cr_expect(in_range(port, LO, HI), "after the daemon stopped, a connect came from %u (%s)", port, failure);
	char *detach[] = {(char *)build_path("portfence"), "detach", "-a", "both", relative, NULL};
	run_tool(&r, detach);
	cr_expect_eq(r.status, 0, "detach: %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(attached_programs(full), 0, "programs still attached to %s after detach", full);
	prober_stop(&p);
	server_stop(&srv);
}

/* A daemon that cannot use the BPF backend at all (not root) and has an
 * app to confine: one line, with the reason, and exit 1; nothing else
 * (collector, log) is opened or said first. */
Test(bpf, daemon_not_root_says_why_in_one_line)
{
	struct run_result r;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("unrooted", 62670, 62679, "cgroups = [ \"pf-test-nobody/*\" ];");
	chmod(fx.sb.policy, 0644);
	char *argv[] = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-u", "PORTFENCE_COLLECTOR",
			(char *)build_path_for_others("portfence"), "daemon", "-c", fx.sb.policy, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_expect_eq(r.status, 1, "status %d:\n%s", r.status, r.err);
	cr_expect_eq(count_lines_starting(r.err, ""), 1, "more than one line:\n%s", r.err);
	cr_expect(strstr(r.err, "unrooted") && strstr(r.err, "needs root"), "%s", r.err);
}

/* A listed cgroup that exists but takes no attachment (another tool's
 * exclusive program above it): the daemon cannot confine the app, so it
 * says so in one line and exits non-zero, leaving nothing attached or
 * pinned; it never runs on confining nothing. */
Test(bpf, daemon_exits_with_one_line_when_a_cgroup_cannot_be_attached)
{
	char parent_relative[128], relative[256], extra[512];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	const char *parent = make_cgroup("exclusive", parent_relative, sizeof(parent_relative));
	const char *child = make_child_cgroup(parent_relative, "child", relative, sizeof(relative));
	attach_exclusive_program(parent);
	snprintf(extra, sizeof(extra), "cgroups = [ \"%s\" ];", relative);
	bpf_sandbox("refused", 62660, 62669, extra);

	pid_t daemon = daemon_start();
	int exit_status = wait_exit(daemon, 30);
	fx.daemon = exit_status >= 0 ? 0 : daemon;
	cr_assert(exit_status > 0, "the daemon %s (status %d):\n%s",
		  exit_status < 0 ? "still runs confining nothing" : "exited 0", exit_status, daemon_output());
	cr_expect_eq(nonempty_lines(daemon_output()), 1, "one line:\n%s", daemon_output());
	cr_expect(strstr(daemon_output(), "refused") && strstr(daemon_output(), relative),
		  "the line should name the app and the cgroup: %s", daemon_output());
	cr_expect(!app_pinned("refused"), "a failed start left /sys/fs/bpf/portfence/refused");
	cr_expect_eq(attached_programs(child), 0, "a failed start left programs attached to %s", child);
}

/* A daemon whose policy does not load ends after it took its lock on
 * the pin root (made it when missing): the root goes with it, when
 * empty, as it does when the daemon stops.  In a private mount
 * namespace with a bpffs of its own, empty at the start. */
Test(bpf, a_daemon_with_an_invalid_policy_leaves_no_pin_root, .timeout = 60)
{
	struct run_result r;
	char cmd[2048];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("invalid", 62650, 62659, "cgroups = [ \"pf-test-invalid\" ];\n  range = \"not a range\";");
	snprintf(cmd, sizeof(cmd),
		 "mount -t bpf bpf /sys/fs/bpf || exit 2; test -e /sys/fs/bpf/portfence && exit 3; "
		 "timeout 30 '%s' daemon -c '%s'; echo \"status $?\"; "
		 "if test -e /sys/fs/bpf/portfence; then echo left; fi",
		 build_path("portfence"), fx.sb.policy);
	char *argv[] = {"unshare", "-m", "--propagation", "private", "sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "the namespace's setup failed (%d):\n%s", r.status, r.err);
	cr_expect(strstr(r.out, "status 1\n"), "the daemon did not exit 1:\n%s%s", r.out, r.err);
	cr_expect(strstr(r.err, "policy.conf"), "the policy's error is not said:\n%s", r.err);
	cr_expect(!strstr(r.out, "left"), "a failed start left /sys/fs/bpf/portfence behind:\n%s", r.err);
}

/* SIGHUP with a policy that no longer lists one of the app's cgroups:
 * that cgroup is released at once (links and pins), the other stays
 * confined, and SIGTERM then leaves nothing. */
Test(bpf, daemon_reload_that_drops_a_cgroup_detaches_it)
{
	enum { LO = 62670, HI = 62679 };
	struct server srv;
	struct prober kept, dropped;
	char kept_rel[128], dropped_rel[128], apps[1024], pin[PATH_MAX];
	struct stat info;
	int exit_status;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	const char *kept_full = make_cgroup("kept", kept_rel, sizeof(kept_rel));
	const char *dropped_full = make_cgroup("dropped", dropped_rel, sizeof(dropped_rel));
	snprintf(apps, sizeof(apps), "cgroups = [ \"%s\", \"%s\" ];", kept_rel, dropped_rel);
	bpf_sandbox("narrowed", LO, HI, apps);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&kept, kept_full, srv.port);
	prober_start(&dropped, dropped_full, srv.port);
	pid_t daemon = daemon_start();
	cr_assert(wait_confined(&kept, LO, HI, 30, daemon, &exit_status), "never confined:\n%s", daemon_output());
	cr_assert(wait_confined(&dropped, LO, HI, 30, daemon, &exit_status), "never confined:\n%s",
		  daemon_output());
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/portfence/narrowed/%s", dropped_rel);
	cr_assert_eq(stat(pin, &info), 0, "no pins at %s while attached", pin);

	snprintf(apps, sizeof(apps), "apps = ( { name = \"narrowed\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; } );",
		 LO, HI, kept_rel);
	reload_with(daemon, apps);
	expect_dropped(daemon, &dropped, dropped_full, pin, LO, HI, &kept, LO, HI);
	stop_two(daemon, "narrowed", kept_full, &kept, dropped_full, &dropped, &srv);
}

/* One of the two apps daemon_on_two_apps serves: its cgroup (made by the
 * test), its range, and a prober there. */
struct two_apps_app {
	const char *name, *relative, *full;
	int lo, hi;
	struct prober prober;
};

/* A daemon serving apps a and b, each in its cgroup, a greeting server,
 * and a prober in each cgroup already confined to its app's range: the
 * daemon's pid. */
static pid_t daemon_on_two_apps(struct two_apps_app *a, struct two_apps_app *b, struct server *srv)
{
	char apps[1024];
	int exit_status;

	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"%s\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; },\n"
		 "  { name = \"%s\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; } );",
		 a->name, a->lo, a->hi, a->relative, b->name, b->lo, b->hi, b->relative);
	sandbox_init(&fx.sb, apps);
	fx.sandboxed = true;
	server_start(srv, "127.0.0.1", SERVE_GREET);
	prober_start(&a->prober, a->full, srv->port);
	prober_start(&b->prober, b->full, srv->port);
	pid_t daemon = daemon_start();
	cr_assert(wait_confined(&a->prober, a->lo, a->hi, 30, daemon, &exit_status), "%s never confined:\n%s",
		  a->name, daemon_output());
	cr_assert(wait_confined(&b->prober, b->lo, b->hi, 30, daemon, &exit_status), "%s never confined:\n%s",
		  b->name, daemon_output());
	return daemon;
}

/* SIGHUP with a policy that no longer has one of the apps: its cgroup is
 * released, its pins are gone, and what its programs recorded before the
 * reload is in the log. */
Test(bpf, daemon_reload_that_drops_an_app_detaches_it_and_keeps_its_records)
{
	enum { STAY_LO = 62680, STAY_HI = 62689, GONE_LO = 62690, GONE_HI = 62699 };
	struct server srv;
	char stay_rel[128], gone_rel[128], apps[1024], failure[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct two_apps_app stays = {.name = "stays", .relative = stay_rel, .lo = STAY_LO, .hi = STAY_HI};
	struct two_apps_app gone = {.name = "gone", .relative = gone_rel, .lo = GONE_LO, .hi = GONE_HI};
	stays.full = make_cgroup("stays", stay_rel, sizeof(stay_rel));
	gone.full = make_cgroup("gone", gone_rel, sizeof(gone_rel));
	pid_t daemon = daemon_on_two_apps(&stays, &gone, &srv);
	cr_assert(app_pinned("gone"));

	/* The last connects of the app to go, right before the reload. */
	uint16_t last[5];
	for (int i = 0; i < 5; i++) {
		last[i] = prober_connect(&gone.prober, failure, sizeof(failure));
		cr_assert(in_range(last[i], GONE_LO, GONE_HI), "connect came from %u (%s)", last[i], failure);
	}
	snprintf(apps, sizeof(apps), "apps = ( { name = \"stays\"; range = [ %d, %d ]; cgroups = [ \"%s\" ]; } );",
		 STAY_LO, STAY_HI, stay_rel);
	reload_with(daemon, apps);
	expect_dropped(daemon, &gone.prober, gone.full, "/sys/fs/bpf/portfence/gone", GONE_LO, GONE_HI,
		       &stays.prober, STAY_LO, STAY_HI);

	for (int i = 0; i < 5; i++) {
		json_t *records;
		json_t *record = wait_assign_record(last[i], &records);
		cr_expect_not_null(record, "the dropped app's record of port %u was lost", last[i]);
		if (record)
			cr_expect_str_eq(field(record, "app") ? field(record, "app") : "", "gone");
		json_decref(records);
	}
	stop_two(daemon, "stays", stays.full, &stays.prober, gone.full, &gone.prober, &srv);
}

/* Each app's programs stand at the common ancestor of its own cgroups'
 * parents, not of every app's: every socket below an attachment runs
 * its programs, if only to learn it is not their app's.  Two apps in
 * two subtrees were attached where the subtrees meet (here the root),
 * and every socket there ran both apps' programs. */
Test(bpf, daemon_runs_an_apps_programs_only_below_its_own_cgroups)
{
	enum { A_LO = 62890, A_HI = 62894, B_LO = 62895, B_HI = 62899 };
	struct server srv;
	char a_top[128], b_top[128], a_rel[256], b_rel[256], bystander_rel[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct two_apps_app a = {.name = "owna", .relative = a_rel, .lo = A_LO, .hi = A_HI};
	struct two_apps_app b = {.name = "ownb", .relative = b_rel, .lo = B_LO, .hi = B_HI};
	make_cgroup("own-a", a_top, sizeof(a_top));
	make_cgroup("own-b", b_top, sizeof(b_top));
	const char *a_full = a.full = make_child_cgroup(a_top, "app", a_rel, sizeof(a_rel));
	const char *b_full = b.full = make_child_cgroup(b_top, "app", b_rel, sizeof(b_rel));
	const char *bystander = make_cgroup("own-none", bystander_rel, sizeof(bystander_rel));
	pid_t daemon = daemon_on_two_apps(&a, &b, &srv);
	expect_programs(a_full, HOOKS, "its app's");
	expect_programs(b_full, HOOKS, "its app's");
	expect_programs(bystander, 0, "none, as no app's");
	stop_two(daemon, "owna", a_full, &a.prober, b_full, &b.prober, &srv);
}

/* Two apps whose cgroups share a parent (two services in system.slice):
 * each socket below it runs one program per hook, the dispatcher's,
 * which tail-calls its app's; it ran both apps' programs, and a policy
 * of ten services made every connect there run ten sets.  A socket of
 * no app there runs the dispatcher only, and is left unconfined. */
Test(bpf, daemon_runs_one_program_per_hook_for_apps_under_one_parent)
{
	enum { A_LO = 62870, A_HI = 62874, B_LO = 62875, B_HI = 62879 };
	struct server srv;
	struct prober bystander_prober;
	char top[128], a_rel[256], b_rel[256], bystander_rel[256], failure[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct two_apps_app a = {.name = "sharea", .relative = a_rel, .lo = A_LO, .hi = A_HI};
	struct two_apps_app b = {.name = "shareb", .relative = b_rel, .lo = B_LO, .hi = B_HI};
	make_cgroup("slice", top, sizeof(top));
	a.full = make_child_cgroup(top, "a.service", a_rel, sizeof(a_rel));
	b.full = make_child_cgroup(top, "b.service", b_rel, sizeof(b_rel));
	const char *bystander = make_child_cgroup(top, "none.service", bystander_rel, sizeof(bystander_rel));
	pid_t daemon = daemon_on_two_apps(&a, &b, &srv);
	const char *const fulls[] = {a.full, b.full, bystander};
	for (int i = 0; i < 3; i++)
		expect_programs(fulls[i], HOOKS, "one per hook");
	prober_start(&bystander_prober, bystander, srv.port);
	for (int i = 0; i < 3; i++) {
		uint16_t port = prober_connect(&bystander_prober, failure, sizeof(failure));
		cr_expect(port && !in_range(port, A_LO, B_HI), "the bystander's connect came from %u (%s)", port, failure);
		cr_expect(in_range(prober_connect(&a.prober, failure, sizeof(failure)), A_LO, A_HI), "%s", failure);
		cr_expect(in_range(prober_connect(&b.prober, failure, sizeof(failure)), B_LO, B_HI), "%s", failure);
	}
	prober_stop(&bystander_prober);
	stop_two(daemon, "sharea", a.full, &a.prober, b.full, &b.prober, &srv);
}

/* A dispatcher's tail call that finds no program for the socket's app
 * (an app id the cgroup map gives, whose programs the daemon has not put
 * in the dispatcher's arrays) falls through: the socket goes on as one
 * of no app, its connect from the kernel's ports and unrecorded, while
 * the other app behind the same dispatcher stays confined. */
Test(bpf, dispatcher_lets_a_socket_of_an_unrouted_app_through_as_no_apps)
{
	enum { A_LO = 62840, A_HI = 62844, B_LO = 62845, B_HI = 62849, HOOKS_ROUTED = HOOKS + 1 };
	struct server srv;
	char top[128], a_rel[256], b_rel[256], failure[128];
	uint16_t unrouted[3] = {0};

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct two_apps_app a = {.name = "routed", .relative = a_rel, .lo = A_LO, .hi = A_HI};
	struct two_apps_app b = {.name = "unrouted", .relative = b_rel, .lo = B_LO, .hi = B_HI};
	const char *top_full = make_cgroup("routes", top, sizeof(top));
	a.full = make_child_cgroup(top, "a.service", a_rel, sizeof(a_rel));
	b.full = make_child_cgroup(top, "b.service", b_rel, sizeof(b_rel));
	pid_t daemon = daemon_on_two_apps(&a, &b, &srv);
	__u32 b_id = cgroup_app(b.full);
	cr_assert_neq(b_id, 0, "%s has no app in the daemon's cgroup map", b.full);
	cr_assert_eq(unroute_app(top_full, b_id), HOOKS_ROUTED,
		     "the dispatcher at %s did not route app %u at each of its %d hooks", top_full, b_id, HOOKS_ROUTED);

	for (int i = 0; i < 3; i++) {
		unrouted[i] = prober_connect(&b.prober, failure, sizeof(failure));
		cr_expect(unrouted[i] && !in_range(unrouted[i], A_LO, B_HI),
			  "the unrouted app's connect came from %u (%s)", unrouted[i], failure);
		uint16_t routed = prober_connect(&a.prober, failure, sizeof(failure));
		cr_expect(in_range(routed, A_LO, A_HI), "the routed app's connect came from %u (%s)", routed, failure);
		/* The routed app's record, written after the other's
		 * connect, says the log has caught up with it. */
		json_t *records, *record = wait_assign_record(routed, &records);
		cr_expect_not_null(record, "no record of the routed app's port %u", routed);
		for (int r = 0; records && (record = audit_find(records, "assign", r)); r++)
			cr_expect_neq(address_port(field(record, "local")), unrouted[i],
				      "a socket of no app was recorded: port %u", unrouted[i]);
		json_decref(records);
	}
	stop_two(daemon, "routed", a.full, &a.prober, b.full, &b.prober, &srv);
}

/* One app's ancestor above another's (its globs' fixed parent is the
 * slice, the other's a directory in it): one dispatcher stands at the
 * higher one, and a socket below both runs one program per hook, not
 * both apps' programs stacked. */
Test(bpf, daemon_puts_one_dispatcher_above_an_ancestor_under_another)
{
	enum { A_LO = 62860, A_HI = 62864, B_LO = 62865, B_HI = 62869 };
	struct server srv;
	char top[128], a_rel[256], sub_rel[256], b_rel[320], b_glob[320];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	struct two_apps_app a = {.name = "upper", .relative = a_rel, .lo = A_LO, .hi = A_HI};
	struct two_apps_app b = {.name = "lower", .relative = b_glob, .lo = B_LO, .hi = B_HI};
	make_cgroup("nest", top, sizeof(top));
	a.full = make_child_cgroup(top, "a", a_rel, sizeof(a_rel));
	make_child_cgroup(top, "sub", sub_rel, sizeof(sub_rel));
	b.full = make_child_cgroup(sub_rel, "b-1", b_rel, sizeof(b_rel));
	snprintf(b_glob, sizeof(b_glob), "%s/b-*", sub_rel);
	pid_t daemon = daemon_on_two_apps(&a, &b, &srv);
	expect_programs(b.full, HOOKS, "one per hook");
	cr_expect(strstr(daemon_output(), "stand once at cgroup ") && strstr(daemon_output(), "upper, lower") &&
			  strstr(daemon_output(), top),
		  "one line should say both apps stand at %s:\n%s", top, daemon_output());
	stop_two(daemon, "upper", a.full, &a.prober, b.full, &b.prober, &srv);
}

/* A daemon serving app alone, in a new cgroup named name, and a prober
 * there already confined to [lo, hi]: the daemon's pid; the cgroup's
 * full path in *full. */
static pid_t daemon_on_one_cgroup(const char *name, const char *app, int lo, int hi, struct server *srv,
				  struct prober *p, const char **full)
{
	char relative[128], extra[256];
	int exit_status;

	*full = make_cgroup(name, relative, sizeof(relative));
	snprintf(extra, sizeof(extra), "cgroups = [ \"%s\" ];", relative);
	bpf_sandbox(app, lo, hi, extra);
	server_start(srv, "127.0.0.1", SERVE_GREET);
	prober_start(p, *full, srv->port);
	pid_t daemon = daemon_start();
	cr_assert(wait_confined(p, lo, hi, 30, daemon, &exit_status), "never confined (status %d):\n%s",
		  exit_status, daemon_output());
	return daemon;
}

/* The verifier gives up on a program at a million instructions (E2BIG):
 * the programs then do not load at all.  connect6 stood at 924,586 once,
 * and one more branch in the walk was too many; a quarter of the limit
 * stays free, so that a change is seen to near it long before it fails. */
Test(bpf, every_program_verifies_with_a_quarter_of_the_limit_to_spare)
{
	enum { LO = 62880, HI = 62889, SPARE_BELOW = 750000 };
	struct server srv;
	struct prober p;
	struct bpf_prog_info most;
	const char *full;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	pid_t daemon = daemon_on_one_cgroup("verified", "verified", LO, HI, &srv, &p, &full);
	cr_assert_gt(loaded_programs(&most), 0);
	cr_expect_lt(most.verified_insns, SPARE_BELOW,
		     "%s took the verifier %u instructions of its 1,000,000 (more than %d)", most.name,
		     most.verified_insns, SPARE_BELOW);
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "verified", fulls);
	prober_stop(&p);
	server_stop(&srv);
}

/* The map named name that the app's connect4 program judging the
 * cgroup's sockets (full path; attached there or above) uses: its fd
 * (the caller closes it) and its id in *id, or -1. */
static int connect4_map(const char *full, const char *name, __u32 *id)
{
	__u32 progs[MAX_QUERIED];
	__u32 count = programs_at(full, BPF_CGROUP_INET4_CONNECT, BPF_F_QUERY_EFFECTIVE, progs);

	for (__u32 p = 0; p < count; p++) {
		struct bpf_prog_info info;
		int fd = pf_bpf_prog_info(progs[p], &info) == 0 && strcmp(info.name, "pfb_connect4") == 0
				 ? program_map(progs[p], name, id)
				 : -1;
		if (fd >= 0)
			return fd;
	}
	return -1;
}

/* How many slots of an array map of __u64 (entries of them) are not 0. */
static unsigned nonzero_slots(int fd, __u32 entries)
{
	unsigned nonzero = 0;

	for (__u32 key = 0; key < entries; key++) {
		__u64 value = 0;
		union bpf_attr attr = {.map_fd = (__u32)fd, .key = (__u64)(unsigned long)&key,
				       .value = (__u64)(unsigned long)&value};
		nonzero += syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &attr, sizeof(attr)) == 0 && value != 0;
	}
	return nonzero;
}

/* A walk that found no port of the range free toward a destination
 * leaves a hint (range_full, bpf/walk.bpf.h), so that the next ones take
 * the first TIME_WAIT rather than walk the whole range again.  The map
 * is pinned with the app's others, so a reload keeps it: the reloaded
 * programs use the same map, hint and all.  Unpinned, each reload gave
 * the new programs an empty one. */
Test(bpf, a_reload_keeps_the_hint_that_a_range_is_full)
{
	enum { LO = 62830, HI = 62834, PORTS = HI - LO + 1, SLOTS = 1024 };
	struct server srv, drain;
	struct prober p;
	const char *full;
	char failure[128], drain_dest[64];
	__u32 before = 0, after = 0;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	pid_t daemon = daemon_on_one_cgroup("fullhint", "fullhint", LO, HI, &srv, &p, &full);
	int hint = connect4_map(full, "range_full", &before);
	cr_assert_geq(hint, 0, "no range_full map behind %s's connect4 program", full);
	/* The prober closes first, and the server reads to the end and
	 * closes: the prober's ports fill with TIME_WAIT. */
	server_start(&drain, "127.0.0.1", SERVE_DRAIN);
	snprintf(drain_dest, sizeof(drain_dest), "127.0.0.1 %u", drain.port);
	for (int i = 0; i < 4 * PORTS && nonzero_slots(hint, SLOTS) == 0; i++) {
		uint16_t port = prober_connect_to(&p, drain_dest, failure, sizeof(failure));
		cr_expect(in_range(port, LO, HI), "connect %d came from %u (%s)", i, port, failure);
		usleep(20000);	/* the server's FIN, so that no port is left in FIN_WAIT2 */
	}
	cr_assert_eq(nonzero_slots(hint, SLOTS), 1, "%d connects through %d ports left no hint, or more than one",
		     4 * PORTS, PORTS);
	close(hint);

	kill(daemon, SIGHUP);
	cr_assert(wait_announced("fullhint", 2), "the daemon never reloaded:\n%s", daemon_output());
	hint = connect4_map(full, "range_full", &after);
	cr_assert_geq(hint, 0, "no range_full map behind %s's reloaded connect4 program", full);
	cr_expect_eq(after, before, "the reloaded programs use range_full map %u, not %u, which held the hint", after,
		     before);
	cr_expect_eq(nonzero_slots(hint, SLOTS), 1, "the reload lost the hint");
	close(hint);
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "fullhint", fulls);
	prober_stop(&p);
	server_stop(&srv);
	server_stop(&drain);
}

/* SIGTERM: no link of the daemon's stays attached, no pin stays. */
Test(bpf, daemon_leaves_no_pins_and_no_attachments_after_sigterm)
{
	enum { LO = 62730, HI = 62739 };
	struct server srv;
	struct prober p;
	const char *full;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	pid_t daemon = daemon_on_one_cgroup("term", "terminated", LO, HI, &srv, &p, &full);
	cr_assert_gt(attached_programs(full), 0);
	cr_assert(cgroup_in_map(full), "%s is not in the daemon's cgroup map", full);
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "terminated", fulls);
	expect_unconfined(&p, LO, HI, "after SIGTERM");
	prober_stop(&p);
	server_stop(&srv);
}

/* Records of an attached cgroup wait in the app's pinned ring until a
 * daemon writes them.  detach of its last cgroup unpinned the ring with
 * them in it, and they were lost without a word; it keeps them now, says
 * so, and the next daemon writes them. */
Test(bpf, detach_keeps_records_not_yet_written_for_the_next_daemon, .timeout = 120)
{
	enum { LO = 62770, HI = 62779, CONNECTS = 3 };
	struct server srv;
	struct prober p;
	struct run_result r;
	char relative[128], failure[128];
	uint16_t ports[CONNECTS];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("waiting", LO, HI, NULL);
	const char *full = make_cgroup("waiting", relative, sizeof(relative));
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "waiting", relative,
			  NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach: status %d\n%s%s", r.status, r.out, r.err);
	for (int i = 0; i < CONNECTS; i++) {
		ports[i] = prober_connect(&p, failure, sizeof(failure));
		cr_assert(in_range(ports[i], LO, HI), "connect %d came from %u (%s)", i, ports[i], failure);
	}
	char *detach[] = {(char *)build_path("portfence"), "detach", "-a", "waiting", relative, NULL};
	run_tool(&r, detach);
	cr_assert_eq(r.status, 0, "detach: status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(nonempty_lines(r.out) + nonempty_lines(r.err), 1, "one line:\n%s%s", r.out, r.err);
	cr_expect(strstr(r.out, "records") && strstr(r.out, "daemon"),
		  "detach does not say that the records wait for the daemon:\n%s", r.out);
	cr_expect(app_pinned("waiting"), "the app's ring is no longer pinned after detach");
	expect_unconfined(&p, LO, HI, "after detach");

	pid_t daemon = daemon_start();
	for (int i = 0; i < CONNECTS; i++) {
		json_t *records;
		json_t *record = wait_assign_record(ports[i], &records);
		cr_expect_not_null(record, "no assign record of port %u, made before the detach:\n%s", ports[i],
				   daemon_output());
		json_decref(records);
	}
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "waiting", fulls);
	prober_stop(&p);
	server_stop(&srv);
}

/* A second daemon is refused in one line, and the first confines on.
 * It ran beside the first: its own programs at the same cgroups, the
 * shim's collector refused, and on SIGTERM it unlinked the cgroup map
 * the first had pinned. */
Test(bpf, a_second_daemon_is_refused_and_the_first_confines_on, .timeout = 120)
{
	enum { LO = 62750, HI = 62759 };
	struct server srv;
	struct prober p;
	const char *full;
	char out[PATH_MAX], failure[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	pid_t daemon = daemon_on_one_cgroup("twice", "twice", LO, HI, &srv, &p, &full);
	unsigned programs = attached_programs(full);
	pid_t second = daemon_spawn_to(&fx.sb, "second.out");
	int second_status = wait_exit(second, 30);
	if (second_status < 0) {
		kill(second, SIGTERM);
		wait_exit(second, 20);
	}
	snprintf(out, sizeof(out), "%s/second.out", fx.sb.dir);
	char said[4096] = "";
	read_all(out, said, sizeof(said));
	cr_expect_eq(second_status, 1, "the second daemon's status: %d (-1: it ran on)\n%s", second_status, said);
	cr_expect_eq(nonempty_lines(said), 1, "one line:\n%s", said);
	cr_expect(strstr(said, "daemon"), "the line does not say a daemon runs:\n%s", said);

	cr_expect(wait_exit(daemon, 0) < 0, "the first daemon exited:\n%s", daemon_output());
	cr_expect_eq(attached_programs(full), programs, "programs at %s: %u, before the second daemon %u", full,
		     attached_programs(full), programs);
	cr_expect(cgroup_in_map(full), "%s left the first daemon's cgroup map", full);
	for (int i = 0; i < 3; i++) {
		uint16_t port = prober_connect(&p, failure, sizeof(failure));
		cr_expect(in_range(port, LO, HI), "connect %d came from %u (%s)", i, port, failure);
	}
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "twice", fulls);
	prober_stop(&p);
	server_stop(&srv);
}

/* The cgroups `status --json` lists as attached for app. */
static size_t status_cgroup_count(const char *app)
{
	struct run_result r;
	json_error_t error;
	char *argv[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, "--json", NULL};

	run_tool(&r, argv);
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "status --json is not JSON (%s):\n%s%s", error.text, r.out, r.err);
	size_t count = json_array_size(json_object_get(app_entry(root, app), "cgroups"));
	json_decref(root);
	return count;
}

/* kill -9 of the daemon takes its programs with it (it held the links):
 * status and explain then find no cgroup attached for the app (they
 * read the daemon's pin directories, left behind, as attachments), and
 * a new daemon starts and confines again. */
Test(bpf, after_kill_9_of_the_daemon_status_and_explain_find_nothing_attached, .timeout = 120)
{
	enum { LO = 62760, HI = 62769 };
	struct server srv;
	struct prober p;
	const char *full;
	int exit_status;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	pid_t daemon = daemon_on_one_cgroup("killed", "killed", LO, HI, &srv, &p, &full);
	cr_assert_eq(status_cgroup_count("killed"), 1, "status does not list the daemon's cgroup");
	kill(daemon, SIGKILL);
	cr_assert_eq(wait_exit(daemon, 10), 128 + SIGKILL);
	fx.daemon = 0;
	expect_unconfined(&p, LO, HI, "after kill -9 of the daemon");
	struct run_result r;
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)p.pid);
	char *explain[] = {(char *)build_path("portfence"), "explain", "-c", fx.sb.policy, "--pid", pid, NULL};
	run_tool(&r, explain);
	cr_expect(!strstr(r.out, "is attached as app killed"), "explain reads the killed daemon's pins:\n%s%s", r.out,
		  r.err);
	cr_expect_eq(status_cgroup_count("killed"), 0, "status lists a cgroup of the killed daemon as attached");

	daemon = daemon_start();
	cr_expect(wait_confined(&p, LO, HI, 30, daemon, &exit_status), "a new daemon never confined (status %d):\n%s",
		  exit_status, daemon_output());
	const char *const fulls[] = {full, NULL};
	stop_daemon_clean(daemon, "killed", fulls);
	prober_stop(&p);
	server_stop(&srv);
}

/* ---- bench.json ---- */

/* bench.json stays JSON when the BPF measures cannot run: here the
 * kernel refuses every attachment (another tool's exclusive program on
 * the cgroup that is the root of the bench's cgroup namespace, above the
 * cgroups the bench makes).  Each measure is null, the reason beside it
 * in the file and in the table. */
Test(bpf, bench_json_stays_json_when_the_bpf_measures_cannot_run)
{
	static const char *const measures[] = {"bpf_connect", "bpf_connect_nolog", "churn_10", "churn_100",
					       "attach_ms"};
	char relative[128], out[256], script[PATH_MAX * 3], key[64];
	struct run_result r;
	json_error_t error;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	const char *full = make_cgroup("bench", relative, sizeof(relative));
	attach_exclusive_program(full);
	bpf_sandbox("unused", 62740, 62749, NULL);
	snprintf(out, sizeof(out), "%s/bench.json", fx.sb.dir);
	snprintf(script, sizeof(script),
		 "echo $$ > '%s/cgroup.procs' && exec unshare -C -m --propagation private sh -c "
		 "'umount -l \"$0\" && mount -t cgroup2 none \"$0\" && exec \"$1\" --quick --only bpf --out \"$2\"' '%s' '%s' '%s'",
		 full, cgroup_mount, build_path("portfence-bench"), out);
	char *argv[] = {"sh", "-c", script, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	json_t *root = json_load_file(out, 0, &error);
	cr_assert_not_null(root, "%s is not JSON: %s (line %d)\n%s", out, error.text, error.line, r.out);
	json_t *bpf = json_object_get(root, "bpf");
	cr_assert(json_is_object(bpf), "no \"bpf\" object:\n%s", json_dumps(root, 0));
	for (size_t i = 0; i < sizeof(measures) / sizeof(measures[0]); i++) {
		json_t *value = json_object_get(bpf, measures[i]);
		cr_expect(json_is_null(value), "\"%s\" should be null: %s", measures[i], json_dumps(bpf, 0));
		snprintf(key, sizeof(key), "%s_skipped", measures[i]);
		const char *why = json_string_value(json_object_get(bpf, key));
		cr_expect(why && strstr(why, "portfence"), "no reason \"%s\" beside it: %s", key, json_dumps(bpf, 0));
	}
	cr_expect(strstr(r.out, "skipped: portfence daemon exited: portfence: benchbpf: cannot attach"),
		  "the table should give the reason:\n%s", r.out);
	json_decref(root);
}

/* ---- doctor ---- */

/* The line of doctor's output about what (its third column), or NULL. */
static const char *doctor_line(const char *out, const char *backend, const char *what)
{
	static char line[1024];
	for (const char *at = out; at && *at; at = strchr(at, '\n') ? strchr(at, '\n') + 1 : NULL) {
		size_t len = strcspn(at, "\n");
		char name[16], level[16];
		int offset = 0;
		snprintf(line, sizeof(line), "%.*s", (int)(len < sizeof(line) ? len : sizeof(line) - 1), at);
		if (sscanf(line, "%15s %15s %n", name, level, &offset) == 2 && strcmp(name, backend) == 0 &&
		    strncmp(line + offset, what, strlen(what)) == 0)
			return line;
	}
	return NULL;
}

static void expect_doctor_says(const char *out, const char *backend, const char *level, const char *what,
			       const char *part)
{
	const char *line = doctor_line(out, backend, what);
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "%-4s %-5s ", backend, level);
	cr_expect(line && strncmp(line, prefix, strlen(prefix)) == 0 && strstr(line, part),
		  "expected \"%s%s ... %s\", got \"%s\" in:\n%s", prefix, what, part, line ? line : "(none)", out);
}

/* Here (root, cgroup v2, Linux >= 6.2, BTF) both backends can be used:
 * every fact is one line, and bpffs that is not mounted is tried without
 * mounting it for the host. */
Test(bpf, doctor_finds_both_backends_usable_here)
{
	struct run_result r;
	char script[PATH_MAX * 2];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("doctored", 62750, 62759, NULL);
	char *argv[] = {(char *)build_path("portfence"), "doctor", "-c", fx.sb.policy, NULL};
	run_tool(&r, argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	expect_doctor_says(r.out, "shim", "ok", "policy", "valid, 1 app");
	expect_doctor_says(r.out, "shim", "ok", "shim library", "libportfence.so");
	expect_doctor_says(r.out, "bpf", "ok", "root", "yes");
	expect_doctor_says(r.out, "bpf", "ok", "cgroup v2", cgroup_mount);
	expect_doctor_says(r.out, "bpf", "ok", "BTF", "/sys/kernel/btf/vmlinux");
	expect_doctor_says(r.out, "bpf", "ok", "bpffs", "/sys/fs/bpf");
	expect_doctor_says(r.out, "bpf", "ok", "BPF program load", "allowed");
	expect_doctor_says(r.out, "bpf", "note", "tracefs, debugfs", "not needed");
	cr_expect(strstr(r.out, "\nshim: usable\nbpf: usable\n"), "%s", r.out);

	snprintf(script, sizeof(script),
		 "unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs /sys/fs/bpf && \"$0\" doctor -c \"$1\"; "
		 "echo status $?; echo after $(stat -f -c %%T /sys/fs/bpf)' '%s' '%s'",
		 build_path("portfence"), fx.sb.policy);
	char *in_namespace[] = {"sh", "-c", script, NULL};
	run_tool(&r, in_namespace);
	expect_doctor_says(r.out, "bpf", "ok", "bpffs", "mountable");
	cr_expect(strstr(r.out, "status 0\n"), "%s", r.out);
	cr_expect(strstr(r.out, "after tmpfs\n"), "doctor mounted bpffs for the host:\n%s", r.out);
}

/* As a user, the BPF backend lacks root (and what follows from it); the
 * shim does not: exit 1. */
Test(bpf, doctor_as_a_user_says_what_bpf_lacks_and_exits_1)
{
	struct run_result r;
	char dir[PATH_MAX];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	if (system("command -v setpriv >/dev/null 2>&1") != 0)
		cr_skip_test("skipped: no setpriv (util-linux) to run as nobody");
	bpf_sandbox("doctored", 62750, 62759, NULL);
	const char *tool = build_path_for_others("portfence");
	snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(tool, '/') - tool), tool);
	cr_assert_eq(chmod(fx.sb.policy, 0644), 0);
	char *argv[] = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", (char *)tool, "doctor",
			"-c", fx.sb.policy, NULL};
	run_tool(&r, argv);
	cr_expect_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
	expect_doctor_says(r.out, "bpf", "lacks", "root", "CAP_BPF");
	expect_doctor_says(r.out, "bpf", "lacks", "BPF program load", "refused");
	expect_doctor_says(r.out, "shim", "ok", "shim library", dir);
	cr_expect(strstr(r.out, "\nshim: usable\nbpf: not usable here\n"), "%s", r.out);
}

/* A policy that cannot be used leaves the shim refusing every call: the
 * shim is not usable with it, and its first FILE:LINE error says why. */
Test(bpf, doctor_with_an_invalid_policy_says_why_and_exits_1)
{
	struct run_result r;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("doctored", 62759, 62750, NULL);
	char *argv[] = {(char *)build_path("portfence"), "doctor", "-c", fx.sb.policy, NULL};
	run_tool(&r, argv);
	cr_expect_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
	expect_doctor_says(r.out, "shim", "lacks", "policy", fx.sb.policy);
	cr_expect(strstr(r.out, "\nshim: not usable here\nbpf: usable\n"), "%s", r.out);
}

/* ---- udp_unbound ---- */

static void unbound_udp_send(const char *setting, struct run_result *r, struct server *srv, char *dest,
			     size_t dest_len)
{
	char extra[64], port[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	snprintf(extra, sizeof(extra), "udp_unbound = \"%s\";", setting);
	bpf_sandbox("unbound", 62700, 62719, extra);
	server_start(srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(port, sizeof(port), "%u", srv->port);
	snprintf(dest, dest_len, "127.0.0.1:%u", srv->port);
	char *argv[] = {(char *)build_path("bpf-static-client"), "udp-unbound", "127.0.0.1", port, NULL};
	run_bpf(r, "unbound", argv);
	usleep(300000);
	server_stop(srv);
}

Test(bpf, udp_unbound_deny_refuses_an_unconnected_send)
{
	struct server srv;
	struct run_result r;
	char dest[32];

	unbound_udp_send("deny", &r, &srv, dest, sizeof(dest));
	expect_refused(&r, &srv, dest, "unbound", "udp", "bpf-static-clie");
}

/* SPEC: an app's counters live in its shared state, "so successive and
 * concurrent processes of one app continue one sequence": runs under
 * either backend, one after another, take the next port each. */
Test(bpf, successive_runs_of_both_backends_continue_one_sequence)
{
	enum { LO = 62950, HI = 62969, RUNS = 5 };
	static const bool under_bpf[RUNS] = {false, true, true, false, true};
	struct server srv;
	struct run_result r;
	char port[16], client[PATH_MAX];
	long ports[RUNS];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("sequence", LO, HI, "algorithm = \"sequential\";");
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(port, sizeof(port), "%u", srv.port);
	cr_assert_not_null(realpath(build_path("table-client"), client));
	for (int i = 0; i < RUNS; i++) {
		char *argv[16];
		int n = 0;
		argv[n++] = (char *)build_path("portfence");
		argv[n++] = "run";
		if (under_bpf[i])
			argv[n++] = "--bpf";
		char *const rest[] = {"-c", fx.sb.policy, "-a", "sequence", "--", client, "tcp4", "connect", "0",
				      "127.0.0.1", port, "-", NULL};
		memcpy(argv + n, rest, sizeof(rest));
		run_program(&r, argv, NULL, NULL);
		cr_assert_eq(r.status, 0, "run %d: %s%s", i, r.out, r.err);
		cr_assert_eq(sscanf(r.out, "%ld", &ports[i]), 1, "run %d: %s", i, r.out);
	}
	server_stop(&srv);
	for (int i = 1; i < RUNS; i++)
		cr_expect_eq(ports[i] - LO, (ports[i - 1] - LO + 1) % (HI - LO + 1),
			     "run %d (%s) took %ld after %ld (%s)", i, under_bpf[i] ? "bpf" : "shim", ports[i],
			     ports[i - 1], under_bpf[i - 1] ? "bpf" : "shim");
}

/* The kernel gives an unbound UDP socket its port before the sendmsg
 * hook refuses the send: a program that then connects that socket (as
 * the refusal's advice says of a new one) must not go out from the
 * kernel's port, unrecorded.  Its connect is refused as well. */
Test(bpf, a_socket_whose_unbound_send_was_refused_never_connects_on_the_kernels_port)
{
	struct server srv;
	struct run_result r;
	char dest[32], port[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("unbound", 62700, 62719, "udp_unbound = \"deny\";");
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(port, sizeof(port), "%u", srv.port);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path("bpf-static-client"), "udp-unbound-connect", "127.0.0.1", port, NULL};
	run_bpf(&r, "unbound", argv);
	usleep(300000);
	server_stop(&srv);
	cr_expect(strstr(r.out, "error EPERM") && !strstr(r.out, "local "), "the connect went out:\n%s%s", r.out,
		  r.err);
	cr_expect_eq(atomic_load(&srv.count), 0, "the server saw %d datagrams", atomic_load(&srv.count));
	json_t *records = audit_records(fx.sb.log);
	size_t i, denies = 0;
	json_t *record;
	json_array_foreach(records, i, record) {
		cr_expect_str_eq(field(record, "event"), "deny", "record %zu", i);
		denies += strcmp(field(record, "event"), "deny") == 0;
	}
	cr_expect_eq(denies, 2, "%zu deny records, expected the send's and the connect's", denies);
	json_decref(records);
}

/* The exe of the assign records to the server, in the order written. */
static void assign_exes(uint16_t server_port, char exes[][PATH_MAX], size_t max, size_t *count)
{
	char remote[32];
	json_t *records = audit_records(fx.sb.log), *record;

	snprintf(remote, sizeof(remote), "127.0.0.1:%u", server_port);
	*count = 0;
	for (int i = 0; (record = audit_find(records, "assign", i)) && *count < max; i++)
		if (field(record, "remote") && strcmp(field(record, "remote"), remote) == 0)
			snprintf(exes[(*count)++], PATH_MAX, "%s", field(record, "exe") ? field(record, "exe") : "");
	json_decref(records);
}

/* A record names the program that made it, whatever the process ran at
 * the drain.  bash connects (/dev/tcp), then execs: at once (its record
 * named the program exec'd next, /proc/PID/exe at the drain), or after a
 * drain, into a program that connects too (its record named bash, the
 * exe cached for the pid). */
Test(bpf, a_record_names_the_program_that_made_it_across_an_exec, .timeout = 60)
{
	struct server srv;
	struct run_result r;
	char command[PATH_MAX + 128], bash[PATH_MAX], sleeper[PATH_MAX], client[PATH_MAX], exes[4][PATH_MAX];
	size_t count;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	cr_assert_not_null(realpath("/bin/bash", bash), "realpath /bin/bash: %s", strerror(errno));
	cr_assert_not_null(realpath("/bin/sleep", sleeper), "realpath /bin/sleep: %s", strerror(errno));
	cr_assert_not_null(realpath(build_path("bpf-static-client"), client));
	bpf_sandbox("execs", 62780, 62789, NULL);
	server_start(&srv, "127.0.0.1", SERVE_GREET);

	snprintf(command, sizeof(command), "exec 3<>/dev/tcp/127.0.0.1/%u && exec sleep 1", srv.port);
	char *at_once[] = {"/bin/bash", "-c", command, NULL};
	run_bpf(&r, "execs", at_once);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	assign_exes(srv.port, exes, 4, &count);
	cr_assert_eq(count, 1, "%zu assign records", count);
	cr_expect_str_eq(exes[0], bash, "the record names %s (%s ran at the drain)", exes[0], sleeper);

	snprintf(command, sizeof(command), "exec 3<>/dev/tcp/127.0.0.1/%u && sleep 0.5 && exec %s tcp 127.0.0.1 %u",
		 srv.port, client, srv.port);
	char *later[] = {"/bin/bash", "-c", command, NULL};
	run_bpf(&r, "execs", later);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	assign_exes(srv.port, exes, 4, &count);
	cr_assert_eq(count, 3, "%zu assign records", count);
	cr_expect_str_eq(exes[1], bash);
	cr_expect_str_eq(exes[2], client, "the exec'd program's record names %s", exes[2]);
}

/* The keeper of a run drains its records, finds the cgroup empty,
 * removes it and drains once more.  A program that sends and exits
 * between that drain and the check leaves its record to the last drain,
 * after the cgroup is gone: the record must still name it (fresh-ci saw
 * "cgroup": "" once).  strace holds each of the keeper's openat calls
 * (the check opens cgroup.events) for 1 s, so the send lands in that
 * window rather than by chance. */
Test(bpf, a_record_drained_after_the_runs_cgroup_is_removed_still_names_it, .timeout = 120)
{
	struct server srv;
	struct run_result r;
	char dest[32], port[16], ready[PATH_MAX], go[PATH_MAX], command[PATH_MAX * 4], keeper_script[PATH_MAX * 3];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	skip_unless_strace_can_attach();
	bpf_sandbox("unbound", 62700, 62719, "udp_unbound = \"deny\";");
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(port, sizeof(port), "%u", srv.port);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(ready, sizeof(ready), "%s/ready", fx.sb.dir);
	snprintf(go, sizeof(go), "%s/go", fx.sb.dir);
	cr_assert_eq(mkfifo(go, 0600), 0, "mkfifo %s: %s", go, strerror(errno));
	/* The program: says it runs, waits for the word, sends, exits. */
	snprintf(command, sizeof(command), "echo $$ > %s; read word < %s; exec %s udp-unbound 127.0.0.1 %s", ready,
		 go, build_path("bpf-static-client"), port);
	/* Around the run: once the program runs, strace takes the keeper
	 * (the launcher's child still called portfence), then the word. */
	snprintf(keeper_script, sizeof(keeper_script),
		 "\"$@\" & launcher=$!\n"
		 "while [ ! -s %s ]; do sleep 0.01; done\n"
		 "for child in $(cat /proc/$launcher/task/*/children); do\n"
		 "  [ \"$(cat /proc/$child/comm)\" = portfence ] && keeper=$child\n"
		 "done\n"
		 "[ -n \"$keeper\" ] || { echo 'no keeper' >&2; kill $launcher; exit 90; }\n"
		 "strace -qq -o /dev/null -e trace=openat -e inject=openat:delay_enter=1000000 -p $keeper & tracer=$!\n"
		 "sleep 0.5\n"
		 "echo go > %s\n"
		 "wait $launcher; status=$?\n"
		 "kill $tracer 2>/dev/null; wait $tracer\n"
		 "exit $status\n",
		 ready, go);
	const char *const prefix[] = {"sh", "-c", keeper_script, "sh", NULL};
	char *argv[] = {"sh", "-c", command, NULL};
	run_bpf_via(&r, prefix, build_path("portfence"), "unbound", argv);
	server_stop(&srv);
	expect_refused(&r, &srv, dest, "unbound", "udp", "bpf-static-clie");
}

Test(bpf, udp_unbound_audit_lets_the_send_out_and_records_it)
{
	struct server srv;
	struct run_result r;
	char dest[32], local[64];

	unbound_udp_send("audit", &r, &srv, dest, sizeof(dest));
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(line_value(r.out, "local", 0, local, sizeof(local)), "%s", r.out);
	uint16_t port = address_port(local);
	cr_expect_eq(atomic_load(&srv.count), 1, "the datagram must go out");
	cr_expect(server_saw(&srv, port), "the server never saw port %u", port);
	cr_expect(!in_range(port, 62700, 62719), "SPEC: never given a range port, got %u", port);
	json_t *records = audit_records(fx.sb.log);
	json_t *audit = only_record_to(records, dest, "audit");
	expect_bpf_fields(audit, "unbound", "udp", "bpf-static-clie", "portfence/unbound-");
	json_decref(records);
}

/* ---- Refusal and cleanup ---- */

/* Entries of <mount>/portfence/ whose names start with prefix. */
static int run_cgroups_named(const char *prefix)
{
	char cmd[PATH_MAX + 128];
	snprintf(cmd, sizeof(cmd), "ls '%s/portfence' 2>/dev/null | grep -c '^%s' || true", cgroup_mount, prefix);
	FILE *f = popen(cmd, "r");
	int count = 0;
	if (f) {
		if (fscanf(f, "%d", &count) != 1)
			count = 0;
		pclose(f);
	}
	return count;
}

Test(bpf, run_bpf_as_a_user_fails_with_one_line_and_leaves_no_cgroup)
{
	struct run_result r;
	const char *const as_nobody[] = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", NULL};

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	if (system("command -v setpriv >/dev/null 2>&1") != 0)
		cr_skip_test("skipped: no setpriv (util-linux) to run as nobody");
	bpf_sandbox("asuser", 62800, 62819, NULL);
	/* A checkout other users cannot enter (a clone under /root) must not
	 * make the tool unreachable: nobody runs the harness's copy. */
	const char *tool = build_path_for_others("portfence");
	cr_assert_eq(chmod(fx.sb.policy, 0644), 0);
	int before = run_cgroups_named("asuser-");
	char *argv[] = {"/bin/true", NULL};
	run_bpf_via(&r, as_nobody, tool, "asuser", argv);
	cr_expect_eq(r.status, 1, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(nonempty_lines(r.err), 1, "one line on stderr:\n%s", r.err);
	cr_expect(strstr(r.err, "root") != NULL, "the line should say root is needed: %s", r.err);
	cr_expect_eq(run_cgroups_named("asuser-"), before, "a cgroup was left behind");
}

Test(bpf, run_bpf_runs_the_command_in_its_own_cgroup_and_removes_it)
{
	struct run_result r;
	char path[PATH_MAX], full[PATH_MAX];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("cleaned", 62900, 62919, NULL);
	char *argv[] = {(char *)build_path("bpf-static-client"), "cgroup", NULL};
	run_bpf(&r, "cleaned", argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(line_value(r.out, "cgroup", 0, path, sizeof(path)), "%s", r.out);
	cr_expect(names_run_cgroup(path, "cleaned"), "the command ran in %s, not in portfence/cleaned-PID", path);
	under_mount(full, path);
	struct stat info;
	cr_expect(stat(full, &info) != 0 && errno == ENOENT, "%s is still there after the run", full);
}

/* ---- Confinement outlives the launcher ---- */

/* `portfence run --bpf -a app -- bpf-static-client loop 127.0.0.1 PORT`
 * in the background, p talking to the client as prober_start's does:
 * the launcher's pid; the run's cgroup (full path) goes to cgroup.  The
 * client and the cgroup are the teardown's to remove, whatever the
 * launcher leaves. */
static pid_t run_bpf_prober_start(struct prober *p, const char *app, uint16_t port, char *cgroup)
{
	int in[2], out[2];
	char port_text[16], line[64], err_path[256], relative[128];

	cr_assert(fx.child_count < MAX_CHILDREN && fx.stray_count < MAX_CHILDREN && fx.cgroup_count < MAX_CGROUPS);
	cr_assert(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
	snprintf(port_text, sizeof(port_text), "%u", port);
	snprintf(err_path, sizeof(err_path), "%s/run.err", fx.sb.dir);
	const char *tool = build_path("portfence"), *client = build_path("bpf-static-client");
	fflush(NULL);
	pid_t launcher = fork();
	cr_assert_geq(launcher, 0);
	if (launcher == 0) {
		int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (err < 0 || dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err, 2) < 0)
			_exit(120);
		alarm(60);
		execl(tool, tool, "run", "--bpf", "-c", fx.sb.policy, "-a", app, "--", client, "loop", "127.0.0.1",
		      port_text, (char *)NULL);
		_exit(127);
	}
	fx.children[fx.child_count++] = launcher;
	snprintf(relative, sizeof(relative), "portfence/%s-%d", app, (int)launcher);
	under_mount(cgroup, relative);
	snprintf(fx.cgroups[fx.cgroup_count++], PATH_MAX, "%s", cgroup);
	close(in[0]);
	close(out[1]);
	p->to = in[1];
	p->from = out[0];
	/* The programs' load takes seconds on a busy machine. */
	cr_assert(read_line_within(p->from, line, sizeof(line), 50000) && strncmp(line, "pid ", 4) == 0,
		  "the client did not start under run --bpf");
	p->pid = atoi(line + 4);
	fx.strays[fx.stray_count++] = p->pid;
	return launcher;
}

/* The processes with an argument equal to arg (the sandbox's policy
 * names a test's portfence processes and no other): their number, the
 * first n pids in pids. */
static int processes_with_arg(const char *arg, pid_t *pids, int n)
{
	DIR *proc = opendir("/proc");
	struct dirent *entry;
	int count = 0;

	while (proc && (entry = readdir(proc))) {
		char path[64], args[8192];
		int pid = atoi(entry->d_name);
		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t len = fd >= 0 ? read(fd, args, sizeof(args) - 1) : -1;
		if (fd >= 0)
			close(fd);
		for (ssize_t at = 0; at < len; at += (ssize_t)strlen(args + at) + 1) {
			args[len] = '\0';
			if (strcmp(args + at, arg) == 0) {
				if (count < n)
					pids[count] = pid;
				count++;
				break;
			}
		}
	}
	if (proc)
		closedir(proc);
	return count;
}

/* Entries anywhere under /sys/fs/bpf (the test's own bpffs) whose name
 * holds part. */
static const char *pins_part;
static int pins_found;
static int count_pin(const char *path, const struct stat *info, int type, struct FTW *where)
{
	(void)info, (void)type;
	pins_found += strstr(path + where->base, pins_part) != NULL;
	return 0;
}

static int pins_named(const char *part)
{
	pins_part = part;
	pins_found = 0;
	nftw("/sys/fs/bpf", count_pin, 16, FTW_PHYS);
	return pins_found;
}

static bool cgroup_exists(const char *full)
{
	struct stat info;
	return stat(full, &info) == 0;
}

static bool cgroup_populated(const char *full)
{
	char path[PATH_MAX + 32], text[256];
	snprintf(path, sizeof(path), "%s/cgroup.events", full);
	read_all(path, text, sizeof(text));
	return strstr(text, "populated 1") != NULL;
}

/* Whether the log holds, within seconds, an assign record from pid for
 * each of ports and a deny record of the call to denied. */
static bool wait_run_records(int pid, const uint16_t *ports, int count, const char *denied, int seconds)
{
	for (int tenths = 0; tenths <= seconds * 10; tenths++) {
		json_t *records = audit_records(fx.sb.log), *record;
		int found = 0, deny_count;
		for (int i = 0; i < count; i++)
			for (int nth = 0; (record = audit_find(records, "assign", nth)); nth++)
				if (address_port(field(record, "local")) == ports[i] &&
				    json_integer_value(json_object_get(record, "pid")) == pid) {
					found++;
					break;
				}
		record = record_to(records, denied, &deny_count);
		bool all = found == count && deny_count == 1 && strcmp(field(record, "event"), "deny") == 0;
		json_decref(records);
		if (all)
			return true;
		usleep(100000);
	}
	return false;
}

/* SPEC: confinement by run --bpf outlives the launcher (kill -9) while
 * the run's processes live; once they are gone nothing stays attached,
 * pinned or created. */
Test(bpf, run_bpf_confinement_outlives_a_killed_launcher)
{
	enum { LO = 63000, HI = 63019, AFTER = 3 };
	struct server srv, denied;
	struct prober p;
	char extra[128], failure[128], dest[32], remote[32], cgroup[PATH_MAX];
	uint16_t ports[AFTER];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	server_start(&denied, "127.0.0.1", SERVE_GREET);
	snprintf(extra, sizeof(extra), "deny = [ \"127.0.0.1:%u\" ];", denied.port);
	bpf_sandbox("outlive", LO, HI, extra);
	pid_t launcher = run_bpf_prober_start(&p, "outlive", srv.port, cgroup);
	uint16_t port = prober_connect(&p, failure, sizeof(failure));
	cr_assert(in_range(port, LO, HI), "before the kill the client got port %u (%s)", port, failure);
	struct run_result r;
	char *status[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, "--json", NULL};
	run_tool(&r, status);
	cr_expect(strstr(r.out, cgroup + strlen(cgroup_mount) + 1), "status does not list the run's cgroup:\n%s%s",
		  r.out, r.err);

	cr_assert_eq(kill(launcher, SIGKILL), 0);
	cr_assert_eq(wait_exit(launcher, 10), 128 + SIGKILL);
	forget_child(launcher);
	usleep(300000);
	for (int i = 0; i < AFTER; i++) {
		ports[i] = prober_connect(&p, failure, sizeof(failure));
		cr_expect(in_range(ports[i], LO, HI), "connect %d after kill -9 of the launcher came from %u (%s)", i,
			  ports[i], failure);
	}
	snprintf(dest, sizeof(dest), "127.0.0.1 %u", denied.port);
	cr_expect_eq(prober_connect_to(&p, dest, failure, sizeof(failure)), 0, "the denied destination was reached");
	cr_expect_str_eq(failure, "error EPERM\n");
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", denied.port);
	static char log[65536];
	bool recorded = wait_run_records(p.pid, ports, AFTER, remote, 10);
	read_all(fx.sb.log, log, sizeof(log));
	cr_expect(recorded, "the log lacks the records of the connects after the kill:\n%s", log);

	/* The client reads EOF and exits: the run is over. */
	close(p.to);
	close(p.from);
	bool clean = false;
	for (int tenths = 0; tenths < 100 && !clean; tenths++) {
		clean = !cgroup_exists(cgroup) && pins_named("outlive") == 0 &&
			processes_with_arg(fx.sb.policy, NULL, 0) == 0;
		if (!clean)
			usleep(100000);
	}
	cr_expect(!cgroup_exists(cgroup), "the run's cgroup %s is left behind", cgroup);
	cr_expect_eq(pins_named("outlive"), 0, "pins of the run are left under /sys/fs/bpf");
	cr_expect_eq(processes_with_arg(fx.sb.policy, NULL, 0), 0, "a portfence process of the run is left");
	server_stop(&srv);
	server_stop(&denied);
	cr_expect_eq(atomic_load(&denied.count), 0, "the denied server was reached");
}

/* Every portfence process of a run killed (launcher and whatever else it
 * started): the run's process stays confined, and once it is gone the
 * next portfence command removes what the run left. */
Test(bpf, run_bpf_left_by_every_portfence_process_is_cleaned_by_the_next_command)
{
	enum { LO = 63020, HI = 63039 };
	struct server srv;
	struct prober p;
	struct run_result r;
	char failure[128], cgroup[PATH_MAX];
	pid_t pids[8];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	bpf_sandbox("orphan", LO, HI, NULL);
	pid_t launcher = run_bpf_prober_start(&p, "orphan", srv.port, cgroup);
	uint16_t port = prober_connect(&p, failure, sizeof(failure));
	cr_assert(in_range(port, LO, HI), "before the kill the client got port %u (%s)", port, failure);

	int count = processes_with_arg(fx.sb.policy, pids, 8);
	cr_assert(count >= 1 && count <= 8, "%d portfence processes run with the policy", count);
	for (int i = 0; i < count; i++)
		kill(pids[i], SIGKILL);
	cr_assert_eq(wait_exit(launcher, 10), 128 + SIGKILL);
	forget_child(launcher);
	usleep(300000);
	port = prober_connect(&p, failure, sizeof(failure));
	cr_expect(in_range(port, LO, HI), "with no portfence process left the client got port %u (%s)", port,
		  failure);

	close(p.to);
	close(p.from);
	for (int tenths = 0; tenths < 100 && cgroup_populated(cgroup); tenths++)
		usleep(100000);
	cr_assert(!cgroup_populated(cgroup), "the client did not exit");
	char *status[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, NULL};
	run_tool(&r, status);
	cr_expect_eq(r.status, 0, "status: %d\n%s%s", r.status, r.out, r.err);
	cr_expect(!cgroup_exists(cgroup), "the run's cgroup %s is left after `portfence status`", cgroup);
	cr_expect_eq(pins_named("orphan"), 0, "pins of the run are left after `portfence status`");
	server_stop(&srv);
}

/* ---- What COMMAND inherits ---- */

/* COMMAND gets the fds its caller gave run --bpf (here an AF_INET socket
 * of the caller's), as it would without portfence, and none of the
 * launcher's own (its cgroup, BPF objects, log, pipes). */
Test(bpf, run_bpf_gives_the_command_only_the_fds_of_its_caller)
{
	struct run_result direct, confined;
	char fd_name[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("fds", 63040, 63059, NULL);
	int inherited = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(inherited, 0);
	char *ls[] = {"/bin/ls", "/proc/self/fd", NULL};
	run_tool(&direct, ls);
	run_bpf(&confined, "fds", ls);
	close(inherited);
	cr_assert_eq(direct.status, 0, "%s", direct.err);
	cr_assert_eq(confined.status, 0, "status %d\n%s%s", confined.status, confined.out, confined.err);
	snprintf(fd_name, sizeof(fd_name), "\n%d\n", inherited);
	cr_expect(strstr(direct.out, fd_name), "the caller's socket (fd %d) is not in:\n%s", inherited, direct.out);
	cr_expect_str_eq(confined.out, direct.out, "COMMAND's fds under run --bpf differ from its fds without it");
}

/* SPEC, known bypasses: a socket created outside the confined cgroup and
 * handed in by an unconfined process that cooperates is judged by its
 * creator's cgroup.  Inheritance from the caller of run --bpf is one
 * such hand-over: its connect is neither confined nor recorded. */
Test(bpf, a_socket_made_outside_the_run_and_inherited_is_not_confined_as_documented)
{
	enum { LO = 63060, HI = 63079 };
	struct server denied;
	struct run_result r;
	char extra[128], script[512], remote[32], local[32];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	server_start(&denied, "127.0.0.1", SERVE_GREET);
	snprintf(extra, sizeof(extra), "deny = [ \"127.0.0.1:%u\" ];", denied.port);
	bpf_sandbox("foreign", LO, HI, extra);
	int made_outside = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(made_outside, 0);
	snprintf(script, sizeof(script),
		 "import socket\ns = socket.socket(fileno=%d)\ns.connect(('127.0.0.1', %u))\n"
		 "print('local', s.getsockname()[1])\n",
		 made_outside, denied.port);
	char *argv[] = {"python3", "-c", script, NULL};
	run_bpf(&r, "foreign", argv);
	close(made_outside);
	server_stop(&denied);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(line_value(r.out, "local", 0, local, sizeof(local)), "%s", r.out);
	cr_expect(!in_range(atol(local), LO, HI), "port %s is in the range", local);
	cr_expect(server_saw(&denied, (uint16_t)atol(local)), "the server never saw port %s", local);
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", denied.port);
	json_t *records = audit_records(fx.sb.log);
	int count;
	record_to(records, remote, &count);
	cr_expect_eq(count, 0, "a record of the foreign socket's connect");
	json_decref(records);
}

/* ---- Every algorithm finds every free port, then the kernel's answer ---- */

/* Five connections held at once through a four-port range: the first
 * four take the four ports, whatever the algorithm's order, and the
 * fifth gets EADDRNOTAVAIL with an error record. */
static void range_fills_then_exhausts(const char *algorithm)
{
	enum { LO = 62500, HI = 62503, PORTS = HI - LO + 1 };
	struct server srv;
	struct run_result r;
	char dest[32], extra[64], each[8];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	snprintf(extra, sizeof(extra), "algorithm = \"%s\";", algorithm);
	bpf_sandbox("fill", LO, HI, extra);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(each, sizeof(each), "%d", PORTS + 1);
	char *argv[] = {(char *)build_path("goclient-static"), "hold", dest, each, NULL};
	run_bpf(&r, "fill", argv);
	server_stop(&srv);

	cr_expect_eq(r.status, 1, "the fifth connection must fail; status %d\n%s%s", r.status, r.out, r.err);
	cr_expect(strstr(r.out, "cannot assign requested address"), "not EADDRNOTAVAIL:\n%s%s", r.out, r.err);
	cr_assert_eq(count_lines_starting(r.out, "local "), PORTS, "%s", r.out);
	for (int p = LO; p <= HI; p++)
		cr_expect(server_saw(&srv, (uint16_t)p), "%s never gave port %d", algorithm, p);
	json_t *records = audit_records(fx.sb.log);
	json_t *error = audit_find(records, "error", 0);
	cr_expect(error && strcmp(field(error, "result"), "EADDRNOTAVAIL") == 0, "no EADDRNOTAVAIL record");
	json_decref(records);
}

Test(bpf, sequential_fills_the_range_then_exhausts) { range_fills_then_exhausts("sequential"); }
Test(bpf, random_fills_the_range_then_exhausts) { range_fills_then_exhausts("random"); }
Test(bpf, random_redraw_fills_the_range_then_exhausts) { range_fills_then_exhausts("random-redraw"); }
Test(bpf, hash_fills_the_range_then_exhausts) { range_fills_then_exhausts("hash"); }
Test(bpf, double_hash_fills_the_range_then_exhausts) { range_fills_then_exhausts("double-hash"); }
Test(bpf, random_increments_fills_the_range_then_exhausts)
{
	range_fills_then_exhausts("random-increments");
}

/* ---- bind(port 0) ---- */

/* A Python script under `run --bpf -a app`, given the ports of two
 * servers it starts (argv[1], argv[2]) and stops after the run. */
static void run_script_with_servers(struct run_result *r, const char *app, const char *script, struct server *a,
				    const char *addr_a, enum server_mode mode_a, struct server *b,
				    const char *addr_b, enum server_mode mode_b)
{
	char port_a[16], port_b[16];

	server_start(a, addr_a, mode_a);
	server_start(b, addr_b, mode_b);
	snprintf(port_a, sizeof(port_a), "%u", a->port);
	snprintf(port_b, sizeof(port_b), "%u", b->port);
	char *argv[] = {"python3", "-c", (char *)script, port_a, port_b, NULL};
	run_bpf(r, app, argv);
	server_stop(a);
	server_stop(b);
}

/* With three of four ports held by connections (the fourth freed by an
 * abortive close, so that sequential's next port is a held one),
 * bind(addr, 0) + listen gets the free one.  A second TCP bind(addr, 0)
 * finds none free: it shares a port with a connection (as a connect's
 * port is shared, and as the shim defers it to the connect) and connects
 * to another destination from it. */
Test(bpf, bind_port_zero_takes_a_port_no_socket_holds_then_shares_one)
{
	enum { LO = 62600, HI = 62603 };
	static const char script[] =
		"import socket, sys\n"
		"import struct\n"
		"held = []\n"
		"for i in range(4):\n"
		"    c = socket.socket(); c.connect(('127.0.0.1', int(sys.argv[1]))); held.append(c)\n"
		"last = held.pop()\n"
		"last.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); last.close()\n"
		"for c in held:\n"
		"    print('held', c.getsockname()[1])\n"
		"l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(); print('listen', l.getsockname()[1])\n"
		"s = socket.socket()\n"
		"try:\n"
		"    s.bind(('127.0.0.1', 0)); s.connect(('127.0.0.2', int(sys.argv[2]))); print('second', s.getsockname()[1])\n"
		"except OSError as e:\n"
		"    print('second-error', e.errno)\n";
	struct server srv, other;
	struct run_result r;
	char value[32];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("binder", LO, HI, "algorithm = \"sequential\";");
	run_script_with_servers(&r, "binder", script, &srv, "127.0.0.1", SERVE_STALL, &other, "127.0.0.2",
				SERVE_STALL);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(line_value(r.out, "listen", 0, value, sizeof(value)), "%s", r.out);
	long listened = atol(value);
	cr_expect(in_range(listened, LO, HI), "listen port %ld outside the range", listened);
	for (int i = 0; i < 3; i++) {
		cr_assert(line_value(r.out, "held", i, value, sizeof(value)), "%s", r.out);
		cr_expect_neq(atol(value), listened, "bind(0) was given port %ld, held by a connection", listened);
	}
	cr_assert(line_value(r.out, "second", 0, value, sizeof(value)), "the second bind + connect failed:\n%s",
		  r.out);
	long second = atol(value);
	cr_expect(in_range(second, LO, HI) && second != listened, "the second got port %ld", second);
	cr_expect(server_saw(&other, (uint16_t)second), "127.0.0.2 never saw port %ld", second);
}

/* ---- Isolation as the shim has it (issue 16 item 4) ---- */

/* A sandbox whose policy holds apps_text as its apps list. */
static struct sandbox *bpf_sandbox_apps(const char *apps_text)
{
	sandbox_init(&fx.sb, apps_text);
	fx.sandboxed = true;
	return &fx.sb;
}

/* The number of records of event whose field name is value. */
static int count_records(json_t *records, const char *event, const char *name, const char *value)
{
	json_t *record;
	size_t i;
	int count = 0;
	json_array_foreach(records, i, record) {
		const char *e = field(record, "event"), *v = field(record, name);
		count += e && strcmp(e, event) == 0 && (!value || (v && strcmp(v, value) == 0));
	}
	return count;
}

/* Binding a port of another app's range is refused with EACCES and a
 * deny record, whatever explicit_bind says (as the shim does), for TCP
 * and UDP; a port of no app's range stays the program's to bind. */
Test(bpf, bind_into_another_apps_range_is_refused_tcp_and_udp)
{
	static const char script[] =
		"import socket, sys\n"
		"for kind, t in (('tcp', socket.SOCK_STREAM), ('udp', socket.SOCK_DGRAM)):\n"
		"    for port in (61600, 63990):\n"
		"        s = socket.socket(socket.AF_INET, t)\n"
		"        try:\n"
		"            s.bind(('127.0.0.1', port)); print(kind, port, 'bound')\n"
		"            s.connect(('127.0.0.1', int(sys.argv[1])))\n"
		"        except OSError as e:\n"
		"            print(kind, port, 'errno', e.errno)\n"
		"        s.close()\n";
	struct server srv;
	struct run_result r;
	char port[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox_apps("apps = ( { name = \"mine\"; range = [ 62950, 62959 ]; },\n"
			 "         { name = \"other\"; range = [ 61600, 61609 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"python3", "-c", (char *)script, port, NULL};
	run_bpf(&r, "mine", argv);
	usleep(200000);
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect(strstr(r.out, "tcp 61600 errno 13\n"), "TCP bind into another app's range:\n%s", r.out);
	cr_expect(strstr(r.out, "udp 61600 errno 13\n"), "UDP bind into another app's range:\n%s", r.out);
	cr_expect(strstr(r.out, "tcp 63990 bound\n"), "a port of no app is the program's:\n%s", r.out);
	cr_expect(strstr(r.out, "udp 63990 bound\n"), "a port of no app is the program's:\n%s", r.out);
	cr_expect(!server_saw(&srv, 61600), "the server saw a connection from another app's port");
	json_t *records = audit_records(fx.sb.log);
	cr_expect_eq(count_records(records, "deny", "local", "127.0.0.1:61600"), 2,
		     "two deny records of 127.0.0.1:61600 expected");
	json_t *record;
	size_t i;
	json_array_foreach(records, i, record) {
		if (strcmp(field(record, "event"), "deny") != 0)
			continue;
		cr_expect_str_eq(field(record, "result"), "EACCES");
		cr_expect_str_eq(field(record, "app"), "mine");
	}
	json_decref(records);
}

/* An AF_INET6 socket connecting to ::ffff:127.0.0.1 gets a range port on
 * the mapped loopback source, TCP and UDP; the record shows the socket's
 * own (mapped) addresses, as the shim writes them. */
Test(bpf, v4_mapped_destination_connects_from_the_range_tcp_and_udp)
{
	enum { LO = 62960, HI = 62969 };
	static const char script[] =
		"import socket, sys\n"
		"for kind, t, port in (('tcp', socket.SOCK_STREAM, sys.argv[1]), ('udp', socket.SOCK_DGRAM, sys.argv[2])):\n"
		"    s = socket.socket(socket.AF_INET6, t)\n"
		"    try:\n"
		"        s.connect(('::ffff:127.0.0.1', int(port)))\n"
		"        if t == socket.SOCK_DGRAM:\n"
		"            s.send(b'x'); s.settimeout(5); s.recv(16)\n"
		"        else:\n"
		"            s.recv(3)\n"
		"        print(kind, s.getsockname()[0], s.getsockname()[1])\n"
		"    except OSError as e:\n"
		"        print(kind, 'errno', e.errno)\n";
	struct server tcp, udp;
	struct run_result r;
	char key[8], value[64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("mapped", LO, HI, NULL);
	run_script_with_servers(&r, "mapped", script, &tcp, "127.0.0.1", SERVE_GREET, &udp, "127.0.0.1",
				SERVE_UDP_ECHO);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	json_t *records = audit_records(fx.sb.log);
	for (int i = 0; i < 2; i++) {
		struct server *srv = i ? &udp : &tcp;
		snprintf(key, sizeof(key), "%s", i ? "udp" : "tcp");
		cr_assert(line_value(r.out, key, 0, value, sizeof(value)), "%s", r.out);
		cr_assert_str_eq(value, "::ffff:127.0.0.1", "%s connect failed:\n%s", key, r.out);
		char *line = strstr(r.out, i ? "udp ::ffff:127.0.0.1 " : "tcp ::ffff:127.0.0.1 ");
		long port = line ? atol(line + strlen("tcp ::ffff:127.0.0.1 ")) : 0;
		cr_expect(in_range(port, LO, HI), "%s: local port %ld outside the range", key, port);
		cr_expect(server_saw(srv, (uint16_t)port), "%s: the server never saw port %ld", key, port);
		char local[64], remote[64];
		snprintf(local, sizeof(local), "[::ffff:127.0.0.1]:%ld", port);
		snprintf(remote, sizeof(remote), "[::ffff:127.0.0.1]:%u", srv->port);
		json_t *record = only_record_to(records, remote, "assign");
		cr_expect_str_eq(field(record, "local") ? field(record, "local") : "", local);
		cr_expect_str_eq(field(record, "family") ? field(record, "family") : "", "ipv6");
		cr_expect_str_eq(field(record, "proto") ? field(record, "proto") : "", key);
		cr_expect_str_eq(field(record, "result") ? field(record, "result") : "", "ok");
	}
	json_decref(records);
}

/* bind(127.0.0.1, 0) + connect + close, the client closing first, many
 * times through a ten-port range: every port soon has a TIME_WAIT, which
 * a plain connect reuses; so must this.  Every cycle connects, every
 * record is an ok assignment of a cycle that connected, and a plain
 * connect still works afterwards.  The same under the shim. */
static const char bind_connect_cycles[] =
	"import socket, sys\n"
	"ok = fail = 0\n"
	"for i in range(int(sys.argv[2])):\n"
	"    s = socket.socket()\n"
	"    try:\n"
	"        s.bind(('127.0.0.1', 0)); s.connect(('127.0.0.1', int(sys.argv[1]))); s.recv(3)\n"
	"        print('port', s.getsockname()[1]); ok += 1\n"
	"    except OSError as e:\n"
	"        print('errno', e.errno); fail += 1\n"
	"    s.close()\n"
	"p = socket.socket()\n"
	"try:\n"
	"    p.connect(('127.0.0.1', int(sys.argv[1]))); p.recv(3); print('plain', p.getsockname()[1])\n"
	"except OSError as e:\n"
	"    print('plain-errno', e.errno)\n"
	"p.close()\n"
	"print('ok', ok, 'fail', fail)\n";

/* What holds the range's ports now, as ss sees it (every state and
 * listener, with their processes): a cycle that failed says why. */
static void sockets_on_ports(int lo, int hi, char *out, size_t len)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ss -tanpe '( sport >= :%d and sport <= :%d ) or ( dport >= :%d and dport <= :%d )' 2>&1",
		 lo, hi, lo, hi);
	FILE *f = popen(cmd, "r");
	size_t used = f ? fread(out, 1, len - 1, f) : 0;
	out[used] = '\0';
	if (f)
		pclose(f);
}

static void bind_zero_connect_cycles(bool bpf)
{
	/* Ranges of their own: each backend's TIME_WAITs are its own. */
	const int LO = bpf ? 62970 : 62980, HI = LO + 9;
	enum { CYCLES = 300 };
	struct server srv;
	struct run_result r;
	char port[16], cycles[16], value[32];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("cycler", LO, HI, NULL);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	snprintf(cycles, sizeof(cycles), "%d", CYCLES);
	char *argv[] = {"python3", "-c", (char *)bind_connect_cycles, port, cycles, NULL};
	if (bpf)
		run_bpf(&r, "cycler", argv);
	else
		run_under(&r, &fx.sb, "cycler", argv, NULL);
	static char held[8192];
	held[0] = '\0';
	if (!strstr(r.out, "ok 300 fail 0\n"))
		sockets_on_ports(LO, HI, held, sizeof(held));	/* before the server closes its ends */
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "status %d\n%.2000s%s", r.status, r.out, r.err);
	cr_expect(strstr(r.out, "ok 300 fail 0\n"), "%d cycles must all connect:\n%.3000s\nthe range's sockets:\n%s",
		  CYCLES, r.out + (strlen(r.out) > 3000 ? strlen(r.out) - 3000 : 0), held);
	cr_expect(line_value(r.out, "plain", 0, value, sizeof(value)) && in_range(atol(value), LO, HI),
		  "a plain connect after the cycles: %s", strstr(r.out, "plain") ? strstr(r.out, "plain") : "");
	for (int i = 0; line_value(r.out, "port", i, value, sizeof(value)); i++)
		cr_expect(in_range(atol(value), LO, HI), "cycle %d from port %s", i, value);
	json_t *records = audit_records(fx.sb.log);
	int assigns = count_records(records, "assign", NULL, NULL);
	int ok = count_records(records, "assign", "result", "ok");
	int connected = (int)count_lines_starting(r.out, "port ") + (int)count_lines_starting(r.out, "plain ");
	int failed = (int)count_lines_starting(r.out, "errno ") + (int)count_lines_starting(r.out, "plain-errno ");
	cr_expect_eq(ok, connected, "%d ok assignments for %d connections", ok, connected);
	cr_expect_eq(assigns, ok, "%d assign records that are not ok", assigns - ok);
	cr_expect_leq(count_records(records, "error", NULL, NULL), failed, "more error records than failures");
	json_decref(records);
}

Test(bpf, bind_address_port_zero_then_connect_reuses_time_wait_like_a_connect)
{
	bind_zero_connect_cycles(true);
}

Test(bpf, bind_address_port_zero_then_connect_under_the_shim_too)
{
	bind_zero_connect_cycles(false);
}

/* A range full of TIME_WAIT: plain connects, the client closing first
 * after the greeting, four times through a 100-port range.  Every cycle
 * connects from the range, and the walk does not visit the whole range
 * each time: once a walk has found no port free, the next ones take the
 * first port only TIME_WAIT holds (before the fix every record after the
 * first 100 showed attempts 100). */
Test(bpf, time_wait_full_range_keeps_attempts_small)
{
	enum { LO = 63400, HI = 63499, PORTS = HI - LO + 1, CYCLES = 4 * PORTS };
	static const char script[] =
		"import socket, sys\n"
		"ok = fail = 0\n"
		"for i in range(int(sys.argv[2])):\n"
		"    s = socket.socket()\n"
		"    try:\n"
		"        s.connect(('127.0.0.1', int(sys.argv[1]))); s.recv(3)\n"
		"        print('port', s.getsockname()[1]); ok += 1\n"
		"    except OSError as e:\n"
		"        print('errno', e.errno); fail += 1\n"
		"    s.close()\n"
		"print('ok', ok, 'fail', fail)\n";
	struct server srv;
	struct run_result r;
	char port[16], cycles[16], value[32], expected[64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("twfull", LO, HI, NULL);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	snprintf(cycles, sizeof(cycles), "%d", CYCLES);
	char *argv[] = {"python3", "-c", (char *)script, port, cycles, NULL};
	run_bpf(&r, "twfull", argv);
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "status %d\n%.2000s%s", r.status, r.out, r.err);
	snprintf(expected, sizeof(expected), "ok %d fail 0\n", CYCLES);
	cr_expect(strstr(r.out, expected), "%d cycles must all connect:\n%.2000s", CYCLES,
		  r.out + (strlen(r.out) > 2000 ? strlen(r.out) - 2000 : 0));
	for (int i = 0; line_value(r.out, "port", i, value, sizeof(value)); i++)
		cr_expect(in_range(atol(value), LO, HI), "cycle %d from port %s", i, value);
	json_t *records = audit_records(fx.sb.log), *record;
	size_t i;
	long assigns = 0, full_part = 0, attempts = 0, full_walks = 0, most = 0;
	json_array_foreach(records, i, record) {
		const char *event = field(record, "event");
		if (!event || strcmp(event, "assign") != 0)
			continue;
		long a = (long)json_integer_value(json_object_get(record, "attempts"));
		if (assigns++ < PORTS)
			continue;	/* the range filling up */
		full_part++;
		attempts += a;
		full_walks += a >= PORTS / 2;
		most = a > most ? a : most;
	}
	json_decref(records);
	cr_expect_eq(assigns, CYCLES, "%ld assign records for %d cycles", assigns, CYCLES);
	cr_assert_gt(full_part, 0, "no record after the range filled");
	/* A full walk now and then (to see whether ports came free) is
	 * allowed; every one is not. */
	cr_expect_leq(full_walks, 10, "%ld of %ld connects walked half the range or more (mean attempts %.1f, most %ld)",
		      full_walks, full_part, (double)attempts / full_part, most);
	cr_expect_leq(attempts, 3 * full_part, "mean attempts %.1f over %ld connects in a TIME_WAIT-full range",
		      (double)attempts / full_part, full_part);
}

/* ---- Every protocol that takes ports: confined or refused (item 5) ---- */

/* No connect hook runs for UDP-Lite: a confined app's UDP-Lite socket is
 * refused at creation (EPERM, a deny record); an app whose protocols
 * leave UDP unmanaged keeps it. */
Test(bpf, udplite_socket_is_refused_for_a_confined_app)
{
	static const char script[] =
		"import socket, sys\n"
		"try:\n"
		"    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)\n"
		"    s.connect(('127.0.0.1', int(sys.argv[1]))); s.send(b'x'); print('sent', s.getsockname()[1])\n"
		"except OSError as e:\n"
		"    print('errno', e.errno)\n"
		"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
		"u.connect(('127.0.0.1', int(sys.argv[1]))); print('udp', u.getsockname()[1])\n";
	struct run_result r;
	char value[32];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	int probe = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	if (probe < 0)
		cr_skip_test("skipped: this kernel has no UDP-Lite: %s", strerror(errno));
	close(probe);
	bpf_sandbox_apps("apps = ( { name = \"lite\"; range = [ 63120, 63129 ]; },\n"
			 "         { name = \"tcponly\"; range = [ 63130, 63139 ]; protocols = [ \"tcp\" ]; } );");
	char *argv[] = {"python3", "-c", (char *)script, "9", NULL};
	run_bpf(&r, "lite", argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect(line_value(r.out, "errno", 0, value, sizeof(value)) && atoi(value) == EPERM,
		  "UDP-Lite must be refused with EPERM:\n%s", r.out);
	cr_expect(line_value(r.out, "udp", 0, value, sizeof(value)) && in_range(atol(value), 63120, 63129),
		  "plain UDP stays confined:\n%s", r.out);
	json_t *records = audit_records(fx.sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert(deny, "no deny record of the UDP-Lite socket");
	cr_expect_str_eq(field(deny, "result"), "EPERM");
	expect_bpf_fields(deny, "lite", "udp", "python3", "portfence/lite-");
	json_decref(records);

	run_bpf(&r, "tcponly", argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect(line_value(r.out, "sent", 0, value, sizeof(value)),
		  "protocols = [\"tcp\"] leaves UDP-Lite to the program:\n%s", r.out);
}

static void require_mptcp(void)
{
	int probe = socket(AF_INET, SOCK_STREAM, 262);
	if (probe < 0)
		cr_skip_test("skipped: MPTCP is not enabled in this kernel: %s", strerror(errno));
	close(probe);
}

/* MPTCP's TCP subflow runs the TCP hooks: it connects from the range
 * with an assign record (proto tcp), and a denied destination gets
 * EPERM; bind(addr, 0) + connect too. */
Test(bpf, mptcp_is_confined_like_tcp)
{
	enum { LO = 63140, HI = 63149 };
	static const char script[] =
		"import socket, sys\n"
		"s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"s.connect(('127.0.0.1', int(sys.argv[1]))); s.recv(3); print('local', s.getsockname()[1])\n"
		"b = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"b.bind(('127.0.0.1', 0)); b.connect(('127.0.0.1', int(sys.argv[1]))); b.recv(3)\n"
		"print('bound', b.getsockname()[1])\n"
		"d = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"try:\n"
		"    d.connect(('127.0.0.2', int(sys.argv[2]))); print('denied-connected')\n"
		"except OSError as e:\n"
		"    print('denied-errno', e.errno)\n";
	struct server srv, denied;
	struct run_result r;
	char value[32], remote[64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	require_mptcp();
	bpf_sandbox("multi", LO, HI, "deny = [ \"127.0.0.2/32\" ];");
	run_script_with_servers(&r, "multi", script, &srv, "127.0.0.1", SERVE_GREET, &denied, "127.0.0.2",
				SERVE_GREET);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	for (int i = 0; i < 2; i++) {
		const char *key = i ? "bound" : "local";
		cr_assert(line_value(r.out, key, 0, value, sizeof(value)), "%s", r.out);
		cr_expect(in_range(atol(value), LO, HI), "%s: port %s outside the range", key, value);
		cr_expect(server_saw(&srv, (uint16_t)atol(value)), "%s: the server never saw port %s", key, value);
	}
	cr_expect(line_value(r.out, "denied-errno", 0, value, sizeof(value)) && atoi(value) == EPERM,
		  "a denied destination:\n%s", r.out);
	cr_expect_eq(atomic_load(&denied.count), 0, "the denied server saw a connection");
	json_t *records = audit_records(fx.sb.log);
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", srv.port);
	int count;
	json_t *assign = record_to(records, remote, &count);
	cr_expect_eq(count, 2, "%d records of the two connections", count);
	cr_assert(assign, "no record to %s", remote);
	cr_expect_str_eq(field(assign, "event"), "assign");
	expect_bpf_fields(assign, "multi", "tcp", "python3", "portfence/multi-");
	cr_expect_eq(count_records(records, "assign", "result", "ok"), 2, "two ok assignments");
	json_decref(records);
}

/* An MPTCP connection's port is the app's while the connection lives
 * (counted on the MPTCP socket, whose close runs the release hook; none
 * runs for its subflow): with three of a four-port range held by MPTCP
 * connections, bind(127.0.0.1, 0) + listen gets the fourth, whatever the
 * walk's order (without the count, 3 runs in 4 bound a held port and
 * listen failed with EADDRINUSE). */
Test(bpf, mptcp_connections_count_their_ports)
{
	enum { LO = 65420, HI = 65423 };
	static const char script[] =
		"import socket, sys\n"
		"held = []\n"
		"for i in range(3):\n"
		"    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"    c.connect(('127.0.0.1', int(sys.argv[1]))); held.append(c); print('held', c.getsockname()[1])\n"
		"l = socket.socket()\n"
		"try:\n"
		"    l.bind(('127.0.0.1', 0)); l.listen(); print('listen', l.getsockname()[1])\n"
		"except OSError as e:\n"
		"    print('listen-errno', e.errno)\n";
	struct server srv, unused;
	struct run_result r;
	char value[32];
	long held[3];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	require_mptcp();
	bpf_sandbox("mcount", LO, HI, NULL);
	run_script_with_servers(&r, "mcount", script, &srv, "127.0.0.1", SERVE_STALL, &unused, "127.0.0.1",
				SERVE_STALL);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	for (int i = 0; i < 3; i++) {
		cr_assert(line_value(r.out, "held", i, value, sizeof(value)), "%s", r.out);
		held[i] = atol(value);
		cr_expect(in_range(held[i], LO, HI), "connection %d from port %ld", i, held[i]);
	}
	cr_assert(line_value(r.out, "listen", 0, value, sizeof(value)),
		  "bind(127.0.0.1, 0) + listen must get the free port:\n%s", r.out);
	long port = atol(value);
	cr_expect(in_range(port, LO, HI) && port != held[0] && port != held[1] && port != held[2],
		  "the listener took %ld, held: %ld %ld %ld", port, held[0], held[1], held[2]);
}

/* Every port of the range held by listeners outside the app (which the
 * app's own count cannot see): each bind(addr, 0) the kernel refuses is
 * an error record, never an `assign ok`. */
Test(bpf, bind_port_zero_the_kernel_refuses_is_never_recorded_ok)
{
	enum { LO = 63150, HI = 63153 };
	static const char script[] =
		"import socket\n"
		"for i in range(2):\n"
		"    s = socket.socket()\n"
		"    try:\n"
		"        s.bind(('127.0.0.1', 0)); print('bound', s.getsockname()[1])\n"
		"    except OSError as e:\n"
		"        print('errno', e.errno)\n"
		"    s.close()\n";
	int listeners[HI - LO + 1];
	struct run_result r;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	bpf_sandbox("refused", LO, HI, NULL);
	for (int p = LO; p <= HI; p++) {
		struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p),
					   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		listeners[p - LO] = socket(AF_INET, SOCK_STREAM, 0);
		cr_assert_eq(bind(listeners[p - LO], (struct sockaddr *)&addr, sizeof(addr)), 0, "bind %d: %s", p,
			     strerror(errno));
		cr_assert_eq(listen(listeners[p - LO], 1), 0);
	}
	char *argv[] = {"python3", "-c", (char *)script, NULL};
	run_bpf(&r, "refused", argv);
	for (int p = LO; p <= HI; p++)
		close(listeners[p - LO]);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(count_lines_starting(r.out, "errno 98"), 2, "both binds must fail (EADDRINUSE):\n%s", r.out);
	json_t *records = audit_records(fx.sb.log);
	cr_expect_eq(count_records(records, "assign", NULL, NULL), 0, "a refused bind was recorded as assign");
	cr_expect_eq(count_records(records, "error", NULL, NULL), 2, "one error record per refused bind");
	json_decref(records);
}

/* ---- No silent record loss ---- */

/* A burst of this many denied connects loses no record while a drainer
 * runs (SPEC: "A burst of 50,000 records with the daemon running loses
 * none"). */
enum { BURST = 50000 };

/* What the log holds of a burst to remote: its deny records, and the
 * error records that report lost ones (how many, and the sum of their
 * "lost").  Every line must parse. */
struct burst_log {
	long denies, lost_records, lost, others;
};

static struct burst_log read_burst_log(const char *remote)
{
	struct burst_log b = {0};
	FILE *f = fopen(fx.sb.log, "r");
	char line[8192];

	while (f && fgets(line, sizeof(line), f)) {
		json_error_t error;
		json_t *record = json_loads(line, 0, &error);
		cr_assert_not_null(record, "malformed audit line: %s (%s)", line, error.text);
		const char *event = field(record, "event"), *to = field(record, "remote");
		json_t *lost = json_object_get(record, "lost");
		if (lost) {
			cr_expect(json_is_integer(lost) && json_integer_value(lost) > 0, "a bad \"lost\": %s", line);
			cr_expect_str_eq(event ? event : "", "error", "a lost record that is no error: %s", line);
			const char *reason = field(record, "reason");
			cr_expect(reason && reason[0], "a lost record without a reason: %s", line);
			b.lost_records++;
			b.lost += json_integer_value(lost);
		} else if (event && strcmp(event, "deny") == 0 && to && strcmp(to, remote) == 0) {
			b.denies++;
		} else {
			b.others++;
		}
		json_decref(record);
	}
	if (f)
		fclose(f);
	return b;
}

/* The log once it accounts for want records of the burst (written or
 * reported lost), or once it stopped growing for five seconds after it
 * began to (60 s at most). */
static struct burst_log wait_burst_log(const char *remote, long want)
{
	struct burst_log b = {0};
	long last = -1;

	for (int tenths = 0, still = 0; tenths < 600 && still < 50; tenths++) {
		b = read_burst_log(remote);
		long seen = b.denies + b.lost;
		if (seen >= want)
			break;
		still = seen && seen == last ? still + 1 : 0;
		last = seen;
		usleep(100000);
	}
	return b;
}

/* bpf-burst's "denied" line. */
static long burst_denied(const struct run_result *r)
{
	char value[32];
	cr_assert(line_value(r->out, "denied", 0, value, sizeof(value)), "status %d\n%s%s", r->status, r->out,
		  r->err);
	return atol(value);
}

/* A server the burst's app may not reach, and a policy that denies it. */
static void burst_sandbox(struct server *srv, const char *app, int lo, int hi, const char *more, char *remote,
			  size_t remote_len, char *port, size_t port_len)
{
	char extra[512];
	server_start(srv, "127.0.0.1", SERVE_GREET);
	snprintf(extra, sizeof(extra), "deny = [ \"127.0.0.1:%u\" ];\n  %s", srv->port, more ? more : "");
	bpf_sandbox(app, lo, hi, extra);
	snprintf(remote, remote_len, "127.0.0.1:%u", srv->port);
	snprintf(port, port_len, "%u", srv->port);
}

Test(bpf, a_burst_of_50000_denials_under_run_bpf_loses_no_record)
{
	struct server srv;
	struct run_result r;
	char remote[32], port[16], count[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	burst_sandbox(&srv, "burst", 63100, 63119, NULL, remote, sizeof(remote), port, sizeof(port));
	snprintf(count, sizeof(count), "%d", BURST);
	char *argv[] = {(char *)build_path("bpf-burst"), "127.0.0.1", port, count, NULL};
	run_bpf(&r, "burst", argv);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert_eq(burst_denied(&r), BURST, "%s", r.out);
	cr_expect_eq(atomic_load(&srv.count), 0, "the server saw %d connections", atomic_load(&srv.count));

	/* run --bpf drains everything before it exits. */
	struct burst_log b = read_burst_log(remote);
	cr_expect_eq(b.lost, 0, "%ld records lost (%ld lost records), %ld written", b.lost, b.lost_records,
		     b.denies);
	cr_expect_eq(b.denies, BURST, "%ld of %d deny records written", b.denies, BURST);
}

Test(bpf, a_burst_of_50000_denials_under_the_daemon_loses_no_record)
{
	struct server srv;
	struct run_result r;
	char relative[128], cgroups[256], remote[32], port[16], count[16];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	char *full = (char *)make_cgroup("burst", relative, sizeof(relative));
	snprintf(cgroups, sizeof(cgroups), "cgroups = [ \"%s\" ];", relative);
	burst_sandbox(&srv, "burstd", 63120, 63139, cgroups, remote, sizeof(remote), port, sizeof(port));
	pid_t daemon = daemon_start();

	/* Attached once a connect from the cgroup is denied. */
	char *probe[] = {(char *)build_path("bpf-burst"), "-g", full, "127.0.0.1", port, "1", NULL};
	long probes = 0;
	for (int tenths = 0; tenths < 300; tenths++) {
		run_tool(&r, probe);
		probes += burst_denied(&r);
		if (r.status == 0 || wait_exit(daemon, 0) >= 0)
			break;
		usleep(100000);
	}
	cr_assert_eq(r.status, 0, "the daemon never confined %s:\n%s", relative, daemon_output());

	snprintf(count, sizeof(count), "%d", BURST);
	char *argv[] = {(char *)build_path("bpf-burst"), "-g", full, "127.0.0.1", port, count, NULL};
	run_tool(&r, argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert_eq(burst_denied(&r), BURST, "%s", r.out);

	struct burst_log b = wait_burst_log(remote, probes + BURST);
	server_stop(&srv);
	cr_expect_eq(b.lost, 0, "%ld records lost (%ld lost records), %ld written", b.lost, b.lost_records,
		     b.denies);
	cr_expect_eq(b.denies, probes + BURST, "%ld of %ld deny records written", b.denies, probes + BURST);
}

/* The records_lost of app in `status --json`, or -1. */
static long status_records_lost(const char *app)
{
	struct run_result r;
	char *argv[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, "--json", NULL};
	run_tool(&r, argv);
	cr_assert_eq(r.status, 0, "status --json: %d\n%s%s", r.status, r.out, r.err);
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "status --json is not JSON (%s):\n%s", error.text, r.out);
	json_t *lost = json_object_get(app_entry(root, app), "records_lost");
	long value = json_is_integer(lost) ? (long)json_integer_value(lost) : -1;
	json_decref(root);
	return value;
}

/* More records than the ring holds, with nothing draining it: the loss
 * is counted in the kernel, status and Prometheus show the count, and
 * the first drain (a daemon started later) writes the records the ring
 * kept and one error record with "lost":N, N making up the rest. */
Test(bpf, records_lost_with_no_drainer_are_counted_and_reported_by_the_next_drain)
{
	/* More than the ring's 8 MiB holds (104 bytes a record, with its header). */
	enum { FLOOD = 200000 };
	struct server srv;
	struct run_result r;
	char relative[128], remote[32], port[16], count[16], line[128];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	char *full = (char *)make_cgroup("lossy", relative, sizeof(relative));
	burst_sandbox(&srv, "lossy", 63140, 63159, NULL, remote, sizeof(remote), port, sizeof(port));
	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "lossy", relative,
			  NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach: status %d\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(status_records_lost("lossy"), 0, "records_lost before any loss");

	snprintf(count, sizeof(count), "%d", FLOOD);
	char *argv[] = {(char *)build_path("bpf-burst"), "-g", full, "127.0.0.1", port, count, NULL};
	run_tool(&r, argv);
	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert_eq(burst_denied(&r), FLOOD, "%s", r.out);

	long counted = status_records_lost("lossy");
	cr_assert_gt(counted, 0, "status --json shows records_lost %ld after %d records with no drainer", counted,
		     FLOOD);
	cr_assert_lt(counted, FLOOD);
	char *text[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, NULL};
	run_tool(&r, text);
	snprintf(line, sizeof(line), "records lost %ld", counted);
	cr_expect(strstr(r.out, line), "status does not say \"%s\":\n%s", line, r.out);
	char *prometheus[] = {(char *)build_path("portfence"), "status", "-c", fx.sb.policy, "--prometheus", NULL};
	run_tool(&r, prometheus);
	snprintf(line, sizeof(line), "\nportfence_records_lost_total{app=\"lossy\"} %ld\n", counted);
	cr_expect(strstr(r.out, line), "no \"%s\" in status --prometheus:\n%s", line + 1, r.out);
	cr_expect_eq(read_burst_log(remote).denies, 0, "records written with no drainer");

	pid_t daemon = daemon_start();
	struct burst_log b = wait_burst_log(remote, FLOOD);
	server_stop(&srv);
	cr_expect_eq(wait_exit(daemon, 0), -1, "the daemon exited:\n%s", daemon_output());
	cr_expect_eq(b.lost_records, 1, "%ld error records report lost ones; the daemon said:\n%s", b.lost_records,
		     daemon_output());
	cr_expect_eq(b.lost, counted, "the log reports %ld lost, the kernel counted %ld", b.lost, counted);
	cr_expect_eq(b.denies + b.lost, FLOOD, "%ld written + %ld lost of %d", b.denies, b.lost, FLOOD);
	cr_expect_eq(status_records_lost("lossy"), counted, "records_lost is a total: it stays after the report");
}

/* The deny record's rule names the policy file as an absolute path when
 * -c named it relative to the directory run started in, under both
 * backends (the shim's run exports the absolute path). */
Test(bpf, a_relative_policy_path_is_named_absolute_in_the_rule)
{
	struct server srv;
	char dest[32], rule[64], wanted[PATH_MAX + 64];

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(rule, sizeof(rule), "deny = [ \"127.0.0.1:%u\" ];", srv.port);
	bpf_sandbox("relative", 62350, 62359, rule);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	for (int bpf = 0; bpf < 2; bpf++) {
		struct run_result r;
		char *argv[] = {"/bin/sh", "-c", "cd \"$1\" && shift && exec \"$@\"", "sh", fx.sb.dir,
				(char *)build_path("portfence"), "run", bpf ? "--bpf" : "-c", bpf ? "-c" : "policy.conf",
				bpf ? "policy.conf" : "-a", bpf ? "-a" : "relative", bpf ? "relative" : "--",
				bpf ? "--" : (char *)build_path("ringprobe"), bpf ? (char *)build_path("ringprobe") : "connect",
				bpf ? "connect" : "1", bpf ? "1" : dest, bpf ? dest : NULL, NULL};
		run_program(&r, argv, NULL, NULL);
		usleep(200000);
		json_t *records = audit_records(fx.sb.log);
		json_t *deny = audit_find(records, "deny", bpf);
		cr_assert_not_null(deny, "%s: no deny record: %s%s", bpf ? "run --bpf" : "run", r.out, r.err);
		snprintf(wanted, sizeof(wanted), "\"127.0.0.1:%u\" %s:", srv.port, fx.sb.policy);
		cr_expect(strstr(field(deny, "rule"), wanted), "%s: rule %s, expected it to name %s",
			  bpf ? "run --bpf" : "run", field(deny, "rule"), fx.sb.policy);
		json_decref(records);
	}
	server_stop(&srv);
}
