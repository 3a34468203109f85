/* One audit record, read from its line for report and who: the fields
 * they use, scanned in place.  The log's records are flat JSON objects of
 * strings and numbers; such a line is read without building a JSON tree
 * (a tenth of the time on a 2-million-line log), and any other line goes
 * through jansson, so that both read alike what jansson accepts. */
#ifndef PORTFENCE_LOGLINE_H
#define PORTFENCE_LOGLINE_H

#include <stdbool.h>

struct log_record {
	/* NULL when absent or not a string */
	const char *ts, *event, *app, *local, *remote, *result, *rule, *exe, *comm, *proto;
	long long pid, attempts, lost;	/* lost: an error record's records lost */
	bool has_pid, has_attempts, has_lost;	/* an integer */
	void *tree;			/* jansson's, when it read the line */
};

/* Reads line (changed in place); false when it is no JSON object.  The
 * strings live as long as line and the record (log_record_done). */
bool log_record_read(char *line, struct log_record *record);
void log_record_done(struct log_record *record);

#endif
