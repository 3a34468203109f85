/* portfence status reads the kernel's socket tables: a confined program
 * holds known sockets in its app's range (established over IPv4 and
 * IPv6, listening, TIME_WAIT, unconnected UDP) and status counts them,
 * names the program, and prints them as text, SPEC's JSON and Prometheus
 * metrics that promtool accepts. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Each test has a range of its own, which no other suite uses: the
 * TIME_WAIT sockets a test leaves stay for a minute. */
#define HOLDER_APP "holder"
static const char policy_format[] =
	"apps = ( { name = \"holder\"; range = [ %u, %u ]; algorithm = \"sequential\"; },\n"
	"         { name = \"idle \\\"q\\\\\"; range = [ 65400, 65409 ]; } );";

static void status_sandbox(struct sandbox *sb, unsigned lo)
{
	char text[512];
	snprintf(text, sizeof(text), policy_format, lo, lo + 99);
	sandbox_init(sb, text);
}

/* Opens the sockets, writes their local ports to READY, then waits for
 * STOP.  Held connections go to servers that never close them; the
 * TIME_WAIT one to a server that closes once it reads the program's
 * EOF, so that the program's side closed first. */
static const char holder[] =
	"import os, socket, sys, time\n"
	"tcp4, tcp6, drain, udp = (int(a) for a in sys.argv[1:5])\n"
	"listen, ready, stop = int(sys.argv[5]), sys.argv[6], sys.argv[7]\n"
	"held = [socket.create_connection(('127.0.0.1', tcp4)) for _ in range(2)]\n"
	"held.append(socket.create_connection(('::1', tcp6)))\n"
	"gone = socket.create_connection(('127.0.0.1', drain))\n"
	"ports = [s.getsockname()[1] for s in held + [gone]]\n"
	"gone.close()\n"
	"lsn = socket.socket(); lsn.bind(('127.0.0.1', listen)); lsn.listen(); held.append(lsn)\n"
	"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b'x', ('127.0.0.1', udp)); held.append(u)\n"
	"ports += [listen, u.getsockname()[1]]\n"
	"with open(ready + '.tmp', 'w') as f: f.write(' '.join(map(str, ports)))\n"
	"os.rename(ready + '.tmp', ready)\n"
	"deadline = time.time() + 50\n"
	"while not os.path.exists(stop) and time.time() < deadline: time.sleep(0.02)\n";

struct held {
	struct sandbox sb;
	struct server tcp4, tcp6, drain, udp;
	unsigned lo;
	pid_t pid;
	char ready[192], stop[192], out[192];
	unsigned ports[6];
};

static void hold_start(struct held *h, unsigned lo)
{
	char ports[5][8];

	h->lo = lo;
	status_sandbox(&h->sb, lo);
	server_start(&h->tcp4, "127.0.0.1", SERVE_STALL);
	server_start(&h->tcp6, "::1", SERVE_STALL);
	server_start(&h->drain, "127.0.0.1", SERVE_DRAIN);
	server_start(&h->udp, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(h->ready, sizeof(h->ready), "%s/ready", h->sb.dir);
	snprintf(h->stop, sizeof(h->stop), "%s/stop", h->sb.dir);
	snprintf(h->out, sizeof(h->out), "%s/out", h->sb.dir);
	const unsigned numbers[5] = {h->tcp4.port, h->tcp6.port, h->drain.port, h->udp.port, lo + 99};
	for (int i = 0; i < 5; i++)
		snprintf(ports[i], sizeof(ports[i]), "%u", numbers[i]);
	char *argv[] = {"python3", "-c", (char *)holder, ports[0], ports[1], ports[2], ports[3], ports[4],
			h->ready, h->stop, NULL};
	h->pid = spawn_under(&h->sb, HOLDER_APP, argv, h->out);
	if (!await_file(h->ready, 30)) {
		struct run_result r;
		char *cat[] = {"cat", h->out, NULL};
		run_program(&r, cat, NULL, NULL);
		cr_assert_fail("the holder never got ready: %s", r.out);
	}
	FILE *f = fopen(h->ready, "r");
	cr_assert_not_null(f);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(fscanf(f, "%u", &h->ports[i]), 1);
	fclose(f);
	for (int i = 0; i < 6; i++)
		cr_assert(h->ports[i] >= lo && h->ports[i] <= lo + 99, "port %u outside the range", h->ports[i]);
}

static void hold_stop(struct held *h)
{
	close(open(h->stop, O_CREAT | O_WRONLY, 0600));
	cr_expect_eq(wait_child(h->pid), 0, "the holder failed");
	server_stop(&h->tcp4);
	server_stop(&h->tcp6);
	server_stop(&h->drain);
	server_stop(&h->udp);
	sandbox_cleanup(&h->sb);
}

static void status_run(struct run_result *r, const struct held *h, const char *extra)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "'%s' status -c '%s' %s", build_path("portfence"), h->sb.policy, extra);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
	cr_assert_eq(r->status, 0, "status %s: %s", extra, r->err);
}

static json_t *holder_entry(json_t *root)
{
	json_t *entry = app_entry(root, HOLDER_APP);
	cr_assert_not_null(entry, "no app " HOLDER_APP);
	return entry;
}

static json_t *status_json(const struct held *h, const char *extra)
{
	static struct run_result r;
	char args[256];
	snprintf(args, sizeof(args), "--json %s", extra);
	status_run(&r, h, args);
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "not JSON: %s", r.out);
	return root;
}

#define INT_OF(e, k) json_integer_value(json_object_get((e), (k)))

/* The client that closed first reaches TIME_WAIT once the server has
 * read its EOF and closed: waited for, up to 10 s. */
static json_t *status_after_time_wait(const struct held *h)
{
	for (int i = 0; i < 100; i++) {
		json_t *root = status_json(h, "");
		json_t *by_state = json_object_get(holder_entry(root), "by_state");
		if (INT_OF(by_state, "time-wait") == 1)
			return root;
		json_decref(root);
		usleep(100000);
	}
	cr_assert_fail("no TIME_WAIT socket appeared");
	return NULL;
}

static unsigned distinct(const unsigned *ports, int count)
{
	unsigned n = 0;
	for (int i = 0; i < count; i++) {
		bool seen = false;
		for (int j = 0; j < i; j++)
			seen |= ports[j] == ports[i];
		n += !seen;
	}
	return n;
}

Test(status, json_counts_the_sockets_held, .timeout = 90)
{
	struct held h;
	hold_start(&h, 65000);
	json_t *root = status_after_time_wait(&h);
	json_t *app = holder_entry(root);

	json_t *range = json_object_get(app, "range");
	cr_expect_eq(json_integer_value(json_array_get(range, 0)), 65000);
	cr_expect_eq(json_integer_value(json_array_get(range, 1)), 65099);
	json_t *by_state = json_object_get(app, "by_state");
	cr_expect_eq(INT_OF(by_state, "established"), 3);
	cr_expect_eq(INT_OF(by_state, "time-wait"), 1);
	cr_expect_eq(INT_OF(by_state, "listen"), 1);
	cr_expect_eq(INT_OF(by_state, "other"), 1, "the unconnected UDP socket");
	cr_expect_eq(INT_OF(app, "in_use"), 6);
	cr_expect_eq(INT_OF(app, "destinations"), 3, "the two stalling servers and the draining one");
	cr_expect_float_eq(json_real_value(json_object_get(app, "utilisation")),
			   distinct(h.ports, 6) / 100.0, 1e-9);
	json_t *top = json_object_get(app, "top");
	cr_assert_eq(json_array_size(top), 1, "one process holds them");
	cr_expect_eq(INT_OF(json_array_get(top, 0), "pid"), h.pid);
	cr_expect_str_eq(json_string_value(json_object_get(json_array_get(top, 0), "comm")), "python3");
	cr_expect_eq(INT_OF(json_array_get(top, 0), "ports"), 5, "TIME_WAIT has no owner");
	char cgroup_file[64], cgroup_text[4096], *holder_cgroup;
	snprintf(cgroup_file, sizeof(cgroup_file), "/proc/%d/cgroup", (int)h.pid);
	read_all(cgroup_file, cgroup_text, sizeof(cgroup_text));
	holder_cgroup = strstr(cgroup_text, "0::");
	if (holder_cgroup) {
		holder_cgroup += 3;
		holder_cgroup[strcspn(holder_cgroup, "\n")] = '\0';
		const char *shown = json_string_value(json_object_get(json_array_get(top, 0), "cgroup"));
		cr_expect_str_eq(shown ? shown : "(none)", holder_cgroup, "each holder's cgroup (issue 22)");
	}
	cr_expect(json_is_array(json_object_get(app, "cgroups")));
	cr_expect_eq(json_array_size(json_object_get(app, "cgroups")), 0);

	json_t *idle = app_entry(root, "idle \"q\\");
	cr_assert_not_null(idle);
	cr_expect_eq(INT_OF(idle, "in_use"), 0);
	cr_expect_eq(json_array_size(json_object_get(idle, "top")), 0);
	cr_expect_float_eq(json_real_value(json_object_get(idle, "utilisation")), 0.0, 1e-12);
	json_decref(root);

	root = status_json(&h, "--app " HOLDER_APP);
	cr_expect_eq(json_array_size(json_object_get(root, "apps")), 1);
	json_decref(root);
	hold_stop(&h);
}

Test(status, text_names_states_and_holder, .timeout = 90)
{
	struct held h;
	struct run_result r;
	char expected[128];

	hold_start(&h, 65100);
	json_decref(status_after_time_wait(&h));
	status_run(&r, &h, "--app " HOLDER_APP);
	cr_expect(strstr(r.out, "app holder: ports 65100-65199 (100)\n"), "%s", r.out);
	cr_expect(strstr(r.out, "  in use 6: established 3, time-wait 1, listen 1, other 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "  destinations 3\n"), "%s", r.out);
	snprintf(expected, sizeof(expected), "  top processes: %d python3 (5)\n", h.pid);
	cr_expect(strstr(r.out, expected), "%s", r.out);
	cr_expect(strstr(r.out, "  cgroups: none\n"), "%s", r.out);
	hold_stop(&h);
}

Test(status, prometheus_passes_promtool, .timeout = 90)
{
	struct held h;
	struct run_result r;
	char cmd[768];

	hold_start(&h, 65200);
	json_decref(status_after_time_wait(&h));
	status_run(&r, &h, "--prometheus");
	cr_expect(strstr(r.out, "# TYPE portfence_range_ports gauge\n"), "%s", r.out);
	cr_expect(strstr(r.out, "portfence_range_ports{app=\"holder\"} 100\n"), "%s", r.out);
	cr_expect(strstr(r.out, "portfence_ports_in_use{app=\"holder\",state=\"established\"} 3\n"), "%s", r.out);
	cr_expect(strstr(r.out, "portfence_ports_in_use{app=\"holder\",state=\"time-wait\"} 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "portfence_range_utilisation{app=\"idle \\\"q\\\\\"} 0\n"),
		  "label escaped: %s", r.out);
	snprintf(cmd, sizeof(cmd), "'%s' status -c '%s' --prometheus | promtool check metrics",
		 build_path("portfence"), h.sb.policy);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_expect_eq(r.status, 0, "promtool: %s%s", r.out, r.err);
	cr_expect_str_eq(r.out, "", "promtool: %s", r.out);
	cr_expect_str_eq(r.err, "", "promtool: %s", r.err);
	hold_stop(&h);
}

/* The BPF backend's pins, in a private mount namespace with a tmpfs on
 * /sys/fs/bpf: one directory per attached cgroup, its path encoded. */
/* `portfence status OPTION -c POLICY` for each of options (e.g. "--json
 * --prometheus"), in a private mount namespace whose /sys/fs/bpf is a
 * tmpfs that setup (bash; $p is the holder app's pin directory) fills
 * first.  The shell holds the daemon's lock on /sys/fs/bpf/portfence, as
 * a live daemon does: else status would sweep the empty directories as
 * a dead daemon's. */
static void status_with_fake_pins(struct run_result *r, const char *setup, const char *options)
{
	struct sandbox sb;
	char cmd[2048];

	status_sandbox(&sb, 65300);
	snprintf(cmd, sizeof(cmd),
		 "mount -t tmpfs none /sys/fs/bpf && p=/sys/fs/bpf/portfence/holder && %s && "
		 "mkdir -p /sys/fs/bpf/portfence && exec 9</sys/fs/bpf/portfence && flock 9 && "
		 "for option in %s; do '%s' status $option -c '%s' || exit; done",
		 setup, options, build_path("portfence"), sb.policy);
	char *argv[] = {"unshare", "-m", "bash", "-c", cmd, NULL};
	run_program(r, argv, NULL, NULL);
	sandbox_cleanup(&sb);
	cr_assert_eq(r->status, 0, "%s", r->err);
}

Test(status, lists_attached_cgroups_from_pins, .timeout = 60)
{
	struct run_result r;

	status_with_fake_pins(&r,
			      "mkdir -p $p/system.slice%2Flegacy.service $p/a%25b $p/portfence%2Fholder-42 && "
			      "touch $p/not-a-dir && mkdir $p/bad%zz",
			      "--json");
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "%s", r.out);
	json_t *cgroups = json_object_get(holder_entry(root), "cgroups");
	cr_assert_eq(json_array_size(cgroups), 3, "%s", r.out);
	cr_expect_str_eq(json_string_value(json_array_get(cgroups, 0)), "a%b");
	cr_expect_str_eq(json_string_value(json_array_get(cgroups, 1)), "portfence/holder-42");
	cr_expect_str_eq(json_string_value(json_array_get(cgroups, 2)), "system.slice/legacy.service");
	cr_expect_eq(json_array_size(json_object_get(app_entry(root, "idle \"q\\"), "cgroups")), 0);
	json_decref(root);
}

/* An app attached by attach or the daemon and by many runs: its
 * cgroups from both pin roots.  The second root's read counted its room
 * from 0 again and wrote past the first's array (heap overflow).  The
 * shell holds each run's lock, as a live run does. */
Test(status, lists_the_cgroups_of_one_attachment_and_forty_runs, .timeout = 60)
{
	enum { RUNS = 40 };
	struct run_result r;
	char setup[512];

	snprintf(setup, sizeof(setup),
		 "mkdir -p $p/system.slice%%2Fone.service && runs=/sys/fs/bpf/portfence-run/holder && "
		 "for i in $(seq 1 %d); do mkdir -p $runs/portfence%%2Fholder-$i && "
		 "exec {held}<$runs/portfence%%2Fholder-$i && flock $held || exit; done",
		 RUNS);
	status_with_fake_pins(&r, setup, "--json");
	json_error_t error;
	json_t *root = json_loads(r.out, 0, &error);
	cr_assert_not_null(root, "%s", r.out);
	json_t *cgroups = json_object_get(holder_entry(root), "cgroups");
	cr_expect_eq(json_array_size(cgroups), RUNS + 1, "%s", r.out);
	json_decref(root);
}

/* records_lost comes from the app's pinned record_loss map: none pinned
 * is 0; a pin that is no map (here a file on a tmpfs) cannot be read,
 * which status says on stderr, with null in JSON and no Prometheus
 * sample, never a made-up 0.  (The count of a real map is tested in the
 * bpf suite.) */
Test(status, records_lost_from_pins, .timeout = 60)
{
	struct run_result r;

	status_with_fake_pins(&r, "mkdir -p $p/a && touch $p/record_loss", "--json --prometheus");
	cr_expect(strstr(r.err, "cannot read how many records app 'holder' lost"), "stderr: %s", r.err);
	json_error_t error;
	char *newline = strchr(r.out, '\n');
	cr_assert_not_null(newline, "%s", r.out);
	json_t *root = json_loadb(r.out, (size_t)(newline - r.out), 0, &error);
	cr_assert_not_null(root, "%s", r.out);
	cr_expect(json_is_null(json_object_get(holder_entry(root), "records_lost")), "%s", r.out);
	json_t *idle = json_object_get(app_entry(root, "idle \"q\\"), "records_lost");
	cr_expect(json_is_integer(idle) && json_integer_value(idle) == 0, "%s", r.out);
	json_decref(root);
	cr_expect(strstr(newline, "# TYPE portfence_records_lost_total counter\n"), "%s", newline);
	cr_expect(strstr(newline, "portfence_records_lost_total{app=\"idle \\\"q\\\\\"} 0\n"), "%s", newline);
	cr_expect(!strstr(newline, "portfence_records_lost_total{app=\"holder\"}"), "%s", newline);
}

Test(status, usage_and_unknown_app)
{
	struct run_result r;
	struct sandbox sb;
	status_sandbox(&sb, 65300);
	char *both[] = {(char *)build_path("portfence"), "status", "-c", sb.policy, "--json", "--prometheus", NULL};
	run_program(&r, both, NULL, NULL);
	cr_expect_eq(r.status, 2);
	char *unknown[] = {(char *)build_path("portfence"), "status", "-c", sb.policy, "--app", "nope", NULL};
	run_program(&r, unknown, NULL, NULL);
	cr_expect_eq(r.status, 1);
	cr_expect(strstr(r.err, "no app 'nope'"), "%s", r.err);
	sandbox_cleanup(&sb);
}

/* A real attachment by `portfence attach` (the BPF backend's own pins)
 * shows in status, and is gone after detach.  Skipped where the backend
 * cannot attach (no cgroup v2, BPF refused). */
Test(status, lists_a_cgroup_that_attach_pinned, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	char cmd[2048];
	const char *tool = build_path("portfence");

	status_sandbox(&sb, 65300);
	snprintf(cmd, sizeof(cmd),
		 "cg=$(findmnt -n -t cgroup2 -o TARGET | head -1); [ -n \"$cg\" ] || { echo 'no cgroup v2' >&2; exit 77; }\n"
		 "mkdir -p \"$cg/pf-status-test\"\n"
		 "'%s' attach -c '%s' -a holder pf-status-test >&2 || { rmdir \"$cg/pf-status-test\"; exit 77; }\n"
		 "'%s' status -c '%s' --json --app holder; rc=$?\n"
		 "'%s' detach -a holder pf-status-test >&2\n"
		 "'%s' status -c '%s' --json --app holder\n"
		 "rmdir \"$cg/pf-status-test\"; exit $rc",
		 tool, sb.policy, tool, sb.policy, tool, tool, sb.policy);
	char *argv[] = {"unshare", "-m", "sh", "-c", cmd, NULL};
	run_program(&r, argv, NULL, NULL);
	sandbox_cleanup(&sb);
	if (r.status == 77)
		cr_skip_test("the BPF backend cannot attach here: %s", r.err);
	cr_assert_eq(r.status, 0, "%s", r.err);
	char *second = strchr(r.out, '\n');
	cr_assert_not_null(second, "%s", r.out);
	*second++ = '\0';
	json_error_t error;
	json_t *attached = json_loads(r.out, 0, &error), *detached = json_loads(second, 0, &error);
	cr_assert(attached && detached, "%s\n%s", r.out, second);
	json_t *cgroups = json_object_get(holder_entry(attached), "cgroups");
	cr_assert_eq(json_array_size(cgroups), 1, "%s", r.out);
	cr_expect_str_eq(json_string_value(json_array_get(cgroups, 0)), "pf-status-test");
	cr_expect_eq(json_array_size(json_object_get(holder_entry(detached), "cgroups")), 0, "%s", second);
	json_decref(attached);
	json_decref(detached);
}
