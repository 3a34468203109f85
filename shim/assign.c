/* Why one file, past the ~450-line guideline: everything here is one
 * transaction on one struct attempt_ctx: claim a 4-tuple in the holds
 * table, ask the kernel, verify a quarantined port, bind, connect, and on
 * every failure release the claim and put the socket's options back.
 * Those release rules are easiest to check when every step that takes
 * or gives back a claim is in view; split by step, the context and its
 * rules would have to be exported to each piece.  The seam, should it
 * grow: the quarantine's verification (verify_*, note_recent) could move
 * to a file of its own behind attempt_ctx. */
/* Taking a port from the app's range for one socket, on that socket: it
 * is never replaced, so its epoll registrations, owner, filters and
 * options stay as the application set them.
 *
 * TCP clients bind with SO_REUSEADDR, so R ports serve R x D connections
 * to D destinations and a port in TIME_WAIT is reused at once.  Such a
 * bind succeeds even where the 4-tuple is taken, and connect() would
 * then fail on a socket that can never be bound again; so a 4-tuple is
 * known free before the bind: from the app's memory of what its own
 * processes hold (holds.h), else from the kernel (sockdiag.h).  A
 * 4-tuple released within the quarantine is handed out again only when
 * no other port is free, and only once the kernel shows its old
 * connection fully closed: a SYN sent while the peer still holds the old
 * connection stalls for a second.
 *
 * UDP, bind(0) and listen bind exclusively: with SO_REUSEADDR two UDP
 * sockets could share a 4-tuple and the newer would steal the replies. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/hot.h"
#include "core/holds.h"
#include "core/walk.h"
#include "fdholds.h"
#include "kernel/sockdiag.h"

#ifndef IP_LOCAL_PORT_RANGE
#define IP_LOCAL_PORT_RANGE 51
#endif

/* A 4-tuple released this recently may still be closing (FIN_WAIT1,
 * LAST_ACK: a connect there fails on a socket that can never be bound
 * again), or its peer may still hold the old connection (a SYN there
 * waits a second): it is handed out again only on the kernel's word.
 * Past this, memory alone clears it.  An abortive close (SO_LINGER 0)
 * releases at once.  See README, "The connect path". */
#define QUARANTINE_MS PF_QUARANTINE_MS

#define OLDEST_RECENT 4
/* After this many quarantined ports in one pick, the range is busy: the
 * kernel is asked of the longest released ones seen, instead of walking
 * on. */
#define RECENT_BEFORE_ASKING 8

/* When every 4-tuple is taken and some are only closing (ours closed:
 * FIN_WAIT1 until the peer acknowledges our FIN, which a peer delays
 * until it closes too; FIN_WAIT2 until the peer's FIN; TIME_WAIT entered
 * a few ms ago, see kernel/sockdiag.c), connect waits up to
 * LINGER_WAIT_US for one of them to reach settled TIME_WAIT (reusable at
 * once by a bound socket), asking the kernel again every LINGER_STEP_US,
 * rather than fail: on a busy machine the peer is late to close.  A
 * blocking connect waits for the SYN-ACK anyway; a non-blocking one may
 * take this long once the range is full.  It covers a fresh TIME_WAIT's
 * settling (up to 8 ms at HZ=250). */
#define LINGER_WAIT_US 10000
#define LINGER_STEP_US 200
#define SETTLE_GRACE_US 10000
#define LINGERING_MAX 16

/* Our own marker for "the socket was bound behind our back". */
#define ALREADY_BOUND (-100000)
/* connect() met a 4-tuple taken after we judged it free. */
#define LOST_RACE (-100001)
/* The first pass stops: enough quarantined ports were seen. */
#define ASK_KERNEL (-100002)

struct attempt_ctx {
	const struct pf_runtime *rt;
	struct pf_state *state;
	struct pf_sock *sock;
	struct pf_call *call;
	struct sockaddr_storage bind_addr;	/* the source; its port per try */
	socklen_t bind_len;
	bool tcp_client;
	bool shares_port;	/* bind with SO_REUSEADDR (TCP client, or its name) */
	bool concrete;		/* bind_addr names the source address */
	bool probed;		/* the kernel was asked for the source */
	bool verify;		/* second pass: ask the kernel of held ports */
	bool waiting;		/* rechecking the lingering ports: note none */
	/* The ports whose 4-tuple the kernel showed closing (FIN_WAIT1,
	 * FIN_WAIT2, CLOSING, LAST_ACK): soon TIME_WAIT, and free. */
	uint16_t lingering[LINGERING_MAX];
	unsigned lingering_count;
	unsigned settling_count;	/* the first of them, in TIME_WAIT already */
	bool settling_seen;	/* the last round of asking met one settling */
	/* The longest-released ports the first pass found in quarantine:
	 * the likeliest to be clean, so the kernel is asked of them first. */
	uint16_t oldest_recent[OLDEST_RECENT];
	uint32_t oldest_recent_age[OLDEST_RECENT];
	unsigned recent_seen;
	bool reuse_set;
	uint32_t now_ms;
	struct pf_hold_ref hold;
	/* The last claimant asked after (claimant_gone), and its answer. */
	uint32_t claimant_asked;
	bool claimant_dead;
	/* The hold table's hash of the destination (pf_flow_memo), once
	 * the pick has begun. */
	bool hold_hashed;
	uint64_t hold_hash;
	/* The flow's hashes, when the thread's last connect gave them. */
	bool hashes_known;
	struct pf_flow_hashes hashes;
	/* A loopback connect's source and hashes, to be remembered for
	 * the next connect to the same place (generation, learned_ms). */
	bool remember;
	uint32_t source_generation;
	uint32_t source_learned_ms;
};

PF_HOT ssize_t pf_perform(struct pf_sock *sock, struct pf_call *call)
{
	switch (call->action) {
	case PF_ACT_CONNECT:
		return real_connect(sock->fd, call->dest, call->dest_len);
	case PF_ACT_SENDTO:
		return real_sendto(sock->fd, call->buf, call->len, call->flags, call->dest,
				   call->dest_len);
	case PF_ACT_SENDMSG:
		return real_sendmsg(sock->fd, call->msg, call->flags);
	case PF_ACT_LISTEN:
		return real_listen(sock->fd, call->backlog);
	case PF_ACT_BIND:
	case PF_ACT_NAME:
		break;
	}
	return 0;
}

bool pf_program_defers_port(int fd)
{
	int no_port = 0, saved = errno;
	socklen_t len = sizeof(no_port);

	if (real_getsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &no_port, &len) < 0)
		no_port = 1;
	errno = saved;
	return no_port != 0;
}

/* bind(addr, 0) on a TCP socket binds the address only: the port comes
 * later, from the range, as the next call needs it: at connect shared
 * across destinations (like a plain connect), at listen exclusive, at
 * getsockname on a port none of the app's connections use.
 * IP_BIND_ADDRESS_NO_PORT does that in the kernel; it is put back as the
 * program left it. */
int pf_bind_address_only(struct pf_sock *sock, const struct sockaddr *addr, socklen_t len)
{
	int no_port = 0, one = 1;
	socklen_t option_len = sizeof(no_port);

	if (real_getsockopt(sock->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &no_port, &option_len) < 0)
		return real_bind(sock->fd, addr, len);
	if (!no_port)
		real_setsockopt(sock->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	int result = real_bind(sock->fd, addr, len);
	int saved = errno;
	if (!no_port)
		real_setsockopt(sock->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &no_port, sizeof(no_port));
	if (result == 0)
		pf_sock_mark(sock, PF_FD_FRESH | PF_FD_ADDRESS);
	errno = saved;
	return result;
}

static PF_HOT void record_result(struct pf_call *call, ssize_t result)
{
	call->result = result;
	call->result_errno = result < 0 ? errno : 0;
}

PF_HOT void pf_flow_of_call(const struct pf_call *call, const struct sockaddr_storage *local,
		     struct pf_flow *flow)
{
	memset(flow, 0, sizeof(*flow));
	if (local && local->ss_family == AF_INET) {
		flow->local_addr = (const uint8_t *)&((const struct sockaddr_in *)local)->sin_addr;
		flow->local_len = 4;
	} else if (local && local->ss_family == AF_INET6) {
		flow->local_addr = ((const struct sockaddr_in6 *)local)->sin6_addr.s6_addr;
		flow->local_len = 16;
	}
	const struct sockaddr *dest = call->dest;
	if (dest && dest->sa_family == AF_INET && call->dest_len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)dest;
		flow->remote_addr = (const uint8_t *)&sin->sin_addr;
		flow->remote_len = 4;
		flow->remote_port = ntohs(sin->sin_port);
	} else if (dest && dest->sa_family == AF_INET6 &&
		   call->dest_len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)dest;
		flow->remote_addr = sin6->sin6_addr.s6_addr;
		flow->remote_len = 16;
		flow->remote_port = ntohs(sin6->sin6_port);
	}
}

static PF_HOT uint32_t hold_key(const struct attempt_ctx *ctx, uint16_t port)
{
	struct pf_flow flow;

	if (ctx->hold_hashed)
		return pf_hold_key_at(ctx->hold_hash, port);
	pf_flow_of_call(ctx->call, NULL, &flow);
	return pf_hold_key(ctx->state->shared->hash_key, &flow, port);
}

/* The source address to ask the kernel about, learned on first need. */
static PF_COLD bool source_known(struct attempt_ctx *ctx)
{
	if (ctx->concrete)
		return true;
	if (ctx->probed)
		return false;
	ctx->probed = true;
	struct sockaddr_storage source;
	if (!pf_source_probe(ctx->call->dest, ctx->call->dest_len, &source))
		return false;
	if (pf_sock_routes_freely(ctx->sock)) {
		memcpy(&ctx->bind_addr, &source, sizeof(source));
		ctx->concrete = true;
	}
	return ctx->concrete;
}

/* Whether dest is on this host as far as can be told without asking:
 * a loopback address, or the source itself. */
static PF_COLD bool local_peer(const struct sockaddr *dest, const struct sockaddr *source)
{
	if (pf_loopback_remote(dest))
		return true;
	if (source->sa_family != dest->sa_family)
		return false;
	if (dest->sa_family == AF_INET)
		return ((const struct sockaddr_in *)source)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)dest)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)dest)->sin6_addr,
		      &((const struct sockaddr_in6 *)source)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* Keeps port among those to ask again.  A settling 4-tuple is sure to be
 * free within milliseconds, a closing one only once its peer acts (a
 * slow server leaves many in FIN_WAIT2): the settling ones go first and
 * take the place of a closing one when the list is full. */
static PF_COLD void note_lingering(struct attempt_ctx *ctx, uint16_t port, bool settling)
{
	if (ctx->waiting)
		return;
	if (!settling) {
		if (ctx->lingering_count < LINGERING_MAX)
			ctx->lingering[ctx->lingering_count++] = port;
		return;
	}
	if (ctx->settling_count == LINGERING_MAX)
		return;
	unsigned last = ctx->lingering_count < LINGERING_MAX ? ctx->lingering_count++ : LINGERING_MAX - 1;
	ctx->lingering[last] = ctx->lingering[ctx->settling_count];
	ctx->lingering[ctx->settling_count++] = port;
}

/* What the kernel says of (source, port, destination): true when a
 * connect there would succeed now; if_unknown when it cannot be asked. */
static PF_COLD bool kernel_clears(struct attempt_ctx *ctx, uint16_t port, bool if_unknown)
{
	if (!source_known(ctx))
		return if_unknown;
	pf_set_port(&ctx->bind_addr, port);
	const struct sockaddr *local = (const struct sockaddr *)&ctx->bind_addr;
	enum pf_tuple_use use = pf_tuple_use(local, ctx->call->dest);
	/* "Nothing there" in a busy range may be a lookup that met our
	 * socket as it turned into TIME_WAIT: the lookup runs unlocked, and
	 * one that reached the old socket just as it was freed misses the
	 * TIME_WAIT hashed in its place.  The connect then reuses a TIME_WAIT
	 * a few us old, and its SYN overtakes our last ACK (a 1 s stall, seen
	 * in the churn test).  A second look, after the swap, sees it. */
	if (use == PF_TUPLE_FREE && ctx->verify)
		use = pf_tuple_use(local, ctx->call->dest);
	if (use == PF_TUPLE_UNKNOWN)
		return if_unknown;
	/* Our side in TIME_WAIT (or gone), a peer on this host may still be
	 * in LAST_ACK for a moment (its socket was busy when our last ACK
	 * came): a SYN there is dropped with that ACK, or answered by an ACK
	 * and a reset, and sent again later.  Its side is asked too; while
	 * it holds the 4-tuple, it is closing, not yet free. */
	if ((use == PF_TUPLE_TIME_WAIT || (use == PF_TUPLE_FREE && ctx->verify)) &&
	    local_peer(ctx->call->dest, local)) {
		enum pf_tuple_use peer = pf_tuple_use(ctx->call->dest, local);
		if (peer == PF_TUPLE_CLOSING || peer == PF_TUPLE_LINGERING || peer == PF_TUPLE_BUSY)
			use = PF_TUPLE_CLOSING;
	}
	ctx->settling_seen |= use == PF_TUPLE_SETTLING;
	if (use == PF_TUPLE_LINGERING || use == PF_TUPLE_CLOSING || use == PF_TUPLE_SETTLING)
		note_lingering(ctx, port, use == PF_TUPLE_SETTLING);
	return use == PF_TUPLE_FREE || use == PF_TUPLE_TIME_WAIT;
}

/* Keeps port among the OLDEST_RECENT longest released: it takes an
 * empty place, or the place of the most recently released. */
static PF_COLD void note_recent(struct attempt_ctx *ctx, uint16_t port, uint32_t age)
{
	int youngest = 0;

	for (int i = 0; i < OLDEST_RECENT; i++) {
		if (!ctx->oldest_recent[i]) {
			youngest = i;
			break;
		}
		if (ctx->oldest_recent_age[i] < ctx->oldest_recent_age[youngest])
			youngest = i;
	}
	if (!ctx->oldest_recent[youngest] || age > ctx->oldest_recent_age[youngest]) {
		ctx->oldest_recent[youngest] = port;
		ctx->oldest_recent_age[youngest] = age;
	}
}

/* Whether the process behind the claim pf_hold_claim just judged has
 * died: killed, or gone by _exit, it closed nothing the shim saw, and its
 * claim would stand for a second as a connect under way.  Asked only in
 * the second pass, once memory has found the range busy; a zombie
 * counts as alive (its sockets are closed, but it answers kill), and a
 * process of another pid namespace as its namesake here, if any. */
static PF_COLD bool claimant_gone(struct attempt_ctx *ctx)
{
	uint32_t pid = pf_hold_claimant(&ctx->hold);

	if (!pid || pid == (uint32_t)pf_cached_pid())
		return false;
	if (pid != ctx->claimant_asked) {
		int saved = errno;
		ctx->claimant_asked = pid;
		ctx->claimant_dead = kill((pid_t)pid, 0) < 0 && errno == ESRCH;
		errno = saved;
	}
	return ctx->claimant_dead;
}

/* Claims (source, port, destination) for this socket when it is free:
 * memory answers for what the app holds, the kernel for the rest.  A
 * held or recently released 4-tuple is only asked about once memory has
 * found the range busy.  PF_TRY_TAKEN (claimed), PF_TRY_BUSY or
 * ASK_KERNEL. */
static PF_HOT int claim_tuple(struct attempt_ctx *ctx, uint16_t port, uint32_t key)
{
	uint32_t offset = (uint32_t)(port - ctx->rt->app->range_lo);
	enum pf_hold_verdict seen =
		pf_hold_claim(ctx->state, offset, key, ctx->now_ms, QUARANTINE_MS, &ctx->hold);

	if (seen == PF_HOLD_FREE)
		return PF_TRY_TAKEN;
	if (seen == PF_HOLD_UNKNOWN) {
		if (kernel_clears(ctx, port, !ctx->verify))
			return PF_TRY_TAKEN;
		/* Held by a socket we had no record of: the claim marks it. */
		pf_hold_disown(ctx->state, &ctx->hold);
		return PF_TRY_BUSY;
	}
	if (seen == PF_HOLD_RECENT && !ctx->verify) {
		note_recent(ctx, port, pf_hold_seen_age(&ctx->hold, ctx->now_ms));
		ctx->hold.slot = 0;
		return ++ctx->recent_seen >= RECENT_BEFORE_ASKING ? ASK_KERNEL : PF_TRY_BUSY;
	}
	if (ctx->verify && (seen != PF_HOLD_CLAIMED || claimant_gone(ctx)) && kernel_clears(ctx, port, false) &&
	    pf_hold_reclaim(ctx->state, &ctx->hold))
		return PF_TRY_TAKEN;
	ctx->hold.slot = 0;
	return PF_TRY_BUSY;
}

static PF_HOT int bind_port(struct attempt_ctx *ctx, uint16_t port)
{
	int fd = ctx->sock->fd, one = 1;

	if (ctx->shares_port && !ctx->reuse_set) {
		if (!pf_sock_reuse_set_by_app(ctx->sock)) {
			if (real_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
				return -errno;
			pf_sock_note_our_reuse(ctx->sock);
		}
		ctx->reuse_set = true;
	}
	pf_set_port(&ctx->bind_addr, port);
	if (real_bind(fd, (struct sockaddr *)&ctx->bind_addr, ctx->bind_len) == 0)
		return PF_TRY_TAKEN;
	/* EACCES: a privileged port this process may not use. */
	if (errno == EADDRINUSE || errno == EACCES)
		return PF_TRY_BUSY;
	if (errno == EADDRNOTAVAIL && ctx->concrete && !ctx->sock->address_bound) {
		/* The learned address is gone: bind the wildcard. */
		pf_source_forget(ctx->call->dest);
		pf_wildcard_of(ctx->sock->family, &ctx->bind_addr);
		ctx->concrete = false;
		return bind_port(ctx, port);
	}
	if (errno == EINVAL && pf_sock_has_port(ctx->sock))
		return ALREADY_BOUND;
	return -errno;
}

/* A connect that failed at once leaves nothing behind on the 4-tuple;
 * one that failed for its route may have met a stale source. */
static PF_COLD void connect_failed(struct attempt_ctx *ctx, int error)
{
	pf_hold_unclaim(ctx->state, &ctx->hold);
	if (ctx->concrete && pf_route_error(error))
		pf_source_forget(ctx->call->dest);
}

static PF_HOT int attempt_port(void *opaque, uint16_t port)
{
	struct attempt_ctx *ctx = opaque;

	if (ctx->tcp_client) {
		int claimed = claim_tuple(ctx, port, hold_key(ctx, port));
		if (claimed != PF_TRY_TAKEN)
			return claimed;
	}
	/* A port named before its connect should suit any destination. */
	if (ctx->call->action == PF_ACT_NAME && !ctx->verify &&
	    !pf_hold_port_idle(ctx->state, (uint32_t)(port - ctx->rt->app->range_lo), ctx->now_ms))
		return PF_TRY_BUSY;
	int rc = bind_port(ctx, port);
	if (rc != PF_TRY_TAKEN)
		pf_hold_unclaim(ctx->state, &ctx->hold);
	return rc;
}

/* A TCP client's connect, once the pick has claimed and bound its port.
 * Made here, not inside the algorithm's walk (which never goes on after
 * a connect), so that few frames are left to return through after the
 * kernel's work: each such return is mispredicted, the kernel's own calls
 * having taken the return stack.  Then the lines the next steps write are
 * asked for at once, so that their cache misses overlap. */
static PF_HOT int connect_bound(struct attempt_ctx *ctx)
{
	ssize_t result = pf_perform(ctx->sock, ctx->call);
	int error = result < 0 ? errno : 0;

	__builtin_prefetch(&pf_fd_table[ctx->sock->fd], 1, 3);
	__builtin_prefetch(&ctx->state->shared->assignments, 1, 3);
	record_result(ctx->call, result);
	if (error == EADDRNOTAVAIL) {
		/* Taken by a socket that came after our check. */
		pf_hold_disown(ctx->state, &ctx->hold);
		return LOST_RACE;
	}
	/* A connected (or connecting) socket's claim is left as it is, not
	 * settled HELD: that was one more cache miss here.  Others see it
	 * busy either way; a claim older than a second counts as held, and
	 * the close releases it (core/holds.c). */
	if (error && error != EINPROGRESS && error != EINTR)
		connect_failed(ctx, error);
	return PF_TRY_TAKEN;
}

static PF_HOT bool hashes_flow(const struct attempt_ctx *ctx)
{
	return pf_core_hashes_flow(ctx->rt->app->algorithm);
}

/* The learned source toward the destination.  A connect to a loopback
 * place (whose source no route change moves) takes it, and the flow's
 * hashes, from the thread's last connect there when nothing was learned
 * or forgotten since; else it looks them up, and pick_port remembers
 * them. */
static PF_HOT void find_source(struct attempt_ctx *ctx)
{
	const struct pf_call *call = ctx->call;

	if (call->action != PF_ACT_CONNECT || !pf_loopback_remote(call->dest)) {
		ctx->concrete = pf_source_lookup(call->dest, ctx->now_ms, &ctx->bind_addr, NULL);
		return;
	}
	struct pf_last_connect last = {
		.state = ctx->state, .dest = call->dest, .hashes_flow = hashes_flow(ctx),
		.generation = pf_source_generation(),
	};
	if (pf_last_connect_get(&last, ctx->now_ms, &ctx->bind_addr)) {
		ctx->concrete = last.concrete;
		ctx->hashes = last.hashes;
		ctx->hashes_known = true;
		ctx->hold_hash = last.hold;
		ctx->hold_hashed = true;
		return;
	}
	ctx->concrete = pf_source_lookup(call->dest, ctx->now_ms, &ctx->bind_addr, &ctx->source_learned_ms);
	ctx->remember = true;
	ctx->source_generation = last.generation;
}

/* What find_source looked up, and the hashes pick_port computed, for
 * the thread's next connect to the same place. */
static PF_HOT void remember_last(const struct attempt_ctx *ctx, const struct pf_flow_hashes *hashes)
{
	struct pf_last_connect last = {
		.state = ctx->state, .dest = ctx->call->dest, .hashes_flow = hashes_flow(ctx),
		.generation = ctx->source_generation, .concrete = ctx->concrete,
		.learned_ms = ctx->source_learned_ms, .source = &ctx->bind_addr, .hashes = *hashes,
		.hold = ctx->hold_hash,
	};
	pf_last_connect_put(&last);
}

static PF_HOT void fill_bind_addr(struct attempt_ctx *ctx)
{
	const struct pf_call *call = ctx->call;

	/* bind_addr starts zeroed over a sockaddr_in6: attempt_ctx_init. */
	if (call->action == PF_ACT_BIND) {
		memcpy(&ctx->bind_addr, call->bind_addr, call->bind_len);
		ctx->bind_len = call->bind_len;
		return;
	}
	ctx->bind_addr.ss_family = (sa_family_t)ctx->sock->family;
	ctx->bind_len = pf_address_len(ctx->sock->family);
	/* An address the application bound without a port is kept. */
	socklen_t len = sizeof(ctx->bind_addr);
	if (ctx->sock->address_bound &&
	    real_getsockname(ctx->sock->fd, (struct sockaddr *)&ctx->bind_addr, &len) == 0) {
		ctx->bind_len = len;
		ctx->concrete = true;
		return;
	}
	if (ctx->tcp_client && pf_sock_routes_freely(ctx->sock))
		find_source(ctx);
}

static PF_HOT ssize_t finish(struct pf_call *call)
{
	errno = call->result_errno;
	return call->result;
}

/* Algorithm kernel: IP_LOCAL_PORT_RANGE, then the kernel picks. */
static PF_COLD ssize_t assign_by_kernel(const struct pf_runtime *rt, struct pf_sock *sock,
				struct pf_call *call, int exhausted_errno)
{
	uint32_t range = (uint32_t)rt->app->range_lo | ((uint32_t)rt->app->range_hi << 16);
	/* What the record shows when the kernel gave no port. */
	struct sockaddr_storage requested = {.ss_family = (sa_family_t)sock->family};

	if (real_setsockopt(sock->fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &range, sizeof(range)) < 0) {
		int error = errno;
		pf_audit_socket(rt, sock, PF_EVENT_ERROR, (const struct sockaddr *)&requested,
				call->dest, 0, error);
		errno = error;
		return -1;
	}
	if (call->action == PF_ACT_BIND || call->action == PF_ACT_NAME) {
		memcpy(&requested, call->bind_addr, call->bind_len);
		record_result(call, real_bind(sock->fd, call->bind_addr, call->bind_len));
	} else {
		record_result(call, pf_perform(sock, call));
	}
	bool exhausted = call->result < 0 && call->result_errno == exhausted_errno;
	if (!exhausted)
		pf_sock_mark(sock, PF_FD_DONE);
	pf_audit_socket(rt, sock, exhausted ? PF_EVENT_ERROR : PF_EVENT_ASSIGN,
			(const struct sockaddr *)&requested, call->dest, 1,
			call->result_errno);
	return finish(call);
}

/* When every port looked busy to memory, the kernel is asked of each:
 * memory may hold 4-tuples of processes that died without closing. */
static PF_COLD int verify_port(struct attempt_ctx *ctx, struct pf_pick *pick, uint16_t port)
{
	pick->attempts++;
	int rc = attempt_port(ctx, port);
	if (rc == PF_TRY_TAKEN)
		pick->port = port;
	return rc;
}

/* The quarantined ports the first pass saw, longest released first. */
static PF_COLD int verify_oldest_recent(struct attempt_ctx *ctx, struct pf_pick *pick)
{
	for (int n = 0; n < OLDEST_RECENT; n++) {
		int oldest = -1;
		for (int i = 0; i < OLDEST_RECENT; i++)
			if (ctx->oldest_recent[i] &&
			    (oldest < 0 || ctx->oldest_recent_age[i] > ctx->oldest_recent_age[oldest]))
				oldest = i;
		if (oldest < 0)
			break;
		uint16_t port = ctx->oldest_recent[oldest];
		ctx->oldest_recent[oldest] = 0;
		int rc = verify_port(ctx, pick, port);
		if (rc != PF_TRY_BUSY)
			return rc;
	}
	return PF_TRY_BUSY;
}

static PF_COLD void pause_us(long us)
{
	struct timespec pause = {.tv_nsec = us * 1000};
	int saved = errno;

	/* The raw call: no cancellation point inside the shim's work. */
	syscall(SYS_nanosleep, &pause, NULL);
	errno = saved;
}

/* The ports seen closing, asked about again until one is free or
 * LINGER_WAIT_US has passed. */
static PF_COLD int wait_for_lingering(struct attempt_ctx *ctx, struct pf_pick *pick)
{
	if (!ctx->lingering_count)
		return PF_TRY_BUSY;
	long deadline = pf_monotonic_ns() + LINGER_WAIT_US * 1000L;
	ctx->waiting = true;
	do {
		pause_us(LINGER_STEP_US);
		ctx->now_ms = pf_hold_now_ms();
		ctx->settling_seen = false;
		for (unsigned i = 0; i < ctx->lingering_count; i++) {
			int rc = verify_port(ctx, pick, ctx->lingering[i]);
			if (rc != PF_TRY_BUSY)
				return rc;
		}
		/* A port that reached TIME_WAIT during the wait is free once
		 * it settles: that is worth a few ms more. */
	} while (pf_monotonic_ns() < deadline + (ctx->settling_seen ? SETTLE_GRACE_US * 1000L : 0));
	return PF_TRY_BUSY;
}

static PF_COLD int verify_walk(struct attempt_ctx *ctx, struct pf_pick *pick)
{
	uint16_t lo = ctx->rt->app->range_lo, hi = ctx->rt->app->range_hi;

	ctx->verify = true;
	int first = verify_oldest_recent(ctx, pick);
	if (first != PF_TRY_BUSY)
		return first;
	for (uint32_t port = lo; port <= hi; port++) {
		int rc = verify_port(ctx, pick, (uint16_t)port);
		if (rc != PF_TRY_BUSY)
			return rc;
	}
	/* No clean 4-tuple anywhere, even after the wait: the range is
	 * exhausted, as the kernel says of it.  A 4-tuple the peer has not
	 * closed (FIN_WAIT2) is never taken: its SYN meets the peer's old
	 * connection (CLOSE_WAIT), whose challenge ACK the SYN_SENT socket
	 * answers with a reset, and is sent again 8 ms later; and when the
	 * peer's FIN comes between our look and the connect, the peer's last
	 * ACK and our SYN reach its socket together, the SYN after the socket
	 * is gone, and nothing answers for a second (3 of 71 runs of the
	 * churn test, 7 to 93 resets a run).  The kernel does not reuse such
	 * a 4-tuple within tcp_tw_reuse_delay (1 s) either.  The cost: a
	 * server that lags more than the wait behind makes connects fail
	 * (20,000 cycles through 10 ports beside the hog: 0-400 failures,
	 * 0-6 before). */
	int waited = wait_for_lingering(ctx, pick);
	return waited == PF_TRY_BUSY ? PF_EXHAUSTED : waited;
}

static PF_HOT int pick_port(struct attempt_ctx *ctx, struct pf_pick *pick)
{
	const struct pf_app *app = ctx->rt->app;
	struct pf_flow flow;
	struct pf_flow_hashes hashes;

	if (ctx->hashes_known) {
		hashes = ctx->hashes;
	} else {
		pf_flow_of_call(ctx->call, &ctx->bind_addr, &flow);
		pf_flow_memo(ctx->state, &flow, hashes_flow(ctx), &hashes, &ctx->hold_hash);
		ctx->hold_hashed = true;
		if (ctx->remember)
			remember_last(ctx, &hashes);
	}
	/* Inlined (core/walk.h): attempt_port is called directly. */
	int rc = pf_walk_pick(app->algorithm, app->range_lo, app->range_hi, NULL, &hashes, ctx->state,
			      pf_thread_rng(), attempt_port, ctx, pick);
	if (rc == ASK_KERNEL)
		rc = PF_EXHAUSTED;
	if (rc == PF_EXHAUSTED && ctx->call->action == PF_ACT_NAME) {
		/* Every port holds a connection of the app (or memory thinks
		 * so): any port the kernel lets us bind will do. */
		ctx->verify = true;
		pf_flow_of_call(ctx->call, &ctx->bind_addr, &flow);
		rc = pf_algorithm_pick(app->algorithm, app->range_lo, app->range_hi, &flow, ctx->state,
				       pf_thread_rng(), attempt_port, ctx, pick);
	}
	if (rc == PF_EXHAUSTED && ctx->tcp_client) {
		unsigned first_pass = pick->attempts;
		rc = verify_walk(ctx, pick);
		if (rc == PF_EXHAUSTED)
			pick->attempts = first_pass;
	}
	return rc;
}

/* A failed bind to (address, port) unbinds the address too: the
 * program's address-only bind is put back. */
static PF_COLD void restore_address(struct attempt_ctx *ctx)
{
	int saved = errno;

	pf_set_port(&ctx->bind_addr, 0);
	pf_bind_address_only(ctx->sock, (const struct sockaddr *)&ctx->bind_addr, ctx->bind_len);
	errno = saved;
}

static PF_HOT ssize_t assigned(struct attempt_ctx *ctx, const struct pf_pick *pick)
{
	struct pf_call *call = ctx->call;
	struct pf_sock *sock = ctx->sock;

	pf_sock_mark(sock, PF_FD_DONE);
	if (ctx->hold.slot)
		pf_fd_keep_hold(sock->fd, &ctx->hold);
	if (!ctx->tcp_client)
		record_result(call, pf_perform(sock, call));
	const struct sockaddr *local = (const struct sockaddr *)&ctx->bind_addr;
	bool local_exact = ctx->concrete;
	/* The getsockname that teaches the source also gives the record's
	 * local address. */
	if (ctx->tcp_client && !ctx->concrete &&
	    (call->result == 0 || call->result_errno == EINPROGRESS) &&
	    pf_sock_local(sock, &ctx->bind_addr)) {
		pf_source_learn(call->dest, local);
		local_exact = true;
	}
	pf_audit_local(ctx->rt, sock, PF_EVENT_ASSIGN, local, local_exact, call->dest,
		       pick->attempts, call->result_errno);
	return finish(call);
}

/* The context of one pick.  Not zeroed whole (a fifth of the shim's own
 * work per connect was clearing it): the lists are read only below
 * their counts, the ages only where a port is noted, and of the source
 * only its family's sockaddr. */
static PF_HOT void attempt_ctx_init(struct attempt_ctx *ctx, const struct pf_runtime *rt,
				    struct pf_sock *sock, struct pf_call *call,
				    const struct pf_decision *decision)
{
	ctx->rt = rt;
	ctx->state = pf_runtime_state(rt);
	ctx->sock = sock;
	ctx->call = call;
	memset(&ctx->bind_addr, 0, sizeof(struct sockaddr_in6));
	ctx->bind_len = 0;
	ctx->tcp_client = decision->tcp_client;
	ctx->shares_port = decision->shares_port;
	ctx->concrete = ctx->probed = ctx->verify = ctx->waiting = false;
	ctx->claimant_asked = 0;
	ctx->lingering_count = ctx->settling_count = 0;
	ctx->settling_seen = false;
	memset(ctx->oldest_recent, 0, sizeof(ctx->oldest_recent));
	ctx->recent_seen = 0;
	ctx->reuse_set = false;
	ctx->now_ms = pf_hold_now_ms();
	ctx->hold = (struct pf_hold_ref){0};
	ctx->hold_hashed = false;
	ctx->hold_hash = 0;
	ctx->hashes_known = false;
	ctx->remember = false;
}

PF_HOT ssize_t pf_assign_and_call(const struct pf_runtime *rt, struct pf_sock *sock,
			   struct pf_call *call, const struct pf_decision *decision)
{
	struct pf_pick pick;

	if (rt->app->algorithm == PF_ALGO_KERNEL)
		return assign_by_kernel(rt, sock, call, decision->exhausted);
	struct attempt_ctx ctx;
	attempt_ctx_init(&ctx, rt, sock, call, decision);
	fill_bind_addr(&ctx);
	int rc = pick_port(&ctx, &pick);
	if (rc == PF_TRY_TAKEN && ctx.tcp_client)
		rc = connect_bound(&ctx);
	if (rc == ALREADY_BOUND) {
		/* Bound through a path we did not see: it keeps its port. */
		pf_sock_mark(sock, PF_FD_DONE);
		record_result(call, call->action == PF_ACT_BIND ? (errno = EINVAL, -1)
								: pf_perform(sock, call));
		return finish(call);
	}
	if (rc == PF_TRY_TAKEN || rc == 0)
		return assigned(&ctx, &pick);
	int error = rc == PF_EXHAUSTED ? decision->exhausted
		    : rc == LOST_RACE ? EADDRNOTAVAIL : -rc;
	if (rc == LOST_RACE)
		pf_sock_mark(sock, PF_FD_DONE);
	else if (sock->address_bound)
		restore_address(&ctx);
	pf_audit_local(rt, sock, PF_EVENT_ERROR, (const struct sockaddr *)&ctx.bind_addr,
		       true, call->dest, pick.attempts, error);
	errno = error;
	return -1;
}
