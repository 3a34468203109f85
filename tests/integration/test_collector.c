/* The collector (`portfence daemon`): shim records through each
 * process's ring into the daemon's log file and into a real journald,
 * for a service running as nobody; a program that attacks its records;
 * a burst from 8 processes; kill -9 mid-burst; a collector restart.
 *
 * Each test runs in a mount namespace of its own, with a tmpfs on /run:
 * the collector's socket (/run/portfence/collector.sock) and journald's
 * (/run/systemd/journal) are the test's alone. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "record/ring.h"

#define COLLECTOR_SOCKET "/run/portfence/collector.sock"
#define JOURNALD "/lib/systemd/systemd-journald"

static const char svc_app[] =
	"default = \"pass\";\napps = ( { name = \"svc\"; match = { exe = [ \"*/ringprobe\" ]; };"
	" range = [ 61000, 61999 ]; algorithm = \"sequential\"; } );";

static void private_run(void)
{
	struct stat info;

	cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %s", strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	cr_assert_eq(mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"), 0, "tmpfs on /run: %s", strerror(errno));
	/* journald would keep what it is sent in the host's journal. */
	if (stat("/var/log/journal", &info) == 0)
		cr_assert_eq(mount("tmpfs", "/var/log/journal", "tmpfs", 0, "mode=0755"), 0);
}

static pid_t spawn(char *const argv[], const char *out_path)
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out, 1);
		dup2(out, 2);
		alarm(120);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static bool await_path(const char *path, int tenths)
{
	struct stat info;
	for (int i = 0; i < tenths; i++) {
		if (stat(path, &info) == 0)
			return true;
		usleep(100000);
	}
	return false;
}

/* A file's text once it says what (polled for up to tenths): the
 * collector says what it learnt when it next looks, not at once. */
static bool await_said(const char *path, const char *what, char *text, size_t len, int tenths)
{
	for (int i = 0; i < tenths; i++) {
		read_all(path, text, len);
		if (strstr(text, what))
			return true;
		usleep(100000);
	}
	return false;
}

static pid_t start_journald(const struct sandbox *sb)
{
	char out[256];

	if (access(JOURNALD, X_OK) != 0)
		cr_skip_test("%s is not installed (package systemd)", JOURNALD);
	mkdir("/run/systemd", 0755);
	mkdir("/run/systemd/journal", 0755);
	snprintf(out, sizeof(out), "%s/journald.out", sb->dir);
	char *argv[] = {JOURNALD, NULL};
	pid_t pid = spawn(argv, out);
	cr_assert(await_path("/run/systemd/journal/socket", 100), "journald did not start");
	return pid;
}

static pid_t start_collector(const struct sandbox *sb)
{
	char out[256];
	snprintf(out, sizeof(out), "%s/daemon.err", sb->dir);
	char *argv[] = {(char *)build_path("portfence"), "daemon", "-c", (char *)sb->policy, NULL};
	pid_t pid = spawn(argv, out);
	cr_assert(await_path(COLLECTOR_SOCKET, 100), "no collector at %s", COLLECTOR_SOCKET);
	return pid;
}

static void stop(pid_t pid, int sig)
{
	kill(pid, sig);
	wait_child(pid);
}

/* A server that accepts and closes, as fast as it can: a burst's. */
struct acceptor {
	int fd;
	uint16_t port;
	atomic_int count;
	atomic_int stop;
	pthread_t thread;
};

static void *accept_loop(void *arg)
{
	struct acceptor *a = arg;
	while (!atomic_load(&a->stop)) {
		int conn = accept(a->fd, NULL, NULL);
		if (conn < 0)
			continue;
		atomic_fetch_add(&a->count, 1);
		close(conn);
	}
	return NULL;
}

static void acceptor_start(struct acceptor *a)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	memset(a, 0, sizeof(*a));
	a->fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_eq(bind(a->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(a->fd, 4096), 0);
	getsockname(a->fd, (struct sockaddr *)&sin, &len);
	a->port = ntohs(sin.sin_port);
	struct timeval tick = {.tv_sec = 0, .tv_usec = 200000};
	setsockopt(a->fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
	pthread_create(&a->thread, NULL, accept_loop, a);
}

static void acceptor_stop(struct acceptor *a)
{
	atomic_store(&a->stop, 1);
	pthread_join(a->thread, NULL);
	close(a->fd);
}

/* The svc app's sandbox in a private /run, its collector started, a
 * server (its address in dest) and the program's output path in out. */
static pid_t svc_with_collector(struct sandbox *sb, struct acceptor *srv, char *dest, size_t dest_len, char *out,
				size_t out_len)
{
	private_run();
	sandbox_init(sb, svc_app);
	pid_t collector = start_collector(sb);
	acceptor_start(srv);
	snprintf(dest, dest_len, "127.0.0.1:%u", srv->port);
	snprintf(out, out_len, "%s/out", sb->dir);
	return collector;
}

static unsigned count_lines_of(const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned n = 0;
	int c;
	while (f && (c = getc(f)) != EOF)
		n += c == '\n';
	if (f)
		fclose(f);
	return n;
}

/* Waits until the log holds want lines (or 30 s). */
static unsigned await_lines(const char *path, unsigned want)
{
	unsigned n = 0;
	for (int i = 0; i < 300 && (n = count_lines_of(path)) < want; i++)
		usleep(100000);
	return n;
}

/* Waits until the log holds want lines, or has stopped growing for 2 s. */
static unsigned await_settled(const char *path, unsigned want)
{
	unsigned n = 0, before = ~0u;
	for (int i = 0, still = 0; i < 300 && (n = count_lines_of(path)) < want && still < 20; i++) {
		still = n == before ? still + 1 : 0;
		before = n;
		usleep(100000);
	}
	return n;
}

/* journalctl -o json MATCH, one object per entry. */
static json_t *journal_entries(const char *match)
{
	char cmd[256];
	json_t *entries = json_array();
	snprintf(cmd, sizeof(cmd), "journalctl --no-pager -o json %s 2>/dev/null", match);
	FILE *p = popen(cmd, "r");
	char line[16384];
	while (p && fgets(line, sizeof(line), p)) {
		json_t *entry = json_loads(line, 0, NULL);
		if (entry)
			json_array_append_new(entries, entry);
	}
	if (p)
		pclose(p);
	return entries;
}

/* The journal's entries for match once it has want of them (5 s at
 * most). */
static json_t *await_journal(const char *match, size_t want)
{
	json_t *entries = NULL;
	for (int i = 0; i < 50; i++) {
		json_decref(entries);
		entries = journal_entries(match);
		if (json_array_size(entries) >= want)
			break;
		usleep(100000);
	}
	return entries;
}

static const char *text(json_t *object, const char *key)
{
	const char *value = json_string_value(json_object_get(object, key));
	return value ? value : "";
}

/* ---- a service running as nobody ---- */

Test(collector, nobody_service_recorded_in_file_and_journal, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	struct stat info;
	char dest[64], want_pid[32];

	private_run();
	sandbox_init(&sb, svc_app);
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	pid_t journald = start_journald(&sb);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			(char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path_for_others("ringprobe"), "connect", "3", dest, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "status %d: %s%s", r.status, r.out, r.err);
	cr_assert_null(strstr(r.err, "audit records are not written"), "%s", r.err);
	cr_assert_eq(await_lines(sb.log, 3), 3);
	/* The log is the collector's: root's, 0640. */
	cr_assert_eq(stat(sb.log, &info), 0);
	cr_assert_eq(info.st_uid, 0);
	cr_assert_eq(info.st_mode & 0777, 0640, "mode %o", info.st_mode & 0777);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), 3);
	json_int_t pid = json_integer_value(json_object_get(json_array_get(records, 0), "pid"));
	for (size_t i = 0; i < 3; i++) {
		json_t *rec = json_array_get(records, i);
		cr_assert_str_eq(text(rec, "event"), "assign");
		cr_assert_str_eq(text(rec, "app"), "svc");
		cr_assert_str_eq(text(rec, "algorithm"), "sequential");
		cr_assert_str_eq(text(rec, "result"), "ok");
		cr_assert_eq(json_integer_value(json_object_get(rec, "pid")), pid);
		cr_assert(strstr(text(rec, "exe"), "/ringprobe"), "%s", text(rec, "exe"));
		uint16_t port = address_port(text(rec, "local"));
		cr_assert(port >= 61000 && port <= 61999, "%u", port);
		cr_assert_eq(address_port(text(rec, "remote")), srv.port);
	}
	/* The journal has each record as PORTFENCE_* fields, with the
	 * process's kernel-given identity. */
	snprintf(want_pid, sizeof(want_pid), "%lld", (long long)pid);
	json_t *entries = await_journal("PORTFENCE_APP=svc", 3);
	cr_assert_eq(json_array_size(entries), 3, "journal entries: %zu", json_array_size(entries));
	for (size_t i = 0; i < 3; i++) {
		json_t *entry = json_array_get(entries, i);
		json_t *rec = json_array_get(records, i);
		cr_assert_str_eq(text(entry, "PORTFENCE_EVENT"), "assign");
		cr_assert_str_eq(text(entry, "PORTFENCE_LOCAL"), text(rec, "local"));
		cr_assert_str_eq(text(entry, "PORTFENCE_REMOTE"), text(rec, "remote"));
		cr_assert_str_eq(text(entry, "PORTFENCE_RESULT"), "ok");
		cr_assert_str_eq(text(entry, "PORTFENCE_PID"), want_pid);
		cr_assert_str_eq(text(entry, "OBJECT_PID"), want_pid);
		cr_assert_str_eq(text(entry, "OBJECT_UID"), "65534");
		cr_assert_str_eq(text(entry, "SYSLOG_IDENTIFIER"), "portfence");
		cr_assert(strstr(text(entry, "MESSAGE"), "svc: assign tcp"), "%s", text(entry, "MESSAGE"));
	}
	json_decref(entries);
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	stop(journald, SIGTERM);
	sandbox_cleanup(&sb);
}

/* Whether the journal entry's field (one value, or several) has value. */
static bool has_value(json_t *entry, const char *key, const char *value)
{
	json_t *field = json_object_get(entry, key), *each;
	size_t i;

	if (json_is_string(field))
		return strcmp(json_string_value(field), value) == 0;
	json_array_foreach(field, i, each)
		if (json_is_string(each) && strcmp(json_string_value(each), value) == 0)
			return true;
	return false;
}

/* A service started as root that drops to nobody (setuid) after its
 * first connect: each record's OBJECT_UID is the uid the process had
 * when the collector took the record, not the one it registered with. */
Test(collector, a_process_that_drops_to_nobody_is_recorded_as_nobody, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char code[512];

	private_run();
	sandbox_init(&sb, svc_app);
	pid_t journald = start_journald(&sb);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(code, sizeof(code),
		 "import os, socket, time\n"
		 "socket.create_connection(('127.0.0.1', %u)).close()\n"
		 "time.sleep(0.5)\n"
		 "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
		 "socket.create_connection(('127.0.0.1', %u)).close()\n",
		 srv.port, srv.port);
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "-a", "svc", "--", "python3", "-c",
			code, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert_eq(await_lines(sb.log, 2), 2, "%s", r.err);
	json_t *entries = await_journal("PORTFENCE_APP=svc", 2);
	cr_assert_eq(json_array_size(entries), 2, "journal entries: %zu", json_array_size(entries));
	/* journald adds an OBJECT_UID of its own from its cache of the
	 * process's credentials, which a setuid leaves stale for a while:
	 * the entry then holds both values, and ours must be among them. */
	cr_expect(has_value(json_array_get(entries, 0), "OBJECT_UID", "0"), "%s",
		  json_dumps(json_array_get(entries, 0), 0));
	cr_expect(has_value(json_array_get(entries, 1), "OBJECT_UID", "65534"), "%s",
		  json_dumps(json_array_get(entries, 1), 0));
	json_decref(entries);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	stop(journald, SIGTERM);
	sandbox_cleanup(&sb);
}

/* A program whose path holds a control byte and a byte that is not
 * UTF-8: journald keeps the path's bytes in PORTFENCE_EXE, and the
 * MESSAGE stays text (journalctl showed it as blob data). */
Test(collector, a_hostile_program_path_leaves_the_journal_message_readable, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char path[PATH_MAX], dest[64], cmd[PATH_MAX * 2];

	private_run();
	sandbox_init(&sb, svc_app);
	pid_t journald = start_journald(&sb);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(path, sizeof(path), "%s/ring\001probe\377", sb.dir);
	snprintf(cmd, sizeof(cmd), "cp '%s' \"$0\" && chmod 755 \"$0\"", build_path("ringprobe"));
	char *copy[] = {"sh", "-c", cmd, path, NULL};
	run_program(&r, copy, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "-a", "svc", "--", path, "connect", "1",
			dest, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	json_t *entries = await_journal("PORTFENCE_APP=svc", 1);
	cr_assert_eq(json_array_size(entries), 1, "journal entries: %zu", json_array_size(entries));
	json_t *entry = json_array_get(entries, 0);
	cr_assert(json_is_string(json_object_get(entry, "MESSAGE")), "MESSAGE is not text: %s", json_dumps(entry, 0));
	cr_assert(strstr(text(entry, "MESSAGE"), "/ring?probe?)"), "%s", text(entry, "MESSAGE"));
	cr_assert(json_is_array(json_object_get(entry, "PORTFENCE_EXE")), "the path's bytes: %s", json_dumps(entry, 0));
	json_decref(entries);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	stop(journald, SIGTERM);
	sandbox_cleanup(&sb);
}

/* The BPF backend's records reach the journal with the process's
 * identity as the shim's do: OBJECT_UID was missing (the BPF record
 * carried no uid).  run --bpf --user nobody. */
Test(collector, bpf_records_in_the_journal_carry_the_process_uid, .timeout = 120)
{
	char cgroup_mount[PATH_MAX], dest[64];
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;

	skip_unless_bpf_machine_at(cgroup_mount, sizeof(cgroup_mount));
	private_run();
	sandbox_init(&sb, "apps = ( { name = \"bpfjournal\"; range = [ 62620, 62629 ]; } );");
	chmod(sb.policy, 0644);
	pid_t journald = start_journald(&sb);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path("portfence"), "run", "--bpf", "-c", sb.policy, "-a", "bpfjournal", "--user",
			"nobody", "--", (char *)build_path_for_others("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "status %d: %s%s", r.status, r.out, r.err);
	json_t *entries = await_journal("PORTFENCE_APP=bpfjournal", 1);
	cr_assert_eq(json_array_size(entries), 1, "journal entries: %zu", json_array_size(entries));
	json_t *entry = json_array_get(entries, 0);
	cr_expect_str_eq(text(entry, "PORTFENCE_EVENT"), "assign");
	cr_expect_str_eq(text(entry, "OBJECT_PID"), text(entry, "PORTFENCE_PID"));
	cr_expect_str_eq(text(entry, "OBJECT_UID"), "65534");
	json_decref(entries);
	acceptor_stop(&srv);
	stop(journald, SIGTERM);
	sandbox_cleanup(&sb);
}

/* ---- a program that attacks its records ---- */

Test(collector, hostile_program_cannot_forge_or_touch_the_log, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char dest[64], daemon_err[256], err_text[8192];

	private_run();
	sandbox_init(&sb, svc_app);
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	/* Clients that connect and never send hold nobody up. */
	int silent[10];
	for (int i = 0; i < 10; i++) {
		struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = COLLECTOR_SOCKET};
		silent[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		cr_assert_eq(connect(silent[i], (struct sockaddr *)&addr, sizeof(addr)), 0);
	}
	/* The collector's log exists before the program starts. */
	char *warm[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, warm, NULL, NULL);
	cr_assert_eq(await_lines(sb.log, 1), 1);
	for (int i = 0; i < 10; i++)
		close(silent[i]);
	char *argv[] = {"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			(char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path_for_others("ringprobe"), "hostile", dest, sb.log, COLLECTOR_SOCKET, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "status %d: %s%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "connect1 0\n") && strstr(r.out, "connect2 0\n"), "%s", r.out);
	cr_assert(strstr(r.out, "ring found\n"), "%s", r.out);
	cr_assert(strstr(r.out, "forged 1\n"), "%s", r.out);
	cr_assert(strstr(r.out, "open-log Permission denied\n"), "%s", r.out);
	cr_assert(strstr(r.out, "truncate-log Permission denied\n"), "%s", r.out);
	/* Closed unanswered (EOF, or a reset for the bytes left unread). */
	cr_assert(strstr(r.out, "answer 0\n") || strstr(r.out, "answer -1\n"), "the forged registration was answered: %s",
		  r.out);
	/* warm's record, connect1, the made-up one, connect2: the garbage
	 * is not there, and every line is a whole record. */
	cr_assert_eq(await_lines(sb.log, 4), 4);
	usleep(300000);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), 4, "%zu records", json_array_size(records));
	json_t *made_up = json_array_get(records, 2), *second = json_array_get(records, 3);
	json_int_t pid = json_integer_value(json_object_get(json_array_get(records, 1), "pid"));
	cr_assert_str_eq(text(made_up, "remote"), "10.9.9.9:25");
	/* It carries the program's own pid and app, as the kernel and its
	 * registration gave them: it cannot speak for another process. */
	cr_assert_eq(json_integer_value(json_object_get(made_up, "pid")), pid);
	cr_assert_eq(json_integer_value(json_object_get(second, "pid")), pid);
	cr_assert_neq(pid, json_integer_value(json_object_get(json_array_get(records, 0), "pid")));
	cr_assert_str_eq(text(made_up, "app"), "svc");
	cr_assert(strstr(text(made_up, "exe"), "/ringprobe"));
	/* The garbage was counted and skipped, the forged registration refused. */
	snprintf(daemon_err, sizeof(daemon_err), "%s/daemon.err", sb.dir);
	read_all(daemon_err, err_text, sizeof(err_text));
	cr_assert(strstr(err_text, "wrote 10 malformed record(s) into its ring; skipped"), "%s", err_text);
	cr_assert(strstr(err_text, "registration(s) refused"), "%s", err_text);
	/* The collector lives on and still records. */
	run_program(&r, warm, NULL, NULL);
	cr_assert_eq(await_lines(sb.log, 5), 5);
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* A program started under an older portfence (another ring layout)
 * registers with this collector: refused, said once with its pid and
 * both versions, and the collector goes on recording. */
Test(collector, a_ring_of_another_version_is_refused_and_said, .timeout = 60)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char said[4096], path[256], expected[128], dest[64], out[256];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	char *argv[] = {(char *)build_path("ringprobe"), "older", COLLECTOR_SOCKET, NULL};
	for (int i = 0; i < 2; i++) {
		run_program(&r, argv, NULL, NULL);
		cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
		cr_assert(strstr(r.out, "answer ") && !strstr(r.out, "yes"), "an older ring was taken: %s", r.out);
	}
	snprintf(path, sizeof(path), "%s/daemon.err", sb.dir);
	snprintf(expected, sizeof(expected), "registered a ring of version %u; this collector reads version %u",
		 PF_RING_VERSION - 1, PF_RING_VERSION);
	cr_assert(await_said(path, expected, said, sizeof(said), 50), "the collector said: %s", said);
	cr_assert_null(strstr(strstr(said, expected) + 1, expected), "said twice: %s", said);
	cr_assert_null(strstr(said, "not a shim's ring"), "%s", said);
	char *current[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			   (char *)build_path("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, current, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert_eq(await_lines(sb.log, 1), 1, "a current program after the refusal was not recorded: %s", r.err);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* Rings the collector cannot trust are refused, and the collector goes
 * on recording: one whose memfd the program could shrink under the
 * collector's reads (they would fault, SIGBUS), and the ninth and tenth
 * of one process (a shim registers once, and again after an exec or a
 * collector's restart: eight at most). */
Test(collector, a_ring_it_cannot_trust_is_refused, .timeout = 60)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char said[4096], path[256], dest[64], out[256];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	char *unsealed[] = {(char *)build_path("ringprobe"), "unsealed", COLLECTOR_SOCKET, NULL};
	run_program(&r, unsealed, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect(strstr(r.out, "answer ") && !strstr(r.out, "yes"), "an unsealed ring was taken: %s", r.out);
	snprintf(path, sizeof(path), "%s/daemon.err", sb.dir);
	cr_expect(await_said(path, "1 registration(s) refused (not a shim's ring)", said, sizeof(said), 50),
		  "the collector said: %s", said);

	char *ten[] = {(char *)build_path("ringprobe"), "rings", COLLECTOR_SOCKET, "10", NULL};
	run_program(&r, ten, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	int yes = 0;
	for (const char *at = r.out; (at = strstr(at, "yes")); at++)
		yes++;
	cr_expect_eq(yes, 8, "%d of 10 rings of one process were taken:\n%s", yes, r.out);
	cr_expect_eq(count_lines_starting(r.out, "answer "), 10, "not every registration was answered or closed:\n%s",
		     r.out);

	char *current[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			   (char *)build_path("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, current, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect_eq(await_lines(sb.log, 1), 1, "a program after the refusals was not recorded: %s", r.err);
	cr_expect_eq(waitpid(collector, NULL, WNOHANG), 0, "the collector died");
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* ---- nothing lost ---- */

#define BURST_PROCS 8
#define BURST_EACH 6250
/* Under ThreadSanitizer the collector runs about ten times slower: a
 * process's ring (4,096 slots) fills, and its shim writes to the log
 * directly, as designed (full_ring_falls_back_said_once_and_counted),
 * which keeps no order with the records still in the ring.  That run is
 * there for data races: each process's burst fits in its ring. */
#define BURST_EACH_TSAN 4000

static bool under_thread_sanitizer(void)
{
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	return runtime && strstr(runtime, "libtsan");
}

/* 50,000 records from 8 processes through their rings: all in the log,
 * in each process's order, none by the direct write (a ring that
 * overflowed).  With journald running, as on any systemd host, the
 * collector sends each record to the journal too, and journald takes a
 * core to itself: services run as nobody there, and connect UDP sockets
 * (faster than TCP's handshakes), so that their rings fill (a ring that
 * overflowed lost their records: they may not open the log). */
static void burst_of_50000(bool with_journald)
{
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[BURST_PROCS][256], count[16];
	pid_t pids[BURST_PROCS];

	private_run();
	sandbox_init(&sb, svc_app);
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	pid_t journald = with_journald ? start_journald(&sb) : 0;
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	unsigned each = under_thread_sanitizer() ? BURST_EACH_TSAN : BURST_EACH;
	snprintf(count, sizeof(count), "%u", each);
	char *argv[] = {(char *)build_path("ringprobe"), "connect", count, dest, NULL};
	char *as_nobody[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			     (char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
			     (char *)build_path_for_others("ringprobe"), "udp", count, dest, NULL};
	for (int i = 0; i < BURST_PROCS; i++) {
		snprintf(out[i], sizeof(out[i]), "%s/out-%d", sb.dir, i);
		pids[i] = with_journald ? spawn_program(as_nobody, out[i]) : spawn_under(&sb, NULL, argv, out[i]);
	}
	for (int i = 0; i < BURST_PROCS; i++) {
		char said[4096];
		int status = wait_child(pids[i]);
		read_all(out[i], said, sizeof(said));
		cr_assert_eq(status, 0, "process %d: %s", i, said);
	}
	unsigned want = BURST_PROCS * each;
	cr_assert_eq(await_lines(sb.log, want), want);
	usleep(300000);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), want);
	for (int w = 0; w < 100 && !with_journald && (unsigned)atomic_load(&srv.count) < want; w++)
		usleep(50000);
	/* The clients reset each connection at once: one reset before the
	 * accept loop took it leaves the accept queue unseen (1 of 50,000
	 * under the sanitizer's load); the records are what is counted.
	 * (UDP connects send nothing.) */
	if (!with_journald)
		cr_assert_geq((unsigned)atomic_load(&srv.count), want - want / 1000, "server saw %d",
			      atomic_load(&srv.count));
	/* Each process's records in its order: the ports of the sequential
	 * algorithm never go back within one process (but where they wrap). */
	size_t i;
	json_t *rec;
	json_int_t pids_seen[BURST_PROCS] = {0};
	unsigned per_pid[BURST_PROCS] = {0};
	char last_ts[BURST_PROCS][40] = {{0}};
	json_array_foreach(records, i, rec) {
		cr_assert_str_eq(text(rec, "event"), "assign");
		json_int_t pid = json_integer_value(json_object_get(rec, "pid"));
		int slot = 0;
		while (slot < BURST_PROCS && pids_seen[slot] && pids_seen[slot] != pid)
			slot++;
		cr_assert_lt(slot, BURST_PROCS, "more than %d pids", BURST_PROCS);
		pids_seen[slot] = pid;
		per_pid[slot]++;
		cr_assert_geq(strcmp(text(rec, "ts"), last_ts[slot]), 0, "records of pid %lld out of order",
			      (long long)pid);
		snprintf(last_ts[slot], sizeof(last_ts[slot]), "%s", text(rec, "ts"));
	}
	for (int p = 0; p < BURST_PROCS; p++)
		cr_assert_eq(per_pid[p], each, "pid %lld: %u records", (long long)pids_seen[p], per_pid[p]);
	/* Through the ring: no process fell back to the direct write. */
	for (int p = 0; p < BURST_PROCS; p++) {
		char text_out[4096];
		read_all(out[p], text_out, sizeof(text_out));
		cr_assert_null(strstr(text_out, "directly"), "%s", text_out);
	}
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	if (journald)
		stop(journald, SIGTERM);
	sandbox_cleanup(&sb);
}

Test(collector, burst_of_50000_from_8_processes_loses_none, .timeout = 300)
{
	burst_of_50000(false);
}

Test(collector, burst_of_50000_as_nobody_with_journald_running_loses_none, .timeout = 300)
{
	burst_of_50000(true);
}

Test(collector, kill_9_mid_burst_keeps_the_records_written, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[256];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	char *argv[] = {(char *)build_path("ringprobe"), "connect", "1000000", dest, NULL};
	pid_t pid = spawn_under(&sb, NULL, argv, out);
	for (int i = 0; i < 300 && atomic_load(&srv.count) < 5000; i++)
		usleep(20000);
	cr_assert_geq(atomic_load(&srv.count), 5000);
	kill(pid, SIGKILL);
	cr_assert_eq(wait_child(pid), 128 + SIGKILL);
	usleep(300000);
	unsigned connected = (unsigned)atomic_load(&srv.count);
	/* Every connect that reached the server was recorded, but the one
	 * the kill may have cut between its connect and its record. */
	unsigned have = await_settled(sb.log, connected);
	cr_assert_geq(have + 1, connected, "%u records of %u connects", have, connected);
	cr_assert_leq(have, connected);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), have);
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* n connects 100 ms apart under a collector that disturb upsets: every
 * record arrives, in order, whichever way each went.  What the program
 * said goes to said.  as_nobody: the program runs as nobody, who may not
 * write the log, so that its records reach it only through a
 * collector. */
static void paced_through_as(bool as_nobody, unsigned n, pid_t (*disturb)(const struct sandbox *sb, pid_t collector),
			     char *said, size_t said_len)
{
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[256], count[16];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	snprintf(count, sizeof(count), "%u", n);
	char *argv[] = {(char *)build_path("ringprobe"), "paced", count, "100", dest, NULL};
	char *as_nobody_argv[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
				  (char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
				  (char *)build_path_for_others("ringprobe"), "paced", count, "100", dest, NULL};
	pid_t pid = as_nobody ? spawn_program(as_nobody_argv, out) : spawn_under(&sb, NULL, argv, out);
	collector = disturb(&sb, collector);
	cr_assert_eq(wait_child(pid), 0);
	unsigned have = await_lines(sb.log, n);
	read_all(out, said, said_len);
	cr_assert_eq(have, n, "%u records of %u; the program said: %s", have, n, said);
	usleep(500000);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), n);
	for (size_t i = 1; i < n; i++)
		cr_assert_geq(strcmp(text(json_array_get(records, i), "ts"), text(json_array_get(records, i - 1), "ts")),
			      0, "record %zu out of order", i);
	json_decref(records);
	acceptor_stop(&srv);
	if (collector > 0)
		stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

static void paced_through(unsigned n, pid_t (*disturb)(const struct sandbox *sb, pid_t collector), char *said,
			  size_t said_len)
{
	paced_through_as(false, n, disturb, said, said_len);
}

/* Gone for 2 s, then back. */
static pid_t restart(const struct sandbox *sb, pid_t collector)
{
	sleep(2);
	stop(collector, SIGTERM);
	sleep(2);
	return start_collector(sb);
}

Test(collector, restart_loses_nothing, .timeout = 120)
{
	char said[4096];
	paced_through(80, restart, said, sizeof(said));
	fprintf(stderr, "restart: the program said: %s\n", said);
}

/* A service run as nobody may not write the log: what it records while
 * the daemon restarts waits in its ring for the next one. */
Test(collector, restart_loses_nothing_of_a_nobody_service, .timeout = 120)
{
	char said[4096];
	paced_through_as(true, 80, restart, said, sizeof(said));
	fprintf(stderr, "restart (nobody): the program said: %s\n", said);
}

/* Killed (SIGKILL), gone for 4 s, then back. */
static pid_t crash_and_restart(const struct sandbox *sb, pid_t collector)
{
	sleep(2);
	stop(collector, SIGKILL);
	sleep(4);
	return start_collector(sb);
}

Test(collector, crash_and_restart_loses_nothing_of_a_nobody_service, .timeout = 120)
{
	char said[4096];
	paced_through_as(true, 100, crash_and_restart, said, sizeof(said));
	fprintf(stderr, "crash and restart (nobody): the program said: %s\n", said);
}

/* Stopped first, so that records pile up in the ring unread, then
 * killed for good. */
static pid_t kill_for_good(const struct sandbox *sb, pid_t collector)
{
	(void)sb;
	sleep(1);
	kill(collector, SIGSTOP);
	usleep(500000);
	stop(collector, SIGKILL);
	return -1;
}

/* What the program had put in its ring and the collector never took
 * reaches the file, by the program's own write, once the collector's
 * lease runs out. */
Test(collector, killed_collector_leaves_nothing_stranded, .timeout = 120)
{
	char said[4096];
	paced_through(60, kill_for_good, said, sizeof(said));
	cr_assert(strstr(said, "the collector is gone; records go to the log file directly"), "%s", said);
}

/* A socket another user planted at the collector's path (a shared,
 * world-writable /run/portfence) gets no ring: the records go to the
 * file directly, none to the impostor. */
Test(collector, impostor_collector_gets_nothing, .timeout = 60)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char dest[64], fake_out[256], code[1024], said[256];

	private_run();
	sandbox_init(&sb, svc_app);
	cr_assert_eq(mkdir("/run/portfence", 01777), 0);
	chmod("/run/portfence", 01777);
	/* Its notes where nobody may write. */
	snprintf(fake_out, sizeof(fake_out), "/run/portfence/impostor");
	snprintf(code, sizeof(code),
		 "import socket, os\n"
		 "s = socket.socket(socket.AF_UNIX); s.bind('%s'); s.listen(8)\n"
		 "open('%s.ready', 'w').close()\n"
		 "while True:\n"
		 "    c, _ = s.accept()\n"
		 "    data = c.recv(4096)\n"
		 "    open('%s', 'a').write('got %%d\\n' %% len(data)); c.send(b'1'); c.close()\n",
		 COLLECTOR_SOCKET, fake_out, fake_out);
	char *fake[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
			"-c", code, NULL};
	char ready[300];
	snprintf(ready, sizeof(ready), "%s.ready", fake_out);
	char log_out[300];
	snprintf(log_out, sizeof(log_out), "%s/impostor.out", sb.dir);
	pid_t impostor = spawn(fake, log_out);
	cr_assert(await_path(ready, 100), "the impostor did not start");
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path("ringprobe"), "connect", "2", dest, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_assert_eq(count_lines_of(sb.log), 2, "the records went to the file directly");
	read_all(fake_out, said, sizeof(said));
	/* It sees a connection, closed with nothing sent. */
	for (const char *line = strstr(said, "got "); line; line = strstr(line + 1, "got "))
		cr_assert_eq(atoi(line + 4), 0, "the impostor was handed: %s", said);
	stop(impostor, SIGKILL);
	acceptor_stop(&srv);
	sandbox_cleanup(&sb);
}

/* ---- records that explain, through the ring ---- */

/* A service run as nobody, started before the daemon: it may not open
 * the log, and found no collector at start-up.  It registers with the
 * collector once that runs (within a second), and its records from then
 * on are written; they were lost for its whole life. */
Test(collector, a_nobody_service_started_before_the_daemon_is_recorded_once_it_runs, .timeout = 60)
{
	enum { CONNECTS = 40, PACE_MS = 100 };
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[256], count[16], pace[16], said[4096];

	private_run();
	sandbox_init(&sb, svc_app);
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	acceptor_start(&srv);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	snprintf(count, sizeof(count), "%d", CONNECTS);
	snprintf(pace, sizeof(pace), "%d", PACE_MS);
	snprintf(out, sizeof(out), "%s/out", sb.dir);
	char *argv[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			(char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path_for_others("ringprobe"), "paced", count, pace, dest, NULL};
	pid_t service = spawn_program(argv, out);
	usleep(500000);
	pid_t collector = start_collector(&sb);
	cr_assert_eq(wait_child(service), 0);
	read_all(out, said, sizeof(said));
	/* 4 s of connects, the collector there after 0.5 s, found within a
	 * second: the last 2.5 s of them at least. */
	unsigned recorded = await_settled(sb.log, CONNECTS);
	cr_expect_geq(recorded, CONNECTS * 5 / 8, "%u of %d records written; the service said: %s", recorded,
		      CONNECTS, said);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

static const char svc_denying_app[] =
	"default = \"pass\";\napps = ( { name = \"svc\"; match = { exe = [ \"*/ringprobe\" ]; };"
	" range = [ 61000, 61001 ]; algorithm = \"sequential\"; deny = [ \"127.0.0.2/32\" ]; } );";

/* ringprobe MODE COUNT DEST run under policy. */
static void probe(const char *policy, const char *mode, const char *count, const char *dest, struct run_result *r)
{
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", (char *)policy, "--",
			(char *)build_path("ringprobe"), (char *)mode, (char *)count, (char *)dest, NULL};
	run_program(r, argv, NULL, NULL);
}

/* The last record of event in records (NULL: none). */
static json_t *last_of(json_t *records, const char *event)
{
	json_t *last = NULL;
	for (size_t i = 0; i < json_array_size(records); i++)
		if (strcmp(text(json_array_get(records, i), "event"), event) == 0)
			last = json_array_get(records, i);
	return last;
}

/* The ring carries the rule and the reason the shim found, as it writes
 * them directly. */
Test(collector, deny_and_exhaustion_records_carry_rule_and_reason, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char denied[64], allowed[64];

	private_run();
	sandbox_init(&sb, svc_denying_app);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(denied, sizeof(denied), "127.0.0.2:%u", srv.port);
	snprintf(allowed, sizeof(allowed), "127.0.0.1:%u", srv.port);
	probe(sb.policy, "connect", "1", denied, &r);
	cr_assert_eq(await_lines(sb.log, 1), 1, "no deny record: %s", r.err);
	json_t *records = audit_records(sb.log);
	json_t *deny = json_array_get(records, 0);
	cr_assert_str_eq(text(deny, "event"), "deny");
	cr_assert(strstr(text(deny, "rule"), "deny \"127.0.0.2/32\""), "rule: %s", text(deny, "rule"));
	cr_assert(strstr(text(deny, "rule"), sb.policy), "rule names the file: %s", text(deny, "rule"));
	json_decref(records);
	/* Three connects held open in a range of two: the third is
	 * exhausted, and its error record says why. */
	probe(sb.policy, "hold", "3", allowed, &r);
	cr_assert_geq(await_lines(sb.log, 4), 4, "records: %s", r.err);
	records = audit_records(sb.log);
	json_t *error = last_of(records, "error");
	cr_assert_not_null(error, "no error record: %s", r.err);
	cr_assert(strstr(text(error, "reason"), "no free port in range 61000-61001 of app 'svc'"), "reason: %s",
		  text(error, "reason"));
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* The rule and the reason are the shim's own, from the policy it ran
 * with: a program run with another policy than the daemon's (run -c
 * OTHER), or with one edited since the daemon read it, gets its own
 * rule's text and FILE:LINE in the daemon's log. */
Test(collector, records_name_the_rule_of_the_policy_the_program_ran_with, .timeout = 120)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char denied[64], allowed[64], other[PATH_MAX + 16], state[PATH_MAX + 16];

	private_run();
	sandbox_init(&sb, svc_denying_app);
	snprintf(other, sizeof(other), "%s/other.conf", sb.dir);
	snprintf(state, sizeof(state), "%s/other-state", sb.dir);
	FILE *f = fopen(other, "w");
	cr_assert_not_null(f);
	fprintf(f, "version = 1;\nlog = { file = \"%s\"; };\nstate_dir = \"%s\";\ndefault = \"pass\";\n"
		   "apps = ( { name = \"svc\"; match = { exe = [ \"*/ringprobe\" ]; };\n"
		   "  range = [ 61010, 61010 ];\n  algorithm = \"sequential\";\n  deny = [ \"127.0.0.3/32\" ]; } );\n",
		sb.log, state);
	fclose(f);
	pid_t collector = start_collector(&sb);
	acceptor_start(&srv);
	snprintf(denied, sizeof(denied), "127.0.0.3:%u", srv.port);
	snprintf(allowed, sizeof(allowed), "127.0.0.1:%u", srv.port);
	probe(other, "connect", "1", denied, &r);
	cr_assert_eq(await_lines(sb.log, 1), 1, "no deny record: %s", r.err);
	char wanted[PATH_MAX + 128];
	snprintf(wanted, sizeof(wanted), "deny \"127.0.0.3/32\" %s:8", other);
	json_t *records = audit_records(sb.log);
	json_t *deny = json_array_get(records, 0);
	cr_assert_str_eq(text(deny, "event"), "deny");
	cr_assert_str_eq(text(deny, "rule"), wanted);
	json_decref(records);
	/* Two connects held open in OTHER's range of one port. */
	probe(other, "hold", "2", allowed, &r);
	cr_assert_geq(await_lines(sb.log, 3), 3, "records: %s", r.err);
	snprintf(wanted, sizeof(wanted), "no free port in range 61010-61010 of app 'svc' (%s:6)", other);
	records = audit_records(sb.log);
	json_t *error = last_of(records, "error");
	cr_assert_not_null(error, "no error record: %s", r.err);
	cr_assert_str_eq(text(error, "reason"), wanted);
	json_decref(records);
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* ---- a chrooted daemon and logrotate ---- */

#define TFTPD "/usr/sbin/in.tftpd"
#define TFTP "/usr/bin/tftp"

static const char tftp_app[] =
	"default = \"pass\";\napps = ( { name = \"tftp\"; match = { exe = [ \"*/in.tftpd\" ]; };"
	" range = [ 62000, 62999 ]; algorithm = \"sequential\"; } );";

/* A network namespace of the test's own, with loopback up.  tftpd-hpa
 * resolves its -a address with AI_ADDRCONFIG, which counts no loopback
 * address: lo gets one more address, which nothing ever sends to. */
static void private_net(void)
{
	private_loopback_net();
	cr_assert_eq(system("ip addr add 10.213.0.1/32 dev lo"), 0);
}

/* One real transfer with the tftp-hpa client: the server's child
 * chroots into its directory, binds a socket (a range port) and sends
 * the file. */
static void transfer(const struct sandbox *sb, uint16_t port, int n)
{
	char cmd[512], got[256], want[64];
	snprintf(cmd, sizeof(cmd), "timeout 20 %s 127.0.0.1 %u -c get file.txt %s/got%d.txt", TFTP, port, sb->dir, n);
	cr_assert_eq(system(cmd), 0, "%s failed", cmd);
	snprintf(cmd, sizeof(cmd), "%s/got%d.txt", sb->dir, n);
	read_all(cmd, got, sizeof(got));
	snprintf(want, sizeof(want), "portfence tftp %d\n", 0);
	cr_assert_str_eq(got, want, "transfer %d got '%s'", n, got);
}

/* The pids other than the server's own whose records lie in path (the
 * transfers' children), each with a range port. */
static unsigned children_recorded(const char *path, pid_t server)
{
	json_t *records = audit_records(path);
	unsigned n = 0;
	for (size_t i = 0; i < json_array_size(records); i++) {
		json_t *r = json_array_get(records, i);
		const char *local = text(r, "local");
		const char *colon = strrchr(local, ':');
		if (json_integer_value(json_object_get(r, "pid")) == server || strcmp(text(r, "event"), "assign") ||
		    !colon || atoi(colon + 1) < 62000 || atoi(colon + 1) > 62999)
			continue;
		cr_assert_str_eq(text(r, "exe"), TFTPD);
		n++;
	}
	json_decref(records);
	return n;
}

/* tftpd-hpa -s (each transfer's child chroots into the served directory)
 * under `portfence run`; logrotate (a real one, config written here)
 * renames the log between transfers.  out gets what tftpd said on
 * stderr; the children's records before and after the rotation are
 * counted. */
static void tftpd_through_logrotate(bool with_collector, char *out_text, size_t out_len, unsigned *before,
				    unsigned *after)
{
	struct sandbox sb;
	char root[128], file[160], out[160], conf[160], cmd[512], rotated[160], port_text[32];
	struct stat info;

	if (access(TFTPD, X_OK) != 0 || access(TFTP, X_OK) != 0)
		cr_skip_test("%s or %s is not installed (packages tftpd-hpa, tftp-hpa)", TFTPD, TFTP);
	if (access("/usr/sbin/logrotate", X_OK) != 0)
		cr_skip_test("logrotate is not installed");
	private_run();
	private_net();
	sandbox_init(&sb, tftp_app);
	pid_t collector = with_collector ? start_collector(&sb) : -1;
	snprintf(root, sizeof(root), "%s/root", sb.dir);
	cr_assert_eq(mkdir(root, 0755), 0);
	snprintf(file, sizeof(file), "%s/file.txt", root);
	FILE *f = fopen(file, "w");
	fprintf(f, "portfence tftp 0\n");
	fclose(f);
	chmod(file, 0644);
	uint16_t port = free_dns_port();
	snprintf(port_text, sizeof(port_text), "127.0.0.1:%u", port);
	snprintf(out, sizeof(out), "%s/tftpd.err", sb.dir);
	/* -L: standalone, in the foreground; -s: chroot; -u nobody. */
	char *argv[] = {TFTPD, "-4", "-L", "-u", "nobody", "-a", port_text, "-s", root, NULL};
	pid_t server = spawn_under(&sb, NULL, argv, out);
	usleep(500000);
	/* Two transfers, a second apart (so that each child looks at the
	 * log's path after a clock second turned). */
	transfer(&sb, port, 1);
	sleep(1);
	transfer(&sb, port, 2);
	await_lines(sb.log, 4);
	snprintf(conf, sizeof(conf), "%s/logrotate.conf", sb.dir);
	f = fopen(conf, "w");
	fprintf(f, "%s {\n\trotate 2\n\tmissingok\n\tnocompress\n\tcreate\n}\n", sb.log);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "logrotate -f -s %s/logrotate.status %s", sb.dir, conf);
	cr_assert_eq(system(cmd), 0, "%s failed", cmd);
	snprintf(rotated, sizeof(rotated), "%s.1", sb.log);
	cr_assert_eq(stat(rotated, &info), 0, "logrotate left no %s", rotated);
	/* Followed within a second. */
	usleep(1200000);
	transfer(&sb, port, 3);
	sleep(1);
	transfer(&sb, port, 4);
	usleep(500000);
	await_settled(sb.log, 4);
	stop(server, SIGTERM);
	if (collector > 0)
		stop(collector, SIGTERM);
	*before = children_recorded(rotated, server);
	*after = children_recorded(sb.log, server);
	read_all(out, out_text, out_len);
	sandbox_cleanup(&sb);
}

/* With the collector the program holds no log at all: every transfer's
 * child (chrooted, running as nobody) is recorded, and the records after
 * logrotate's rename land in the new file; no false warning. */
Test(collector, chrooted_tftpd_records_follow_logrotate, .timeout = 120)
{
	char said[4096];
	unsigned before, after;

	tftpd_through_logrotate(true, said, sizeof(said), &before, &after);
	fprintf(stderr, "chroot+collector: children recorded %u before, %u after; tftpd said: %s\n", before, after,
		said);
	cr_assert_eq(before, 2, "children's records before the rotation: %u (tftpd said: %s)", before, said);
	cr_assert_eq(after, 2, "children's records after the rotation: %u (tftpd said: %s)", after, said);
	cr_assert_null(strstr(said, "portfence"), "tftpd said: %s", said);
}

/* Without a collector the program writes the file itself: the server
 * (not chrooted) follows the rotation and its children inherit the new
 * file.  A child may not see the path from its chroot: it says so, and
 * never claims a rotation it cannot see. */
Test(collector, chrooted_tftpd_without_collector_says_the_truth, .timeout = 120)
{
	char said[4096];
	unsigned before, after;

	tftpd_through_logrotate(false, said, sizeof(said), &before, &after);
	fprintf(stderr, "chroot, no collector: children recorded %u before, %u after; tftpd said: %s\n", before,
		after, said);
	cr_assert_eq(before, 2, "children's records before the rotation: %u (tftpd said: %s)", before, said);
	cr_assert_eq(after, 2, "children's records after the rotation: %u (tftpd said: %s)", after, said);
	cr_assert_null(strstr(said, "before rotation"), "false warning: %s", said);
	cr_assert_null(strstr(said, "cannot open audit log"), "false warning: %s", said);
	for (const char *line = strstr(said, "portfence:"); line; line = strstr(line + 1, "portfence:"))
	{
		static const char honest[] = "portfence: this process changed its root directory (chroot)";
		cr_assert_eq(strncmp(line, honest, sizeof(honest) - 1), 0, "tftpd said: %s", said);
	}
}

/* ---- ring swaps ---- */

#define SWAP_THREADS 4

/* Records of one thread (told by its destination), in the file's order:
 * their count, and whether their times ever went back. */
static unsigned thread_records(json_t *records, uint16_t port, unsigned *out_of_order, unsigned *same_time)
{
	char remote[32];
	const char *last = "";
	unsigned n = 0;

	snprintf(remote, sizeof(remote), "127.0.0.1:%u", port);
	*out_of_order = *same_time = 0;
	for (size_t i = 0; i < json_array_size(records); i++) {
		json_t *r = json_array_get(records, i);
		if (strcmp(text(r, "remote"), remote))
			continue;
		int order = strcmp(text(r, "ts"), last);
		*out_of_order += order < 0;
		*same_time += order == 0;
		last = text(r, "ts");
		n++;
	}
	return n;
}

/* strace attached to the collector, holding each of its write(2) calls
 * for half a second before it is made: from the first batch on, the
 * collector spends nearly all its time with a batch taken from the rings
 * and not yet written.  Returns strace's pid once it is attached. */
static pid_t hold_writes(pid_t collector)
{
	char target[16], status[4096], path[64];
	snprintf(target, sizeof(target), "%d", (int)collector);
	char *argv[] = {"/usr/bin/strace", "-qq", "-o", "/dev/null", "-e", "trace=write", "-e",
			"inject=write:delay_enter=500000", "-p", target, NULL};
	pid_t tracer = spawn(argv, "/dev/null");

	snprintf(path, sizeof(path), "/proc/%d/status", (int)collector);
	for (int i = 0; i < 5000; i++) {
		read_all(path, status, sizeof(status));
		const char *traced = strstr(status, "TracerPid:");
		if (traced && atoi(traced + strlen("TracerPid:")) > 0)
			return tracer;
		usleep(1000);
	}
	cr_assert_fail("strace never attached to the collector (pid %d)", (int)collector);
	return tracer;
}

/* The rings pid has mapped: its memfd mappings named portfence-ring. */
static int rings_mapped(pid_t pid)
{
	char path[64], line[512];
	int rings = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	FILE *maps = fopen(path, "r");
	while (maps && fgets(line, sizeof(line), maps))
		rings += strstr(line, "memfd:portfence-ring") != NULL;
	if (maps)
		fclose(maps);
	return rings;
}

/* Four threads of one process record without a pause while the
 * collector is stopped with sig and started again, rounds times, every
 * period_ms: each time the process's ring is swapped (the old one's lease
 * ends, a new one is registered, or the records go to the file
 * meanwhile).  Every record written at the instant of a swap still
 * arrives, once, and each thread's records stay in order.  mid_write:
 * each stop comes while the collector writes a batch out (hold_writes). */
static void swaps_under(int sig, int rounds, int period_ms, const char *per_thread, const char *pause_us,
			bool mid_write)
{
	struct sandbox sb;
	struct acceptor srv[SWAP_THREADS];
	char dest[SWAP_THREADS][32], out[256], said[4096];
	char *argv[5 + SWAP_THREADS] = {(char *)build_path("ringprobe"), "threads", (char *)per_thread,
					(char *)pause_us};

	private_run();
	sandbox_init(&sb, svc_app);
	pid_t collector = start_collector(&sb);
	for (int i = 0; i < SWAP_THREADS; i++) {
		acceptor_start(&srv[i]);
		snprintf(dest[i], sizeof(dest[i]), "127.0.0.1:%u", srv[i].port);
		argv[4 + i] = dest[i];
	}
	snprintf(out, sizeof(out), "%s/out", sb.dir);
	pid_t pid = spawn_under(&sb, NULL, argv, out);
	int swaps = 0, most_rings = 0;
	for (; swaps < rounds && waitpid(pid, NULL, WNOHANG) == 0; swaps++) {
		int rings = rings_mapped(pid);
		most_rings = rings > most_rings ? rings : most_rings;
		usleep((useconds_t)period_ms * 1000);
		pid_t tracer = mid_write ? hold_writes(collector) : 0;
		if (tracer)
			usleep(300000);	/* inside a held write, with a batch taken */
		stop(collector, sig);
		if (tracer)
			wait_child(tracer);
		collector = start_collector(&sb);
	}
	cr_assert_eq(wait_child(pid), 0, "the program failed");
	unsigned connected = 0;
	for (int i = 0; i < SWAP_THREADS; i++)
		connected += (unsigned)atomic_load(&srv[i].count);
	unsigned have = await_settled(sb.log, connected);
	read_all(out, said, sizeof(said));
	json_t *records = audit_records(sb.log);
	fprintf(stderr, "ring swaps (signal %d): %d collector restarts, %u connects, %u records; the program said: %s\n",
		sig, swaps, connected, have, said);
	for (size_t i = 0; i < json_array_size(records); i++)
		cr_assert_str_neq(text(json_array_get(records, i), "event"), "error", "a record was lost: %s",
				  json_dumps(json_array_get(records, i), 0));
	for (int i = 0; i < SWAP_THREADS; i++) {
		unsigned disorder, same, n = thread_records(records, srv[i].port, &disorder, &same);
		cr_assert_eq(n, (unsigned)atomic_load(&srv[i].count), "thread %d: %u records of %d connects", i, n,
			     atomic_load(&srv[i].count));
		cr_assert_eq(disorder, 0, "thread %d: %u records out of order", i, disorder);
		cr_assert_eq(same, 0, "thread %d: %u records twice", i, same);
	}
	cr_assert_eq(have, connected);
	json_decref(records);
	/* A ring swapped out is let go (its 256 KiB), not kept for the
	 * process's life: the current ring, and one being moved at most. */
	cr_assert_leq(most_rings, 2, "the process had %d rings mapped after %d swaps", most_rings, swaps);
	/* What went to the file while no collector took the ring is
	 * counted, and said by the collector that comes next (those after
	 * the program's last registration, once it has exited). */
	if (strstr(said, "the collector is gone")) {
		char daemon_said[16384], path[256];
		snprintf(path, sizeof(path), "%s/daemon.err", sb.dir);
		cr_assert(await_said(path, "record(s) went to the log file directly", daemon_said, sizeof(daemon_said), 50),
			  "%s", daemon_said);
	}
	for (int i = 0; i < SWAP_THREADS; i++)
		acceptor_stop(&srv[i]);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

/* Restarted (SIGTERM) every quarter second. */
Test(collector, ring_swaps_on_restarts_lose_nothing, .timeout = 240)
{
	swaps_under(SIGTERM, 12, 250, "6000", "200", false);
}

/* Killed (SIGKILL) and started again: the ring swaps only when the lease
 * runs out, with seconds of records waiting in it. */
Test(collector, ring_swaps_after_crashes_lose_nothing, .timeout = 240)
{
	swaps_under(SIGKILL, 4, 3000, "3000", "4000", false);
}

/* Killed (SIGKILL) while it writes out a batch it took from the rings:
 * those records are still in the process's ring (a slot is freed only
 * once its record is written), and the process moves them on when the
 * lease runs out. */
Test(collector, a_collector_killed_mid_write_loses_nothing, .timeout = 240)
{
	skip_unless_strace_can_attach();
	swaps_under(SIGKILL, 3, 2000, "3000", "4000", true);
}

/* ---- the fallback ---- */

/* Waits up to 5 s for pid to be stopped (state T in /proc/PID/stat). */
static bool await_stopped(pid_t pid)
{
	char path[64], stat[512];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 5000; i++) {
		read_all(path, stat, sizeof(stat));
		const char *end = strrchr(stat, ')');
		if (end && end[1] == ' ' && end[2] == 'T')
			return true;
		usleep(1000);
	}
	return false;
}

/* The collector stopped (SIGSTOP), so that nothing drains the ring while
 * one process makes 6,000 records at once: the ring takes 4,096, the
 * rest go to the file directly, said once on the program's stderr and
 * counted (the collector says how many once it runs again); none is
 * lost, none written twice. */
/* The collector stopped while a program fills its ring: the ring takes
 * PF_RING_SLOTS records.  Run as root, the program writes the rest to
 * the log file itself, and the collector counts them; run as nobody, who
 * may not write the log, they are lost, and said as lost, never as
 * written. */
static void full_ring(bool as_nobody)
{
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[256], said[4096], daemon_said[4096], line[256];
	const unsigned n = 6000;

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	mkdir(sb.state, 01777);
	chmod(sb.state, 01777);
	char *argv[] = {(char *)build_path("ringprobe"), "signalled", "6000", dest, NULL};
	char *as_nobody_argv[] = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
				  (char *)build_path_for_others("portfence"), "run", "-c", sb.policy, "--",
				  (char *)build_path_for_others("ringprobe"), "signalled", "6000", dest, NULL};
	/* One record through the collector first: it answers. */
	struct run_result r;
	char *run_argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			    (char *)build_path("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, run_argv, NULL, NULL);
	cr_assert_eq(await_lines(sb.log, 1), 1);
	/* The program registers its ring at start-up, then waits: the
	 * collector is stopped before its first record, so the ring takes
	 * exactly PF_RING_SLOTS of them. */
	pid_t pid = as_nobody ? spawn_program(as_nobody_argv, out) : spawn_under(&sb, NULL, argv, out);
	for (int i = 0; i < 5000; i++) {
		read_all(out, said, sizeof(said));
		if (strstr(said, "ready"))
			break;
		usleep(1000);
	}
	cr_assert_not_null(strstr(said, "ready"), "the program said: %s", said);
	kill(collector, SIGSTOP);
	cr_assert(await_stopped(collector), "the collector never stopped");
	kill(pid, SIGUSR1);
	cr_assert_eq(wait_child(pid), 0);
	kill(collector, SIGCONT);
	unsigned want = as_nobody ? 1 + PF_RING_SLOTS + 1 : n + 1;
	unsigned have = await_lines(sb.log, want);
	usleep(300000);
	read_all(out, said, sizeof(said));
	snprintf(line, sizeof(line), "%s/daemon.err", sb.dir);
	read_all(line, daemon_said, sizeof(daemon_said));
	fprintf(stderr, "full ring%s: %u records of %u; the program said: %s; the collector said: %s\n",
		as_nobody ? " (nobody)" : "", have, want, said, daemon_said);
	cr_assert_eq(count_lines_of(sb.log), want, "records: %u of %u", count_lines_of(sb.log), want);
	const char *full = strstr(said, "portfence: the record ring is full");
	cr_assert_not_null(full, "%s", said);
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), want);
	if (as_nobody) {
		json_t *lost = json_array_get(records, want - 1);
		cr_assert_eq(json_integer_value(json_object_get(lost, "lost")), n - PF_RING_SLOTS, "%s",
			     json_dumps(lost, 0));
		cr_assert_null(strstr(daemon_said, "went to the log file directly"), "%s", daemon_said);
		json_decref(records);
		goto out;
	}
	json_decref(records);
	cr_assert_not_null(strstr(full, "records go to the log file directly (counted)"), "%s", said);
	cr_assert_null(strstr(full + 1, "portfence:"), "said more than once: %s", said);
	/* The rest went directly, and the collector counted them. */
	const char *counted = strstr(daemon_said, "record(s) went to the log file directly");
	cr_assert_not_null(counted, "the collector said: %s", daemon_said);
	const char *number = counted;
	while (number > daemon_said && number[-1] != ':')
		number--;
	unsigned direct = (unsigned)strtoul(number + 1, NULL, 10);
	cr_assert_eq(direct, n - PF_RING_SLOTS, "%u counted as direct, expected %u", direct, n - PF_RING_SLOTS);
out:
	acceptor_stop(&srv);
	stop(collector, SIGTERM);
	sandbox_cleanup(&sb);
}

Test(collector, full_ring_falls_back_said_once_and_counted, .timeout = 120)
{
	full_ring(false);
}

Test(collector, full_ring_of_a_program_that_may_not_write_the_log_says_lost, .timeout = 120)
{
	full_ring(true);
}

/* A program that registered while the collector was stopped gave up
 * waiting for its answer, wrote its record itself and ended: when the
 * collector takes the registration, nobody is refused, and it says
 * nothing of a ring that is not a shim's. */
Test(collector, a_program_that_gave_up_waiting_is_not_said_refused, .timeout = 60)
{
	struct sandbox sb;
	struct acceptor srv;
	struct run_result r;
	char dest[64], out[256], daemon_said[4096], path[PATH_MAX + 16];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	kill(collector, SIGSTOP);
	cr_assert(await_stopped(collector), "the collector never stopped");
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path("ringprobe"), "connect", "1", dest, NULL};
	run_program(&r, argv, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(count_lines_of(sb.log), 1, "the program wrote its record itself: %s", r.err);
	kill(collector, SIGCONT);
	usleep(1500000);
	stop(collector, SIGTERM);
	snprintf(path, sizeof(path), "%s/daemon.err", sb.dir);
	read_all(path, daemon_said, sizeof(daemon_said));
	cr_assert_null(strstr(daemon_said, "refused"), "the collector said: %s", daemon_said);
	acceptor_stop(&srv);
	sandbox_cleanup(&sb);
}

/* The collector killed (SIGKILL) while a process writes, and the process
 * ending before the collector's lease runs out: what it put in its ring
 * after the kill is nobody's to read, so it writes them to the file
 * itself as it exits. */
Test(collector, exit_soon_after_collector_killed_loses_nothing, .timeout = 60)
{
	struct sandbox sb;
	struct acceptor srv;
	char dest[64], out[256], said[4096];

	pid_t collector = svc_with_collector(&sb, &srv, dest, sizeof(dest), out, sizeof(out));
	char *argv[] = {(char *)build_path("ringprobe"), "paced", "20", "50", dest, NULL};
	pid_t pid = spawn_under(&sb, NULL, argv, out);
	usleep(300000);
	stop(collector, SIGKILL);
	cr_assert_eq(wait_child(pid), 0);
	unsigned have = await_settled(sb.log, 20);
	read_all(out, said, sizeof(said));
	fprintf(stderr, "exit after the collector's kill: %u records of 20; the program said: %s\n", have, said);
	cr_assert_eq(have, 20, "%u records of 20 (the program said: %s)", have, said);
	json_t *records = audit_records(sb.log);
	for (size_t i = 1; i < json_array_size(records); i++)
		cr_assert_geq(strcmp(text(json_array_get(records, i), "ts"), text(json_array_get(records, i - 1), "ts")),
			      0, "record %zu out of order", i);
	json_decref(records);
	acceptor_stop(&srv);
	sandbox_cleanup(&sb);
}
