/* The exported symbols, one per line of hooks.def: each calls its logic,
 * pf_NAME in shim/NAME.c.  dlopen has an entry of its own (dlopen.c). */
#include "shim.h"

#define PF_HOOK(type, name, params, args, fallback) \
	PF_EXPORT PF_HOT type name params           \
	{                                           \
		return pf_##name args;              \
	}
#define PF_HOOK_VOID(name, params, args, fallback) \
	PF_EXPORT void name params                 \
	{                                          \
		pf_##name args;                    \
	}
#define PF_HOOK_ENTRY(type, name, params)
#include "hooks.def"
