/* Whether the program is written in Go.  Go makes its own system calls
 * (net.Dial never calls libc's connect, cgo or not), so the shim is
 * blind there: the program must be told, and the log too.  Read from the
 * program's own note segments in memory: Go's linker writes a "Go" note
 * of type 4 (the Go build id; name "Go\0\0") into every Go executable. */
#include <link.h>
#include <string.h>

#include "shim.h"

#define NT_GO_BUILDID 4

static bool notes_name_go(const char *at, size_t size)
{
	const char *end = at + size;

	while (at + sizeof(ElfW(Nhdr)) <= end) {
		const ElfW(Nhdr) *note = (const ElfW(Nhdr) *)at;
		const char *name = at + sizeof(*note);
		size_t name_room = (note->n_namesz + 3) & ~3u, desc_room = (note->n_descsz + 3) & ~3u;
		if (name + name_room + desc_room > end)
			return false;
		if (note->n_type == NT_GO_BUILDID &&
		    (note->n_namesz == 3 || note->n_namesz == 4) && memcmp(name, "Go", 3) == 0)
			return true;
		at = name + name_room + desc_room;
	}
	return false;
}

/* The main program is the first object dl_iterate_phdr reports. */
static int main_program_is_go(struct dl_phdr_info *info, size_t size, void *found)
{
	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_NOTE &&
		    notes_name_go((const char *)(info->dlpi_addr + ph->p_vaddr), ph->p_memsz))
			*(bool *)found = true;
	}
	return 1;
}

bool pf_program_is_go(void)
{
	bool found = false;
	dl_iterate_phdr(main_program_is_go, &found);
	return found;
}
