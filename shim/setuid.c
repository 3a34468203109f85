/* setuid, seteuid, setreuid, setresuid: the process's user changes (a
 * service started as root drops to its own).  The collector takes a
 * ring's uid from the kernel when the ring is registered, so the next
 * record registers a new ring under the new user (collect.c); the
 * records already in the old one keep the user that made them.  The
 * result and errno are libc's. */
#include "shim.h"

static int user_changed(int result)
{
	if (result == 0)
		pf_collect_user_changed();
	return result;
}

int pf_setuid(uid_t uid)
{
	return user_changed(real_setuid(uid));
}

int pf_seteuid(uid_t euid)
{
	return user_changed(real_seteuid(euid));
}

int pf_setreuid(uid_t ruid, uid_t euid)
{
	return user_changed(real_setreuid(ruid, euid));
}

int pf_setresuid(uid_t ruid, uid_t euid, uid_t suid)
{
	return user_changed(real_setresuid(ruid, euid, suid));
}
