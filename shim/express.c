/* connect's express path: the common connect made in one pass, in a few
 * lines of code and stack, where the general path (calls.c, assign.c)
 * builds a question, a pick context and a walk (docs/performance.md,
 * 2026-12-04: what a connect costs above its system calls is mostly the
 * lines it brings back after the kernel's work).
 *
 * It takes the connect only when nothing but the steady state can
 * happen: a fresh TCP socket the program bound to nothing and set no
 * option on (SO_REUSEADDR, routing), an app whose remembered answer to a
 * connect is to take a port as a TCP client, a loopback destination its
 * thread last connected to (the source learned and the flow's hashes
 * known, flowmemo.c: the thread's plan below keeps what follows from
 * them), an algorithm whose first candidate draws nothing
 * (sequential, hash, double-hash), and memory showing that candidate's
 * 4-tuple clean.  Anything else (a candidate held, in quarantine or never
 * seen, a failed bind) gives the counter's value back and leaves the
 * socket unbound: the general path then makes the same first try, and
 * everything after it.  So the two agree on every port and record. */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "core/hot.h"
#include "core/holds.h"
#include "core/walk.h"
#include "fdholds.h"

/* The thread's plan for the place it last connected to: what the express
 * path derives from the destination and does not change from one connect
 * to the next (the walk's counter and offset, the learned source, the
 * held-4-tuple hash).  The first line is what a connect compares, draws
 * and holds with, the second the source it binds.  Valid while the
 * learned source is (its generation and age, flowmemo.c); the runtime and
 * its remembered answer to a connect never change once settled. */
static __thread struct {
	bool busy;	/* a lookup under way: a signal handler's connect declines */
	bool valid;
	uint16_t lo;
	uint32_t num;
	uint32_t offset;
	uint32_t generation;
	uint32_t learned_ms;
	uint64_t dest[3];	/* the sockaddr's first 24 bytes (8 for AF_INET) */
	_Atomic uint32_t *counter;
	uint64_t hold_hash;
	struct sockaddr_in6 source;	/* or a sockaddr_in */
} plan __attribute__((tls_model("initial-exec"), aligned(64)));

/* What one connect takes from the plan. */
struct express {
	const struct pf_runtime *rt;
	uint32_t now_ms;
	uint16_t port;
	uint8_t fresh_state;	/* the fd's entry: FRESH, and PF_FD_V6 or not */
	int fd;
	uint32_t port_offset;	/* port - the range's first */
	uint32_t key;		/* the 4-tuple's, in the held table */
	struct pf_hold_ref hold;
	struct sockaddr_in6 source;	/* or a sockaddr_in */
};

#define EXPRESS_INLINE static inline __attribute__((always_inline))

EXPRESS_INLINE int express_family(const struct express *x)
{
	return x->fresh_state & PF_FD_V6 ? AF_INET6 : AF_INET;
}

/* The fd's entry, whose kind the express path knows (TCP, its family). */
EXPRESS_INLINE void set_state(int fd, uint8_t state)
{
	atomic_store_explicit(&pf_fd_table[fd].state, state, memory_order_relaxed);
}

/* Connected, or connecting: its port is taken, as the general path's
 * pf_sock_mark(PF_FD_DONE) leaves it (the kind, and our SO_REUSEADDR). */
EXPRESS_INLINE void mark_done(const struct express *x)
{
	set_state(x->fd, (x->fresh_state & ~PF_FD_STATUS_MASK) | PF_FD_DONE | PF_FD_REUSE_OURS);
}

/* The destination as the plan keeps it. */
EXPRESS_INLINE void dest_words(const struct sockaddr *dest, uint64_t words[3])
{
	memcpy(words, dest, sizeof(uint64_t));
	words[1] = words[2] = 0;
	if (dest->sa_family == AF_INET6)
		memcpy(words + 1, (const char *)dest + sizeof(uint64_t), 2 * sizeof(uint64_t));
}

/* The plan for dest, made from the thread's last connect there
 * (flowmemo.c) when the app takes a port as a TCP client and the place
 * is a loopback one whose source is learned. */
static PF_COLD __attribute__((noinline)) bool plan_make(const struct express *x, const struct sockaddr *dest)
{
	plan.valid = false;
	/* No app (pass, or a policy that cannot be used): nothing to plan,
	 * and no app to read. */
	if (!pf_connect_assigns(x->rt) || !pf_loopback_remote(dest))
		return false;
	const struct pf_app *app = x->rt->app;
	struct pf_state *state = pf_runtime_state(x->rt);
	struct sockaddr_storage source;
	struct pf_last_connect last = {
		.state = state, .dest = dest, .hashes_flow = pf_core_hashes_flow(app->algorithm),
		.generation = pf_source_generation(),
	};
	struct pf_core_walk cw;

	if (!pf_last_connect_get(&last, x->now_ms, &source) || !last.concrete)
		return false;
	plan.counter = pf_walk_first_counter(app->algorithm, app->range_lo, app->range_hi, &last.hashes,
					     state, &cw);
	if (!plan.counter)
		return false;
	plan.lo = (uint16_t)cw.lo;
	plan.num = cw.num;
	plan.offset = cw.offset;
	plan.generation = last.generation;
	plan.learned_ms = last.learned_ms;
	dest_words(dest, plan.dest);
	plan.hold_hash = last.hold;
	memcpy(&plan.source, &source, sizeof(plan.source));
	plan.valid = true;
	return true;
}

/* Whether the plan is for the destination of words and still good (its
 * counter lives in the runtime's state, which never changes once settled). */
EXPRESS_INLINE bool plan_fits(const struct express *x, const uint64_t words[3])
{
	uint64_t differ = (words[0] ^ plan.dest[0]) | (words[1] ^ plan.dest[1]) | (words[2] ^ plan.dest[2]);

	return plan.valid && differ == 0 && plan.generation == pf_source_generation() &&
	       (uint32_t)(x->now_ms - plan.learned_ms) < PF_SOURCE_TTL_MS;
}

/* The walk's first try from the plan for dest, still good at x->now_ms:
 * its counter, the value taken from it, the port and its 4-tuple's key.
 * False, nothing taken, when there is no such plan. */
EXPRESS_INLINE bool plan_draw(struct express *x, const struct sockaddr *dest, _Atomic uint32_t **counter,
			      uint32_t *value)
{
	uint64_t words[3];
	bool drawn = false;

	if (!pf_reentry_enter(&plan.busy))
		return false;
	dest_words(dest, words);
	if (plan_fits(x, words) || plan_make(x, dest)) {
		*counter = plan.counter;
		*value = atomic_fetch_add_explicit(plan.counter, 1, memory_order_relaxed);
		x->port_offset = (*value + plan.offset) % plan.num;
		x->port = (uint16_t)(plan.lo + x->port_offset);
		x->key = pf_hold_key_at(plan.hold_hash, x->port);
		memcpy(&x->source, &plan.source, sizeof(x->source));
		drawn = true;
	}
	pf_reentry_leave(&plan.busy);
	return drawn;
}

/* The question, from the fd table and the settled runtime. */
EXPRESS_INLINE bool express_applies(int fd, const struct sockaddr *dest, socklen_t len, struct express *x)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE || !pf_user_readable(dest, len))
		return false;
	uint8_t state = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed);
	/* FRESH and nothing else: no address, no option, no earlier try. */
	if ((state & ~PF_FD_V6) != PF_FD_FRESH)
		return false;
	x->fresh_state = state;
	x->fd = fd;
	int family = express_family(x);
	if (dest->sa_family != family || len < pf_address_len(family))
		return false;
	x->rt = atomic_load_explicit(&pf_runtime_settled, memory_order_acquire);
	return x->rt != NULL;
}

/* The first candidate claimed in memory, its counter value taken; on
 * false *counter (when set) holds the value to give back. */
EXPRESS_INLINE bool claim_first(struct express *x, const struct sockaddr *dest,
				_Atomic uint32_t **counter, uint32_t *value)
{
	*counter = NULL;
	x->now_ms = pf_hold_now_ms();
	if (!plan_draw(x, dest, counter, value))
		return false;
	x->hold = (struct pf_hold_ref){0};
	return pf_hold_claim_clean(pf_runtime_state(x->rt), x->port_offset, x->key, x->now_ms,
				   PF_QUARANTINE_MS, &x->hold);
}

/* SO_REUSEADDR (a TCP client shares its port across destinations,
 * assign.c), then the bind; on failure the claim is released and errno
 * is as it was. */
EXPRESS_INLINE bool bind_first(struct express *x)
{
	int one = 1, saved = errno;

	if (real_setsockopt(x->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0) {
		/* Ours, not the program's (setsockopt.c): FRESH had no option. */
		set_state(x->fd, x->fresh_state | PF_FD_REUSE_OURS);
		/* sin_port and sin6_port share their place. */
		x->source.sin6_port = htons(x->port);
		if (real_bind(x->fd, (struct sockaddr *)&x->source, pf_address_len(express_family(x))) == 0)
			return true;
	}
	errno = saved;
	pf_hold_unclaim(pf_runtime_state(x->rt), &x->hold);
	return false;
}

/* The connect's record (and the app's counters): apart, so that its
 * frame is not the express path's. */
static PF_HOT __attribute__((noinline)) void express_record(const struct express *x, enum pf_event event,
							     const struct sockaddr *dest, int error)
{
	int family = express_family(x), saved = errno;
	struct pf_sock sock = {
		.fd = x->fd, .status = PF_FD_FRESH, .family = family, .type = SOCK_STREAM,
		.protocol = IPPROTO_TCP,
	};
	struct pf_record record = {
		.event = event, .sock = &sock, .local = (const struct sockaddr *)&x->source, .remote = dest,
		.attempts = 1, .error = error,
	};

	pf_audit(x->rt, &record);
	errno = saved;
}

/* What connect's failure leaves, as the general path's connect_bound
 * and its caller do: a 4-tuple taken after our look (EADDRNOTAVAIL) is
 * someone else's; a connect that failed at once holds nothing, and one
 * that failed for its route may have met a stale source. */
static PF_COLD int connect_failed(struct express *x, const struct sockaddr *dest, int error)
{
	if (error == EADDRNOTAVAIL) {
		pf_hold_disown(pf_runtime_state(x->rt), &x->hold);
		mark_done(x);
		express_record(x, PF_EVENT_ERROR, dest, error);
		errno = error;
		return -1;
	}
	pf_hold_unclaim(pf_runtime_state(x->rt), &x->hold);
	if (pf_route_error(error))
		pf_source_forget(dest);
	errno = error;
	return 0;
}

PF_HOT bool pf_connect_express(int fd, const struct sockaddr *dest, socklen_t len, int *result)
{
	struct express x;
	_Atomic uint32_t *counter;
	uint32_t value;

	if (!express_applies(fd, dest, len, &x))
		return false;
	if (!claim_first(&x, dest, &counter, &value) || !bind_first(&x)) {
		/* A value another process took meanwhile stays taken: to each
		 * walk, one more value someone else used. */
		if (counter)
			atomic_compare_exchange_strong(counter, &(uint32_t){value + 1}, value);
		return false;
	}
	int connected = real_connect(fd, dest, len);
	int error = connected < 0 ? errno : 0;
	if (error && error != EINPROGRESS && error != EINTR && connect_failed(&x, dest, error) < 0) {
		*result = -1;
		return true;
	}
	/* Memory only from here (errno stays connect's) but for the record. */
	mark_done(&x);
	if (x.hold.slot)
		pf_fd_keep_hold(fd, &x.hold);
	/* No notice is said of an assignment: without records, only the
	 * count (pf_audit's). */
	if (pf_logging())
		express_record(&x, PF_EVENT_ASSIGN, dest, error);
	else
		pf_count_assignment(x.rt);
	*result = connected;
	return true;
}
