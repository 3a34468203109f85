#include "shim.h"

PF_EXPORT void closefrom(int low_fd)
{
	pf_closefrom(low_fd);
}
