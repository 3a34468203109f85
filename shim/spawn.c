/* posix_spawn, posix_spawnp, system and popen: the child inherits the
 * program's sockets (those without FD_CLOEXEC), as after a fork, but
 * these start it without running fork's handlers (glibc clones with
 * CLONE_VM|CLONE_VFORK).  A socket kept there outlives its close here:
 * the hold generation moves on first, as fork's prepare handler moves
 * it, so that close forgets its 4-tuple rather than release it, and the
 * next connect to it asks the kernel.  Released, it was handed out
 * again while the child held it: EADDRNOTAVAIL. */
#include "shim.h"

int pf_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
		   const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	pf_fd_holds_fork_begins();
	return real_posix_spawn(pid, path, actions, attr, argv, envp);
}

int pf_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
		    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	pf_fd_holds_fork_begins();
	return real_posix_spawnp(pid, file, actions, attr, argv, envp);
}

int pf_system(const char *command)
{
	pf_fd_holds_fork_begins();
	return real_system(command);
}

FILE *pf_popen(const char *command, const char *mode)
{
	pf_fd_holds_fork_begins();
	return real_popen(command, mode);
}
