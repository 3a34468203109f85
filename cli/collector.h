/* The collector in `portfence daemon`: shim processes register their
 * record ring over a Unix socket; the collector drains every ring into
 * the daemon's sinks (record/sink.h).  See record/ring.h. */
#ifndef PORTFENCE_COLLECTOR_H
#define PORTFENCE_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>

struct pf_record_sink;
struct pf_collector;

/* PORTFENCE_COLLECTOR, else PF_COLLECTOR_SOCKET. */
const char *pf_collector_path(void);
/* Listens at path (its directory made 0755 when missing; the socket
 * 0666: every user may register).  NULL with why when it cannot, or
 * when another collector answers there. */
struct pf_collector *pf_collector_open(const char *path, char *why, size_t len);
void pf_collector_set_sink(struct pf_collector *c, struct pf_record_sink *sink);
/* The listening socket, for poll. */
int pf_collector_fd(const struct pf_collector *c);
/* Takes the waiting registrations, drains every ring (a batch each),
 * ends the rings of processes gone.  Returns the records written. */
unsigned long pf_collector_work(struct pf_collector *c);
/* Drains everything, stops listening (the socket removed). */
void pf_collector_close(struct pf_collector *c);

#endif
