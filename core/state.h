/* The algorithm state one app shares across all its processes: a SysV
 * shared memory segment, named by a small file under state_dir and
 * updated with C11 atomics. */
#ifndef PORTFENCE_STATE_H
#define PORTFENCE_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/constants.h"

#define PF_STATE_MAGIC 0x31657461745366ull /* "fState1" */
#define PF_STATE_LAYOUT 4
#define PF_STATE_FILE_MAGIC 0x31656c6946745366ull /* "fStFile1" */
/* RFC 6056 §3.3.4's table of per-destination-class counters. */
#define PF_DH_TABLE_LEN PF_CORE_DH_TABLE_LEN
/* Words of the held 4-tuples table per port of the app's range. */
#define PF_HOLD_SLOTS 8
#define PF_HOLD_ALIGN 64

/* The head of the shared segment; the holds table follows at
 * holds_offset.  Fresh segments are zero, so only the keys and the
 * RFC's random starting points are written at creation. */
struct pf_shared_state {
	uint64_t magic;
	uint32_t layout;
	uint32_t size;		/* of the whole segment, holds included */
	uint64_t nonce;		/* also in the file: a reused shmid is not ours */
	uint32_t num_ports;
	uint32_t holds_offset;	/* a multiple of PF_HOLD_ALIGN */
	uint8_t hash_key[16];	/* F()'s secret_key (Algorithms 3 and 4) */
	uint8_t index_key[16];	/* G()'s secret_key2 (Algorithm 4) */
	_Atomic uint32_t sequential_next;
	_Atomic uint32_t hash_next;		/* Algorithm 3's next_ephemeral */
	_Atomic uint32_t increments_next;	/* Algorithm 5's next_ephemeral */
	_Atomic uint32_t table[PF_DH_TABLE_LEN];	/* Algorithm 4's table[] */
	/* What the app's processes did since the state was made, for
	 * `status --prometheus`: ports given, and calls that found none. */
	_Atomic uint64_t assignments;
	_Atomic uint64_t failures;
};

/* The state file under state_dir: only a rendezvous naming the SysV
 * segment that holds the state.  It is read with pread and never mapped,
 * so nothing done to it can fault a process that uses the state. */
struct pf_state_file {
	uint64_t magic;
	uint32_t layout;
	uint32_t num_ports;
	int32_t shmid;
	uint32_t size;		/* of the segment */
	uint64_t nonce;
};

struct pf_state {
	struct pf_shared_state *shared;	/* counters and keys */
	/* Held 4-tuples: block i (PF_HOLD_SLOTS words, 64-byte aligned,
	 * zero at creation) belongs to port range_lo + i. */
	_Atomic uint64_t *holds;
	uint32_t num_ports;
	bool file_backed;
};

/* Opens the state of one app under dir (created 0700 if missing),
 * creating it atomically when there is none.  The file is 0600 and
 * owned by the caller; symlinks are never followed.  A file that is
 * truncated, garbled, names a segment that is gone or not ours, or was
 * made for another num_ports is rebuilt.  Returns 0 or -errno. */
int pf_state_open(const char *dir, const char *app_name, uint32_t num_ports,
		  struct pf_state *state);
/* A state of this process and its forked children, for when no file can
 * be used. */
int pf_state_open_private(uint32_t num_ports, struct pf_state *state);
void pf_state_close(struct pf_state *state);
/* Removes app_name's state: its segment (freed once the last process
 * detaches) and its file.  0 or -errno. */
int pf_state_remove(const char *dir, const char *app_name);
/* The same for every state file in dir. */
int pf_state_remove_all(const char *dir);

/* $XDG_RUNTIME_DIR/portfence, else /tmp/portfence-UID.  xdg_runtime_dir
 * is what secure_getenv gave (may be NULL). */
int pf_state_default_dir(const char *xdg_runtime_dir, char *buf, size_t len);
/* The counters of app_name's state under dir, read without creating
 * anything: 0, or -errno (-ENOENT: no state yet). */
int pf_state_read_counters(const char *dir, const char *app_name, uint32_t num_ports,
			   uint64_t *assignments, uint64_t *failures);
/* The file name used for app_name inside the state directory. */
int pf_state_file_name(const char *app_name, char *buf, size_t len);

#endif
