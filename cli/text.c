/* Text the tool prints that came from outside it (a log, /proc, a
 * cgroup name): control bytes and backslashes escaped, so that it can
 * neither move the terminal's cursor nor forge a line. */
#include <stdio.h>

#include "cli.h"

const char *cli_escape(const char *text, char *out, size_t len)
{
	size_t used = 0;

	for (const unsigned char *p = (const unsigned char *)text; *p && used + 5 < len; p++) {
		if (*p == '\\')
			used += (size_t)snprintf(out + used, len - used, "\\\\");
		else if (*p < 0x20 || *p == 0x7f)
			used += (size_t)snprintf(out + used, len - used, "\\x%02x", *p);
		else
			out[used++] = (char)*p;
	}
	if (len)
		out[used < len ? used : len - 1] = '\0';
	return out;
}
