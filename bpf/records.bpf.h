/* The record of a decision, handed to user space through the records
 * ring (loader/records.c formats it).  The event and errno come from the
 * core's answer (core/verdict.h); the facts come from the hook. */
#ifndef PORTFENCE_BPF_RECORDS_BPF_H
#define PORTFENCE_BPF_RECORDS_BPF_H

#include "bpf/dest.bpf.h"
#include "bpf/maps.bpf.h"

struct pfb_record_facts {
	__u32 event;
	__u32 error;
	__u32 attempts;
	__u16 local_port;
	__u32 local_addr[4];
	int udp;
};

static __always_inline void pfb_fill_record(struct pf_bpf_record *r, const struct pfb_dest *d,
					    const struct pfb_record_facts *f)
{
	r->monotonic_ns = bpf_ktime_get_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->pid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	r->uid = (__u32)bpf_get_current_uid_gid();
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

static __always_inline int pfb_records_wanted(void)
{
	struct pf_bpf_config *cfg = pfb_config();
	return cfg && cfg->records;
}

/* One decision's outcome in the outcomes map (a record's event and
 * errno, PF_CORE_*). */
static __always_inline void pfb_count_outcome(__u32 event, __u32 error)
{
	__u32 key = PF_BPF_OUTCOME_ASSIGNED;

	if (event == PF_CORE_EVENT_ERROR &&
	    (error == PF_CORE_EADDRNOTAVAIL || error == PF_CORE_EAGAIN || error == PF_CORE_EADDRINUSE))
		key = PF_BPF_OUTCOME_FAILED;
	else if (event != PF_CORE_EVENT_ASSIGN)
		return;
	__u64 *count = bpf_map_lookup_elem(&outcomes, &key);
	if (count)
		*count += 1;
}

/* A record the ring had no room for is counted, never dropped silently:
 * the next drain reports the count. */
static __always_inline void pfb_count_lost_record(void)
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
static __always_inline __u64 pfb_submit_flags(void)
{
	__u64 size = bpf_ringbuf_query(&records, BPF_RB_RING_SIZE);
	return bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void pfb_record(const struct pfb_dest *d, const struct pfb_record_facts *f)
{
	pfb_count_outcome(f->event, f->error);
	if (!pfb_records_wanted())
		return;
	struct pf_bpf_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		pfb_count_lost_record();
		return;
	}
	pfb_fill_record(r, d, f);
	bpf_ringbuf_submit(r, pfb_submit_flags());
}

/* A record kept until a later hook knows its local address (sockops for
 * TCP, the release hook for a connect that never reached it), in the
 * socket's state or its port's slot; kept is 0 when there is none to
 * keep it in. */
static __always_inline void pfb_keep_record(struct pf_bpf_record *kept, __u8 *has_kept, const struct pfb_dest *d,
					    const struct pfb_record_facts *f)
{
	pfb_count_outcome(f->event, f->error);
	if (!kept || !has_kept || !pfb_records_wanted())
		return;
	pfb_fill_record(kept, d, f);
	*has_kept = 1;
}

/* pfb_keep_record in the socket's state, st (0 when it has none). */
static __always_inline void pfb_record_later(struct pfb_sock_state *st, const struct pfb_dest *d,
					     const struct pfb_record_facts *f)
{
	pfb_keep_record(st ? &st->kept : 0, st ? &st->has_kept : 0, d, f);
}

/* Sends a kept record. */
static __always_inline void pfb_send_kept(struct pf_bpf_record *kept)
{
	struct pf_bpf_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		pfb_count_lost_record();
		return;
	}
	__builtin_memcpy(r, kept, sizeof(*r));
	bpf_ringbuf_submit(r, pfb_submit_flags());
}

/* A kept record still there when its connect is known to have failed
 * after the connect hook (no route, a 4-tuple taken meanwhile): the
 * socket closes, or its port's claim lapsed, without reaching sockops.
 * An audited one goes out as it is (the kernel's port unknown).  One
 * whose port the hook had bound stays an assignment (SPEC: a port was
 * taken from the range; the shim's says the same, with the program's
 * errno).  Which errno the program saw, no hook here can tell: the
 * result says EUNKNOWN rather than guess, and the reason says why. */
static __always_inline void pfb_send_unfinished(struct pf_bpf_record *kept, __u8 *has_kept)
{
	if (!*has_kept)
		return;
	if (kept->event != PF_CORE_EVENT_AUDIT)
		kept->error = PF_BPF_ERROR_UNSEEN;
	pfb_send_kept(kept);
	*has_kept = 0;
}

/* A record with no local address: event and errno only. */
static __always_inline void pfb_record_simple(const struct pfb_dest *d, __u32 event, __u32 error, int udp)
{
	struct pfb_record_facts f = {.event = event, .error = error, .udp = udp};
	pfb_record(d, &f);
}

/* A record of a bind: the local address is the one bound or asked for,
 * and there is no remote. */
static __always_inline void pfb_record_bind(__u32 family, __u32 sock_family, const __u32 *addr, __u16 port,
					    __u32 event, __u32 error, __u32 attempts, int udp)
{
	struct pfb_dest nowhere = {.family = family, .sock_family = sock_family};
	struct pfb_record_facts f = {.event = event, .error = error, .attempts = attempts, .udp = udp,
				     .local_port = port};
	for (int i = 0; i < 4; i++)
		f.local_addr[i] = addr[i];
	pfb_record(&nowhere, &f);
}

#endif
