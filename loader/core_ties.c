/* The BPF side's numbers (portfence_api.h), tied to the core's until the
 * programs take them from core/constants.h directly: a reordering on
 * either side fails the build instead of confining with the wrong
 * algorithm. */
#include "core/constants.h"
#include "bpf/portfence_api.h"

_Static_assert(PF_BPF_ALGO_SEQUENTIAL == PF_CORE_ALGO_SEQUENTIAL, "sequential");
_Static_assert(PF_BPF_ALGO_RANDOM == PF_CORE_ALGO_RANDOM, "random");
_Static_assert(PF_BPF_ALGO_RANDOM_REDRAW == PF_CORE_ALGO_RANDOM_REDRAW, "random-redraw");
_Static_assert(PF_BPF_ALGO_HASH == PF_CORE_ALGO_HASH, "hash");
_Static_assert(PF_BPF_ALGO_DOUBLE_HASH == PF_CORE_ALGO_DOUBLE_HASH, "double-hash");
_Static_assert(PF_BPF_ALGO_RANDOM_INCREMENTS == PF_CORE_ALGO_RANDOM_INCREMENTS, "random-increments");
_Static_assert(PF_BPF_PROTO_TCP == PF_CORE_PROTO_TCP && PF_BPF_PROTO_UDP == PF_CORE_PROTO_UDP,
	       "protocols");
_Static_assert(PF_BPF_DH_TABLE_LEN == PF_CORE_DH_TABLE_LEN, "table[] length");
_Static_assert(PF_BPF_ASSIGN == PF_CORE_EVENT_ASSIGN && PF_BPF_DENY == PF_CORE_EVENT_DENY &&
	       PF_BPF_ERROR == PF_CORE_EVENT_ERROR && PF_BPF_AUDIT == PF_CORE_EVENT_AUDIT &&
	       PF_BPF_BIND == PF_CORE_EVENT_BIND,
	       "record events");
_Static_assert(sizeof(((struct pf_bpf_config *)0)->hash_key) == 16 &&
	       sizeof(((struct pf_bpf_config *)0)->index_key) == 16, "SipHash keys");
_Static_assert(PF_BPF_ERROR_UNSEEN == PF_CORE_ERROR_UNSEEN, "an errno no hook saw");
