/* portfence status: gathers, per app, the sockets the kernel holds in its
 * range (one NETLINK_SOCK_DIAG dump per family and protocol, filtered in
 * the kernel by port), the processes that hold them, and the cgroups the
 * BPF backend attached and the records its programs lost. */
#include <errno.h>
#include <unistd.h>
#include <getopt.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_cli.h"
#include "cli.h"
#include "loader/loader.h"
#include "core/state.h"
#include "kernel/pins.h"
#include "kernel/sockdiag.h"
#include "status.h"

const char *const status_state_names[STATE_COUNT] = {"established", "time-wait", "listen", "other"};

static guint hash_key(gconstpointer key)
{
	guint hash = 2166136261u;	/* FNV-1a */
	for (int i = 0; i < 24; i++)
		hash = (hash ^ ((const uint8_t *)key)[i]) * 16777619u;
	return hash;
}

static gboolean same_key(gconstpointer a, gconstpointer b)
{
	return memcmp(a, b, 24) == 0;
}

struct key_entry *key_table_put(struct key_table *table, const uint8_t key[24], bool *created)
{
	if (!table->entries)
		table->entries = g_hash_table_new_full(hash_key, same_key, NULL, g_free);
	struct key_entry *entry = g_hash_table_lookup(table->entries, key);
	*created = entry == NULL;
	if (*created) {
		if (!(entry = g_try_new0(struct key_entry, 1)))
			return NULL;
		memcpy(entry->key, key, 24);
		g_hash_table_insert(table->entries, entry->key, entry);
	}
	return entry;
}

void key_table_free(struct key_table *table)
{
	if (table->entries)
		g_hash_table_destroy(table->entries);
	table->entries = NULL;
}

static enum status_state state_of(const struct pf_socket_entry *entry)
{
	switch (entry->state) {
	case TCP_ESTABLISHED:
		return STATE_ESTABLISHED;
	case TCP_TIME_WAIT:
		return STATE_TIME_WAIT;
	case TCP_LISTEN:
		return STATE_LISTEN;
	default:
		return STATE_OTHER;
	}
}

struct gather {
	struct status *status;
	const struct pf_policy *policy;
	uint8_t ports_seen[65536 / 8];
	bool out_of_memory;
};

static void count_destination(struct status *status, int app, const struct pf_socket_entry *entry)
{
	uint8_t key[24] = {0};
	bool created;

	if (entry->remote_port == 0)
		return;
	memcpy(key, &app, sizeof(app));
	key[4] = entry->family;
	memcpy(key + 5, &entry->remote_port, 2);
	memcpy(key + 8, entry->remote_addr, 16);
	if (key_table_put(&status->destinations, key, &created) && created)
		status->apps[app].destinations++;
}

int status_app_at_port(const struct status *status, uint16_t port)
{
	int policy_app = pf_policy_app_at_port(status->policy, port);
	return policy_app < 0 ? -1 : status->status_of_policy_app[policy_app];
}

void status_count_socket(struct status *status, int app, const struct pf_socket_entry *entry)
{
	struct app_status *as = &status->apps[app];
	static const uint8_t shown[STATE_COUNT] = {PORT_ESTABLISHED, PORT_TIME_WAIT, PORT_LISTEN, PORT_OTHER};
	uint8_t *port = &status->port_state[entry->local_port];
	as->by_state[state_of(entry)]++;
	if (shown[state_of(entry)] > *port)
		*port = shown[state_of(entry)];
	as->in_use++;
	if (!status->quiet)	/* --watch shows no destinations */
		count_destination(status, app, entry);
}

static size_t inode_slot(const struct inode_index *index, uint32_t inode)
{
	return (size_t)((inode * 0x9E3779B97F4A7C15ull) >> 32) & index->mask;
}

long inode_index_get(const struct inode_index *index, uint32_t inode)
{
	if (!index->inodes)
		return -1;
	for (size_t at = inode_slot(index, inode);; at = (at + 1) & index->mask) {
		if (index->inodes[at] == inode)
			return index->sockets[at];
		if (index->inodes[at] == 0)
			return -1;
	}
}

/* Room for one more, at most half full; false when out of memory. */
static bool inode_index_room(struct inode_index *index)
{
	if (index->inodes && (index->count + 1) * 2 <= index->mask + 1)
		return true;
	size_t slots = index->inodes ? (index->mask + 1) * 2 : 1024;
	struct inode_index grown = {calloc(slots, sizeof(uint32_t)), malloc(slots * sizeof(uint32_t)), slots - 1,
				    index->count};
	if (!grown.inodes || !grown.sockets) {
		free(grown.inodes);
		free(grown.sockets);
		return false;
	}
	for (size_t i = 0; index->inodes && i <= index->mask; i++) {
		if (!index->inodes[i])
			continue;
		size_t at = inode_slot(&grown, index->inodes[i]);
		while (grown.inodes[at])
			at = (at + 1) & grown.mask;
		grown.inodes[at] = index->inodes[i];
		grown.sockets[at] = index->sockets[i];
	}
	free(index->inodes);
	free(index->sockets);
	*index = grown;
	return true;
}

static void inode_index_free(struct inode_index *index)
{
	free(index->inodes);
	free(index->sockets);
	memset(index, 0, sizeof(*index));
}

static void remember_socket(struct gather *g, const struct pf_socket_entry *entry)
{
	struct status *st = g->status;

	if (st->socket_count == st->socket_cap) {
		size_t cap = st->socket_cap ? st->socket_cap * 2 : 256;
		struct pf_socket_entry *grown = realloc(st->sockets, cap * sizeof(*grown));
		bool *claimed = grown ? realloc(st->claimed, cap * sizeof(*claimed)) : NULL;
		pid_t *last_pid = claimed ? realloc(st->last_pid, cap * sizeof(*last_pid)) : NULL;
		if (grown)
			st->sockets = grown;
		if (claimed)
			st->claimed = claimed;
		if (!last_pid) {
			g->out_of_memory = true;
			return;
		}
		st->last_pid = last_pid;
		st->socket_cap = cap;
	}
	if (!inode_index_room(&st->inodes)) {
		g->out_of_memory = true;
		return;
	}
	struct inode_index *index = &st->inodes;
	size_t at = inode_slot(index, entry->inode);
	while (index->inodes[at] && index->inodes[at] != entry->inode)
		at = (at + 1) & index->mask;
	if (index->inodes[at])
		return;	/* seen already (a dump of both families) */
	index->inodes[at] = entry->inode;
	index->sockets[at] = (uint32_t)st->socket_count;
	index->count++;
	st->claimed[st->socket_count] = false;
	st->last_pid[st->socket_count] = 0;
	st->sockets[st->socket_count++] = *entry;
}

/* A socket in a range counts for the range's utilisation whoever holds
 * it; one without an inode (TIME_WAIT, a request) has no holder to ask
 * and counts for the range's app; one with an inode waits for /proc. */
static void visit_socket(const struct pf_socket_entry *entry, void *ctx)
{
	struct gather *g = ctx;
	int app = status_app_at_port(g->status, entry->local_port);

	if (app >= 0) {
		uint8_t *byte = &g->ports_seen[entry->local_port / 8], bit = (uint8_t)(1u << (entry->local_port % 8));
		if (!(*byte & bit)) {
			*byte |= bit;
			g->status->apps[app].distinct_ports++;
		}
	}
	if (entry->protocol == IPPROTO_TCP && entry->state == TCP_LISTEN)
		g->status->listening[entry->local_port / 8] |= (uint8_t)(1u << (entry->local_port % 8));
	if (entry->inode)
		remember_socket(g, entry);
	else if (app >= 0)
		status_count_socket(g->status, app, entry);
}

static int gather_sockets(struct status *status, const struct pf_policy *policy)
{
	struct pf_port_range *ranges = calloc(status->app_count + 1, sizeof(*ranges));
	struct gather *g = calloc(1, sizeof(*g));
	int rc = -ENOMEM;
	size_t count = status->app_count;
	bool audit = false;

	if (ranges && g) {
		for (size_t i = 0; i < status->app_count; i++) {
			ranges[i] = (struct pf_port_range){status->apps[i].app->range_lo,
							   status->apps[i].app->range_hi};
			audit |= status->apps[i].app->mode == PF_MODE_AUDIT;
		}
		/* An audit-mode app's ports are the kernel's: every socket. */
		if (audit) {
			ranges[0] = (struct pf_port_range){1, 65535};
			count = 1;
		}
		g->status = status;
		g->policy = policy;
		rc = count ? pf_sockdiag_dump_ports(ranges, count, visit_socket, g) : 0;
		if (rc == 0 && g->out_of_memory)
			rc = -ENOMEM;
	}
	free(ranges);
	free(g);
	return rc;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An app never attached has no directory; any other failure (a
 * non-root caller: the pins are root's) is said, once per root. */
static void say_pins_unreadable(const struct app_status *app, const char *pin_root, int error)
{
	static const char *said[2];	/* the roots already said */
	size_t slot = 0;
	char path[4096];

	if (error == ENOENT)
		return;
	while (slot < 2 && said[slot] && strcmp(said[slot], pin_root) != 0)
		slot++;
	if (slot < 2 && !said[slot]) {
		said[slot] = pin_root;
		pf_pin_app_dir(pin_root, app->app->name, path, sizeof(path));
		fprintf(stderr, "portfence: status: cannot read %s: %s; the cgroups attached are not shown%s\n",
			path, strerror(error), geteuid() ? " (run as root)" : "");
	}
}

/* The room is the app's, not one root's: both roots' reads fill one
 * array. */
static bool add_cgroup(void *opaque, const char *app_name, const char *cgroup_path)
{
	struct app_status *app = opaque;

	(void)app_name;
	if (app->cgroup_count == app->cgroup_cap) {
		size_t cap = app->cgroup_cap ? app->cgroup_cap * 2 : 8;
		char **grown = realloc(app->cgroups, cap * sizeof(*grown));
		if (!grown)
			return true;
		app->cgroups = grown;
		app->cgroup_cap = cap;
	}
	if ((app->cgroups[app->cgroup_count] = strdup(cgroup_path)))
		app->cgroup_count++;
	return false;
}

void status_read_cgroups(struct app_status *app, const char *pin_root)
{
	int rc = pf_pins_each_of_app(pin_root, app->app->name, add_cgroup, app);

	if (rc < 0)
		say_pins_unreadable(app, pin_root, -rc);
	if (app->cgroup_count)
		qsort(app->cgroups, app->cgroup_count, sizeof(*app->cgroups), compare_names);
}

static int select_apps(struct status *status, const struct pf_policy *policy, const char *only)
{
	status->apps = calloc(policy->app_count + 1, sizeof(*status->apps));
	status->status_of_policy_app = calloc(policy->app_count + 1, sizeof(int));
	if (!status->apps || !status->status_of_policy_app)
		return -1;
	for (size_t i = 0; i < policy->app_count; i++) {
		status->status_of_policy_app[i] = -1;
		if (only && strcmp(policy->apps[i].name, only) != 0)
			continue;
		status->status_of_policy_app[i] = (int)status->app_count;
		status->apps[status->app_count++].app = &policy->apps[i];
	}
	return 0;
}

void status_free(struct status *status)
{
	for (size_t i = 0; i < status->app_count; i++) {
		for (size_t c = 0; c < status->apps[i].cgroup_count; c++)
			free(status->apps[i].cgroups[c]);
		free(status->apps[i].cgroups);
	}
	free(status->apps);
	free(status->status_of_policy_app);
	free(status->sockets);
	free(status->claimed);
	free(status->last_pid);
	inode_index_free(&status->inodes);
	key_table_free(&status->destinations);
}

void status_warn(struct status *status, const char *fmt, ...)
{
	va_list args;
	va_start(args, fmt);
	if (status->quiet)
		vsnprintf(status->warning, sizeof(status->warning), fmt, args);
	else
		vfprintf(stderr, fmt, args);
	va_end(args);
}

/* The counters: the shim's, from the app's shared state under the
 * policy's state_dir (or this user's default), none there yet being 0;
 * plus the BPF programs' of the app's attachments and runs. */
static void read_counters(struct status *status, struct app_status *app, const struct pf_policy *policy)
{
	char dir[4096];
	uint64_t assignments = 0, failures = 0, bpf_assignments = 0, bpf_failures = 0;
	bool shim_known = false;

	if (policy->state_dir)
		snprintf(dir, sizeof(dir), "%s", policy->state_dir);
	else if (pf_state_default_dir(secure_getenv("XDG_RUNTIME_DIR"), dir, sizeof(dir)) < 0)
		dir[0] = '\0';
	int rc = dir[0] ? pf_state_read_counters(dir, app->app->name, app->app->range_hi - app->app->range_lo + 1u,
						 &assignments, &failures)
			: -ENOENT;
	if (rc < 0 && rc != -ENOENT)
		status_warn(status, "portfence: status: cannot read the counters of app '%s' in %s: %s\n",
			app->app->name, dir, strerror(-rc));
	else
		shim_known = dir[0] != '\0';
	rc = pf_bpf_outcomes(app->app->name, &bpf_assignments, &bpf_failures);
	if (rc < 0)
		status_warn(status, "portfence: status: cannot read the BPF counters of app '%s': %s\n",
			app->app->name, strerror(-rc));
	if (!shim_known && rc < 0)
		return;
	app->assignments = assignments + bpf_assignments;
	app->failures = failures + bpf_failures;
	app->counters_known = true;
}

static int collect(struct status *status, const struct pf_policy *policy)
{
	int rc = gather_sockets(status, policy);
	if (rc < 0) {
		status_warn(status, "portfence: status: cannot read the kernel's socket tables: %s\n",
			strerror(-rc));
		return 1;
	}
	if (status->inodes.count && status_find_processes(status) < 0)
		status_warn(status, "portfence: status: cannot read /proc: %s\n", strerror(errno));
	/* A socket no readable process holds counts for its range's app. */
	for (size_t s = 0; s < status->socket_count; s++) {
		int app = status->claimed[s] ? -1 : status_app_at_port(status, status->sockets[s].local_port);
		if (app >= 0)
			status_count_socket(status, app, &status->sockets[s]);
	}
	if (status->unreadable)
		status_warn(status,
			"portfence: status: cannot read the open files of %lu processes (/proc/PID/fd: %s)%s; "
			"their sockets in a range count for the range's app, never as intruders\n",
			status->unreadable, strerror(EACCES), geteuid() ? " (run as root)" : "");
	for (size_t i = 0; i < status->app_count; i++) {
		struct app_status *app = &status->apps[i];
		status_read_cgroups(app, PF_PIN_ROOT);
		status_read_cgroups(app, PF_PIN_RUN_ROOT);
		read_counters(status, app, policy);
		app->records_lost = pf_bpf_records_lost(app->app->name);
		if (app->records_lost < 0)
			status_warn(status, "portfence: status: cannot read how many records app '%s' lost: %s\n",
				app->app->name, strerror((int)-app->records_lost));
	}
	return 0;
}

enum status_format { FORMAT_TEXT, FORMAT_JSON, FORMAT_PROMETHEUS, FORMAT_WATCH };

int status_gather(struct status *status, const struct pf_policy *policy, const char *only, const char *path)
{
	status->policy = policy;
	if (select_apps(status, policy, only) < 0)
		return 1;
	if (only && status->app_count == 0) {
		cli_no_such_app(policy, path, only, NULL);
		return 1;
	}
	return collect(status, policy);
}

static int show(const char *path, const char *only, enum status_format format)
{
	struct pf_policy policy;
	struct status status = {0};
	int rc = 1;

	if (cli_load_policy(path, &policy) < 0)
		return 1;
	if ((rc = status_gather(&status, &policy, only, path)) != 0)
		goto out;
	if (format == FORMAT_JSON)
		rc = status_print_json(&status);
	else if (format == FORMAT_PROMETHEUS)
		status_print_prometheus(&status);
	else
		status_print_text(&status);
out:
	status_free(&status);
	pf_policy_free(&policy);
	return rc;
}

int cmd_status(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"app", required_argument, NULL, 'a'},
		{"json", no_argument, NULL, 'j'},	  {"prometheus", no_argument, NULL, 'p'},
		{"watch", no_argument, NULL, 'w'},	  {0},
	};
	const char *path = NULL, *only = NULL;
	enum status_format format = FORMAT_TEXT;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:a:", options)) != -1) {
		if (opt == 'c')
			path = optarg;
		else if (opt == 'a')
			only = optarg;
		else if ((opt == 'j' || opt == 'p' || opt == 'w') && format == FORMAT_TEXT)
			format = opt == 'j' ? FORMAT_JSON : opt == 'p' ? FORMAT_PROMETHEUS : FORMAT_WATCH;
		else
			return usage_error(opt == 'j' || opt == 'p' || opt == 'w'
						   ? "status: --json, --prometheus and --watch exclude each other"
						   : "status: unknown option");
	}
	if (optind != argc)
		return usage_error("status takes no arguments besides its options");
	pf_bpf_sweep_leftovers();
	if (format == FORMAT_WATCH)
		return status_watch(path ? path : cli_config_from_env(), only);
	return show(path ? path : cli_config_from_env(), only, format);
}
