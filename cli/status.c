/* portfence status: gathers, per app, the sockets the kernel holds in its
 * range (one NETLINK_SOCK_DIAG dump per family and protocol, filtered in
 * the kernel by port), the processes that hold them, and the cgroups the
 * BPF backend attached and the records its programs lost. */
#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <getopt.h>
#include <glib.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpf_cli.h"
#include "cli.h"
#include "loader/loader.h"
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

struct key_entry *key_table_get(const struct key_table *table, const uint8_t key[24])
{
	return table->entries ? g_hash_table_lookup(table->entries, key) : NULL;
}

size_t key_table_count(const struct key_table *table)
{
	return table->entries ? g_hash_table_size(table->entries) : 0;
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

static void count_destination(struct gather *g, int app, const struct pf_socket_entry *entry)
{
	uint8_t key[24] = {0};
	bool created;

	if (entry->remote_port == 0)
		return;
	memcpy(key, &app, sizeof(app));
	key[4] = entry->family;
	memcpy(key + 5, &entry->remote_port, 2);
	memcpy(key + 8, entry->remote_addr, 16);
	if (!key_table_put(&g->status->destinations, key, &created))
		g->out_of_memory = true;
	else if (created)
		g->status->apps[app].destinations++;
}

static void remember_inode(struct gather *g, int app, uint32_t inode)
{
	uint8_t key[24] = {0};
	bool created;

	if (inode == 0)
		return;
	memcpy(key, &inode, sizeof(inode));
	struct key_entry *entry = key_table_put(&g->status->inodes, key, &created);
	if (!entry)
		g->out_of_memory = true;
	else
		entry->app = app;
}

static void visit_socket(const struct pf_socket_entry *entry, void *ctx)
{
	struct gather *g = ctx;
	int policy_app = pf_policy_app_at_port(g->policy, entry->local_port);
	int app = policy_app < 0 ? -1 : g->status->status_of_policy_app[policy_app];

	if (app < 0)
		return;
	struct app_status *as = &g->status->apps[app];
	as->by_state[state_of(entry)]++;
	as->in_use++;
	uint8_t *byte = &g->ports_seen[entry->local_port / 8], bit = (uint8_t)(1u << (entry->local_port % 8));
	if (!(*byte & bit)) {
		*byte |= bit;
		as->distinct_ports++;
	}
	count_destination(g, app, entry);
	remember_inode(g, app, entry->inode);
}

static int gather_sockets(struct status *status, const struct pf_policy *policy)
{
	struct pf_port_range *ranges = calloc(status->app_count + 1, sizeof(*ranges));
	struct gather *g = calloc(1, sizeof(*g));
	int rc = -ENOMEM;

	if (ranges && g) {
		for (size_t i = 0; i < status->app_count; i++)
			ranges[i] = (struct pf_port_range){status->apps[i].app->range_lo,
							   status->apps[i].app->range_hi};
		g->status = status;
		g->policy = policy;
		rc = pf_sockdiag_dump_ports(ranges, status->app_count, visit_socket, g);
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

void status_read_cgroups(struct app_status *app, const char *pin_root)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", pin_root, app->app->name);
	DIR *dir = opendir(path);
	struct dirent *entry;
	size_t cap = 0;

	/* An app never attached has no directory; any other failure (a
	 * non-root caller: the pins are root's) is said, once per root. */
	if (!dir && errno != ENOENT) {
		static const char *said[2];	/* the roots already said */
		size_t slot = 0;
		while (slot < 2 && said[slot] && strcmp(said[slot], pin_root) != 0)
			slot++;
		if (slot < 2 && !said[slot]) {
			said[slot] = pin_root;
			fprintf(stderr, "portfence: status: cannot read %s: %s; the cgroups attached are not shown%s\n",
				path, strerror(errno), geteuid() ? " (run as root)" : "");
		}
	}
	while (dir && (entry = readdir(dir))) {
		char decoded[4096];
		if (entry->d_name[0] == '.' ||
		    (entry->d_type != DT_DIR && entry->d_type != DT_UNKNOWN) ||
		    pf_pin_name_decode(entry->d_name, decoded, sizeof(decoded)) < 0)
			continue;
		if (app->cgroup_count == cap) {
			cap = cap ? cap * 2 : 8;
			char **grown = realloc(app->cgroups, cap * sizeof(*grown));
			if (!grown)
				break;
			app->cgroups = grown;
		}
		if ((app->cgroups[app->cgroup_count] = strdup(decoded)))
			app->cgroup_count++;
	}
	if (dir)
		closedir(dir);
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

static void status_free(struct status *status)
{
	for (size_t i = 0; i < status->app_count; i++) {
		for (size_t c = 0; c < status->apps[i].cgroup_count; c++)
			free(status->apps[i].cgroups[c]);
		free(status->apps[i].cgroups);
	}
	free(status->apps);
	free(status->status_of_policy_app);
	key_table_free(&status->inodes);
	key_table_free(&status->destinations);
}

static int collect(struct status *status, const struct pf_policy *policy)
{
	int rc = gather_sockets(status, policy);
	if (rc < 0) {
		fprintf(stderr, "portfence: status: cannot read the kernel's socket tables: %s\n",
			strerror(-rc));
		return 1;
	}
	if (key_table_count(&status->inodes) && status_find_processes(status) < 0)
		fprintf(stderr, "portfence: status: cannot read /proc: %s\n", strerror(errno));
	for (size_t i = 0; i < status->app_count; i++) {
		struct app_status *app = &status->apps[i];
		status_read_cgroups(app, PF_PIN_ROOT);
		status_read_cgroups(app, PF_PIN_RUN_ROOT);
		app->records_lost = pf_bpf_records_lost(app->app->name);
		if (app->records_lost < 0)
			fprintf(stderr, "portfence: status: cannot read how many records app '%s' lost: %s\n",
				app->app->name, strerror((int)-app->records_lost));
	}
	return 0;
}

enum status_format { FORMAT_TEXT, FORMAT_JSON, FORMAT_PROMETHEUS };

static int show(const char *path, const char *only, enum status_format format)
{
	struct pf_policy policy;
	struct status status = {0};
	int rc = 1;

	if (cli_load_policy(path, &policy) < 0)
		goto out;
	if (select_apps(&status, &policy, only) < 0)
		goto out;
	if (only && status.app_count == 0) {
		fprintf(stderr, "portfence: status: %s has no app '%s'\n", path, only);
		goto out;
	}
	if ((rc = collect(&status, &policy)) != 0)
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
		{0},
	};
	const char *path = NULL, *only = NULL;
	enum status_format format = FORMAT_TEXT;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:a:", options)) != -1) {
		if (opt == 'c')
			path = optarg;
		else if (opt == 'a')
			only = optarg;
		else if ((opt == 'j' || opt == 'p') && format == FORMAT_TEXT)
			format = opt == 'j' ? FORMAT_JSON : FORMAT_PROMETHEUS;
		else
			return usage_error(opt == 'j' || opt == 'p'
						   ? "status: --json and --prometheus exclude each other"
						   : "status: unknown option");
	}
	if (optind != argc)
		return usage_error("status takes no arguments besides its options");
	pf_bpf_sweep_runs();
	return show(path ? path : cli_config_from_env(), only, format);
}
