/* portfence explain: which app applies to a program and why, its range
 * and algorithm, which backend reaches the program and why not the
 * other, and with --to the verdict the core gives (core/decide.c) and
 * the rule that decides it.  What is known of the program (its command,
 * or a running pid's /proc) is gathered by cli/explain_subject.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf_cli.h"
#include "cli.h"
#include "config/policy.h"
#include "config/rule_index.h"
#include "core/decide.h"
#include "kernel/pins.h"

#include "explain.h"

struct explanation {
	const struct pf_app *app;
	const char *selected_by;	/* "-a", "PORTFENCE_APP", "match", "default", "cgroup" */
	char why[3 * PATH_MAX];
	bool shim_reaches, bpf_reaches;
	char shim_why[PATH_MAX + 1024], bpf_why[PATH_MAX + 1024];
	const char *verdict;		/* --to */
	int error;
	char rule[512];
};

/* The app attached (pinned) to the process's cgroup or one above it. */
static const struct pf_app *attached_app(const struct pf_policy *policy, const struct subject *s, char *where,
					 size_t len)
{
	static const char *const roots[] = {PF_PIN_ROOT, PF_PIN_RUN_ROOT};
	char cgroup[PATH_MAX];

	pf_bpf_sweep_leftovers();	/* a dead daemon's or run's pins are no attachment */
	snprintf(cgroup, sizeof(cgroup), "%s", s->cgroup);
	for (;;) {
		char name[PATH_MAX], pin[PATH_MAX * 2];
		bool named = pf_pin_name_encode(cgroup, name, sizeof(name)) >= 0;
		for (size_t i = 0; i < policy->app_count && named; i++)
			for (size_t r = 0; r < 2; r++) {
				struct stat info;
				char app_dir[PATH_MAX];
				pf_pin_app_dir(roots[r], policy->apps[i].name, app_dir, sizeof(app_dir));
				snprintf(pin, sizeof(pin), "%s/%s", app_dir, name);
				if (stat(pin, &info) == 0) {
					snprintf(where, len, "%s", cgroup[0] ? cgroup : "/");
					return &policy->apps[i];
				}
			}
		char *slash = strrchr(cgroup, '/');
		if (!cgroup[0])
			return NULL;
		if (slash)
			*slash = '\0';
		else
			cgroup[0] = '\0';
	}
}

static void select_app(const struct pf_policy *policy, const struct subject *s, const char *named,
		       struct explanation *e)
{
	if (named) {
		e->app = &policy->apps[pf_policy_find_app(policy, named)];
		e->selected_by = "-a";
		snprintf(e->why, sizeof(e->why), "named with -a %s", named);
		return;
	}
	if (s->forced) {
		int index = pf_policy_find_app(policy, s->forced);
		e->app = index >= 0 ? &policy->apps[index] : NULL;
		e->selected_by = "PORTFENCE_APP";
		snprintf(e->why, sizeof(e->why), "PORTFENCE_APP=%s%s", s->forced,
			 index >= 0 ? "" : ", which the policy does not define: every managed call fails (on_error)");
		return;
	}
	struct pf_process_identity who = {.exe_path = s->exe[0] ? s->exe : NULL,
					  .comm = s->comm[0] ? s->comm : NULL,
					  .program_name = s->argv0};
	for (size_t i = 0; i < policy->app_count; i++) {
		int line = 0;
		const char *what, *glob = pf_app_match_why(&policy->apps[i], &who, &what, &line);
		if (!glob)
			continue;
		e->app = &policy->apps[i];
		e->selected_by = "match";
		snprintf(e->why, sizeof(e->why), "its %s %s matches the glob \"%s\" of app %s (%s:%d)", what,
			 strcmp(what, "exe") == 0 ? who.exe_path : strcmp(what, "comm") == 0 ? who.comm : who.program_name,
			 glob, e->app->name, e->app->file ? e->app->file : "", line ? line : e->app->line);
		return;
	}
	e->selected_by = "default";
	if (policy->default_app >= 0) {
		e->app = &policy->apps[policy->default_app];
		snprintf(e->why, sizeof(e->why), "no app's match holds it, and default = \"%s\"", e->app->name);
	} else {
		snprintf(e->why, sizeof(e->why),
			 "no app's match holds it, and default = \"pass\": it runs unconfined");
	}
}

static void judge_backends(const struct subject *s, bool have_program, const struct pf_policy *policy,
			   struct explanation *e)
{
	char why[512];
	const char *unavailable = bpf_cli_unavailable(why, sizeof(why));

	if (s->pid) {
		e->shim_reaches = s->has_shim;
		if (!s->environ_read)
			snprintf(e->shim_why, sizeof(e->shim_why), "%s", s->environ_error);
		else if (s->has_shim)
			snprintf(e->shim_why, sizeof(e->shim_why), "its LD_PRELOAD holds %s", SHIM_NAME);
		else
			snprintf(e->shim_why, sizeof(e->shim_why),
				 "it was not started with %s preloaded, and a running process cannot be given it",
				 SHIM_NAME);
		char where[PATH_MAX];
		const struct pf_app *attached = attached_app(policy, s, where, sizeof(where));
		e->bpf_reaches = attached != NULL;
		if (attached) {
			snprintf(e->bpf_why, sizeof(e->bpf_why), "its cgroup %s is attached as app %s", where,
				 attached->name);
			if (!e->shim_reaches) {
				e->app = attached;
				e->selected_by = "cgroup";
				snprintf(e->why, sizeof(e->why), "its cgroup %s is attached as app %s", where,
					 attached->name);
			}
		} else if (unavailable) {
			snprintf(e->bpf_why, sizeof(e->bpf_why), "%s", unavailable);
		} else {
			snprintf(e->bpf_why, sizeof(e->bpf_why),
				 "no app is attached to its cgroup /%s (portfence attach -a APP CGROUP would confine it)",
				 s->cgroup);
		}
		return;
	}
	const char *reason = have_program ? unreachable_reason(s->exe) : NULL;
	e->shim_reaches = reason == NULL;
	if (reason)
		snprintf(e->shim_why, sizeof(e->shim_why), "%s %s", s->exe, reason);
	else if (have_program)
		snprintf(e->shim_why, sizeof(e->shim_why), "it is dynamically linked: portfence run preloads %s",
			 SHIM_NAME);
	else
		snprintf(e->shim_why, sizeof(e->shim_why),
			 "portfence run preloads %s into dynamically linked programs "
			 "(not static, Go or setuid/setcap ones)", SHIM_NAME);
	e->bpf_reaches = false;
	if (unavailable)
		snprintf(e->bpf_why, sizeof(e->bpf_why), "%s", unavailable);
	else if (!e->app)
		snprintf(e->bpf_why, sizeof(e->bpf_why), "no app applies: run --bpf needs -a APP or a match");
	else if (e->app->algorithm == PF_ALGO_KERNEL)
		snprintf(e->bpf_why, sizeof(e->bpf_why),
			 "algorithm \"kernel\" needs IP_LOCAL_PORT_RANGE, which the BPF backend cannot set");
	else {
		e->bpf_reaches = true;
		snprintf(e->bpf_why, sizeof(e->bpf_why),
			 "portfence run --bpf (or attach) confines every process of a cgroup: "
			 "static, Go, raw system calls and io_uring too");
	}
}

/* ADDR:PORT, [ADDR]:PORT */
static int parse_destination(const char *text, struct sockaddr_storage *out, socklen_t *len)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *colon = strrchr(text, ':');
	char *end;

	if (!colon || colon == text)
		return -1;
	long port = strtol(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || port < 0 || port > 65535)
		return -1;
	size_t n = (size_t)(colon - text);
	if (text[0] == '[') {
		if (n < 2 || text[n - 1] != ']' || n - 2 >= sizeof(addr))
			return -1;
		memcpy(addr, text + 1, n - 2);
		addr[n - 2] = '\0';
	} else {
		if (n >= sizeof(addr))
			return -1;
		memcpy(addr, text, n);
		addr[n] = '\0';
	}
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *sin = (struct sockaddr_in *)out;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	if (text[0] != '[' && inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static const struct pf_rule *first_rule(const struct pf_rule_list *list, const struct sockaddr *dest,
					socklen_t len)
{
	struct pf_dest judged;
	if (pf_dest_for_rules(dest, len, &judged) < 0)
		return NULL;
	/* The rules see the destination as judged (mapped IPv4, the
	 * unspecified address as loopback): hand them that. */
	struct sockaddr_in6 as_judged = {.sin6_family = (sa_family_t)judged.family};
	struct sockaddr_in *v4 = (struct sockaddr_in *)&as_judged;
	if (judged.family == AF_INET) {
		v4->sin_port = htons(judged.port);
		memcpy(&v4->sin_addr, judged.addr, 4);
	} else {
		as_judged.sin6_port = htons(judged.port);
		memcpy(&as_judged.sin6_addr, judged.addr, 16);
	}
	for (size_t i = 0; i < list->count; i++)
		if (pf_rule_matches(&list->rules[i], (struct sockaddr *)&as_judged, sizeof(as_judged)))
			return &list->rules[i];
	return NULL;
}

/* The verdict is the core's (pf_decide, as the shim asks it for a
 * connect); the rule is the first of the deny list that matches, else
 * the first of the allow list. */
static void judge_destination(const struct pf_policy *policy, const char *to, struct explanation *e)
{
	struct sockaddr_storage dest;
	socklen_t len;
	parse_destination(to, &dest, &len);
	const struct pf_app *app = e->app;
	struct pf_question q = {.policy_usable = true, .app = app, .mode = app ? app->mode : PF_MODE_ENFORCE,
				.needs_port = true, .dest = (struct sockaddr *)&dest, .dest_len = len,
				.call = PF_CORE_CALL_CONNECT, .policy = policy};
	struct pf_decision d = pf_decide(&q);

	e->error = d.verdict == PF_VERDICT_REFUSE || d.verdict == PF_VERDICT_AUDIT ? d.error : 0;
	e->verdict = d.verdict == PF_VERDICT_PASS	 ? "pass"
		     : d.verdict == PF_VERDICT_REFUSE ? "deny"
		     : d.verdict == PF_VERDICT_AUDIT  ? "audit"
						      : "allow";
	if (!app) {
		snprintf(e->rule, sizeof(e->rule), "no app applies");
		return;
	}
	if (!(app->protocols & PF_PROTO_TCP)) {
		snprintf(e->rule, sizeof(e->rule), "the app's protocols leave TCP out");
		return;
	}
	const char *file = app->file ? app->file : "";
	const struct pf_rule *rule = first_rule(&app->deny, q.dest, len);
	if (rule) {
		snprintf(e->rule, sizeof(e->rule), "deny \"%s\" %s:%d", rule->text, file, rule->line);
	} else if ((rule = first_rule(&app->allow, q.dest, len))) {
		snprintf(e->rule, sizeof(e->rule), "allow \"%s\" %s:%d", rule->text, file, rule->line);
	} else if (app->has_allow) {
		snprintf(e->rule, sizeof(e->rule), "allow (no rule matches) %s:%d", file,
			 app->allow.count ? app->allow.rules[0].line : app->line);
	} else {
		snprintf(e->rule, sizeof(e->rule), "no allow or deny rule matches: every destination is permitted");
	}
}

static void print_json(const struct subject *s, const struct explanation *e, const char *to)
{
	json_t *root = json_object();
	json_object_set_new(root, "app", e->app ? json_string(e->app->name) : json_null());
	json_object_set_new(root, "selected_by", json_string(e->selected_by));
	json_object_set_new(root, "why", json_string(e->why));
	if (s->pid)
		json_object_set_new(root, "pid", json_integer(s->pid));
	if (s->exe[0])
		json_object_set_new(root, "exe", json_string(s->exe));
	if (e->app) {
		json_object_set_new(root, "range", json_pack("[i,i]", e->app->range_lo, e->app->range_hi));
		json_object_set_new(root, "algorithm", json_string(pf_algorithm_name(e->app->algorithm)));
		json_object_set_new(root, "mode", json_string(e->app->mode == PF_MODE_AUDIT ? "audit" : "enforce"));
	}
	json_object_set_new(root, "shim", json_pack("{s:b,s:s}", "reaches", e->shim_reaches, "why", e->shim_why));
	json_object_set_new(root, "bpf", json_pack("{s:b,s:s}", "reaches", e->bpf_reaches, "why", e->bpf_why));
	if (to) {
		json_object_set_new(root, "to", json_string(to));
		json_object_set_new(root, "verdict", json_string(e->verdict));
		if (e->error)
			json_object_set_new(root, "error", json_string(strerrorname_np(e->error)));
		json_object_set_new(root, "rule", json_string(e->rule));
	}
	json_dumpf(root, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(root);
}

/* exe, comm and the reasons that quote them come from the program:
 * escaped. */
static void print_text(const struct subject *s, const struct explanation *e, const char *to)
{
	static char a[4 * sizeof(e->why) + 1], b[4 * sizeof(e->why) + 1];

	if (s->pid)
		printf("process %d: %s (comm %s)\n", (int)s->pid, cli_escape(s->exe[0] ? s->exe : "?", a, sizeof(a)),
		       cli_escape(s->comm, b, sizeof(b)));
	else if (s->exe[0])
		printf("program: %s\n", cli_escape(s->exe, a, sizeof(a)));
	if (e->app) {
		printf("app: %s, because %s\n", e->app->name, cli_escape(e->why, a, sizeof(a)));
		printf("range: %u-%u (%u ports), algorithm %s, mode %s\n", e->app->range_lo, e->app->range_hi,
		       e->app->range_hi - e->app->range_lo + 1u, pf_algorithm_name(e->app->algorithm),
		       e->app->mode == PF_MODE_AUDIT ? "audit" : "enforce");
	} else {
		printf("app: none, because %s\n", cli_escape(e->why, a, sizeof(a)));
	}
	printf("shim: %s: %s\n", e->shim_reaches ? "reaches it" : "does not reach it",
	       cli_escape(e->shim_why, a, sizeof(a)));
	printf("bpf: %s: %s\n", e->bpf_reaches ? "reaches it" : "does not reach it",
	       cli_escape(e->bpf_why, a, sizeof(a)));
	if (to) {
		printf("to %s: %s", to, e->verdict);
		if (e->error)
			printf(" (%s%s)", e->verdict[0] == 'a' ? "enforce would fail with " : "",
			       strerrorname_np(e->error));
		printf(", %s\n", cli_escape(e->rule, a, sizeof(a)));
	}
}

/* SPEC writes --to and --json after COMMAND's arguments: taken from the
 * end of the line, so long as COMMAND itself remains.  The arguments'
 * count without them. */
static int take_trailing_options(int argc, char **argv, const char **to, bool *json)
{
	for (int end = argc; end > optind + 1;) {
		if (strcmp(argv[end - 1], "--json") == 0) {
			*json = true;
			end--;
		} else if (strncmp(argv[end - 1], "--to=", 5) == 0) {
			*to = argv[--end] + 5;
		} else if (end > optind + 2 && strcmp(argv[end - 2], "--to") == 0) {
			*to = argv[end - 1];
			end -= 2;
		} else {
			break;
		}
		argc = end;
	}
	return argc;
}

/* The subject (the app named, the process pid, or program), its app,
 * the backends and, with to, the verdict, printed: 0, -2 for a usage
 * error, or another failure (said). */
static int explain(const struct pf_policy *policy, const char *named, const char *pid, const char *program,
		   const char *to, bool json)
{
	struct subject s = {0};
	struct explanation e = {0};
	int rc = 0;

	if (pid)
		rc = explain_subject_of_pid(&s, pid);
	else if (program)
		rc = explain_subject_of_command(&s, program);
	if (rc != 0)
		return rc;
	select_app(policy, &s, named, &e);
	judge_backends(&s, program != NULL, policy, &e);
	if (to)
		judge_destination(policy, to, &e);
	if (json)
		print_json(&s, &e, to);
	else
		print_text(&s, &e, to);
	return 0;
}

int cmd_explain(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'}, {"app", required_argument, NULL, 'a'},
		{"pid", required_argument, NULL, 'P'},	  {"to", required_argument, NULL, 'T'},
		{"json", no_argument, NULL, 'j'},	  {0},
	};
	const char *config = NULL, *named = NULL, *pid = NULL, *to = NULL;
	bool json = false;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+c:a:", options)) != -1) {
		if (opt == 'c')
			config = optarg;
		else if (opt == 'a')
			named = optarg;
		else if (opt == 'P')
			pid = optarg;
		else if (opt == 'T')
			to = optarg;
		else if (opt == 'j')
			json = true;
	}
	argc = take_trailing_options(argc, argv, &to, &json);
	bool have_program = optind < argc;
	if (pid && (named || have_program))
		return usage_error("explain: --pid excludes -a and COMMAND");
	if (!pid && !named && !have_program)
		return usage_error("explain needs -a APP, --pid PID or -- COMMAND");
	struct sockaddr_storage dest;
	socklen_t dest_len;
	if (to && parse_destination(to, &dest, &dest_len) < 0)
		return usage_error("explain: --to takes ADDR:PORT ([ADDR]:PORT for IPv6)");

	const char *path = config ? config : cli_config_from_env();
	struct pf_policy policy;
	if (cli_load_policy(path, &policy) < 0)
		return 1;
	if (named && pf_policy_find_app(&policy, named) < 0) {
		cli_no_such_app(&policy, path, named, NULL);
		pf_policy_free(&policy);
		return 1;
	}
	int rc = explain(&policy, named, pid, have_program ? argv[optind] : NULL, to, json);
	pf_policy_free(&policy);
	return rc == 0 ? 0 : rc == -2 ? EXIT_USAGE : 1;
}
