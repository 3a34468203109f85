/* Libraries opened with RTLD_DEEPBIND (PHP's curl and sockets extensions,
 * some JNI and Python modules).  Their references to connect() and the
 * other interposed calls were bound to libc's, past the shim.  After the
 * real dlopen, each such binding is redone to what the rest of the
 * program gets for that name (the shim's, or a sanitizer's interceptor
 * that calls the shim):
 *  - a slot that holds libc's definition is rebound;
 *  - a lazy (not yet resolved) PLT slot of an object this dlopen brought
 *    in is bound now, when the library's own scope would give libc's.
 * A slot bound to anything else (the library's own definition of the
 * name, another namespace's libc) is left as it is.  The cost is paid
 * once per RTLD_DEEPBIND open, never per call. */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shim.h"

#if defined(__x86_64__)
#define R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define R_GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define R_GLOB_DAT R_AARCH64_GLOB_DAT
#endif

#ifdef R_JUMP_SLOT
#define MAX_NEW_OBJECTS 256

struct rebind {
	void *handle;
	void *libc_def[PF_SYM_COUNT];	/* libc's definition of each name */
	void *program_def[PF_SYM_COUNT]; /* what the program's own lookups give */
	uintptr_t new_objects[MAX_NEW_OBJECTS];	/* l_addr of each, this dlopen's */
	size_t new_count;
};

static bool is_new_object(const struct rebind *rb, uintptr_t base)
{
	for (size_t i = 0; i < rb->new_count; i++)
		if (rb->new_objects[i] == base)
			return true;
	return false;
}

/* The dynamic section's pointers, which ld.so has made absolute on most
 * targets and left relative on others. */
static uintptr_t dyn_pointer(const ElfW(Dyn) *dyn, uintptr_t base)
{
	uintptr_t value = (uintptr_t)dyn->d_un.d_ptr;
	return value < base ? value + base : value;
}

struct object {
	uintptr_t base, lo, hi, relro_lo, relro_hi;
	const ElfW(Sym) *symtab;
	const char *strtab;
};

static void write_slot(const struct object *obj, void **slot, void *value)
{
	uintptr_t at = (uintptr_t)slot;
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t page_start = at & ~((uintptr_t)page - 1);
	bool read_only = at >= obj->relro_lo && at < obj->relro_hi;

	if (read_only && mprotect((void *)page_start, (size_t)page, PROT_READ | PROT_WRITE) < 0)
		return;
	atomic_store_explicit((_Atomic(void *) *)slot, value, memory_order_relaxed);
	if (read_only)
		mprotect((void *)page_start, (size_t)page, PROT_READ);
}

static int symbol_index(const char *name)
{
	for (int i = 0; i < PF_SYM_COUNT; i++)
		if (strcmp(name, pf_symbol_names[i]) == 0)
			return i;
	return -1;
}

static void rebind_relocations(struct rebind *rb, const struct object *obj, const ElfW(Rela) *rela,
			       size_t count)
{
	for (size_t i = 0; rela && i < count; i++) {
		unsigned long type = ELF64_R_TYPE(rela[i].r_info);
		const ElfW(Sym) *sym = &obj->symtab[ELF64_R_SYM(rela[i].r_info)];
		if ((type != R_JUMP_SLOT && type != R_GLOB_DAT) || sym->st_shndx != SHN_UNDEF)
			continue;
		int index = symbol_index(obj->strtab + sym->st_name);
		if (index < 0 || !rb->program_def[index] || rb->program_def[index] == rb->libc_def[index])
			continue;
		void **slot = (void **)(obj->base + rela[i].r_offset);
		uintptr_t bound = (uintptr_t)*slot;
		bool to_libc = *slot == rb->libc_def[index];
		bool lazy = type == R_JUMP_SLOT && bound >= obj->lo && bound < obj->hi &&
			    is_new_object(rb, obj->base) &&
			    dlsym(rb->handle, pf_symbol_names[index]) == rb->libc_def[index];
		if (to_libc || lazy)
			write_slot(obj, slot, rb->program_def[index]);
	}
}

static void rebind_object(struct rebind *rb, struct object *obj, const ElfW(Dyn) *dyn)
{
	const ElfW(Rela) *rela = NULL, *jmprel = NULL;
	size_t rela_size = 0, jmprel_size = 0;

	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_SYMTAB: obj->symtab = (const ElfW(Sym) *)dyn_pointer(dyn, obj->base); break;
		case DT_STRTAB: obj->strtab = (const char *)dyn_pointer(dyn, obj->base); break;
		case DT_RELA: rela = (const ElfW(Rela) *)dyn_pointer(dyn, obj->base); break;
		case DT_RELASZ: rela_size = dyn->d_un.d_val; break;
		case DT_JMPREL: jmprel = (const ElfW(Rela) *)dyn_pointer(dyn, obj->base); break;
		case DT_PLTRELSZ: jmprel_size = dyn->d_un.d_val; break;
		default: break;
		}
	}
	if (!obj->symtab || !obj->strtab)
		return;
	rebind_relocations(rb, obj, rela, rela_size / sizeof(ElfW(Rela)));
	rebind_relocations(rb, obj, jmprel, jmprel_size / sizeof(ElfW(Rela)));
}

static int visit_object(struct dl_phdr_info *info, size_t size, void *data)
{
	struct rebind *rb = data;
	struct object obj = {.base = info->dlpi_addr, .lo = UINTPTR_MAX};
	const ElfW(Dyn) *dyn = NULL;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr, end = start + ph->p_memsz;
		if (ph->p_type == PT_LOAD) {
			obj.lo = start < obj.lo ? start : obj.lo;
			obj.hi = end > obj.hi ? end : obj.hi;
		} else if (ph->p_type == PT_DYNAMIC) {
			dyn = (const ElfW(Dyn) *)start;
		} else if (ph->p_type == PT_GNU_RELRO) {
			obj.relro_lo = start;
			obj.relro_hi = end;
		}
	}
	/* The shim's own references are its business. */
	uintptr_t self = (uintptr_t)pf_dlopen_deepbind;
	if (dyn && !(self >= obj.lo && self < obj.hi))
		rebind_object(rb, &obj, dyn);
	return 0;
}

/* The objects this dlopen brought in follow the one it opened in the
 * namespace's list of loaded objects. */
static void collect_new_objects(struct rebind *rb)
{
	struct link_map *map = NULL;

	if (dlinfo(rb->handle, RTLD_DI_LINKMAP, &map) < 0)
		return;
	for (; map && rb->new_count < MAX_NEW_OBJECTS; map = map->l_next)
		rb->new_objects[rb->new_count++] = map->l_addr;
}

static void rebind_deep_references(void *handle)
{
	struct rebind rb = {.handle = handle};
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);

	if (!libc)
		return;
	for (int i = 0; i < PF_SYM_COUNT; i++) {
		rb.libc_def[i] = dlsym(libc, pf_symbol_names[i]);
		rb.program_def[i] = dlsym(RTLD_DEFAULT, pf_symbol_names[i]);
	}
	dlclose(libc);
	collect_new_objects(&rb);
	dl_iterate_phdr(visit_object, &rb);
}

#else
/* Elsewhere (REL relocations, other types): not rebound, documented. */
static void rebind_deep_references(void *handle)
{
	(void)handle;
}
#endif

typedef void *(*dlopen_fn)(const char *, int);

/* dlopen searches a bare name from its caller's point of view (the
 * caller's RPATH and RUNPATH); called from here, it would search from the
 * shim's.  So a name not loaded yet is looked for first in the caller's
 * search path, as dlinfo gives it, then left to dlopen (LD_LIBRARY_PATH,
 * the cache, the system directories). */
static void *open_from_callers_path(dlopen_fn next, const char *file, int flags, void *caller)
{
	struct link_map *map = NULL;
	Dl_info info;
	Dl_serinfo size;
	void *handle = NULL;

	if (!file || strchr(file, '/') || !caller)
		return NULL;
	handle = next(file, flags | RTLD_NOLOAD);
	if (handle || !dladdr1(caller, &info, (void **)&map, RTLD_DL_LINKMAP) || !map ||
	    dlinfo(map, RTLD_DI_SERINFOSIZE, &size) < 0)
		return handle;
	Dl_serinfo *paths = malloc(size.dls_size);
	if (!paths)
		return NULL;
	*paths = size;
	if (dlinfo(map, RTLD_DI_SERINFO, paths) == 0) {
		for (unsigned i = 0; i < paths->dls_cnt && !handle; i++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", paths->dls_serpath[i].dls_name, file);
			if (access(path, F_OK) == 0)
				handle = next(path, flags);
		}
	}
	free(paths);
	return handle;
}

/* Reached by a jump from dlopen's entry: the return address is still the
 * caller's. */
void *pf_dlopen_deepbind(const char *file, int flags)
{
	dlopen_fn next = (dlopen_fn)pf_real(PF_SYM_dlopen);
	void *caller = __builtin_extract_return_addr(__builtin_return_address(0));

	if (!next)
		return NULL;
	void *handle = open_from_callers_path(next, file, flags, caller);
	if (!handle)
		handle = next(file, flags);
	if (handle) {
		int saved = errno;
		rebind_deep_references(handle);
		errno = saved;
	}
	return handle;
}
