/* The policy model: what a portfence policy file says, once parsed and
 * validated.  Plain C, no interposition: the shim, the tool and the unit
 * tests all link this. */
#ifndef PORTFENCE_POLICY_H
#define PORTFENCE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/constants.h"

#define PF_DEFAULT_CONFIG "/etc/portfence.conf"

/* The numbers are the core's, which the BPF programs share. */
enum pf_algorithm {
	PF_ALGO_SEQUENTIAL = PF_CORE_ALGO_SEQUENTIAL,
	PF_ALGO_RANDOM = PF_CORE_ALGO_RANDOM,
	PF_ALGO_RANDOM_REDRAW = PF_CORE_ALGO_RANDOM_REDRAW,
	PF_ALGO_HASH = PF_CORE_ALGO_HASH,
	PF_ALGO_DOUBLE_HASH = PF_CORE_ALGO_DOUBLE_HASH,
	PF_ALGO_RANDOM_INCREMENTS = PF_CORE_ALGO_RANDOM_INCREMENTS,
	PF_ALGO_KERNEL = PF_CORE_ALGO_KERNEL,
	PF_ALGO_COUNT = PF_CORE_ALGO_COUNT
};

enum pf_mode { PF_MODE_ENFORCE, PF_MODE_AUDIT };

#define PF_PROTO_TCP PF_CORE_PROTO_TCP
#define PF_PROTO_UDP PF_CORE_PROTO_UDP

/* One destination rule: CIDR with an optional port range (1..65535 when
 * the rule names no port). */
struct pf_rule {
	sa_family_t family;
	uint8_t prefix;
	uint16_t port_lo, port_hi;
	uint8_t addr[16];
	int line;		/* in the policy file; 0 when not read from one */
};

struct pf_rule_list {
	struct pf_rule *rules;
	size_t count;
};

struct pf_glob_list {
	char **globs;
	size_t count;
};

struct pf_rule_index;

struct pf_app {
	char *name;
	struct pf_glob_list exe_globs;
	struct pf_glob_list comm_globs;
	uint16_t range_lo, range_hi;
	enum pf_algorithm algorithm;
	unsigned protocols;
	enum pf_mode mode;
	bool deny_explicit_bind;
	bool has_allow;
	/* BPF backend: cgroups `portfence daemon` attaches to, and what an
	 * unconnected UDP send on an unbound socket gets (it cannot be
	 * given a range port there). */
	struct pf_glob_list cgroups;
	bool udp_unbound_audit;
	struct pf_rule_list allow;
	struct pf_rule_list deny;
	/* allow and deny compiled into prefix tries (pf_app_index_rules);
	 * NULL: the lists are scanned one rule at a time. */
	struct pf_rule_index *rule_index;
	/* Where the app was defined, for diagnostics. */
	const char *file;
	int line, name_line, range_line, algorithm_line, cgroups_line;
};

struct pf_policy {
	char *log_file;		/* NULL: no audit log */
	bool log_syslog;
	bool on_error_pass;
	char *state_dir;	/* NULL: the default (pf_state_default_dir) */
	int default_app;	/* index into apps, or -1 for "pass" */
	struct pf_app *apps;
	size_t app_count;
	/* Indices of apps sorted by name, then position (pf_policy_index_names);
	 * NULL: pf_policy_find_app scans. */
	size_t *by_name;
	/* Indices of apps sorted by range_lo (pf_policy_index_ranges). */
	size_t *by_range;
	/* Every file name the policy was read from; apps point into it. */
	char **files;
	size_t file_count;
};

/* Diagnostics in "FILE:LINE: message" form, one per error. */
struct pf_diags {
	char **lines;
	size_t count;
};

enum pf_load_status {
	PF_LOAD_OK = 0,
	PF_LOAD_INVALID,	/* parsed, but invalid: on_error_pass is meaningful */
	PF_LOAD_UNREADABLE,	/* could not be read or parsed: on_error is deny */
};

/* Load a policy file, or a directory whose *.conf files are read in name
 * order.  Errors are appended to diags (which may be NULL). */
enum pf_load_status pf_policy_load(const char *path, struct pf_policy *policy,
				   struct pf_diags *diags);
/* The same, from text in memory; name stands for the file in messages. */
enum pf_load_status pf_policy_load_text(const char *name, const char *text,
					struct pf_policy *policy, struct pf_diags *diags);
void pf_policy_free(struct pf_policy *policy);

void pf_diags_add(struct pf_diags *diags, const char *file, int line,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pf_diags_free(struct pf_diags *diags);

const char *pf_algorithm_name(enum pf_algorithm algorithm);
int pf_algorithm_from_name(const char *name, enum pf_algorithm *algorithm);

/* Destination rules. */
int pf_rule_parse(const char *text, struct pf_rule *rule, const char **why);
bool pf_rule_matches(const struct pf_rule *rule, const struct sockaddr *dest,
		     socklen_t dest_len);
/* deny wins; with an allow list, only what it allows passes.  An
 * IPv4-mapped destination is judged as IPv4, an unspecified one (0.0.0.0,
 * ::, ::ffff:0.0.0.0) as the loopback address the kernel sends it to.
 * pf_rule_matches judges the address as given. */
bool pf_app_permits(const struct pf_app *app, const struct sockaddr *dest,
		    socklen_t dest_len);
/* The same judgement, one rule at a time whatever rule_index holds: the
 * reference the tries are tested against. */
bool pf_app_permits_linear(const struct pf_app *app, const struct sockaddr *dest,
			   socklen_t dest_len);
/* Compiles app->allow and app->deny into app->rule_index, so that a
 * judgement costs O(prefix length) whatever the number of rules.
 * Returns 0, or -1 (out of memory; the app keeps the linear scan). */
int pf_app_index_rules(struct pf_app *app);
void pf_app_free_rule_index(struct pf_app *app);

/* App selection for a process. */
#define PF_SELECT_PASS (-1)
#define PF_SELECT_UNKNOWN_APP (-2)
struct pf_process_identity {
	const char *forced_app;	/* PORTFENCE_APP, or NULL */
	const char *exe_path;	/* realpath of /proc/self/exe, or NULL */
	const char *comm;	/* the kernel's comm, or NULL */
	const char *program_name; /* basename of argv[0], or NULL */
};
int pf_policy_select(const struct pf_policy *policy,
		     const struct pf_process_identity *who);
/* The first app with that name, or PF_SELECT_UNKNOWN_APP. */
int pf_policy_find_app(const struct pf_policy *policy, const char *name);
/* Builds policy->by_name (the loader does); 0, or -1 when out of memory. */
int pf_policy_index_names(struct pf_policy *policy);
/* Builds policy->by_range (the loader does); 0, or -1 when out of memory. */
int pf_policy_index_ranges(struct pf_policy *policy);
/* The app whose range holds port, or -1: a binary search when the ranges
 * are indexed, else a scan. */
int pf_policy_app_at_port(const struct pf_policy *policy, uint16_t port);

#endif
