#include "shim.h"

PF_EXPORT int socket(int domain, int type, int protocol)
{
	return pf_socket(domain, type, protocol);
}
