/* Loading, configuring and attaching one app's BPF programs. */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "core/algorithm.h"
#include "loader/loader.h"
#include "loader/loader_internal.h"
#include "portfence.skel.h"
#include "core/state.h"

static void say(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t len, const char *fmt, ...)
{
	va_list args;

	if (!why || !len)
		return;
	va_start(args, fmt);
	vsnprintf(why, len, fmt, args);
	va_end(args);
}

/* libbpf's own messages are kept for the one line we print: the last
 * warning it gave is usually why a load failed. */
static char libbpf_last[512];
static int keep_libbpf_message(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_WARN) {
		vsnprintf(libbpf_last, sizeof(libbpf_last), fmt, args);
		libbpf_last[strcspn(libbpf_last, "\n")] = '\0';
	}
	return 0;
}

const char *pf_bpf_unavailable(char *why, size_t len)
{
	struct utsname host;
	char mount_point[PATH_MAX];
	int major = 0, minor = 0;

	if (geteuid() != 0) {
		say(why, len, "the BPF backend needs root (CAP_BPF and CAP_SYS_ADMIN)");
		return why;
	}
	if (uname(&host) == 0 && sscanf(host.release, "%d.%d", &major, &minor) == 2 &&
	    (major < 6 || (major == 6 && minor < 2))) {
		/* 6.2: bpf_rdonly_cast, which reads a socket's creator cgroup
		 * (bpf/cgroups.bpf.h); SPEC says 5.18, see docs/spec.md. */
		say(why, len, "the BPF backend needs Linux >= 6.2 (this is %s)", host.release);
		return why;
	}
	if (pf_cgroup2_mount(mount_point, sizeof(mount_point)) < 0) {
		say(why, len, "the BPF backend needs cgroup v2, and no cgroup2 hierarchy is mounted");
		return why;
	}
	return NULL;
}

int pf_bpf_ensure_bpffs(void)
{
	struct statfs fs;

	if (statfs("/sys/fs/bpf", &fs) == 0 && fs.f_type == BPF_FS_MAGIC)
		return 0;
	if (mkdir("/sys/fs/bpf", 0700) < 0 && errno != EEXIST)
		return -errno;
	if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0)
		return -errno;
	return 0;
}

static int make_dir(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

const char *pf_bpf_app_name(const struct pf_bpf_app *loaded)
{
	return loaded->app_name;
}

/* The app's keys and counters come from its state, so that the BPF
 * backend continues the sequences the shim's processes share; the state
 * stays open for the counters to go back (pf_bpf_app_sync_counters). */
static void read_state(struct pf_bpf_app *loaded, const struct pf_policy *policy, const struct pf_app *app,
		       struct pf_bpf_config *config, struct pf_bpf_counters *counters)
{
	char dir[PATH_MAX];
	struct pf_state *state = &loaded->state;
	uint32_t num = (uint32_t)app->range_hi - app->range_lo + 1;

	if (policy->state_dir)
		snprintf(dir, sizeof(dir), "%s", policy->state_dir);
	else if (pf_state_default_dir(secure_getenv("XDG_RUNTIME_DIR"), dir, sizeof(dir)) < 0)
		dir[0] = '\0';
	if (!loaded->state_open)
		loaded->state_open = dir[0] && pf_state_open(dir, app->name, num, state) == 0;
	if (loaded->state_open) {
		memcpy(config->hash_key, state->shared->hash_key, sizeof(config->hash_key));
		memcpy(config->index_key, state->shared->index_key, sizeof(config->index_key));
		counters->sequential_next = atomic_load(&state->shared->sequential_next);
		counters->hash_next = atomic_load(&state->shared->hash_next);
		counters->increments_next = atomic_load(&state->shared->increments_next);
		for (int i = 0; i < PF_BPF_DH_TABLE_LEN && i < PF_DH_TABLE_LEN; i++)
			counters->table[i] = atomic_load(&state->shared->table[i]);
		return;
	}
	pf_random_bytes(config->hash_key, sizeof(config->hash_key));
	pf_random_bytes(config->index_key, sizeof(config->index_key));
}

void pf_bpf_app_sync_counters(struct pf_bpf_app *loaded)
{
	struct pf_bpf_counters now;
	uint32_t zero = 0;

	if (!loaded->state_open || bpf_map_lookup_elem(bpf_map__fd(loaded->skel->maps.counters), &zero, &now) < 0)
		return;
	struct pf_shared_state *shared = loaded->state.shared;
	/* What advanced here is added, not stored: the shim's processes
	 * may have advanced the state meanwhile. */
	atomic_fetch_add(&shared->sequential_next, now.sequential_next - loaded->synced.sequential_next);
	atomic_fetch_add(&shared->hash_next, now.hash_next - loaded->synced.hash_next);
	atomic_fetch_add(&shared->increments_next, now.increments_next - loaded->synced.increments_next);
	for (int i = 0; i < PF_BPF_DH_TABLE_LEN && i < PF_DH_TABLE_LEN; i++)
		atomic_fetch_add(&shared->table[i], now.table[i] - loaded->synced.table[i]);
	loaded->synced = now;
}

static void fill_config(const struct pf_app *app, struct pf_bpf_config *config)
{
	config->range_lo = app->range_lo;
	config->range_hi = app->range_hi;
	config->algorithm = (uint32_t)app->algorithm;
	config->protocols = (app->protocols & PF_PROTO_TCP ? PF_BPF_PROTO_TCP : 0) |
			    (app->protocols & PF_PROTO_UDP ? PF_BPF_PROTO_UDP : 0);
	config->audit_mode = app->mode == PF_MODE_AUDIT;
	config->deny_explicit_bind = app->deny_explicit_bind;
	config->udp_unbound_audit = app->udp_unbound_audit;
	config->has_allow = app->has_allow;
	config->increments_n = pf_random_increments_n((uint32_t)app->range_hi - app->range_lo + 1);
}

/* The host's own addresses, which a wildcard-bound socket may get as
 * its source; loopback is handled in the programs themselves. */
static void fill_local_addrs(struct portfence_bpf *skel)
{
	struct ifaddrs *list, *ifa;
	uint32_t index = 0;

	if (getifaddrs(&list) < 0)
		return;
	for (ifa = list; ifa && index < PF_BPF_LOCAL_ADDRS; ifa = ifa->ifa_next) {
		struct pf_bpf_local_addr local = {0};
		if (!ifa->ifa_addr)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)ifa->ifa_addr;
			if ((ntohl(sin->sin_addr.s_addr) >> 24) == 127)
				continue;
			local.family = AF_INET;
			memcpy(local.addr, &sin->sin_addr, 4);
		} else if (ifa->ifa_addr->sa_family == AF_INET6) {
			const struct sockaddr_in6 *sin6 = (const void *)ifa->ifa_addr;
			if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
				continue;
			local.family = AF_INET6;
			memcpy(local.addr, &sin6->sin6_addr, 16);
		} else {
			continue;
		}
		bpf_map_update_elem(bpf_map__fd(skel->maps.local_addrs), &index, &local, BPF_ANY);
		index++;
	}
	freeifaddrs(list);
}

/* The other apps' ranges: a bind into one is refused. */
static int fill_foreign_ports(struct portfence_bpf *skel, const struct pf_policy *policy, const struct pf_app *app)
{
	static struct pf_bpf_port_bits ports;
	uint32_t zero = 0;

	memset(&ports, 0, sizeof(ports));
	for (size_t i = 0; i < policy->app_count; i++) {
		const struct pf_app *other = &policy->apps[i];
		if (other == app || strcmp(other->name, app->name) == 0)
			continue;
		for (uint32_t port = other->range_lo; port <= other->range_hi; port++)
			ports.bits[port / 64] |= 1ull << (port % 64);
	}
	return bpf_map_update_elem(bpf_map__fd(skel->maps.foreign_ports), &zero, &ports, BPF_ANY);
}

/* bind_allow, one bit a port (the layout of foreign_ports): the ports the
 * programs let a bind take with explicit_bind = "deny" (the core
 * question's bind_allowed).  Filled when the programs declare a map of
 * that name, a one-entry array of struct pf_bpf_port_bits. */
static int fill_bind_allow(struct portfence_bpf *skel, const struct pf_app *app)
{
	struct bpf_map *map = bpf_object__find_map_by_name(skel->obj, "bind_allow_ports");
	static struct pf_bpf_port_bits ports;
	uint32_t zero = 0;

	if (!map)
		return 0;
	memset(&ports, 0, sizeof(ports));
	for (size_t i = 0; i < app->bind_allow_count; i++)
		for (uint32_t port = app->bind_allow[i].lo; port <= app->bind_allow[i].hi; port++)
			ports.bits[port / 64] |= 1ull << (port % 64);
	return bpf_map_update_elem(bpf_map__fd(map), &zero, &ports, BPF_ANY);
}

int pf_bpf_app_configure(struct pf_bpf_app *loaded, const struct pf_policy *policy,
			 const struct pf_app *app, char *why, size_t len)
{
	struct pf_bpf_config config = {0};
	struct pf_bpf_counters counters = {0};
	uint32_t zero = 0;

	/* A reload: what advanced since the last sync goes back first. */
	if (loaded->state_open)
		pf_bpf_app_sync_counters(loaded);
	read_state(loaded, policy, app, &config, &counters);
	fill_config(app, &config);
	const char *log_override = secure_getenv("PORTFENCE_LOG");
	config.records = policy->log_file || policy->log_syslog || (log_override && log_override[0]);
	if (bpf_map_update_elem(bpf_map__fd(loaded->skel->maps.config), &zero, &config, BPF_ANY) < 0) {
		say(why, len, "cannot configure app '%s': %s", app->name, strerror(errno));
		return -errno;
	}
	if (!loaded->counters_shared)
		bpf_map_update_elem(bpf_map__fd(loaded->skel->maps.counters), &zero, &counters, BPF_ANY);
	/* What the counters hold now is in the state already (or, shared
	 * with an earlier load, was its to give back). */
	if (bpf_map_lookup_elem(bpf_map__fd(loaded->skel->maps.counters), &zero, &loaded->synced) < 0)
		loaded->synced = counters;
	fill_local_addrs(loaded->skel);
	if (fill_foreign_ports(loaded->skel, policy, app) < 0 || fill_bind_allow(loaded->skel, app) < 0) {
		say(why, len, "cannot configure app '%s': %s", app->name, strerror(errno));
		return -errno;
	}
	return pf_bpf_fill_rules(loaded, app, why, len);
}

/* The maps a loaded app shares with its other loads through pins. */
static struct bpf_map *shared_maps(struct portfence_bpf *skel, int i)
{
	struct bpf_map *maps[] = {skel->maps.config, skel->maps.counters, skel->maps.records,
				  skel->maps.sock_state, skel->maps.exes, skel->maps.port_users,
				  skel->maps.record_loss, skel->maps.foreign_ports, skel->maps.outcomes,
				  skel->maps.port_slots, skel->maps.connect_claims, skel->maps.unsettled_binds,
				  skel->maps.learned_sources, skel->maps.range_full, NULL};
	return maps[i];
}

/* Whether the map pinned at fd is laid out as this build's: another
 * portfence version's (a record or a socket's state of another size)
 * would have the programs read past its values, and the kernel refuse
 * them (EACCES).  Sizes may differ (port_slots follows the range). */
static bool pinned_fits(int fd, const struct bpf_map *map)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == bpf_map__type(map) &&
	       info.key_size == bpf_map__key_size(map) && info.value_size == bpf_map__value_size(map);
}

/* The app's pinned maps, when one of them is not laid out as this
 * build's: removed when no cgroup is attached with them (one line says
 * so: what they hold cannot be read here), else -EPROTO with the reason. */
static int replace_other_versions_maps(struct pf_bpf_app *loaded, char *why, size_t len)
{
	char path[PATH_MAX + 64];
	bool fits = true;

	for (int i = 0; fits && shared_maps(loaded->skel, i); i++) {
		struct bpf_map *map = shared_maps(loaded->skel, i);
		snprintf(path, sizeof(path), "%s/%s", loaded->pin_dir, bpf_map__name(map));
		int fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		fits = pinned_fits(fd, map);
		close(fd);
	}
	if (fits)
		return 0;
	if (pf_bpf_app_dir_in_use(loaded->pin_dir)) {
		say(why, len, "the maps pinned for app '%s' under %s are another portfence version's, and cgroups are "
			      "attached with them: detach them first (portfence detach -a %s CGROUP)",
		    loaded->app_name, loaded->pin_dir, loaded->app_name);
		return -EPROTO;
	}
	fprintf(stderr, "portfence: warning: the maps pinned for app '%s' under %s were another portfence version's; "
			"replaced (records left in them are not written)\n", loaded->app_name, loaded->pin_dir);
	pf_bpf_remove_pins(loaded->pin_dir);
	return 0;
}

static int share_maps(struct pf_bpf_app *loaded, bool *reused)
{
	char path[PATH_MAX + 64];
	int rc;

	*reused = false;
	for (int i = 0; shared_maps(loaded->skel, i); i++) {
		struct bpf_map *map = shared_maps(loaded->skel, i);
		snprintf(path, sizeof(path), "%s/%s", loaded->pin_dir, bpf_map__name(map));
		int fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		rc = bpf_map__reuse_fd(map, fd);
		close(fd);
		if (rc < 0)
			return rc;
		*reused = true;
	}
	return 0;
}

static int pin_maps(struct pf_bpf_app *loaded)
{
	char path[PATH_MAX + 64];
	int rc;

	if ((rc = make_dir(PF_BPF_PIN_ROOT)) < 0 || (rc = make_dir(loaded->pin_dir)) < 0)
		return rc;
	for (int i = 0; shared_maps(loaded->skel, i); i++) {
		struct bpf_map *map = shared_maps(loaded->skel, i);
		snprintf(path, sizeof(path), "%s/%s", loaded->pin_dir, bpf_map__name(map));
		if (access(path, F_OK) == 0)
			continue;
		if ((rc = bpf_map__pin(map, path)) < 0)
			return rc;
	}
	return 0;
}

/* Exec names are only a convenience (a record's exe falls back to
 * /proc/PID/exe, and comm is always there): when the exec program cannot
 * be had, one line says what is missing, once per process. */
static void warn_no_exec_names(const char *what)
{
	static bool warned;

	if (warned)
		return;
	warned = true;
	fprintf(stderr, "portfence: warning: %s; records name programs from /proc/PID/exe or comm only\n", what);
}

/* The exec tracepoint attaches by name through the kernel's BTF; a
 * kernel whose BTF lacks it loads the other programs without it. */
static void choose_exec_program(struct pf_bpf_app *loaded)
{
	char what[256];
	int id = libbpf_find_vmlinux_btf_id("sched_process_exec", BPF_TRACE_RAW_TP);

	if (id >= 0)
		return;
	snprintf(what, sizeof(what), "no exec names: the kernel's BTF has no tracepoint sched_process_exec (%s)",
		 strerror(-id));
	warn_no_exec_names(what);
	bpf_program__set_autoload(loaded->skel->progs.pfb_exec, false);
}

/* Every exec is noted, so that a record drained after its process is
 * gone still names the program.  Pinned, one such program serves all
 * loads of the app. */
static void watch_execs(struct pf_bpf_app *loaded, bool pinned)
{
	char path[PATH_MAX + 64], what[PATH_MAX + 192];

	if (!bpf_program__autoload(loaded->skel->progs.pfb_exec))
		return;
	snprintf(path, sizeof(path), "%s/exec", loaded->pin_dir);
	if (pinned && access(path, F_OK) == 0)
		return;
	loaded->exec_link = bpf_program__attach(loaded->skel->progs.pfb_exec);
	if (!loaded->exec_link) {
		snprintf(what, sizeof(what), "no exec names: cannot attach tp_btf/sched_process_exec: %s",
			 strerror(errno));
		warn_no_exec_names(what);
		return;
	}
	if (pinned && bpf_link__pin(loaded->exec_link, path) < 0) {
		snprintf(what, sizeof(what), "exec names only while this command runs: cannot pin %s: %s", path,
			 strerror(errno));
		warn_no_exec_names(what);
	}
}

int pf_bpf_app_load(const struct pf_policy *policy, const struct pf_app *app, bool share_pinned,
		    struct pf_bpf_app **out, char *why, size_t len)
{
	return pf_bpf_app_load_shared(policy, app, share_pinned, NULL, out, why, len);
}

/* The app's id in the cgroup map, and the map itself when shared; the
 * birth programs only in the load that carries them. */
static int join_cgroup_map(struct pf_bpf_app *loaded, const struct pf_bpf_share *share)
{
	loaded->own_cgroups = !share;
	loaded->app_id = share ? share->app_id : 1;
	loaded->skel->rodata->pfb_app_id = loaded->app_id;
	bpf_program__set_autoload(loaded->skel->progs.pfb_cgroup_mkdir, share && share->births);
	bpf_program__set_autoload(loaded->skel->progs.pfb_cgroup_rmdir, share && share->births);
	if (share && share->cgroup_apps_fd >= 0)
		return bpf_map__reuse_fd(loaded->skel->maps.cgroup_apps, share->cgroup_apps_fd);
	return 0;
}

int pf_bpf_app_load_shared(const struct pf_policy *policy, const struct pf_app *app, bool share_pinned,
			   const struct pf_bpf_share *share, struct pf_bpf_app **out, char *why, size_t len)
{
	struct pf_bpf_app *loaded = calloc(1, sizeof(*loaded));
	int rc;

	*out = NULL;
	libbpf_set_print(keep_libbpf_message);
	if (loaded) {
		loaded->algorithm_name = pf_algorithm_name(app->algorithm);
		loaded->explainer = pf_explainer_new(policy, app);
	}
	if (!loaded || !(loaded->app_name = strdup(app->name))) {
		free(loaded);
		say(why, len, "out of memory");
		return -ENOMEM;
	}
	if (pf_pin_app_dir(PF_BPF_PIN_ROOT, app->name, loaded->pin_dir, sizeof(loaded->pin_dir)) < 0) {
		say(why, len, "app name '%s' is too long to pin", app->name);
		pf_bpf_app_free(loaded);
		return -ENAMETOOLONG;
	}
	if (share_pinned && (rc = pf_bpf_ensure_bpffs()) < 0) {
		say(why, len, "cannot mount bpffs at /sys/fs/bpf: %s", strerror(-rc));
		goto fail;
	}
	loaded->skel = portfence_bpf__open();
	if (!loaded->skel) {
		rc = -errno;
		say(why, len, "BPF refused: cannot open the programs: %s", strerror(errno));
		goto fail;
	}
	if ((rc = pf_bpf_size_rules(loaded, app, why, len)) < 0)
		goto fail;
	/* One slot per port of the range (bpf/maps.bpf.h); a pinned map of
	 * an earlier load keeps its own size, and a port past it falls back
	 * to the socket's state. */
	bpf_map__set_max_entries(loaded->skel->maps.port_slots, (uint32_t)app->range_hi - app->range_lo + 1);
	choose_exec_program(loaded);
	if ((rc = join_cgroup_map(loaded, share)) < 0) {
		say(why, len, "cannot share the cgroup map of app '%s': %s", app->name, strerror(-rc));
		goto fail;
	}
	if (share_pinned && (rc = replace_other_versions_maps(loaded, why, len)) < 0)
		goto fail;
	if (share_pinned && (rc = share_maps(loaded, &loaded->counters_shared)) < 0) {
		say(why, len, "cannot reuse the pinned maps of app '%s': %s", app->name, strerror(-rc));
		goto fail;
	}
	libbpf_last[0] = '\0';
	if ((rc = portfence_bpf__load(loaded->skel)) < 0) {
		say(why, len, "BPF refused: the kernel did not load the programs (%s)%s%s", strerror(-rc),
		    libbpf_last[0] ? ": " : "", libbpf_last);
		goto fail;
	}
	if ((rc = pf_bpf_app_configure(loaded, policy, app, why, len)) < 0)
		goto fail;
	if (share_pinned && (rc = pin_maps(loaded)) < 0) {
		say(why, len, "cannot pin the maps of app '%s' under %s: %s", app->name, PF_BPF_PIN_ROOT,
		    strerror(-rc));
		goto fail;
	}
	watch_execs(loaded, share_pinned);
	*out = loaded;
	return 0;
fail:
	pf_bpf_app_free(loaded);
	return rc < 0 ? rc : -EINVAL;
}

void pf_bpf_app_free(struct pf_bpf_app *loaded)
{
	if (!loaded)
		return;
	if (loaded->state_open) {
		pf_bpf_app_sync_counters(loaded);
		pf_state_close(&loaded->state);
	}
	if (loaded->ring)
		ring_buffer__free(loaded->ring);
	bpf_link__destroy(loaded->exec_link);
	for (int i = 0; i < 2; i++)
		bpf_link__destroy(loaded->birth_links[i]);
	portfence_bpf__destroy(loaded->skel);
	free(loaded->app_name);
	pf_explainer_free(loaded->explainer);
	free(loaded);
}
