/* Pin names: a cgroup path as one directory name, and back. */
#include <criterion/criterion.h>
#include <string.h>

#include "kernel/pins.h"

static void expect_round_trip(const char *path, const char *encoded)
{
	char name[256], back[256];
	cr_assert_eq(pf_pin_name_encode(path, name, sizeof(name)), (int)strlen(encoded), "%s", path);
	cr_expect_str_eq(name, encoded);
	cr_assert_eq(pf_pin_name_decode(name, back, sizeof(back)), (int)strlen(back));
	cr_expect_str_eq(back, path[0] == '/' ? path + 1 : path);
}

Test(pins, encodes_slashes_and_percents)
{
	expect_round_trip("system.slice/legacy.service", "system%2Eslice%2Flegacy%2Eservice");
	expect_round_trip("a%2Fb/c", "a%252Fb%2Fc");
	expect_round_trip("plain", "plain");
	expect_round_trip("/portfence/web-42", "portfence%2Fweb-42");
	expect_round_trip("%", "%25");
	expect_round_trip("x/y/z%", "x%2Fy%2Fz%25");
	expect_round_trip("..", "%2E%2E");
}

Test(pins, decodes_lower_case_slash)
{
	char out[64];
	cr_assert_eq(pf_pin_name_decode("a%2fb", out, sizeof(out)), 3);
	cr_expect_str_eq(out, "a/b");
}

Test(pins, refuses_what_encode_never_writes)
{
	char out[64];
	cr_expect_eq(pf_pin_name_decode("", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a/b", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%2", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("a%41", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("///", out, sizeof(out)), -1);
}

Test(pins, never_overflows)
{
	char out[8];
	cr_expect_eq(pf_pin_name_encode("abcdefg", out, sizeof(out)), 7);
	cr_expect_eq(pf_pin_name_encode("abcdefgh", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_encode("abcde/", out, sizeof(out)), -1, "the escape does not fit");
	cr_expect_eq(pf_pin_name_decode("abcdefg", out, sizeof(out)), 7);
	cr_expect_eq(pf_pin_name_decode("abcdefgh", out, sizeof(out)), -1);
	cr_expect_eq(pf_pin_name_decode("abcdefg%25", out, sizeof(out)), -1);
}
