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
 * known, flowmemo.c), an algorithm whose first candidate draws nothing
 * (sequential, hash, double-hash), and memory showing that candidate's
 * 4-tuple clean.  Anything else (a candidate held, in quarantine or never
 * seen, a failed bind) gives the counter's value back and leaves the
 * socket unbound: the general path then makes the same first try, and
 * everything after it.  So the two agree on every port and record. */
#include <errno.h>
#include <netinet/in.h>

#include "core/hot.h"
#include "core/holds.h"
#include "core/walk.h"
#include "shim.h"

struct express {
	const struct pf_runtime *rt;
	struct pf_state *state;
	uint32_t now_ms;
	uint16_t port;
	struct pf_hold_ref hold;
	uint8_t fresh_state;	/* the fd's entry: FRESH, and PF_FD_V6 or not */
	struct pf_sock sock;
	struct sockaddr_storage source;	/* only its family's bytes are used */
};

#define EXPRESS_INLINE static inline __attribute__((always_inline))

/* The fd's entry, whose kind the express path knows (TCP, its family). */
EXPRESS_INLINE void set_state(int fd, uint8_t state)
{
	atomic_store_explicit(&pf_fd_table[fd].state, state, memory_order_relaxed);
}

/* Connected, or connecting: its port is taken, as the general path's
 * pf_sock_mark(PF_FD_DONE) leaves it (the kind, and our SO_REUSEADDR). */
EXPRESS_INLINE void mark_done(const struct express *x)
{
	set_state(x->sock.fd, (x->fresh_state & ~PF_FD_STATUS_MASK) | PF_FD_DONE | PF_FD_REUSE_OURS);
}

/* The question, from the fd table, the settled runtime and the
 * remembered decision alone. */
EXPRESS_INLINE bool express_applies(int fd, const struct sockaddr *dest, socklen_t len, struct express *x)
{
	if (fd < 0 || fd >= PF_FD_TABLE_SIZE || !dest)
		return false;
	uint8_t state = atomic_load_explicit(&pf_fd_table[fd].state, memory_order_relaxed);
	/* FRESH and nothing else: no address, no option, no earlier try. */
	if ((state & ~PF_FD_V6) != PF_FD_FRESH)
		return false;
	x->fresh_state = state;
	int family = state & PF_FD_V6 ? AF_INET6 : AF_INET;
	if (dest->sa_family != family || len < pf_address_len(family))
		return false;
	x->rt = atomic_load_explicit(&pf_runtime_settled, memory_order_acquire);
	if (!x->rt || !pf_connect_assigns(x->rt) || !pf_loopback_remote(dest))
		return false;
	x->sock = (struct pf_sock){
		.fd = fd, .status = PF_FD_FRESH, .family = family, .type = SOCK_STREAM,
		.protocol = IPPROTO_TCP,
	};
	return true;
}

/* The first candidate claimed in memory, its counter value taken; on
 * false *counter (when set) holds the value to give back. */
EXPRESS_INLINE bool claim_first(struct express *x, const struct sockaddr *dest,
				_Atomic uint32_t **counter, uint32_t *value)
{
	const struct pf_app *app = x->rt->app;
	x->state = pf_runtime_state(x->rt);
	x->now_ms = pf_hold_now_ms();
	struct pf_last_connect last = {
		.state = x->state, .dest = dest,
		.hashes_flow = pf_core_hashes_flow(app->algorithm),
		.generation = pf_source_generation(),
	};
	*counter = NULL;
	if (!pf_last_connect_get(&last, x->now_ms, &x->source) || !last.concrete)
		return false;
	struct pf_core_walk cw;
	*counter = pf_walk_first_counter(app->algorithm, app->range_lo, app->range_hi, &last.hashes,
					 x->state, &cw);
	if (!*counter)
		return false;
	*value = atomic_fetch_add_explicit(*counter, 1, memory_order_relaxed);
	x->port = (uint16_t)pf_core_counter_port(&cw, *value);
	x->hold = (struct pf_hold_ref){0};
	return pf_hold_claim_clean(x->state, (uint32_t)(x->port - app->range_lo),
				   pf_hold_key_at(last.hold, x->port), x->now_ms, PF_QUARANTINE_MS, &x->hold);
}

/* SO_REUSEADDR (a TCP client shares its port across destinations,
 * assign.c), then the bind; on failure the claim is released and errno
 * is as it was. */
EXPRESS_INLINE bool bind_first(struct express *x)
{
	int fd = x->sock.fd, one = 1, saved = errno;

	if (real_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0) {
		/* Ours, not the program's (setsockopt.c): FRESH had no option. */
		set_state(fd, x->fresh_state | PF_FD_REUSE_OURS);
		pf_set_port(&x->source, x->port);
		if (real_bind(fd, (struct sockaddr *)&x->source, pf_address_len(x->sock.family)) == 0)
			return true;
	}
	errno = saved;
	pf_hold_unclaim(x->state, &x->hold);
	return false;
}

/* What connect's failure leaves, as the general path's connect_bound
 * and its caller do: a 4-tuple taken after our look (EADDRNOTAVAIL) is
 * someone else's; a connect that failed at once holds nothing, and one
 * that failed for its route may have met a stale source. */
static PF_COLD int connect_failed(struct express *x, const struct sockaddr *dest, int error)
{
	const struct sockaddr *local = (const struct sockaddr *)&x->source;

	if (error == EADDRNOTAVAIL) {
		pf_hold_disown(x->state, &x->hold);
		mark_done(x);
		pf_audit_local(x->rt, &x->sock, PF_EVENT_ERROR, local, true, dest, 1, error);
		errno = error;
		return -1;
	}
	pf_hold_unclaim(x->state, &x->hold);
	if (pf_route_error(error))
		pf_source_forget(dest);
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
	int saved = errno;
	mark_done(&x);
	if (x.hold.slot)
		pf_fd_keep_hold(fd, &x.hold);
	pf_audit_local(x.rt, &x.sock, PF_EVENT_ASSIGN, (const struct sockaddr *)&x.source, true, dest, 1,
		       error);
	errno = saved;
	*result = connected;
	return true;
}
