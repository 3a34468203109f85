/* The protocols the kernel gives ports to besides TCP and UDP, under the
 * shim: UDP-Lite is confined as UDP and MPTCP as TCP (issue 16 item 5).
 * The BPF backend's side is in test_bpf.c.  Each test checks the port
 * the peer saw and the audit record. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

TestSuite(protocols, .timeout = 60);

static const char *field(json_t *record, const char *name)
{
	const char *value = json_string_value(json_object_get(record, name));
	return value ? value : "";
}

/* The value after "KEY " on the first line starting with it. */
static long line_number(const char *text, const char *key)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "%s ", key);
	const char *at = strstr(text, prefix);
	return at ? atol(at + strlen(prefix)) : -1;
}

/* The first record of event whose remote is remote, or NULL. */
static json_t *record_of(json_t *records, const char *event, const char *remote)
{
	json_t *record;
	size_t i;
	json_array_foreach(records, i, record)
		if (strcmp(field(record, "event"), event) == 0 && strcmp(field(record, "remote"), remote) == 0)
			return record;
	return NULL;
}

/* A UDP-Lite socket connects and sends from the range, with an assign
 * record (proto udp), and a denied destination gets EPERM and a deny
 * record: UDP-Lite is UDP to the policy. */
Test(protocols, udplite_is_confined_like_udp_under_the_shim)
{
	enum { LO = 63100, HI = 63109 };
	static const char script[] =
		"import socket, sys\n"
		"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)\n"
		"s.connect(('127.0.0.1', int(sys.argv[1]))); s.send(b'x')\n"
		"print('local', s.getsockname()[1])\n"
		"d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)\n"
		"try:\n"
		"    d.connect(('127.0.0.1', 9)); print('denied-connected', d.getsockname()[1])\n"
		"except OSError as e:\n"
		"    print('denied-errno', e.errno)\n";
	struct sandbox sb;
	struct run_result r;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	char port[16], apps[256], remote[64], buf[16];

	int server = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	if (server < 0)
		cr_skip_test("skipped: this kernel has no UDP-Lite: %s", strerror(errno));
	cr_assert_eq(bind(server, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(getsockname(server, (struct sockaddr *)&addr, &len), 0);
	snprintf(apps, sizeof(apps),
		 "apps = ( { name = \"lite\"; range = [ %d, %d ]; deny = [ \"127.0.0.1:9\" ]; } );", LO, HI);
	sandbox_init(&sb, apps);
	snprintf(port, sizeof(port), "%u", ntohs(addr.sin_port));
	char *argv[] = {"python3", "-c", (char *)script, port, NULL};
	run_under(&r, &sb, "lite", argv, NULL);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	long local = line_number(r.out, "local");
	cr_expect(local >= LO && local <= HI, "UDP-Lite sent from port %ld, outside [%d, %d]", local, LO, HI);
	struct sockaddr_in peer;
	socklen_t peer_len = sizeof(peer);
	struct pollfd pfd = {.fd = server, .events = POLLIN};
	cr_assert_eq(poll(&pfd, 1, 5000), 1, "the datagram never came");
	cr_assert_eq(recvfrom(server, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &peer_len), 1);
	cr_expect_eq(ntohs(peer.sin_port), local, "the server saw port %u", ntohs(peer.sin_port));
	cr_expect_eq(line_number(r.out, "denied-errno"), EPERM, "a denied destination:\n%s", r.out);

	json_t *records = audit_records(sb.log);
	snprintf(remote, sizeof(remote), "127.0.0.1:%s", port);
	json_t *assign = record_of(records, "assign", remote);
	cr_assert(assign, "no assign record to %s", remote);
	cr_expect_str_eq(field(assign, "proto"), "udp");
	cr_expect_str_eq(field(assign, "result"), "ok");
	json_t *deny = record_of(records, "deny", "127.0.0.1:9");
	cr_expect(deny && strcmp(field(deny, "result"), "EPERM") == 0, "no deny record of 127.0.0.1:9");
	json_decref(records);
	close(server);
	sandbox_cleanup(&sb);
}

/* An MPTCP socket (falling back to TCP with a plain server) connects
 * from the range with an assign record (proto tcp), after bind(addr, 0)
 * too. */
Test(protocols, mptcp_is_confined_like_tcp_under_the_shim)
{
	enum { LO = 63110, HI = 63119 };
	static const char script[] =
		"import socket, sys\n"
		"s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"s.connect(('127.0.0.1', int(sys.argv[1]))); s.recv(3)\n"
		"print('local', s.getsockname()[1])\n"
		"b = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n"
		"b.bind(('127.0.0.1', 0)); b.connect(('127.0.0.1', int(sys.argv[1]))); b.recv(3)\n"
		"print('bound', b.getsockname()[1])\n";
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16], apps[256], remote[64];

	int probe = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
	if (probe < 0)
		cr_skip_test("skipped: MPTCP is not enabled in this kernel: %s", strerror(errno));
	close(probe);
	snprintf(apps, sizeof(apps), "apps = ( { name = \"multi\"; range = [ %d, %d ]; } );", LO, HI);
	sandbox_init(&sb, apps);
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"python3", "-c", (char *)script, port, NULL};
	run_under(&r, &sb, "multi", argv, NULL);
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "status %d\n%s%s", r.status, r.out, r.err);
	long local = line_number(r.out, "local");
	cr_expect(local >= LO && local <= HI, "MPTCP connected from port %ld, outside [%d, %d]", local, LO, HI);
	cr_expect(server_saw(&srv, (uint16_t)local), "the server never saw port %ld", local);
	long bound = line_number(r.out, "bound");
	cr_expect(bound >= LO && bound <= HI, "MPTCP bind(addr, 0) + connect from port %ld", bound);
	cr_expect(server_saw(&srv, (uint16_t)bound), "the server never saw port %ld", bound);
	json_t *records = audit_records(sb.log);
	snprintf(remote, sizeof(remote), "127.0.0.1:%s", port);
	json_t *assign = record_of(records, "assign", remote);
	cr_assert(assign, "no assign record to %s", remote);
	cr_expect_str_eq(field(assign, "proto"), "tcp");
	cr_expect_str_eq(field(assign, "result"), "ok");
	json_decref(records);
	sandbox_cleanup(&sb);
}
