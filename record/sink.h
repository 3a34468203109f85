/* The record sinks of `portfence daemon` (the collector) and `run --bpf`:
 * the JSONL file (root's, 0640, followed through logrotate), the journal
 * (journald's native protocol: each record field as PORTFENCE_<FIELD>,
 * OBJECT_PID/OBJECT_UID of the confined process, a readable MESSAGE) and
 * syslog where the policy asks.  One writer for both backends.  Not for
 * the shim: it allocates and uses stdio. */
#ifndef PORTFENCE_SINK_H
#define PORTFENCE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "record/record.h"

/* journald's native socket. */
#define PF_JOURNAL_SOCKET "/run/systemd/journal/socket"

struct pf_record_sink;

/* log_path NULL: no file; "-": stderr.  The journal is written when its
 * socket is there. */
struct pf_record_sink *pf_record_sink_open(const char *log_path, bool to_syslog);
/* One record to every sink (the file in batches: flush writes them);
 * uid is the process's as the kernel gave it (-1: unknown).  False when
 * the record could not be formatted. */
bool pf_record_sink_add(struct pf_record_sink *sink, const struct pf_record_fields *fields, long uid);
/* Writes the file's batch and sends the journal what it will take now. */
void pf_record_sink_flush(struct pf_record_sink *sink);
/* Whether journald still has entries to take (come back soon). */
bool pf_record_sink_behind(const struct pf_record_sink *sink);
void pf_record_sink_close(struct pf_record_sink *sink);

/* The journal entry of a formatted record line (line, len, with or
 * without its newline) as native-protocol bytes into out: each field of
 * the line as PORTFENCE_<FIELD>, then MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, OBJECT_PID and OBJECT_UID (uid >= 0).  Returns the
 * length, or 0 when it does not fit or the line is not a record. */
size_t pf_journal_entry(const char *line, size_t len, long uid, char *out, size_t cap);

#endif
