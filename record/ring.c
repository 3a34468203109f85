/* The record ring's producer (the shim: async-signal-safe, lock-free,
 * bounded) and its consumer and decoder (the collector: never trusts
 * what it reads).  See record/ring.h. */
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/hot.h"
#include "record/ring.h"

void pf_ring_init(struct pf_ring_header *h)
{
	struct pf_ring_slot *slots = pf_ring_slots(h);

	memset(h, 0, sizeof(*h));
	h->magic = PF_RING_MAGIC;
	h->version = PF_RING_VERSION;
	h->slots = PF_RING_SLOTS;
	h->slot_size = sizeof(struct pf_ring_slot);
	for (uint64_t i = 0; i < PF_RING_SLOTS; i++)
		atomic_store_explicit(&slots[i].seq, i, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static PF_HOT void put_address(const struct sockaddr *addr, uint8_t out[16], uint16_t *port, uint8_t *flags,
			uint8_t flag)
{
	if (addr && addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		memcpy(out, &sin->sin_addr, 4);
		*port = ntohs(sin->sin_port);
		*flags |= flag;
	} else if (addr && addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		memcpy(out, &sin6->sin6_addr, 16);
		*port = ntohs(sin6->sin6_port);
		*flags |= flag;
	}
}

PF_HOT void pf_ring_entry_of(struct pf_ring_entry *e, enum pf_event event, bool udp, int family,
		      const struct sockaddr *local, const struct sockaddr *remote, unsigned attempts,
		      int error)
{
	struct timespec now;

	memset(e, 0, sizeof(*e));
	pf_clock_gettime(CLOCK_REALTIME, &now);
	e->realtime_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	e->event = (uint8_t)event;
	e->udp = udp;
	e->family = family == AF_INET6 ? 6 : 4;
	e->attempts = attempts;
	e->error = (int16_t)error;
	/* An address of the other family than the socket's (never seen from
	 * a shim) is left out rather than mislabelled. */
	if (local && local->sa_family == family)
		put_address(local, e->local_addr, &e->local_port, &e->flags, PF_RING_LOCAL);
	if (remote && remote->sa_family == family)
		put_address(remote, e->remote_addr, &e->remote_port, &e->flags, PF_RING_REMOTE);
}

/* A text in the area: a header word, then the bytes and a NUL, the
 * whole rounded up to 8.  The word says the length from the moment the
 * text's room is claimed, and TEXT_READY once the bytes are there: a
 * reader steps over a text being written, and stops at a word of 0 (the
 * end, or a room claimed a moment ago). */
#define TEXT_READY (1u << 31)
#define TEXT_KIND_SHIFT 16
#define TEXT_LEN_MASK 0xffffu

static inline uint32_t text_room(uint32_t len)
{
	return (4 + len + 1 + 7) & ~7u;
}

static inline _Atomic uint32_t *text_word(struct pf_ring_header *h, uint32_t at)
{
	return (_Atomic uint32_t *)(pf_ring_texts(h) + at);
}

static inline uint16_t text_id(uint32_t at)
{
	return (uint16_t)(at / 8 + 1);
}

/* The text already in the area, or 0.  Bounded by the area whatever the
 * program wrote into it. */
static uint16_t text_find(struct pf_ring_header *h, int kind, const char *text, uint32_t len)
{
	uint32_t used = atomic_load_explicit(&h->text_used, memory_order_acquire);

	for (uint32_t at = 0; at + 8 <= used && at + 8 <= PF_RING_TEXT_BYTES;) {
		uint32_t word = atomic_load_explicit(text_word(h, at), memory_order_acquire);
		uint32_t its_len = word & TEXT_LEN_MASK;
		if (!word || its_len > PF_RING_TEXT_MAX)
			return 0;
		if ((word & TEXT_READY) && ((word >> TEXT_KIND_SHIFT) & 0xff) == (uint32_t)kind && its_len == len &&
		    at + text_room(len) <= PF_RING_TEXT_BYTES && memcmp(pf_ring_texts(h) + at + 4, text, len) == 0)
			return text_id(at);
		at += text_room(its_len);
	}
	return 0;
}

uint16_t pf_ring_text_put(struct pf_ring_header *h, int kind, const char *text)
{
	uint32_t len = (uint32_t)strnlen(text, PF_RING_TEXT_MAX);
	uint16_t found = text_find(h, kind, text, len);

	if (found)
		return found;
	uint32_t room = text_room(len);
	if (atomic_load_explicit(&h->text_used, memory_order_relaxed) > PF_RING_TEXT_BYTES - room)
		return 0;
	uint32_t at = atomic_fetch_add_explicit(&h->text_used, room, memory_order_relaxed);
	if (at > PF_RING_TEXT_BYTES - room || at % 8)
		return 0;
	atomic_store_explicit(text_word(h, at), len, memory_order_relaxed);
	memcpy(pf_ring_texts(h) + at + 4, text, len);
	pf_ring_texts(h)[at + 4 + len] = '\0';
	atomic_store_explicit(text_word(h, at), TEXT_READY | (uint32_t)kind << TEXT_KIND_SHIFT | len,
			      memory_order_release);
	return text_id(at);
}

int pf_ring_text_get(struct pf_ring_header *h, const struct pf_ring_entry *e, char *out, size_t len)
{
	uint32_t at = (uint32_t)(e->text - 1) * 8;

	out[0] = '\0';
	if (!e->text || at + 8 > PF_RING_TEXT_BYTES)
		return 0;
	uint32_t word = atomic_load_explicit(text_word(h, at), memory_order_acquire);
	uint32_t text_len = word & TEXT_LEN_MASK, kind = (word >> TEXT_KIND_SHIFT) & 0xff;
	if (!(word & TEXT_READY) || (word & ~(TEXT_READY | 0xffu << TEXT_KIND_SHIFT | TEXT_LEN_MASK)) ||
	    (kind != PF_RING_TEXT_RULE && kind != PF_RING_TEXT_REASON) || text_len > PF_RING_TEXT_MAX ||
	    text_len >= len || at + 4 + text_len + 1 > PF_RING_TEXT_BYTES)
		return 0;
	memcpy(out, pf_ring_texts(h) + at + 4, text_len);
	out[text_len] = '\0';
	return (int)kind;
}

void pf_ring_explain(struct pf_ring_header *h, const struct pf_ring_entry *e, struct pf_record_fields *fields,
		     char *text, size_t len)
{
	int kind = pf_ring_text_get(h, e, text, len);

	if (kind == PF_RING_TEXT_RULE)
		fields->rule = text;
	else if (kind == PF_RING_TEXT_REASON)
		fields->reason = text;
	else if (e->flags & PF_RING_TEXT_LOST)
		fields->reason = "its rule or reason is not known: the record ring's text area was full";
}

/* Enough tries for any honest contention; a ring whose words the program
 * trampled ends the loop as a full one. */
#define PUT_TRIES 64

PF_HOT bool pf_ring_put(struct pf_ring_header *h, const struct pf_ring_entry *e)
{
	struct pf_ring_slot *slots = pf_ring_slots(h), *slot = NULL;
	uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);

	for (int tries = 0;; tries++) {
		if (tries == PUT_TRIES || (pos & PF_RING_CLOSED))
			return false;
		slot = &slots[pos & (PF_RING_SLOTS - 1)];
		uint64_t seq = atomic_load_explicit(&slot->seq, memory_order_acquire);
		int64_t diff = (int64_t)(seq - pos);
		if (diff == 0) {
			if (atomic_compare_exchange_weak_explicit(&h->head, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed))
				break;
		} else if (diff < 0) {
			return false;	/* full: the collector has not freed it yet */
		} else {
			pos = atomic_load_explicit(&h->head, memory_order_relaxed);
		}
	}
	slot->realtime_ns = e->realtime_ns;
	slot->event = e->event;
	slot->udp = e->udp;
	slot->family = e->family;
	slot->flags = e->flags;
	slot->attempts = e->attempts;
	slot->error = e->error;
	slot->text = e->text;
	slot->local_port = e->local_port;
	slot->remote_port = e->remote_port;
	memcpy(slot->local_addr, e->local_addr, 16);
	memcpy(slot->remote_addr, e->remote_addr, 16);
	atomic_store_explicit(&slot->seq, pos + 1, memory_order_release);
	/* The next record's slot, for writing: the collector last touched
	 * it when it freed it, and its line comes over from the collector's
	 * core now rather than when that record is written. */
	__builtin_prefetch(&slots[(pos + 1) & (PF_RING_SLOTS - 1)], 1);
	return true;
}

/* A slot's seq, for the record at position pos: claimable at pos,
 * committed at pos + 1, held by the collector at pos + 2 (taken, not yet
 * written), free for the next lap at pos + PF_RING_SLOTS.  A writer at
 * pos + PF_RING_SLOTS reads a held slot as not free yet (the ring is
 * full), so a held record stays intact until it is released. */
static inline uint64_t seq_committed(uint64_t pos)
{
	return pos + 1;
}

static inline uint64_t seq_held(uint64_t pos)
{
	return pos + 2;
}

static inline uint64_t seq_free(uint64_t pos)
{
	return pos + PF_RING_SLOTS;
}

static void copy_out(const struct pf_ring_slot *slot, struct pf_ring_entry *out)
{
	/* One copy, then only the copy is looked at: the program may be
	 * changing the slot as we read it. */
	out->realtime_ns = slot->realtime_ns;
	out->event = slot->event;
	out->udp = slot->udp;
	out->family = slot->family;
	out->flags = slot->flags;
	out->attempts = slot->attempts;
	out->error = slot->error;
	out->text = slot->text;
	out->local_port = slot->local_port;
	out->remote_port = slot->remote_port;
	memcpy(out->local_addr, slot->local_addr, 16);
	memcpy(out->remote_addr, slot->remote_addr, 16);
}

static void advance_shared_tail(struct pf_ring_header *h, uint64_t to)
{
	uint64_t shared = atomic_load_explicit(&h->tail, memory_order_relaxed);
	while (shared < to &&
	       !atomic_compare_exchange_weak_explicit(&h->tail, &shared, to, memory_order_relaxed, memory_order_relaxed))
		;
}

/* The record at *tail copied out and its slot moved from seq from to seq
 * to, *tail advanced (and the ring's tail with it once the slot is free).
 * Whoever moves the slot owns the record: the loser of a race between two
 * consumers skips it. */
static int move_slot(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out, uint64_t from, uint64_t to)
{
	uint64_t pos = (*tail)++;
	struct pf_ring_slot *slot = &pf_ring_slots(h)[pos & (PF_RING_SLOTS - 1)];

	copy_out(slot, out);
	bool mine = atomic_compare_exchange_strong_explicit(&slot->seq, &from, to, memory_order_acq_rel,
							    memory_order_acquire);
	if (to == seq_free(pos))
		advance_shared_tail(h, *tail);
	return mine ? PF_RING_MINE : PF_RING_TAKEN_ELSEWHERE;
}

/* The committed record at *tail taken, its slot held (hold) or freed. */
static int take_slot(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out, bool hold)
{
	struct pf_ring_slot *slot = &pf_ring_slots(h)[*tail & (PF_RING_SLOTS - 1)];
	uint64_t pos = *tail, seq = atomic_load_explicit(&slot->seq, memory_order_acquire);

	if (seq == seq_free(pos) || (hold && seq == seq_held(pos))) {
		/* Taken by the other consumer (the shim, emptying a ring whose
		 * collector it took for gone), or, held where we hold, a ring
		 * the program trampled. */
		++*tail;
		return PF_RING_TAKEN_ELSEWHERE;
	}
	if (seq == seq_held(pos))
		return PF_RING_HELD;
	if (seq != seq_committed(pos))
		return PF_RING_NOTHING;
	return move_slot(h, tail, out, seq, hold ? seq_held(pos) : seq_free(pos));
}

int pf_ring_take(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out)
{
	return take_slot(h, tail, out, false);
}

int pf_ring_hold(struct pf_ring_header *h, uint64_t *tail, struct pf_ring_entry *out)
{
	return take_slot(h, tail, out, true);
}

void pf_ring_release(struct pf_ring_header *h, uint64_t from, uint64_t to)
{
	struct pf_ring_slot *slots = pf_ring_slots(h);

	/* One drain holds at most two rings' worth (see cli/collector.c);
	 * anything wider comes from a header the program trampled. */
	if (to < from || to - from > 2 * PF_RING_SLOTS)
		from = to > 2 * PF_RING_SLOTS ? to - 2 * PF_RING_SLOTS : 0;
	for (uint64_t pos = from; pos < to; pos++) {
		uint64_t held = seq_held(pos);
		atomic_compare_exchange_strong_explicit(&slots[pos & (PF_RING_SLOTS - 1)].seq, &held, seq_free(pos),
							memory_order_release, memory_order_relaxed);
	}
	advance_shared_tail(h, to);
}

unsigned long pf_ring_take_to_end(struct pf_ring_header *h, uint64_t *tail, uint64_t end, long wait_ns, bool hold,
				  void (*take)(const struct pf_ring_entry *entry, void *ctx), void *ctx)
{
	struct pf_ring_entry e;
	unsigned long skipped = 0;
	long deadline = 0;

	if (*tail > end || end - *tail > PF_RING_SLOTS)
		*tail = end > PF_RING_SLOTS ? end - PF_RING_SLOTS : 0;
	while (*tail < end) {
		int rc = take_slot(h, tail, &e, hold);
		if (rc == PF_RING_MINE)
			take(&e, ctx);
		if (rc == PF_RING_MINE || rc == PF_RING_TAKEN_ELSEWHERE)
			continue;
		if (!deadline)
			deadline = pf_monotonic_ns() + wait_ns;
		if (pf_monotonic_ns() < deadline) {
			sched_yield();
			continue;
		}
		/* Past the wait: a held record's collector died before it
		 * wrote it out, and the record is intact, so it is taken
		 * here; a slot never committed is skipped, and counted. */
		if (rc == PF_RING_HELD && move_slot(h, tail, &e, seq_held(*tail), seq_free(*tail)) == PF_RING_MINE) {
			take(&e, ctx);
			continue;
		}
		if (rc != PF_RING_HELD) {
			skipped++;
			++*tail;
		}
	}
	return skipped;
}

static bool zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

void pf_sockaddr_of(int family, const void *addr, uint16_t port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
	}
}

/* A record stamped further from the collector's clock than this is not
 * a shim's: a real one waits in the ring a few seconds at most. */
#define CLOCK_SLACK_NS (3600ull * 1000000000ull)

bool pf_ring_decode(const struct pf_ring_entry *e, const struct timespec *now,
		    struct pf_record_fields *fields, struct timespec *when,
		    struct sockaddr_storage *local, struct sockaddr_storage *remote)
{
	uint64_t now_ns = (uint64_t)now->tv_sec * 1000000000u + (uint64_t)now->tv_nsec;
	int family;

	if (e->event > PF_RING_EVENT_MAX)
		return false;
	if (e->udp > 1 || (e->flags & ~PF_RING_FLAGS) || e->attempts > 65536)
		return false;
	if (e->error < 0 || e->error > 4095)
		return false;
	if (e->family == 4)
		family = AF_INET;
	else if (e->family == 6)
		family = AF_INET6;
	else
		return false;
	/* An IPv4 address fills 4 bytes; no address, none at all. */
	size_t used = family == AF_INET ? 4 : 16;
	if (!zero(e->local_addr + ((e->flags & PF_RING_LOCAL) ? used : 0),
		  16 - ((e->flags & PF_RING_LOCAL) ? used : 0)) ||
	    !zero(e->remote_addr + ((e->flags & PF_RING_REMOTE) ? used : 0),
		  16 - ((e->flags & PF_RING_REMOTE) ? used : 0)))
		return false;
	if ((!(e->flags & PF_RING_LOCAL) && e->local_port) || (!(e->flags & PF_RING_REMOTE) && e->remote_port))
		return false;
	if (e->realtime_ns + CLOCK_SLACK_NS < now_ns || e->realtime_ns > now_ns + CLOCK_SLACK_NS)
		return false;
	when->tv_sec = (time_t)(e->realtime_ns / 1000000000u);
	when->tv_nsec = (long)(e->realtime_ns % 1000000000u);
	pf_sockaddr_of(family, e->local_addr, e->local_port, local);
	pf_sockaddr_of(family, e->remote_addr, e->remote_port, remote);
	fields->when = when;
	fields->event = (enum pf_event)e->event;
	fields->udp = e->udp;
	fields->family = family;
	fields->local = (e->flags & PF_RING_LOCAL) ? (const struct sockaddr *)local : NULL;
	fields->remote = (e->flags & PF_RING_REMOTE) ? (const struct sockaddr *)remote : NULL;
	fields->attempts = e->attempts;
	fields->error = e->error;
	return true;
}
