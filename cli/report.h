/* portfence report: the figures of one pass over an audit log, shared by
 * report.c (the summary) and suggest.c (--suggest, --against). */
#ifndef PORTFENCE_REPORT_H
#define PORTFENCE_REPORT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

#define MAX_LINE (64 * 1024)
#define HISTOGRAM_BINS 50
/* Destinations listed per app, and the most kept in memory in all: past
 * that, a new destination is only counted (untracked), so that memory
 * stays bounded whatever the log holds. */
#define TOP_DESTINATIONS 10
#define MAX_DESTINATIONS 200000
/* (destination, local port) pairs remembered for the distinct ports of
 * each destination; past that, a pair first seen is not counted. */
#define MAX_DEST_PORTS 1000000

/* What a record says about a destination. */
enum dest_kind { DEST_USED, DEST_DENIED, DEST_WOULD_DENY, DEST_KINDS };

struct dest_stats {
	struct dest_stats *next;	/* the app's list, one per kind */
	char *key;			/* "APP-INDEX KIND REMOTE", owned */
	const char *remote;		/* into key */
	char *rule;			/* the record's, or the policy's; NULL */
	unsigned long id;
	unsigned long count;
	unsigned ports;
	char first[32], last[32];
	/* assignments to it in the clock minute "YYYY-MM-DDTHH:MM" last
	 * seen, and the most in any one minute (report --suggest) */
	char minute[17];
	unsigned long minute_count, peak_minute;
};

struct app_stats {
	char *name;
	unsigned long assignments, denials, errors, audits, audits_refusable;
	unsigned long long lost;	/* the "lost" of its error records, summed */
	unsigned long attempts_sum, attempts_max;
	unsigned distinct_ports;
	/* uses per local port, for the ports seen: port -> uses, both
	 * GUINT_TO_POINTER; NULL until the first port */
	GHashTable *port_uses;
	char first_ts[40], last_ts[40];
	uint16_t range_lo, range_hi;	/* from the policy; 0 when unknown */
	struct dest_stats *dests[DEST_KINDS];
	unsigned long dest_count[DEST_KINDS];	/* distinct, tracked or not */
	unsigned long untracked[DEST_KINDS];	/* records of destinations past the cap */
	/* --against: exe (or comm) -> comm of the records, at most
	 * MAX_PROGRAMS; NULL otherwise */
	GHashTable *programs;
};

struct report {
	struct app_stats *apps;
	size_t app_count, app_cap;
	/* name (the app's own copy) -> index into apps + 1 */
	GHashTable *by_name;
	unsigned long malformed;
	const char *only_app;
	const char *log_path;	/* as given ("-": stdin) */
	char since[CLI_TIME_LEN], until[CLI_TIME_LEN];
	GHashTable *dests;	/* key -> struct dest_stats */
	GHashTable *dest_ports;	/* (id << 16 | port) as a pointer, a set */
	unsigned long dest_ids;
	bool track_programs;	/* --against */
};

#define MAX_PROGRAMS 256

/* The app's destinations of one kind, most used first; *count of them
 * (at most limit).  The caller g_free()s the array. */
struct dest_stats **report_top_dests(const struct app_stats *app, enum dest_kind kind, size_t limit,
				     size_t *count);
/* report --suggest: allow rules and a range size per app. */
void report_suggest(const struct report *rep, bool json);
/* report --against POLICY2: what would change; 0, or 1 when POLICY2
 * cannot be used. */
int report_against(const struct report *rep, const char *policy_path, bool json);


#endif
