/* portfence report: summarise an audit log in one streaming pass.  Memory
 * grows with the number of apps, never with the length of the log.
 *
 * About 560 lines, on purpose: the per-app summary, its destinations and
 * its denials are filled by one pass over each line and printed from one
 * struct, in text and in JSON; the parts that stand alone already live
 * apart (logline.c reads the lines, suggest.c is --suggest and --against,
 * timearg.c the TIME forms). */
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "config/policy.h"

#include "logline.h"
#include "report.h"

static struct app_stats *stats_for(struct report *rep, const char *name)
{
	size_t index = GPOINTER_TO_SIZE(g_hash_table_lookup(rep->by_name, name));

	if (index)
		return &rep->apps[index - 1];
	if (rep->app_count == rep->app_cap) {
		size_t cap = rep->app_cap ? rep->app_cap * 2 : 16;
		struct app_stats *grown = realloc(rep->apps, cap * sizeof(*grown));
		if (!grown)
			return NULL;
		rep->apps = grown;
		rep->app_cap = cap;
	}
	struct app_stats *app = &rep->apps[rep->app_count];
	memset(app, 0, sizeof(*app));
	if (!(app->name = strdup(name)))
		return NULL;
	g_hash_table_insert(rep->by_name, app->name, GSIZE_TO_POINTER(++rep->app_count));
	return app;
}

/* "127.0.0.1:61023" or "[::1]:61023" */
static int port_of(const char *address)
{
	const char *colon = address ? strrchr(address, ':') : NULL;
	char *end;

	if (!colon)
		return -1;
	long port = strtol(colon + 1, &end, 10);
	return *end == '\0' && port > 0 && port <= 65535 ? (int)port : -1;
}

static void count_port(struct app_stats *app, int port)
{
	if (port < 0)
		return;
	if (!app->port_uses)
		app->port_uses = g_hash_table_new(g_direct_hash, g_direct_equal);
	gpointer key = GUINT_TO_POINTER((unsigned)port);
	unsigned uses = GPOINTER_TO_UINT(g_hash_table_lookup(app->port_uses, key));
	if (uses == 0)
		app->distinct_ports++;
	g_hash_table_insert(app->port_uses, key, GUINT_TO_POINTER(uses + 1));
}

static void copy_ts(char out[32], const char *ts)
{
	snprintf(out, 32, "%s", ts);
}

static struct dest_stats *dest_for(struct report *rep, struct app_stats *app, enum dest_kind kind,
				   const char *remote)
{
	char buf[256], *key = buf;
	size_t index = (size_t)(app - rep->apps), len = strlen(remote), at = sizeof(buf) - 1;

	if (len > 200)
		return NULL;
	/* "INDEX KIND REMOTE", the index written backwards from a mark */
	char digits[24];
	size_t n = 0;
	do
		digits[n++] = (char)('0' + index % 10);
	while ((index /= 10));
	for (at = 0; n; at++)
		buf[at] = digits[--n];
	buf[at++] = ' ';
	buf[at++] = (char)('0' + kind);
	buf[at++] = ' ';
	memcpy(buf + at, remote, len + 1);
	struct dest_stats *dest = g_hash_table_lookup(rep->dests, key);

	if (dest || g_hash_table_size(rep->dests) >= MAX_DESTINATIONS) {
		if (!dest)
			app->untracked[kind]++;
		return dest;
	}
	key = g_strdup(buf);
	dest = g_new0(struct dest_stats, 1);
	dest->key = key;
	dest->remote = strchr(strchr(key, ' ') + 1, ' ') + 1;
	dest->id = ++rep->dest_ids;
	dest->next = app->dests[kind];
	app->dests[kind] = dest;
	app->dest_count[kind]++;
	g_hash_table_insert(rep->dests, key, dest);
	return dest;
}

static void count_destination(struct report *rep, struct app_stats *app, enum dest_kind kind,
			      const struct log_record *record, const char *ts)
{
	const char *remote = record->remote;
	int port = port_of(record->local);

	if (!remote || port_of(remote) < 0)
		return;
	struct dest_stats *dest = dest_for(rep, app, kind, remote);
	if (!dest)
		return;
	if (!dest->count++)
		copy_ts(dest->first, ts);
	copy_ts(dest->last, ts);
	const char *rule = record->rule;
	if (rule && !dest->rule)
		dest->rule = strdup(rule);
	if (kind != DEST_DENIED) {
		if (strncmp(dest->minute, ts, 16) != 0) {
			snprintf(dest->minute, sizeof(dest->minute), "%.16s", ts);
			dest->minute_count = 0;
		}
		if (++dest->minute_count > dest->peak_minute)
			dest->peak_minute = dest->minute_count;
	}
	if (kind == DEST_USED && port > 0 && g_hash_table_size(rep->dest_ports) < MAX_DEST_PORTS) {
		gpointer pair = GSIZE_TO_POINTER((gsize)dest->id << 16 | (gsize)port);
		if (g_hash_table_add(rep->dest_ports, pair))
			dest->ports++;
	}
}

/* --against: the programs an app's records name, to select again. */
static void remember_program(struct app_stats *app, const struct log_record *record)
{
	const char *exe = record->exe, *comm = record->comm;

	if (!exe && !comm)
		return;
	if (!app->programs)
		app->programs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	if (g_hash_table_size(app->programs) < MAX_PROGRAMS &&
	    !g_hash_table_contains(app->programs, exe ? exe : comm))
		g_hash_table_insert(app->programs, g_strdup(exe ? exe : comm), g_strdup(comm ? comm : ""));
}

static bool refusable(const char *result)
{
	return result && (strcmp(result, "EPERM") == 0 || strcmp(result, "EACCES") == 0);
}

static void count_event(struct report *rep, struct app_stats *app, const char *event,
			const struct log_record *record, const char *ts)
{

	if (strcmp(event, "assign") == 0) {
		app->assignments++;
		count_destination(rep, app, DEST_USED, record, ts);
		count_port(app, port_of(record->local));
		if (record->has_attempts && record->attempts >= 0) {
			unsigned long tries = (unsigned long)record->attempts;
			app->attempts_sum += tries;
			if (tries > app->attempts_max)
				app->attempts_max = tries;
		}
	} else if (strcmp(event, "deny") == 0) {
		app->denials++;
		count_destination(rep, app, DEST_DENIED, record, ts);
	} else if (strcmp(event, "error") == 0) {
		app->errors++;
		if (record->has_lost && record->lost > 0)
			app->lost += (unsigned long long)record->lost;
	} else if (strcmp(event, "audit") == 0) {
		const char *result = record->result;
		app->audits++;
		app->audits_refusable += refusable(result);
		count_destination(rep, app, refusable(result) ? DEST_WOULD_DENY : DEST_USED, record, ts);
	}
}

static void take_line(struct report *rep, char *line)
{
	struct log_record record;

	if (!log_record_read(line, &record) || !record.app || !record.event || !record.ts) {
		rep->malformed++;
		if (record.tree)
			log_record_done(&record);
		return;
	}
	const char *app_name = record.app, *event = record.event, *ts = record.ts;
	if ((!rep->only_app || strcmp(rep->only_app, app_name) == 0) &&
	    (!rep->since[0] || cli_time_cmp(ts, rep->since) >= 0) &&
	    (!rep->until[0] || cli_time_cmp(ts, rep->until) < 0)) {
		struct app_stats *app = stats_for(rep, app_name);
		if (app) {
			if (!app->first_ts[0])
				snprintf(app->first_ts, sizeof(app->first_ts), "%s", ts);
			snprintf(app->last_ts, sizeof(app->last_ts), "%s", ts);
			count_event(rep, app, event, &record, ts);
			if (rep->track_programs)
				remember_program(app, &record);
		}
	}
	log_record_done(&record);
}

/* One line of the log: a line holding a NUL byte, or longer than the
 * buffer, is malformed by itself and never takes its neighbours along. */
static void end_line(struct report *rep, char *line, size_t len, bool damaged)
{
	line[len] = '\0';
	if (damaged)
		rep->malformed++;
	else if (len > 0)
		take_line(rep, line);
}

/* Reads line by line with a fixed buffer, so memory never grows with a
 * line's length; an overlong line is skipped whole and counted. */
static void read_log(struct report *rep, FILE *log)
{
	static char line[MAX_LINE];
	size_t len = 0;
	bool damaged = false;
	int c;

	while ((c = getc_unlocked(log)) != EOF) {
		if (c == '\n') {
			end_line(rep, line, len, damaged);
			len = 0;
			damaged = false;
		} else if (c == '\0' || len == MAX_LINE - 1) {
			damaged = true;
		} else {
			line[len++] = (char)c;
		}
	}
	if (len > 0 || damaged)
		end_line(rep, line, len, damaged);
}

/* The ranges, and the rule that refuses each denied destination whose
 * record named none, from the policy (cli_load_optional_policy).  No
 * policy, no range: it is never guessed from the ports seen. */
static void apply_policy(struct report *rep, const struct pf_policy *policy)
{
	for (size_t i = 0; i < rep->app_count; i++) {
		struct app_stats *app = &rep->apps[i];
		int index = pf_policy_find_app(policy, app->name);
		if (index < 0)
			continue;
		app->range_lo = policy->apps[index].range_lo;
		app->range_hi = policy->apps[index].range_hi;
		for (int kind = DEST_DENIED; kind < DEST_KINDS; kind++)
			for (struct dest_stats *d = app->dests[kind]; d; d = d->next) {
				char rule[512];
				if (!d->rule && cli_refusing_rule(&policy->apps[index], d->remote, rule, sizeof(rule)))
					d->rule = strdup(rule);
			}
	}
}

static int by_count(const void *a, const void *b)
{
	const struct dest_stats *x = *(struct dest_stats *const *)a, *y = *(struct dest_stats *const *)b;
	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return strcmp(x->remote, y->remote);
}

struct dest_stats **report_top_dests(const struct app_stats *app, enum dest_kind kind, size_t limit,
				     size_t *count)
{
	size_t n = 0;
	for (struct dest_stats *d = app->dests[kind]; d; d = d->next)
		n++;
	struct dest_stats **all = g_new(struct dest_stats *, n + 1);
	n = 0;
	for (struct dest_stats *d = app->dests[kind]; d; d = d->next)
		all[n++] = d;
	qsort(all, n, sizeof(*all), by_count);
	*count = n < limit ? n : limit;
	return all;
}

static void print_histogram(const struct app_stats *app, unsigned lo, unsigned hi)
{
	unsigned span = hi - lo + 1, bins = span < HISTOGRAM_BINS ? span : HISTOGRAM_BINS;
	unsigned long counts[HISTOGRAM_BINS] = {0}, peak = 0;
	static const char *const bars[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};

	GHashTableIter iter;
	gpointer key, uses;

	if (app->port_uses)
		g_hash_table_iter_init(&iter, app->port_uses);
	while (app->port_uses && g_hash_table_iter_next(&iter, &key, &uses)) {
		unsigned port = GPOINTER_TO_UINT(key);
		if (port < lo || port > hi)
			continue;
		unsigned bin = (unsigned)((unsigned long)(port - lo) * bins / span);
		counts[bin] += GPOINTER_TO_UINT(uses);
	}
	for (unsigned b = 0; b < bins; b++)
		if (counts[b] > peak)
			peak = counts[b];
	printf("  ports %u |", lo);
	for (unsigned b = 0; b < bins; b++)
		fputs(bars[peak ? (counts[b] * 8 + peak - 1) / peak : 0], stdout);
	printf("| %u  (each column %u port%s, peak %lu uses)\n", hi, (span + bins - 1) / bins,
	       (span + bins - 1) / bins == 1 ? "" : "s", peak);
}

static const char *const kind_titles[DEST_KINDS] = {"destinations", "denied", "enforce would deny"};

static void print_name(const char *name);

static void print_dests_text(const struct app_stats *app, enum dest_kind kind)
{
	size_t shown;
	struct dest_stats **top = report_top_dests(app, kind, TOP_DESTINATIONS, &shown);

	if (app->dest_count[kind] || kind == DEST_USED) {
		printf("  %s %lu", kind_titles[kind], app->dest_count[kind]);
		if (app->dest_count[kind] > shown)
			printf(" (top %zu)", shown);
		if (app->untracked[kind])
			printf(" (+%lu records of destinations not tracked)", app->untracked[kind]);
		printf("%s\n", shown ? ":" : "");
	}
	for (size_t i = 0; i < shown; i++) {
		fputs("    ", stdout);
		print_name(top[i]->remote);
		printf("  count %lu", top[i]->count);
		if (kind == DEST_USED)
			printf(", ports %u, first %s, last %s", top[i]->ports, top[i]->first, top[i]->last);
		else
		{
			printf(", last %s, rule ", top[i]->last);
			print_name(top[i]->rule ? top[i]->rule : "unknown (no policy)");
		}
		putchar('\n');
	}
	g_free(top);
}

/* The fraction of the range's ports the log shows used at least once.
 * Not "utilisation", which status gives for the ports held now. */
static double coverage(const struct app_stats *app)
{
	return (double)app->distinct_ports / (app->range_hi - app->range_lo + 1);
}

/* A name or a time from the log, as text. */
static void print_name(const char *name)
{
	static char escaped[4 * MAX_LINE + 1];
	fputs(cli_escape(name, escaped, sizeof(escaped)), stdout);
}

/* A report with no app in it says why there is nothing to show. */
static void print_nothing(const struct report *rep)
{
	fputs("no records", stdout);
	if (rep->only_app) {
		fputs(" of app ", stdout);
		print_name(rep->only_app);
	}
	if (rep->since[0])
		printf(" since %sZ", rep->since);
	if (rep->until[0])
		printf(" until %sZ", rep->until);
	printf(" in %s\n", strcmp(rep->log_path, "-") == 0 ? "the standard input" : rep->log_path);
}

static void print_text(const struct report *rep)
{
	if (rep->app_count == 0)
		print_nothing(rep);
	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		fputs("app ", stdout);
		print_name(app->name);
		putchar('\n');
		printf("  assignments %lu, distinct ports %u", app->assignments, app->distinct_ports);
		if (app->range_lo)
			printf(" of %u (range %u-%u): coverage %.1f%%", app->range_hi - app->range_lo + 1,
			       app->range_lo, app->range_hi, 100.0 * coverage(app));
		else
			printf(" (range unknown: no policy names this app)");
		printf("\n  denials %lu, errors %lu, records lost %llu, audit records %lu (enforce would have refused %lu)\n",
		       app->denials, app->errors, app->lost, app->audits, app->audits_refusable);
		printf("  attempts mean %.2f, max %lu\n",
		       app->assignments ? (double)app->attempts_sum / app->assignments : 0.0,
		       app->attempts_max);
		fputs("  first ", stdout);
		print_name(app->first_ts);
		fputs(", last ", stdout);
		print_name(app->last_ts);
		putchar('\n');
		for (int kind = 0; kind < DEST_KINDS; kind++)
			print_dests_text(app, kind);
		if (app->distinct_ports && app->range_lo)
			print_histogram(app, app->range_lo, app->range_hi);
	}
	printf("malformed lines skipped: %lu\n", rep->malformed);
}

static json_t *dests_json(const struct app_stats *app, enum dest_kind kind)
{
	size_t shown;
	struct dest_stats **top = report_top_dests(app, kind, kind == DEST_USED ? TOP_DESTINATIONS : SIZE_MAX, &shown);
	json_t *list = json_array();

	for (size_t i = 0; i < shown; i++) {
		json_t *entry;
		if (kind == DEST_USED)
			entry = json_pack("{s:s, s:I, s:i, s:s, s:s}", "remote", top[i]->remote, "count",
					  (json_int_t)top[i]->count, "ports", (int)top[i]->ports, "first",
					  top[i]->first, "last", top[i]->last);
		else
			entry = json_pack("{s:s, s:I, s:s, s:s, s:o, s:b}", "remote", top[i]->remote, "count",
					  (json_int_t)top[i]->count, "first", top[i]->first, "last",
					  top[i]->last, "rule",
					  top[i]->rule ? json_string(top[i]->rule) : json_null(), "audit",
					  kind == DEST_WOULD_DENY);
		json_array_append_new(list, entry);
	}
	g_free(top);
	return list;
}

/* One app entry at a time, so that the output costs no memory per app. */
static void print_json(const struct report *rep)
{
	fputs("{\"apps\":[", stdout);
	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		json_t *entry = json_pack(
			"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:s, s:s}", "app", app->name,
			"assignments", (json_int_t)app->assignments, "distinct_ports",
			(json_int_t)app->distinct_ports, "denials", (json_int_t)app->denials, "errors",
			(json_int_t)app->errors, "audits", (json_int_t)app->audits, "audits_refusable",
			(json_int_t)app->audits_refusable, "attempts_mean",
			app->assignments ? (double)app->attempts_sum / app->assignments : 0.0,
			"attempts_max", (json_int_t)app->attempts_max, "first", app->first_ts, "last",
			app->last_ts);
		if (app->range_lo) {
			json_object_set_new(entry, "range", json_pack("[i,i]", app->range_lo, app->range_hi));
			json_object_set_new(entry, "range_lo", json_integer(app->range_lo));
			json_object_set_new(entry, "range_hi", json_integer(app->range_hi));
			json_object_set_new(entry, "coverage", json_real(coverage(app)));
		}
		json_object_set_new(entry, "lost", json_integer((json_int_t)app->lost));
		json_object_set_new(entry, "destinations", dests_json(app, DEST_USED));
		json_object_set_new(entry, "destinations_total", json_integer((json_int_t)app->dest_count[DEST_USED]));
		json_t *denied = dests_json(app, DEST_DENIED), *would_deny = dests_json(app, DEST_WOULD_DENY);
		json_array_extend(denied, would_deny);	/* copies: would_deny stays ours */
		json_decref(would_deny);
		json_object_set_new(entry, "denied", denied);
		if (i)
			putchar(',');
		json_dumpf(entry, stdout, JSON_COMPACT);
		json_decref(entry);
	}
	printf("],\"malformed_lines\":%lu}\n", rep->malformed);
}

FILE *cli_open_log(const char *path)
{
	FILE *log = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	struct stat info;

	/* fopen takes a directory; its first read fails, as EOF would */
	if (log && fstat(fileno(log), &info) == 0 && S_ISDIR(info.st_mode)) {
		cli_close_log(log, NULL);
		log = NULL;
		errno = EISDIR;
	}
	if (!log)
		fprintf(stderr, "portfence: %s: %s\n", path, strerror(errno));
	return log;
}

int cli_close_log(FILE *log, const char *path)
{
	int failed = ferror(log) ? errno : 0;

	if (log != stdin)
		fclose(log);
	if (failed && path)
		fprintf(stderr, "portfence: %s: %s\n", strcmp(path, "-") == 0 ? "the standard input" : path,
			strerror(failed));
	return failed ? -1 : 0;
}

const char *cli_default_log(const struct pf_policy *policy)
{
	const char *log = secure_getenv("PORTFENCE_LOG");

	return log && log[0] ? log : policy->log_file;
}

static void free_dest(gpointer data)
{
	struct dest_stats *dest = data;
	g_free(dest->key);
	free(dest->rule);
	g_free(dest);
}

/* The log at path ("-": stdin) read into rep: 0, or -1 said. */
static int report_read(struct report *rep, const char *path)
{
	FILE *log = cli_open_log(path);

	if (!log)
		return -1;
	rep->by_name = g_hash_table_new(g_str_hash, g_str_equal);
	rep->dests = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, free_dest);
	rep->dest_ports = g_hash_table_new(g_direct_hash, g_direct_equal);
	read_log(rep, log);
	int rc = cli_close_log(log, path);
	g_hash_table_destroy(rep->dest_ports);
	rep->dest_ports = NULL;
	return rc;
}

static void report_free(struct report *rep)
{
	for (size_t i = 0; i < rep->app_count; i++) {
		free(rep->apps[i].name);
		if (rep->apps[i].port_uses)
			g_hash_table_destroy(rep->apps[i].port_uses);
		if (rep->apps[i].programs)
			g_hash_table_destroy(rep->apps[i].programs);
	}
	free(rep->apps);
	if (rep->by_name)	/* NULL when the log could not be opened */
		g_hash_table_destroy(rep->by_name);
	if (rep->dests)
		g_hash_table_destroy(rep->dests);
}

int cmd_report(int argc, char **argv)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},	{"app", required_argument, NULL, 'a'},
		{"since", required_argument, NULL, 's'}, {"until", required_argument, NULL, 'u'},
		{"config", required_argument, NULL, 'c'}, {"suggest", no_argument, NULL, 'S'},
		{"against", required_argument, NULL, 'A'}, {0},
	};
	struct report rep = {0};
	const char *policy_path = NULL, *against = NULL;
	bool json = false, suggest = false;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+ja:s:u:c:", options)) != -1) {
		if (opt == 'j')
			json = true;
		else if (opt == 'S')
			suggest = true;
		else if (opt == 'A')
			against = optarg;
		else if (opt == 'a')
			rep.only_app = optarg;
		else if (opt == 'c')
			policy_path = optarg;
		else if (opt == 's' || opt == 'u') {
			if (cli_time_option(opt == 's' ? "--since" : "--until", optarg, opt == 's' ? rep.since : rep.until))
				return EXIT_USAGE;
		} else
			return usage_error("report: unknown option");
	}
	if (argc - optind > 1)
		return usage_error("report takes at most one LOGFILE");
	if (suggest && against)
		return usage_error("report: --suggest and --against exclude each other");
	rep.track_programs = against != NULL;
	struct pf_policy policy;
	if (cli_load_optional_policy(policy_path, true, &policy) < 0)
		return 1;
	const char *path = optind < argc ? argv[optind] : cli_default_log(&policy);
	if (!path) {
		pf_policy_free(&policy);
		return usage_error("report: no LOGFILE given and no log in PORTFENCE_LOG or the policy");
	}

	rep.log_path = path;
	if (report_read(&rep, path) < 0) {
		report_free(&rep);
		pf_policy_free(&policy);
		return 1;
	}
	apply_policy(&rep, &policy);
	int rc = 0;
	if (suggest)
		report_suggest(&rep, json);
	else if (against)
		rc = report_against(&rep, against, json);
	else if (json)
		print_json(&rep);
	else
		print_text(&rep);
	report_free(&rep);
	pf_policy_free(&policy);	/* after the log's path, which may be its */
	return rc;
}
