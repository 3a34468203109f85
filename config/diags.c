/* Diagnostics and algorithm names. */
#include "config/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pf_diags_add(struct pf_diags *diags, const char *file, int line,
		  const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	pf_diags_vadd(diags, file, line, fmt, args);
	va_end(args);
}

void pf_diags_vadd(struct pf_diags *diags, const char *file, int line,
		   const char *fmt, va_list args)
{
	char message[1024], *text = NULL;

	if (!diags)
		return;
	vsnprintf(message, sizeof(message), fmt, args);
	int rc = line > 0 ? asprintf(&text, "%s:%d: %s", file, line, message)
			  : asprintf(&text, "%s: %s", file, message);
	if (rc < 0)
		return;
	char **grown = realloc(diags->lines, (diags->count + 1) * sizeof(*grown));
	if (!grown) {
		free(text);
		return;
	}
	diags->lines = grown;
	diags->lines[diags->count++] = text;
}

void pf_diags_free(struct pf_diags *diags)
{
	for (size_t i = 0; i < diags->count; i++)
		free(diags->lines[i]);
	free(diags->lines);
	diags->lines = NULL;
	diags->count = 0;
}

static const char *const algorithm_names[PF_ALGO_COUNT] = {
	[PF_ALGO_SEQUENTIAL] = "sequential",
	[PF_ALGO_RANDOM] = "random",
	[PF_ALGO_RANDOM_REDRAW] = "random-redraw",
	[PF_ALGO_HASH] = "hash",
	[PF_ALGO_DOUBLE_HASH] = "double-hash",
	[PF_ALGO_RANDOM_INCREMENTS] = "random-increments",
	[PF_ALGO_KERNEL] = "kernel",
};

const char *pf_algorithm_name(enum pf_algorithm algorithm)
{
	return (unsigned)algorithm < PF_ALGO_COUNT ? algorithm_names[algorithm] : "?";
}

int pf_algorithm_from_name(const char *name, enum pf_algorithm *algorithm)
{
	for (int i = 0; i < PF_ALGO_COUNT; i++) {
		if (strcmp(name, algorithm_names[i]) == 0) {
			*algorithm = (enum pf_algorithm)i;
			return 0;
		}
	}
	return -1;
}
