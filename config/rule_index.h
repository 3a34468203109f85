/* Inside the policy library: destinations as the rules see them, and the
 * compiled form of an app's rules. */
#ifndef PORTFENCE_RULE_INDEX_H
#define PORTFENCE_RULE_INDEX_H

#include "config/policy.h"

/* A destination once IPv4-mapped addresses are folded: addr holds 4 bytes
 * for AF_INET, 16 for AF_INET6, and points into the caller's sockaddr or
 * at a constant. */
struct pf_dest {
	sa_family_t family;
	const uint8_t *addr;
	uint16_t port;
};

/* -1 when dest is no inet address. */
int pf_dest_normalise(const struct sockaddr *dest, socklen_t dest_len, struct pf_dest *out);
/* pf_dest_normalise, then an unspecified address becomes loopback. */
int pf_dest_for_rules(const struct sockaddr *dest, socklen_t dest_len, struct pf_dest *out);

bool pf_rule_index_permits(const struct pf_rule_index *index, bool has_allow,
			   const struct pf_dest *dest);

#endif
