/* What the kernel does with local ports: its ephemeral range and its
 * reserved ports, and how an app's range fares against them. */
#ifndef PORTFENCE_KERNEL_PORTS_H
#define PORTFENCE_KERNEL_PORTS_H

#include <stdbool.h>
#include <stdint.h>

struct pf_kernel_ports {
	uint16_t ephemeral_lo, ephemeral_hi;
	uint8_t reserved[65536 / 8];	/* bit per port */
	char reserved_text[4096];	/* the sysctl as read, trimmed */
};

/* Reads /proc/sys/net/ipv4/ip_local_port_range and ..._reserved_ports
 * (proc_dir lets tests point elsewhere; NULL means /proc/sys/net/ipv4). */
int pf_kernel_ports_read(const char *proc_dir, struct pf_kernel_ports *ports);
int pf_reserved_ports_parse(const char *text, uint8_t reserved[65536 / 8]);
bool pf_port_reserved(const struct pf_kernel_ports *ports, uint16_t port);

struct pf_range_fit {
	unsigned overlap_ephemeral;	/* ports of the range in the ephemeral range */
	unsigned overlap_unreserved;	/* ... of those, not reserved */
	unsigned reserved;		/* ports of the range that are reserved */
	bool inside_ephemeral;		/* the whole range is ephemeral */
};

void pf_range_fit(const struct pf_kernel_ports *ports, uint16_t lo, uint16_t hi,
		  struct pf_range_fit *fit);

#endif
