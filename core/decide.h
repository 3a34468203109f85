/* What the policy says of one call, decided before anything is done.
 * The shim gathers the facts (its runtime, the socket, the call) into a
 * pf_question; pf_decide judges the destination against the app's rules
 * and hands the rest to the core's verdict (core/verdict.h), which the
 * BPF programs share. */
#ifndef PORTFENCE_DECIDE_H
#define PORTFENCE_DECIDE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/verdict.h"
#include "config/policy.h"

enum pf_event {
	PF_EVENT_ASSIGN = PF_CORE_EVENT_ASSIGN,
	PF_EVENT_DENY = PF_CORE_EVENT_DENY,
	PF_EVENT_ERROR = PF_CORE_EVENT_ERROR,
	PF_EVENT_AUDIT = PF_CORE_EVENT_AUDIT,
	PF_EVENT_BIND = PF_CORE_EVENT_BIND,
};

enum pf_verdict {
	PF_VERDICT_PASS = PF_CORE_PASS,		/* not ours: the real call, untouched */
	PF_VERDICT_CALL = PF_CORE_CALL,		/* ours and permitted, needs no port: the real call */
	PF_VERDICT_ASSIGN = PF_CORE_ASSIGN,	/* a port from the range, then the call */
	PF_VERDICT_DEFER = PF_CORE_DEFER,	/* bind the address only; the port comes later */
	PF_VERDICT_AUDIT = PF_CORE_AUDIT,	/* the real call, and a record of what enforce would do */
	PF_VERDICT_REFUSE = PF_CORE_REFUSE,	/* fail with error, and a record of event */
};

struct pf_question {
	bool policy_usable;	/* false: on_error deny applies */
	const struct pf_app *app;	/* NULL: the process matches no app */
	enum pf_mode mode;
	bool udp;
	bool needs_port;	/* the socket has no port, and this call gives it one */
	const struct sockaddr *dest;	/* NULL: the call names no destination */
	socklen_t dest_len;
	unsigned call;		/* PF_CORE_CALL_* (0: connect) */
	uint16_t bind_port;	/* PF_CORE_CALL_BIND_PORT: the port asked for */
	const struct pf_policy *policy;	/* for bind_port: the other apps' ranges */
	bool fastopen;		/* a TCP send with MSG_FASTOPEN */
	bool tcp_busy;		/* a TCP socket connected or listening (asked when it matters) */
};

struct pf_decision {
	enum pf_verdict verdict;
	enum pf_event event;	/* REFUSE: the record's event */
	int error;		/* REFUSE: the errno; AUDIT: what enforce would answer */
	bool tcp_client;	/* ASSIGN: the core's TCP-client rule */
	bool shares_port;	/* ASSIGN: bind with SO_REUSEADDR */
	int exhausted;		/* ASSIGN: the errno when the range has no free port */
};

/* The core's question for q, the destination judged against the rules. */
void pf_core_question_of(const struct pf_question *q, struct pf_core_question *core);
struct pf_decision pf_decide(const struct pf_question *question);

#endif
