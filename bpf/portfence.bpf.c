/* The BPF backend: cgroup socket hooks that give every client socket of a
 * confined cgroup a port from its app's range, refuse what the app's rules
 * deny, and hand a record of each decision to user space.  Each decision
 * has one function, named like its counterpart in policy/ or shim/:
 * pf_app_permits (rules), pf_algorithm_pick (the port), pf_audit (the
 * record).  One loaded object serves one app; the loader fills its maps
 * from the policy and the app's state. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "bpf/portfence_api.h"
#include "bpf/rules_api.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define EPERM 1
#define EAGAIN 11
#define EACCES 13
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99

/* A cgroup hook's verdicts. */
#define HOOK_PROCEED 1
#define HOOK_REFUSE 0

/* A hook must return 0 or 1, provably: the compiler may load a return
 * value from a stack slot the verifier cannot read back as a constant. */
static __always_inline int verdict(int proceed)
{
	asm volatile("%0 &= 1" : "+r"(proceed));
	return proceed;
}

/* The kernel lets only GPL-compatible programs call GPL-only helpers
 * (bpf_probe_read_kernel_str); the project's own licence is not chosen
 * yet (debian/copyright says so). */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_LOCAL_ADDRS);
	__type(key, __u32);
	__type(value, struct pf_bpf_local_addr);
} local_addrs SEC(".maps");

/* The app's rules; the loader sizes them to the compiled entries. */
#define RULE_TRIE(name, key_type)                                    \
	struct {                                                     \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                 \
		__uint(max_entries, 1);                              \
		__uint(map_flags, BPF_F_NO_PREALLOC);                \
		__type(key, key_type);                               \
		__type(value, struct pf_bpf_port_spans);             \
	} name SEC(".maps")
RULE_TRIE(deny4, struct pf_bpf_lpm4_key);
RULE_TRIE(allow4, struct pf_bpf_lpm4_key);
RULE_TRIE(deny6, struct pf_bpf_lpm6_key);
RULE_TRIE(allow6, struct pf_bpf_lpm6_key);

/* The records, for user space to drain.  8 MiB holds 87,381 of them
 * (88 bytes and an 8-byte header each): a burst of 50,000 fits whole
 * even while its drainer is held off the CPU. */
#define RECORD_RING_BYTES (8u << 20)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RECORD_RING_BYTES);
} records SEC(".maps");

/* Records the ring had no room for.  [PF_BPF_LOSS_LOST] is counted here;
 * [PF_BPF_LOSS_REPORTED] is how many of them user space has written an
 * error record for (each side writes only its own entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PF_BPF_LOSS_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} record_loss SEC(".maps");

/* Sockets by cookie: what an explicit bind or our own choice gave a port,
 * and whether an unbound UDP send was already recorded. */
#define SOCKET_BOUND 1u
#define SOCKET_UNBOUND_RECORDED 2u
#define SOCKET_COUNTED 4u	/* its port, in the top 16 bits, is counted in port_users */
#define SOCKET_MPTCP 8u	/* an MPTCP subflow: no release hook will uncount it */
#define SOCKET_PORT_SHIFT 16
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pf_bpf_exe);
} exes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_exe);
} exe_scratch SEC(".maps");

/* TCP records wait here for the final local address, which the kernel
 * chooses after the connect hook (sockops' TCP_CONNECT_CB gives it). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pf_bpf_record);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_record);
} record_scratch SEC(".maps");

/* How many of the app's sockets are bound to each port of its range
 * (index port - range_lo): bind(port 0) is given a port none of them
 * holds, since the kernel would refuse a shared one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} port_users SEC(".maps");

/* The ports of the other apps' ranges (the loader fills it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_bpf_port_bits);
} foreign_ports SEC(".maps");

/* bind(addr, 0) as the bind hook answered it, by socket cookie, until
 * the kernel's verdict: post_bind says the bind took (bound), and the
 * record goes out then (UDP) or at the connect (TCP); a pick still
 * unbound at the next bind or at close is a bind the kernel refused. */
struct bind_pick {
	__u32 attempts;
	__u16 port;
	__u16 bound;
	__u32 addr[4];	/* bound: the address, network order; IPv4 in [0] */
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct bind_pick);
} bind_picks SEC(".maps");

/* A destination as the rules and the 4-tuple check see it: IPv4-mapped
 * addresses folded to IPv4; sock_family is the socket's own, which the
 * record shows (a v4-mapped destination of an AF_INET6 socket stays
 * IPv6 there, as the shim writes it). */
struct dest {
	__u32 family;
	__u32 sock_family;
	__u32 addr[4];	/* network order; IPv4 in addr[0] */
	__u16 port;	/* host order */
};

static __always_inline struct pf_bpf_config *app_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline int is_v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

static __always_inline void dest_from_v4(const struct bpf_sock_addr *ctx, struct dest *d)
{
	d->family = AF_INET;
	d->sock_family = AF_INET;
	d->addr[0] = ctx->user_ip4;
	d->addr[1] = d->addr[2] = d->addr[3] = 0;
	d->port = bpf_ntohs((__u16)ctx->user_port);
}

static __always_inline void dest_from_v6(const struct bpf_sock_addr *ctx, struct dest *d)
{
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};

	d->port = bpf_ntohs((__u16)ctx->user_port);
	d->sock_family = AF_INET6;
	if (is_v4_mapped(ip6)) {
		d->family = AF_INET;
		d->addr[0] = ip6[3];
		d->addr[1] = d->addr[2] = d->addr[3] = 0;
		return;
	}
	d->family = AF_INET6;
	d->addr[0] = ip6[0];
	d->addr[1] = ip6[1];
	d->addr[2] = ip6[2];
	d->addr[3] = ip6[3];
}

/* ---- pf_app_permits: the rules ------------------------------------ */

/* Folded as pf_app_permits folds (bpf/rules_api.h): the unspecified
 * address is judged as loopback, where the kernel sends it. */
static __always_inline int pf_app_permits(const struct pf_bpf_config *cfg, const struct dest *d)
{
	const struct pf_bpf_port_spans *deny_hit, *allow_hit = 0;

	if (d->family == AF_INET) {
		struct pf_bpf_lpm4_key key;
		pf_bpf_lpm4_key_set(&key, pf_bpf_fold_dest4(d->addr[0]));
		deny_hit = bpf_map_lookup_elem(&deny4, &key);
		if (cfg->has_allow)
			allow_hit = bpf_map_lookup_elem(&allow4, &key);
	} else {
		struct pf_bpf_lpm6_key key;
		__u32 ip6[4] = {d->addr[0], d->addr[1], d->addr[2], d->addr[3]}, ip4 = 0;
		pf_bpf_fold_dest6(ip6, &ip4);	/* never v4 here: dest_from_v6 folded those */
		pf_bpf_lpm6_key_set(&key, ip6);
		deny_hit = bpf_map_lookup_elem(&deny6, &key);
		if (cfg->has_allow)
			allow_hit = bpf_map_lookup_elem(&allow6, &key);
	}
	return pf_bpf_rules_permit(deny_hit, allow_hit, cfg->has_allow, d->port);
}

/* ---- pf_audit: the record ------------------------------------------ */

struct record_facts {
	__u32 event;
	__u32 error;
	__u32 attempts;
	__u16 local_port;
	__u32 local_addr[4];
	int udp;
};

static __always_inline void fill_record(struct pf_bpf_record *r, const struct dest *d,
					const struct record_facts *f)
{
	r->monotonic_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	r->event = f->event;
	r->error = f->error;
	r->attempts = f->attempts;
	r->family = (__u16)d->family;
	r->udp = (__u16)f->udp;
	r->local_port = f->local_port;
	r->remote_port = d->port;
	for (int i = 0; i < 4; i++) {
		r->local_addr[i] = f->local_addr[i];
		r->remote_addr[i] = d->addr[i];
	}
	if (d->sock_family == AF_INET6 && d->family == AF_INET) {
		/* An AF_INET6 socket's v4-mapped call: its own addresses. */
		r->family = AF_INET6;
		r->remote_addr[0] = r->remote_addr[1] = 0;
		r->remote_addr[2] = bpf_htonl(0xffff);
		r->remote_addr[3] = d->addr[0];
		r->local_addr[3] = f->local_addr[0];
		r->local_addr[0] = r->local_addr[1] = 0;
		r->local_addr[2] = f->local_addr[0] ? bpf_htonl(0xffff) : 0;
	}
	bpf_get_current_comm(r->comm, sizeof(r->comm));
}

static __always_inline int records_wanted(void)
{
	struct pf_bpf_config *cfg = app_config();
	return cfg && cfg->records;
}

/* A record the ring had no room for is counted, never dropped silently:
 * the next drain reports the count. */
static __always_inline void count_lost_record(void)
{
	__u32 key = PF_BPF_LOSS_LOST;
	__u64 *lost = bpf_map_lookup_elem(&record_loss, &key);
	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/* The reader drains in batches on a timer (waking it per record cost a
 * third of a connect), and is woken at once when the ring is a quarter
 * full, so that a burst is drained while it lasts.  The ring's own size:
 * one pinned by an earlier version may be smaller. */
static __always_inline __u64 submit_flags(void)
{
	__u64 size = bpf_ringbuf_query(&records, BPF_RB_RING_SIZE);
	return bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void pf_audit(const struct dest *d, const struct record_facts *f)
{
	if (!records_wanted())
		return;
	struct pf_bpf_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		count_lost_record();
		return;
	}
	fill_record(r, d, f);
	bpf_ringbuf_submit(r, submit_flags());
}

/* A TCP assignment's record, kept until sockops gives its local address. */
static __always_inline void pf_audit_later(struct bpf_sock_addr *ctx, const struct dest *d,
					   const struct record_facts *f)
{
	__u32 zero = 0;
	struct pf_bpf_record *r = bpf_map_lookup_elem(&record_scratch, &zero);
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (!r || !records_wanted())
		return;
	fill_record(r, d, f);
	bpf_map_update_elem(&pending, &cookie, r, BPF_ANY);
}

/* Sends a kept record, with the local address when the connect got that
 * far, or as an error when the socket closed before it did. */
static __always_inline void send_pending(struct pf_bpf_record *kept)
{
	struct pf_bpf_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		count_lost_record();
		return;
	}
	__builtin_memcpy(r, kept, sizeof(*r));
	bpf_ringbuf_submit(r, submit_flags());
}

static __always_inline void record_simple(const struct dest *d, __u32 event, __u32 error, int udp)
{
	struct record_facts f = {.event = event, .error = error, .udp = udp};
	pf_audit(d, &f);
}

/* ---- SipHash-2-4, as core/rng.c's pf_siphash -------------------- */

static __always_inline __u64 rotl(__u64 x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                             \
	do {                                                                 \
		v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);    \
		v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                       \
		v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                       \
		v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);    \
	} while (0)

static __always_inline __u64 load_le64(const __u8 *p)
{
	__u64 v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#define FLOW_MAX 40
/* len is 10 (IPv4 flow) or 34 (IPv6 flow): the whole blocks, then the
 * tail, exactly as the reference. */
static __noinline __u64 pf_siphash(const __u8 *key, const __u8 *in, __u32 len)
{
	__u64 k0 = load_le64(key), k1 = load_le64(key + 8);
	__u64 v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
	__u64 v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
	__u64 last = (__u64)len << 56;
	__u32 whole = len & ~7u;

	if (len > FLOW_MAX - 8)
		return 0;
	for (__u32 i = 0; i < FLOW_MAX - 8; i += 8) {
		if (i >= whole)
			break;
		__u64 m = load_le64(in + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (__u32 i = 0; i < 8; i++) {
		if (i >= (len & 7))
			break;
		last |= (__u64)in[(whole + i) & (FLOW_MAX - 1 - 7)] << (8 * i);
	}
	v3 ^= last;
	SIPROUND;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- pf_algorithm_pick: the port ---------------------------------- */

/* One walk over the range inside bpf_loop: a candidate per index, the
 * 4-tuple check, then the bind. */
struct walk {
	struct bpf_sock_addr *ctx;
	struct dest d;
	__u32 source[4];	/* the address the socket is bound to, or 0 */
	__u32 lo, num;
	__u32 algorithm;
	__u32 base;		/* counter value plus hash offset */
	__u32 first, stride;	/* Algorithm 1 */
	__u32 next, increments_n;	/* Algorithm 5 */
	__u32 rfc_tries;	/* candidates drawn the RFC's way before the full walk */
	__u32 attempts;
	__u16 port;		/* the port bound, or 0 */
	__u16 time_wait_port;	/* a port whose 4-tuple only TIME_WAIT holds */
	int udp;
	int bind_error;
};

static __always_inline __u32 below(__u32 bound)
{
	return bound ? bpf_get_prandom_u32() % bound : 0;
}

static __always_inline __u32 candidate(struct walk *w, __u32 k)
{
	__u32 num = w->num ? w->num : 1;

	switch (w->algorithm) {
	case PF_BPF_ALGO_RANDOM:
		/* RFC 6056 §3.3.1, then a stride prime to the range. */
		return w->lo + (__u32)((w->first + (__u64)k * w->stride) % num);
	case PF_BPF_ALGO_RANDOM_REDRAW:
		/* §3.3.2: a fresh draw per try, then a full walk. */
		if (k < w->rfc_tries)
			return w->lo + below(num);
		return w->lo + (w->base + k) % num;
	case PF_BPF_ALGO_RANDOM_INCREMENTS:
		/* §3.3.5: next_ephemeral += (random() % N) + 1. */
		if (k < w->rfc_tries) {
			w->next += below(w->increments_n) + 1;
			return w->lo + w->next % num;
		}
		return w->lo + (w->base + k) % num;
	default:
		/* sequential, §3.3.3 and §3.3.4: counter (+ offset) + k. */
		return w->lo + (w->base + k) % num;
	}
}

/* The socket that holds (source, port) -> destination, seen from the
 * destination's side; 0 free, 1 held, 2 held only by TIME_WAIT. */
static __always_inline int tuple_holder(struct walk *w, const __u32 *source, __u16 port)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_sock *sk;
	__u32 size;

	if (w->d.family == AF_INET) {
		tuple.ipv4.saddr = w->d.addr[0];
		tuple.ipv4.daddr = source[0];
		tuple.ipv4.sport = bpf_htons(w->d.port);
		tuple.ipv4.dport = bpf_htons(port);
		size = sizeof(tuple.ipv4);
	} else {
		for (int i = 0; i < 4; i++) {
			tuple.ipv6.saddr[i] = w->d.addr[i];
			tuple.ipv6.daddr[i] = source[i];
		}
		tuple.ipv6.sport = bpf_htons(w->d.port);
		tuple.ipv6.dport = bpf_htons(port);
		size = sizeof(tuple.ipv6);
	}
	sk = bpf_skc_lookup_tcp(w->ctx, &tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int held = sk->state == BPF_TCP_TIME_WAIT ? 2 : 1;
	bpf_sk_release(sk);
	return held;
}

static __always_inline int is_zero(const __u32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

/* The sources the kernel may choose for this destination: the bound
 * address when there is one; else the destination itself (a local
 * address), loopback's 127.0.0.1 for 127/8, and the host's addresses. */
static long check_local_addr(__u32 index, void *arg);

struct host_check {
	struct walk *w;
	__u16 port;
	int held;
};

static __always_inline int tuple_busy(struct walk *w, __u16 port)
{
	if (w->udp)
		return 0;	/* UDP: the bind itself is the check */
	if (!is_zero(w->source))
		return tuple_holder(w, w->source, port);
	int held = tuple_holder(w, w->d.addr, port);
	if (held == 1)
		return 1;
	if (w->d.family == AF_INET && (bpf_ntohl(w->d.addr[0]) >> 24) == 127) {
		__u32 loopback[4] = {bpf_htonl(0x7f000001), 0, 0, 0};
		int also = tuple_holder(w, loopback, port);
		return also > held ? also : held;
	}
	struct host_check check = {.w = w, .port = port, .held = held};
	bpf_loop(PF_BPF_LOCAL_ADDRS, check_local_addr, &check, 0);
	return check.held;
}

static long check_local_addr(__u32 index, void *arg)
{
	struct host_check *check = arg;
	__u32 key = index;
	struct pf_bpf_local_addr *local = bpf_map_lookup_elem(&local_addrs, &key);

	if (!local || local->family == 0)
		return 1;
	if (local->family != check->w->d.family)
		return 0;
	__u32 addr[4] = {local->addr[0], local->addr[1], local->addr[2], local->addr[3]};
	int held = tuple_holder(check->w, addr, check->port);
	if (held > check->held)
		check->held = held;
	return check->held == 1;
}

static __always_inline int bind_port(struct walk *w, __u16 port)
{
	struct bpf_sock_addr *ctx = w->ctx;

	if (ctx->family == AF_INET) {
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = bpf_htons(port)};
		sa.sin_addr.s_addr = w->source[0];
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = bpf_htons(port)};
	if (w->d.family == AF_INET) {
		/* A v4-mapped connect: the IPv4 source, mapped (::ffff:a.b.c.d),
		 * or the wildcard. */
		if (w->source[0]) {
			sa6.sin6_addr.s6_addr32[2] = bpf_htonl(0xffff);
			sa6.sin6_addr.s6_addr32[3] = w->source[0];
		}
	} else {
		__builtin_memcpy(&sa6.sin6_addr, w->source, 16);
	}
	return bpf_bind(ctx, (struct sockaddr *)&sa6, sizeof(sa6));
}

static long try_candidate(__u32 k, void *arg)
{
	struct walk *w = arg;
	__u16 port = (__u16)candidate(w, k);

	w->attempts++;
	int held = tuple_busy(w, port);
	if (held == 2 && !w->time_wait_port)
		w->time_wait_port = port;
	if (held)
		return 0;
	int rc = bind_port(w, port);
	if (rc == 0) {
		w->port = port;
		return 1;
	}
	w->bind_error = -rc;
	return 0;
}

/* Euclid on 16-bit numbers ends within 24 steps. */
__noinline int pf_gcd_is_one(__u32 a, __u32 b)
{
	for (int i = 0; i < 32 && b; i++) {
		__u32 t = a % b;
		a = b;
		b = t;
	}
	return a == 1;
}

/* A stride prime to num visits every port once.  A random one when it
 * is, else a prime above any range size, which always is. */
static __always_inline __u32 coprime_stride(__u32 num)
{
	__u32 stride = 1 + below(num - 1);

	if (pf_gcd_is_one(stride, num))
		return stride;
	switch (bpf_get_prandom_u32() & 3) {
	case 0: return 65537 % num;
	case 1: return 65539 % num;
	case 2: return 65543 % num;
	default: return 65551 % num;
	}
}

static __always_inline __u32 flow_hash(const __u8 *key, const struct walk *w, const __u32 *local)
{
	__u8 buf[FLOW_MAX] = {};
	__u32 len = w->d.family == AF_INET ? 4 : 16;

	__builtin_memcpy(buf, local, 16);
	if (len == 4) {
		__builtin_memcpy(buf + 4, w->d.addr, 4);
		buf[8] = (__u8)(w->d.port >> 8);
		buf[9] = (__u8)w->d.port;
		return (__u32)pf_siphash(key, buf, 10);
	}
	__builtin_memcpy(buf + 16, w->d.addr, 16);
	buf[32] = (__u8)(w->d.port >> 8);
	buf[33] = (__u8)w->d.port;
	return (__u32)pf_siphash(key, buf, 34);
}

/* Where the walk starts, per algorithm; counters move as the RFC's do. */
static __always_inline void start_walk(struct walk *w, const struct pf_bpf_config *cfg)
{
	__u32 zero = 0, num = w->num;
	struct pf_bpf_counters *c = bpf_map_lookup_elem(&counters, &zero);
	__u32 local[4] = {w->source[0], w->source[1], w->source[2], w->source[3]};

	if (w->d.family == AF_INET && is_zero(local))
		local[0] = (bpf_ntohl(w->d.addr[0]) >> 24) == 127 ? bpf_htonl(0x7f000001) : w->d.addr[0];
	w->rfc_tries = 0;
	w->base = below(num);
	switch (w->algorithm) {
	case PF_BPF_ALGO_SEQUENTIAL:
		if (c)
			w->base = __sync_fetch_and_add(&c->sequential_next, 1);
		break;
	case PF_BPF_ALGO_RANDOM:
		w->first = below(num);
		w->stride = num > 1 ? coprime_stride(num) : 1;
		break;
	case PF_BPF_ALGO_RANDOM_REDRAW:
		w->rfc_tries = num;
		break;
	case PF_BPF_ALGO_HASH:
		if (c)
			w->base = __sync_fetch_and_add(&c->hash_next, 1) +
				  flow_hash(cfg->hash_key, w, local) % num;
		break;
	case PF_BPF_ALGO_DOUBLE_HASH: {
		__u32 index = flow_hash(cfg->index_key, w, local) % PF_BPF_DH_TABLE_LEN;
		__u32 offset = flow_hash(cfg->hash_key, w, local) % num;
		if (c && index < PF_BPF_DH_TABLE_LEN)
			w->base = offset + __sync_fetch_and_add(&c->table[index], 1);
		break;
	}
	case PF_BPF_ALGO_RANDOM_INCREMENTS:
		w->rfc_tries = num;
		w->increments_n = cfg->increments_n ? cfg->increments_n : 1;
		if (c)
			w->next = c->increments_next;
		break;
	}
}

/* The counters continue after the port taken, as the RFC loop's would. */
static __always_inline void finish_walk(struct walk *w)
{
	__u32 zero = 0;
	struct pf_bpf_counters *c = bpf_map_lookup_elem(&counters, &zero);
	__u32 extra = w->attempts > 1 ? w->attempts - 1 : 0;

	if (!c)
		return;
	if (w->algorithm == PF_BPF_ALGO_SEQUENTIAL && extra)
		__sync_fetch_and_add(&c->sequential_next, extra);
	else if (w->algorithm == PF_BPF_ALGO_HASH && extra)
		__sync_fetch_and_add(&c->hash_next, extra);
	else if (w->algorithm == PF_BPF_ALGO_RANDOM_INCREMENTS)
		c->increments_next = w->next;
}

/* A bound socket's mark: SOCKET_BOUND, and when the port is the app's,
 * the port itself, counted in port_users until the socket closes. */
static __always_inline __u32 bound_flags(const struct pf_bpf_config *cfg, __u32 port)
{
	if (!cfg || port < cfg->range_lo || port > cfg->range_hi)
		return SOCKET_BOUND;
	__u32 index = port - cfg->range_lo, *users = bpf_map_lookup_elem(&port_users, &index);
	if (!users)
		return SOCKET_BOUND;
	__sync_fetch_and_add(users, 1);
	return SOCKET_BOUND | SOCKET_COUNTED | port << SOCKET_PORT_SHIFT;
}

static __always_inline void mark_socket(__u64 cookie, __u32 flags)
{
	bpf_map_update_elem(&sockets, &cookie, &flags, BPF_ANY);
}

/* The algorithm's walk, each candidate checked and bound in turn, then
 * a port whose 4-tuple only TIME_WAIT holds; w->port is 0 when none. */
static __always_inline void pf_algorithm_pick(struct walk *w, const struct pf_bpf_config *cfg)
{
	start_walk(w, cfg);
	bpf_loop(w->num + w->rfc_tries, try_candidate, w, 0);
	if (!w->port && w->time_wait_port && bind_port(w, w->time_wait_port) == 0)
		w->port = w->time_wait_port;
	finish_walk(w);
}

/* A loopback destination is reached from loopback's own address (the
 * local route's preferred source): binding it rather than the wildcard
 * spares the connect a re-hash, and the 4-tuple check a second lookup.
 * Other destinations keep the wildcard: their source is the route's. */
static __always_inline void loopback_source(const struct dest *d, __u32 *source)
{
	if (d->family == AF_INET && (bpf_ntohl(d->addr[0]) >> 24) == 127)
		source[0] = bpf_htonl(0x7f000001);
	else if (d->family == AF_INET6 && !(d->addr[0] | d->addr[1] | d->addr[2]) &&
		 d->addr[3] == bpf_htonl(1))
		source[3] = bpf_htonl(1);
}

/* An MPTCP subflow (the kernel's own TCP socket under an MPTCP one):
 * no release hook runs for it, so its port is never counted. */
static __always_inline int mptcp_subflow(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	return sk && bpf_skc_to_mptcp_sock(sk) != 0;
}

/* The address the socket is bound to, as the destination's family sees
 * it (an AF_INET6 socket's v4-mapped address as IPv4), or zero. */
static __always_inline void bound_source(struct bpf_sock_addr *ctx, const struct dest *d, __u32 *source)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	/* Every field read whatever the family, each at its own constant
	 * offset: the verifier refuses arithmetic on a sock pointer, which
	 * a read under a branch can compile to. */
	__u32 bound4 = sk->src_ip4;
	__u32 bound[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	asm volatile("" : "+r"(bound4));
	if (ctx->family == AF_INET) {
		source[0] = bound4;
	} else {
		if (d->family == AF_INET6)
			__builtin_memcpy(source, bound, 16);
		else if (is_v4_mapped(bound))
			source[0] = bound[3];
	}
}

/* Takes a port for a connect (pf_algorithm_pick; SO_REUSEADDR reuses a
 * TIME_WAIT 4-tuple at once), else the kernel's own exhaustion answer. */
static __always_inline int assign_for_connect(struct bpf_sock_addr *ctx, const struct pf_bpf_config *cfg,
					      const struct dest *d, int udp)
{
	struct walk w = {.ctx = ctx, .d = *d, .udp = udp, .algorithm = cfg->algorithm};
	int one = 1;

	if (!ctx->sk)
		return HOOK_PROCEED;
	bound_source(ctx, d, w.source);
	if (is_zero(w.source))
		loopback_source(d, w.source);
	w.lo = cfg->range_lo;
	w.num = (__u32)cfg->range_hi - cfg->range_lo + 1;
	if (!udp)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	pf_algorithm_pick(&w, cfg);

	struct record_facts f = {.attempts = w.attempts, .udp = udp, .local_port = w.port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = w.source[i];
	if (!w.port) {
		f.event = PF_BPF_ERROR;
		f.error = udp ? EAGAIN : EADDRNOTAVAIL;
		pf_audit(d, &f);
		bpf_set_retval(-(int)f.error);
		return HOOK_REFUSE;
	}
	if (is_zero(f.local_addr) && d->family == AF_INET)
		f.local_addr[0] = (bpf_ntohl(d->addr[0]) >> 24) == 127 ? bpf_htonl(0x7f000001) : 0;
	f.event = PF_BPF_ASSIGN;
	/* bpf_bind runs no post_bind hook: the socket is marked here. */
	mark_socket(bpf_get_socket_cookie(ctx),
		    mptcp_subflow(ctx) ? SOCKET_BOUND | SOCKET_MPTCP : bound_flags(cfg, w.port));
	if (udp)
		pf_audit(d, &f);
	else
		pf_audit_later(ctx, d, &f);
	return HOOK_PROCEED;
}

static __always_inline int sock_protocol_managed(const struct pf_bpf_config *cfg, __u32 type)
{
	if (type == SOCK_STREAM)
		return cfg->protocols & PF_BPF_PROTO_TCP;
	if (type == SOCK_DGRAM)
		return cfg->protocols & PF_BPF_PROTO_UDP;
	return 0;
}

/* A destination the rules refuse: EPERM and a deny record, or in audit
 * mode the call and an audit record. */
static __always_inline int refuse_destination(const struct pf_bpf_config *cfg, const struct dest *d, int udp)
{
	if (cfg->audit_mode) {
		record_simple(d, PF_BPF_AUDIT, EPERM, udp);
		return HOOK_PROCEED;
	}
	record_simple(d, PF_BPF_DENY, EPERM, udp);
	bpf_set_retval(-EPERM);
	return HOOK_REFUSE;
}

/* A TCP socket that bind(addr, 0) gave a range port connects on it: the
 * assignment's record is this connect's (with its destination), unless
 * the 4-tuple is held, where the kernel would fail it: EADDRNOTAVAIL
 * and an error record, the kernel's own answer. */
static __always_inline int connect_bound(struct bpf_sock_addr *ctx, const struct dest *d, int udp)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct bind_pick *pick = bpf_map_lookup_elem(&bind_picks, &cookie);

	if (udp || !pick || !pick->bound || !ctx->sk)
		return HOOK_PROCEED;
	struct walk w = {.ctx = ctx, .d = *d};
	__u16 port = (__u16)ctx->sk->src_port;
	bound_source(ctx, d, w.source);
	struct record_facts f = {.event = PF_BPF_ASSIGN, .attempts = pick->attempts, .local_port = port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = w.source[i];
	bpf_map_delete_elem(&bind_picks, &cookie);
	if (!is_zero(w.source) && tuple_holder(&w, w.source, port) == 1) {
		f.event = PF_BPF_ERROR;
		f.error = EADDRNOTAVAIL;
		pf_audit(d, &f);
		bpf_set_retval(-EADDRNOTAVAIL);
		return HOOK_REFUSE;
	}
	pf_audit_later(ctx, d, &f);
	return HOOK_PROCEED;
}

static __always_inline int pf_connect(struct bpf_sock_addr *ctx, const struct dest *d)
{
	struct pf_bpf_config *cfg = app_config();
	int udp = ctx->type == SOCK_DGRAM;

	if (!cfg || !sock_protocol_managed(cfg, ctx->type))
		return HOOK_PROCEED;
	if (!pf_app_permits(cfg, d))
		return refuse_destination(cfg, d, udp);
	if (!ctx->sk)
		return HOOK_PROCEED;
	if (ctx->sk->src_port)
		return connect_bound(ctx, d, udp);	/* a socket already bound keeps its port */
	if (cfg->audit_mode) {
		record_simple(d, PF_BPF_AUDIT, 0, udp);
		return HOOK_PROCEED;
	}
	return assign_for_connect(ctx, cfg, d, udp);
}

SEC("cgroup/connect4")
int pf_connect4(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v4(ctx, &d);
	return verdict(pf_connect(ctx, &d));
}

SEC("cgroup/connect6")
int pf_connect6(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v6(ctx, &d);
	return verdict(pf_connect(ctx, &d));
}

/* ---- unconnected sends -------------------------------------------- */

/* The kernel gives an unbound UDP socket its port before this hook runs,
 * so a range port cannot be given here: udp_unbound says whether such a
 * send is refused or only recorded (once per socket). */
static __always_inline int pf_sendmsg(struct bpf_sock_addr *ctx, const struct dest *d)
{
	struct pf_bpf_config *cfg = app_config();

	if (!cfg || ctx->type != SOCK_DGRAM || !sock_protocol_managed(cfg, ctx->type))
		return HOOK_PROCEED;
	if (!pf_app_permits(cfg, d))
		return refuse_destination(cfg, d, 1);

	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 *known = bpf_map_lookup_elem(&sockets, &cookie);
	if (known && (*known & SOCKET_BOUND))
		return HOOK_PROCEED;
	int refuse = !cfg->udp_unbound_audit && !cfg->audit_mode;
	if (!refuse && known && (*known & SOCKET_UNBOUND_RECORDED))
		return HOOK_PROCEED;

	struct record_facts f = {.event = refuse ? PF_BPF_DENY : PF_BPF_AUDIT, .error = EPERM, .udp = 1};
	if (ctx->sk)
		f.local_port = (__u16)ctx->sk->src_port;
	pf_audit(d, &f);
	if (refuse) {
		bpf_set_retval(-EPERM);
		return HOOK_REFUSE;
	}
	mark_socket(cookie, SOCKET_UNBOUND_RECORDED);
	return HOOK_PROCEED;
}

SEC("cgroup/sendmsg4")
int pf_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v4(ctx, &d);
	return verdict(pf_sendmsg(ctx, &d));
}

SEC("cgroup/sendmsg6")
int pf_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v6(ctx, &d);
	return verdict(pf_sendmsg(ctx, &d));
}

/* ---- bind ---------------------------------------------------------- */

static __always_inline __u32 *users_of(const struct walk *w, __u16 port)
{
	__u32 index = (__u32)port - w->lo;
	return bpf_map_lookup_elem(&port_users, &index);
}

/* bind4 cannot bind and retry: it takes the first candidate no socket of
 * the app holds, and the kernel's bind has the last word. */
static long try_unused_port(__u32 k, void *arg)
{
	struct walk *w = arg;
	__u16 port = (__u16)candidate(w, k);
	__u32 *users = users_of(w, port);

	if (!w->time_wait_port)
		w->time_wait_port = port;	/* here: the first candidate */
	w->attempts++;
	if (users && *users)
		return 0;
	w->port = port;
	return 1;
}

/* A port of another app's range. */
static __always_inline int foreign_port(__u16 port)
{
	__u32 zero = 0;
	struct pf_bpf_port_bits *ports = bpf_map_lookup_elem(&foreign_ports, &zero);
	__u32 word = (__u32)port >> 6;

	if (!ports || word >= 65536 / 64)
		return 0;
	return (ports->bits[word] >> (port & 63)) & 1;
}

/* A bind(addr, 0) the kernel refused after the bind hook answered it
 * never reached post_bind: its record is an error, sent at the socket's
 * next bind or its close (which errno the program saw, no hook can
 * tell: EUNKNOWN). */
static __always_inline void refused_pick(__u64 cookie, const struct bind_pick *pick, __u32 family, int udp)
{
	struct dest nowhere = {.family = family, .sock_family = family};
	struct record_facts f = {.event = PF_BPF_ERROR, .error = PF_BPF_ERROR_UNSEEN, .udp = udp,
				 .attempts = pick->attempts, .local_port = pick->port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = pick->addr[i];
	pf_audit(&nowhere, &f);
	bpf_map_delete_elem(&bind_picks, &cookie);
}

/* A bind to an explicit port: refused with EACCES when it is another
 * app's (whatever explicit_bind says: one app's policy must not let it
 * take another's ports), or outside the range with explicit_bind =
 * "deny". */
static __always_inline int pf_explicit_bind(const struct pf_bpf_config *cfg, const struct dest *local, int udp)
{
	if (local->port >= cfg->range_lo && local->port <= cfg->range_hi)
		return HOOK_PROCEED;
	if (!cfg->deny_explicit_bind && !foreign_port(local->port))
		return HOOK_PROCEED;
	/* The record's local is the address asked for; it has no remote. */
	struct dest nowhere = {.family = local->family, .sock_family = local->sock_family};
	struct record_facts f = {.event = cfg->audit_mode ? PF_BPF_AUDIT : PF_BPF_DENY, .error = EACCES,
				 .udp = udp, .local_port = local->port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = local->addr[i];
	pf_audit(&nowhere, &f);
	if (cfg->audit_mode)
		return HOOK_PROCEED;
	bpf_set_retval(-EACCES);
	return HOOK_REFUSE;
}

/* bind(port 0) is given a range port by rewriting the request (bpf_bind
 * is refused here).  UDP takes a port none of the app's sockets holds.
 * TCP binds it with SO_REUSEADDR, as a connect's port is bound: it is
 * shared across destinations (a port no socket of the app holds when
 * there is one, else the algorithm's first), and a TIME_WAIT on it is
 * reused at the connect.  The record waits for the kernel's verdict
 * (post_bind, or the connect). */
static __always_inline int pf_bind(struct bpf_sock_addr *ctx, const struct dest *local)
{
	struct pf_bpf_config *cfg = app_config();
	int udp = ctx->type == SOCK_DGRAM, one = 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (!cfg || !sock_protocol_managed(cfg, ctx->type))
		return HOOK_PROCEED;
	struct bind_pick *earlier = bpf_map_lookup_elem(&bind_picks, &cookie);
	if (earlier && !earlier->bound)
		refused_pick(cookie, earlier, local->family, udp);
	if (mptcp_subflow(ctx))
		mark_socket(cookie, SOCKET_MPTCP);
	if (local->port)
		return pf_explicit_bind(cfg, local, udp);
	if (cfg->audit_mode) {
		record_simple(local, PF_BPF_AUDIT, 0, udp);
		return HOOK_PROCEED;
	}
	struct walk w = {.ctx = ctx, .d = *local, .udp = udp, .algorithm = cfg->algorithm};
	w.lo = cfg->range_lo;
	w.num = (__u32)cfg->range_hi - cfg->range_lo + 1;
	start_walk(&w, cfg);
	bpf_loop(w.num + w.rfc_tries, try_unused_port, &w, 0);
	finish_walk(&w);
	if (!w.port && !udp)
		w.port = w.time_wait_port;	/* the first candidate, shared */
	if (!w.port) {
		struct dest nowhere = {.family = local->family, .sock_family = local->sock_family};
		struct record_facts f = {.event = PF_BPF_ERROR, .error = EADDRINUSE, .udp = udp,
					 .attempts = w.attempts};
		for (int i = 0; i < 4; i++)
			f.local_addr[i] = local->addr[i];
		pf_audit(&nowhere, &f);
		bpf_set_retval(-EADDRINUSE);
		return HOOK_REFUSE;
	}
	if (!udp)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct bind_pick pick = {.attempts = w.attempts, .port = w.port};
	for (int i = 0; i < 4; i++)
		pick.addr[i] = local->addr[i];	/* what was asked, until post_bind */
	bpf_map_update_elem(&bind_picks, &cookie, &pick, BPF_ANY);
	ctx->user_port = bpf_htons(w.port);
	return HOOK_PROCEED;
}

SEC("cgroup/bind4")
int pf_bind4(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v4(ctx, &d);
	return verdict(pf_bind(ctx, &d));
}

SEC("cgroup/bind6")
int pf_bind6(struct bpf_sock_addr *ctx)
{
	struct dest d;
	dest_from_v6(ctx, &d);
	return verdict(pf_bind(ctx, &d));
}

/* Every bind the program makes (not ours through bpf_bind, which runs no
 * such hook, nor the kernel's autobind) marks the socket: its sends are
 * not unbound ones, and a range port it holds is counted (not an MPTCP
 * subflow's: nothing would uncount it).  A bind(addr, 0) the bind hook
 * answered has taken: a UDP one is recorded now, a TCP one at its
 * connect (or its close, if it never connects). */
static __always_inline int pf_post_bind(struct bpf_sock *sk, int v6)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	__u32 *known = bpf_map_lookup_elem(&sockets, &cookie);
	__u16 port = (__u16)sk->src_port;
	__u32 flags = known && (*known & SOCKET_MPTCP) ? SOCKET_BOUND | SOCKET_MPTCP
						       : bound_flags(app_config(), port);

	mark_socket(cookie, flags);
	struct bind_pick *pick = bpf_map_lookup_elem(&bind_picks, &cookie);
	if (!pick || pick->port != port)
		return HOOK_PROCEED;
	pick->bound = 1;
	__u32 ip4 = sk->src_ip4;
	__u32 ip6[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};
	if (v6)
		__builtin_memcpy(pick->addr, ip6, 16);
	else
		pick->addr[0] = ip4;
	if (sk->type != SOCK_DGRAM)
		return HOOK_PROCEED;
	struct dest nowhere = {.family = v6 ? AF_INET6 : AF_INET, .sock_family = v6 ? AF_INET6 : AF_INET};
	struct record_facts f = {.event = PF_BPF_ASSIGN, .udp = 1, .attempts = pick->attempts, .local_port = port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = pick->addr[i];
	pf_audit(&nowhere, &f);
	bpf_map_delete_elem(&bind_picks, &cookie);
	return HOOK_PROCEED;
}

/* The port a counted socket held is free again at its close (the
 * release hook cannot read the socket's port: the mark keeps it). */
static __always_inline void uncount_port(const __u32 *flags)
{
	struct pf_bpf_config *cfg = app_config();
	__u32 port = flags ? *flags >> SOCKET_PORT_SHIFT : 0;

	if (!flags || !(*flags & SOCKET_COUNTED) || !cfg || port < cfg->range_lo || port > cfg->range_hi)
		return;
	__u32 index = port - cfg->range_lo, *users = bpf_map_lookup_elem(&port_users, &index);
	if (users && *users)
		__sync_fetch_and_add(users, -1);
}

SEC("cgroup/post_bind4")
int pf_post_bind4(struct bpf_sock *sk)
{
	return verdict(pf_post_bind(sk, 0));
}

SEC("cgroup/post_bind6")
int pf_post_bind6(struct bpf_sock *sk)
{
	return verdict(pf_post_bind(sk, 1));
}

/* A connect that failed after the hook had bound the port (no route, a
 * 4-tuple taken meanwhile) never reached sockops: its record goes out at
 * close as an error.  Which errno the program saw, no hook here can
 * tell: the result says EUNKNOWN rather than guess. */
SEC("cgroup/sock_release")
int pf_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct pf_bpf_record *kept = bpf_map_lookup_elem(&pending, &cookie);

	if (kept) {
		kept->event = PF_BPF_ERROR;
		kept->error = PF_BPF_ERROR_UNSEEN;
		send_pending(kept);
		bpf_map_delete_elem(&pending, &cookie);
	}
	struct bind_pick *pick = bpf_map_lookup_elem(&bind_picks, &cookie);
	if (pick) {
		/* bound: a TCP bind(addr, 0) that never connected (a listener,
		 * or closed unused); else a bind the kernel refused. */
		struct dest nowhere = {.family = sk->family, .sock_family = sk->family};
		struct record_facts f = {.event = PF_BPF_ASSIGN, .attempts = pick->attempts,
					 .local_port = pick->port, .udp = sk->type == SOCK_DGRAM};
		for (int i = 0; i < 4; i++)
			f.local_addr[i] = pick->addr[i];
		if (!pick->bound) {
			f.event = PF_BPF_ERROR;
			f.error = PF_BPF_ERROR_UNSEEN;
		}
		pf_audit(&nowhere, &f);
		bpf_map_delete_elem(&bind_picks, &cookie);
	}
	uncount_port(bpf_map_lookup_elem(&sockets, &cookie));
	bpf_map_delete_elem(&sockets, &cookie);
	return HOOK_PROCEED;
}

/* The kernel has chosen the local address: the kept record gets it and
 * goes out. */
SEC("sockops")
int pf_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct pf_bpf_record *kept = bpf_map_lookup_elem(&pending, &cookie);
	if (!kept)
		return 1;
	__u32 family = skops->family, ip4 = skops->local_ip4;
	__u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
	if (family == AF_INET) {
		kept->local_addr[0] = ip4;
	} else if (is_v4_mapped(ip6) && kept->family == AF_INET) {
		kept->local_addr[0] = ip6[3];
	} else {
		for (int i = 0; i < 4; i++)
			kept->local_addr[i] = ip6[i];
	}
	kept->local_port = (__u16)skops->local_port;
	send_pending(kept);
	bpf_map_delete_elem(&pending, &cookie);
	return 1;
}

/* ---- protocols no hook confines ----------------------------------- */

/* The kernel gives these ports, but no hook here can confine them:
 * UDP-Lite runs no connect hook (it connects from a kernel port,
 * unseen), SCTP and DCCP bind through their own code, past the bind
 * hook.  A confined app's socket of one is refused (EPERM, a deny
 * record), unless the app does not manage its kind (protocols) or only
 * audits.  MPTCP needs nothing here: its TCP subflows run the TCP hooks
 * (connect, bind, sockops) on the app's cgroup. */
SEC("cgroup/sock_create")
int pf_sock_create(struct bpf_sock *sk)
{
	struct pf_bpf_config *cfg = app_config();
	__u32 family = sk->family, protocol = sk->protocol;

	if (!cfg || (family != AF_INET && family != AF_INET6))
		return 1;
	if (protocol != IPPROTO_UDPLITE && protocol != IPPROTO_SCTP && protocol != IPPROTO_DCCP)
		return 1;
	int udp = protocol == IPPROTO_UDPLITE;
	if (!(cfg->protocols & (udp ? PF_BPF_PROTO_UDP : PF_BPF_PROTO_TCP)))
		return 1;
	struct dest nowhere = {.family = family, .sock_family = family};
	record_simple(&nowhere, cfg->audit_mode ? PF_BPF_AUDIT : PF_BPF_DENY, EPERM, udp);
	return cfg->audit_mode ? 1 : 0;
}

/* ---- exe --------------------------------------------------------- */

/* The exec tracepoint attached by name through BTF (tp_btf), so that
 * neither tracefs nor debugfs is needed: its arguments are
 * (struct task_struct *, pid_t old_pid, struct linux_binprm *).  Only
 * the binprm's filename is read, relocated against the running kernel's
 * BTF (CO-RE). */
struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

SEC("tp_btf/sched_process_exec")
int pf_exec(__u64 *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	__u32 pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	__u32 zero = 0;
	struct pf_bpf_exe *scratch = bpf_map_lookup_elem(&exe_scratch, &zero);

	if (!scratch)
		return 0;
	bpf_probe_read_kernel_str(scratch->path, sizeof(scratch->path), BPF_CORE_READ(bprm, filename));
	bpf_map_update_elem(&exes, &pid, scratch, BPF_ANY);
	return 0;
}
