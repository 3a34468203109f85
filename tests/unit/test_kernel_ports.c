/* Reading the kernel's port settings and fitting a range against them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernel/kernel_ports.h"

Test(kernel_ports, reserved_list_parses)
{
	static struct pf_kernel_ports ports;
	cr_assert_eq(pf_reserved_ports_parse("8080,61000-61099", ports.reserved), 0);
	cr_expect(pf_port_reserved(&ports, 8080));
	cr_expect(pf_port_reserved(&ports, 61000));
	cr_expect(pf_port_reserved(&ports, 61099));
	cr_expect_not(pf_port_reserved(&ports, 61100));
	cr_expect_not(pf_port_reserved(&ports, 8081));
	cr_expect_eq(pf_reserved_ports_parse("", ports.reserved), 0);
	cr_expect_not(pf_port_reserved(&ports, 8080));
	cr_expect_lt(pf_reserved_ports_parse("5-1", ports.reserved), 0);
}

Test(kernel_ports, reads_a_proc_directory)
{
	char dir[] = "/tmp/pf-proc-XXXXXX", path[128];
	static struct pf_kernel_ports ports;
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ip_local_port_range", dir);
	FILE *f = fopen(path, "w");
	fputs("32768\t60999\n", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/ip_local_reserved_ports", dir);
	f = fopen(path, "w");
	fputs("40000-40009\n", f);
	fclose(f);
	cr_assert_eq(pf_kernel_ports_read(dir, &ports), 0);
	cr_expect_eq(ports.ephemeral_lo, 32768);
	cr_expect_eq(ports.ephemeral_hi, 60999);
	cr_expect_str_eq(ports.reserved_text, "40000-40009");

	struct pf_range_fit fit;
	pf_range_fit(&ports, 61000, 61099, &fit);
	cr_expect_eq(fit.overlap_ephemeral, 0);
	cr_expect_not(fit.inside_ephemeral);
	pf_range_fit(&ports, 40000, 40019, &fit);
	cr_expect(fit.inside_ephemeral);
	cr_expect_eq(fit.overlap_ephemeral, 20);
	cr_expect_eq(fit.reserved, 10);
	cr_expect_eq(fit.overlap_unreserved, 10);
	pf_range_fit(&ports, 32000, 32867, &fit);
	cr_expect_not(fit.inside_ephemeral);
	cr_expect_eq(fit.overlap_ephemeral, 100);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}
