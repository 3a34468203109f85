/* The audit log under pressure: hostile files at its path, a full disk,
 * a program that takes its fd number or closes its stderr, odd app names,
 * and logrotate. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char one_app[] =
	"default = \"c\";\napps = ( { name = \"c\"; range = [ 64000, 64999 ]; } );";

static void write_file(const char *path, const char *text, mode_t mode, uid_t owner)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	cr_assert_eq(fchown(fd, owner, owner), 0);
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static char *slurp(const char *path)
{
	static char text[1 << 20];
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;

	text[n] = '\0';
	if (f)
		fclose(f);
	return text;
}

static unsigned count_lines(const char *path)
{
	unsigned n = 0;
	for (const char *p = slurp(path); *p; p++)
		n += *p == '\n';
	return n;
}

/* "env LD_PRELOAD=<sanitizer runtime> " in a sanitizer build, so that a
 * shell script can put it before `portfence run` as the harness does. */
static const char *sanitizer_prefix(void)
{
	static char prefix[600];
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");

	prefix[0] = '\0';
	if (runtime && runtime[0])
		snprintf(prefix, sizeof(prefix), "env LD_PRELOAD=%s ASAN_OPTIONS=detect_leaks=0 ", runtime);
	return prefix;
}

/* ---- item 12: a log that another user can touch ---- */

static void expect_log_refused(const char *mode_text, mode_t mode, uid_t owner, const char *why)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	struct stat before, after;
	char code[256];
	static const char forged[] = "{\"forged\":true}\n";

	sandbox_init(&sb, one_app);
	write_file(sb.log, forged, mode, owner);
	cr_assert_eq(stat(sb.log, &before), 0);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code),
		 "import socket\nfor i in range(3):\n"
		 "    s = socket.create_connection(('127.0.0.1', %u)); print(s.getsockname()[1]); s.close()\n",
		 srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.out, "64"), 3, "still confined: %s", r.out);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "one line (%s):\n%s", mode_text, r.err);
	cr_expect(strstr(r.err, sb.log) && strstr(r.err, why), "names the file and why (%s):\n%s",
		  mode_text, r.err);
	cr_assert_eq(stat(sb.log, &after), 0);
	cr_expect_str_eq(slurp(sb.log), forged, "the file is untouched (%s)", mode_text);
	cr_expect_eq(after.st_uid, owner);
	cr_expect_eq(after.st_mode & 07777, mode);
	cr_expect_eq(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
	cr_expect_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	sandbox_cleanup(&sb);
}

Test(log, precreated_by_another_user_is_refused, .timeout = 60)
{
	expect_log_refused("owned by nobody", 0644, 65534, "belongs to uid 65534");
}

Test(log, writable_by_others_is_refused, .timeout = 60)
{
	expect_log_refused("mode 0666", 0666, 0, "writable by others");
}

Test(log, own_existing_log_is_appended_to, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	static const char earlier[] = "{\"earlier\":true}\n";

	sandbox_init(&sb, one_app);
	write_file(sb.log, earlier, 0640, 0);
	char *argv[] = {"python3", "-c",
			"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
			NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.err, "");
	cr_expect_eq(strncmp(slurp(sb.log), earlier, strlen(earlier)), 0);
	cr_expect_eq(count_lines(sb.log), 2);
	sandbox_cleanup(&sb);
}

/* ---- item 13: a full disk ---- */

Test(log, full_disk_never_glues_a_record_to_a_partial_one, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char script[4096], mnt[160], log[200], policy[600];

	sandbox_init(&sb, "");
	snprintf(mnt, sizeof(mnt), "%s/small", sb.dir);
	mkdir(mnt, 0755);
	snprintf(log, sizeof(log), "%s/audit.jsonl", mnt);
	snprintf(policy, sizeof(policy), "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s\";\n%s\n",
		 log, sb.state, one_app);
	FILE *f = fopen(sb.policy, "w");
	cr_assert_not_null(f);
	fputs(policy, f);
	fclose(f);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	/* tmpfs counts whole pages: with three of its four pages filled, the
	 * log has one page, and the record that crosses its end is cut. */
	snprintf(script, sizeof(script),
		 "mount -t tmpfs -o size=16k tmpfs %s && "
		 "dd if=/dev/zero of=%s/fill bs=4k count=3 2>/dev/null; "
		 "%s%s run -c %s -- python3 -c \"import socket, os\n"
		 "for i in range(40):\n"
		 "    if i == 30: os.unlink('%s/fill')\n"
		 "    s = socket.create_connection(('127.0.0.1', %u)); s.close()\n"
		 "\" && cat %s",
		 mnt, mnt, sanitizer_prefix(), build_path("portfence"), sb.policy, mnt, srv.port, log);
	char *argv[] = {"unshare", "-m", "sh", "-c", script, NULL};
	run_program(&r, argv, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(atomic_load(&srv.count), 40);

	unsigned parsed = 0, malformed = 0, after_partial = 0;
	bool seen_partial = false;
	char *save = NULL;
	for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t error;
		json_t *record = json_loads(line, 0, &error);
		if (record) {
			parsed++;
			after_partial += seen_partial;
			json_decref(record);
		} else {
			malformed++;
			seen_partial = true;
		}
	}
	cr_expect_eq(malformed, 1, "the cut record, and only it, is malformed:\n%s", r.out);
	cr_expect_eq(after_partial, 10, "every record after space came back parses on its own line");
	cr_expect_gt(parsed, 10);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "one line:\n%s", r.err);
	cr_expect(strstr(r.err, "Success") == NULL, "a short write sets no errno:\n%s", r.err);
	cr_expect(strstr(r.err, "short write") != NULL, "%s", r.err);
	sandbox_cleanup(&sb);
}

/* A process that opens a log others are writing looks at its last byte
 * once (does a cut record end it?).  A write in progress is seen
 * half-copied there, so the look must not take it for a cut record, or
 * the new process starts its record with a newline of its own and the
 * log gets an empty line.  Records of a 3 KB executable path cross a
 * page most of the time, the copy the look can land in. */
Test(log, processes_starting_beside_writers_never_split_a_line, .timeout = 180)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char deep[4096], copy[4200], script[12000];

	sandbox_init(&sb, one_app);
	snprintf(deep, sizeof(deep), "%s", sb.dir);
	for (int level = 0; level < 12; level++) {
		size_t len = strlen(deep);
		deep[len++] = '/';
		memset(deep + len, 'd', 240);
		deep[len + 240] = '\0';
		cr_assert(mkdir(deep, 0755) == 0 || errno == EEXIST, "%s", deep);
	}
	snprintf(copy, sizeof(copy), "cp %s %s/ringprobe", build_path("ringprobe"), deep);
	cr_assert_eq(system(copy), 0);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(script, sizeof(script),
		 "w='%s/ringprobe'; d=127.0.0.1:%u\n"
		 "\"$w\" connect 20000 $d & \"$w\" connect 20000 $d &\n"
		 "i=0; while [ $i -lt 300 ]; do \"$w\" connect 1 $d >/dev/null; i=$((i+1)); done; wait\n",
		 deep, srv.port);
	char *argv[] = {"sh", "-c", script, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	/* audit_records() fails the test on any malformed (or empty) line. */
	json_t *records = audit_records(sb.log);
	cr_expect_eq(json_array_size(records), 40300, "records: %zu", json_array_size(records));
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* ---- item 14: the log's fd number and fd 2 are the program's ---- */

Test(log, dup2_onto_the_log_fd_while_recording, .timeout = 120)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64], data[200];
	struct stat info;
	const int count = 10000;
	char count_text[16];

	sandbox_init(&sb, one_app);
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(data, sizeof(data), "%s/data", sb.dir);
	snprintf(count_text, sizeof(count_text), "%d", count);
	char *argv[] = {(char *)build_path("logprobe"), "dup2race", dest, count_text, data, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.out, "sends=10000 "), "%s", r.out);
	cr_expect(strstr(r.out, "dup2s=0\n") == NULL, "the log's fd was taken: %s", r.out);
	cr_assert_eq(stat(data, &info), 0);
	cr_expect_eq(info.st_size, 0, "%ld bytes of ours in the program's file", (long)info.st_size);
	json_t *records = audit_records(sb.log);
	cr_expect_eq(json_array_size(records), (size_t)count, "every record is in the log");
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* /dev/full makes the first record fail, so the shim has a warning to
 * write after the program has rearranged its fds. */
static void run_with_full_log(struct run_result *r, const struct sandbox *sb, char *const probe[])
{
	char *argv[16] = {(char *)build_path("portfence"), "run", "-c", (char *)sb->policy, "--"};
	int n = 5;
	for (int i = 0; probe[i] && n < 15; i++)
		argv[n++] = probe[i];
	argv[n] = NULL;
	char *env[] = {"PORTFENCE_LOG=/dev/full", NULL};
	run_program(r, argv, NULL, env);
}

Test(log, warning_never_lands_in_a_daemons_fd_2, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64], data[200];

	sandbox_init(&sb, one_app);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(data, sizeof(data), "%s/data", sb.dir);

	char *plain[] = {(char *)build_path("logprobe"), "connect", dest, NULL};
	run_with_full_log(&r, &sb, plain);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.err, "portfence: cannot write the audit log"), 1,
		     "the warning exists, on stderr:\n%s", r.err);

	char *daemon[] = {(char *)build_path("logprobe"), "closed-stderr", dest, data, NULL};
	run_with_full_log(&r, &sb, daemon);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "logprobe exited %d: %s", r.status, r.err);
	cr_expect_str_eq(slurp(data), "", "the program's data file holds nothing of ours");
	sandbox_cleanup(&sb);
}

/* ---- item 15: app names of every length ---- */

Test(log, app_names_of_every_length, .timeout = 60)
{
	struct sandbox sb;
	struct run_result r;
	char long_name[301];
	char apps[2048];

	memset(long_name, 'x', 300);
	long_name[300] = '\0';
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"a\"; range = [ 64000, 64009 ]; },\n"
		 "  { name = \"ab\"; range = [ 64010, 64019 ]; },\n"
		 "  { name = \"\\\"\"; range = [ 64020, 64029 ]; },\n"
		 "  { name = \"q\\\"b\\\\c\"; range = [ 64030, 64039 ]; },\n"
		 "  { name = \"\xc3\xa9\"; range = [ 64040, 64049 ]; },\n"
		 "  { name = \"%s\"; range = [ 64050, 64059 ]; } );", long_name);
	sandbox_init(&sb, apps);
	const char *names[] = {"a", "ab", "\"", "q\"b\\c", "\xc3\xa9", long_name};
	char *argv[] = {"python3", "-c",
			"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
			NULL};
	for (int i = 0; i < 6; i++) {
		run_under(&r, &sb, names[i], argv, NULL);
		cr_assert_eq(r.status, 0, "%s: %s", names[i], r.err);
	}
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), 6);
	for (int i = 0; i < 6; i++)
		cr_expect_str_eq(json_string_value(json_object_get(json_array_get(records, (size_t)i), "app")),
				 names[i]);
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* ---- item 17: logrotate ---- */

static double record_time(json_t *record)
{
	const char *ts = json_string_value(json_object_get(record, "ts"));
	struct tm tm = {0};
	char *rest = ts ? strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	cr_assert_not_null(rest, "ts %s", ts ? ts : "(none)");
	return (double)timegm(&tm) + atof(rest);
}

static double file_time(const char *path)
{
	return atof(slurp(path));
}

/* A program that connects every 20 ms until told to stop, then prints
 * how many connections it made.  `then` runs once the log holds records
 * (a sanitizer build starts slowly), and the program goes on for 2 s
 * after it. */
static void rotate_while_connecting(struct run_result *r, const struct sandbox *sb, uint16_t port,
				    const char *then)
{
	char script[4096];
	snprintf(script, sizeof(script),
		 "%s%s run -c %s -- python3 -c \"import socket, time, os\n"
		 "n = 0\n"
		 "while not os.path.exists('%s/stop'):\n"
		 "    s = socket.create_connection(('127.0.0.1', %u)); s.close(); n += 1; time.sleep(0.02)\n"
		 "print(n)\" > %s/count &\n"
		 "while [ ! -s %s ]; do sleep 0.05; done; sleep 0.5\n"
		 "%s\nsleep 2; touch %s/stop; wait $!; cat %s/count",
		 sanitizer_prefix(), build_path("portfence"), sb->policy, sb->dir, port, sb->dir, sb->log,
		 then, sb->dir, sb->dir);
	char *argv[] = {"sh", "-c", script, NULL};
	run_program(r, argv, NULL, NULL);
}

Test(log, rotation_by_rename, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char then[1024], old[200], stamp[200];
	struct stat info;

	sandbox_init(&sb, one_app);
	snprintf(old, sizeof(old), "%s.1", sb.log);
	snprintf(stamp, sizeof(stamp), "%s/renamed-at", sb.dir);
	snprintf(then, sizeof(then), "date +%%s.%%N > %s; mv %s %s", stamp, sb.log, old);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	rotate_while_connecting(&r, &sb, srv.port, then);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned made = (unsigned)atoi(r.out);
	double renamed_at = file_time(stamp);
	json_t *before = audit_records(old), *after = audit_records(sb.log);
	cr_expect_gt(json_array_size(before), 0);
	cr_assert_gt(json_array_size(after), 0, "records go to a new file at the path");
	cr_expect_eq(json_array_size(before) + json_array_size(after), made,
		     "none lost between the two files: %zu + %zu of %u", json_array_size(before),
		     json_array_size(after), made);
	double last_old = record_time(json_array_get(before, json_array_size(before) - 1));
	cr_expect_leq(last_old - renamed_at, 1.25, "the renamed file got records for %.2f s",
		      last_old - renamed_at);
	cr_expect_geq(record_time(json_array_get(after, 0)), renamed_at);
	cr_assert_eq(lstat(sb.log, &info), 0);
	cr_expect(S_ISREG(info.st_mode));
	cr_expect_eq(info.st_mode & 0777, 0640);
	cr_expect_str_eq(r.err, "");
	json_decref(before);
	json_decref(after);
	sandbox_cleanup(&sb);
}

Test(log, rotation_by_removal, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char then[1024], stamp[200];
	struct stat info;

	sandbox_init(&sb, one_app);
	snprintf(stamp, sizeof(stamp), "%s/removed-at", sb.dir);
	snprintf(then, sizeof(then), "date +%%s.%%N > %s; rm %s", stamp, sb.log);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	rotate_while_connecting(&r, &sb, srv.port, then);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	json_t *after = audit_records(sb.log);
	cr_assert_gt(json_array_size(after), 0, "records go to a new file at the path");
	double first = record_time(json_array_get(after, 0));
	cr_expect_leq(first - file_time(stamp), 1.25, "the first record in the new file came %.2f s later",
		      first - file_time(stamp));
	cr_assert_eq(lstat(sb.log, &info), 0);
	cr_expect_eq(info.st_mode & 0777, 0640);
	json_decref(after);
	sandbox_cleanup(&sb);
}

Test(log, rotation_refuses_a_hostile_new_file, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char then[1024], old[200];
	static const char forged[] = "{\"forged\":true}\n";

	sandbox_init(&sb, one_app);
	snprintf(old, sizeof(old), "%s.1", sb.log);
	snprintf(then, sizeof(then),
		 "mv %s %s; printf '%%s\\n' '%.*s' > %s; chown 65534 %s", sb.log, old,
		 (int)strlen(forged) - 1, forged, sb.log, sb.log);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	rotate_while_connecting(&r, &sb, srv.port, then);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(slurp(sb.log), forged, "the other user's file is untouched");
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "one line:\n%s", r.err);
	cr_expect(strstr(r.err, "belongs to uid 65534"), "%s", r.err);
	json_t *kept = audit_records(old);
	cr_expect_eq(json_array_size(kept), (size_t)atoi(r.out), "records stay in the file we hold");
	json_decref(kept);
	sandbox_cleanup(&sb);
}
