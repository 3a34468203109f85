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
#include <unistd.h>

#include "harness.h"

#define INT_OF(e, k) json_integer_value(json_object_get((e), (k)))
#define STR_OF(e, k) json_string_value(json_object_get((e), (k)))

/* Line 4 is the first line of the apps text (sandbox_init writes three). */
static const char report_policy[] =
	"apps = ( { name = \"web\"; range = [ 64100, 64199 ]; algorithm = \"sequential\";\n"
	"           deny = [ \"127.0.0.2/32\" ]; },\n"
	"         { name = \"aud\"; range = [ 64200, 64299 ]; mode = \"audit\";\n"
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

static json_t *tool_json(const char *args)
{
	char cmd[1024];
	static struct run_result r;
	snprintf(cmd, sizeof(cmd), "PORTFENCE_CONFIG=/nonexistent '%s' %s", build_path("portfence"), args);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
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
	cr_expect_eq(json_integer_value(json_array_get(range, 0)), 64100);
	cr_expect_eq(json_integer_value(json_array_get(range, 1)), 64199);
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
	snprintf(rule, sizeof(rule), "deny 127.0.0.2/32 (%s:5)", s.sb.policy);
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
	snprintf(rule, sizeof(rule), "no allow rule matches (%s:7)", s.sb.policy);
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
	char cmd[1024];
	struct run_result r;
	snprintf(cmd, sizeof(cmd), "'%s' report -c '%s' --app web '%s'", build_path("portfence"), s.sb.policy, s.sb.log);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	char line[256];
	snprintf(line, sizeof(line), "    %s  count 5, ports 5, first ", s.remote4);
	cr_expect(strstr(r.out, line), "%s", r.out);
	snprintf(line, sizeof(line), "    %s  count 5, last ", s.refused);
	cr_expect(strstr(r.out, line), "%s", r.out);
	snprintf(line, sizeof(line), ", rule deny 127.0.0.2/32 (%s:5)\n", s.sb.policy);
	cr_expect(strstr(r.out, line), "%s", r.out);
	cr_expect(strstr(r.out, "of 100 (range 64100-64199): coverage 10.0%"), "%s", r.out);
	report_teardown(&s);
}

/* ---- who ---- */

static const char who_policy[] =
	"apps = ( { name = \"web\"; range = [ 64300, 64300 ]; algorithm = \"sequential\"; } );";

/* Connects to argv[1]:argv[2], writes its local port to argv[3], then
 * holds the connection until argv[4] exists. */
static const char holder[] =
	"import os, socket, sys, time\n"
	"s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
	"with open(sys.argv[3] + '.tmp', 'w') as f: f.write(str(s.getsockname()[1]))\n"
	"os.rename(sys.argv[3] + '.tmp', sys.argv[3])\n"
	"deadline = time.time() + 50\n"
	"while not os.path.exists(sys.argv[4]) and time.time() < deadline: time.sleep(0.02)\n";

static void utc_now(char *out, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

Test(questions, who_names_the_holder_now_and_then, .timeout = 90)
{
	struct sandbox sb;
	struct server a, b;
	char ready[192], stop[192], out[192], port[8], args[768], then[32];

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
	cr_assert(server_saw(&a, 64300), "the server saw no connection from 64300");

	snprintf(args, sizeof(args), "who 127.0.0.1:64300 --proto tcp -c '%s' --json", sb.policy);
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

	snprintf(args, sizeof(args), "who 127.0.0.1:64300 --at %s --json '%s'", then, sb.log);
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
	char cmd[512];
	struct run_result r;
	snprintf(cmd, sizeof(cmd), "'%s' who 127.0.0.1:64300 --at 2020-01-01 '%s'", build_path("portfence"), sb.log);
	char *sh[] = {"sh", "-c", cmd, NULL};
	run_program(&r, sh, NULL, NULL);
	cr_expect_eq(r.status, 1);
	cr_expect(strstr(r.out, "no record assigned local port 64300 before 2020-01-01T00:00:00Z"), "%s", r.out);
	snprintf(cmd, sizeof(cmd), "'%s' who 127.0.0.1:64300 --at '%s' '%s'", build_path("portfence"), then, sb.log);
	run_program(&r, sh, NULL, NULL);
	cr_expect_eq(r.status, 0, "%s", r.err);
	snprintf(args, sizeof(args), "was assigned at "), (void)args;
	cr_expect(strstr(r.out, " tcp 127.0.0.1:64300 was assigned at ") && strstr(r.out, "  reused at "), "%s", r.out);
	server_stop(&a);
	server_stop(&b);
	sandbox_cleanup(&sb);
}
