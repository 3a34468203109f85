/* The cgroup-BPF backend (issue 11): programs the shim cannot reach (Go,
 * static, raw system calls, io_uring) confined under `run --bpf`, deny
 * rules, R×D, attach/detach of a live cgroup, the daemon and its
 * re-attachment, udp_unbound, and what is left behind.  Each test checks
 * what the server saw and what the audit log holds.
 *
 * Whether BPF can be used is decided from the machine (root, a cgroup v2
 * mount, a kernel >= 5.18 that lets us create a BPF map), never from the
 * tool's output: a tool that does not know --bpf fails these tests, it
 * does not skip them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* The clients' statuses (tests/helpers/bpf_client.h, goclient). */
enum { CLIENT_NO_IO_URING = 69, CLIENT_EPERM = 77 };

/* ---- Can this machine run the backend? ---- */

static char cgroup_mount[PATH_MAX];

static void require_bpf_machine(void)
{
	const char *missing = bpf_machine_missing(cgroup_mount, sizeof(cgroup_mount));
	if (missing)
		cr_skip_test("skipped: %s", missing);
}

/* ---- What each test leaves behind, removed even when it fails ---- */

#define MAX_CGROUPS 4
#define MAX_CHILDREN 8

static struct {
	char cgroups[MAX_CGROUPS][PATH_MAX];	/* full paths */
	int cgroup_count;
	pid_t children[MAX_CHILDREN];
	int child_count;
	pid_t daemon;
	struct sandbox sb;
	bool sandboxed;
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
	for (int i = 0; i < fx.cgroup_count; i++) {
		quiet_detach(fx.cgroups[i]);
		if (!remove_cgroup(fx.cgroups[i]))
			fprintf(stderr, "could not remove cgroup %s: %s\n", fx.cgroups[i], strerror(errno));
	}
	fx.cgroup_count = 0;
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

/* A fresh cgroup of this test, named after the test's process: its path
 * relative to the cgroup v2 mount goes to relative. */
static const char *make_cgroup(const char *name, char *relative, size_t len)
{
	cr_assert_lt(fx.cgroup_count, MAX_CGROUPS);
	char *full = fx.cgroups[fx.cgroup_count];
	snprintf(relative, len, "pf-test-%d-%s", (int)getpid(), name);
	under_mount(full, relative);
	cr_assert_eq(mkdir(full, 0755), 0, "mkdir %s: %s", full, strerror(errno));
	fx.cgroup_count++;
	return full;
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

	require_bpf_machine();
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

	require_bpf_machine();
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

	require_bpf_machine();
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

	require_bpf_machine();
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

	require_bpf_machine();
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

/* Reads one line (10 s at most); false on EOF or timeout. */
static bool read_line(int fd, char *buf, size_t len)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	size_t have = 0;

	while (have + 1 < len) {
		if (poll(&pfd, 1, 10000) != 1 || read(fd, buf + have, 1) != 1)
			return false;
		if (buf[have++] == '\n')
			break;
	}
	buf[have] = '\0';
	return true;
}

/* bpf-static-client loop, started inside cgroup (a full path). */
static void prober_start(struct prober *p, const char *cgroup, uint16_t port)
{
	int in[2], out[2];
	char port_text[16], line[64], procs[PATH_MAX + 16];

	cr_assert_lt(fx.child_count, MAX_CHILDREN);
	cr_assert(pipe(in) == 0 && pipe(out) == 0);
	snprintf(port_text, sizeof(port_text), "%u", port);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup);
	const char *client = build_path("bpf-static-client");
	fflush(NULL);
	p->pid = fork();
	cr_assert_geq(p->pid, 0);
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(procs, O_WRONLY);
		if (fd < 0 || write(fd, "0\n", 2) != 2)
			_exit(120);
		close(fd);
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execl(client, client, "loop", "127.0.0.1", port_text, (char *)NULL);
		_exit(127);
	}
	fx.children[fx.child_count++] = p->pid;
	close(in[0]);
	close(out[1]);
	p->to = in[1];
	p->from = out[0];
	cr_assert(read_line(p->from, line, sizeof(line)) && strncmp(line, "pid ", 4) == 0,
		  "the prober did not start in %s", cgroup);
}

static void prober_stop(struct prober *p)
{
	close(p->to);
	close(p->from);
	kill_child(p->pid);
}

/* One connect from inside the cgroup: its local port, or 0 when it
 * failed (its line goes to failure). */
static uint16_t prober_connect(struct prober *p, char *failure, size_t len)
{
	char line[128];
	failure[0] = '\0';
	cr_assert_eq(write(p->to, "\n", 1), 1);
	cr_assert(read_line(p->from, line, sizeof(line)), "the prober stopped answering");
	if (strncmp(line, "local ", 6) == 0)
		return address_port(line + 6);
	snprintf(failure, len, "%s", line);
	return 0;
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

static void attach_then_detach(bool absolute_path)
{
	enum { LO = 62500, HI = 62519 };
	struct server srv;
	struct prober p;
	struct run_result r;
	char relative[128], failure[128];

	require_bpf_machine();
	bpf_sandbox("attached", LO, HI, NULL);
	const char *full = make_cgroup("attach", relative, sizeof(relative));
	const char *named = absolute_path ? full : relative;
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	prober_start(&p, full, srv.port);
	expect_unconfined(&p, LO, HI, "before attach");

	char *attach[] = {(char *)build_path("portfence"), "attach", "-c", fx.sb.policy, "-a", "attached",
			  (char *)named, NULL};
	run_tool(&r, attach);
	cr_assert_eq(r.status, 0, "attach %s: status %d\n%s%s", named, r.status, r.out, r.err);
	for (int i = 0; i < 3; i++) {
		uint16_t port = prober_connect(&p, failure, sizeof(failure));
		cr_expect(in_range(port, LO, HI), "connect %d after attach came from %u (%s)", i, port, failure);
		cr_expect(port == 0 || server_saw(&srv, port) || (usleep(300000), server_saw(&srv, port)),
			  "the server never saw port %u", port);
	}

	char *detach[] = {(char *)build_path("portfence"), "detach", "-a", "attached", (char *)named, NULL};
	run_tool(&r, detach);
	cr_assert_eq(r.status, 0, "detach %s: status %d\n%s%s", named, r.status, r.out, r.err);
	expect_unconfined(&p, LO, HI, "after detach");
	prober_stop(&p);
	server_stop(&srv);
}

Test(bpf, attach_confines_a_running_process_and_detach_releases_it)
{
	attach_then_detach(false);
}

Test(bpf, attach_and_detach_take_an_absolute_cgroup_path)
{
	attach_then_detach(true);
}

Test(bpf, attach_to_a_missing_cgroup_fails_with_one_line)
{
	struct run_result r;
	char relative[128], full[PATH_MAX];

	require_bpf_machine();
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

/* ---- daemon ---- */

/* `portfence daemon -c POLICY` in the background, its output in the
 * sandbox. */
static pid_t daemon_start(void)
{
	char out_path[256];
	snprintf(out_path, sizeof(out_path), "%s/daemon.out", fx.sb.dir);
	const char *tool = build_path("portfence");
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int null = open("/dev/null", O_RDONLY);
		if (fd < 0 || null < 0)
			_exit(120);
		dup2(null, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(tool, tool, "daemon", "-c", fx.sb.policy, (char *)NULL);
		_exit(127);
	}
	fx.daemon = pid;
	return pid;
}

static const char *daemon_output(void)
{
	static char text[8192];
	char path[256];
	snprintf(path, sizeof(path), "%s/daemon.out", fx.sb.dir);
	read_all(path, text, sizeof(text));
	return text;
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

	require_bpf_machine();
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

	require_bpf_machine();
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

/* ---- udp_unbound ---- */

static void unbound_udp_send(const char *setting, struct run_result *r, struct server *srv, char *dest,
			     size_t dest_len)
{
	char extra[64], port[16];

	require_bpf_machine();
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

	require_bpf_machine();
	if (system("command -v setpriv >/dev/null 2>&1") != 0)
		cr_skip_test("skipped: no setpriv (util-linux) to run as nobody");
	bpf_sandbox("asuser", 62800, 62819, NULL);
	/* A checkout other users cannot enter (a clone under /root) must not
	 * make the tool unreachable: nobody runs a copy in the sandbox. */
	char tool[256], cmd[1024];
	snprintf(tool, sizeof(tool), "%s/portfence", fx.sb.dir);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0755 '%s' && chmod 0644 '%s'", build_path("portfence"),
		 tool, tool, fx.sb.policy);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
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

	require_bpf_machine();
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

	require_bpf_machine();
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

/* With three of four ports held by connections (the fourth freed by an
 * abortive close, so that sequential's next port is a held one),
 * bind(addr, 0) + listen gets the free one; a second bind(0) finds none
 * and gets EADDRINUSE, the kernel's own answer. */
Test(bpf, bind_port_zero_takes_a_port_no_socket_holds_then_eaddrinuse)
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
		"    s.bind(('127.0.0.1', 0)); print('second', s.getsockname()[1])\n"
		"except OSError as e:\n"
		"    print('second-error', e.errno)\n";
	struct server srv;
	struct run_result r;
	char port[16], value[32];

	require_bpf_machine();
	bpf_sandbox("binder", LO, HI, "algorithm = \"sequential\";");
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"python3", "-c", (char *)script, port, NULL};
	run_bpf(&r, "binder", argv);
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	cr_assert(line_value(r.out, "listen", 0, value, sizeof(value)), "%s", r.out);
	long listened = atol(value);
	cr_expect(in_range(listened, LO, HI), "listen port %ld outside the range", listened);
	for (int i = 0; i < 3; i++) {
		cr_assert(line_value(r.out, "held", i, value, sizeof(value)), "%s", r.out);
		cr_expect_neq(atol(value), listened, "bind(0) was given port %ld, held by a connection", listened);
	}
	cr_assert(line_value(r.out, "second-error", 0, value, sizeof(value)), "second bind worked:\n%s", r.out);
	cr_expect_eq(atoi(value), EADDRINUSE);
}
