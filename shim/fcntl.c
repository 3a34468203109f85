/* fcntl and fcntl64 (what a program built with 64-bit file offsets
 * calls): F_DUPFD and F_DUPFD_CLOEXEC give the socket a second fd, as
 * dup does (dup.c).  Every other command passes through untouched.  The
 * shim's own fcntl calls (the log's and the sock_diag socket's moves)
 * come here too: their fds hold no 4-tuple. */
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

static int after(int fd, int cmd, int result)
{
	if (result >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		pf_fd_hold_shared(fd);
	return result;
}

/* libc's definition called as what it is, variadic (the caller of a
 * variadic function says in %al, on x86-64, how many vector registers
 * it passes); the raw system call when there is none. */
static int call_real(enum pf_symbol symbol, int fd, int cmd, void *arg)
{
	int (*real)(int, int, ...) = (int (*)(int, int, ...))pf_real(symbol);

	return real ? real(fd, cmd, arg) : (int)syscall(SYS_fcntl, fd, cmd, arg);
}

int pf_fcntl(int fd, int cmd, void *arg)
{
	return after(fd, cmd, call_real(PF_SYM_fcntl, fd, cmd, arg));
}

int pf_fcntl64(int fd, int cmd, void *arg)
{
	return after(fd, cmd, call_real(PF_SYM_fcntl64, fd, cmd, arg));
}
