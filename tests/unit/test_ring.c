/* The record ring (record/ring.c) and the journal entry (record/sink.c):
 * a record through the ring comes out as it went in; a full ring says
 * so; the decoder takes a million random slots without a crash and lets
 * through only what a shim could have written; a record's text (its rule
 * or reason) comes out once, checked; a journal entry has each
 * record field as PORTFENCE_<FIELD>. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "record/ring.h"
#include "record/sink.h"

static struct pf_ring_header *new_ring(void)
{
	void *map = mmap(NULL, PF_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(map, MAP_FAILED);
	pf_ring_init(map);
	return map;
}

static struct sockaddr_in v4(const char *addr, uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	cr_assert_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	return sin;
}

/* The decoded fields as a record line, parsed back by jansson. */
static json_t *formatted(struct pf_record_fields *fields, const char *app, const char *exe, const char *algorithm)
{
	char line[1024];

	fields->app = app;
	fields->exe = exe;
	fields->algorithm = algorithm;
	size_t n = pf_record_format(fields, line, sizeof(line));
	cr_assert_gt(n, 0);
	json_t *rec = json_loadb(line, n, 0, NULL);
	cr_assert_not_null(rec, "%.*s", (int)n, line);
	return rec;
}

Test(ring, record_round_trip_and_full_ring)
{
	struct pf_ring_header *h = new_ring();
	struct sockaddr_in local = v4("127.0.0.1", 61023), remote = v4("127.0.0.1", 8080);
	struct pf_ring_entry e, out;
	struct pf_record_fields fields = {0};
	struct sockaddr_storage l, r;
	struct timespec when, now;
	uint64_t tail = 0;

	for (unsigned i = 0; i < PF_RING_SLOTS; i++) {
		pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, (struct sockaddr *)&local,
				 (struct sockaddr *)&remote, i + 1, 0);
		cr_assert(pf_ring_put(h, &e), "slot %u", i);
	}
	cr_assert_not(pf_ring_put(h, &e), "a full ring takes no more");
	clock_gettime(CLOCK_REALTIME, &now);
	for (unsigned i = 0; i < PF_RING_SLOTS; i++) {
		cr_assert_eq(pf_ring_take(h, &tail, &out), 1);
		cr_assert(pf_ring_decode(&out, &now, &fields, &when, &l, &r));
		cr_assert_eq(fields.attempts, i + 1, "in order");
	}
	cr_assert_eq(pf_ring_take(h, &tail, &out), 0);
	cr_assert(pf_ring_put(h, &e), "freed slots are used again");
	cr_assert_eq(pf_ring_take(h, &tail, &out), 1);
	cr_assert(pf_ring_decode(&out, &now, &fields, &when, &l, &r));
	fields.pid = 4242;
	json_t *rec = formatted(&fields, "web", "/usr/bin/curl", "double-hash");
	cr_assert_str_eq(json_string_value(json_object_get(rec, "local")), "127.0.0.1:61023");
	cr_assert_str_eq(json_string_value(json_object_get(rec, "remote")), "127.0.0.1:8080");
	cr_assert_str_eq(json_string_value(json_object_get(rec, "event")), "assign");
	cr_assert_str_eq(json_string_value(json_object_get(rec, "result")), "ok");
	json_decref(rec);
	munmap(h, PF_RING_BYTES);
}

/* Whatever a program puts in its ring: no crash, and what passes the
 * decoder is a record the formatter writes whole and jansson reads. */
Test(ring, decoder_takes_random_bytes)
{
	struct pf_record_fields fields;
	struct sockaddr_storage l, r;
	struct timespec when, now;
	struct pf_ring_entry e;
	unsigned valid = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	srand(19);
	for (unsigned i = 0; i < 1000000; i++) {
		unsigned char *p = (unsigned char *)&e;
		for (size_t b = 0; b < sizeof(e); b++)
			p[b] = (unsigned char)rand();
		/* Half with the fields a shim writes nearly right, so that the
		 * checks past the first are reached too. */
		if (i & 1) {
			e.realtime_ns = (uint64_t)now.tv_sec * 1000000000u;
			e.event %= 5;
			e.udp &= 1;
			e.family = (i & 2) ? 6 : 4;
			e.flags &= 3;
			e.attempts %= 70000;
			e.error &= 0xfff;
			if (e.family == 4 && (i & 4)) {
				memset(e.local_addr + 4, 0, 12);
				memset(e.remote_addr + 4, 0, 12);
			}
		}
		memset(&fields, 0, sizeof(fields));
		if (!pf_ring_decode(&e, &now, &fields, &when, &l, &r))
			continue;
		valid++;
		json_decref(formatted(&fields, "a", "/x", "sequential"));
	}
	cr_assert_gt(valid, 1000, "the generator reaches valid slots (%u)", valid);
}

/* A record's text (rule or reason) goes through the ring with it: each
 * text written once, the same text named by the same id, a full area
 * said by 0 and by the record's mark, and a text cut at its limit. */
Test(ring, texts_round_trip_once_each_and_say_when_full)
{
	struct pf_ring_header *h = new_ring();
	struct pf_ring_entry e = {0};
	char text[PF_RING_TEXT_MAX + 1], long_text[2000];

	uint16_t rule = pf_ring_text_put(h, PF_RING_TEXT_RULE, "deny \"10.0.0.0/8\" /etc/p.conf:7");
	uint16_t reason = pf_ring_text_put(h, PF_RING_TEXT_REASON, "deny \"10.0.0.0/8\" /etc/p.conf:7");
	cr_assert(rule && reason && rule != reason, "the same words of another kind are another text");
	cr_assert_eq(pf_ring_text_put(h, PF_RING_TEXT_RULE, "deny \"10.0.0.0/8\" /etc/p.conf:7"), rule);
	e.text = rule;
	cr_assert_eq(pf_ring_text_get(h, &e, text, sizeof(text)), PF_RING_TEXT_RULE);
	cr_assert_str_eq(text, "deny \"10.0.0.0/8\" /etc/p.conf:7");
	e.text = reason;
	struct pf_record_fields fields = {0};
	pf_ring_explain(h, &e, &fields, text, sizeof(text));
	cr_assert_null(fields.rule);
	cr_assert_str_eq(fields.reason, "deny \"10.0.0.0/8\" /etc/p.conf:7");

	memset(long_text, 'x', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	e.text = pf_ring_text_put(h, PF_RING_TEXT_REASON, long_text);
	cr_assert_eq(pf_ring_text_get(h, &e, text, sizeof(text)), PF_RING_TEXT_REASON);
	cr_assert_eq(strlen(text), PF_RING_TEXT_MAX, "cut at the limit");

	unsigned made = 0;
	for (;; made++) {
		char distinct[64];
		snprintf(distinct, sizeof(distinct), "rule %u", made);
		uint16_t id = pf_ring_text_put(h, PF_RING_TEXT_RULE, distinct);
		if (!id)
			break;
		e.text = id;
		cr_assert_eq(pf_ring_text_get(h, &e, text, sizeof(text)), PF_RING_TEXT_RULE);
		cr_assert_str_eq(text, distinct);
	}
	cr_assert_gt(made, 1000, "the area holds %u short texts", made);
	cr_assert_eq(pf_ring_text_put(h, PF_RING_TEXT_RULE, "deny \"10.0.0.0/8\" /etc/p.conf:7"), rule,
		     "a text already there is found when the area is full");
	e.text = 0;
	e.flags = PF_RING_TEXT_LOST;
	memset(&fields, 0, sizeof(fields));
	pf_ring_explain(h, &e, &fields, text, sizeof(text));
	cr_assert(fields.reason && strstr(fields.reason, "text area was full"), "a lost text is said");
	munmap(h, PF_RING_BYTES);
}

/* Whatever a program writes into the text area or a slot's text field:
 * no crash, nothing read past the area, and what comes out is a
 * terminated text of a kind a shim writes. */
Test(ring, texts_from_a_trampled_area_are_checked)
{
	struct pf_ring_header *h = new_ring();
	struct pf_ring_entry e = {0};
	char text[PF_RING_TEXT_MAX + 1];
	unsigned found = 0;

	srand(23);
	for (int round = 0; round < 200; round++) {
		uint8_t *area = pf_ring_texts(h);
		for (unsigned b = 0; b < PF_RING_TEXT_BYTES; b++)
			area[b] = (uint8_t)rand();
		/* Some words that look right, so that the later checks are reached. */
		for (unsigned at = 0; at < PF_RING_TEXT_BYTES; at += 8 * (1 + rand() % 64))
			if (rand() & 1)
				*(uint32_t *)(area + at) = (1u << 31) | (uint32_t)(1 + rand() % 2) << 16 |
							   (uint32_t)(rand() % 1200);
		atomic_store(&h->text_used, (uint32_t)rand());
		for (unsigned id = 0; id <= 0xffff; id += 1 + (unsigned)(rand() % 7)) {
			e.text = (uint16_t)id;
			int kind = pf_ring_text_get(h, &e, text, sizeof(text));
			if (!kind)
				continue;
			found++;
			cr_assert(kind == PF_RING_TEXT_RULE || kind == PF_RING_TEXT_REASON);
			cr_assert_leq(strlen(text), PF_RING_TEXT_MAX);
		}
		(void)pf_ring_text_put(h, PF_RING_TEXT_RULE, "a rule");	/* returns, whatever it says */
	}
	cr_assert_gt(found, 100, "the generator reaches texts that pass (%u)", found);
	munmap(h, PF_RING_BYTES);
}

Test(ring, garbage_sequence_words_never_hang_either_side)
{
	struct pf_ring_header *h = new_ring();
	struct pf_ring_entry e, out;
	uint64_t tail = 0;

	/* The program trampled every sequence word. */
	for (unsigned i = 0; i < PF_RING_SLOTS; i++)
		atomic_store(&pf_ring_slots(h)[i].seq, (uint64_t)rand() * 7919u + 5);
	pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, NULL, 1, 0);
	(void)pf_ring_put(h, &e);	/* returns, whatever it says */
	for (int i = 0; i < 10; i++)
		(void)pf_ring_take(h, &tail, &out);
	munmap(h, PF_RING_BYTES);
}

/* The entry holds binary lengths: searched as bytes. */
static const char *has(const char *out, size_t n, const char *what)
{
	return memmem(out, n, what, strlen(what));
}

Test(ring, journal_entry_has_every_field)
{
	static const char line[] = "{\"ts\":\"2026-11-21T10:00:00.123456Z\",\"event\":\"deny\",\"app\":\"web\",\"pid\":4242,"
				   "\"exe\":\"/usr/bin/cu\\nrl\",\"proto\":\"tcp\",\"family\":\"ipv4\",\"local\":\"0.0.0.0:0\","
				   "\"remote\":\"10.0.0.1:25\",\"algorithm\":\"double-hash\",\"attempts\":0,\"result\":\"EPERM\"}\n";
	char out[4096];
	size_t n = pf_journal_entry(line, sizeof(line) - 1, 65534, out, sizeof(out));

	cr_assert_gt(n, 0);
	cr_assert(has(out, n, "PORTFENCE_EVENT=deny\n"));
	cr_assert(has(out, n, "PORTFENCE_APP=web\n"));
	cr_assert(has(out, n, "PORTFENCE_PID=4242\n"));
	cr_assert(has(out, n, "PORTFENCE_REMOTE=10.0.0.1:25\n"));
	cr_assert(has(out, n, "PORTFENCE_RESULT=EPERM\n"));
	cr_assert(has(out, n, "OBJECT_PID=4242\n"));
	cr_assert(has(out, n, "OBJECT_UID=65534\n"));
	cr_assert(has(out, n, "PRIORITY=4\n"));
	cr_assert(has(out, n, "web: deny tcp 0.0.0.0:0 -> 10.0.0.1:25 EPERM (pid 4242 /usr/bin/cu\nrl)\n"));
	/* A value with a newline goes in the binary form: name, newline,
	 * 64-bit little-endian length, bytes, newline. */
	const char *exe = has(out, n, "PORTFENCE_EXE\n");
	cr_assert_not_null(exe);
	cr_assert_eq(exe[14], 14);
	cr_assert_eq(memcmp(exe + 22, "/usr/bin/cu\nrl\n", 15), 0);
	cr_assert_eq(pf_journal_entry("not a record", 12, -1, out, sizeof(out)), 0);
	cr_assert_eq(pf_journal_entry("{\"a\":\"b", 7, -1, out, sizeof(out)), 0);
}

/* The record's escapes come out as the bytes they stand for: a quote,
 * a backslash, a tab and a control character (\u00XX); a line cut
 * inside an escape, or with a \u past 0x00FF, is not a record. */
Test(ring, journal_entry_unescapes_values)
{
	static const char line[] = "{\"event\":\"assign\",\"app\":\"a\\\"b\\\\c\\td\\u0007e\",\"pid\":7}";
	char out[4096];
	size_t n = pf_journal_entry(line, sizeof(line) - 1, 0, out, sizeof(out));

	cr_assert_gt(n, 0);
	cr_assert(has(out, n, "PORTFENCE_APP=a\"b\\c\td\007e\n"), "%.*s", (int)n, out);
	cr_assert(has(out, n, "PORTFENCE_PID=7\n"));
	static const char cut[] = "{\"app\":\"a\\", wide[] = "{\"app\":\"\\u0100\"}";
	cr_assert_eq(pf_journal_entry(cut, sizeof(cut) - 1, 0, out, sizeof(out)), 0);
	cr_assert_eq(pf_journal_entry(wide, sizeof(wide) - 1, 0, out, sizeof(out)), 0);
}

/* The MESSAGE is text journalctl shows: a control byte or a byte that is
 * not UTF-8 in the program's path becomes '?' there (journalctl showed
 * the whole message as "[blob data]"), a newline and a tab stay, and the
 * PORTFENCE_EXE field keeps the bytes. */
Test(ring, journal_message_stays_printable_text)
{
	static const char line[] = "{\"event\":\"assign\",\"app\":\"a\",\"pid\":7,"
				   "\"exe\":\"/x\\u0007y\\u00ffz\\u00c3\\u00a9\\tw\"}";
	char out[4096];
	size_t n = pf_journal_entry(line, sizeof(line) - 1, 0, out, sizeof(out));

	cr_assert_gt(n, 0);
	cr_assert(has(out, n, "(pid 7 /x?y?z\303\251\tw)\n"), "%.*s", (int)n, out);
	cr_assert(has(out, n, "PORTFENCE_EXE=/x\007y\377z\303\251\tw\n"), "%.*s", (int)n, out);
}

/* A swap under way: writer threads put while a consumer (the collector)
 * takes, and a closer (the shim replacing the ring) closes it and takes
 * every slot claimed before the close, waiting for those still being
 * written.  Every put that said yes is taken exactly once, each
 * writer's records in its order; after the close no put says yes. */
#define CLOSE_WRITERS 4
#define CLOSE_PER_WRITER 200000

struct close_run {
	struct pf_ring_header *h;
	atomic_uint put[CLOSE_WRITERS];
	atomic_int closed;
	atomic_uint after_close;
	unsigned char *seen;	/* per writer and sequence number */
	unsigned last[CLOSE_WRITERS];
	unsigned disorder, twice;
	unsigned taken;	/* by pf_ring_take_to_end */
};

struct writer_arg {
	struct close_run *run;
	unsigned w;
};

static void *writer_loop(void *arg)
{
	struct writer_arg *a = arg;
	struct pf_ring_entry e;

	for (unsigned i = 1; i <= CLOSE_PER_WRITER; i++) {
		pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, NULL, i, (int)a->w);
		int was_closed = atomic_load(&a->run->closed);
		if (pf_ring_put(a->run->h, &e)) {
			atomic_fetch_add(&a->run->put[a->w], 1);
			if (was_closed)
				atomic_fetch_add(&a->run->after_close, 1);
		} else if (!atomic_load(&a->run->closed)) {
			i--;	/* full: the consumer is behind, try again */
		} else {
			break;
		}
	}
	return NULL;
}

static void took(struct close_run *run, const struct pf_ring_entry *e)
{
	unsigned w = (unsigned)e->error, i = e->attempts;
	cr_assert_lt(w, CLOSE_WRITERS);
	cr_assert(i >= 1 && i <= CLOSE_PER_WRITER);
	unsigned char *seen = &run->seen[w * (CLOSE_PER_WRITER + 1) + i];
	run->twice += *seen;
	*seen = 1;
	run->disorder += i <= run->last[w];
	run->last[w] = i;
}

static void took_to_end(const struct pf_ring_entry *e, void *opaque)
{
	struct close_run *run = opaque;
	took(run, e);
	run->taken++;
}

Test(ring, close_leaves_no_record_behind, .timeout = 60)
{
	struct close_run run = {.h = new_ring()};
	struct writer_arg args[CLOSE_WRITERS];
	pthread_t threads[CLOSE_WRITERS];
	struct pf_ring_entry e;
	uint64_t tail = 0;
	unsigned taken = 0;

	run.seen = calloc(CLOSE_WRITERS, CLOSE_PER_WRITER + 1);
	for (unsigned w = 0; w < CLOSE_WRITERS; w++) {
		args[w] = (struct writer_arg){.run = &run, .w = w};
		pthread_create(&threads[w], NULL, writer_loop, &args[w]);
	}
	/* The collector takes until a third of the records went by... */
	while (taken < CLOSE_WRITERS * CLOSE_PER_WRITER / 3)
		if (pf_ring_take(run.h, &tail, &e) == 1) {
			took(&run, &e);
			taken++;
		}
	/* ...then the ring is closed mid-stream, and the closer takes every
	 * slot claimed before, in order. */
	uint64_t end = pf_ring_close(run.h);
	atomic_store(&run.closed, 1);
	cr_assert_eq(pf_ring_take_to_end(run.h, &tail, end, 5000000000L, false, took_to_end, &run), 0,
		     "a live writer's claimed slot was skipped");
	taken += run.taken;
	for (unsigned w = 0; w < CLOSE_WRITERS; w++)
		pthread_join(threads[w], NULL);
	unsigned put = 0;
	for (unsigned w = 0; w < CLOSE_WRITERS; w++)
		put += atomic_load(&run.put[w]);
	cr_assert(pf_ring_closed(run.h));
	cr_assert_not(pf_ring_put(run.h, &e), "a closed ring takes no more");
	cr_assert_eq(pf_ring_take(run.h, &tail, &e), 0, "nothing after the end");
	cr_assert_eq(atomic_load(&run.after_close), 0, "%u puts after the close", atomic_load(&run.after_close));
	cr_assert_eq(taken, put, "%u records taken of %u put", taken, put);
	cr_assert_eq(run.twice, 0);
	cr_assert_eq(run.disorder, 0);
	cr_assert_lt(put, CLOSE_WRITERS * CLOSE_PER_WRITER, "the close came mid-stream");
	free(run.seen);
	munmap(run.h, PF_RING_BYTES);
}

/* A slot claimed and never committed (its writer killed between the
 * two): pf_ring_take_to_end waits its time, skips it, says so, and takes
 * what follows in order. */
struct in_order {
	unsigned count;
	uint32_t attempts[4];
};

static void keep(const struct pf_ring_entry *e, void *opaque)
{
	struct in_order *seen = opaque;
	if (seen->count < 4)
		seen->attempts[seen->count] = e->attempts;
	seen->count++;
}

Test(ring, take_to_end_skips_a_slot_never_committed)
{
	struct pf_ring_header *h = new_ring();
	struct pf_ring_entry e;
	struct in_order seen = {0};
	uint64_t tail = 0;

	pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, NULL, 1, 0);
	cr_assert(pf_ring_put(h, &e));
	atomic_fetch_add(&h->head, 1);	/* claimed, never committed */
	pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, NULL, 3, 0);
	cr_assert(pf_ring_put(h, &e));
	uint64_t end = pf_ring_close(h);
	cr_assert_eq(end, 3);
	cr_expect_eq(pf_ring_take_to_end(h, &tail, end, 1000000L, false, keep, &seen), 1, "one slot skipped");
	cr_expect_eq(tail, 3);
	cr_assert_eq(seen.count, 2);
	cr_expect_eq(seen.attempts[0], 1);
	cr_expect_eq(seen.attempts[1], 3);
	munmap(h, PF_RING_BYTES);
}

/* The collector's take holds a slot until the record is written
 * (pf_ring_release): meanwhile a writer finds the ring full rather than
 * overwrite it, and a process taking the ring over (its collector died
 * before writing) takes the held record itself, in order, after its wait;
 * a release that comes during that wait leaves nothing to take twice. */
static struct pf_ring_header *ring_of(unsigned records)
{
	struct pf_ring_header *h = new_ring();
	struct pf_ring_entry e;

	for (unsigned i = 1; i <= records; i++) {
		pf_ring_entry_of(&e, PF_EVENT_ASSIGN, false, AF_INET, NULL, NULL, i, 0);
		cr_assert(pf_ring_put(h, &e), "slot %u", i);
	}
	return h;
}

Test(ring, held_slots_are_not_reused_and_are_taken_over_after_a_collector_dies)
{
	struct pf_ring_header *h = ring_of(PF_RING_SLOTS);
	struct pf_ring_entry e;
	struct in_order seen = {0};
	uint64_t tail = 0;

	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(pf_ring_hold(h, &tail, &e), PF_RING_MINE);
	cr_assert_eq(e.attempts, 3);
	cr_assert_not(pf_ring_put(h, &e), "a held slot is not free");
	cr_assert_eq(atomic_load(&h->tail), 0, "nothing released yet");
	/* The collector dies here.  Its process closes the ring and takes
	 * everything from the ring's tail: the three held records first. */
	uint64_t end = pf_ring_close(h), from = atomic_load(&h->tail);
	cr_assert_eq(pf_ring_take_to_end(h, &from, end, 1000000L, false, keep, &seen), 0, "nothing lost");
	cr_assert_eq(seen.count, PF_RING_SLOTS, "%u records taken over", seen.count);
	for (unsigned i = 0; i < 4; i++)
		cr_expect_eq(seen.attempts[i], i + 1, "in order");
	/* A collector that was only slow releases late: nothing happens. */
	pf_ring_release(h, 0, 3);
	cr_assert_eq(atomic_load(&h->tail), PF_RING_SLOTS);
	munmap(h, PF_RING_BYTES);
}

struct late_release {
	struct pf_ring_header *h;
	uint64_t to;
};

static void *release_later(void *arg)
{
	struct late_release *late = arg;
	struct timespec pause = {.tv_nsec = 20000000};

	nanosleep(&pause, NULL);
	pf_ring_release(late->h, 0, late->to);
	return NULL;
}

Test(ring, a_release_during_the_takeovers_wait_leaves_nothing_twice)
{
	struct pf_ring_header *h = ring_of(5);
	struct pf_ring_entry e;
	struct in_order seen = {0};
	uint64_t tail = 0;
	pthread_t collector;

	cr_assert_eq(pf_ring_hold(h, &tail, &e), PF_RING_MINE);
	cr_assert_eq(pf_ring_hold(h, &tail, &e), PF_RING_MINE);
	struct late_release late = {h, tail};
	pthread_create(&collector, NULL, release_later, &late);
	uint64_t end = pf_ring_close(h), from = atomic_load(&h->tail);
	cr_assert_eq(pf_ring_take_to_end(h, &from, end, 5000000000L, false, keep, &seen), 0);
	pthread_join(collector, NULL);
	cr_assert_eq(seen.count, 3, "the collector wrote two, the process takes three: %u", seen.count);
	cr_expect_eq(seen.attempts[0], 3);
	cr_expect_eq(seen.attempts[2], 5);
	munmap(h, PF_RING_BYTES);
}
