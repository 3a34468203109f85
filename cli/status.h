/* portfence status: what the kernel's socket tables hold in each app's
 * range now.  status.c gathers, status_procs.c finds the processes
 * holding the sockets, status_print.c prints. */
#ifndef PORTFENCE_STATUS_H
#define PORTFENCE_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/policy.h"
#include "kernel/sockdiag.h"

enum status_state { STATE_ESTABLISHED, STATE_TIME_WAIT, STATE_LISTEN, STATE_OTHER, STATE_COUNT };
extern const char *const status_state_names[STATE_COUNT];

#define TOP_PROCESSES 5

struct top_process {
	pid_t pid;
	char comm[64];
	char cgroup[256];	/* its cgroup v2 path ("/system.slice/x.service"); "" unknown */
	unsigned long ports;	/* sockets of the range it holds */
};

struct app_status {
	const struct pf_app *app;
	/* Sockets of the range held by processes outside the app (pid,
	 * comm, sockets), most first, and how many in all. */
	struct top_process intruders[TOP_PROCESSES];
	size_t intruder_count;
	unsigned long intruder_sockets;
	unsigned long by_state[STATE_COUNT];
	/* The app's sockets: those its processes hold in its range (any
	 * port for an audit-mode app), and the range's sockets no process
	 * holds (TIME_WAIT, orphans) or whose holder could not be read. */
	unsigned long in_use;
	unsigned distinct_ports;	/* ports of the range held by any socket */
	unsigned long destinations;	/* distinct remote ADDR:PORT */
	struct top_process top[TOP_PROCESSES];
	size_t top_count;
	char **cgroups;			/* attached (BPF backend), sorted */
	size_t cgroup_count, cgroup_cap;	/* the array's entries, its room */
	long long records_lost;		/* by the BPF programs of its pins; < 0: unknown */
	/* From the app's shared state (the shim's processes): ports given
	 * and calls that found none free; counters_known false: unreadable. */
	unsigned long long assignments, failures;
	bool counters_known;
};

/* Entries by fixed 24-byte keys (a glib hash table), never shrinking. */
struct key_entry {
	uint8_t key[24];
};
struct key_table {
	struct _GHashTable *entries;	/* key -> struct key_entry; NULL: empty */
};
/* The entry of key, created (zeroed, used) when new; NULL when out of
 * memory.  *created tells which. */
struct key_entry *key_table_put(struct key_table *table, const uint8_t key[24], bool *created);
void key_table_free(struct key_table *table);

/* Socket inode -> index into status->sockets, by open addressing in two
 * arrays (no allocation per socket: --watch fills it each second). */
struct inode_index {
	uint32_t *inodes;	/* 0: an empty slot */
	uint32_t *sockets;
	size_t mask, count;
};
/* The socket of inode (never 0), or -1. */
long inode_index_get(const struct inode_index *index, uint32_t inode);

struct status {
	struct app_status *apps;
	size_t app_count;
	int *status_of_policy_app;	/* policy app index -> apps index, or -1 */
	struct inode_index inodes;	/* socket inode -> socket */
	struct key_table destinations;	/* app + remote endpoint */
	/* Every socket the dump found (those with an inode), whether it was
	 * already counted for an app or as an intruder, and the last process
	 * counted for it. */
	struct pf_socket_entry *sockets;
	bool *claimed;
	pid_t *last_pid;
	size_t socket_count, socket_cap;
	const struct pf_policy *policy;
	/* Local ports some TCP socket listens on: an audit-mode app's
	 * sockets on these (listeners, accepted) are not its clients'. */
	uint8_t listening[65536 / 8];
	/* What could not be read (not root): processes. */
	unsigned long unreadable;
	/* Each port's state now (enum port_state), for --watch. */
	uint8_t port_state[65536];
	/* --watch: a full pass over /proc fills cache; with use_cache the
	 * processes and what they held come from it instead */
	struct proc_cache *cache;
	bool use_cache;
	/* quiet (--watch): the last warning is kept, not printed */
	bool quiet;
	char warning[256];
};

struct proc_cache {
	struct proc_cache_entry *entries;
	size_t count, cap;
	unsigned long unreadable;
	/* Sockets of the last refresh from the cache that no cached process
	 * held: new since the full pass (or held by unreadable processes). */
	unsigned long unknown;
};
void status_cache_free(struct proc_cache *cache);

/* A port's state in --watch's map, the strongest of its sockets'. */
enum port_state { PORT_FREE, PORT_OTHER, PORT_LISTEN, PORT_TIME_WAIT, PORT_ESTABLISHED, PORT_INTRUDER };

/* Selects the policy's apps (only: that one) and gathers what the
 * kernel holds; 0, or 1 after saying why. */
int status_gather(struct status *status, const struct pf_policy *policy, const char *only, const char *path);
void status_free(struct status *status);
/* A warning on stderr, or kept in status->warning when quiet. */
void status_warn(struct status *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* status --watch: a live view until q; the exit status. */
int status_watch(const char *path, const char *only);

/* Counts entry as one of app's sockets (apps index). */
void status_count_socket(struct status *status, int app, const struct pf_socket_entry *entry);
/* The status index of the app whose range holds port, or -1. */
int status_app_at_port(const struct status *status, uint16_t port);

/* One pass over every process's fds: each process's sockets go to its
 * app (top processes), or as intruders to the app whose range they are
 * in.  Returns 0 or -1 (/proc unreadable). */
int status_find_processes(struct status *status);
/* The decoded names under PF_PIN_ROOT/APP, sorted (none when absent). */
void status_read_cgroups(struct app_status *app, const char *pin_root);

void status_print_text(const struct status *status);
int status_print_json(const struct status *status);
void status_print_prometheus(const struct status *status);
/* s with every byte of an invalid UTF-8 text replaced by '?': JSON and
 * Prometheus labels take UTF-8 only. */
const char *status_utf8(const char *s, char *buf, size_t buf_len);

#endif
