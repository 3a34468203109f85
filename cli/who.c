/* portfence who ADDR:PORT: which socket holds that local address and
 * port now (the kernel's socket tables, then /proc for the processes),
 * or with --at TIME which audit record last assigned it before TIME and
 * whether a later record reused it. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kernel/sockdiag.h"
#include "loader/loader.h"
#include "procapp.h"

#define MAX_HELD 256
#define MAX_LINE (64 * 1024)

struct query {
	struct sockaddr_storage addr;
	unsigned addr_len;
	uint16_t port;
	int proto;		/* IPPROTO_TCP, IPPROTO_UDP, or 0: both */
	bool any_addr;		/* 0.0.0.0 or :: asked: every address */
};

struct held {
	struct pf_socket_entry entry;
	json_t *processes;
};

struct found {
	const struct query *q;
	struct held held[MAX_HELD];
	size_t count;
};

static const char *state_name(const struct pf_socket_entry *e)
{
	if (e->protocol == IPPROTO_UDP)
		return e->state == TCP_ESTABLISHED ? "connected" : "unconnected";
	switch (e->state) {
	case TCP_ESTABLISHED: return "established";
	case TCP_SYN_SENT: return "syn-sent";
	case TCP_SYN_RECV: return "syn-recv";
	case TCP_FIN_WAIT1: return "fin-wait-1";
	case TCP_FIN_WAIT2: return "fin-wait-2";
	case TCP_TIME_WAIT: return "time-wait";
	case TCP_CLOSE: return "close";
	case TCP_CLOSE_WAIT: return "close-wait";
	case TCP_LAST_ACK: return "last-ack";
	case TCP_LISTEN: return "listen";
	case TCP_CLOSING: return "closing";
	default: return "other";
	}
}

static void format_endpoint(uint8_t family, const uint8_t *addr, uint16_t port, char *out, size_t len)
{
	char text[INET6_ADDRSTRLEN];
	inet_ntop(family, addr, text, sizeof(text));
	snprintf(out, len, family == AF_INET6 ? "[%s]:%u" : "%s:%u", text, port);
}

/* The socket's local address as IPv4 when it is v4-mapped. */
static bool local_matches(const struct query *q, const struct pf_socket_entry *e)
{
	static const uint8_t zero[16];
	const uint8_t *mine = e->local_addr;
	uint8_t family = e->family;
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (q->any_addr)
		return true;
	if (family == AF_INET6 && memcmp(mine, mapped, 12) == 0) {
		mine += 12;
		family = AF_INET;
	}
	/* A socket bound to the wildcard holds the port on every address
	 * (an IPv6 one also on IPv4, unless v6only, which diag does not say). */
	if (memcmp(mine, zero, family == AF_INET ? 4 : 16) == 0)
		return family == q->addr.ss_family || family == AF_INET6;
	if (q->addr.ss_family == AF_INET)
		return family == AF_INET && memcmp(mine, &((struct sockaddr_in *)&q->addr)->sin_addr, 4) == 0;
	return family == AF_INET6 && memcmp(mine, &((struct sockaddr_in6 *)&q->addr)->sin6_addr, 16) == 0;
}

static void visit(const struct pf_socket_entry *entry, void *ctx)
{
	struct found *f = ctx;
	if (entry->local_port != f->q->port || (f->q->proto && entry->protocol != f->q->proto) ||
	    !local_matches(f->q, entry) || f->count == MAX_HELD)
		return;
	f->held[f->count].entry = *entry;
	f->held[f->count].processes = json_array();
	f->count++;
}

/* Every process holding one of the sockets found: one pass over /proc. */
static unsigned long find_holders(struct found *f, const struct pf_policy *policy)
{
	int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *proc = proc_fd < 0 ? NULL : fdopendir(proc_fd);
	struct proc_apps apps;
	struct dirent *entry;
	unsigned long unreadable = 0;

	if (!proc)
		return 1;
	pf_bpf_sweep_leftovers();	/* a dead daemon's or run's pins are no attachment */
	proc_apps_init(&apps, policy);
	while ((entry = readdir(proc))) {
		char *end, path[40];
		long pid = strtol(entry->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "%ld/fd", pid);
		int fd_dir = openat(proc_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *fds = fd_dir < 0 ? NULL : fdopendir(fd_dir);
		struct dirent *fd_entry;
		bool *holds = calloc(f->count + 1, sizeof(bool));
		bool any = false;
		if (!fds) {
			if (fd_dir >= 0)
				close(fd_dir);
			unreadable += errno == EACCES;
			free(holds);
			continue;
		}
		while (holds && (fd_entry = readdir(fds))) {
			uint32_t inode;
			if (fd_entry->d_name[0] == '.' || !proc_socket_inode(fd_dir, fd_entry->d_name, &inode))
				continue;
			for (size_t i = 0; i < f->count; i++)
				if (f->held[i].entry.inode && f->held[i].entry.inode == inode)
					any = holds[i] = true;
		}
		closedir(fds);
		struct proc_info info;
		if (any && proc_apps_identify(&apps, proc_fd, (pid_t)pid, &info))
			for (size_t i = 0; i < f->count; i++) {
				if (!holds[i])
					continue;
				json_t *p = json_pack("{s:i, s:s, s:o, s:s, s:s, s:o}", "pid", (int)pid, "comm",
						      info.comm, "app",
						      info.app >= 0 ? json_string(policy->apps[info.app].name)
								    : json_null(),
						      "backend", proc_backend_name(info.backend), "cgroup",
						      info.cgroup, "unit",
						      info.unit[0] ? json_string(info.unit) : json_null());
				json_array_append_new(f->held[i].processes, p);
			}
		free(holds);
	}
	closedir(proc);
	unreadable += apps.unreadable_maps;
	proc_apps_free(&apps);
	return unreadable;
}

static int who_now(const struct query *q, const struct pf_policy *policy, bool json)
{
	static struct found f;
	struct pf_port_range range = {q->port, q->port};

	f.q = q;
	f.count = 0;
	int rc = pf_sockdiag_dump_ports(&range, 1, visit, &f);
	if (rc < 0) {
		fprintf(stderr, "portfence: who: cannot read the kernel's socket tables: %s\n", strerror(-rc));
		return 1;
	}
	if (find_holders(&f, policy) && geteuid() != 0)
		fprintf(stderr, "portfence: who: not root: the processes of other users are not shown\n");
	json_t *sockets = json_array();
	for (size_t i = 0; i < f.count; i++) {
		const struct pf_socket_entry *e = &f.held[i].entry;
		char local[64], remote[64];
		format_endpoint(e->family, e->local_addr, e->local_port, local, sizeof(local));
		format_endpoint(e->family, e->remote_addr, e->remote_port, remote, sizeof(remote));
		json_array_append_new(
			sockets, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:o}", "proto",
					   e->protocol == IPPROTO_TCP ? "tcp" : "udp", "family",
					   e->family == AF_INET ? "ipv4" : "ipv6", "local", local, "remote", remote,
					   "state", state_name(e), "inode", (json_int_t)e->inode, "uid",
					   (json_int_t)e->uid, "processes", f.held[i].processes));
	}
	if (json) {
		json_t *root = json_pack("{s:o}", "sockets", sockets);
		json_dumpf(root, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(root);
		return f.count ? 0 : 1;
	}
	if (!f.count)
		printf("no socket holds local port %u%s now\n", q->port, q->any_addr ? "" : " on that address");
	for (size_t i = 0; i < json_array_size(sockets); i++) {
		json_t *s = json_array_get(sockets, i), *procs = json_object_get(s, "processes");
		printf("%s %s %s", json_string_value(json_object_get(s, "proto")),
		       json_string_value(json_object_get(s, "local")), json_string_value(json_object_get(s, "state")));
		if (f.held[i].entry.remote_port)
			printf(" -> %s", json_string_value(json_object_get(s, "remote")));
		printf(" uid %lld\n", (long long)json_integer_value(json_object_get(s, "uid")));
		if (json_array_size(procs) == 0)
			printf("  no process holds it%s\n",
			       f.held[i].entry.inode ? " that could be read" : " (time-wait: the kernel's alone)");
		for (size_t p = 0; p < json_array_size(procs); p++) {
			json_t *pr = json_array_get(procs, p);
			json_t *app = json_object_get(pr, "app"), *unit = json_object_get(pr, "unit");
			printf("  pid %lld comm %s app %s (%s) cgroup %s%s%s\n",
			       (long long)json_integer_value(json_object_get(pr, "pid")),
			       json_string_value(json_object_get(pr, "comm")),
			       app && json_is_string(app) ? json_string_value(app) : "-",
			       json_string_value(json_object_get(pr, "backend")),
			       json_string_value(json_object_get(pr, "cgroup")), unit && json_is_string(unit) ? " unit " : "",
			       unit && json_is_string(unit) ? json_string_value(unit) : "");
		}
	}
	json_decref(sockets);
	return f.count ? 0 : 1;
}

/* --at: one pass over the log.  Only lines holding ":PORT\"" are parsed. */
struct history {
	json_t *last;	/* the last assigning record at or before TIME */
	json_t *next;	/* the first one after it, after TIME */
	unsigned long considered;
};

static bool record_matches(const struct query *q, json_t *record)
{
	const char *event = json_string_value(json_object_get(record, "event"));
	const char *local = json_string_value(json_object_get(record, "local"));
	const char *proto = json_string_value(json_object_get(record, "proto"));
	struct sockaddr_storage ss;
	unsigned len;

	if (!event || !local || (strcmp(event, "assign") && strcmp(event, "bind") && strcmp(event, "audit")))
		return false;
	if (q->proto && (!proto || strncmp(proto, q->proto == IPPROTO_TCP ? "tcp" : "udp", 3) != 0))
		return false;
	if (cli_parse_endpoint(local, &ss, &len) < 0)
		return false;
	struct pf_socket_entry e = {.family = (uint8_t)ss.ss_family};
	if (ss.ss_family == AF_INET) {
		e.local_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		memcpy(e.local_addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	} else {
		e.local_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		memcpy(e.local_addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	}
	return e.local_port == q->port && local_matches(q, &e);
}

/* The log's records of the queried port around at, into *h. */
static void scan_history(const struct query *q, const char *at, FILE *log, struct history *h)
{
	static char line[MAX_LINE];
	char needle[16];
	int needle_len = snprintf(needle, sizeof(needle), ":%u\"", q->port);

	while (fgets(line, sizeof(line), log)) {
		if (!memmem(line, strlen(line), needle, (size_t)needle_len))
			continue;
		json_t *record = json_loads(line, 0, NULL);
		const char *ts = json_string_value(json_object_get(record, "ts"));
		if (!ts || !record_matches(q, record)) {
			json_decref(record);
			continue;
		}
		h->considered++;
		if (cli_time_cmp(ts, at) <= 0) {
			json_decref(h->last);
			h->last = record;
		} else {
			h->next = record;
			return;	/* the log is in time order: nothing later matters */
		}
	}
}

/* A record's string field, or "-" when it has none. */
static const char *text_of(json_t *record, const char *key)
{
	const char *value = json_string_value(json_object_get(record, key));
	return value ? value : "-";
}

static void print_history(const struct query *q, const char *at, const struct history *h)
{
	json_t *r = h->last;

	if (!r) {
		printf("no record assigned local port %u before %sZ\n", q->port, at);
		return;
	}
	json_t *comm = json_object_get(r, "comm"), *cgroup = json_object_get(r, "cgroup");
	printf("at %sZ: %s %s was assigned at %s to pid %lld (%s) app %s, remote %s, event %s\n", at,
	       text_of(r, "proto"), text_of(r, "local"), text_of(r, "ts"),
	       (long long)json_integer_value(json_object_get(r, "pid")), text_of(r, comm ? "comm" : "exe"),
	       text_of(r, "app"), text_of(r, "remote"), text_of(r, "event"));
	if (cgroup)
		printf("  cgroup %s\n", json_string_value(cgroup));
	if (h->next)
		printf("  reused at %s by pid %lld app %s (remote %s)\n", text_of(h->next, "ts"),
		       (long long)json_integer_value(json_object_get(h->next, "pid")), text_of(h->next, "app"),
		       text_of(h->next, "remote"));
	else
		printf("  not reused since, as far as the log goes\n");
}

static int who_at(const struct query *q, const char *at, const char *log_path, bool json)
{
	FILE *log = cli_open_log(log_path);
	struct history h = {0};

	if (!log)
		return 1;
	scan_history(q, at, log, &h);
	if (cli_close_log(log, log_path) < 0) {
		json_decref(h.last);
		json_decref(h.next);
		return 1;
	}
	if (json) {
		char at_ts[CLI_TIME_LEN];
		cli_time_record_form(at, at_ts);
		json_t *root = json_pack("{s:s, s:O?, s:O?, s:b}", "at", at_ts, "record", h.last, "reused_by", h.next,
					 "reused", h.next != NULL && h.last != NULL);
		json_dumpf(root, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(root);
	} else {
		print_history(q, at, &h);
	}
	int rc = h.last ? 0 : 1;
	json_decref(h.last);
	json_decref(h.next);
	return rc;
}

int cmd_who(int argc, char **argv)
{
	static const struct option options[] = {
		{"at", required_argument, NULL, 't'},	 {"proto", required_argument, NULL, 'p'},
		{"config", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
		{0},
	};
	struct query q = {0};
	const char *policy_path = NULL;
	char at[CLI_TIME_LEN] = "";
	bool json = false;
	int opt;

	while ((opt = cli_getopt(argc, argv, "c:j", options)) != -1) {
		if (opt == 't' && cli_time_option("--at", optarg, at))
			return EXIT_USAGE;
		else if (opt == 'p' && strcmp(optarg, "tcp") == 0)
			q.proto = IPPROTO_TCP;
		else if (opt == 'p' && strcmp(optarg, "udp") == 0)
			q.proto = IPPROTO_UDP;
		else if (opt == 'p')
			return usage_error("who: --proto is tcp or udp");
		else if (opt == 'c')
			policy_path = optarg;
		else if (opt == 'j')
			json = true;
	}
	if (optind >= argc)
		return usage_error("who needs ADDR:PORT");
	if (argc - optind > 2)
		return usage_error("who takes ADDR:PORT and at most one LOGFILE");
	if (cli_parse_endpoint(argv[optind], &q.addr, &q.addr_len) < 0) {
		char message[PATH_MAX];
		snprintf(message, sizeof(message), "who: '%.200s' is not ADDR:PORT ([ADDR]:PORT for IPv6, the port 1-65535)",
			 argv[optind]);
		return usage_error(message);
	}
	q.port = ntohs(q.addr.ss_family == AF_INET ? ((struct sockaddr_in *)&q.addr)->sin_port
						   : ((struct sockaddr_in6 *)&q.addr)->sin6_port);
	if (q.port == 0)
		return usage_error("who: the port is 1-65535");
	q.any_addr = q.addr.ss_family == AF_INET
			     ? ((struct sockaddr_in *)&q.addr)->sin_addr.s_addr == htonl(INADDR_ANY)
			     : IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&q.addr)->sin6_addr);
	/* The policy names the apps of the processes found now, and the log
	 * --at reads when no LOGFILE is given; one named is always judged. */
	const char *logfile = optind + 1 < argc ? argv[optind + 1] : NULL;
	struct pf_policy policy;
	if (cli_load_optional_policy(policy_path, !at[0] || !logfile, &policy) < 0)
		return 1;
	int rc;
	if (at[0]) {
		const char *log = logfile ? logfile : cli_default_log(&policy);
		rc = log ? who_at(&q, at, log, json)
			 : usage_error("who --at: no LOGFILE given and no log in PORTFENCE_LOG or the policy");
	} else {
		/* A LOGFILE is read only with --at: the kernel answers for now. */
		rc = who_now(&q, &policy, json);
	}
	pf_policy_free(&policy);
	return rc;
}
