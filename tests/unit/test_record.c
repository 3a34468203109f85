/* The audit record (record/record.c): every field, parsed back with
 * jansson; hostile strings; IPv6 text; the BPF fields. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "record/record.h"

static struct sockaddr_in v4(const char *addr, uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	cr_assert_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	return sin;
}

static struct sockaddr_in6 v6_bytes(const uint8_t bytes[16], uint16_t port)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	memcpy(&sin6.sin6_addr, bytes, 16);
	return sin6;
}

/* 2026-11-21T10:00:00.123456Z */
static const struct timespec fixed_time = {.tv_sec = 1795255200, .tv_nsec = 123456789};

static struct pf_record_fields sample(const struct sockaddr_in *local, const struct sockaddr_in *remote)
{
	return (struct pf_record_fields){
		.when = &fixed_time, .event = PF_EVENT_ASSIGN, .app = "web", .pid = 4242,
		.exe = "/usr/bin/curl", .udp = false, .family = AF_INET,
		.local = (const struct sockaddr *)local, .remote = (const struct sockaddr *)remote,
		.algorithm = "double-hash", .attempts = 1, .error = 0,
	};
}

/* The line as a string; it must end in exactly one newline. */
static char *format(const struct pf_record_fields *fields)
{
	static char line[4096];
	size_t len = pf_record_format(fields, line, sizeof(line) - 1);
	cr_assert_gt(len, 0);
	line[len] = '\0';
	cr_assert_eq(line[len - 1], '\n');
	cr_assert_null(strchr(line, '\n') == line + len - 1 ? NULL : line, "a newline inside: %s", line);
	return line;
}

static json_t *parse(const char *line)
{
	json_error_t error;
	json_t *root = json_loads(line, 0, &error);
	cr_assert_not_null(root, "%s: %s", line, error.text);
	cr_assert(json_is_object(root));
	return root;
}

static const char *field(json_t *root, const char *key)
{
	json_t *value = json_object_get(root, key);
	cr_assert(json_is_string(value), "%s is not a string", key);
	return json_string_value(value);
}

Test(record, spec_example_field_for_field)
{
	struct sockaddr_in local = v4("127.0.0.1", 61023), remote = v4("127.0.0.1", 8080);
	struct pf_record_fields fields = sample(&local, &remote);

	cr_assert_str_eq(format(&fields),
		"{\"ts\":\"2026-11-21T10:00:00.123456Z\",\"event\":\"assign\",\"app\":\"web\","
		"\"pid\":4242,\"exe\":\"/usr/bin/curl\",\"proto\":\"tcp\",\"family\":\"ipv4\","
		"\"local\":\"127.0.0.1:61023\",\"remote\":\"127.0.0.1:8080\","
		"\"algorithm\":\"double-hash\",\"attempts\":1,\"result\":\"ok\"}\n");
}

Test(record, every_field_parses_back)
{
	struct sockaddr_in local = v4("10.1.2.3", 65535), remote = v4("192.168.200.1", 1);
	struct pf_record_fields fields = sample(&local, &remote);
	fields.event = PF_EVENT_DENY;
	fields.udp = true;
	fields.pid = 2147483647;
	fields.attempts = 4000000000u;
	fields.error = EPERM;
	fields.algorithm = "random-increments";
	json_t *root = parse(format(&fields));

	cr_assert_eq(json_object_size(root), 12);
	cr_assert_str_eq(field(root, "ts"), "2026-11-21T10:00:00.123456Z");
	cr_assert_str_eq(field(root, "event"), "deny");
	cr_assert_str_eq(field(root, "app"), "web");
	cr_assert_eq(json_integer_value(json_object_get(root, "pid")), 2147483647);
	cr_assert_str_eq(field(root, "exe"), "/usr/bin/curl");
	cr_assert_str_eq(field(root, "proto"), "udp");
	cr_assert_str_eq(field(root, "family"), "ipv4");
	cr_assert_str_eq(field(root, "local"), "10.1.2.3:65535");
	cr_assert_str_eq(field(root, "remote"), "192.168.200.1:1");
	cr_assert_str_eq(field(root, "algorithm"), "random-increments");
	cr_assert_eq(json_integer_value(json_object_get(root, "attempts")), 4000000000LL);
	cr_assert_str_eq(field(root, "result"), "EPERM");
	json_decref(root);
}

Test(record, events_and_results)
{
	static const struct { enum pf_event event; const char *name; } events[] = {
		{PF_EVENT_ASSIGN, "assign"}, {PF_EVENT_DENY, "deny"},
		{PF_EVENT_ERROR, "error"}, {PF_EVENT_AUDIT, "audit"},
	};
	static const struct { int error; const char *name; } results[] = {
		{0, "ok"}, {EINPROGRESS, "ok"}, {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
		{EAGAIN, "EAGAIN"}, {EADDRINUSE, "EADDRINUSE"}, {EOPNOTSUPP, "EOPNOTSUPP"},
		{9999, "EUNKNOWN"},
	};
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);

	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		fields.event = events[i].event;
		json_t *root = parse(format(&fields));
		cr_assert_str_eq(field(root, "event"), events[i].name);
		json_decref(root);
	}
	for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
		fields.error = results[i].error;
		json_t *root = parse(format(&fields));
		cr_assert_str_eq(field(root, "result"), results[i].name);
		json_decref(root);
	}
}

Test(record, timestamps_are_utc_microseconds)
{
	static const time_t instants[] = {0, 951782400 /* 2000-02-29 */, 4102444799 /* 2099-12-31 */,
					  1795255200, 1709164800 /* 2024-02-29 */};
	struct pf_record_fields fields = sample(NULL, NULL);

	for (size_t i = 0; i < sizeof(instants) / sizeof(instants[0]); i++) {
		struct timespec when = {.tv_sec = instants[i], .tv_nsec = 999999999};
		struct tm tm;
		char expected[64];
		gmtime_r(&instants[i], &tm);
		strftime(expected, sizeof(expected), "%Y-%m-%dT%H:%M:%S.999999Z", &tm);
		fields.when = &when;
		json_t *root = parse(format(&fields));
		cr_assert_str_eq(field(root, "ts"), expected);
		json_decref(root);
	}
}

Test(record, now_when_no_time_is_given)
{
	struct pf_record_fields fields = sample(NULL, NULL);
	struct timespec before, after;
	struct tm tm = {0};

	fields.when = NULL;
	clock_gettime(CLOCK_REALTIME, &before);
	json_t *root = parse(format(&fields));
	clock_gettime(CLOCK_REALTIME, &after);
	const char *ts = field(root, "ts");
	cr_assert_eq(strlen(ts), 27, "%s", ts);
	cr_assert_not_null(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm), "%s", ts);
	time_t seconds = timegm(&tm);
	cr_assert(seconds >= before.tv_sec && seconds <= after.tv_sec, "%s", ts);
	json_decref(root);
}

Test(record, no_addresses_are_the_wildcards)
{
	struct pf_record_fields fields = sample(NULL, NULL);
	json_t *root = parse(format(&fields));
	cr_assert_str_eq(field(root, "local"), "0.0.0.0:0");
	cr_assert_str_eq(field(root, "remote"), "0.0.0.0:0");
	json_decref(root);

	fields.family = AF_INET6;
	root = parse(format(&fields));
	cr_assert_str_eq(field(root, "family"), "ipv6");
	cr_assert_str_eq(field(root, "local"), "[::]:0");
	cr_assert_str_eq(field(root, "remote"), "[::]:0");
	json_decref(root);
}

/* The address text is glibc's inet_ntop, bracketed. */
static void check_ipv6(const uint8_t bytes[16])
{
	struct sockaddr_in6 local = v6_bytes(bytes, 61001), remote = v6_bytes(bytes, 443);
	struct pf_record_fields fields = sample(NULL, NULL);
	char text[INET6_ADDRSTRLEN], expected[INET6_ADDRSTRLEN + 16];

	fields.family = AF_INET6;
	fields.local = (const struct sockaddr *)&local;
	fields.remote = (const struct sockaddr *)&remote;
	cr_assert_not_null(inet_ntop(AF_INET6, bytes, text, sizeof(text)));
	json_t *root = parse(format(&fields));
	snprintf(expected, sizeof(expected), "[%s]:61001", text);
	cr_assert_str_eq(field(root, "local"), expected);
	snprintf(expected, sizeof(expected), "[%s]:443", text);
	cr_assert_str_eq(field(root, "remote"), expected);
	json_decref(root);
}

Test(record, ipv6_text_as_inet_ntop_writes_it)
{
	static const char *const texts[] = {
		"::", "::1", "1::", "2001:db8::1", "2001:db8:0:0:1:0:0:1", "2001:0:0:1:0:0:0:1",
		"fe80::1:2:3:4", "1:2:3:4:5:6:7:8", "1:0:3:4:5:6:7:8", "::ffff:127.0.0.1",
		"::ffff:0.0.0.0", "::1.2.3.4", "::2:3", "0:0:0:0:0:1:0:0", "1:2:3:4:5:6::",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "64:ff9b::192.0.2.33", "::ffff:0:1.2.3.4",
		"0:0:1::", "a:0:0:b:0:0:0:c",
	};
	uint8_t bytes[16];

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		cr_assert_eq(inet_pton(AF_INET6, texts[i], bytes), 1, "%s", texts[i]);
		check_ipv6(bytes);
	}
	/* Every pattern of zero and non-zero groups, with varied values. */
	srand(9);
	for (unsigned pattern = 0; pattern < 256; pattern++) {
		for (int g = 0; g < 8; g++) {
			unsigned word = pattern >> g & 1 ? (unsigned)rand() % 0xffff + 1 : 0;
			bytes[2 * g] = (uint8_t)(word >> 8);
			bytes[2 * g + 1] = (uint8_t)word;
		}
		check_ipv6(bytes);
	}
}

Test(record, hostile_app_and_exe_stay_one_parsable_line)
{
	/* quotes, backslash, control bytes, DEL, a bare continuation byte, an
	 * overlong '/', a UTF-16 surrogate, a cut sequence, and valid UTF-8. */
	const char *hostile = "a\"b\\c\n\r\t\x01\x1f\x7f|\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82|\xc3\xa9\xf0\x9f\x98\x80\"}";
	const char *decoded = "a\"b\\c\n\r\t\x01\x1f\x7f|\xc2\x80|\xc3\x80\xc2\xaf|\xc3\xad\xc2\xa0\xc2\x80|"
			      "\xc3\xa2\xc2\x82|\xc3\xa9\xf0\x9f\x98\x80\"}";
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);

	fields.app = hostile;
	fields.exe = hostile;
	fields.comm = hostile;
	fields.cgroup = hostile;
	char *line = format(&fields);
	for (const unsigned char *p = (const unsigned char *)line; *p; p++)
		cr_assert(*p >= 0x20 || *p == '\n', "a raw control byte in %s", line);
	json_t *root = parse(line);
	cr_assert_str_eq(field(root, "app"), decoded);
	cr_assert_str_eq(field(root, "exe"), decoded);
	cr_assert_str_eq(field(root, "comm"), decoded);
	cr_assert_str_eq(field(root, "cgroup"), decoded);
	cr_assert_str_eq(field(root, "result"), "ok");
	json_decref(root);
}

Test(record, comm_and_cgroup_only_when_given_after_result)
{
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);

	char *line = format(&fields);
	cr_assert_null(strstr(line, "comm"));
	cr_assert_null(strstr(line, "cgroup"));

	fields.comm = "curl";
	fields.cgroup = "/system.slice/legacy.service";
	line = format(&fields);
	const char *tail = "\"result\":\"ok\",\"comm\":\"curl\",\"cgroup\":\"/system.slice/legacy.service\","
			   "\"unit\":\"legacy.service\"}\n";
	cr_assert_str_eq(line + strlen(line) - strlen(tail), tail, "%s", line);
	json_t *root = parse(line);
	cr_assert_eq(json_object_size(root), 15);
	json_decref(root);

	fields.comm = NULL;
	line = format(&fields);
	cr_assert_null(strstr(line, "comm"));
	tail = "\"result\":\"ok\",\"cgroup\":\"/system.slice/legacy.service\",\"unit\":\"legacy.service\"}\n";
	cr_assert_str_eq(line + strlen(line) - strlen(tail), tail, "%s", line);

	fields.comm = "";
	fields.cgroup = NULL;
	line = format(&fields);
	tail = "\"result\":\"ok\",\"comm\":\"\"}\n";
	cr_assert_str_eq(line + strlen(line) - strlen(tail), tail, "%s", line);
}

/* SPEC: "unit" when the cgroup path names a systemd unit, as systemd
 * reads the path; none for a runtime's own cgroup. */
Test(record, unit_when_the_cgroup_names_a_systemd_unit)
{
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);
	static const char *const cases[][2] = {
		{"/system.slice/docker-4f2a.scope", "docker-4f2a.scope"},
		{"system.slice/legacy.service/worker", "legacy.service"},
		{"/user.slice/user-1000.slice/session-2.scope", "session-2.scope"},
		{"/machine.slice", "machine.slice"},
		{"/pfctr-17", NULL},
		{"/machine.slice/pfctr-17", NULL},
		{"/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope", "cri-containerd-ab.scope"},
		{"/", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fields.cgroup = cases[i][0];
		json_t *root = parse(format(&fields));
		json_t *unit = json_object_get(root, "unit");
		if (cases[i][1])
			cr_assert_str_eq(json_string_value(unit) ? json_string_value(unit) : "(none)", cases[i][1],
					 "cgroup %s", cases[i][0]);
		else
			cr_assert_null(unit, "cgroup %s names no unit, got %s", cases[i][0], json_string_value(unit));
		json_decref(root);
	}
}

/* SPEC: an error record carries "reason", and records lost before they
 * could be written are reported by one error record with "lost":N. */
Test(record, reason_and_lost_only_when_given_after_result)
{
	struct sockaddr_in local = v4("0.0.0.0", 0), remote = v4("0.0.0.0", 0);
	struct pf_record_fields fields = sample(&local, &remote);

	fields.event = PF_EVENT_ERROR;
	fields.error = ENOBUFS;
	char *line = format(&fields);
	cr_assert_null(strstr(line, "reason"));
	cr_assert_null(strstr(line, "lost"));

	fields.reason = "ring \"full\"";
	fields.lost = 112619;
	fields.comm = "";
	line = format(&fields);
	const char *tail = "\"result\":\"ENOBUFS\",\"reason\":\"ring \\\"full\\\"\",\"lost\":112619,\"comm\":\"\"}\n";
	cr_assert_str_eq(line + strlen(line) - strlen(tail), tail, "%s", line);
	json_t *root = parse(line);
	cr_assert_str_eq(json_string_value(json_object_get(root, "event")), "error");
	cr_assert_str_eq(json_string_value(json_object_get(root, "reason")), "ring \"full\"");
	cr_assert_eq(json_integer_value(json_object_get(root, "lost")), 112619);
	json_decref(root);
}

Test(record, a_line_that_does_not_fit_is_not_written)
{
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);
	char full[1024], cut[1024];

	fields.app = "caf\xc3\xa9 \"quoted\"";
	size_t len = pf_record_format(&fields, full, sizeof(full));
	cr_assert_gt(len, 0);
	for (size_t cap = 0; cap < len; cap++)
		cr_assert_eq(pf_record_format(&fields, cut, cap), 0, "cap %zu", cap);
	cr_assert_eq(pf_record_format(&fields, cut, len), len);
	cr_assert_eq(memcmp(cut, full, len), 0);
}

/* The pieces, joined, are the line the formatter makes of fields. */
static void expect_pieces_make_the_line(const struct pf_record_fields *fields, const struct iovec *iov, int count)
{
	char joined[2048], line[2048];
	size_t n = 0;

	for (int k = 0; k < count; k++) {
		cr_assert_leq(n + iov[k].iov_len, sizeof(joined));
		memcpy(joined + n, iov[k].iov_base, iov[k].iov_len);
		n += iov[k].iov_len;
	}
	size_t len = pf_record_format(fields, line, sizeof(line));
	cr_assert_eq(n, len);
	cr_assert_eq(memcmp(joined, line, len), 0, "%.*s", (int)n, joined);
}

/* The shim's path (pre-escaped app and exe in pieces of their own) makes
 * the very line the formatter makes. */
Test(record, pieces_make_the_same_line)
{
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);
	const char *names[] = {"web", "", "we\"b\x01"};
	char app_json[64], exe_json[64], text[512];
	struct iovec iov[PF_RECORD_PIECES];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		fields.app = names[i];
		fields.exe = names[(i + 1) % 3];
		pf_json_escape(fields.app, app_json, sizeof(app_json));
		pf_json_escape(fields.exe, exe_json, sizeof(exe_json));
		int count = pf_record_pieces(&fields, app_json, exe_json, text, sizeof(text), iov);
		cr_assert(count > 0 && count <= PF_RECORD_PIECES, "%d pieces", count);
		expect_pieces_make_the_line(&fields, iov, count);
	}
	cr_assert_eq(pf_record_pieces(&fields, app_json, exe_json, text, 40, iov), 0);
}

/* A line longer than the buffer: app and exe become pieces of their own,
 * and the pieces still make the formatter's line. */
Test(record, a_long_exe_goes_as_a_piece_of_its_own)
{
	struct sockaddr_in local = v4("127.0.0.1", 61000), remote = v4("127.0.0.1", 80);
	struct pf_record_fields fields = sample(&local, &remote);
	char exe[600], text[300];
	struct iovec iov[PF_RECORD_PIECES];

	memset(exe, 'x', sizeof(exe) - 1);
	exe[0] = '/';
	exe[sizeof(exe) - 1] = '\0';
	fields.exe = exe;
	int count = pf_record_pieces(&fields, "web", exe, text, sizeof(text), iov);
	cr_assert(count > 1 && count <= PF_RECORD_PIECES, "%d pieces", count);
	expect_pieces_make_the_line(&fields, iov, count);
	/* A short line is one piece. */
	fields.exe = "/usr/bin/curl";
	cr_assert_eq(pf_record_pieces(&fields, "web", "/usr/bin/curl", text, sizeof(text), iov), 1);
}

Test(record, escape_keeps_pieces_whole)
{
	const char *text = "\"\xc3\xa9\x01";
	char out[32];

	cr_assert_eq(pf_json_escape(text, out, 6 * strlen(text) + 1), 10);
	cr_assert_str_eq(out, "\\\"\xc3\xa9\\u0001");
	/* Room for the quote and half of the é: the é is left out whole. */
	cr_assert_eq(pf_json_escape(text, out, 4), 2);
	cr_assert_str_eq(out, "\\\"");
	cr_assert_eq(pf_json_escape(text, out, 1), 0);
	cr_assert_str_eq(out, "");
}
