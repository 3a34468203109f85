/* Calls the shim once let through unjudged: a connect from a signal
 * handler that interrupted the shim, and a connect after a bind that
 * failed. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static unsigned count_event(json_t *records, const char *event, uint16_t remote_port)
{
	size_t i;
	json_t *record;
	unsigned n = 0;
	json_array_foreach(records, i, record) {
		const char *e = json_string_value(json_object_get(record, "event"));
		const char *remote = json_string_value(json_object_get(record, "remote"));
		n += e && strcmp(e, event) == 0 && address_port(remote) == remote_port;
	}
	return n;
}

Test(judged, a_signal_handlers_connect_is_judged, .timeout = 120)
{
	struct sandbox sb;
	struct server allowed, denied;
	struct run_result r;
	char allowed_port[16], denied_port[16], policy[256];
	const unsigned calls = 300;

	server_start(&allowed, "127.0.0.1", SERVE_DRAIN);
	server_start(&denied, "127.0.0.1", SERVE_DRAIN);
	snprintf(policy, sizeof(policy),
		 "default = \"s\";\napps = ( { name = \"s\"; range = [ 63700, 63799 ]; "
		 "deny = [ \"127.0.0.1/32:%u\" ]; } );", denied.port);
	sandbox_init(&sb, policy);
	snprintf(allowed_port, sizeof(allowed_port), "%u", allowed.port);
	snprintf(denied_port, sizeof(denied_port), "%u", denied.port);
	char calls_text[16];
	snprintf(calls_text, sizeof(calls_text), "%u", calls);
	char *argv[] = {(char *)build_path("sigconnect"), allowed_port, denied_port, calls_text, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&allowed);
	server_stop(&denied);
	cr_assert_eq(r.status, 0, "%s", r.err);
	int ok = -1, eperm = -1, other = -1;
	cr_assert_eq(sscanf(r.out, "handler ok %d eperm %d other %d", &ok, &eperm, &other), 3, "%s", r.out);
	cr_expect_eq(ok, 0, "handler connects that reached the denied server: %d", ok);
	cr_expect_eq(eperm, (int)calls, "%s", r.out);
	cr_expect_eq(atomic_load(&denied.count), 0, "the denied server saw nothing");
	json_t *records = audit_records(sb.log);
	cr_expect_eq(count_event(records, "deny", denied.port), calls, "one deny record per handler connect");
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(judged, a_failed_bind_leaves_the_socket_ours)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[1024];

	sandbox_init(&sb, "default = \"b\";\napps = ( { name = \"b\"; range = [ 63800, 63809 ]; } );");
	server_start(&srv, "::1", SERVE_DRAIN);
	/* Python refuses the family mismatch itself; libc's bind does not. */
	snprintf(code, sizeof(code),
		 "import ctypes, socket, struct, errno\n"
		 "libc = ctypes.CDLL(None, use_errno=True)\n"
		 "s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n"
		 "v4 = struct.pack('=HH4s8x', socket.AF_INET, 0, socket.inet_aton('127.0.0.1'))\n"
		 "rc = libc.bind(s.fileno(), v4, len(v4))\n"
		 "print('bind', rc, errno.errorcode.get(ctypes.get_errno()))\n"
		 "s.connect(('::1', %u))\n"
		 "print('port', s.getsockname()[1])\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.out, "bind -1 EINVAL") != NULL, "the kernel's own answer: %s", r.out);
	const char *port_line = strstr(r.out, "port ");
	cr_assert_not_null(port_line, "%s", r.out);
	unsigned port = (unsigned)atoi(port_line + 5);
	cr_expect(port >= 63800 && port <= 63809, "the connect after the failed bind came from %u", port);
	cr_expect(server_saw(&srv, (uint16_t)port));
	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_expect_not_null(assign, "the connect has its record");
	json_decref(records);
	sandbox_cleanup(&sb);
}
