/* The shim's start-up and its view of the process: the policy loaded
 * before main() (signal handlers in malloc, cancelled threads, privilege
 * drops), children made without fork(), fds that changed hands behind the
 * hooks, RTLD_DEEPBIND libraries and Go programs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define RANGE_LO 61000
#define RANGE_HI 64999

static const char policy_text[] =
	"default = \"rt\";\napps = ( { name = \"rt\"; range = [ 61000, 64999 ]; algorithm = \"random\"; } );";

static char *probe(void)
{
	return (char *)build_path("runtime-probe");
}

/* The value of the nth "key value" line of out, or LONG_MIN. */
static long key_value(const char *out, const char *key, int nth)
{
	size_t len = strlen(key);
	for (const char *line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, key, len) == 0 && line[len] == ' ' && nth-- == 0)
			return atol(line + len + 1);
	return -2147483647L;
}

static bool in_range(long port)
{
	return port >= RANGE_LO && port <= RANGE_HI;
}

/* The assign record whose local port is port, or NULL. */
static json_t *record_for_port(json_t *records, long port)
{
	json_t *record;
	for (int i = 0; (record = audit_find(records, "assign", i)); i++)
		if (address_port(json_string_value(json_object_get(record, "local"))) == port)
			return record;
	return NULL;
}

static void expect_confined_and_recorded(struct server *srv, const struct sandbox *sb, long port,
					 const char *what)
{
	cr_expect(in_range(port), "%s: came from port %ld", what, port);
	cr_expect(server_saw(srv, (uint16_t)port), "%s: the server saw no connection from %ld", what, port);
	json_t *records = audit_records(sb->log);
	cr_expect_not_null(record_for_port(records, port), "%s: no record for port %ld", what, port);
	json_decref(records);
}

static void port_text(char *out, size_t len, const struct server *srv)
{
	snprintf(out, len, "%u", srv->port);
}

/* A sandbox, one server, and runtime-probe MODE [ARG] PORT [EXTRA] under
 * `portfence run`; the server is stopped when it returns. */
static void probe_one_server(struct sandbox *sb, struct server *srv, struct run_result *r,
			     const char *mode, const char *arg, const char *extra)
{
	char port[16];
	char *argv[6];
	int n = 0;

	sandbox_init(sb, policy_text);
	server_start(srv, "127.0.0.1", SERVE_GREET_CLOSE);
	port_text(port, sizeof(port), srv);
	argv[n++] = probe();
	argv[n++] = (char *)mode;
	if (arg)
		argv[n++] = (char *)arg;
	argv[n++] = port;
	if (extra)
		argv[n++] = (char *)extra;
	argv[n] = NULL;
	run_under(r, sb, NULL, argv, NULL);
	server_stop(srv);
}

/* The process's first connect, from a signal handler that interrupted
 * malloc: a load at first use would call malloc there and hang. */
Test(runtime, first_connect_in_a_handler_that_interrupted_malloc, .timeout = 240)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16];
	const int runs = 30;
	int hung = 0, confined = 0;

	sandbox_init(&sb, policy_text);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	port_text(port, sizeof(port), &srv);
	for (int i = 0; i < runs; i++) {
		char *argv[] = {probe(), "handler", port, NULL};
		run_under(&r, &sb, NULL, argv, NULL);
		hung += r.status != 0;
		confined += in_range(key_value(r.out, "handler_port", 0));
	}
	server_stop(&srv);
	cr_expect_eq(hung, 0, "%d of %d runs hung or died (the probe's watchdog is 10 s)", hung, runs);
	cr_expect_eq(confined, runs, "handler connects from the range: %d of %d", confined, runs);
	json_t *records = audit_records(sb.log);
	cr_expect_eq(json_array_size(records), (size_t)runs, "one record per handler connect");
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* A thread cancelled in its first connect must not leave a lock held:
 * the program connects and forks afterwards. */
Test(runtime, thread_cancelled_in_first_connect, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;

	probe_one_server(&sb, &srv, &r, "cancel", NULL, NULL);
	cr_assert_eq(r.status, 0, "exited %d (14+128: hung):\n%s%s", r.status, r.out, r.err);
	cr_expect_eq(key_value(r.out, "thread_cancelled", 0), 1, "%s", r.out);
	cr_expect_eq(key_value(r.out, "child_status", 0), 0, "the child hung or failed:\n%s", r.out);
	expect_confined_and_recorded(&srv, &sb, key_value(r.out, "main_port", 0), "main thread");
	expect_confined_and_recorded(&srv, &sb, key_value(r.out, "child_port", 0), "forked child");
	sandbox_cleanup(&sb);
}

/* A program that drops to nobody after start-up, with a policy only root
 * can read: it stays confined and its record is written. */
Test(runtime, privilege_drop_after_start_keeps_policy_and_log)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[1024];

	cr_assert_eq(geteuid(), 0, "this test drops privileges and must start as root");
	sandbox_init(&sb, policy_text);
	cr_assert_eq(chown(sb.policy, 0, 0), 0);
	cr_assert_eq(chmod(sb.policy, 0600), 0);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(code, sizeof(code),
		 "import os, socket, errno\n"
		 "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
		 "s = socket.socket()\n"
		 "try:\n"
		 "    s.connect(('127.0.0.1', %u)); print('connected', s.getsockname()[1], os.getuid())\n"
		 "except OSError as e:\n"
		 "    print(errno.errorcode[e.errno])\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = 0, uid = 0;
	cr_assert_eq(sscanf(r.out, "connected %u %u", &port, &uid), 2, "%s %s", r.out, r.err);
	cr_expect_eq(uid, 65534);
	expect_confined_and_recorded(&srv, &sb, port, "after setuid(nobody)");
	sandbox_cleanup(&sb);
}

/* Children made by _Fork(), syscall(SYS_clone) and clone() run no atfork
 * handler: each must still be recorded with its own pid and draw its own
 * random ports, not the ones its parent draws next. */
Test(runtime, fork_and_clone_children_have_their_own_pid_and_ports, .timeout = 60)
{
	struct sandbox sb;
	struct server parent_srv, child_srv;
	struct run_result r;
	char parent_port[16], child_port[16];

	sandbox_init(&sb, policy_text);
	server_start(&parent_srv, "127.0.0.1", SERVE_GREET_CLOSE);
	server_start(&child_srv, "127.0.0.1", SERVE_GREET_CLOSE);
	port_text(parent_port, sizeof(parent_port), &parent_srv);
	port_text(child_port, sizeof(child_port), &child_srv);
	char *argv[] = {probe(), "children", parent_port, child_port, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&parent_srv);
	server_stop(&child_srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	long parent_pid = key_value(r.out, "parent_pid", 0);
	json_t *records = audit_records(sb.log);
	static const char *const methods[] = {"_Fork", "SYS_clone", "clone"};
	for (int i = 0; i < 3; i++) {
		long pid = key_value(r.out, "child_pid", i), port = key_value(r.out, "child_port", i);
		cr_expect_eq(key_value(r.out, "child_status", i), 0, "%s child failed", methods[i]);
		cr_expect(in_range(port), "%s child connected from %ld", methods[i], port);
		cr_expect_neq(pid, parent_pid);
		json_t *record = record_for_port(records, port);
		cr_expect_not_null(record, "%s child: no record for %ld", methods[i], port);
		if (record)
			cr_expect_eq(json_integer_value(json_object_get(record, "pid")), pid,
				     "%s child recorded with pid %lld, not its own %ld", methods[i],
				     json_integer_value(json_object_get(record, "pid")), pid);
		long parent_next = key_value(r.out, "parent_port", i + 1);
		cr_expect_neq(port, parent_next, "%s child replayed its parent's random sequence", methods[i]);
	}
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* A connected socket closed inside libc (fclose(fdopen())), then a fresh
 * socket on its number made where the hooks do not look. */
static void stale_entry(const char *how)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;

	probe_one_server(&sb, &srv, &r, "stale", how, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert_eq(key_value(r.out, "same_number", 0), 1, "the new socket must reuse the number:\n%s", r.out);
	expect_confined_and_recorded(&srv, &sb, key_value(r.out, "first_port", 0), "first socket");
	expect_confined_and_recorded(&srv, &sb, key_value(r.out, "second_port", 0), how);
	sandbox_cleanup(&sb);
}

/* A child made by _Fork() runs no atfork handler, so it inherits the
 * shim's fd lock as its parent held it, by a thread the child does not
 * have: its own dup2 must not wait for that thread for ever. */
Test(runtime, a_child_made_without_fork_moves_fds_while_its_parent_did, .timeout = 180)
{
	struct sandbox sb;
	struct run_result r;
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");

	/* Seen with gdb: the child waits on ThreadSanitizer's own mutex,
	 * which the parent's other thread held at _Fork() (its fork hooks
	 * run for fork() only), inside the runtime's atomic store. */
	if (runtime && strstr(runtime, "tsan"))
		cr_skip_test("ThreadSanitizer's runtime deadlocks in a _Fork() child of a threaded program "
			     "(its mutexes, held by the parent's other thread); the normal and ASan builds run it");
	sandbox_init(&sb, policy_text);
	char *argv[] = {probe(), "forklock", "30", NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "status %d: %s%s", r.status, r.out, r.err);
	cr_expect_eq(key_value(r.out, "children_finished", 0), 30, "%s", r.out);
	sandbox_cleanup(&sb);
}

Test(runtime, stale_fd_entry_then_dup_on_its_number)
{
	stale_entry("dup");
}

Test(runtime, stale_fd_entry_then_fd_passed_onto_its_number)
{
	stale_entry("scm");
}

static void deepbind(const char *lib, const char *binding)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");

	/* ASan's own dlopen refuses RTLD_DEEPBIND, and calls libc's dlopen
	 * from its own library (so its caller's RUNPATH is lost without us). */
	if (runtime && runtime[0])
		cr_skip_test("a preloaded sanitizer runtime intercepts dlopen itself; this runs in the normal build");

	probe_one_server(&sb, &srv, &r, "deepbind", lib, binding);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	expect_confined_and_recorded(&srv, &sb, key_value(r.out, "deep_port", 0), binding);
	sandbox_cleanup(&sb);
}

Test(runtime, deepbind_library_is_confined_now)
{
	deepbind(build_path("deepbind-lib.so"), "now");
}

Test(runtime, deepbind_library_is_confined_lazy)
{
	deepbind(build_path("deepbind-lib.so"), "lazy");
}

/* The shim's dlopen must not stand in for its caller: a bare name is
 * found through the caller's RUNPATH, as without the shim. */
Test(runtime, dlopen_searches_the_callers_runpath)
{
	deepbind("deepbind-lib.so", "plain");
}

Test(runtime, deepbind_dlopen_searches_the_callers_runpath)
{
	deepbind("deepbind-lib.so", "now");
}

/* ---- Go programs ---- */

static const char go_client[] =
	"package main\n\n"
	"import (\n\t\"fmt\"\n\t\"net\"\n\t\"os\"\n)\n\n"
	"func main() {\n"
	"\tconn, err := net.Dial(\"tcp\", \"127.0.0.1:\"+os.Args[1])\n"
	"\tif err != nil {\n\t\tfmt.Println(\"error\", err)\n\t\tos.Exit(1)\n\t}\n"
	"\tfmt.Println(\"go_port\", conn.LocalAddr().(*net.TCPAddr).Port)\n"
	"\tconn.Close()\n}\n";

/* The cgo part: a C call makes the Go linker produce a dynamically linked
 * program that reads LD_PRELOAD. */
static const char cgo_part[] =
	"package main\n\n// #include <stdlib.h>\nimport \"C\"\n\nvar _ = C.abs(1)\n";

/* Builds the client into the sandbox (cgo: dynamically linked; else
 * static), with the toolchain's cache kept there too. */
static const char *build_go(const struct sandbox *sb, bool cgo)
{
	static char binary[256];
	char src[200], cmd[1024];
	struct run_result r;

	if (system("command -v go >/dev/null 2>&1") != 0)
		cr_skip_test("no Go toolchain (Debian's golang-go, from tests/install-deps.sh)");
	snprintf(src, sizeof(src), "%s/go/main.go", sb->dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/go", sb->dir);
	cr_assert_eq(system(cmd), 0);
	FILE *f = fopen(src, "w");
	cr_assert_not_null(f);
	fputs(go_client, f);
	fclose(f);
	if (cgo) {
		snprintf(src, sizeof(src), "%s/go/cgo.go", sb->dir);
		f = fopen(src, "w");
		cr_assert_not_null(f);
		fputs(cgo_part, f);
		fclose(f);
	}
	snprintf(binary, sizeof(binary), "%s/go/client", sb->dir);
	snprintf(cmd, sizeof(cmd),
		 "cd %s/go && HOME=%s GOCACHE=%s/go/cache GOPATH=%s/go/path GO111MODULE=off "
		 "CGO_ENABLED=%d go build -o client . 2>&1",
		 sb->dir, sb->dir, sb->dir, sb->dir, cgo);
	char *argv[] = {"sh", "-c", cmd, NULL};
	char *env[] = {"LD_PRELOAD=", NULL};
	run_program(&r, argv, NULL, env);
	cr_assert_eq(r.status, 0, "go build failed:\n%s", r.out);
	return binary;
}

static void expect_run_refuses_go(bool cgo)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16];

	sandbox_init(&sb, policy_text);
	const char *client = build_go(&sb, cgo);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	port_text(port, sizeof(port), &srv);
	char *argv[] = {(char *)client, port, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_expect_eq(r.status, 126, "%s%s", r.out, r.err);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "%s", r.err);
	cr_expect(strstr(r.err, "Go program") && strstr(r.err, "--bpf"), "%s", r.err);
	cr_expect_eq(atomic_load(&srv.count), 0, "the program must not have run");
	sandbox_cleanup(&sb);
}

Test(runtime, run_refuses_a_dynamic_go_program, .timeout = 180)
{
	expect_run_refuses_go(true);
}

Test(runtime, run_refuses_a_static_go_program, .timeout = 180)
{
	expect_run_refuses_go(false);
}

/* LD_PRELOAD set by hand: the shim cannot confine the program, and says
 * so on stderr (once) and in the log. */
Test(runtime, shim_inside_a_go_program_says_so, .timeout = 180)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16], config[200];

	sandbox_init(&sb, policy_text);
	const char *client = build_go(&sb, true);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	port_text(port, sizeof(port), &srv);
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", sb.policy);
	char *env[] = {config, NULL};
	char *argv[] = {"env", (char *)shim_preload_env(), (char *)client, port, NULL};
	run_program(&r, argv, NULL, env);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "%s", r.err);
	cr_expect(strstr(r.err, "Go program") != NULL, "%s", r.err);
	json_t *records = audit_records(sb.log);
	json_t *error = audit_find(records, "error", 0);
	cr_expect_not_null(error, "an error record for the Go program");
	if (error)
		cr_expect_str_eq(json_string_value(json_object_get(error, "exe")), client);
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* The shim follows route changes on a netlink socket it keeps at a high
 * fd number (shim/tuple.c), which it peeks at before each lookup of a
 * learned source.  A program that dup2()s a socket of its own onto that
 * number must find it as it left it: a MSG_PEEK on a socket with
 * SO_PEEK_OFF set would move its peek offset.  The program runs in a
 * network namespace of its own, where 10.233.0.1 (on lo) is an address
 * that is not loopback: connects to it learn their source. */
static const char peek_probe[] =
	"import os, socket, time\n"
	"SO_PEEK_OFF = 42\n"
	"A = '10.233.0.1'\n"
	"srv = socket.socket(); srv.bind((A, 0)); srv.listen(16)\n"
	"def connect():\n"
	"    c = socket.socket(); c.connect(srv.getsockname()); a, _ = srv.accept(); return c, a\n"
	"held = [connect()]\n"
	"def route_fds():\n"
	"    found = []\n"
	"    for name in os.listdir('/proc/self/fd'):\n"
	"        fd = int(name)\n"
	"        if fd < 900:\n"
	"            continue\n"
	"        try:\n"
	"            s = socket.socket(fileno=fd)\n"
	"        except OSError:\n"
	"            continue\n"
	"        if s.family == socket.AF_NETLINK and s.proto == 0:\n"
	"            found.append(fd)\n"
	"        s.detach()\n"
	"    return sorted(found)\n"
	"fds = route_fds()\n"
	"print('route_fds', len(fds), *fds)\n"
	"ls = socket.socket(); ls.bind(('127.0.0.1', 0)); ls.listen(1)\n"
	"w = socket.create_connection(ls.getsockname()); r, _ = ls.accept()\n"
	"w.sendall(b'data of the app'); time.sleep(0.2)\n"
	"r.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)\n"
	"os.dup2(r.fileno(), fds[0])\n"
	"app = socket.socket(fileno=fds[0])\n"
	"held.append(connect())\n"
	"print('peek_off', app.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF))\n"
	"try:\n"
	"    print('peeked', app.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT).decode())\n"
	"except BlockingIOError:\n"
	"    print('peeked', 'nothing')\n"
	"print('read', r.recv(100).decode())\n";

Test(runtime, program_socket_on_the_route_fd_number_keeps_its_peek_offset)
{
	struct sandbox sb;
	struct run_result r;

	sandbox_init(&sb, policy_text);
	char *argv[] = {"unshare", "-n", "sh", "-c",
			"ip link set lo up && ip addr add 10.233.0.1/32 dev lo && exec \"$@\"", "sh",
			(char *)build_path("portfence"), "run", "-c", sb.policy, "--", "python3", "-c",
			(char *)peek_probe, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert(strncmp(r.out, "route_fds 1 ", 12) == 0, "the shim's route socket at fd >= 900:\n%s%s", r.out,
		  r.err);
	cr_expect(strstr(r.out, "\npeek_off 0\n"), "the app's peek offset moved:\n%s", r.out);
	cr_expect(strstr(r.out, "\npeeked data of the app\n"), "the app's peek:\n%s", r.out);
	cr_expect(strstr(r.out, "\nread data of the app\n"), "the app's data:\n%s", r.out);
	json_t *records = audit_records(sb.log);
	cr_expect_not_null(audit_find(records, "assign", 1), "both connects to 10.233.0.1 are recorded");
	json_decref(records);
	sandbox_cleanup(&sb);
}
