/* The shared state file is writable by the app's user: whatever is done
 * to it while confined programs run (truncated, garbled, replaced), they
 * never die of it and keep drawing ports from their range. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "core/state.h"

#define RANGE_LO 62000
#define RANGE_HI 62999

static const char policy[] = "default = \"steady\";\napps = ( { name = \"steady\"; "
			     "range = [ 62000, 62999 ]; algorithm = \"sequential\"; } );";

/* Connects until the stop file appears, printing each local port. */
static const char connect_loop[] =
	"import os, socket, sys, time\n"
	"port, stop = int(sys.argv[1]), sys.argv[2]\n"
	"deadline = time.time() + 40\n"
	"while not os.path.exists(stop) and time.time() < deadline:\n"
	"    s = socket.create_connection(('127.0.0.1', port))\n"
	"    print(s.getsockname()[1], flush=True)\n"
	"    s.recv(16)\n"
	"    s.close()\n"
	"    time.sleep(0.01)\n";

struct vandal {
	struct server *srv;
	char state_path[256];
	char stop_path[256];
	char saved_path[256];
	int done;	/* steps carried out while the program ran */
	int seen_after;	/* connections the server saw after the last one */
};

/* Waits (up to 20 s) until the server has seen `more` new connections. */
static bool await_connections(struct server *srv, int more)
{
	int goal = atomic_load(&srv->count) + more;
	for (int i = 0; i < 2000 && atomic_load(&srv->count) < goal; i++)
		usleep(10000);
	return atomic_load(&srv->count) >= goal;
}

static void write_file(const char *path, const void *bytes, size_t len, int flags)
{
	int fd = open(path, O_WRONLY | flags, 0600);
	if (fd < 0)
		return;
	if (write(fd, bytes, len) < 0)
		perror(path);
	close(fd);
}

/* The saved copy of the original file names the segment the running
 * program holds, so that cleanup finds and removes it too. */
static void save_original(struct vandal *v)
{
	char bytes[4096];
	int fd = open(v->state_path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, bytes, sizeof(bytes));
	if (fd >= 0)
		close(fd);
	if (n > 0)
		write_file(v->saved_path, bytes, (size_t)n, O_CREAT | O_EXCL);
}

/* No cr_assert here (not the test's thread): it records what it did. */
static void *vandalise(void *arg)
{
	struct vandal *v = arg;
	struct stat info;
	char garbage[4096];

	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (char)(i * 37 + 11);
	if (!await_connections(v->srv, 5) || stat(v->state_path, &info) < 0)
		goto stop;
	save_original(v);
	if (truncate(v->state_path, info.st_size / 2) < 0 || !await_connections(v->srv, 5))
		goto stop;
	v->done++;
	if (truncate(v->state_path, 0) < 0 || !await_connections(v->srv, 5))
		goto stop;
	v->done++;
	write_file(v->state_path, garbage, (size_t)info.st_size, O_TRUNC);
	if (!await_connections(v->srv, 5))
		goto stop;
	v->done++;
	/* Replaced by another file: rename over it. */
	char other[300];
	snprintf(other, sizeof(other), "%s.new", v->state_path);
	write_file(other, garbage, sizeof(garbage), O_CREAT | O_TRUNC);
	if (rename(other, v->state_path) < 0)
		goto stop;
	int before = atomic_load(&v->srv->count);
	if (!await_connections(v->srv, 5))
		goto stop;
	v->done++;
	v->seen_after = atomic_load(&v->srv->count) - before;
stop:
	write_file(v->stop_path, "", 0, O_CREAT);
	return NULL;
}

static unsigned next_in_range(unsigned port)
{
	return port == RANGE_HI ? RANGE_LO : port + 1;
}

Test(state_file, truncated_garbled_or_replaced_while_programs_run, .timeout = 90)
{
	struct sandbox sb;
	struct server srv;
	struct run_result r;
	struct vandal v = {.srv = &srv};
	pthread_t thread;
	char port_text[16];

	sandbox_init(&sb, policy);
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	char name[64];
	cr_assert_eq(pf_state_file_name("steady", name, sizeof(name)), 0);
	snprintf(v.state_path, sizeof(v.state_path), "%s/%s", sb.state, name);
	snprintf(v.stop_path, sizeof(v.stop_path), "%s/stop", sb.dir);
	snprintf(v.saved_path, sizeof(v.saved_path), "%s/saved.state", sb.state);
	snprintf(port_text, sizeof(port_text), "%u", srv.port);
	char *argv[] = {"python3", "-c", (char *)connect_loop, port_text, v.stop_path, NULL};
	pthread_create(&thread, NULL, vandalise, &v);
	run_under(&r, &sb, NULL, argv, NULL);
	pthread_join(thread, NULL);
	server_stop(&srv);

	cr_assert_eq(r.status, 0, "the program died (status %d): %s", r.status, r.err);
	cr_expect_eq(v.done, 4, "every change was made while the program ran");
	cr_expect_geq(v.seen_after, 5, "it kept connecting after the last change");
	unsigned lines = 0, previous = 0;
	for (const char *line = r.out; *line; line = strchr(line, '\n') + 1) {
		unsigned port = (unsigned)atoi(line);
		cr_assert(port >= RANGE_LO && port <= RANGE_HI, "port %u out of range", port);
		cr_expect(server_saw(&srv, (uint16_t)port), "port %u", port);
		if (lines++)
			cr_expect_eq(port, next_in_range(previous), "one sequence: %u after %u", port,
				     previous);
		previous = port;
	}
	cr_expect_eq(lines, (unsigned)atomic_load(&srv.count));

	/* The next program rebuilds the state and is confined as usual. */
	server_start(&srv, "127.0.0.1", SERVE_GREET_CLOSE);
	snprintf(port_text, sizeof(port_text), "%u", srv.port);
	char *once[] = {"python3", "-c",
			"import socket, sys\n"
			"s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
			"print(s.getsockname()[1])\n",
			port_text, NULL};
	run_under(&r, &sb, NULL, once, NULL);
	server_stop(&srv);
	cr_assert_eq(r.status, 0, "%s", r.err);
	unsigned port = (unsigned)atoi(r.out);
	cr_expect(port >= RANGE_LO && port <= RANGE_HI, "port %u", port);
	cr_expect(server_saw(&srv, (uint16_t)port));
	struct stat info;
	cr_assert_eq(stat(v.state_path, &info), 0);
	cr_expect_eq(info.st_size, (off_t)sizeof(struct pf_state_file), "the file was rebuilt");
	sandbox_cleanup(&sb);
}
