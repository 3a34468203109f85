/* Inside the policy loader (config/load.c reads the files, config/schema.c
 * checks each setting against the schema, config/apps_apart.c checks the
 * apps against each other): the state one load carries. */
#ifndef PORTFENCE_CONFIG_LOAD_INTERNAL_H
#define PORTFENCE_CONFIG_LOAD_INTERNAL_H

#include <libconfig.h>
#include <stdbool.h>

#include "config/policy.h"

enum root_key { KEY_VERSION, KEY_LOG, KEY_ON_ERROR, KEY_STATE_DIR, KEY_DEFAULT, KEY_APPS, KEY_COUNT };

/* Where a line of the text libconfig reads came from: config/load.c
 * puts each @include'd file's text in place of its @include line. */
struct source_line {
	const char *file;
	int line;
	/* An integer on it was written past 32 bits (reported): the
	 * setting libconfig read there holds a wrapped value. */
	bool wide_integer;
};

struct loader {
	struct pf_policy *policy;
	struct pf_diags *diags;
	bool invalid;
	/* Where each top-level key was first set, across files. */
	const char *set_file[KEY_COUNT];
	int set_line[KEY_COUNT];
	char *default_name;
	const char *default_file;
	int default_line;
	/* Of the file being read, by its line - 1. */
	struct source_line *origin;
	size_t origin_count, origin_cap;
};

/* config/schema.c: the top-level settings of one parsed file, each
 * problem reported as FILE:LINE and the load marked invalid. */
void pf_load_root(struct loader *ld, const config_setting_t *root, const char *file);

/* config/apps_apart.c, once every file is read: duplicate names,
 * overlapping ranges, cgroup globs two apps can both match; then the
 * app `default` names. */
void pf_load_check_apps_apart(struct loader *ld);
void pf_load_resolve_default(struct loader *ld);

#endif
