/* What the shim does to real sockets: sequences across processes, R x D
 * capacity, churn, socket replacement, policy decisions, exhaustion,
 * policy failures and pass-through. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char *probe(void)
{
	return (char *)build_path("sockprobe");
}

Test(shim, sequential_across_50_processes)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char url[64];

	skip_if_sanitized("curl");

	sandbox_init(&sb, "default = \"seq\";\n"
			  "apps = ( { name = \"seq\"; range = [ 61000, 61199 ]; algorithm = \"sequential\"; } );");
	server_start(&srv, "127.0.0.1", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv.port);
	for (int i = 0; i < 50; i++) {
		char *argv[] = {"curl", "-sS", "--max-time", "10", "-o", "/dev/null", url, NULL};
		run_under(&r, &sb, NULL, argv, NULL);
		cr_assert_eq(r.status, 0, "curl %d: %s", i, r.err);
	}
	server_stop(&srv);
	cr_assert_eq(atomic_load(&srv.count), 50);
	for (int i = 0; i < 50; i++)
		cr_expect_eq(srv.peers[i], 61000 + i, "connection %d came from %u", i, srv.peers[i]);
	sandbox_cleanup(&sb);
}

Test(shim, r_times_d_connections_through_r_ports)
{
	struct sandbox sb;
	struct server servers[4];
	struct run_result r;
	char dests[4][64];
	const char *hosts[4] = {"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"};

	sandbox_init(&sb, "default = \"many\";\n"
			  "apps = ( { name = \"many\"; range = [ 61000, 61007 ]; algorithm = \"random\"; } );");
	char *argv[8] = {probe(), "hold", "32"};
	for (int i = 0; i < 4; i++) {
		server_start(&servers[i], hosts[i], SERVE_DRAIN);
		snprintf(dests[i], sizeof(dests[i]), "%s:%u", hosts[i], servers[i].port);
		argv[3 + i] = dests[i];
	}
	argv[7] = NULL;
	run_under(&r, &sb, NULL, argv, NULL);
	for (int i = 0; i < 4; i++)
		server_stop(&servers[i]);
	cr_assert_eq(r.status, 0, "32 connections through 8 ports must all succeed:\n%s%s", r.out, r.err);
	cr_expect_eq(count_lines_starting(r.out, "ok "), 32);
	for (int i = 0; i < 4; i++) {
		cr_expect_eq(atomic_load(&servers[i].count), 8, "server %d saw %d", i, atomic_load(&servers[i].count));
		for (int k = 0; k < 8; k++)
			cr_expect(servers[i].peers[k] >= 61000 && servers[i].peers[k] <= 61007);
	}
	sandbox_cleanup(&sb);
}

Test(shim, churn_2000_connections_through_20_ports)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];

	sandbox_init(&sb, "default = \"churn\";\n"
			  "apps = ( { name = \"churn\"; range = [ 61000, 61019 ]; algorithm = \"double-hash\"; } );");
	server_start(&srv, "127.0.0.1", SERVE_GREET);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {probe(), "churn", "2000", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect_str_eq(r.out, "failures 0 of 2000\n");
	cr_expect_eq(atomic_load(&srv.count), 2000);
	for (int i = 0; i < 2000; i++)
		cr_assert(srv.peers[i] >= 61000 && srv.peers[i] <= 61019);
	sandbox_cleanup(&sb);
}

/* A connection the test runner holds from 127.0.0.1:61000 makes the
 * shim's first choice collide, forcing a fresh socket under the app. */
Test(shim, options_survive_socket_replacement)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];
	int one = 1;

	sandbox_init(&sb, "default = \"opts\";\n"
			  "apps = ( { name = \"opts\"; range = [ 61000, 61001 ]; algorithm = \"sequential\"; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	int blocker = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(blocker, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(61000)};
	struct sockaddr_in remote = {.sin_family = AF_INET, .sin_port = htons(srv.port)};
	inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
	cr_assert_eq(bind(blocker, (struct sockaddr *)&local, sizeof(local)), 0);
	cr_assert_eq(connect(blocker, (struct sockaddr *)&remote, sizeof(remote)), 0);

	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {probe(), "options", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	close(blocker);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	cr_expect(strstr(r.out, "fd_same 1\n"));
	cr_expect(strstr(r.out, "connected 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "port 61001\n"), "%s", r.out);
	cr_expect(strstr(r.out, "nodelay 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "keepalive 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "nonblock 1\n"), "%s", r.out);
	cr_expect(strstr(r.out, "cloexec 1\n"), "%s", r.out);
	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign);
	cr_expect_eq(json_integer_value(json_object_get(assign, "attempts")), 2,
		     "the collision and the retry count as two attempts");
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, denied_destination_gets_eperm)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char policy[512], code[512];

	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(policy, sizeof(policy),
		 "default = \"strict\";\napps = ( { name = \"strict\"; range = [ 61000, 61099 ];\n"
		 "  allow = [ \"127.0.0.0/8\" ]; deny = [ \"127.0.0.1:%u\" ]; } );", srv.port);
	sandbox_init(&sb, policy);
	snprintf(code, sizeof(code),
		 "import socket, errno\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', %u))\n"
		 "    print('connected')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "EPERM\n");
	cr_expect_eq(atomic_load(&srv.count), 0, "the server must see nothing");
	json_t *records = audit_records(sb.log);
	json_t *deny = audit_find(records, "deny", 0);
	cr_assert_not_null(deny);
	cr_expect_str_eq(json_string_value(json_object_get(deny, "result")), "EPERM");
	cr_expect_eq(address_port(json_string_value(json_object_get(deny, "remote"))), srv.port);
	cr_expect_null(audit_find(records, "assign", 0));
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, not_in_allow_list_gets_eperm_for_udp_too)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];

	sandbox_init(&sb, "default = \"v6only\";\napps = ( { name = \"v6only\"; range = [ 61000, 61099 ];\n"
			  "  allow = [ \"[::1]\" ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {probe(), "udp", "1", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_expect(strstr(r.out, "err Operation not permitted"), "%s", r.out);
	cr_expect_eq(atomic_load(&srv.count), 0);
	sandbox_cleanup(&sb);
}

Test(shim, audit_mode_connects_and_logs)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char url[64];

	skip_if_sanitized("curl");

	sandbox_init(&sb, "default = \"watch\";\napps = ( { name = \"watch\"; range = [ 61000, 61099 ];\n"
			  "  mode = \"audit\"; deny = [ \"127.0.0.1/32\" ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv.port);
	char *argv[] = {"curl", "-sS", "--max-time", "10", url, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "audit mode must change nothing: %s", r.err);
	cr_expect_str_eq(r.out, "ok\n");
	json_t *records = audit_records(sb.log);
	json_t *audit = audit_find(records, "audit", 0);
	cr_assert_not_null(audit);
	cr_expect_str_eq(json_string_value(json_object_get(audit, "result")), "EPERM",
			 "the record says enforce would have refused");
	uint16_t port = address_port(json_string_value(json_object_get(audit, "local")));
	cr_expect(server_saw(&srv, port), "audit record port %u not seen by the server", port);
	cr_expect_null(audit_find(records, "deny", 0));
	cr_expect_null(audit_find(records, "assign", 0));
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, run_audit_flag_forces_audit_mode)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char url[64];

	skip_if_sanitized("curl");

	sandbox_init(&sb, "default = \"e\";\napps = ( { name = \"e\"; range = [ 61000, 61099 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_HTTP);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv.port);
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--audit", "--",
			"curl", "-sS", "--max-time", "10", "-o", "/dev/null", url, NULL};
	run_program(&r, argv, NULL, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	json_t *records = audit_records(sb.log);
	cr_expect_not_null(audit_find(records, "audit", 0));
	cr_expect_null(audit_find(records, "assign", 0));
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, udp_exhaustion_gives_eagain)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char dest[64];

	sandbox_init(&sb, "default = \"few\";\n"
			  "apps = ( { name = \"few\"; range = [ 61000, 61004 ]; algorithm = \"random-redraw\"; } );");
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(dest, sizeof(dest), "127.0.0.1:%u", srv.port);
	char *argv[] = {probe(), "udp", "7", dest, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.out, "ok 6100"), 5, "%s", r.out);
	cr_expect_eq(count_lines_starting(r.out, "err EAGAIN"), 2, "%s", r.out);
	json_t *records = audit_records(sb.log);
	json_t *error = audit_find(records, "error", 0);
	cr_assert_not_null(error);
	cr_expect_str_eq(json_string_value(json_object_get(error, "result")), "EAGAIN");
	cr_expect_eq(json_integer_value(json_object_get(error, "attempts")), 10,
		     "5 random redraws then a full walk of 5");
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, kernel_algorithm_keeps_ports_in_range)
{
	struct sandbox sb;
	struct server tcp1, tcp2, udp;
	struct run_result r;
	char d1[64], d2[64], du[64];

	sandbox_init(&sb, "default = \"k\";\n"
			  "apps = ( { name = \"k\"; range = [ 40100, 40109 ]; algorithm = \"kernel\"; } );");
	server_start(&tcp1, "127.0.0.1", SERVE_DRAIN);
	server_start(&tcp2, "127.0.0.2", SERVE_DRAIN);
	server_start(&udp, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(d1, sizeof(d1), "127.0.0.1:%u", tcp1.port);
	snprintf(d2, sizeof(d2), "127.0.0.2:%u", tcp2.port);
	snprintf(du, sizeof(du), "127.0.0.1:%u", udp.port);
	char *hold[] = {probe(), "hold", "16", d1, d2, NULL};
	run_under(&r, &sb, NULL, hold, NULL);
	cr_expect_eq(r.status, 0, "%s%s", r.out, r.err);
	char *udp_argv[] = {probe(), "udp", "5", du, NULL};
	struct run_result ru;
	run_under(&ru, &sb, NULL, udp_argv, NULL);
	usleep(100000);
	server_stop(&tcp1);
	server_stop(&tcp2);
	server_stop(&udp);
	cr_expect_eq(atomic_load(&tcp1.count) + atomic_load(&tcp2.count), 16);
	for (int i = 0; i < atomic_load(&tcp1.count); i++)
		cr_expect(tcp1.peers[i] >= 40100 && tcp1.peers[i] <= 40109, "port %u", tcp1.peers[i]);
	for (int i = 0; i < atomic_load(&tcp2.count); i++)
		cr_expect(tcp2.peers[i] >= 40100 && tcp2.peers[i] <= 40109, "port %u", tcp2.peers[i]);
	cr_expect_eq(atomic_load(&udp.count), 5);
	for (int i = 0; i < atomic_load(&udp.count); i++)
		cr_expect(udp.peers[i] >= 40100 && udp.peers[i] <= 40109, "udp port %u", udp.peers[i]);
	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign);
	uint16_t port = address_port(json_string_value(json_object_get(assign, "local")));
	cr_expect(port >= 40100 && port <= 40109, "the record carries the kernel's port");
	json_decref(records);
	sandbox_cleanup(&sb);
}

static const char eperm_probe[] =
	"import socket, errno\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', %u))\n"
	"    print('connected', s.getsockname()[1])\nexcept OSError as e:\n"
	"    print(errno.errorcode[e.errno])\n";

Test(shim, missing_policy_denies_with_one_stderr_line)
{
	struct server srv;
	struct run_result r;
	char code[512];
	char *env[] = {"PORTFENCE_CONFIG=/nonexistent/portfence.conf", NULL};

	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code), eperm_probe, srv.port);
	char *argv[] = {"env", NULL, "python3", "-c", code, NULL};
	char preload[600];
	snprintf(preload, sizeof(preload), "%s", shim_preload_env());
	argv[1] = preload;
	run_program(&r, argv, NULL, env);
	usleep(100000);
	server_stop(&srv);
	cr_expect_str_eq(r.out, "EPERM\n");
	cr_expect_eq(atomic_load(&srv.count), 0);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "stderr: %s", r.err);
	cr_expect(strstr(r.err, "/nonexistent/portfence.conf") != NULL, "the line names the file: %s", r.err);
	cr_expect(strstr(r.err, "on_error = deny") != NULL);
}

Test(shim, invalid_policy_with_on_error_pass_runs_untouched)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[512];

	sandbox_init(&sb, "on_error = \"pass\";\ndefault = \"x\";\n"
			  "apps = ( { name = \"x\"; range = [ 61099, 61000 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code), eperm_probe, srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	usleep(100000);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(strncmp(r.out, "connected ", 10) == 0, "%s", r.out);
	cr_expect_eq(atomic_load(&srv.count), 1);
	cr_expect(strstr(r.err, "policy.conf:6: range [ 61099, 61000 ] has lo > hi") != NULL,
		  "stderr names file and line: %s", r.err);
	sandbox_cleanup(&sb);
}

Test(shim, invalid_policy_with_on_error_deny_refuses)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[512];

	char config[200];

	sandbox_init(&sb, "default = \"x\";\napps = ( { name = \"x\"; range = [ 61000, 61099 ]; algorithm = \"magic\"; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code), eperm_probe, srv.port);
	/* `portfence run` refuses to start it (exit 125, test_explain.c): the
	 * shim is preloaded by hand, as a service's environment would. */
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", sb.policy);
	char *env[] = {(char *)shim_preload_env(), config, NULL};
	char *argv[] = {"python3", "-c", code, NULL};
	run_program(&r, argv, NULL, env);
	usleep(100000);
	server_stop(&srv);
	cr_expect_str_eq(r.out, "EPERM\n");
	cr_expect_eq(atomic_load(&srv.count), 0);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1, "%s", r.err);
	sandbox_cleanup(&sb);
}

Test(shim, foreign_calls_pass_through_unchanged)
{
	struct sandbox sb;
	struct run_result native, shimmed;

	sandbox_init(&sb, "default = \"all\";\napps = ( { name = \"all\"; range = [ 61000, 61099 ];\n"
			  "  allow = [ \"[::1]\", \"127.0.0.0/8\" ]; } );");
	char *argv[] = {probe(), "passthrough", sb.dir, NULL};
	run_program(&native, argv, NULL, NULL);
	run_under(&shimmed, &sb, NULL, argv, NULL);
	cr_assert_eq(native.status, 0);
	cr_assert_eq(shimmed.status, 0, "%s", shimmed.err);
	cr_expect_str_eq(shimmed.out, native.out);
	cr_expect_gt(strlen(native.out), 500);
	sandbox_cleanup(&sb);
}

/* A refused destination must not hide what the kernel says of a socket
 * that cannot connect at all. */
Test(shim, refusal_does_not_mask_eisconn)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[640];

	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	sandbox_init(&sb, "default = \"r\";\napps = ( { name = \"r\"; range = [ 61000, 61099 ];\n"
			  "  deny = [ \"192.0.2.0/24\" ]; } );");
	snprintf(code, sizeof(code),
		 "import socket, errno\ns = socket.create_connection(('127.0.0.1', %u))\n"
		 "def c(sock):\n    try:\n        sock.connect(('192.0.2.1', 80)); return 'ok'\n"
		 "    except OSError as e:\n        return errno.errorcode[e.errno]\n"
		 "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n"
		 "print(c(s), c(l), c(socket.socket()))\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "EISCONN EISCONN EPERM\n");
	sandbox_cleanup(&sb);
}

Test(shim, explicit_bind_outside_range_denied)
{
	/* A range no other test uses: TIME_WAIT sockets they leave would
	 * make a plain bind fail with EADDRINUSE. */
	struct sandbox sb;
	struct run_result r;

	sandbox_init(&sb, "default = \"b\";\napps = ( { name = \"b\"; range = [ 63100, 63199 ];\n"
			  "  explicit_bind = \"deny\"; } );");
	const char *code =
		"import socket, errno\n"
		"def try_bind(port):\n"
		"    s = socket.socket()\n"
		"    try:\n"
		"        s.bind(('127.0.0.1', port)); return str(s.getsockname()[1])\n"
		"    except OSError as e:\n"
		"        return errno.errorcode[e.errno]\n"
		"print(try_bind(63150), try_bind(45000))\n"
		"s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])\n"
		"try:\n    s.bind(('127.0.0.1', 0)); print('rebound')\n"
		"except OSError as e:\n    print(errno.errorcode[e.errno])\n";
	char *argv[] = {"python3", "-c", (char *)code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned in_range, zero_port;
	char outside[32];
	cr_assert_eq(sscanf(r.out, "%u %31s\n%u", &in_range, outside, &zero_port), 3, "%s", r.out);
	cr_expect_eq(in_range, 63150);
	cr_expect_str_eq(outside, "EACCES");
	cr_expect(zero_port >= 63100 && zero_port <= 63199, "bind(0) got %u", zero_port);
	cr_expect(strstr(r.out, "\nEINVAL\n") != NULL,
		  "bind(0) on a bound socket is the kernel's EINVAL, not a refusal: %s", r.out);
	json_t *records = audit_records(sb.log);
	cr_expect_not_null(audit_find(records, "deny", 0));
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, listen_on_unbound_socket_takes_a_range_port)
{
	struct sandbox sb;
	struct run_result r;

	sandbox_init(&sb, "default = \"l\";\napps = ( { name = \"l\"; range = [ 61000, 61099 ]; } );");
	const char *code = "import socket\ns = socket.socket()\ns.listen(1)\nprint(s.getsockname()[1])\n";
	char *argv[] = {"python3", "-c", (char *)code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = (unsigned)atoi(r.out);
	cr_expect(port >= 61000 && port <= 61099, "listen autobind got %u", port);
	sandbox_cleanup(&sb);
}

static const char *init_line(const char *text, const char *lib)
{
	for (const char *p = strstr(text, "calling init: "); p; p = strstr(p + 1, "calling init: ")) {
		const char *eol = strchr(p, '\n'), *hit = strstr(p, lib);
		if (hit && (!eol || hit < eol))
			return p;
	}
	return NULL;
}

Test(shim, early_connect_before_shim_constructor)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port_env[64];

	sandbox_init(&sb, "default = \"early\";\napps = ( { name = \"early\"; range = [ 61000, 61099 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(port_env, sizeof(port_env), "EARLY_CONNECT_PORT=%u", srv.port);
	char debug_env[300], debug_path[200];
	snprintf(debug_path, sizeof(debug_path), "%s/lddebug", sb.dir);
	snprintf(debug_env, sizeof(debug_env), "LD_DEBUG_OUTPUT=%s", debug_path);
	char *env[] = {port_env, "LD_DEBUG=libs", debug_env, NULL};
	char *argv[] = {(char *)build_path("portfence"), "run", "-c", sb.policy, "--",
			(char *)build_path("early-client"), NULL};
	run_program(&r, argv, NULL, env);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = 0;
	cr_assert_eq(sscanf(r.out, "early_local_port %u", &port), 1, "%s", r.out);
	cr_expect(port >= 61000 && port <= 61099, "early connect got %u", port);
	cr_expect(server_saw(&srv, (uint16_t)port));
	/* The point of the test: the early constructor ran first.  The
	 * loader writes its debug output to lddebug.PID. */
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "cat %s.* 2>/dev/null", debug_path);
	char *argv_cat[] = {"sh", "-c", cmd, NULL};
	struct run_result debug;
	run_program(&debug, argv_cat, NULL, NULL);
	const char *early_init = init_line(debug.out, "early-connect.so");
	const char *shim_init = init_line(debug.out, "libportfence.so");
	cr_assert(early_init && shim_init, "LD_DEBUG output lacks init lines:\n%.2000s", debug.out);
	cr_expect(early_init < shim_init, "early-connect.so must be initialised before libportfence.so");
	sandbox_cleanup(&sb);
}

Test(shim, log_fd_survives_closefrom_and_dup2)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[1024];

	sandbox_init(&sb, "default = \"c\";\napps = ( { name = \"c\"; range = [ 61000, 61099 ]; } );");
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code),
		 "import socket, os\n"
		 "a = socket.create_connection(('127.0.0.1', %u)); a.close()\n"
		 "os.closerange(3, 4096)\n"
		 "for fd in range(3, 1100):\n"
		 "    try: os.dup2(1, fd)\n"
		 "    except OSError: pass\n"
		 "b = socket.create_connection(('127.0.0.1', %u)); b.close()\n"
		 "print('done')\n", srv.port, srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect_str_eq(r.out, "done\n", "nothing of ours may land on the program's fds");
	json_t *records = audit_records(sb.log);
	cr_expect_eq(json_array_size(records), 2, "both connections are in the log");
	json_decref(records);
	sandbox_cleanup(&sb);
}

Test(shim, run_exit_codes)
{
	struct run_result r;
	struct sandbox sb;
	char config[200];

	/* run checks the policy first: these need one it can use. */
	sandbox_init(&sb, "apps = ( );");
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", sb.policy);
	char *env[] = {config, NULL};
	char *missing[] = {(char *)build_path("portfence"), "run", "--", "/no/such/program", NULL};
	run_program(&r, missing, NULL, env);
	cr_expect_eq(r.status, 127);
	/* Found but not executable: 126, as env(1) and the shell say it. */
	char *not_executable[] = {(char *)build_path("portfence"), "run", "--", sb.policy, NULL};
	run_program(&r, not_executable, NULL, env);
	cr_expect_eq(r.status, 126, "run -- %s (a file without x): %d\n%s", sb.policy, r.status, r.err);
	cr_expect(strstr(r.err, "Permission denied"), "%s", r.err);
	char *directory[] = {(char *)build_path("portfence"), "run", "--", "/tmp", NULL};
	run_program(&r, directory, NULL, env);
	cr_expect_eq(r.status, 126, "run -- /tmp: %d\n%s", r.status, r.err);

	char *false_argv[] = {(char *)build_path("portfence"), "run", "--", "sh", "-c", "exit 7", NULL};
	run_program(&r, false_argv, NULL, env);
	cr_expect_eq(r.status, 7);

	char *setuid_argv[] = {(char *)build_path("portfence"), "run", "--", "/usr/bin/passwd", "--help", NULL};
	run_program(&r, setuid_argv, NULL, env);
	cr_expect_eq(r.status, 126);
	cr_expect(strstr(r.err, "setuid") != NULL, "%s", r.err);
	cr_expect_eq(count_lines_starting(r.err, "portfence: "), 1);

	char capped[] = "/tmp/pf-capped-XXXXXX";
	int fd = mkstemp(capped);
	close(fd);
	char setcap_cmd[320];
	snprintf(setcap_cmd, sizeof(setcap_cmd), "cp /bin/true %s && chmod 755 %s && setcap cap_net_raw+ep %s", capped, capped, capped);
	cr_assert_eq(system(setcap_cmd), 0, "setcap (libcap2-bin) must work as root");
	char *capped_argv[] = {(char *)build_path("portfence"), "run", "--", capped, NULL};
	run_program(&r, capped_argv, NULL, env);
	unlink(capped);
	cr_expect_eq(r.status, 126);
	cr_expect(strstr(r.err, "file capabilities") != NULL, "%s", r.err);

	char *static_argv[] = {(char *)build_path("portfence"), "run", "--", (char *)build_path("static-hello"), NULL};
	run_program(&r, static_argv, NULL, env);
	cr_expect_eq(r.status, 126);
	cr_expect(strstr(r.err, "statically linked") != NULL, "%s", r.err);
	sandbox_cleanup(&sb);
}

Test(shim, run_keeps_existing_ld_preload)
{
	struct run_result r;
	struct sandbox sb;
	char preload[128], config[200];
	sandbox_init(&sb, "apps = ( );");
	snprintf(config, sizeof(config), "PORTFENCE_CONFIG=%s", sb.policy);
	snprintf(preload, sizeof(preload), "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libc.so.6");
	char *env[] = {preload, config, NULL};
	char *argv[] = {(char *)build_path("portfence"), "run", "--", "sh", "-c", "echo $LD_PRELOAD", NULL};
	run_program(&r, argv, NULL, env);
	sandbox_cleanup(&sb);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_expect(strstr(r.out, "libportfence.so:/usr/lib/x86_64-linux-gnu/libc.so.6") != NULL, "%s", r.out);
}
