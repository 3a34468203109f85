/* What dist/ ships: the logrotate configuration under a running confined
 * program, the systemd units through systemd-analyze verify, and the bash
 * completion.  (tests/deb-test.sh checks the Debian package.) */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static void sh(struct run_result *r, const char *script)
{
	char *argv[] = {"sh", "-c", (char *)script, NULL};
	run_program(r, argv, NULL, NULL);
}

/* ---- logrotate ---- */

/* One datagram from a fresh unbound socket every 20 ms (an assignment and
 * a record each, no TIME_WAIT left), until STOP; then the count. */
static const char sender[] =
	"import os, socket, sys, time\n"
	"port, stop = int(sys.argv[1]), sys.argv[2]\n"
	"sent, deadline = 0, time.time() + 50\n"
	"while not os.path.exists(stop) and time.time() < deadline:\n"
	"    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
	"    s.sendto(b'x', ('127.0.0.1', port)); s.close(); sent += 1\n"
	"    time.sleep(0.02)\n"
	"print('sent', sent, flush=True)\n";

static size_t records_of(const char *path, pid_t pid, size_t *others)
{
	json_t *records = audit_records(path), *record;
	size_t i, mine = 0;
	json_array_foreach(records, i, record) {
		bool ours = json_integer_value(json_object_get(record, "pid")) == pid &&
			    strcmp(json_string_value(json_object_get(record, "event")), "assign") == 0;
		mine += ours;
		*others += !ours;
	}
	json_decref(records);
	return mine;
}

static size_t records_now(const char *path, pid_t pid)
{
	size_t others = 0;
	return records_of(path, pid, &others);
}

static bool await_records(const char *path, pid_t pid, size_t count)
{
	for (int i = 0; i < 1000; i++) {
		if (records_now(path, pid) >= count)
			return true;
		usleep(10000);
	}
	return false;
}

Test(dist, logrotate_moves_the_log_under_a_running_program, .timeout = 120)
{
	struct sandbox sb;
	struct server udp;
	struct run_result r;
	char conf[192], state[192], stop[192], out[192], rotated[192], port[8], cmd[1024];

	sandbox_init(&sb, "apps = ( { name = \"rot\"; range = [ 64100, 64199 ]; } );");
	server_start(&udp, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(conf, sizeof(conf), "%s/logrotate.conf", sb.dir);
	snprintf(state, sizeof(state), "%s/logrotate.state", sb.dir);
	snprintf(stop, sizeof(stop), "%s/stop", sb.dir);
	snprintf(out, sizeof(out), "%s/out", sb.dir);
	snprintf(rotated, sizeof(rotated), "%s.1", sb.log);
	snprintf(port, sizeof(port), "%u", udp.port);
	/* The shipped file, its path replaced by the test's log. */
	snprintf(cmd, sizeof(cmd), "sed 's|/var/log/portfence.jsonl|%s|' dist/logrotate.d/portfence > '%s' && chmod 0644 '%s'",
		 sb.log, conf, conf);
	sh(&r, cmd);
	cr_assert_eq(r.status, 0, "%s", r.err);

	char *argv[] = {"python3", "-c", (char *)sender, port, stop, NULL};
	pid_t pid = spawn_under(&sb, "rot", argv, out);
	cr_assert(await_records(sb.log, pid, 3), "no records before rotation");
	snprintf(cmd, sizeof(cmd), "logrotate -f -s '%s' '%s'", state, conf);
	sh(&r, cmd);
	cr_assert_eq(r.status, 0, "logrotate: %s%s", r.out, r.err);
	cr_assert_eq(access(rotated, F_OK), 0, "logrotate left no %s", rotated);
	/* Within a second the program writes to the new file. */
	bool followed = await_records(sb.log, pid, 3);
	close(open(stop, O_CREAT | O_WRONLY, 0600));
	cr_expect_eq(wait_child(pid), 0);
	server_stop(&udp);

	size_t others = 0, before = records_of(rotated, pid, &others), after = records_of(sb.log, pid, &others);
	struct stat info;
	cr_expect_eq(stat(sb.log, &info), 0);
	cr_expect_eq(info.st_mode & 0777, 0640, "the new log keeps the old one's mode");
	FILE *f = fopen(out, "r");
	unsigned sent = 0;
	cr_assert_not_null(f);
	cr_expect_eq(fscanf(f, "sent %u", &sent), 1);
	fclose(f);
	sandbox_cleanup(&sb);
	cr_expect(followed, "no record reached the new file (%zu in the rotated one)", before);
	cr_expect_geq(before, 3);
	cr_expect_eq(others, 0, "only the program's assignments");
	cr_expect_eq(before + after, sent, "every datagram has its record: %zu + %zu of %u", before, after, sent);
}

/* ---- systemd ---- */

Test(dist, systemd_units_verify_clean, .timeout = 120)
{
	char dir[] = "/tmp/pf-units-XXXXXX", cmd[4096];
	struct run_result r;

	cr_assert_not_null(mkdtemp(dir));
	const char *build = getenv("PORTFENCE_BUILD");
	/* Installed for real under a prefix of its own, so that the unit's
	 * ExecStart= and Documentation= name files that exist. */
	snprintf(cmd, sizeof(cmd),
		 "set -e; make -s install BUILD='%s' PREFIX='%s' SYSCONFDIR='%s/etc'\n"
		 "u=%s/units; mkdir -p $u/legacy.service.d $u/legacy-bpf.service.d\n"
		 "printf '[Service]\\nExecStart=/bin/sleep 1000\\n' > $u/legacy.service\n"
		 "cp $u/legacy.service $u/legacy-bpf.service\n"
		 "cp %s/share/doc/portfence/examples/systemd/shim-dropin.conf $u/legacy.service.d/portfence.conf\n"
		 "cp %s/share/doc/portfence/examples/systemd/bpf-slice-dropin.conf $u/legacy-bpf.service.d/portfence.conf\n"
		 "grep -q '^ExecStart=%s/bin/portfence daemon -c /etc/portfence.conf$' %s/lib/systemd/system/portfence.service\n"
		 "grep -q 'LD_PRELOAD=%s/lib/portfence/libportfence.so ' $u/legacy.service.d/portfence.conf\n"
		 "grep -q '^ExecStartPre=%s/bin/portfence check -c /etc/portfence.conf$' $u/legacy.service.d/portfence.conf\n"
		 "MANPATH=%s/share/man systemd-analyze verify %s/lib/systemd/system/portfence.service "
		 "$u/legacy.service $u/legacy-bpf.service",
		 build ? build : "build", dir, dir, dir, dir, dir, dir, dir, dir, dir, dir, dir);
	sh(&r, cmd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
	cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect_str_eq(r.err, "", "systemd-analyze verify: %s", r.err);
	cr_expect_str_eq(r.out, "", "%s", r.out);
}

/* The verification sees a broken unit: a key it does not know. */
Test(dist, systemd_verify_catches_a_bad_key, .timeout = 60)
{
	char dir[] = "/tmp/pf-units-XXXXXX", cmd[1024];
	struct run_result r;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd),
		 "sed 's|^ExecStart=.*|ExecStart=/bin/sleep 1\\nBogusKey=1|; /^Documentation=/d; /^ExecStartPre=/d' "
		 "dist/portfence.service > %s/pf.service && systemd-analyze verify %s/pf.service", dir, dir);
	sh(&r, cmd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
	cr_expect(strstr(r.err, "BogusKey"), "%s", r.err);
}

/* ---- bash completion ---- */

/* COMPREPLY, sorted, one line, for the words given (the last is the one
 * being completed). */
static void complete(struct run_result *r, const char *words, const char *env)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd),
		 "%s bash -c 'source dist/bash-completion/portfence; COMP_WORDS=(%s); "
		 "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _portfence; "
		 "printf \"%%s\\n\" \"${COMPREPLY[@]}\" | LC_ALL=C sort | tr \"\\n\" \" \"'",
		 env, words);
	sh(r, cmd);
	cr_assert_eq(r->status, 0, "%s", r->err);
}

Test(dist, bash_completion)
{
	struct sandbox sb;
	struct run_result r;
	char words[512], env[256];

	sandbox_init(&sb, "apps = ( { name = \"legacy-web\"; range = [ 61000, 61099 ]; },\n"
			  "  { name = \"observed\"; range = [ 62000, 62099 ]; }, { name = \"other\"; range = [ 1, 2 ]; } );");
	complete(&r, "portfence \"\"", "");
	cr_expect_str_eq(r.out, "--help --version attach check daemon detach doctor explain help report run status who ");
	complete(&r, "portfence help e", "");
	cr_expect_str_eq(r.out, "explain ");
	complete(&r, "portfence explain --", "");
	cr_expect_str_eq(r.out, "-- --app --json --pid --to ");
	complete(&r, "portfence report --u", "");
	cr_expect_str_eq(r.out, "--until ");
	complete(&r, "portfence st", "");
	cr_expect_str_eq(r.out, "status ");
	complete(&r, "portfence status --", "");
	cr_expect_str_eq(r.out, "--app --json --prometheus --watch ");
	complete(&r, "portfence run --", "");
	cr_expect_str_eq(r.out, "-- --audit --bpf --user ");
	snprintf(words, sizeof(words), "portfence status -c %s --app \"\"", sb.policy);
	complete(&r, words, "");
	cr_expect_str_eq(r.out, "legacy-web observed other ", "apps of -c");
	snprintf(words, sizeof(words), "portfence run -c %s -a o", sb.policy);
	complete(&r, words, "");
	cr_expect_str_eq(r.out, "observed other ");
	snprintf(env, sizeof(env), "PORTFENCE_CONFIG=%s", sb.policy);
	complete(&r, "portfence attach -a l", env);
	cr_expect_str_eq(r.out, "legacy-web ", "apps of $PORTFENCE_CONFIG");
	complete(&r, "portfence run -- python", "");
	cr_expect(strstr(r.out, "python3 "), "a command after --: %s", r.out);
	sandbox_cleanup(&sb);
}
