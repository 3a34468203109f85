/* portfence report: summarise an audit log in one streaming pass.  Memory
 * grows with the number of apps, never with the length of the log. */
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config/policy.h"

#define MAX_LINE (64 * 1024)
#define HISTOGRAM_BINS 50

struct app_stats {
	char *name;
	unsigned long assignments, denials, errors, audits, audits_refusable;
	unsigned long attempts_sum, attempts_max;
	unsigned distinct_ports;
	/* uses per local port, for the ports seen: port -> uses, both
	 * GUINT_TO_POINTER; NULL until the first port */
	GHashTable *port_uses;
	unsigned port_min, port_max;
	char first_ts[40], last_ts[40];
	uint16_t range_lo, range_hi;	/* from the policy; 0 when unknown */
};

struct report {
	struct app_stats *apps;
	size_t app_count, app_cap;
	/* name (the app's own copy) -> index into apps + 1 */
	GHashTable *by_name;
	unsigned long malformed;
	const char *only_app;
	char since[40], until[40];
};

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
	app->port_min = 65536;
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
	if ((unsigned)port < app->port_min)
		app->port_min = (unsigned)port;
	if ((unsigned)port > app->port_max)
		app->port_max = (unsigned)port;
}

static void count_event(struct app_stats *app, const char *event, json_t *record)
{
	json_t *attempts = json_object_get(record, "attempts");

	if (strcmp(event, "assign") == 0) {
		app->assignments++;
		count_port(app, port_of(json_string_value(json_object_get(record, "local"))));
		if (json_is_integer(attempts) && json_integer_value(attempts) >= 0) {
			unsigned long tries = (unsigned long)json_integer_value(attempts);
			app->attempts_sum += tries;
			if (tries > app->attempts_max)
				app->attempts_max = tries;
		}
	} else if (strcmp(event, "deny") == 0) {
		app->denials++;
	} else if (strcmp(event, "error") == 0) {
		app->errors++;
	} else if (strcmp(event, "audit") == 0) {
		const char *result = json_string_value(json_object_get(record, "result"));
		app->audits++;
		app->audits_refusable += result && (strcmp(result, "EPERM") == 0 || strcmp(result, "EACCES") == 0);
	}
}

static void take_line(struct report *rep, const char *line)
{
	json_error_t error;
	json_t *record = json_loads(line, JSON_REJECT_DUPLICATES, &error);
	const char *app_name = json_string_value(json_object_get(record, "app"));
	const char *event = json_string_value(json_object_get(record, "event"));
	const char *ts = json_string_value(json_object_get(record, "ts"));

	if (!json_is_object(record) || !app_name || !event || !ts) {
		rep->malformed++;
		json_decref(record);
		return;
	}
	if ((!rep->only_app || strcmp(rep->only_app, app_name) == 0) &&
	    (!rep->since[0] || strcmp(ts, rep->since) >= 0) &&
	    (!rep->until[0] || strcmp(ts, rep->until) < 0)) {
		struct app_stats *app = stats_for(rep, app_name);
		if (app) {
			if (!app->first_ts[0])
				snprintf(app->first_ts, sizeof(app->first_ts), "%s", ts);
			snprintf(app->last_ts, sizeof(app->last_ts), "%s", ts);
			count_event(app, event, record);
		}
	}
	json_decref(record);
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

/* TIME, as UTC text the log's timestamps compare with: ISO 8601
 * (2026-12-02, 2026-12-02T10:00[:00[.frac]][Z|+HH:MM|-HH:MM], a space for
 * the T), a duration back from now (90s, 15m, 1h, 2d, 1w), now, today or
 * yesterday (UTC midnights). */
static int parse_time(const char *text, char out[40])
{
	static const char *const formats[] = {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
					      "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"};
	time_t now = time(NULL), when = (time_t)-1;
	char *end;

	if (strcmp(text, "now") == 0)
		when = now;
	else if (strcmp(text, "today") == 0)
		when = now - now % 86400;
	else if (strcmp(text, "yesterday") == 0)
		when = now - now % 86400 - 86400;
	else if (text[0] >= '0' && text[0] <= '9' && !strchr(text, '-')) {
		unsigned long long count = strtoull(text, &end, 10);
		static const char units[] = "smhdw";
		static const long seconds[] = {1, 60, 3600, 86400, 7 * 86400};
		const char *unit = end[0] && !end[1] ? strchr(units, end[0]) : NULL;
		if (!unit || count > 100ULL * 365 * 86400)
			return -1;
		when = now - (time_t)(count * (unsigned long long)seconds[unit - units]);
	} else {
		for (size_t i = 0; i < sizeof(formats) / sizeof(*formats) && when == (time_t)-1; i++) {
			struct tm tm = {0};
			const char *rest = strptime(text, formats[i], &tm);
			if (!rest)
				continue;
			if (*rest == '.' && i < 2)
				rest += 1 + strspn(rest + 1, "0123456789");
			long offset = 0;
			int hours, minutes, used = 0;
			if (strcmp(rest, "Z") == 0 || *rest == '\0')
				offset = 0;
			else if ((*rest == '+' || *rest == '-') &&
				 (sscanf(rest + 1, "%2d:%2d%n", &hours, &minutes, &used) == 2 ||
				  sscanf(rest + 1, "%2d%2d%n", &hours, &minutes, &used) == 2) &&
				 rest[1 + used] == '\0' && hours < 24 && minutes < 60)
				offset = (*rest == '+' ? 1 : -1) * (hours * 3600L + minutes * 60L);
			else
				continue;
			when = timegm(&tm) - offset;
		}
		if (when == (time_t)-1)
			return -1;
	}
	struct tm utc;
	if (!gmtime_r(&when, &utc))
		return -1;
	strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &utc);
	return 0;
}

static void apply_policy_ranges(struct report *rep, const char *policy_path)
{
	struct pf_policy policy;

	if (pf_policy_load(policy_path, &policy, NULL) == PF_LOAD_UNREADABLE) {
		pf_policy_free(&policy);
		return;
	}
	for (size_t i = 0; i < rep->app_count; i++) {
		int index = pf_policy_find_app(&policy, rep->apps[i].name);
		if (index >= 0) {
			rep->apps[i].range_lo = policy.apps[index].range_lo;
			rep->apps[i].range_hi = policy.apps[index].range_hi;
		}
	}
	pf_policy_free(&policy);
}

/* The span the histogram and utilisation are computed over. */
static void app_span(const struct app_stats *app, unsigned *lo, unsigned *hi)
{
	if (app->range_lo) {
		*lo = app->range_lo;
		*hi = app->range_hi;
	} else if (app->distinct_ports) {
		*lo = app->port_min;
		*hi = app->port_max;
	} else {
		*lo = *hi = 0;
	}
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

/* A name or a time from the log, as text. */
static void print_name(const char *name)
{
	static char escaped[4 * MAX_LINE + 1];
	fputs(cli_escape(name, escaped, sizeof(escaped)), stdout);
}

static void print_text(const struct report *rep)
{
	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		unsigned lo, hi;
		app_span(app, &lo, &hi);
		fputs("app ", stdout);
		print_name(app->name);
		putchar('\n');
		printf("  assignments %lu, distinct ports %u", app->assignments, app->distinct_ports);
		if (hi)
			printf(" of %u (%s %u-%u): utilisation %.1f%%", hi - lo + 1,
			       app->range_lo ? "range" : "seen", lo, hi,
			       100.0 * app->distinct_ports / (hi - lo + 1));
		printf("\n  denials %lu, errors %lu, audit records %lu (enforce would have refused %lu)\n",
		       app->denials, app->errors, app->audits, app->audits_refusable);
		printf("  attempts mean %.2f, max %lu\n",
		       app->assignments ? (double)app->attempts_sum / app->assignments : 0.0,
		       app->attempts_max);
		fputs("  first ", stdout);
		print_name(app->first_ts);
		fputs(", last ", stdout);
		print_name(app->last_ts);
		putchar('\n');
		if (app->distinct_ports && hi)
			print_histogram(app, lo, hi);
	}
	printf("malformed lines skipped: %lu\n", rep->malformed);
}

/* One app entry at a time, so that the output costs no memory per app. */
static void print_json(const struct report *rep)
{
	fputs("{\"apps\":[", stdout);
	for (size_t i = 0; i < rep->app_count; i++) {
		const struct app_stats *app = &rep->apps[i];
		unsigned lo, hi;
		app_span(app, &lo, &hi);
		json_t *entry = json_pack(
			"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:s, s:s}", "app", app->name,
			"assignments", (json_int_t)app->assignments, "distinct_ports",
			(json_int_t)app->distinct_ports, "denials", (json_int_t)app->denials, "errors",
			(json_int_t)app->errors, "audits", (json_int_t)app->audits, "audits_refusable",
			(json_int_t)app->audits_refusable, "attempts_mean",
			app->assignments ? (double)app->attempts_sum / app->assignments : 0.0,
			"attempts_max", (json_int_t)app->attempts_max, "first", app->first_ts, "last",
			app->last_ts);
		if (hi) {
			json_object_set_new(entry, "range_lo", json_integer(lo));
			json_object_set_new(entry, "range_hi", json_integer(hi));
			json_object_set_new(entry, "utilisation",
					    json_real((double)app->distinct_ports / (hi - lo + 1)));
		}
		if (i)
			putchar(',');
		json_dumpf(entry, stdout, JSON_COMPACT);
		json_decref(entry);
	}
	printf("],\"malformed_lines\":%lu}\n", rep->malformed);
}

static const char *default_log(const char *policy_path)
{
	const char *log = secure_getenv("PORTFENCE_LOG");
	static char *from_policy;
	struct pf_policy policy;

	if (log && log[0])
		return log;
	if (pf_policy_load(policy_path, &policy, NULL) != PF_LOAD_UNREADABLE &&
	    policy.log_file)
		from_policy = strdup(policy.log_file);
	pf_policy_free(&policy);
	return from_policy;
}

int cmd_report(int argc, char **argv)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},	{"app", required_argument, NULL, 'a'},
		{"since", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
		{"until", required_argument, NULL, 'u'}, {0},
	};
	struct report rep = {0};
	const char *policy_path = NULL;
	bool json = false;
	int opt;

	while ((opt = cli_getopt(argc, argv, "+ja:s:c:", options)) != -1) {
		if (opt == 'j')
			json = true;
		else if (opt == 'a')
			rep.only_app = optarg;
		else if (opt == 'c')
			policy_path = optarg;
		else if ((opt == 's' || opt == 'u') && parse_time(optarg, opt == 's' ? rep.since : rep.until) < 0)
			return usage_error(opt == 's' ? "report: --since takes a TIME such as 2026-12-02T10:00:00Z, "
							"2026-12-02, 1h, 2d, today or yesterday"
						      : "report: --until takes a TIME such as 2026-12-02T10:00:00Z, "
							"2026-12-02, 1h, 2d, today or yesterday");
	}
	if (argc - optind > 1)
		return usage_error("report takes at most one LOGFILE");
	if (!policy_path)
		policy_path = cli_config_from_env();
	const char *path = optind < argc ? argv[optind] : default_log(policy_path);
	if (!path)
		return usage_error("report: no LOGFILE given and no log in PORTFENCE_LOG or the policy");

	FILE *log = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	if (!log) {
		fprintf(stderr, "portfence: %s: %s\n", path, strerror(errno));
		return 1;
	}
	rep.by_name = g_hash_table_new(g_str_hash, g_str_equal);
	read_log(&rep, log);
	if (log != stdin)
		fclose(log);
	apply_policy_ranges(&rep, policy_path);
	if (json)
		print_json(&rep);
	else
		print_text(&rep);
	for (size_t i = 0; i < rep.app_count; i++) {
		free(rep.apps[i].name);
		if (rep.apps[i].port_uses)
			g_hash_table_destroy(rep.apps[i].port_uses);
	}
	free(rep.apps);
	g_hash_table_destroy(rep.by_name);
	return 0;
}
