/* The less common doors into the shim: TCP Fast Open, sendmsg,
 * sendmmsg, v4-mapped destinations on IPv6 sockets, and syslog. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static const char range_policy[] =
	"default = \"c\";\napps = ( { name = \"c\"; range = [ 63500, 63599 ]; deny = [ \"127.0.0.99\" ]; } );";

static unsigned in_range(unsigned port)
{
	return port >= 63500 && port <= 63599;
}

Test(calls, sendto_with_msg_fastopen_is_a_connect)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[512];

	sandbox_init(&sb, range_policy);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code),
		 "import socket\ns = socket.socket()\n"
		 "s.sendto(b'fast open', socket.MSG_FASTOPEN, ('127.0.0.1', %u))\n"
		 "print(s.getsockname()[1])\ns.close()\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = (unsigned)atoi(r.out);
	cr_expect(in_range(port), "fast open connect came from %u", port);
	cr_expect(server_saw(&srv, (uint16_t)port));
	sandbox_cleanup(&sb);
}

Test(calls, sendmsg_on_unbound_udp)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[512];

	sandbox_init(&sb, range_policy);
	server_start(&srv, "::1", SERVE_UDP_ECHO);
	snprintf(code, sizeof(code),
		 "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
		 "s.sendmsg([b'over sendmsg'], [], 0, ('::1', %u))\n"
		 "print(s.getsockname()[1], s.recv(100).decode())\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = 0;
	char echo[64] = "";
	cr_assert_eq(sscanf(r.out, "%u %63[^\n]", &port, echo), 2, "%s", r.out);
	cr_expect(in_range(port), "sendmsg bound %u", port);
	cr_expect(server_saw(&srv, (uint16_t)port));
	cr_expect_str_eq(echo, "over sendmsg");
	sandbox_cleanup(&sb);
}

Test(calls, sendmmsg_batch_and_a_denied_message)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];

	sandbox_init(&sb, range_policy);
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *batch[] = {(char *)build_path("sockprobe"), "sendmmsg", "8", dest, NULL};
	run_under(&r, &sb, NULL, batch, NULL);
	unsigned sent = 0, port = 0;
	cr_assert_eq(sscanf(r.out, "sent %u errno - port %u", &sent, &port), 2, "%s", r.out);
	cr_expect_eq(sent, 8);
	cr_expect(in_range(port), "sendmmsg bound %u", port);

	/* Message 4 of 8 goes to a denied address: the kernel's own rule for
	 * a failing message applies, so the batch ends before it. */
	char *cut[] = {(char *)build_path("sockprobe"), "sendmmsg", "8", dest, "127.0.0.99:9", NULL};
	run_under(&r, &sb, NULL, cut, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(sscanf(r.out, "sent %u", &sent), 1, "%s", r.out);
	cr_expect_eq(sent, 4, "%s", r.out);
	cr_expect_eq(atomic_load(&srv.count), 8 + 4, "the server saw both batches as sent");
	json_t *records = audit_records(sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert_not_null(deny);
	cr_expect_str_eq(json_string_value(json_object_get(deny, "remote")), "127.0.0.99:9");
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(calls, v4_mapped_destination_judged_as_ipv4)
{
	struct sandbox sb;
	struct run_result r;

	sandbox_init(&sb, range_policy);
	const char *code =
		"import socket, errno\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
		"try:\n    s.sendto(b'x', ('::ffff:127.0.0.99', 9)); print('sent')\n"
		"except OSError as e:\n    print(errno.errorcode[e.errno])\n";
	char *argv[] = {"python3", "-c", (char *)code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "EPERM\n", "deny 127.0.0.99 covers ::ffff:127.0.0.99");
	sandbox_cleanup(&sb);
}

/* /dev/log does not exist on every machine, and the host's must not be
 * touched: the script (run by unshare -m) gives its mount namespace a
 * /dev of its own, with socat listening as /dev/log into DIR/syslog.out
 * (its pid in $S), for a policy with syslog on and app s (extra inside
 * its braces).  The sanitizer's runtime, if any, goes to prefix, for the
 * commands the script runs. */
static int syslog_setup(struct sandbox *sb, const char *extra, char *script, size_t len, char *prefix, size_t prefix_len)
{
	sandbox_init(sb, "");
	FILE *f = fopen(sb->policy, "w");
	fprintf(f, "log = { file = \"%s\"; syslog = true; };\nstate_dir = \"%s\";\ndefault = \"s\";\n"
		   "apps = ( { name = \"s\"; range = [ 63500, 63599 ];%s } );\n", sb->log, sb->state, extra);
	fclose(f);
	const char *runtime = getenv("PORTFENCE_TEST_PRELOAD");
	prefix[0] = '\0';
	if (runtime && runtime[0])
		snprintf(prefix, prefix_len, "env ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=%s ", runtime);
	return snprintf(script, len,
			"set -e; D=%s; mkdir -p $D/realdev; mount --bind /dev $D/realdev; "
			"mount -t tmpfs tmpfs /dev; mount -t tmpfs tmpfs /run; "
			"for n in null zero urandom random; do touch /dev/$n; mount --bind $D/realdev/$n /dev/$n; done; "
			"ln -s /proc/self/fd /dev/fd; "
			"socat -u UNIX-RECV:/dev/log STDOUT > $D/syslog.out & S=$!; sleep 0.3; ",
			sb->dir);
}

Test(calls, syslog_gets_the_same_record, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char script[4096], prefix[600];

	int used = syslog_setup(&sb, "", script, sizeof(script), prefix, sizeof(prefix));
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(script + used, sizeof(script) - (size_t)used,
		 "%s%s run -c %s -- python3 -c \"import socket; socket.create_connection(('127.0.0.1', %u)).close()\"; "
		 "sleep 0.3; kill $S",
		 prefix, build_path("portfence"), sb.policy, srv.port);
	char *argv[] = {"unshare", "-m", "sh", "-c", script, NULL};
	run_program(&r, argv, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);

	char path[256], text[4096] = "";
	snprintf(path, sizeof(path), "%s/syslog.out", sb.dir);
	FILE *log = fopen(path, "r");
	cr_assert_not_null(log);
	size_t n = fread(text, 1, sizeof(text) - 1, log);
	text[n] = '\0';
	fclose(log);
	cr_expect(strncmp(text, "<14>portfence[", 14) == 0, "syslog got: %s", text);
	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign);
	char *line = json_dumps(assign, JSON_COMPACT | JSON_PRESERVE_ORDER);
	const char *payload = strchr(text, '{');
	cr_assert_not_null(payload, "%s", text);
	json_error_t error;
	json_t *from_syslog = json_loadb(payload, strcspn(payload, "\n"), 0, &error);
	cr_assert_not_null(from_syslog, "%s", payload);
	cr_expect(json_equal(from_syslog, assign), "syslog %s\nfile   %s", payload, line);
	free(line);
	json_decref(from_syslog);
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* A program path may hold quotes, control bytes and newlines: the record
 * must still be one line of valid JSON that gives the path back. */
Test(calls, hostile_program_path_is_escaped)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char path[256], dest[64], cmd[600];

	sandbox_init(&sb, range_policy);
	snprintf(path, sizeof(path), "%s/pro\"be\\x\001y\nz\377jos\303\251", sb.dir);
	snprintf(cmd, sizeof(cmd), "cp '%s' \"$0\" && chmod 755 \"$0\"", build_path("sockprobe"));
	char *copy[] = {"sh", "-c", cmd, path, NULL};
	run_program(&r, copy, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {path, "udp", "1", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	FILE *f = fopen(sb.log, "r");
	char line[4096];
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	cr_expect_null(fgets(line + strlen(line), (int)(sizeof(line) - strlen(line)), f),
		       "one record, one line");
	fclose(f);
	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign);
	/* UTF-8 (é) comes back unchanged; a byte that is not UTF-8 (\377)
	 * comes back as the code point U+00FF. */
	const char *exe = json_string_value(json_object_get(assign, "exe"));
	char expected[256];
	snprintf(expected, sizeof(expected), "%s/pro\"be\\x\001y\nz\303\277jos\303\251", sb.dir);
	cr_expect_str_eq(exe, expected);
	json_decref(records);
	sandbox_cleanup(&sb);
}

/* Proxies bind a source address with IP_BIND_ADDRESS_NO_PORT and let
 * connect choose the port, so one port serves many destinations.  The
 * shim keeps both: the address as bound, and R x D through the range. */
Test(calls, bind_address_no_port_keeps_address_and_sharing)
{
	struct sandbox sb;
	struct server a, b;
	struct run_result r;
	char code[1024];

	sandbox_init(&sb, "default = \"p\";\napps = ( { name = \"p\"; range = [ 63600, 63601 ]; } );");
	server_start(&a, "127.0.0.1", SERVE_DRAIN);
	server_start(&b, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code),
		 "import socket\nheld = []\n"
		 "for port in (%u, %u, %u, %u):\n"
		 "    s = socket.socket()\n"
		 "    s.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT\n"
		 "    s.bind(('127.0.0.2', 0))\n"
		 "    deferred = s.getsockname()[1]\n"
		 "    s.connect(('127.0.0.1', port))\n"
		 "    held.append(s)\n"
		 "    print(deferred, *s.getsockname())\n",
		 a.port, b.port, a.port, b.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&a);
	server_stop(&b);
	cr_assert_eq(r.status, 0, "4 connections through 2 ports to 2 destinations: %s", r.err);
	const char *line = r.out;
	for (int i = 0; i < 4; i++, line = strchr(line, '\n') + 1) {
		unsigned deferred, port;
		char host[64];
		cr_assert_eq(sscanf(line, "%u %63s %u", &deferred, host, &port), 3, "%s", r.out);
		cr_expect_eq(deferred, 0, "the port waits for connect");
		cr_expect_str_eq(host, "127.0.0.2", "the bound address is kept");
		cr_expect(port == 63600 || port == 63601, "port %u", port);
	}
	cr_expect_eq(atomic_load(&a.count) + atomic_load(&b.count), 4);
	sandbox_cleanup(&sb);
}

/* The next syslog message in text (datagrams run together): "<PRI>". */
static const char *next_message(const char *p)
{
	for (; p && (p = strchr(p, '<')); p++) {
		const char *q = p + 1;
		while (*q >= '0' && *q <= '9')
			q++;
		if (q > p + 1 && *q == '>')
			return p;
	}
	return NULL;
}

/* The PRI of each syslog message by its record's event, "assign=14 ...":
 * the shim's own ("<PRI>portfence[PID]: ") into direct, syslog(3)'s
 * (the collector's, "<PRI>Mon DD ...") into collected. */
static void priorities_by_event(const char *text, char *direct, char *collected, size_t len)
{
	size_t used[2] = {0, 0};
	char *out[2] = {direct, collected};

	direct[0] = collected[0] = '\0';
	for (const char *m = next_message(text); m; m = next_message(m + 1)) {
		const char *end = next_message(m + 1), *event = strstr(m, "\"event\":\"");
		if (!event || (end && event > end))
			continue;
		event += strlen("\"event\":\"");
		int which = strncmp(strchr(m, '>') + 1, "portfence[", 10) == 0 ? 0 : 1;
		int n = snprintf(out[which] + used[which], len - used[which], "%.*s=%d ", (int)strcspn(event, "\""),
				 event, atoi(m + 1));
		if (n > 0 && (size_t)n < len - used[which])
			used[which] += (size_t)n;
	}
}

/* A record has one syslog facility and level, whether the shim writes
 * it or hands it to the collector (portfence daemon): assign and bind
 * are info, deny and error warning, both as user messages. */
Test(calls, syslog_priority_is_the_same_from_the_shim_and_the_collector, .timeout = 60)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char script[4096], client[600], prefix[600];

	int used = syslog_setup(&sb, " deny = [ \"127.0.0.9\" ];", script, sizeof(script), prefix, sizeof(prefix));
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	/* An assign, a bind of a port of its own and a deny: written by the
	 * shim itself, then handed to the collector. */
	snprintf(client, sizeof(client),
		 "python3 -c \\\"import socket, sys\n"
		 "socket.create_connection(('127.0.0.1', %u)).close()\n"
		 "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
		 "s.bind(('127.0.0.1', 63550)); s.connect(('127.0.0.1', %u)); s.close()\n"
		 "try: socket.create_connection(('127.0.0.9', 9))\nexcept OSError: pass\\\"",
		 srv.port, srv.port);
	snprintf(script + used, sizeof(script) - (size_t)used,
		 "PORTFENCE_COLLECTOR=none %s%s run -c %s -- sh -c \"%s\" direct; "
		 "%s%s daemon -c %s 2>$D/daemon.err & P=$!; sleep 0.5; "
		 "%s%s run -c %s -- sh -c \"%s\" collected; sleep 0.5; kill $P; sleep 0.3; kill $S",
		 prefix, build_path("portfence"), sb.policy, client, prefix, build_path("portfence"), sb.policy,
		 prefix, build_path("portfence"), sb.policy, client);
	char *argv[] = {"unshare", "-m", "sh", "-c", script, NULL};
	run_program(&r, argv, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);

	char path[256], text[16384] = "", direct[256], collected[256];
	snprintf(path, sizeof(path), "%s/syslog.out", sb.dir);
	read_all(path, text, sizeof(text));
	json_t *records = audit_records(sb.log);
	cr_assert_eq(json_array_size(records), 6, "six records: %s", text);
	json_decref(records);
	priorities_by_event(text, direct, collected, sizeof(direct));
	cr_expect_str_eq(direct, "assign=14 bind=14 deny=12 ");
	cr_expect_str_eq(collected, direct, "syslog: %s", text);
	sandbox_cleanup(&sb);
}
