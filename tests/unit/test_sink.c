/* The collector's file sink (record/sink.c) keeps SPEC's promise: a
 * record is never glued to a partial one, and a full disk leaves at most
 * one malformed line.  A short write is made real with RLIMIT_FSIZE (the
 * kernel cuts the write at the limit, as at a full disk); Criterion runs
 * each test in its own process, so the limit ends with it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record/sink.h"

static char dir[64], log_path[96];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/pf-sink-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(log_path, sizeof(log_path), "%s/log.jsonl", dir);
}

static void remove_dir(void)
{
	unlink(log_path);
	rmdir(dir);
}

static bool add_record(struct pf_record_sink *sink, const char *exe, unsigned port)
{
	struct sockaddr_in remote = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				     .sin_addr.s_addr = htonl(0x7f000001)};
	struct pf_record_fields fields = {.event = PF_EVENT_ASSIGN, .app = "web", .pid = 42, .exe = exe,
					  .family = AF_INET, .remote = (struct sockaddr *)&remote,
					  .algorithm = "sequential", .attempts = 1};
	return pf_record_sink_add(sink, &fields, -1);
}

/* The log's lines: how many, how many are not JSON objects, and the
 * remote of the last that is. */
struct lines {
	unsigned count, malformed;
	char last_remote[64];
};

static struct lines read_lines(void)
{
	struct lines l = {0};
	FILE *f = fopen(log_path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	cr_assert_not_null(f, "%s: %s", log_path, strerror(errno));
	while ((n = getline(&line, &cap, f)) > 0) {
		cr_assert_eq(line[n - 1], '\n', "the log ends mid-line: %s", line);
		l.count++;
		json_t *record = json_loadb(line, (size_t)n, 0, NULL);
		if (!json_is_object(record))
			l.malformed++;
		else
			snprintf(l.last_remote, sizeof(l.last_remote), "%s",
				 json_string_value(json_object_get(record, "remote")));
		json_decref(record);
	}
	free(line);
	fclose(f);
	return l;
}

Test(sink, a_record_starts_its_own_line_after_a_partial_last_one)
{
	make_dir();
	int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	cr_assert_geq(fd, 0);
	const char partial[] = "{\"ts\":\"2026-12-06T00:00:00.000000Z\",\"event\":\"assi";
	cr_assert_eq(write(fd, partial, sizeof(partial) - 1), (ssize_t)sizeof(partial) - 1);
	close(fd);

	struct pf_record_sink *sink = pf_record_sink_open(log_path, false);
	cr_assert(add_record(sink, "/usr/bin/curl", 8080));
	pf_record_sink_close(sink);
	struct lines l = read_lines();
	cr_expect_eq(l.count, 2, "%u lines", l.count);
	cr_expect_eq(l.malformed, 1, "%u malformed lines", l.malformed);
	cr_expect_str_eq(l.last_remote, "127.0.0.1:8080");
	remove_dir();
}

Test(sink, a_full_disk_leaves_one_malformed_line_and_the_next_record_whole)
{
	make_dir();
	signal(SIGXFSZ, SIG_IGN);
	struct pf_record_sink *sink = pf_record_sink_open(log_path, false);
	cr_assert(add_record(sink, "/usr/bin/curl", 1));
	pf_record_sink_flush(sink);
	struct stat info;
	cr_assert_eq(stat(log_path, &info), 0);
	/* Room for one more record and half of the next. */
	off_t limit = info.st_size * 5 / 2;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &(struct rlimit){.rlim_cur = (rlim_t)limit, .rlim_max = RLIM_INFINITY}), 0);
	for (unsigned port = 2; port <= 6; port++)
		cr_assert(add_record(sink, "/usr/bin/curl", port));
	pf_record_sink_flush(sink);
	/* The disk has room again. */
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &(struct rlimit){.rlim_cur = RLIM_INFINITY, .rlim_max = RLIM_INFINITY}), 0);
	cr_assert(add_record(sink, "/usr/bin/curl", 7));
	pf_record_sink_close(sink);
	struct lines l = read_lines();
	cr_expect_eq(l.malformed, 1, "%u malformed lines of %u", l.malformed, l.count);
	cr_expect_eq(l.count, 4, "%u lines: 2 whole, 1 cut, the last whole", l.count);
	cr_expect_str_eq(l.last_remote, "127.0.0.1:7");
	remove_dir();
}

/* An exe path of 4,000 bytes that JSON escapes six-fold (\u00ff): its
 * record is written, never dropped without a word. */
Test(sink, a_record_with_a_long_escaped_exe_is_written)
{
	char exe[4001];
	memset(exe, '\xff', sizeof(exe) - 1);
	exe[0] = '/';
	exe[sizeof(exe) - 1] = '\0';
	make_dir();
	struct pf_record_sink *sink = pf_record_sink_open(log_path, false);
	cr_expect(add_record(sink, exe, 9), "the record was not formatted");
	pf_record_sink_close(sink);
	struct lines l = read_lines();
	cr_expect_eq(l.count, 1, "%u lines", l.count);
	cr_expect_eq(l.malformed, 0);
	cr_expect_str_eq(l.last_remote, "127.0.0.1:9");
	remove_dir();
}
