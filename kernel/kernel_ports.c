#include "kernel/kernel_ports.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_small_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return -errno;
	got = read(fd, buf, len - 1);
	close(fd);
	if (got < 0)
		return -errno;
	buf[got] = '\0';
	while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
		buf[--got] = '\0';
	return 0;
}

static void set_reserved(uint8_t reserved[65536 / 8], unsigned lo, unsigned hi)
{
	for (unsigned port = lo; port <= hi; port++)
		reserved[port / 8] |= (uint8_t)(1u << (port % 8));
}

/* "8080,61000-61099" as the kernel prints it. */
int pf_reserved_ports_parse(const char *text, uint8_t reserved[65536 / 8])
{
	const char *p = text;

	memset(reserved, 0, 65536 / 8);
	while (*p) {
		char *end;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (end == p)
			return -EINVAL;
		if (*end == '-') {
			p = end + 1;
			hi = strtoul(p, &end, 10);
			if (end == p)
				return -EINVAL;
		}
		if (lo > 65535 || hi > 65535 || lo > hi)
			return -EINVAL;
		set_reserved(reserved, (unsigned)lo, (unsigned)hi);
		p = end;
		while (*p == ',' || *p == ' ' || *p == '\n')
			p++;
	}
	return 0;
}

int pf_kernel_ports_read(const char *proc_dir, struct pf_kernel_ports *ports)
{
	char path[512], text[64];
	unsigned lo, hi;
	int rc;

	if (!proc_dir)
		proc_dir = "/proc/sys/net/ipv4";
	snprintf(path, sizeof(path), "%s/ip_local_port_range", proc_dir);
	if ((rc = read_small_file(path, text, sizeof(text))) < 0)
		return rc;
	if (sscanf(text, "%u %u", &lo, &hi) != 2 || lo > hi || hi > 65535)
		return -EINVAL;
	ports->ephemeral_lo = (uint16_t)lo;
	ports->ephemeral_hi = (uint16_t)hi;
	snprintf(path, sizeof(path), "%s/ip_local_reserved_ports", proc_dir);
	if ((rc = read_small_file(path, ports->reserved_text, sizeof(ports->reserved_text))) < 0)
		return rc;
	return pf_reserved_ports_parse(ports->reserved_text, ports->reserved);
}

bool pf_port_reserved(const struct pf_kernel_ports *ports, uint16_t port)
{
	return ports->reserved[port / 8] & (1u << (port % 8));
}

void pf_range_fit(const struct pf_kernel_ports *ports, uint16_t lo, uint16_t hi,
		  struct pf_range_fit *fit)
{
	memset(fit, 0, sizeof(*fit));
	fit->inside_ephemeral = lo >= ports->ephemeral_lo && hi <= ports->ephemeral_hi;
	for (uint32_t port = lo; port <= hi; port++) {
		bool reserved = pf_port_reserved(ports, (uint16_t)port);
		bool ephemeral = port >= ports->ephemeral_lo && port <= ports->ephemeral_hi;
		fit->reserved += reserved;
		fit->overlap_ephemeral += ephemeral;
		fit->overlap_unreserved += ephemeral && !reserved;
	}
}
