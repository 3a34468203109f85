/* The real libc symbols.  Resolved lazily (a hook may run before our
 * constructor, from another library's constructor), cached in atomics
 * (threads may race to resolve; they store the same value), and never
 * resolved to our own definition, which would recurse forever.  When no
 * definition can be found the raw system call stands in, so a hook never
 * crashes for want of a symbol. */
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

const char *const pf_symbol_names[PF_SYM_COUNT] = {
#define PF_HOOK(type, name, params, args, fallback) [PF_SYM_##name] = #name,
#include "hooks.def"
};

PF_HOT_LINES _Atomic(void *) pf_resolved[PF_SYM_COUNT];

/* Where this library is mapped, found once: dladdr() on every candidate
 * cost ~96,000 instructions per symbol at process start (callgrind). */
static uintptr_t self_start, self_end;

static int find_self(struct dl_phdr_info *info, size_t size, void *base)
{
	(void)size;
	if (info->dlpi_addr != (uintptr_t)base)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		uintptr_t start = info->dlpi_addr + ph->p_vaddr, end = start + ph->p_memsz;
		if (!self_start || start < self_start)
			self_start = start;
		if (end > self_end)
			self_end = end;
	}
	return 1;
}

static bool is_our_own(void *address)
{
	static char anchor;

	if (!self_end) {
		Dl_info info;
		if (dladdr(&anchor, &info))
			dl_iterate_phdr(find_self, info.dli_fbase);
	}
	return address && (uintptr_t)address >= self_start && (uintptr_t)address < self_end;
}

static void *resolve(enum pf_symbol symbol)
{
	void *address = dlsym(RTLD_NEXT, pf_symbol_names[symbol]);

	if (!address || is_our_own(address)) {
		void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
		address = libc ? dlsym(libc, pf_symbol_names[symbol]) : NULL;
		if (libc)
			dlclose(libc);
		if (is_our_own(address))
			address = NULL;
	}
	return address;
}

void pf_find_vdso_clock(void)
{
	void *vdso = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
	if (!vdso)
		return;
#if defined(__x86_64__)
	void *entry = dlvsym(vdso, "__vdso_clock_gettime", "LINUX_2.6");
#elif defined(__aarch64__)
	void *entry = dlvsym(vdso, "__kernel_clock_gettime", "LINUX_2.6.39");
#else
	void *entry = NULL;
#endif
	if (entry)
		pf_clock_gettime = (pf_clock_fn)entry;
	dlclose(vdso);
}

void *pf_real(enum pf_symbol symbol)
{
	void *address = atomic_load_explicit(&pf_resolved[symbol], memory_order_acquire);

	if (!address) {
		address = resolve(symbol);
		if (address)
			atomic_store_explicit(&pf_resolved[symbol], address, memory_order_release);
	}
	return address;
}

/* The first call of each real_NAME (shim.h): resolves libc's
 * definition, or makes the raw system call when there is none. */
#define PF_HOOK(type, name, params, args, fallback)                          \
	PF_COLD __attribute__((noinline)) type real_first_##name params      \
	{                                                                    \
		type(*fn) params = (type(*) params)pf_real(PF_SYM_##name);   \
		return fn ? fn args : fallback;                              \
	}
#define PF_HOOK_VOID(name, params, args, fallback)                           \
	PF_COLD __attribute__((noinline)) void real_first_##name params      \
	{                                                                    \
		void(*fn) params = (void(*) params)pf_real(PF_SYM_##name);   \
		if (fn)                                                      \
			fn args;                                             \
		else                                                         \
			fallback;                                            \
	}
#define PF_HOOK_ENTRY(type, name, params)
#include "hooks.def"
