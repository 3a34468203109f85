#include "decide.h"

#include <errno.h>

static struct pf_decision verdict(enum pf_verdict kind, enum pf_event event, int error)
{
	return (struct pf_decision){.verdict = kind, .event = event, .error = error};
}

struct pf_decision pf_decide(const struct pf_question *q)
{
	if (!q->policy_usable)
		return verdict(PF_VERDICT_REFUSE, PF_EVENT_ERROR, EPERM);
	if (!q->app || !(q->app->protocols & (q->udp ? PF_PROTO_UDP : PF_PROTO_TCP)))
		return verdict(PF_VERDICT_PASS, PF_EVENT_ASSIGN, 0);
	bool denied = q->dest && !pf_app_permits(q->app, q->dest, q->dest_len);
	if (q->mode == PF_MODE_AUDIT) {
		if (q->needs_port || denied)
			return verdict(PF_VERDICT_AUDIT, PF_EVENT_AUDIT, denied ? EPERM : 0);
		return verdict(PF_VERDICT_CALL, PF_EVENT_ASSIGN, 0);
	}
	if (denied)
		return verdict(PF_VERDICT_REFUSE, PF_EVENT_DENY, EPERM);
	return verdict(q->needs_port ? PF_VERDICT_ASSIGN : PF_VERDICT_CALL, PF_EVENT_ASSIGN, 0);
}
