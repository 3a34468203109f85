/* The record ring: how a shim process hands its records to the collector
 * (`portfence daemon`) without a system call per record.
 *
 * Each process makes one memfd, maps it shared, and registers it once
 * over the collector's Unix socket (SCM_RIGHTS); the collector takes the
 * process's pid, uid and gid from the kernel (SO_PEERCRED), never from
 * the ring, and keeps the mapping, so a process's records outlive it.
 * Producers (any thread, or a signal handler) claim a slot by position
 * and commit it by its sequence word (a bounded multi-producer queue);
 * the collector alone consumes.  A slot is a fixed binary record: no
 * names, no pid, nothing a program could use to speak for another.
 * Whatever a program writes into its ring is its own record or garbage,
 * and garbage is counted and skipped (pf_ring_decode).
 *
 * After the slots, the ring's texts: a deny's rule or an error's reason
 * as the shim wrote it from the policy it runs with (which need not be
 * the collector's), each text once, named by the slots that carry it. */
#ifndef PORTFENCE_RING_H
#define PORTFENCE_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "record/record.h"

/* The collector's socket (SPEC: "The collector"); PORTFENCE_COLLECTOR
 * (secure_getenv) names another, "" or "none" none at all. */
#define PF_COLLECTOR_SOCKET "/run/portfence/collector.sock"

#define PF_RING_MAGIC 0x31526650u	/* "PfR1" */
#define PF_RING_VERSION 4u	/* 4: texts (rules, reasons) after the slots */
#define PF_RING_SLOTS 4096u		/* a power of two */
/* Room for the texts: a policy's rules and reasons, each text written
 * once per ring (about 200 distinct ones of a typical length). */
#define PF_RING_TEXT_BYTES 32768u
/* Seconds a collector's lease runs past its last drain: after that the
 * shim takes it for gone and registers again (or writes directly). */
#define PF_RING_LEASE_SECONDS 3

/* Three cache lines, by writer: a producer's claim (head) never shares a
 * line with what the collector writes as it takes records (tail, once
 * per record) or now and then (lease, withdrawn).  On one line, each put
 * fetched the line back from the collector's core (version 1). */
struct pf_ring_header {
	/* Fixed at creation, then the producers' words. */
	uint32_t magic, version, slots, slot_size;
	_Atomic uint64_t head;		/* producers: next position to claim */
	_Atomic uint64_t fallback;	/* records that went to the direct write instead */
	_Atomic uint64_t lost;		/* records neither ring nor file could take */
	_Atomic uint32_t text_used;	/* producers: bytes of the text area claimed */
	uint8_t reserved0[20];
	/* The collector's, changed at most once a second while it runs;
	 * each put reads the lease. */
	_Atomic int64_t lease;		/* CLOCK_MONOTONIC_COARSE second the collector's lease ends */
	_Atomic uint32_t withdrawn;	/* PF_RING_WITHDRAWING / _RELEASED: the collector is leaving */
	uint8_t reserved1[52];
	/* The consumers': moved on with every record taken. */
	_Atomic uint64_t tail;		/* consumers: every slot before it is free (advisory) */
	uint8_t reserved2[56];
};

/* A collector that stops withdraws each ring in two steps: it says
 * WITHDRAWING, takes every record claimed in it, writes them out, ends
 * its lease and says RELEASED.  Between the two the shim neither
 * consumes the ring nor swaps it (it waits, bounded), so a thread's
 * records stay in order across the collector's leaving.  The ring stays
 * open: what is put there after is moved on by the swap, to the next
 * collector (or the file). */
#define PF_RING_WITHDRAWING 1u
#define PF_RING_RELEASED 2u

/* flags */
#define PF_RING_LOCAL 1u	/* local_* holds an address */
#define PF_RING_REMOTE 2u	/* remote_* holds an address */
#define PF_RING_TEXT_LOST 4u	/* the record had a text the text area had no room for */
#define PF_RING_FLAGS (PF_RING_LOCAL | PF_RING_REMOTE | PF_RING_TEXT_LOST)

/* What a text is to its record. */
#define PF_RING_TEXT_RULE 1
#define PF_RING_TEXT_REASON 2

struct pf_ring_slot {
	_Atomic uint64_t seq;		/* position + 1: committed; + 2: held; + slots: free */
	uint64_t realtime_ns;		/* CLOCK_REALTIME of the call */
	uint8_t event, udp, family, flags;	/* family: 4 or 6 */
	uint32_t attempts;
	int16_t error;
	uint16_t text;			/* the record's text (pf_ring_text_put); 0: none */
	uint16_t local_port, remote_port;	/* host order */
	uint8_t local_addr[16], remote_addr[16];
};

_Static_assert(sizeof(struct pf_ring_header) == 192, "ring header is three cache lines");
_Static_assert(offsetof(struct pf_ring_header, lease) == 64 && offsetof(struct pf_ring_header, tail) == 128,
	       "each writer has a line of its own");
_Static_assert(sizeof(struct pf_ring_slot) == 64, "ring slot is one cache line");

#define PF_RING_BYTES \
	(sizeof(struct pf_ring_header) + PF_RING_SLOTS * sizeof(struct pf_ring_slot) + PF_RING_TEXT_BYTES)

static inline struct pf_ring_slot *pf_ring_slots(struct pf_ring_header *h)
{
	return (struct pf_ring_slot *)(h + 1);
}

static inline uint8_t *pf_ring_texts(struct pf_ring_header *h)
{
	return (uint8_t *)(pf_ring_slots(h) + PF_RING_SLOTS);
}

/* Lays out a fresh ring in memory of PF_RING_BYTES. */
void pf_ring_init(struct pf_ring_header *h);

/* The slot's content, without seq. */
struct pf_ring_entry {
	uint64_t realtime_ns;
	uint8_t event, udp, family, flags;
	uint32_t attempts;
	int16_t error;
	uint16_t text;
	uint16_t local_port, remote_port;
	uint8_t local_addr[16], remote_addr[16];
};

/* The entry for a record (addresses NULL: unknown / none). */
void pf_ring_entry_of(struct pf_ring_entry *e, enum pf_event event, bool udp, int family,
		      const struct sockaddr *local, const struct sockaddr *remote, unsigned attempts,
		      int error);

/* Producer, async-signal-safe and lock-free: the text (kind
 * PF_RING_TEXT_RULE or _REASON) in the ring's text area, written there
 * unless it already is, for a slot's text field.  0 when the area is
 * full (or trampled): the caller marks the record PF_RING_TEXT_LOST.
 * Texts longer than PF_RING_TEXT_MAX are cut. */
#define PF_RING_TEXT_MAX 1100u
uint16_t pf_ring_text_put(struct pf_ring_header *h, int kind, const char *text);

/* An entry's text with its kind, pf_ring_text_put's text as a consumer
 * reads it: copied into out (len >= PF_RING_TEXT_MAX + 1) and checked.
 * Returns the kind, or 0 when the entry has none or it is not a text
 * the area holds (a ring the program trampled). */
int pf_ring_text_get(struct pf_ring_header *h, const struct pf_ring_entry *e, char *out, size_t len);

/* The entry's text, as the record's rule or reason (pf_record_fields),
 * with text (len >= PF_RING_TEXT_MAX + 1) to hold it; for a text that
 * was lost, a reason that says so. */
void pf_ring_explain(struct pf_ring_header *h, const struct pf_ring_entry *e, struct pf_record_fields *fields,
		     char *text, size_t len);

/* A ring's head with this bit set is closed: nothing more can be put
 * there (the shim closes its ring when it replaces it, see shim/collect.c). */
#define PF_RING_CLOSED (1ull << 63)

/* Closes the ring; returns the position after the last slot ever
 * claimed in it. */
static inline uint64_t pf_ring_close(struct pf_ring_header *h)
{
	return atomic_fetch_or(&h->head, PF_RING_CLOSED) & ~PF_RING_CLOSED;
}

static inline bool pf_ring_closed(struct pf_ring_header *h)
{
	return atomic_load_explicit(&h->head, memory_order_relaxed) & PF_RING_CLOSED;
}

/* Producer, async-signal-safe and lock-free: false when the ring is full
 * or closed (or its memory was trampled by the program). */
bool pf_ring_put(struct pf_ring_header *h, const struct pf_ring_entry *e);

/* Consumers.  What a take at *tail found there: */
#define PF_RING_NOTHING 0		/* nothing committed there (yet) */
#define PF_RING_MINE 1			/* out holds the record; *tail advanced */
#define PF_RING_TAKEN_ELSEWHERE 2	/* the other consumer had it; *tail advanced, out means nothing */
#define PF_RING_HELD 3			/* the collector holds it (pf_ring_hold), not yet released */

/* The shim's take, from a ring whose collector it took for gone: the
 * next committed slot at *tail copied into out and freed at once. */
int pf_ring_take(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out);

/* The collector's take: the record copied into out, and its slot held
 * (neither free for writers nor committed) until pf_ring_release, which
 * the collector calls only once the record is written.  A collector
 * killed between the two leaves the record in the ring, where the shim
 * takes it over (pf_ring_take_to_end): a duplicate at worst, never a loss.
 * The collector keeps *tail in its own memory. */
int pf_ring_hold(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out);

/* Frees the slots held in [from, to) and makes to the ring's tail (the
 * shim's takeover starts there). */
void pf_ring_release(struct pf_ring_header *h, uint64_t from, uint64_t to);

/* Every record claimed in h before end, from *tail on, in order: each
 * committed one is handed to take(entry, ctx), taken as pf_ring_hold does
 * (hold) or as pf_ring_take does.  A slot claimed and not committed (its
 * writer descheduled, or killed, between the two) is waited for, up to
 * wait_ns in all, then skipped; so is, when not hold, a slot the
 * collector holds, which is then taken over (its collector died before it
 * wrote it out).  Returns how many were skipped: the caller counts them
 * lost, never drops them silently.  *tail is kept within one ring of end
 * (the header is the program's to trample).  Used by the collector when it
 * stops and by the shim when it moves a ring whose collector went. */
unsigned long pf_ring_take_to_end(struct pf_ring_header *h, uint64_t *tail, uint64_t end, long wait_ns, bool hold,
				  void (*take)(const struct pf_ring_entry *entry, void *ctx), void *ctx);

/* A slot's content checked and turned into record fields (event,
 * protocol, family, addresses, attempts, error, time).  local and remote
 * are the sockaddrs fields points at.  False for anything a shim never
 * writes: such a slot is counted and skipped, never written. */
bool pf_ring_decode(const struct pf_ring_entry *e, const struct timespec *now,
		    struct pf_record_fields *fields, struct timespec *when,
		    struct sockaddr_storage *local, struct sockaddr_storage *remote);

/* The last event a slot may name (a `bind` event, when the record has
 * one, is added here). */
#define PF_RING_EVENT_MAX PF_EVENT_BIND

/* An address as the kernel gives it (4 or 16 bytes, port in host
 * order) as a sockaddr of family. */
void pf_sockaddr_of(int family, const void *addr, uint16_t port, struct sockaddr_storage *out);

/* The registration message, sent once with the memfd (SCM_RIGHTS). */
#define PF_REGISTER_MAGIC 0x31476650u	/* "PfG1" */
struct pf_ring_register {
	uint32_t magic, version;
	char app[256];			/* the app the process chose (NUL-terminated) */
	char algorithm[32];		/* its algorithm's name */
};

#endif
