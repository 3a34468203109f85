#include "shim.h"

PF_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	return pf_close_range(first, last, flags);
}
