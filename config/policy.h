/* The policy model: what a portfence policy file says, once parsed and
 * validated.  Plain C, no interposition: the shim, the tool and the unit
 * tests all link this. */
#ifndef PORTFENCE_POLICY_H
#define PORTFENCE_POLICY_H

#include <stdarg.h>
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
	/* As the policy wrote it, and its line (0: not from a file), for
	 * the deny record's "rule" and the notices. */
	int line;
	char text[64];
};

/* Ports an app may bind explicitly (bind_allow). */
struct pf_bind_ports {
	uint16_t lo, hi;
};

struct pf_rule_list {
	struct pf_rule *rules;
	size_t count;
};

struct pf_glob_list {
	char **globs;
	int *lines; /* each glob's line in its app's file */
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
	/* bind_allow: ports the app may bind even with explicit_bind "deny". */
	struct pf_bind_ports *bind_allow;
	size_t bind_allow_count;
	/* notify = "stderr": one line on the program's stderr when portfence
	 * acts (a deny, an exhausted range). */
	bool notify_stderr;
	/* allow and deny compiled into prefix tries (pf_app_index_rules);
	 * NULL: the lists are scanned one rule at a time. */
	struct pf_rule_index *rule_index;
	/* Where the app was defined, for diagnostics. */
	const char *file;
	int line, name_line, range_line, algorithm_line, cgroups_line;
	int explicit_bind_line, allow_line, udp_unbound_line;
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
void pf_diags_vadd(struct pf_diags *diags, const char *file, int line,
		   const char *fmt, va_list args) __attribute__((format(printf, 4, 0)));
void pf_diags_free(struct pf_diags *diags);

/* Says one error at FILE:LINE: the loader into its diags, `check` on
 * stderr. */
typedef void pf_say_fn(void *opaque, const char *file, int line, const char *fmt, va_list args);
/* Each pair of two apps' cgroup globs that can match one cgroup, said
 * once at the later app's `cgroups` line; how many.  mount NULL: the
 * globs as written (the loader, which reads no mount).  Else the pairs
 * the daemon matches otherwise: one glob at least written under mount,
 * each compared with the mount taken off (pf_cgroup_under_mount). */
size_t pf_policy_cgroup_overlaps(const struct pf_policy *policy, const char *mount, pf_say_fn *say,
				 void *opaque);

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
/* Why the rules refuse dest: the deny rule that matches ("deny
 * \"10.0.0.0/8\" FILE:LINE"), or the allow list that none matches
 * ("allow (no rule matches) FILE:LINE"), into out; "" when they permit
 * it.  The slow path, for records and notices. */
void pf_app_refusal_rule(const struct pf_app *app, const struct sockaddr *dest,
			 socklen_t dest_len, char *out, size_t out_len);
/* What refuses an explicit bind to port: another app's range (policy
 * may be NULL: then unknown), or explicit_bind = "deny", with FILE:LINE. */
void pf_app_bind_rule(const struct pf_policy *policy, const struct pf_app *app, uint16_t port,
		      char *out, size_t out_len);
/* An exhausted range's reason: "no free port in range LO-HI of app 'NAME' (FILE:LINE)". */
void pf_app_exhaustion_reason(const struct pf_app *app, char *out, size_t out_len);
/* What a record of app says why: a deny (or an audit record of what
 * enforce would deny: error != 0) of a bind (EACCES, local_port != 0)
 * names pf_app_bind_rule, of a destination (remote != NULL) the
 * pf_app_refusal_rule; an error record (event PF_CORE_EVENT_ERROR) gets
 * pf_app_exhaustion_reason when error says the range is exhausted
 * (EADDRNOTAVAIL, EAGAIN, EADDRINUSE), else "cannot give a port of range
 * LO-HI: ERRNO"; an assign or error record of an errno no BPF hook saw
 * (PF_CORE_ERROR_UNSEEN) says that the call failed after port local_port
 * was given, and a bind record of one that the kernel refused the
 * bind of local_port.  The text goes to out; the answer says whether it is
 * the record's rule, its reason, or nothing ("" in out). */
enum pf_explanation { PF_EXPLAINS_NOTHING, PF_EXPLAINS_RULE, PF_EXPLAINS_REASON };
enum pf_explanation pf_app_explain(const struct pf_policy *policy, const struct pf_app *app, int event, int error,
				   uint16_t local_port, const struct sockaddr *remote, char *out, size_t out_len);
/* What explains one app's records, outliving its policy (the BPF record
 * writer keeps one): a policy of copies, with the app's name, file,
 * range, rules and their lines, and every other app's name, file and
 * range, so that a bind into another app's range names that range as the
 * shim's record does.  pf_app_explain(&e->policy, e->app, ...).  NULL
 * when out of memory; free with pf_explainer_free. */
struct pf_explainer {
	struct pf_policy policy;
	struct pf_app *app;	/* in policy.apps */
};
struct pf_explainer *pf_explainer_new(const struct pf_policy *policy, const struct pf_app *app);
void pf_explainer_free(struct pf_explainer *e);
/* Whether bind_allow lists port. */
bool pf_app_bind_allows(const struct pf_app *app, uint16_t port);
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
/* The glob of app that matches who (its exe, else its comm or argv[0]'s
 * basename against the comm globs), naming what it matched ("exe",
 * "comm", "argv[0]") in *subject and, if line is not NULL, the glob's
 * line in *line; NULL when none does. */
const char *pf_app_match_why(const struct pf_app *app, const struct pf_process_identity *who,
			     const char **subject, int *line);
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
