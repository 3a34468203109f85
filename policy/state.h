/* The algorithm state one app shares across all its processes: a small
 * file under state_dir, mapped with mmap and updated with C11 atomics. */
#ifndef PORTFENCE_STATE_H
#define PORTFENCE_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PF_STATE_MAGIC 0x31657461745366ull /* "fState1" */
#define PF_STATE_LAYOUT 1
/* RFC 6056 §3.3.4's table of per-destination-class counters. */
#define PF_DH_TABLE_LEN 256

struct pf_shared_state {
	uint64_t magic;
	uint32_t layout;
	uint32_t size;
	uint8_t hash_key[16];	/* F()'s secret_key (Algorithms 3 and 4) */
	uint8_t index_key[16];	/* G()'s secret_key2 (Algorithm 4) */
	_Atomic uint32_t sequential_next;
	_Atomic uint32_t hash_next;		/* Algorithm 3's next_ephemeral */
	_Atomic uint32_t increments_next;	/* Algorithm 5's next_ephemeral */
	_Atomic uint32_t table[PF_DH_TABLE_LEN];	/* Algorithm 4's table[] */
};

#define PF_HOLD_SLOTS 8
struct pf_state {
	struct pf_shared_state *shared;	/* counters and keys, as today */
	_Atomic uint64_t *holds;	/* num_ports * PF_HOLD_SLOTS words */
	uint32_t num_ports;
	bool file_backed;
};

/* Opens, or creates atomically, the state file of one app under dir
 * (created 0700 if missing).  The file is 0600 and owned by the caller;
 * symlinks are never followed.  Returns 0 or -errno. */
int pf_state_open(const char *dir, const char *app_name, struct pf_state *state);
/* A process-local state, for when no file can be used. */
int pf_state_open_private(struct pf_state *state);
void pf_state_close(struct pf_state *state);

/* $XDG_RUNTIME_DIR/portfence, else /tmp/portfence-UID.  xdg_runtime_dir
 * is what secure_getenv gave (may be NULL). */
int pf_state_default_dir(const char *xdg_runtime_dir, char *buf, size_t len);
/* The file name used for app_name inside the state directory. */
int pf_state_file_name(const char *app_name, char *buf, size_t len);

#endif
