/* portfence status output: text, JSON (SPEC's object) and the Prometheus
 * text exposition format. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "status.h"

static unsigned range_size(const struct app_status *app)
{
	return app->app->range_hi - app->app->range_lo + 1u;
}

/* Distinct local ports held, over the range's size. */
static double utilisation(const struct app_status *app)
{
	return (double)app->distinct_ports / range_size(app);
}

const char *status_utf8(const char *s, char *buf, size_t buf_len)
{
	json_t *probe = json_string(s);
	if (probe) {
		json_decref(probe);
		return s;
	}
	size_t i = 0;
	for (; s[i] && i + 1 < buf_len; i++)
		buf[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

void status_print_text(const struct status *status)
{
	for (size_t i = 0; i < status->app_count; i++) {
		const struct app_status *app = &status->apps[i];
		printf("app %s: ports %u-%u (%u)%s\n", app->app->name, app->app->range_lo,
		       app->app->range_hi, range_size(app),
		       app->app->mode == PF_MODE_AUDIT ? ", audit mode (its sockets are on the kernel's ports)" : "");
		printf("  in use %lu:", app->in_use);
		for (int s = 0; s < STATE_COUNT; s++)
			printf("%s %s %lu", s ? "," : "", status_state_names[s], app->by_state[s]);
		printf("\n  utilisation %.1f%% (%u of %u ports held)\n", 100 * utilisation(app),
		       app->distinct_ports, range_size(app));
		printf("  destinations %lu\n", app->destinations);
		printf("  top processes:%s", app->top_count ? "" : " none");
		/* A comm is the program's to choose, a cgroup's name its
		 * creator's: escaped. */
		char escaped[4 * 4096 + 1];
		for (size_t t = 0; t < app->top_count; t++)
			printf("%s %d %s (%lu)", t ? "," : "", app->top[t].pid,
			       cli_escape(app->top[t].comm, escaped, sizeof(escaped)), app->top[t].ports);
		printf("\n  intruders:%s", app->intruder_count ? "" : " none");
		for (size_t t = 0; t < app->intruder_count; t++)
			printf("%s %d %s (%lu)", t ? "," : "", app->intruders[t].pid,
			       cli_escape(app->intruders[t].comm, escaped, sizeof(escaped)), app->intruders[t].ports);
		printf("\n  cgroups:%s", app->cgroup_count ? "" : " none");
		for (size_t c = 0; c < app->cgroup_count; c++)
			printf(" %s", cli_escape(app->cgroups[c], escaped, sizeof(escaped)));
		if (app->records_lost >= 0)
			printf("\n  records lost %lld\n", app->records_lost);
		else
			printf("\n  records lost unknown\n");
	}
}

static json_t *clean_string(const char *s)
{
	char buf[256];
	return json_string(status_utf8(s, buf, sizeof(buf)));
}

static json_t *processes_json(const struct top_process *list, size_t count)
{
	json_t *array = json_array();
	for (size_t t = 0; t < count; t++) {
		json_t *holder = json_pack("{s:i, s:o, s:I}", "pid", (int)list[t].pid, "comm",
					   clean_string(list[t].comm), "ports", (json_int_t)list[t].ports);
		if (list[t].cgroup[0])
			json_object_set_new(holder, "cgroup", clean_string(list[t].cgroup));
		json_array_append_new(array, holder);
	}
	return array;
}

static json_t *app_json(const struct app_status *app)
{
	json_t *by_state = json_object(), *top = processes_json(app->top, app->top_count), *cgroups = json_array();

	for (int s = 0; s < STATE_COUNT; s++)
		json_object_set_new(by_state, status_state_names[s], json_integer((json_int_t)app->by_state[s]));
	for (size_t c = 0; c < app->cgroup_count; c++)
		json_array_append_new(cgroups, clean_string(app->cgroups[c]));
	json_t *lost = app->records_lost >= 0 ? json_integer((json_int_t)app->records_lost) : json_null();
	json_t *assignments = app->counters_known ? json_integer((json_int_t)app->assignments) : json_null();
	json_t *failures = app->counters_known ? json_integer((json_int_t)app->failures) : json_null();
	return json_pack("{s:o, s:s, s:[i,i], s:I, s:o, s:f, s:I, s:o, s:o, s:I, s:o, s:o, s:o, s:o}", "app",
			 clean_string(app->app->name), "mode", app->app->mode == PF_MODE_AUDIT ? "audit" : "enforce",
			 "range", app->app->range_lo, app->app->range_hi, "in_use", (json_int_t)app->in_use,
			 "by_state", by_state, "utilisation", utilisation(app), "destinations",
			 (json_int_t)app->destinations, "top", top, "intruders",
			 processes_json(app->intruders, app->intruder_count), "intruder_sockets",
			 (json_int_t)app->intruder_sockets, "cgroups", cgroups, "records_lost", lost, "assignments",
			 assignments, "assignment_failures", failures);
}

int status_print_json(const struct status *status)
{
	json_t *apps = json_array();

	for (size_t i = 0; i < status->app_count; i++)
		json_array_append_new(apps, app_json(&status->apps[i]));
	json_t *root = json_pack("{s:o}", "apps", apps);
	if (!root || json_dumpf(root, stdout, JSON_COMPACT | JSON_REAL_PRECISION(10)) < 0) {
		fprintf(stderr, "portfence: status: cannot write JSON\n");
		json_decref(root);
		return 1;
	}
	putchar('\n');
	json_decref(root);
	return 0;
}

/* A label value: backslash, double quote and newline escaped. */
static void print_label(const char *value)
{
	char buf[256];
	for (const char *c = status_utf8(value, buf, sizeof(buf)); *c; c++) {
		if (*c == '\\' || *c == '"')
			printf("\\%c", *c);
		else if (*c == '\n')
			printf("\\n");
		else
			putchar(*c);
	}
}

static void print_family(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample per app of a family; value returns false for an app whose
 * figure is unknown (no sample: never a made-up 0). */
static void print_app_family(const struct status *status, const char *name, const char *type, const char *help,
			     bool (*value)(const struct app_status *, double *))
{
	print_family(name, type, help);
	for (size_t i = 0; i < status->app_count; i++) {
		double v;
		if (!value(&status->apps[i], &v))
			continue;
		printf("%s{app=\"", name);
		print_label(status->apps[i].app->name);
		printf("\"} %.10g\n", v);
	}
}

#define VALUE(fn, known, expr) \
	static bool fn(const struct app_status *app, double *v) { *v = (double)(expr); return (known); }
VALUE(range_ports_value, true, range_size(app))
VALUE(distinct_ports_value, true, app->distinct_ports)
VALUE(utilisation_value, true, utilisation(app))
VALUE(destinations_value, true, app->destinations)
VALUE(cgroups_value, true, app->cgroup_count)
VALUE(intruders_value, true, app->intruder_sockets)
VALUE(records_lost_value, app->records_lost >= 0, app->records_lost)
VALUE(assignments_value, app->counters_known, app->assignments)
VALUE(failures_value, app->counters_known, app->failures)

static void print_in_use(const struct status *status)
{
	print_family("portfence_ports_in_use", "gauge",
		     "Sockets holding a local port of the app's range, by state.");
	for (size_t i = 0; i < status->app_count; i++)
		for (int s = 0; s < STATE_COUNT; s++) {
			printf("portfence_ports_in_use{app=\"");
			print_label(status->apps[i].app->name);
			printf("\",state=\"%s\"} %lu\n", status_state_names[s], status->apps[i].by_state[s]);
		}
}

static const struct {
	const char *name, *type, *help;
	bool (*value)(const struct app_status *, double *);
} families[] = {
	{"portfence_range_ports", "gauge", "Local ports in the app's range.", range_ports_value},
	{"portfence_range_distinct_ports", "gauge", "Distinct local ports of the app's range held by any socket now.",
	 distinct_ports_value},
	{"portfence_range_utilisation", "gauge",
	 "Distinct local ports of the range held now over the range's size (0 to 1).", utilisation_value},
	{"portfence_destinations", "gauge", "Distinct remote address:port pairs of the app's sockets.",
	 destinations_value},
	{"portfence_intruders", "gauge", "Sockets in the app's range held by processes outside the app.",
	 intruders_value},
	{"portfence_cgroups_attached", "gauge", "Cgroups the BPF backend attached the app to.", cgroups_value},
	{"portfence_records_lost_total", "counter",
	 "Audit records the BPF programs had no room for (ring full) since the app's maps were pinned.",
	 records_lost_value},
	{"portfence_assignments_total", "counter",
	 "Ports the app's processes were given from its range: by the shim since its state was made, by the BPF programs of its attachments and runs alive.", assignments_value},
	{"portfence_assignment_failures_total", "counter",
	 "Calls of the app's processes that found no free port in its range (shim and BPF programs).", failures_value},
};

void status_print_prometheus(const struct status *status)
{
	for (size_t f = 0; f < sizeof(families) / sizeof(*families); f++) {
		print_app_family(status, families[f].name, families[f].type, families[f].help, families[f].value);
		if (f == 0)
			print_in_use(status);
	}
}
