/* The shim inside other people's programs: threads, processes, fork,
 * hostile policies and a hostile environment. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "core/state.h"

static unsigned value_of(const char *out, const char *key)
{
	const char *at = strstr(out, key);
	return at ? (unsigned)atoi(at + strlen(key) + 1) : 0xffffffffu;
}

static unsigned count_events(json_t *records, const char *event)
{
	unsigned n = 0;
	while (audit_find(records, event, (int)n))
		n++;
	return n;
}

Test(hardening, threads_processes_dup2_and_fork, .timeout = 120)
{
	struct sandbox sb;
	struct server tcp[4], udp;
	struct run_result r;
	const char *hosts[4] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"};
	char dests[5][64];

	sandbox_init(&sb, "default = \"busy\";\napps = ( { name = \"busy\"; range = [ 61000, 61063 ]; "
			  "algorithm = \"double-hash\"; } );");
	for (int i = 0; i < 4; i++) {
		server_start(&tcp[i], hosts[i], SERVE_GREET_CLOSE);
		snprintf(dests[i], sizeof(dests[i]), "%s:%u", hosts[i], tcp[i].port);
	}
	server_start(&udp, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dests[4], sizeof(dests[4]), "127.0.0.1:%u", udp.port);
	char *argv[] = {(char *)build_path("stress"), "threads", "61000", "61063", dests[0], dests[1],
			dests[2], dests[3], dests[4], NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	for (int i = 0; i < 4; i++)
		server_stop(&tcp[i]);
	server_stop(&udp);
	cr_assert_eq(r.status, 0, "stress exited %d\n%s\n%s", r.status, r.out, r.err);
	cr_expect_eq(value_of(r.out, "tcp_ok"), 8 * 2000, "%s", r.out);
	cr_expect_eq(value_of(r.out, "udp_ok"), 2 * 500, "%s", r.out);
	cr_expect_eq(value_of(r.out, "dup_ok"), 300, "%s", r.out);
	cr_expect_eq(value_of(r.out, "failures"), 0, "the range was never full:\n%s%s", r.out, r.err);
	cr_expect_eq(value_of(r.out, "out_of_range"), 0);
	cr_expect_eq(value_of(r.out, "child_ok"), 1);
	unsigned seen = 0;
	for (int i = 0; i < 4; i++) {
		for (int k = 0; k < atomic_load(&tcp[i].count); k++)
			cr_assert(tcp[i].peers[k] >= 61000 && tcp[i].peers[k] <= 61063);
		seen += (unsigned)atomic_load(&tcp[i].count);
	}
	cr_expect_eq(seen, 8 * 2000 + 300 + 1, "every connection reached a server");
	/* audit_records() fails the test on any malformed line. */
	json_t *records = audit_records(sb.log);
	cr_expect_eq(json_array_size(records), value_of(r.out, "assignments"),
		     "exactly one record per assignment");
	cr_expect_eq(count_events(records, "assign"), json_array_size(records));
	json_decref(records);
	sandbox_cleanup(&sb);
}

static void processes_share_a_range(const char *algorithm)
{
	struct sandbox sb;
	struct server udp;
	struct run_result r;
	char policy[256], cmd[1024];

	snprintf(policy, sizeof(policy), "default = \"shared\";\napps = ( { name = \"shared\"; "
		 "range = [ 61000, 61063 ]; algorithm = \"%s\"; } );", algorithm);
	sandbox_init(&sb, policy);
	server_start(&udp, "127.0.0.1", SERVE_UDP_ECHO);
	const char *stress = build_path("stress");
	snprintf(cmd, sizeof(cmd),
		 "for i in 1 2 3 4; do %s udphold 15 1.0 127.0.0.1:%u & done; wait", stress, udp.port);
	char *argv[] = {"sh", "-c", cmd, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&udp);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.out, "err "), 0, "no error while a port is free:\n%s", r.out);
	cr_assert_eq(count_lines_starting(r.out, "ok "), 60, "%s", r.out);
	uint8_t seen[65536] = {0};
	for (const char *line = r.out; (line = strstr(line, "ok ")); line += 3) {
		unsigned port = (unsigned)atoi(line + 3);
		cr_expect(port >= 61000 && port <= 61063, "port %u", port);
		cr_expect_not(seen[port], "port %u held by two live UDP sockets", port);
		seen[port] = 1;
	}
	struct pf_state state;
	cr_assert_eq(pf_state_open(sb.state, "shared", 64, &state), 0, "the state file stays valid");
	cr_expect_eq(state.shared->magic, PF_STATE_MAGIC);
	if (strcmp(algorithm, "sequential") == 0)
		cr_expect_geq(atomic_load(&state.shared->sequential_next), 60);
	pf_state_close(&state);
	sandbox_cleanup(&sb);
}

Test(hardening, four_processes_sequential)
{
	processes_share_a_range("sequential");
}

Test(hardening, four_processes_random)
{
	processes_share_a_range("random");
}

Test(hardening, fork_while_another_thread_is_in_the_shim, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];

	sandbox_init(&sb, "default = \"f\";\napps = ( { name = \"f\"; range = [ 61000, 61099 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path("stress"), "forkloop", "61000", "61099", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(value_of(r.out, "children_ok"), 100, "%s%s", r.out, r.err);
	cr_expect_eq(value_of(r.out, "failures"), 0, "%s", r.err);
	cr_expect_eq(value_of(r.out, "out_of_range"), 0);
	sandbox_cleanup(&sb);
}

/* ---- policies that cannot be used ---- */

static const char connect_probe[] =
	"import socket, errno, sys\ns = socket.socket()\ntry:\n"
	"    s.connect(('127.0.0.1', int(sys.argv[1])))\n    print('connected', s.getsockname()[1])\n"
	"except OSError as e:\n    print(errno.errorcode[e.errno])\n";

/* Another user may not enter the directory of the checkout (a clone under
 * /root, any 0700 directory): the probe loads the harness's copy of the
 * shim for other users, whose directory is also its working directory
 * (a sanitizer build's suppressions: the harness's copy, in LSAN_OPTIONS). */
static void stage_for_other_user(char *dir, size_t dir_len, char *preload, size_t preload_len)
{
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	const char *shim = build_path_for_others("libportfence.so");

	snprintf(dir, dir_len, "%.*s", (int)(strrchr(shim, '/') - shim), shim);
	snprintf(preload, preload_len, "LD_PRELOAD=%s%s%s", runtime && runtime[0] ? runtime : "",
		 runtime && runtime[0] ? ":" : "", shim);
}

/* Runs the probe with the shim and PORTFENCE_CONFIG=config (as uid when
 * uid >= 0); returns what it printed. */
static void probe_with_config(struct run_result *r, const char *config, uint16_t port, int uid)
{
	char preload[512], cfg[600], port_text[16], uid_text[32];
	snprintf(preload, sizeof(preload), "%s", shim_preload_env());
	snprintf(cfg, sizeof(cfg), "PORTFENCE_CONFIG=%s", config);
	snprintf(port_text, sizeof(port_text), "%u", port);
	char *env[] = {cfg, "PORTFENCE_APP=", NULL};
	if (uid >= 0) {
		char dir[PATH_MAX];
		stage_for_other_user(dir, sizeof(dir), preload, sizeof(preload));
		snprintf(uid_text, sizeof(uid_text), "--reuid=%d", uid);
		char *argv[] = {"setpriv", uid_text, "--regid=65534", "--clear-groups", "env", "-C", dir,
				preload, "python3", "-c", (char *)connect_probe, port_text, NULL};
		run_program(r, argv, NULL, env);
	} else {
		char *argv[] = {"env", preload, "python3", "-c", (char *)connect_probe, port_text, NULL};
		run_program(r, argv, NULL, env);
	}
}

static void expect_denied(const struct run_result *r, const char *what)
{
	cr_expect_str_eq(r->out, "EPERM\n", "%s: %s", what, r->err);
	cr_expect_eq(count_lines_starting(r->err, "portfence: "), 1, "%s: one stderr line:\n%s", what, r->err);
}

static void expect_untouched(const struct run_result *r, const char *what)
{
	cr_expect(strncmp(r->out, "connected ", 10) == 0, "%s: %s %s", what, r->out, r->err);
}

static const char *const invalid_fixtures[] = {
	"unknown-key", "unknown-app-key", "wrong-type-range", "wrong-type-name", "wrong-type-syslog",
	"port-zero", "port-too-big", "lo-above-hi", "overlap", "duplicate-name", "unknown-algorithm",
	"malformed-rule", "malformed-rule-v6", "syntax-error", "unknown-default", "bad-mode",
	"bad-protocol", "missing-range", "bad-version",
};

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	static char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

static void write_text(const char *path, const char *a, const char *b)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(a, f);
	fputs(b, f);
	fclose(f);
}

Test(hardening, every_invalid_fixture_under_deny_and_pass, .timeout = 120)
{
	struct server srv;
	struct run_result r;
	char dir[] = "/tmp/pf-inv-XXXXXX", path[256], fixture[256];

	cr_assert_not_null(mkdtemp(dir));
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	for (size_t i = 0; i < sizeof(invalid_fixtures) / sizeof(*invalid_fixtures); i++) {
		snprintf(fixture, sizeof(fixture), "tests/fixtures/invalid/%s.conf", invalid_fixtures[i]);
		const char *text = read_text(fixture);
		snprintf(path, sizeof(path), "%s/%s.conf", dir, invalid_fixtures[i]);
		probe_with_config(&r, fixture, srv.port, -1);
		expect_denied(&r, fixture);
		cr_expect(strstr(r.err, fixture) != NULL, "the line names the file: %s", r.err);

		/* on_error = "pass" is honoured by a file that parses. */
		write_text(path, "on_error = \"pass\";\n", text);
		probe_with_config(&r, path, srv.port, -1);
		if (strcmp(invalid_fixtures[i], "syntax-error") == 0)
			expect_denied(&r, "unparsable, so deny whatever it says");
		else
			expect_untouched(&r, invalid_fixtures[i]);
	}
	server_stop(&srv);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(hardening, unusable_policy_files, .timeout = 120)
{
	struct server srv;
	struct run_result r;
	char dir[] = "/tmp/pf-bad-XXXXXX", path[256];

	cr_assert_not_null(mkdtemp(dir));
	chmod(dir, 0755);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);

	snprintf(path, sizeof(path), "%s/secret.conf", dir);
	write_text(path, "on_error = \"pass\";\n", "apps = ( );\n");
	chmod(path, 0600);
	probe_with_config(&r, path, srv.port, 65534);
	expect_denied(&r, "unreadable (as nobody)");
	cr_expect(strstr(r.err, "Permission denied") != NULL, "%s", r.err);

	snprintf(path, sizeof(path), "%s/empty.d", dir);
	mkdir(path, 0755);
	probe_with_config(&r, path, srv.port, -1);
	expect_denied(&r, "empty directory");
	cr_expect(strstr(r.err, "no *.conf") != NULL, "%s", r.err);

	snprintf(path, sizeof(path), "%s/garbage.conf", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	unsigned char noise[4096];
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (unsigned char)(i * 7919u + (i >> 3) * 31u);
	cr_assert_eq(write(fd, noise, sizeof(noise)), (ssize_t)sizeof(noise));
	close(fd);
	probe_with_config(&r, path, srv.port, -1);
	expect_denied(&r, "binary garbage");

	snprintf(path, sizeof(path), "%s/loop.conf", dir);
	cr_assert_eq(symlink(path, path), 0);
	probe_with_config(&r, path, srv.port, -1);
	expect_denied(&r, "symlink loop");
	cr_expect(strstr(r.err, "symbolic links") != NULL, "%s", r.err);

	/* 10 MB: a valid policy behind a long comment still loads. */
	snprintf(path, sizeof(path), "%s/big.conf", dir);
	FILE *big = fopen(path, "w");
	for (int i = 0; i < 10 * 1024 * 16; i++)
		fprintf(big, "# %061d\n", i);
	fputs("on_error = \"deny\";\ndefault = \"big\";\n"
	      "apps = ( { name = \"big\"; range = [ 61000, 61099 ]; } );\n", big);
	fclose(big);
	probe_with_config(&r, path, srv.port, -1);
	unsigned port = 0;
	cr_expect_eq(sscanf(r.out, "connected %u", &port), 1, "10 MB policy: %s %s", r.out, r.err);
	cr_expect(port >= 61000 && port <= 61099, "10 MB policy: port %u", port);

	server_stop(&srv);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(hardening, policy_rewritten_while_programs_load_it, .timeout = 120)
{
	struct server srv;
	struct run_result r;
	char dir[] = "/tmp/pf-race-XXXXXX", path[256];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/policy.conf", dir);
	static const char *const versions[2] = {
		"default = \"a\";\napps = ( { name = \"a\"; range = [ 61000, 61049 ]; } );\n",
		"default = \"b\";\napps = ( { name = \"b\"; range = [ 61050, 61099 ]; algorithm = \"random\"; } );\n"};
	write_text(path, versions[0], "");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	pid_t writer = fork();
	if (writer == 0) {
		/* Truncate-and-write in place, the worst way to change a file. */
		for (int i = 0; i < 200000; i++) {
			int fd = open(path, O_WRONLY | O_TRUNC);
			const char *v = versions[i % 2];
			size_t len = strlen(v);
			for (size_t off = 0; off < len; off += 7)
				if (write(fd, v + off, len - off < 7 ? len - off : 7) < 0)
					break;
			close(fd);
			usleep(2000);
		}
		_exit(0);
	}
	/* A reader may see either version, or a torn or empty one (refused):
	 * never a crash, a hang, or a program left unconfined. */
	unsigned confined = 0, untouched = 0, refused = 0;
	for (int i = 0; i < 40; i++) {
		probe_with_config(&r, path, srv.port, -1);
		cr_assert_eq(r.status, 0, "the program died: %s", r.err);
		unsigned port;
		if (sscanf(r.out, "connected %u", &port) == 1) {
			if (port >= 61000 && port <= 61099)
				confined++;
			else
				untouched++;
		} else {
			expect_denied(&r, "half-written policy");
			refused++;
		}
	}
	cr_expect_eq(untouched, 0, "a torn policy must never leave a program unconfined");
	cr_expect_eq(confined + refused, 40);
	cr_expect_gt(confined, 0, "no run saw a whole policy (%u untouched, %u refused)", untouched, refused);
	kill(writer, SIGKILL);
	waitpid(writer, NULL, 0);
	server_stop(&srv);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

/* ---- a hostile environment ---- */

static void policy_with(struct sandbox *sb, const char *log, const char *state)
{
	FILE *f = fopen(sb->policy, "w");
	fprintf(f, "log = { file = \"%s\"; };\nstate_dir = \"%s\";\ndefault = \"e\";\n"
		   "apps = ( { name = \"e\"; range = [ 61000, 61099 ]; } );\n", log, state);
	fclose(f);
}

Test(hardening, unwritable_log_and_state_dir)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[512];

	sandbox_init(&sb, "");
	policy_with(&sb, "/proc/portfence-cannot-exist/audit.jsonl", "/proc/portfence-state");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code), "%s", connect_probe);
	char port[16];
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"python3", "-c", code, port, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	unsigned local = 0;
	cr_expect_eq(sscanf(r.out, "connected %u", &local), 1, "%s %s", r.out, r.err);
	cr_expect(local >= 61000 && local <= 61099, "still confined: %u", local);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 2, "one line each for log and state:\n%s", r.err);
	cr_expect(strstr(r.err, "cannot open audit log /proc/portfence-cannot-exist/audit.jsonl") != NULL, "%s", r.err);
	cr_expect(strstr(r.err, "cannot use state directory /proc/portfence-state") != NULL, "%s", r.err);
	sandbox_cleanup(&sb);
}

Test(hardening, full_disk_for_the_log, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char script[3072], mnt[160], log[200];

	sandbox_init(&sb, "");
	snprintf(mnt, sizeof(mnt), "%s/small", sb.dir);
	mkdir(mnt, 0755);
	snprintf(log, sizeof(log), "%s/audit.jsonl", mnt);
	policy_with(&sb, log, sb.state);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	/* A private mount namespace: the host's mounts are untouched.  In a
	 * sanitizer build only the command under the shim gets its runtime. */
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	char preload[512] = "";
	if (runtime && runtime[0])
		snprintf(preload, sizeof(preload), "env LD_PRELOAD=%s ASAN_OPTIONS=detect_leaks=0 ", runtime);
	snprintf(script, sizeof(script),
		 "mount -t tmpfs -o size=16k tmpfs %s && "
		 "dd if=/dev/zero of=%s/fill bs=1k count=64 2>/dev/null; "
		 "%s%s run -c %s -- python3 -c \"import socket\n"
		 "for i in range(3):\n"
		 "    s = socket.create_connection(('127.0.0.1', %u)); print(s.getsockname()[1]); s.close()\"",
		 mnt, mnt, preload, build_path("portfence"), sb.policy, srv.port);
	char *argv[] = {"unshare", "-m", "sh", "-c", script, NULL};
	run_program(&r, argv, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.out, "610"), 3, "three connections in range: %s", r.out);
	cr_expect_eq(atomic_load(&srv.count), 3);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "one line, not one per record:\n%s", r.err);
	cr_expect(strstr(r.err, "No space left on device") != NULL, "%s", r.err);
	sandbox_cleanup(&sb);
}

Test(hardening, another_apps_range_is_refused)
{
	struct sandbox sb;
	struct run_result r;

	sandbox_init(&sb, "default = \"mine\";\napps = ( { name = \"mine\"; range = [ 61000, 61099 ]; },\n"
			  "  { name = \"theirs\"; range = [ 62000, 62099 ]; } );");
	const char *code =
		"import socket, errno\n"
		"def b(port):\n"
		"    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
		"    try:\n        s.bind(('127.0.0.1', port)); return 'ok'\n"
		"    except OSError as e:\n        return errno.errorcode[e.errno]\n"
		"print(b(62050), b(61050), b(45000))\n";
	char *argv[] = {"python3", "-c", (char *)code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "EACCES ok ok\n", "another app's port is refused, others are not");
	json_t *records = audit_records(sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert_not_null(deny);
	cr_expect_eq(address_port(json_string_value(json_object_get(deny, "local"))), 62050);
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(hardening, log_and_state_modes_and_symlinks)
{
	struct sandbox sb;
	struct run_result r;
	struct stat info;
	char victim[200], code[256];

	sandbox_init(&sb, "default = \"m\";\napps = ( { name = \"m\"; range = [ 61000, 61099 ]; } );");
	snprintf(code, sizeof(code), "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
				     "s.sendto(b'x', ('127.0.0.1', 9))\n");
	char *argv[] = {"sh", "-c", "umask 077; exec python3 -c \"$0\"", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(stat(sb.log, &info), 0);
	cr_expect_eq(info.st_mode & 0777, 0640, "log mode %o despite umask 077", info.st_mode & 0777);
	char state_file[200];
	snprintf(state_file, sizeof(state_file), "%s/m.state", sb.state);
	cr_assert_eq(stat(state_file, &info), 0);
	cr_expect_eq(info.st_mode & 0777, 0600);

	/* A log path that is a symlink is refused, its target untouched. */
	unlink(sb.log);
	snprintf(victim, sizeof(victim), "%s/victim", sb.dir);
	write_text(victim, "precious\n", "");
	cr_assert_eq(symlink(victim, sb.log), 0);
	run_under(&r, &sb, NULL, argv, NULL);
	cr_expect_eq(r.status, 0);
	cr_expect_str_eq(read_text(victim), "precious\n");
	cr_expect(strstr(r.err, "cannot open audit log") != NULL, "%s", r.err);
	sandbox_cleanup(&sb);
}
