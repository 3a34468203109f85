/* Real clients under the shim against real loopback servers: the source
 * port the server saw lies in the range and equals the audit record's. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define RANGE_LO 61000
#define RANGE_HI 61099

static const char web_policy[] = "default = \"client\";\n"
	"apps = ( { name = \"client\"; range = [ 61000, 61099 ]; algorithm = \"double-hash\"; } );";

static void expect_one_assignment(const struct sandbox *sb, struct server *srv,
				  const char *proto, const char *family)
{
	json_t *records = audit_records(sb->log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign, "no assign record in %s", sb->log);
	const char *local = json_string_value(json_object_get(assign, "local"));
	const char *remote = json_string_value(json_object_get(assign, "remote"));
	uint16_t port = address_port(local);

	cr_expect(port >= RANGE_LO && port <= RANGE_HI, "local %s outside the range", local);
	cr_expect(server_saw(srv, port), "the server did not see source port %u (saw %d peers, first %u)",
		  port, atomic_load(&srv->count), srv->peers[0]);
	cr_expect_eq(address_port(remote), srv->port);
	cr_expect_str_eq(json_string_value(json_object_get(assign, "proto")), proto);
	cr_expect_str_eq(json_string_value(json_object_get(assign, "family")), family);
	cr_expect_str_eq(json_string_value(json_object_get(assign, "result")), "ok");
	cr_expect_str_eq(json_string_value(json_object_get(assign, "app")), "client");
	cr_expect_str_eq(json_string_value(json_object_get(assign, "algorithm")), "double-hash");
	cr_expect_geq(json_integer_value(json_object_get(assign, "attempts")), 1);
	json_decref(records);
}

static void check_http_client(const char *server_addr, const char *url_host, char *const argv_template[])
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char url[128], *argv[16];

	skip_if_sanitized(argv_template[0]);
	sandbox_init(&sb, web_policy);
	server_start(&srv, server_addr, SERVE_HTTP);
	snprintf(url, sizeof(url), "http://%s:%u/", url_host, srv.port);
	int n = 0;
	for (; argv_template[n]; n++)
		argv[n] = strcmp(argv_template[n], "URL") == 0 ? url : argv_template[n];
	argv[n] = NULL;
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s exited %d: %s", argv[0], r.status, r.err);
	cr_expect_eq(atomic_load(&srv.count), 1);
	expect_one_assignment(&sb, &srv, "tcp", strchr(server_addr, ':') ? "ipv6" : "ipv4");
	sandbox_cleanup(&sb);
}

Test(clients, curl_ipv4)
{
	char *argv[] = {"curl", "-sS", "--max-time", "10", "-o", "/dev/null", "URL", NULL};
	check_http_client("127.0.0.1", "127.0.0.1", argv);
}

Test(clients, curl_ipv6)
{
	char *argv[] = {"curl", "-sS", "--max-time", "10", "-o", "/dev/null", "URL", NULL};
	check_http_client("::1", "[::1]", argv);
}

Test(clients, wget)
{
	char *argv[] = {"wget", "-q", "-T", "10", "-t", "1", "-O", "/dev/null", "URL", NULL};
	check_http_client("127.0.0.1", "127.0.0.1", argv);
}

Test(clients, python3_socket)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char code[256];

	sandbox_init(&sb, web_policy);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(code, sizeof(code),
		 "import socket\ns = socket.create_connection(('127.0.0.1', %u))\n"
		 "s.sendall(b'hello')\nprint(s.getsockname()[1])\ns.close()\n", srv.port);
	char *argv[] = {"python3", "-c", code, NULL};
	run_under(&r, &sb, NULL, argv, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "python3: %s", r.err);
	expect_one_assignment(&sb, &srv, "tcp", "ipv4");
	cr_expect(server_saw(&srv, (uint16_t)atoi(r.out)), "python's own getsockname disagrees");
	sandbox_cleanup(&sb);
}

Test(clients, nc_tcp)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16];

	sandbox_init(&sb, web_policy);
	server_start(&srv, "127.0.0.1", SERVE_DRAIN);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"nc", "-N", "-w", "5", "127.0.0.1", port, NULL};
	run_under(&r, &sb, NULL, argv, "hello over tcp\n");
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "nc: %s", r.err);
	expect_one_assignment(&sb, &srv, "tcp", "ipv4");
	sandbox_cleanup(&sb);
}

Test(clients, nc_udp)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char port[16];

	sandbox_init(&sb, web_policy);
	server_start(&srv, "127.0.0.1", SERVE_UDP_ECHO);
	snprintf(port, sizeof(port), "%u", srv.port);
	char *argv[] = {"nc", "-u", "-w", "1", "127.0.0.1", port, NULL};
	run_under(&r, &sb, NULL, argv, "hello over udp\n");
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "nc -u: %s", r.err);
	cr_expect_str_eq(r.out, "hello over udp\n", "the echo must come back to the bound port");
	expect_one_assignment(&sb, &srv, "udp", "ipv4");
	sandbox_cleanup(&sb);
}

Test(clients, socat)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	char target[64];

	sandbox_init(&sb, web_policy);
	server_start(&srv, "::1", SERVE_DRAIN);
	snprintf(target, sizeof(target), "TCP6:[::1]:%u", srv.port);
	char *argv[] = {"socat", "-u", "STDIN", target, NULL};
	run_under(&r, &sb, NULL, argv, "hello from socat\n");
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "socat: %s", r.err);
	expect_one_assignment(&sb, &srv, "tcp", "ipv6");
	sandbox_cleanup(&sb);
}

Test(clients, dig_against_dnsmasq)
{
	struct sandbox sb;
	struct run_result r;
	char port_opt[32], port_arg[16], log_opt[160], pid_opt[160], log_path[128], pid_path[128];
	uint16_t port = 0;

	sandbox_init(&sb, web_policy);
	snprintf(log_path, sizeof(log_path), "%s/dnsmasq.log", sb.dir);
	snprintf(pid_path, sizeof(pid_path), "%s/dnsmasq.pid", sb.dir);
	snprintf(log_opt, sizeof(log_opt), "--log-facility=%s", log_path);
	snprintf(pid_opt, sizeof(pid_opt), "--pid-file=%s", pid_path);
	/* Another program may take the port between our check and dnsmasq's
	 * bind; a few tries make that race harmless. */
	for (int attempt = 0; attempt < 5; attempt++) {
		port = free_dns_port();
		snprintf(port_opt, sizeof(port_opt), "--port=%u", port);
		char *dnsmasq[] = {"/usr/sbin/dnsmasq", port_opt, "--listen-address=127.0.0.1",
				   "--bind-interfaces", "--no-resolv", "--no-hosts",
				   "--address=/portfence.test/127.0.0.9", "--log-queries=extra", log_opt,
				   pid_opt, "--user=root", NULL};
		run_program(&r, dnsmasq, NULL, NULL);
		if (r.status == 0)
			break;
	}
	cr_assert_eq(r.status, 0, "dnsmasq: %s", r.err);
	snprintf(port_arg, sizeof(port_arg), "%u", port);
	usleep(300000);

	char *dig[] = {"dig", "@127.0.0.1", "-p", port_arg, "+short", "+tries=1", "+time=5",
		       "portfence.test", NULL};
	run_under(&r, &sb, NULL, dig, NULL);
	FILE *pidf = fopen(pid_path, "r");
	int pid = 0;
	if (pidf && fscanf(pidf, "%d", &pid) == 1)
		kill(pid, SIGTERM);
	if (pidf)
		fclose(pidf);
	cr_assert_eq(r.status, 0, "dig: %s", r.err);
	cr_expect_str_eq(r.out, "127.0.0.9\n");

	json_t *records = audit_records(sb.log);
	json_t *assign = audit_find(records, "assign", 0);
	cr_assert_not_null(assign);
	uint16_t local = address_port(json_string_value(json_object_get(assign, "local")));
	cr_expect(local >= RANGE_LO && local <= RANGE_HI);
	cr_expect_str_eq(json_string_value(json_object_get(assign, "proto")), "udp");

	/* dnsmasq logs the client as 127.0.0.1/PORT with --log-queries=extra. */
	char seen[64], dns_log[16384];
	FILE *logf = fopen(log_path, "r");
	cr_assert_not_null(logf);
	size_t n = fread(dns_log, 1, sizeof(dns_log) - 1, logf);
	dns_log[n] = '\0';
	fclose(logf);
	snprintf(seen, sizeof(seen), "127.0.0.1/%u query[A] portfence.test", local);
	cr_expect(strstr(dns_log, seen) != NULL, "dnsmasq did not see port %u:\n%s", local, dns_log);
	json_decref(records);
	sandbox_cleanup(&sb);
}
