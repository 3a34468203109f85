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
	[PF_SYM_SOCKET] = "socket",	  [PF_SYM_CONNECT] = "connect",
	[PF_SYM_BIND] = "bind",		  [PF_SYM_LISTEN] = "listen",
	[PF_SYM_SENDTO] = "sendto",	  [PF_SYM_SENDMSG] = "sendmsg",
	[PF_SYM_SENDMMSG] = "sendmmsg",	  [PF_SYM_CLOSE] = "close",
	[PF_SYM_DUP2] = "dup2",		  [PF_SYM_DUP3] = "dup3",
	[PF_SYM_CLOSE_RANGE] = "close_range", [PF_SYM_CLOSEFROM] = "closefrom",
	[PF_SYM_SETSOCKOPT] = "setsockopt", [PF_SYM_GETSOCKOPT] = "getsockopt",
	[PF_SYM_GETSOCKNAME] = "getsockname",
	[PF_SYM_DLOPEN] = "dlopen",
};

_Atomic(void *) pf_resolved[PF_SYM_COUNT];

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

void *pf_real(enum pf_symbol symbol)
{
	void *address = atomic_load_explicit(&pf_resolved[symbol], memory_order_acquire);

	if (!address) {
		pf_in_shim++;
		address = resolve(symbol);
		pf_in_shim--;
		if (address)
			atomic_store_explicit(&pf_resolved[symbol], address, memory_order_release);
	}
	return address;
}

#define REAL(symbol, type) ((type)pf_real(symbol))

int real_socket(int domain, int type, int protocol)
{
	int (*fn)(int, int, int) = REAL(PF_SYM_SOCKET, int (*)(int, int, int));
	return fn ? fn(domain, type, protocol) : (int)syscall(SYS_socket, domain, type, protocol);
}

int real_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int (*fn)(int, const struct sockaddr *, socklen_t) =
		REAL(PF_SYM_CONNECT, int (*)(int, const struct sockaddr *, socklen_t));
	return fn ? fn(fd, addr, len) : (int)syscall(SYS_connect, fd, addr, len);
}

int real_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	int (*fn)(int, const struct sockaddr *, socklen_t) =
		REAL(PF_SYM_BIND, int (*)(int, const struct sockaddr *, socklen_t));
	return fn ? fn(fd, addr, len) : (int)syscall(SYS_bind, fd, addr, len);
}

int real_listen(int fd, int backlog)
{
	int (*fn)(int, int) = REAL(PF_SYM_LISTEN, int (*)(int, int));
	return fn ? fn(fd, backlog) : (int)syscall(SYS_listen, fd, backlog);
}

ssize_t real_sendto(int fd, const void *buf, size_t len, int flags,
		    const struct sockaddr *addr, socklen_t addr_len)
{
	ssize_t (*fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t) =
		REAL(PF_SYM_SENDTO, ssize_t (*)(int, const void *, size_t, int,
						const struct sockaddr *, socklen_t));
	return fn ? fn(fd, buf, len, flags, addr, addr_len)
		  : syscall(SYS_sendto, fd, buf, len, flags, addr, addr_len);
}

ssize_t real_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	ssize_t (*fn)(int, const struct msghdr *, int) =
		REAL(PF_SYM_SENDMSG, ssize_t (*)(int, const struct msghdr *, int));
	return fn ? fn(fd, msg, flags) : syscall(SYS_sendmsg, fd, msg, flags);
}

int real_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	int (*fn)(int, struct mmsghdr *, unsigned int, int) =
		REAL(PF_SYM_SENDMMSG, int (*)(int, struct mmsghdr *, unsigned int, int));
	return fn ? fn(fd, msgs, vlen, flags) : (int)syscall(SYS_sendmmsg, fd, msgs, vlen, flags);
}

int real_close(int fd)
{
	int (*fn)(int) = REAL(PF_SYM_CLOSE, int (*)(int));
	return fn ? fn(fd) : (int)syscall(SYS_close, fd);
}

int real_dup2(int old_fd, int new_fd)
{
	int (*fn)(int, int) = REAL(PF_SYM_DUP2, int (*)(int, int));
	return fn ? fn(old_fd, new_fd) : (int)syscall(SYS_dup2, old_fd, new_fd);
}

int real_dup3(int old_fd, int new_fd, int flags)
{
	int (*fn)(int, int, int) = REAL(PF_SYM_DUP3, int (*)(int, int, int));
	return fn ? fn(old_fd, new_fd, flags) : (int)syscall(SYS_dup3, old_fd, new_fd, flags);
}

int real_close_range(unsigned int first, unsigned int last, int flags)
{
	int (*fn)(unsigned int, unsigned int, int) =
		REAL(PF_SYM_CLOSE_RANGE, int (*)(unsigned int, unsigned int, int));
	return fn ? fn(first, last, flags) : (int)syscall(SYS_close_range, first, last, flags);
}

void real_closefrom(int low_fd)
{
	void (*fn)(int) = REAL(PF_SYM_CLOSEFROM, void (*)(int));
	if (fn)
		fn(low_fd);
	else
		syscall(SYS_close_range, (unsigned int)low_fd, ~0u, 0);
}

int real_setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	int (*fn)(int, int, int, const void *, socklen_t) =
		REAL(PF_SYM_SETSOCKOPT, int (*)(int, int, int, const void *, socklen_t));
	return fn ? fn(fd, level, name, value, len)
		  : (int)syscall(SYS_setsockopt, fd, level, name, value, len);
}

int real_getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
	int (*fn)(int, int, int, void *, socklen_t *) =
		REAL(PF_SYM_GETSOCKOPT, int (*)(int, int, int, void *, socklen_t *));
	return fn ? fn(fd, level, name, value, len)
		  : (int)syscall(SYS_getsockopt, fd, level, name, value, len);
}

int real_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
	int (*fn)(int, struct sockaddr *, socklen_t *) =
		REAL(PF_SYM_GETSOCKNAME, int (*)(int, struct sockaddr *, socklen_t *));
	return fn ? fn(fd, addr, len) : (int)syscall(SYS_getsockname, fd, addr, len);
}
