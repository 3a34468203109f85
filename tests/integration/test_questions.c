/* The operator's questions (issue 21), asked of logs and sockets that
 * real programs under `portfence run` produce against real servers:
 * what an app connects to and what its policy refuses (report), and
 * which process holds or held a local port (who). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "harness.h"

/* Every range here lies in 21100-21999: below the kernel's ephemeral
 * range (no unconfined client or test server is given such a port) and
 * used by no other suite, whose TIME_WAIT sockets would show. */

#define INT_OF(e, k) json_integer_value(json_object_get((e), (k)))
#define STR_OF(e, k) json_string_value(json_object_get((e), (k)))

/* Line 4 is the first line of the apps text (sandbox_init writes three). */
static const char report_policy[] =
	"apps = ( { name = \"web\"; range = [ 21100, 21199 ]; algorithm = \"sequential\";\n"
	"           deny = [ \"127.0.0.2/32\" ]; },\n"
	"         { name = \"aud\"; range = [ 21200, 21299 ]; mode = \"audit\";\n"
	"           allow = [ \"127.0.0.1/32\", \"[::1]\" ]; } );";

/* Connects argv[1] times to each ADDR PORT pair that follows; a refused
 * connect is counted, never fatal. */
static const char client[] =
	"import socket, sys\n"
	"n = int(sys.argv[1]); args = sys.argv[2:]\n"
	"for i in range(0, len(args), 2):\n"
	"    for _ in range(n):\n"
	"        try:\n"
	"            s = socket.create_connection((args[i], int(args[i + 1]))); s.recv(64); s.close()\n"
	"        except OSError as e: print('refused', args[i], e.errno)\n";

static void run_client(const struct sandbox *sb, const char *app, int times, const char *addr1, unsigned port1,
		       const char *addr2, unsigned port2, const char *addr3, unsigned port3)
{
	char n[8], p1[8], p2[8], p3[8];
	struct run_result r;
	snprintf(n, sizeof(n), "%d", times);
	snprintf(p1, sizeof(p1), "%u", port1);
	snprintf(p2, sizeof(p2), "%u", port2);
	snprintf(p3, sizeof(p3), "%u", port3);
	char *argv[] = {"python3", "-c", (char *)client, n, (char *)addr1, p1, (char *)addr2, p2, (char *)addr3, p3, NULL};
	run_under(&r, sb, app, argv, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
}

/* `portfence ARGS` through sh, its status, stdout and stderr into r; no
 * policy is found unless ARGS names one (none at the default path). */
static void tool_text(struct run_result *r, const char *args)
{
	char cmd[1024];
	default_policy(NULL);
	snprintf(cmd, sizeof(cmd), "unset PORTFENCE_CONFIG; '%s' %s", build_path("portfence"), args);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
}

static json_t *tool_json(const char *args)
{
	static struct run_result r;
	tool_text(&r, args);
	cr_assert_eq(r.status, 0, "%s: %s", args, r.err);
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "%s printed no JSON: %s", args, r.out);
	return root;
}

static json_t *find_remote(json_t *list, const char *remote)
{
	for (size_t i = 0; i < json_array_size(list); i++)
		if (strcmp(STR_OF(json_array_get(list, i), "remote"), remote) == 0)
			return json_array_get(list, i);
	return NULL;
}

struct report_setup {
	struct sandbox sb;
	struct server v4, v6;
	char remote4[64], remote6[64], refused[64];
};

/* web: 5 connects to each server and one to 127.0.0.2 (denied); aud
 * (audit mode): 3 to each server and one to 127.0.0.2 (allowed now,
 * refused under enforce). */
static void report_setup(struct report_setup *s)
{
	sandbox_init(&s->sb, report_policy);
	server_start(&s->v4, "127.0.0.1", SERVE_GREET_CLOSE);
	server_start(&s->v6, "::1", SERVE_GREET_CLOSE);
	run_client(&s->sb, "web", 5, "127.0.0.1", s->v4.port, "::1", s->v6.port, "127.0.0.2", s->v4.port);
	run_client(&s->sb, "aud", 3, "127.0.0.1", s->v4.port, "::1", s->v6.port, "127.0.0.2", s->v4.port);
	snprintf(s->remote4, sizeof(s->remote4), "127.0.0.1:%u", s->v4.port);
	snprintf(s->remote6, sizeof(s->remote6), "[::1]:%u", s->v6.port);
	snprintf(s->refused, sizeof(s->refused), "127.0.0.2:%u", s->v4.port);
}

static void report_teardown(struct report_setup *s)
{
	server_stop(&s->v4);
	server_stop(&s->v6);
	sandbox_cleanup(&s->sb);
}

Test(questions, report_lists_destinations_and_denials, .timeout = 90)
{
	struct report_setup s;
	char args[512];

	report_setup(&s);
	cr_assert_eq(s.v4.count, 5 + 3, "the server saw %d", (int)s.v4.count);
	snprintf(args, sizeof(args), "report --json -c '%s' '%s'", s.sb.policy, s.sb.log);
	json_t *root = tool_json(args);
	json_t *web = app_entry(root, "web");
	cr_assert_not_null(web);
	json_t *range = json_object_get(web, "range");
	cr_expect_eq(json_integer_value(json_array_get(range, 0)), 21100);
	cr_expect_eq(json_integer_value(json_array_get(range, 1)), 21199);
	json_t *dests = json_object_get(web, "destinations");
	cr_expect_eq(json_array_size(dests), 2, "%s", json_dumps(web, 0));
	json_t *d4 = find_remote(dests, s.remote4), *d6 = find_remote(dests, s.remote6);
	cr_assert(d4 && d6, "%s", json_dumps(web, 0));
	cr_expect_eq(INT_OF(d4, "count"), 5);
	cr_expect_eq(INT_OF(d4, "ports"), 5, "sequential: five distinct ports");
	cr_expect_eq(INT_OF(d6, "count"), 5);
	cr_expect(STR_OF(d4, "first") && STR_OF(d4, "last") && strcmp(STR_OF(d4, "first"), STR_OF(d4, "last")) <= 0);
	json_t *denied = json_object_get(web, "denied");
	cr_assert_eq(json_array_size(denied), 1, "%s", json_dumps(web, 0));
	json_t *deny = json_array_get(denied, 0);
	cr_expect_str_eq(STR_OF(deny, "remote"), s.refused);
	cr_expect_eq(INT_OF(deny, "count"), 5);
	char rule[256];
	snprintf(rule, sizeof(rule), "deny \"127.0.0.2/32\" %s:5", s.sb.policy);
	cr_expect_str_eq(STR_OF(deny, "rule"), rule);
	cr_expect(json_is_false(json_object_get(deny, "audit")));

	json_t *aud = app_entry(root, "aud");
	cr_assert_not_null(aud);
	cr_expect_eq(INT_OF(find_remote(json_object_get(aud, "destinations"), s.remote4), "count"), 3);
	cr_expect_eq(INT_OF(find_remote(json_object_get(aud, "destinations"), s.remote6), "count"), 3);
	json_t *would = find_remote(json_object_get(aud, "denied"), s.refused);
	cr_assert_not_null(would, "%s", json_dumps(aud, 0));
	cr_expect_eq(INT_OF(would, "count"), 3);
	cr_expect(json_is_true(json_object_get(would, "audit")));
	snprintf(rule, sizeof(rule), "allow (no rule matches) %s:7", s.sb.policy);
	cr_expect_str_eq(STR_OF(would, "rule"), rule);
	cr_expect_null(json_object_get(aud, "utilisation"), "report's figure is coverage, not utilisation");
	cr_expect_float_eq(json_real_value(json_object_get(web, "coverage")), 10 / 100.0, 1e-9);
	json_decref(root);

	/* No policy: no range, never one guessed from the ports seen. */
	snprintf(args, sizeof(args), "report --json '%s'", s.sb.log);
	root = tool_json(args);
	cr_expect_null(json_object_get(app_entry(root, "web"), "range"));
	cr_expect_null(json_object_get(app_entry(root, "web"), "coverage"));
	cr_expect_eq(json_array_size(json_object_get(app_entry(root, "web"), "destinations")), 2);
	json_decref(root);

	/* The text says the same. */
	struct run_result r;
	snprintf(args, sizeof(args), "report -c '%s' --app web '%s'", s.sb.policy, s.sb.log);
	tool_text(&r, args);
	cr_assert_eq(r.status, 0, "%s", r.err);
	char line[256];
	snprintf(line, sizeof(line), "    %s  count 5, ports 5, first ", s.remote4);
	cr_expect(strstr(r.out, line), "%s", r.out);
	snprintf(line, sizeof(line), "    %s  count 5, last ", s.refused);
	cr_expect(strstr(r.out, line), "%s", r.out);
	snprintf(line, sizeof(line), ", rule deny \"127.0.0.2/32\" %s:5\n", s.sb.policy);
	cr_expect(strstr(r.out, line), "%s", r.out);
	cr_expect(strstr(r.out, "of 100 (range 21100-21199): coverage 10.0%"), "%s", r.out);
	report_teardown(&s);
}

/* ---- who ---- */

static const char who_policy[] =
	"apps = ( { name = \"web\"; range = [ 21300, 21300 ]; algorithm = \"sequential\"; } );";

/* Connects to argv[1]:argv[2] (argv[5] times, from port argv[6] when
 * given), writes its local ports to argv[3], then holds the connections
 * until argv[4] exists. */
/* The end of the holders: READY.tmp renamed READY (argv[3]), then a wait
 * for STOP (argv[4]), 50 s at most. */
#define HOLD_UNTIL_STOP                                                  \
	"os.rename(sys.argv[3] + '.tmp', sys.argv[3])\n"                   \
	"deadline = time.time() + 50\n"                                      \
	"while not os.path.exists(sys.argv[4]) and time.time() < deadline: time.sleep(0.02)\n"

static const char holder[] =
	"import os, socket, sys, time\n"
	"n = int(sys.argv[5]) if len(sys.argv) > 5 else 1\n"
	"src = ('0.0.0.0', int(sys.argv[6])) if len(sys.argv) > 6 else None\n"
	"held = [socket.create_connection((sys.argv[1], int(sys.argv[2])), source_address=src) for _ in range(n)]\n"
	"with open(sys.argv[3] + '.tmp', 'w') as f: f.write(' '.join(str(s.getsockname()[1]) for s in held))\n"
	HOLD_UNTIL_STOP;

/* Now, to the microsecond (who --at compares as finely: a record later
 * in the same second is after it). */
static void utc_now(char *out, size_t len)
{
	struct timespec now;
	struct tm tm;
	char second[32];
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(second, sizeof(second), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%.19s.%06uZ", second, (unsigned)(now.tv_nsec / 1000) % 1000000u);
}

Test(questions, who_names_the_holder_now_and_then, .timeout = 90)
{
	struct sandbox sb;
	struct server a, b;
	char ready[192], stop[192], out[192], port[8], args[768], then[40];

	sandbox_init(&sb, who_policy);
	server_start(&a, "127.0.0.1", SERVE_STALL);
	server_start(&b, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(ready, sizeof(ready), "%s/ready", sb.dir);
	snprintf(stop, sizeof(stop), "%s/stop", sb.dir);
	snprintf(out, sizeof(out), "%s/out", sb.dir);
	snprintf(port, sizeof(port), "%u", a.port);
	char *argv[] = {"python3", "-c", (char *)holder, "127.0.0.1", port, ready, stop, NULL};
	pid_t pid = spawn_under(&sb, "web", argv, out);
	cr_assert(await_file(ready, 30), "the holder never got ready");
	/* the server's thread may note the peer after the client is ready */
	for (int i = 0; i < 100 && !server_saw(&a, 21300); i++)
		usleep(20000);
	cr_assert(server_saw(&a, 21300), "the server saw no connection from 21300");

	snprintf(args, sizeof(args), "who 127.0.0.1:21300 --proto tcp -c '%s' --json", sb.policy);
	json_t *root = tool_json(args);
	json_t *sockets = json_object_get(root, "sockets");
	cr_assert_eq(json_array_size(sockets), 1, "%s", json_dumps(root, 0));
	json_t *sock = json_array_get(sockets, 0);
	cr_expect_str_eq(STR_OF(sock, "state"), "established");
	char remote[64];
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", a.port);
	cr_expect_str_eq(STR_OF(sock, "remote"), remote);
	json_t *procs = json_object_get(sock, "processes");
	cr_assert_eq(json_array_size(procs), 1, "%s", json_dumps(root, 0));
	json_t *proc = json_array_get(procs, 0);
	cr_expect_eq(INT_OF(proc, "pid"), pid);
	cr_expect_str_eq(STR_OF(proc, "comm"), "python3");
	cr_expect_str_eq(STR_OF(proc, "app"), "web");
	cr_expect_str_eq(STR_OF(proc, "backend"), "shim");
	cr_expect(STR_OF(proc, "cgroup") && STR_OF(proc, "cgroup")[0] == '/');
	json_decref(root);

	/* Now released: the port is reused, for another destination. */
	close(open(stop, O_CREAT | O_WRONLY, 0600));
	cr_expect_eq(wait_child(pid), 0);
	utc_now(then, sizeof(then));
	usleep(1100000);
	run_client(&sb, "web", 1, "127.0.0.1", b.port, "127.0.0.1", b.port, "127.0.0.1", b.port);

	snprintf(args, sizeof(args), "who 127.0.0.1:21300 --at %s --json '%s'", then, sb.log);
	root = tool_json(args);
	json_t *record = json_object_get(root, "record");
	cr_assert(json_is_object(record), "%s", json_dumps(root, 0));
	cr_expect_eq(INT_OF(record, "pid"), pid);
	cr_expect_str_eq(STR_OF(record, "remote"), remote);
	cr_expect_str_eq(STR_OF(record, "event"), "assign");
	cr_expect(json_is_true(json_object_get(root, "reused")), "%s", json_dumps(root, 0));
	snprintf(remote, sizeof(remote), "127.0.0.1:%u", b.port);
	cr_expect_str_eq(STR_OF(json_object_get(root, "reused_by"), "remote"), remote);
	json_decref(root);

	/* Before any record: nothing, exit 1. */
	struct run_result r;
	snprintf(args, sizeof(args), "who 127.0.0.1:21300 --at 2020-01-01 '%s'", sb.log);
	tool_text(&r, args);
	cr_expect_eq(r.status, 1);
	cr_expect(strstr(r.out, "no record assigned local port 21300 before 2020-01-01T00:00:00Z"), "%s", r.out);
	snprintf(args, sizeof(args), "who 127.0.0.1:21300 --at '%s' '%s'", then, sb.log);
	tool_text(&r, args);
	cr_expect_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.out, " tcp 127.0.0.1:21300 was assigned at ") && strstr(r.out, "  reused at "), "%s", r.out);
	server_stop(&a);
	server_stop(&b);
	sandbox_cleanup(&sb);
}

/* ---- status ---- */

static const char status_policy[] =
	"apps = ( { name = \"web\"; range = [ 21400, 21499 ]; algorithm = \"sequential\"; },\n"
	"         { name = \"aud\"; range = [ 21500, 21599 ]; mode = \"audit\"; } );";

struct holding {
	pid_t pid;
	char ready[192], stop[192], out[192];
};

/* The holder, under `portfence run -a app` (app NULL: unconfined, not
 * run at all; bpf: run --bpf). */
static void hold_with(struct holding *h, const struct sandbox *sb, const char *name, const char *app, bool bpf,
		      const char *program, const struct server *srv, int count, const char *last);

static void hold(struct holding *h, const struct sandbox *sb, const char *name, const char *app, bool bpf,
		 const struct server *srv, int count, unsigned from_port)
{
	char from[8];
	snprintf(from, sizeof(from), "%u", from_port);
	hold_with(h, sb, name, app, bpf, holder, srv, count, from_port ? from : NULL);
}

/* The python program (holder's arguments, and last when not NULL) as
 * hold runs the holder. */
static void hold_with(struct holding *h, const struct sandbox *sb, const char *name, const char *app, bool bpf,
		      const char *program, const struct server *srv, int count, const char *last)
{
	char port[8], n[8];
	snprintf(h->ready, sizeof(h->ready), "%s/ready-%s", sb->dir, name);
	snprintf(h->stop, sizeof(h->stop), "%s/stop-%s", sb->dir, name);
	snprintf(h->out, sizeof(h->out), "%s/out-%s", sb->dir, name);
	snprintf(port, sizeof(port), "%u", srv->port);
	snprintf(n, sizeof(n), "%d", count);
	char *script[] = {"python3", "-c", (char *)program, "127.0.0.1", port, h->ready, h->stop, n,
			  (char *)last, NULL};
	if (app && !bpf) {
		h->pid = spawn_under(sb, app, script, h->out);
	} else {
		char *full[24];
		int i = 0;
		if (bpf) {
			full[i++] = (char *)build_path("portfence");
			full[i++] = "run";
			full[i++] = "--bpf";
			full[i++] = "-c";
			full[i++] = (char *)sb->policy;
			full[i++] = "-a";
			full[i++] = (char *)app;
			full[i++] = "--";
		}
		for (int k = 0; script[k]; k++)
			full[i++] = script[k];
		full[i] = NULL;
		fflush(NULL);
		h->pid = fork();
		cr_assert_geq(h->pid, 0);
		if (h->pid == 0) {
			int out = open(h->out, O_WRONLY | O_CREAT | O_APPEND, 0600);
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(out, 1);
			dup2(out, 2);
			alarm(60);
			execvp(full[0], full);
			_exit(127);
		}
	}
	if (!await_file(h->ready, 30)) {
		char text[4096];
		read_all(h->out, text, sizeof(text));
		cr_assert_fail("holder %s never got ready: %s", name, text);
	}
}

static void unhold(struct holding *h)
{
	close(open(h->stop, O_CREAT | O_WRONLY, 0600));
	cr_expect_eq(wait_child(h->pid), 0, "holder %d failed", (int)h->pid);
}

static json_t *pid_in(json_t *list, pid_t pid)
{
	for (size_t i = 0; i < json_array_size(list); i++)
		if (INT_OF(json_array_get(list, i), "pid") == pid)
			return json_array_get(list, i);
	return NULL;
}

Test(questions, status_counts_audit_apps_and_intruders, .timeout = 90)
{
	struct sandbox sb;
	struct server srv;
	struct holding web, aud, intruder;
	char args[512];

	sandbox_init(&sb, status_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold(&web, &sb, "web", "web", false, &srv, 3, 0);
	hold(&aud, &sb, "aud", "aud", false, &srv, 2, 0);
	hold(&intruder, &sb, "intruder", NULL, false, &srv, 1, 21450);

	snprintf(args, sizeof(args), "status -c '%s' --json", sb.policy);
	json_t *root = tool_json(args);
	json_t *w = app_entry(root, "web"), *a = app_entry(root, "aud");
	cr_assert(w && a, "%s", json_dumps(root, 0));
	cr_expect_eq(INT_OF(w, "in_use"), 3, "the intruder's socket is not web's: %s", json_dumps(w, 0));
	cr_expect_eq(INT_OF(json_object_get(w, "by_state"), "established"), 3);
	cr_expect_eq(INT_OF(json_array_get(json_object_get(w, "top"), 0), "pid"), web.pid);
	cr_expect_eq(INT_OF(json_array_get(json_object_get(w, "top"), 0), "ports"), 3);
	json_t *intr = pid_in(json_object_get(w, "intruders"), intruder.pid);
	cr_assert_not_null(intr, "no intruder: %s", json_dumps(w, 0));
	cr_expect_str_eq(STR_OF(intr, "comm"), "python3");
	cr_expect_eq(INT_OF(intr, "ports"), 1);
	cr_expect_eq(INT_OF(w, "intruder_sockets"), 1);
	cr_expect_float_eq(json_real_value(json_object_get(w, "utilisation")), 4 / 100.0, 1e-9,
			   "utilisation: every port of the range held, the intruder's too");

	cr_expect_str_eq(STR_OF(a, "mode"), "audit");
	cr_expect_eq(INT_OF(a, "in_use"), 2, "an audit-mode app's sockets are on kernel ports: %s", json_dumps(a, 0));
	cr_expect_eq(INT_OF(json_array_get(json_object_get(a, "top"), 0), "pid"), aud.pid);
	cr_expect_eq(json_array_size(json_object_get(a, "intruders")), 0);
	json_decref(root);

	/* Text and Prometheus say it too, with no pid label. */
	struct run_result r;
	snprintf(args, sizeof(args), "status -c '%s' --app web", sb.policy);
	tool_text(&r, args);
	char line[128];
	snprintf(line, sizeof(line), "  intruders: %d python3 (1)\n", (int)intruder.pid);
	cr_expect(strstr(r.out, line), "%s", r.out);
	snprintf(args, sizeof(args), "status -c '%s' --prometheus", sb.policy);
	tool_text(&r, args);
	cr_expect(strstr(r.out, "portfence_intruders{app=\"web\"} 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "portfence_ports_in_use{app=\"aud\",state=\"established\"} 2\n"), "%s", r.out);
	cr_expect(!strstr(r.out, "pid="), "no pid label: %s", r.out);
	snprintf(args, sizeof(args), "status -c '%s' --prometheus | promtool check metrics", sb.policy);
	tool_text(&r, args);
	cr_expect_eq(r.status, 0, "promtool check metrics: %s%s", r.out, r.err);
	cr_expect_str_eq(r.err, "", "promtool: %s", r.err);

	unhold(&intruder);
	unhold(&aud);
	unhold(&web);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

static const char bpf_policy[] =
	"apps = ( { name = \"web\"; range = [ 21600, 21699 ]; algorithm = \"sequential\"; } );";

/* A `run --bpf` run: its processes and its cgroup show. */
Test(questions, status_shows_a_bpf_run, .timeout = 90)
{
	skip_unless_bpf_machine();
	struct sandbox sb;
	struct server srv;
	struct holding run;
	char args[512];

	sandbox_init(&sb, bpf_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold(&run, &sb, "bpf", "web", true, &srv, 4, 0);
	for (int i = 0; i < 100 && srv.count < 4; i++)
		usleep(20000);
	cr_expect_eq(srv.count, 4);
	snprintf(args, sizeof(args), "status -c '%s' --json --app web", sb.policy);
	json_t *root = tool_json(args);
	json_t *w = app_entry(root, "web");
	cr_assert_not_null(w);
	cr_expect_eq(INT_OF(w, "in_use"), 4, "%s", json_dumps(w, 0));
	json_t *top = json_array_get(json_object_get(w, "top"), 0);
	cr_assert_not_null(top, "top processes: none: %s", json_dumps(w, 0));
	cr_expect_str_eq(STR_OF(top, "comm"), "python3");
	cr_expect_eq(INT_OF(top, "ports"), 4);
	json_t *cgroups = json_object_get(w, "cgroups");
	cr_assert_eq(json_array_size(cgroups), 1, "%s", json_dumps(w, 0));
	cr_expect(strncmp(json_string_value(json_array_get(cgroups, 0)), "portfence/web-", 14) == 0, "%s",
		  json_dumps(w, 0));
	cr_expect_eq(json_array_size(json_object_get(w, "intruders")), 0, "%s", json_dumps(w, 0));
	json_decref(root);

	/* who names the run's process, its app, backend and cgroup */
	char ports[64];
	unsigned first = 0;
	read_all(run.ready, ports, sizeof(ports));
	cr_assert_eq(sscanf(ports, "%u", &first), 1, "%s", ports);
	snprintf(args, sizeof(args), "who 127.0.0.1:%u --json -c '%s'", first, sb.policy);
	root = tool_json(args);
	json_t *proc = json_array_get(json_object_get(json_array_get(json_object_get(root, "sockets"), 0), "processes"), 0);
	cr_assert_not_null(proc, "%s", json_dumps(root, 0));
	cr_expect_str_eq(STR_OF(proc, "app"), "web");
	cr_expect_str_eq(STR_OF(proc, "backend"), "bpf");
	cr_expect(strncmp(STR_OF(proc, "cgroup"), "/portfence/web-", 15) == 0, "%s", json_dumps(proc, 0));
	json_decref(root);
	unhold(&run);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

/* The alert rules dist/ ships: valid, and their unit tests pass, both by
 * the real promtool. */
Test(questions, prometheus_rules_pass_promtool, .timeout = 60)
{
	struct run_result r;
	char *check[] = {"promtool", "check", "rules", "dist/prometheus/portfence.rules.yml", NULL};
	run_program(&r, check, NULL, NULL);
	cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect(strstr(r.out, "SUCCESS: 5 rules found"), "%s%s", r.out, r.err);
	char *test[] = {"sh", "-c", "cd dist/prometheus && promtool test rules portfence.rules.test.yml", NULL};
	run_program(&r, test, NULL, NULL);
	cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect(strstr(r.out, "SUCCESS"), "%s%s", r.out, r.err);
}

/* status --json and --prometheus give app these counters. */
static void expect_counters(const struct sandbox *sb, const char *app, long assignments, long failures)
{
	char args[512], line[256];
	struct run_result r;

	snprintf(args, sizeof(args), "status -c '%s' --json --app %s", sb->policy, app);
	json_t *root = tool_json(args);
	json_t *entry = app_entry(root, app);
	cr_assert_not_null(entry);
	cr_expect_eq(INT_OF(entry, "assignments"), assignments, "%s", json_dumps(entry, 0));
	cr_expect_eq(INT_OF(entry, "assignment_failures"), failures, "%s", json_dumps(entry, 0));
	json_decref(root);
	snprintf(args, sizeof(args), "status -c '%s' --prometheus --app %s", sb->policy, app);
	tool_text(&r, args);
	snprintf(line, sizeof(line), "portfence_assignments_total{app=\"%s\"} %ld\n", app, assignments);
	cr_expect(strstr(r.out, line), "no %s in %s", line, r.out);
	snprintf(line, sizeof(line), "portfence_assignment_failures_total{app=\"%s\"} %ld\n", app, failures);
	cr_expect(strstr(r.out, line), "no %s in %s", line, r.out);
}

static const char tiny_policy[] =
	"apps = ( { name = \"tiny\"; range = [ 21700, 21700 ]; algorithm = \"sequential\"; } );";

/* The shim's counters: one port, held; a second connect to the same
 * destination finds none (EADDRNOTAVAIL), one to another gets it. */
Test(questions, status_counts_assignments_and_failures, .timeout = 90)
{
	struct sandbox sb;
	struct server one, other;
	struct holding h;

	sandbox_init(&sb, tiny_policy);
	server_start(&one, "127.0.0.1", SERVE_STALL);
	server_start(&other, "127.0.0.1", SERVE_GREET_CLOSE);
	hold(&h, &sb, "tiny", "tiny", false, &one, 1, 0);
	/* refused on the first pair (99 = EADDRNOTAVAIL), served on the others */
	char port1[8], port2[8];
	snprintf(port1, sizeof(port1), "%u", one.port);
	snprintf(port2, sizeof(port2), "%u", other.port);
	char *argv[] = {"python3", "-c", (char *)client, "1", "127.0.0.1", port1, "127.0.0.1", port2, NULL};
	struct run_result r;
	run_under(&r, &sb, "tiny", argv, NULL);
	cr_expect(strstr(r.out, "refused 127.0.0.1 99"), "%s%s", r.out, r.err);

	expect_counters(&sb, "tiny", 2, 1);
	unhold(&h);
	server_stop(&one);
	server_stop(&other);
	sandbox_cleanup(&sb);
}

/* Without records (no log in the policy), repeated connects to one
 * place take the shim's express path (shim/express.c), which counts its
 * assignments itself: status must still see every one.  Abortive closes
 * leave each 4-tuple clean, so the range comes round express. */
static const char abortive_client[] =
	"import socket, struct, sys\n"
	"ok = 0\n"
	"for _ in range(int(sys.argv[3])):\n"
	"    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
	"    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); s.close(); ok += 1\n"
	"print('ok', ok)\n";

Test(questions, status_counts_assignments_without_records, .timeout = 90)
{
	struct sandbox sb;
	struct server srv;

	sandbox_init(&sb, "");
	FILE *f = fopen(sb.policy, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nstate_dir = \"%s\";\n"
		"apps = ( { name = \"quiet\"; range = [ 23800, 23807 ]; algorithm = \"sequential\"; } );\n",
		sb.state);
	fclose(f);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	char port[8];
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"python3", "-c", (char *)abortive_client, "127.0.0.1", port, "40", NULL};
	struct run_result r;
	run_under(&r, &sb, "quiet", argv, NULL);
	cr_expect(strstr(r.out, "ok 40"), "%s%s", r.out, r.err);
	cr_expect_eq(access(sb.log, F_OK), -1, "no records were asked for, yet %s exists", sb.log);

	expect_counters(&sb, "quiet", 40, 0);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

static const char cnt_policy[] =
	"apps = ( { name = \"cnt\"; range = [ 23700, 23703 ]; algorithm = \"sequential\"; } );";

/* Holds argv[5] connections to the server, then tries argv[6] more to
 * it, counting those refused with EADDRNOTAVAIL; writes "held refused"
 * to READY and waits for STOP. */
static const char filler[] =
	"import errno, os, socket, sys, time\n"
	"host, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
	"held = [socket.create_connection((host, port)) for _ in range(int(sys.argv[5]))]\n"
	"refused = 0\n"
	"for _ in range(int(sys.argv[6])):\n"
	"    try: held.append(socket.create_connection((host, port)))\n"
	"    except OSError as e: refused += e.errno == errno.EADDRNOTAVAIL\n"
	"with open(ready + '.tmp', 'w') as f: f.write('%d %d' % (len(held), refused))\n"
	HOLD_UNTIL_STOP;

/* The BPF programs' counters: under `run --bpf`, four connects fill the
 * four-port range and three more to the same destination find no port;
 * status reads 4 assignments and 3 failures from the run's programs. */
Test(questions, status_counts_bpf_assignments_and_failures, .timeout = 90)
{
	skip_unless_bpf_machine();
	struct sandbox sb;
	struct server srv;
	struct holding h;
	char ready[64] = "";
	int held = -1, refused = -1;

	sandbox_init(&sb, cnt_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold_with(&h, &sb, "cnt", "cnt", true, filler, &srv, 4, "3");
	read_all(h.ready, ready, sizeof(ready));
	cr_assert_eq(sscanf(ready, "%d %d", &held, &refused), 2, "%s", ready);
	cr_expect_eq(held, 4, "connections held: %s", ready);
	cr_expect_eq(refused, 3, "connects refused with EADDRNOTAVAIL: %s", ready);
	for (int i = 0; i < 100 && srv.count < 4; i++)
		usleep(20000);
	cr_expect_eq(srv.count, 4, "the server saw %d connections", (int)srv.count);

	expect_counters(&sb, "cnt", 4, 3);
	unhold(&h);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

/* ---- report --suggest, --against ---- */

static json_t *string_in(json_t *array, const char *text)
{
	for (size_t i = 0; i < json_array_size(array); i++)
		if (strcmp(json_string_value(json_array_get(array, i)), text) == 0)
			return json_array_get(array, i);
	return NULL;
}

/* The rules suggested from an audit-mode log cover what the app did:
 * the same program, now enforced with them, is refused nothing. */
Test(questions, report_suggest_covers_what_was_seen, .timeout = 90)
{
	struct report_setup s;
	char args[1024];

	report_setup(&s);
	snprintf(args, sizeof(args), "report --suggest --json -c '%s' '%s'", s.sb.policy, s.sb.log);
	json_t *root = tool_json(args);
	json_t *aud = app_entry(root, "aud");
	cr_assert_not_null(aud, "%s", json_dumps(root, 0));
	json_t *allow = json_object_get(aud, "allow");
	cr_expect_eq(json_array_size(allow), 3, "%s", json_dumps(aud, 0));
	cr_expect_not_null(string_in(allow, s.remote4), "%s", json_dumps(aud, 0));
	cr_expect_not_null(string_in(allow, s.remote6), "%s", json_dumps(aud, 0));
	cr_expect_not_null(string_in(allow, s.refused), "%s", json_dumps(aud, 0));
	cr_expect_eq(INT_OF(aud, "peak_per_minute"), 3);
	cr_expect_eq(INT_OF(aud, "recommended_range_size"), 16);

	/* Enforce with exactly those rules: nothing refused by policy. */
	char policy[256], rules[512] = "";
	for (size_t i = 0; i < json_array_size(allow); i++)
		snprintf(rules + strlen(rules), sizeof(rules) - strlen(rules), "%s\"%s\"", i ? ", " : "",
			 json_string_value(json_array_get(allow, i)));
	snprintf(policy, sizeof(policy), "%s/enforced.conf", s.sb.dir);
	FILE *f = fopen(policy, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nlog = { file = \"%s/enforced.jsonl\"; };\nstate_dir = \"%s\";\n"
		   "apps = ( { name = \"aud\"; range = [ 21200, 21299 ]; allow = [ %s ]; } );\n",
		s.sb.dir, s.sb.state, rules);
	fclose(f);
	json_decref(root);
	struct run_result r;
	snprintf(args, sizeof(args), "check -c '%s'", policy);
	tool_text(&r, args);
	cr_expect_eq(r.status, 0, "the suggested rules are valid: %s", r.err);
	char p4[8], p6[8];
	snprintf(p4, sizeof(p4), "%u", s.v4.port);
	snprintf(p6, sizeof(p6), "%u", s.v6.port);
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "'%s' run -c '%s' -a aud -- python3 -c \"$0\" 1 127.0.0.1 %s ::1 %s 127.0.0.2 %s",
		 build_path("portfence"), policy, p4, p6, p4);
	char *argv[] = {"sh", "-c", cmd, (char *)client, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect(!strstr(r.out, "refused 127.0.0.2 1\n") && !strstr(r.out, " 1\n"), "EPERM: %s", r.out);
	cr_expect(strstr(r.out, "refused 127.0.0.2 111"), "no server there, but not refused by policy: %s", r.out);
	report_teardown(&s);
}

/* Prefixes and port ranges only where exact, and the model's size. */
Test(questions, report_suggest_merges_only_exact_prefixes)
{
	struct temp_dir temp;
	char args[256];
	static const char *const remotes[] = {"10.0.0.0:443", "10.0.0.1:443", "10.0.0.2:443", "10.0.0.1:444",
					      "10.0.0.5:80",  "10.0.0.5:81",  "10.0.0.5:82",  "[2001:db8::]:53",
					      "[2001:db8::1]:53"};
	temp_dir_make(&temp, "suggest");
	FILE *f = fopen(temp.log, "w");
	cr_assert_not_null(f);
	for (size_t i = 0; i < sizeof(remotes) / sizeof(*remotes); i++)
		fprintf(f, "{\"ts\":\"2026-11-21T10:00:%02zu.000000Z\",\"event\":\"assign\",\"app\":\"m\",\"pid\":1,"
			   "\"exe\":\"/bin/x\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"10.0.0.9:61000\","
			   "\"remote\":\"%s\",\"algorithm\":\"random\",\"attempts\":1,\"result\":\"ok\"}\n",
			i, remotes[i]);
	/* 40 to one destination within 10:01, 30 more in 10:02 */
	for (int i = 0; i < 70; i++)
		fprintf(f, "{\"ts\":\"2026-11-21T10:0%d:%02d.000000Z\",\"event\":\"assign\",\"app\":\"m\",\"pid\":1,"
			   "\"exe\":\"/bin/x\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"10.0.0.9:61001\","
			   "\"remote\":\"10.0.0.5:80\",\"algorithm\":\"random\",\"attempts\":1,\"result\":\"ok\"}\n",
			i < 40 ? 1 : 2, i % 40);
	fclose(f);
	snprintf(args, sizeof(args), "report --suggest --json '%s'", temp.log);
	json_t *root = tool_json(args);
	json_t *m = app_entry(root, "m");
	cr_assert_not_null(m);
	json_t *allow = json_object_get(m, "allow");
	static const char *const expected[] = {"10.0.0.0/31:443", "10.0.0.2:443", "10.0.0.1:444", "10.0.0.5:80-82",
					       "[2001:db8::/127]:53"};
	cr_expect_eq(json_array_size(allow), 5, "%s", json_dumps(allow, 0));
	for (size_t i = 0; i < 5; i++)
		cr_expect_not_null(string_in(allow, expected[i]), "%s not in %s", expected[i], json_dumps(allow, 0));
	cr_expect_eq(INT_OF(m, "peak_per_minute"), 40);
	cr_expect_eq(INT_OF(m, "recommended_range_size"), 100, "2.5 x 40");
	json_decref(root);
	temp_dir_remove(&temp);
}

/* The rule as the policy wrote it, where the policy keeps that text. */
#define RULE_V6 "[::1/128]"

/* What would change under another policy, for the log of real runs. */
Test(questions, report_against_another_policy, .timeout = 90)
{
	struct report_setup s;
	char args[1024], other[256];

	report_setup(&s);
	snprintf(other, sizeof(other), "%s/other.conf", s.sb.dir);
	FILE *f = fopen(other, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\n"
		   "apps = ( { name = \"web\"; range = [ 21150, 21249 ]; deny = [ \"[::1]\" ]; },\n"
		   "         { name = \"py\"; range = [ 21300, 21309 ]; match = { exe = [ \"*/python3*\" ]; }; } );\n");
	fclose(f);
	snprintf(args, sizeof(args), "report --against '%s' --json -c '%s' '%s'", other, s.sb.policy, s.sb.log);
	json_t *root = tool_json(args);
	json_t *web = app_entry(root, "web");
	cr_assert_not_null(web, "%s", json_dumps(root, 0));
	json_t *deny = json_object_get(web, "would_deny");
	cr_assert_eq(json_array_size(deny), 1, "%s", json_dumps(web, 0));
	cr_expect_str_eq(STR_OF(json_array_get(deny, 0), "remote"), s.remote6);
	cr_expect_eq(INT_OF(json_array_get(deny, 0), "count"), 5);
	char rule[300];
	snprintf(rule, sizeof(rule), "deny \"%s\" %s:2", RULE_V6, other);
	cr_expect_str_eq(STR_OF(json_array_get(deny, 0), "rule"), rule);
	json_t *allow = json_object_get(web, "would_allow");
	cr_assert_eq(json_array_size(allow), 1, "%s", json_dumps(web, 0));
	cr_expect_str_eq(STR_OF(json_array_get(allow, 0), "remote"), s.refused);
	json_t *outside = json_object_get(web, "outside_range");
	cr_expect_eq(INT_OF(outside, "ports"), 10, "ports 21100-21109 are below 21150: %s", json_dumps(web, 0));
	cr_expect_eq(INT_OF(outside, "assignments"), 10);
	json_t *moved = json_object_get(web, "rematched");
	cr_assert_eq(json_array_size(moved), 1, "%s", json_dumps(web, 0));
	cr_expect_str_eq(STR_OF(json_array_get(moved, 0), "app"), "py", "%s", json_dumps(moved, 0));
	json_t *aud = app_entry(root, "aud");
	cr_expect(json_is_false(json_object_get(aud, "in_policy")), "%s", json_dumps(aud, 0));
	json_decref(root);
	report_teardown(&s);
}

/* The record scanner reads what jansson reads: escapes, UTF-8 (left to
 * jansson), a duplicate key (refused, as jansson refuses it). */
Test(questions, report_reads_records_as_jansson_does)
{
	char log[] = "/tmp/pf-scan-XXXXXX", args[256];
	int fd = mkstemp(log);
	dprintf(fd, "{\"ts\":\"2026-11-21T10:00:00Z\",\"event\":\"assign\",\"app\":\"w\\u0065b\",\"attempts\":2,"
		    "\"local\":\"127.0.0.1:61000\",\"remote\":\"127.0.0.1:80\",\"exe\":\"/x\\\"y\\\\z\"}\n"
		    "{\"ts\":\"2026-11-21T10:00:01Z\",\"event\":\"assign\",\"app\":\"w\xc3\xa9\x62\",\"attempts\":1.5,"
		    "\"local\":\"127.0.0.1:61001\",\"remote\":\"127.0.0.1:80\"}\n"
		    "{\"ts\":\"2026-11-21T10:00:02Z\",\"event\":\"assign\",\"app\":\"web\",\"app\":\"web\"}\n"
		    "  { \"ts\" : \"2026-11-21T10:00:03Z\" , \"event\" : \"deny\" , \"app\" : \"web\", \"n\": null,"
		    " \"t\": true, \"remote\": \"192.0.2.1:25\", \"x\": -1e3 }  \n"
		    "{\"ts\":\"2026-11-21T10:00:04Z\",\"event\":\"assign\",\"app\":\"web\",\"bad\":01}\n");
	close(fd);
	snprintf(args, sizeof(args), "report --json '%s'", log);
	json_t *root = tool_json(args);
	unlink(log);
	json_t *web = app_entry(root, "web"), *accented = app_entry(root, "w\xc3\xa9" "b");
	cr_assert(web && accented, "%s", json_dumps(root, 0));
	cr_expect_eq(INT_OF(web, "assignments"), 1);
	cr_expect_eq(INT_OF(web, "attempts_max"), 2);
	cr_expect_eq(INT_OF(web, "denials"), 1);
	cr_expect_eq(INT_OF(accented, "assignments"), 1);
	cr_expect_eq(INT_OF(accented, "attempts_max"), 0, "1.5 is no integer");
	cr_expect_eq(INT_OF(root, "malformed_lines"), 2, "the duplicate key and 01: %s", json_dumps(root, 0));
	json_decref(root);
}

/* ---- status --watch, under tmux ---- */

static const char watch_policy[] =
	"apps = ( { name = \"web\"; range = [ 21800, 21899 ]; algorithm = \"sequential\"; } );";

static void tmux(struct run_result *r, const char *args)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "tmux -L pf-watch-test %s", args);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
}

Test(questions, status_watch_under_tmux, .timeout = 90)
{
	struct sandbox sb;
	struct server srv;
	struct holding web, intruder;
	struct run_result r;
	char args[1024];

	sandbox_init(&sb, watch_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold(&web, &sb, "web", "web", false, &srv, 3, 0);
	hold(&intruder, &sb, "intruder", NULL, false, &srv, 1, 21850);
	snprintf(args, sizeof(args), "new-session -d -x 100 -y 30 \"PORTFENCE_CONFIG=/nonexistent '%s' status --watch -c '%s'\"",
		 build_path("portfence"), sb.policy);
	tmux(&r, args);
	cr_assert_eq(r.status, 0, "tmux: %s", r.err);
	char screen[8192] = "";
	const char *line = NULL;
	for (int i = 0; i < 50 && !line; i++) {
		usleep(100000);
		tmux(&r, "capture-pane -p");
		memcpy(screen, r.out, sizeof(screen) - 1);
		line = strstr(screen, "web 21800-21899: in use 3, held 4/100 (4.0%), intruders 1");
	}
	cr_expect_not_null(line, "%s", screen);
	/* the map: ports 21800-21802 established, 21850 the intruder's */
	cr_expect(strstr(screen, "\n  ###..."), "%s", screen);
	char row[128];
	memset(row, '.', 47);
	row[47] = '\0';
	snprintf(row + 47, sizeof(row) - 47, "!..");
	cr_expect(strstr(screen, row), "intruder cell at 21850: %s", screen);
	cr_expect(strstr(screen, "(q quits)"), "%s", screen);
	/* one second later, rates (the shim's counters) are shown */
	usleep(1500000);
	tmux(&r, "capture-pane -p");
	cr_expect(strstr(r.out, "assign/s 0.0, failures 0 (+0)"), "%s", r.out);
	tmux(&r, "send-keys q");
	bool gone = false;
	for (int i = 0; i < 30 && !gone; i++) {
		usleep(100000);
		tmux(&r, "has-session");
		gone = r.status != 0;
	}
	cr_expect(gone, "q did not quit");
	if (!gone)
		tmux(&r, "kill-server");
	unhold(&intruder);
	unhold(&web);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

static const char redraw_policy[] =
	"apps = ( { name = \"web\"; range = [ 23800, 23899 ]; algorithm = \"sequential\"; } );";

static int occurrences(const char *text, const char *what)
{
	int n = 0;
	for (const char *at = text; (at = strstr(at, what)); at += strlen(what))
		n++;
	return n;
}

/* --watch writes only the lines that changed: over four refreshes the
 * screen is cleared once and the port map row, which does not change,
 * is written once, while the header (its clock) is written each time. */
Test(questions, status_watch_redraws_only_what_changed, .timeout = 90)
{
	struct sandbox sb;
	struct server srv;
	struct holding web;
	struct run_result r;
	char cmd[1024], out[192], text[65536] = "";

	sandbox_init(&sb, redraw_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold(&web, &sb, "web", "web", false, &srv, 3, 0);
	snprintf(out, sizeof(out), "%s/watch.out", sb.dir);
	snprintf(cmd, sizeof(cmd), "timeout -s TERM 3.6 '%s' status --watch -c '%s' > '%s' < /dev/null",
		 build_path("portfence"), sb.policy, out);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	read_all(out, text, sizeof(text));
	int frames = occurrences(text, "(q quits)");
	cr_expect_geq(frames, 3, "%d frames: %s", frames, text);
	cr_expect_eq(occurrences(text, "\033[2J"), 1, "%s", text);
	/* row 3: the map's first row, three established ports then free */
	const char *map_row = "\033[3;1H  \033[32m#\033[0m\033[32m#\033[0m\033[32m#\033[0m....";
	cr_expect_eq(occurrences(text, map_row), 1, "the unchanged map row written %d times in %d frames",
		     occurrences(text, map_row), frames);
	cr_expect_eq(occurrences(text, "\033[3;1H"), 1, "row 3 written %d times: %s", occurrences(text, "\033[3;1H"), text);
	cr_expect(strstr(text, " 23800-23899: in use 3, held 3/100 (3.0%), intruders 0"), "%s", text);
	unhold(&web);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}

static const char nonroot_policy[] =
	"apps = ( { name = \"web\"; range = [ 21900, 21999 ]; algorithm = \"sequential\"; } );";

/* Not root: status says how many processes it could not read, and
 * counts their sockets for the range's app, never as intruders. */
Test(questions, status_as_non_root_says_what_it_could_not_see, .timeout = 90)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to become another user");
	struct sandbox sb;
	struct server srv;
	struct holding web;
	struct run_result r;
	char args[1024];

	sandbox_init(&sb, nonroot_policy);
	server_start(&srv, "127.0.0.1", SERVE_STALL);
	hold(&web, &sb, "web", "web", false, &srv, 2, 0);
	snprintf(args, sizeof(args), "chmod 0644 '%s' && setpriv --reuid=65534 --regid=65534 --clear-groups '%s' status --json -c '%s'",
		 sb.policy, build_path_for_others("portfence"), sb.policy);
	char *argv[] = {"sh", "-c", args, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.err, "portfence: status: cannot read the open files of ") &&
		  strstr(r.err, "(/proc/PID/fd: Permission denied) (run as root)"), "%s", r.err);
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "%s", r.out);
	json_t *w = app_entry(root, "web");
	cr_expect_eq(INT_OF(w, "in_use"), 2, "%s", json_dumps(w, 0));
	cr_expect_eq(json_array_size(json_object_get(w, "intruders")), 0);
	json_decref(root);
	unhold(&web);
	server_stop(&srv);
	sandbox_cleanup(&sb);
}
