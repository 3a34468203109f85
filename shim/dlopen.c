/* dlopen: a library opened with RTLD_DEEPBIND looks up its symbols in its
 * own scope (itself, its dependencies, libc) before the preloaded shim,
 * so its connect() would be libc's.  Those opens go through deepbind.c.
 *
 * Every other dlopen must be libc's own, called from the caller's own
 * return address: dlopen searches the CALLER's RUNPATH and expands $ORIGIN
 * from the caller.  On x86-64 the entry is therefore a jump, not a call.
 * Elsewhere the shim's C wrapper stands in for the caller (documented). */
#include <dlfcn.h>

#include "shim.h"

/* Reached when dlopen runs before the constructor resolved libc's. */
__attribute__((used)) void *pf_dlopen_unresolved(const char *file, int flags)
{
	void *(*next)(const char *, int) = (void *(*)(const char *, int))pf_real(PF_SYM_dlopen);
	return next ? next(file, flags) : NULL;
}

#if defined(__x86_64__)
_Static_assert(RTLD_DEEPBIND == 8, "the entry below tests bit 3");
_Static_assert(PF_SYM_dlopen == 13, "the entry below reads pf_resolved[13]");
__asm__(".text\n"
	".globl dlopen\n"
	".type dlopen, @function\n"
	"dlopen:\n"
	"	.cfi_startproc\n"
	"	endbr64\n"
	"	testl $8, %esi\n"
	"	jnz pf_dlopen_deepbind\n"
	"	movq pf_resolved+104(%rip), %rax\n"
	"	testq %rax, %rax\n"
	"	jz pf_dlopen_unresolved\n"
	"	jmp *%rax\n"
	"	.cfi_endproc\n"
	".size dlopen, .-dlopen\n");
#else
PF_EXPORT void *dlopen(const char *file, int flags)
{
	if (flags & RTLD_DEEPBIND)
		return pf_dlopen_deepbind(file, flags);
	return pf_dlopen_unresolved(file, flags);
}
#endif
