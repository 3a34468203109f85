#include "core/decide.h"

#include <errno.h>

/* The core's numbers are the ones user space and the kernel use. */
_Static_assert(PF_CORE_EPERM == EPERM, "EPERM");
_Static_assert(PF_CORE_EAGAIN == EAGAIN, "EAGAIN");
_Static_assert(PF_CORE_EACCES == EACCES, "EACCES");
_Static_assert(PF_CORE_EADDRINUSE == EADDRINUSE, "EADDRINUSE");
_Static_assert(PF_CORE_EADDRNOTAVAIL == EADDRNOTAVAIL, "EADDRNOTAVAIL");
_Static_assert(PF_CORE_AF_INET == AF_INET && PF_CORE_AF_INET6 == AF_INET6, "address families");

static unsigned port_place(const struct pf_question *q)
{
	const struct pf_app *app = q->app;

	if (q->bind_port >= app->range_lo && q->bind_port <= app->range_hi)
		return PF_CORE_PORT_OWN;
	int owner = q->policy ? pf_policy_app_at_port(q->policy, q->bind_port) : -1;
	return owner >= 0 && &q->policy->apps[owner] != app ? PF_CORE_PORT_OTHER_APP
							   : PF_CORE_PORT_OUTSIDE;
}

void pf_core_question_of(const struct pf_question *q, struct pf_core_question *core)
{
	const struct pf_app *app = q->app;

	*core = (struct pf_core_question){
		.family = q->dest ? (__u8)q->dest->sa_family : 0,
		.udp = q->udp,
		.call = (__u8)q->call,
		.policy = !q->policy_usable ? PF_CORE_POLICY_UNUSABLE
			  : app ? PF_CORE_POLICY_APP : PF_CORE_POLICY_NONE,
		.audit = q->mode == PF_MODE_AUDIT,
		.has_port = !q->needs_port,
		.tcp_busy = q->tcp_busy,
		.fastopen = q->fastopen,
		.defers_port = 1,
	};
	if (core->policy != PF_CORE_POLICY_APP)
		return;
	core->protocol_managed = (app->protocols & (q->udp ? PF_PROTO_UDP : PF_PROTO_TCP)) != 0;
	core->deny_explicit_bind = app->deny_explicit_bind;
	if (q->call == PF_CORE_CALL_BIND_PORT && core->protocol_managed) {
		core->port_place = (__u8)port_place(q);
		core->bind_allowed = pf_app_bind_allows(app, q->bind_port);
	}
	/* The rules are judged only where they can change the answer. */
	if (q->dest && core->protocol_managed)
		core->dest_denied = !pf_app_permits(app, q->dest, q->dest_len);
}

struct pf_decision pf_decide(const struct pf_question *q)
{
	struct pf_core_question core;

	pf_core_question_of(q, &core);
	struct pf_core_answer a = pf_core_decide(&core);
	return (struct pf_decision){
		.verdict = (enum pf_verdict)a.verdict, .event = (enum pf_event)a.event,
		.error = a.error, .tcp_client = a.tcp_client, .shares_port = a.shares_port,
		.exhausted = a.exhausted,
	};
}
