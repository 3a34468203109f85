/* An app's destination rules compiled into the entries of the BPF
 * backend's four LPM tries (see bpf/rules_api.h for how the programs
 * judge with them).  The loader puts each entry in its map:
 *
 *	for (size_t i = 0; i < rules.deny4.count; i++)
 *		bpf_map_update_elem(deny4_fd, &rules.deny4.entries[i].key,
 *				    &rules.deny4.entries[i].spans, BPF_ANY);
 *
 * and likewise deny6, allow4, allow6; has_allow goes in the app's
 * configuration. */
#ifndef PORTFENCE_BPF_RULES_H
#define PORTFENCE_BPF_RULES_H

#include "config/policy.h"
#include "bpf/rules_api.h"

struct pf_bpf_entry4 {
	struct pf_bpf_lpm4_key key;
	struct pf_bpf_port_spans spans;
};

struct pf_bpf_entry6 {
	struct pf_bpf_lpm6_key key;
	struct pf_bpf_port_spans spans;
};

struct pf_bpf_table4 {
	struct pf_bpf_entry4 *entries;
	size_t count;
};

struct pf_bpf_table6 {
	struct pf_bpf_entry6 *entries;
	size_t count;
};

struct pf_bpf_rules {
	struct pf_bpf_table4 deny4, allow4;
	struct pf_bpf_table6 deny6, allow6;
	int has_allow;
};

/* 0; or -1 with one "FILE:LINE: message" in diags (may be NULL) when an
 * entry needs more than PF_BPF_PORT_SPANS port intervals (the app cannot
 * use the BPF backend) or memory ran out.  out is empty after a failure;
 * pf_bpf_rules_free it either way. */
int pf_bpf_rules_compile(const struct pf_app *app, struct pf_bpf_rules *out,
			 struct pf_diags *diags);
void pf_bpf_rules_free(struct pf_bpf_rules *rules);

#endif
