/* What the policy says of one call, decided before anything is done: a
 * pure function of the policy, the socket's kind and the destination.
 * The shim acts on the verdict; the BPF programs mirror it. */
#ifndef PORTFENCE_DECIDE_H
#define PORTFENCE_DECIDE_H

#include <stdbool.h>
#include <sys/socket.h>

#include "policy.h"

enum pf_event { PF_EVENT_ASSIGN, PF_EVENT_DENY, PF_EVENT_ERROR, PF_EVENT_AUDIT };

enum pf_verdict {
	PF_VERDICT_PASS,	/* not ours: the real call, untouched */
	PF_VERDICT_CALL,	/* ours and permitted, needs no port: the real call */
	PF_VERDICT_ASSIGN,	/* a port from the range, then the call */
	PF_VERDICT_AUDIT,	/* the real call, and a record of what enforce would do */
	PF_VERDICT_REFUSE,	/* fail with error, and a record of event */
};

struct pf_question {
	bool policy_usable;	/* false: on_error deny applies */
	const struct pf_app *app;	/* NULL: the process matches no app */
	enum pf_mode mode;
	bool udp;
	bool needs_port;	/* the socket has no port, and this call gives it one */
	const struct sockaddr *dest;	/* NULL: the call names no destination */
	socklen_t dest_len;
};

struct pf_decision {
	enum pf_verdict verdict;
	enum pf_event event;	/* REFUSE: the record's event */
	int error;		/* REFUSE: the errno; AUDIT: what enforce would answer */
};

struct pf_decision pf_decide(const struct pf_question *question);

#endif
