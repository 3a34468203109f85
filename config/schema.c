/* The policy's schema: each top-level and app setting libconfig parsed,
 * checked for its key, type and value, and stored in struct pf_policy.
 * Every problem is reported as FILE:LINE: message; checking goes on
 * after an error so that one run of `portfence check` shows them all.
 * Reading the files is config/load.c's.
 *
 * About 500 lines, on purpose: one parse_KEY function per policy key (the
 * place HACKING.md sends whoever adds a key), each short; splitting the
 * keys across files would scatter the schema a reader wants in one view. */
#include "config/cgroup_glob.h"
#include "config/load_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const root_keys[KEY_COUNT] = {
	"version", "log", "on_error", "state_dir", "default", "apps",
};

static const char *const log_keys[] = {"file", "syslog", NULL};
static const char *const match_keys[] = {"exe", "comm", NULL};
static const char *const app_keys[] = {
	"name", "match", "range", "algorithm", "protocols", "mode",
	"explicit_bind", "allow", "deny", "cgroups", "udp_unbound", "bind_allow", "notify", NULL,
};

/* Where the setting was written.  libconfig numbers the lines of the
 * text config/load.c gave it, @include'd files in place; an unnumbered
 * setting takes its parent's line, the nearest honest place. */
static struct source_line setting_origin(const struct loader *ld, const config_setting_t *setting)
{
	while (setting && config_setting_source_line(setting) == 0)
		setting = config_setting_parent(setting);
	unsigned line = setting ? config_setting_source_line(setting) : 0;
	if (line == 0 || line > ld->origin_count)
		return (struct source_line){0};
	return ld->origin[line - 1];
}

static const char *setting_file(const struct loader *ld, const config_setting_t *setting,
				const char *fallback)
{
	const char *file = setting_origin(ld, setting).file;
	return file ? file : fallback;
}

static int setting_line(const struct loader *ld, const config_setting_t *setting)
{
	return setting_origin(ld, setting).line;
}

static void report(struct loader *ld, const config_setting_t *setting,
		   const char *file, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(struct loader *ld, const config_setting_t *setting,
		   const char *file, const char *fmt, ...)
{
	char message[900];
	va_list args;

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);
	ld->invalid = true;
	pf_diags_add(ld->diags, setting_file(ld, setting, file), setting_line(ld, setting),
		     "%s", message);
}

static void check_known_keys(struct loader *ld, const config_setting_t *group,
			     const char *file, const char *const *known,
			     const char *where)
{
	int count = config_setting_length(group);

	for (int i = 0; i < count; i++) {
		config_setting_t *member = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(member);
		bool found = false;
		for (const char *const *key = known; *key && !found; key++)
			found = strcmp(*key, name) == 0;
		if (!found)
			report(ld, member, file, "unknown setting '%s' in %s", name, where);
	}
}

static bool is_integer(const config_setting_t *setting)
{
	int type = config_setting_type(setting);
	return type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64;
}

/* An integer setting's value, or false where config/load.c found it
 * written past 32 bits (and said so): libconfig holds it wrapped. */
static bool get_integer(const struct loader *ld, const config_setting_t *setting,
			long long *value)
{
	const struct source_line origin = setting_origin(ld, setting);

	*value = config_setting_get_int64(setting);
	return !origin.wide_integer;
}

static bool is_sequence(const config_setting_t *setting)
{
	int type = config_setting_type(setting);
	return type == CONFIG_TYPE_ARRAY || type == CONFIG_TYPE_LIST;
}

static const char *get_string(struct loader *ld, const config_setting_t *setting,
			      const char *file, const char *what)
{
	if (config_setting_type(setting) != CONFIG_TYPE_STRING) {
		report(ld, setting, file, "%s must be a string", what);
		return NULL;
	}
	return config_setting_get_string(setting);
}

/* Reads a string choice such as mode = "enforce" | "audit". */
static int get_choice(struct loader *ld, const config_setting_t *setting,
		      const char *file, const char *what,
		      const char *const *choices, int fallback)
{
	const char *value = get_string(ld, setting, file, what);

	if (!value)
		return fallback;
	for (int i = 0; choices[i]; i++)
		if (strcmp(choices[i], value) == 0)
			return i;
	report(ld, setting, file, "%s must be %s or %s, not \"%s\"", what,
	       choices[0], choices[1], value);
	return fallback;
}

/* Strings of an array or list, each validated by the caller; with
 * lines, the line of each as well. */
static char **get_string_list(struct loader *ld, const config_setting_t *setting,
			      const char *file, const char *what, size_t *count, int **lines)
{
	*count = 0;
	if (!is_sequence(setting)) {
		report(ld, setting, file, "%s must be an array of strings [ \"...\", ... ]", what);
		return NULL;
	}
	int length = config_setting_length(setting);
	char **items = calloc((size_t)length + 1, sizeof(*items));
	if (lines)
		*lines = calloc((size_t)length + 1, sizeof(**lines));
	if (!items)
		return NULL;
	for (int i = 0; i < length; i++) {
		config_setting_t *elem = config_setting_get_elem(setting, (unsigned)i);
		if (config_setting_type(elem) != CONFIG_TYPE_STRING) {
			report(ld, elem, file, "%s must hold only strings", what);
			continue;
		}
		if (lines && *lines)
			(*lines)[*count] = setting_line(ld, elem);
		items[(*count)++] = strdup(config_setting_get_string(elem));
	}
	return items;
}

static void parse_globs(struct loader *ld, const config_setting_t *setting,
			const char *file, const char *what, struct pf_glob_list *out)
{
	out->globs = get_string_list(ld, setting, file, what, &out->count, &out->lines);
}

static void parse_rules(struct loader *ld, const config_setting_t *setting,
			const char *file, const char *what, struct pf_rule_list *out)
{
	int length = is_sequence(setting) ? config_setting_length(setting) : 0;

	out->count = 0;
	out->rules = calloc((size_t)length + 1, sizeof(*out->rules));
	if (!is_sequence(setting)) {
		report(ld, setting, file, "%s must be an array of strings [ \"...\", ... ]", what);
		return;
	}
	/* Element by element, so that each message names its own line. */
	for (int i = 0; i < length && out->rules; i++) {
		config_setting_t *elem = config_setting_get_elem(setting, (unsigned)i);
		const char *why = NULL;
		if (config_setting_type(elem) != CONFIG_TYPE_STRING) {
			report(ld, elem, file, "%s must hold only strings", what);
			continue;
		}
		const char *text = config_setting_get_string(elem);
		struct pf_rule *rule = &out->rules[out->count];
		if (pf_rule_parse(text, rule, &why) == 0) {
			rule->line = setting_line(ld, elem);
			snprintf(rule->text, sizeof(rule->text), "%s", text);
			out->count++;
		}
		else
			report(ld, elem, file, "malformed rule \"%s\" in %s: %s", text, what, why);
	}
}

/* One bind_allow element: a port, or "LO-HI" (or "PORT"). */
static bool bind_allow_element(struct loader *ld, const config_setting_t *elem, const char *file,
			       struct pf_bind_ports *out)
{
	long long lo, hi;

	if (is_integer(elem)) {
		if (!get_integer(ld, elem, &lo))
			return false;
		hi = lo;
	} else if (config_setting_type(elem) == CONFIG_TYPE_STRING) {
		const char *text = config_setting_get_string(elem);
		char *end;
		lo = strtoll(text, &end, 10);
		hi = lo;
		if (end != text && *end == '-')
			hi = strtoll(end + 1, &end, 10);
		if (end == text || *end != '\0') {
			report(ld, elem, file, "bind_allow entry \"%s\" is neither PORT nor \"LO-HI\"", text);
			return false;
		}
	} else {
		report(ld, elem, file, "bind_allow must hold ports and \"LO-HI\" strings");
		return false;
	}
	if (lo < PF_CORE_PORT_MIN || lo > PF_CORE_PORT_MAX || hi < PF_CORE_PORT_MIN || hi > PF_CORE_PORT_MAX) {
		report(ld, elem, file, "bind_allow port %lld outside 1..65535",
		       lo < PF_CORE_PORT_MIN || lo > PF_CORE_PORT_MAX ? lo : hi);
		return false;
	}
	if (lo > hi) {
		report(ld, elem, file, "bind_allow range %lld-%lld has lo > hi", lo, hi);
		return false;
	}
	*out = (struct pf_bind_ports){.lo = (uint16_t)lo, .hi = (uint16_t)hi};
	return true;
}

static void parse_bind_allow(struct loader *ld, const config_setting_t *setting, const char *file,
			     struct pf_app *app)
{
	int length = is_sequence(setting) ? config_setting_length(setting) : 0;

	free(app->bind_allow);
	app->bind_allow_count = 0;
	app->bind_allow = calloc((size_t)length + 1, sizeof(*app->bind_allow));
	if (!is_sequence(setting)) {
		report(ld, setting, file, "bind_allow must be a list of ports and \"LO-HI\" strings [ 21, \"1024-2048\" ]");
		return;
	}
	for (int i = 0; i < length && app->bind_allow; i++)
		if (bind_allow_element(ld, config_setting_get_elem(setting, (unsigned)i), file,
				       &app->bind_allow[app->bind_allow_count]))
			app->bind_allow_count++;
}

static void parse_range(struct loader *ld, const config_setting_t *setting,
			const char *file, struct pf_app *app)
{
	app->range_line = setting_line(ld, setting);
	if (!is_sequence(setting) || config_setting_length(setting) != 2) {
		report(ld, setting, file, "range must be an array of two ports [ LO, HI ]");
		return;
	}
	long long bounds[2];
	for (unsigned i = 0; i < 2; i++) {
		config_setting_t *elem = config_setting_get_elem(setting, i);
		if (!is_integer(elem)) {
			report(ld, setting, file, "range must hold two integers");
			return;
		}
		if (!get_integer(ld, elem, &bounds[i]))
			return;
		if (bounds[i] < PF_CORE_PORT_MIN || bounds[i] > PF_CORE_PORT_MAX) {
			report(ld, setting, file, "port %lld outside 1..65535", bounds[i]);
			return;
		}
	}
	if (bounds[0] > bounds[1]) {
		report(ld, setting, file, "range [ %lld, %lld ] has lo > hi", bounds[0], bounds[1]);
		return;
	}
	app->range_lo = (uint16_t)bounds[0];
	app->range_hi = (uint16_t)bounds[1];
}

static void parse_protocols(struct loader *ld, const config_setting_t *setting,
			    const char *file, struct pf_app *app)
{
	size_t count;
	char **names = get_string_list(ld, setting, file, "protocols", &count, NULL);

	app->protocols = 0;
	for (size_t i = 0; i < count; i++) {
		if (strcmp(names[i], "tcp") == 0)
			app->protocols |= PF_PROTO_TCP;
		else if (strcmp(names[i], "udp") == 0)
			app->protocols |= PF_PROTO_UDP;
		else
			report(ld, setting, file, "unknown protocol \"%s\" (tcp or udp)", names[i]);
		free(names[i]);
	}
	free(names);
	if (count == 0 && is_sequence(setting))
		report(ld, setting, file, "protocols must name at least one of \"tcp\", \"udp\"");
	if (app->protocols == 0)
		app->protocols = PF_PROTO_TCP | PF_PROTO_UDP;
}

static void parse_match(struct loader *ld, const config_setting_t *setting,
			const char *file, struct pf_app *app)
{
	if (config_setting_type(setting) != CONFIG_TYPE_GROUP) {
		report(ld, setting, file, "match must be a group { exe = [...]; comm = [...]; }");
		return;
	}
	check_known_keys(ld, setting, file, match_keys, "match");
	config_setting_t *exe = config_setting_get_member(setting, "exe");
	config_setting_t *comm = config_setting_get_member(setting, "comm");
	if (exe)
		parse_globs(ld, exe, file, "match.exe", &app->exe_globs);
	if (comm)
		parse_globs(ld, comm, file, "match.comm", &app->comm_globs);
}

/* A cgroup is a path or a glob under the cgroup v2 mount: no "..",
 * nothing empty, every '[' closed, so that the daemon never attaches
 * outside the hierarchy. */
static void parse_cgroups(struct loader *ld, const config_setting_t *setting,
			  const char *file, struct pf_app *app)
{
	parse_globs(ld, setting, file, "cgroups", &app->cgroups);
	for (size_t i = 0; i < app->cgroups.count; i++) {
		char *path = app->cgroups.globs[i];
		/* "a/b/" is the cgroup a/b: written so for every matcher (the
		 * daemon's and the kernel's birth table alike). */
		for (size_t len = strlen(path); len > 1 && path[len - 1] == '/' && path[len - 2] != '\\'; len--)
			path[len - 1] = '\0';
		const char *why = pf_cgroup_glob_invalid(path);
		if (why)
			report(ld, setting, file,
			       "cgroup \"%s\" is not a path inside the cgroup v2 hierarchy (%s)", path, why);
	}
}

static void parse_algorithm(struct loader *ld, const config_setting_t *setting,
			    const char *file, struct pf_app *app)
{
	const char *name = get_string(ld, setting, file, "algorithm");

	app->algorithm_line = setting_line(ld, setting);
	if (name && pf_algorithm_from_name(name, &app->algorithm) < 0)
		report(ld, setting, file,
		       "unknown algorithm \"%s\" (sequential, random, random-redraw, hash, "
		       "double-hash, random-increments, kernel)", name);
}

static void parse_app_member(struct loader *ld, const config_setting_t *member,
			     const char *file, struct pf_app *app)
{
	static const char *const modes[] = {"enforce", "audit", NULL};
	static const char *const binds[] = {"allow", "deny", NULL};
	static const char *const unbound[] = {"deny", "audit", NULL};
	static const char *const notify[] = {"none", "stderr", NULL};
	const char *key = config_setting_name(member);

	if (strcmp(key, "match") == 0)
		parse_match(ld, member, file, app);
	else if (strcmp(key, "range") == 0)
		parse_range(ld, member, file, app);
	else if (strcmp(key, "algorithm") == 0)
		parse_algorithm(ld, member, file, app);
	else if (strcmp(key, "protocols") == 0)
		parse_protocols(ld, member, file, app);
	else if (strcmp(key, "mode") == 0)
		app->mode = (enum pf_mode)get_choice(ld, member, file, "mode", modes, PF_MODE_ENFORCE);
	else if (strcmp(key, "explicit_bind") == 0) {
		app->explicit_bind_line = setting_line(ld, member);
		app->deny_explicit_bind = get_choice(ld, member, file, "explicit_bind", binds, 0) == 1;
	} else if (strcmp(key, "bind_allow") == 0)
		parse_bind_allow(ld, member, file, app);
	else if (strcmp(key, "notify") == 0)
		app->notify_stderr = get_choice(ld, member, file, "notify", notify, 0) == 1;
	else if (strcmp(key, "udp_unbound") == 0) {
		app->udp_unbound_line = setting_line(ld, member);
		app->udp_unbound_audit = get_choice(ld, member, file, "udp_unbound", unbound, 0) == 1;
	} else if (strcmp(key, "cgroups") == 0) {
		app->cgroups_line = setting_line(ld, member);
		parse_cgroups(ld, member, file, app);
	} else if (strcmp(key, "allow") == 0) {
		app->has_allow = true;
		app->allow_line = setting_line(ld, member);
		parse_rules(ld, member, file, "allow", &app->allow);
	} else if (strcmp(key, "deny") == 0)
		parse_rules(ld, member, file, "deny", &app->deny);
}

/* An app's name names directories: its BPF pins, its cgroups, its
 * state files.  So: not empty, no '/', no control character, not "." or
 * "..".  A control character is shown as \xNN (the first 200 bytes). */
static void check_app_name(struct loader *ld, const config_setting_t *setting, const char *file,
			   const char *name)
{
	char shown[4 * 200 + 1] = "";
	const char *why = NULL;

	if (!name[0]) {
		report(ld, setting, file, "app name is empty");
		return;
	}
	for (size_t i = 0, used = 0; name[i]; i++) {
		unsigned char byte = (unsigned char)name[i];
		bool control = byte < 0x20 || byte == 0x7f;
		if (!why && (byte == '/' || control))
			why = byte == '/' ? "holds '/'" : "holds a control character";
		if (i < 200)
			used += (size_t)snprintf(shown + used, sizeof(shown) - used,
						 control ? "\\x%02x" : "%c", byte);
	}
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		why = "is \".\" or \"..\"";
	if (why)
		report(ld, setting, file, "app name \"%s\" %s (an app's name names its directories)",
		       shown, why);
}

static void parse_app(struct loader *ld, const config_setting_t *group,
		      const char *file, struct pf_app *app)
{
	memset(app, 0, sizeof(*app));
	app->algorithm = PF_ALGO_DOUBLE_HASH;
	app->protocols = PF_PROTO_TCP | PF_PROTO_UDP;
	app->file = setting_file(ld, group, file);
	app->line = setting_line(ld, group);
	app->range_line = app->algorithm_line = app->line;
	check_known_keys(ld, group, file, app_keys, "an app");

	config_setting_t *name = config_setting_get_member(group, "name");
	const char *name_text = name ? get_string(ld, name, file, "name") : NULL;
	if (!name)
		report(ld, group, file, "app has no name");
	else if (name_text)
		check_app_name(ld, name, file, name_text);
	app->name = strdup(name_text ? name_text : "");
	app->name_line = name ? setting_line(ld, name) : app->line;
	if (!config_setting_get_member(group, "range"))
		report(ld, group, file, "app '%s' has no range", app->name);

	int count = config_setting_length(group);
	for (int i = 0; i < count; i++)
		parse_app_member(ld, config_setting_get_elem(group, (unsigned)i), file, app);
	if (app->algorithm == PF_ALGO_KERNEL && app->cgroups.count) {
		ld->invalid = true;
		pf_diags_add(ld->diags, app->file, app->algorithm_line,
			     "algorithm \"kernel\" cannot serve app '%s': it lists cgroups, and the BPF "
			     "backend cannot set IP_LOCAL_PORT_RANGE (choose a user-space algorithm)",
			     app->name);
	}
}

static void parse_apps(struct loader *ld, const config_setting_t *apps, const char *file)
{
	if (config_setting_type(apps) != CONFIG_TYPE_LIST) {
		report(ld, apps, file, "apps must be a list ( { ... }, { ... } )");
		return;
	}
	int count = config_setting_length(apps);
	struct pf_policy *policy = ld->policy;
	struct pf_app *grown = realloc(policy->apps, (policy->app_count + (size_t)count + 1) *
						     sizeof(*grown));
	if (!grown) {
		report(ld, apps, file, "out of memory");
		return;
	}
	policy->apps = grown;
	for (int i = 0; i < count; i++) {
		config_setting_t *group = config_setting_get_elem(apps, (unsigned)i);
		if (config_setting_type(group) != CONFIG_TYPE_GROUP) {
			report(ld, group, file, "each app must be a group { name = ...; range = [...]; }");
			continue;
		}
		struct pf_app *app = &policy->apps[policy->app_count++];
		parse_app(ld, group, file, app);
		/* An app without rules needs no index; out of memory leaves
		 * the app on the linear scan, which judges the same. */
		if (app->has_allow || app->deny.count)
			(void)pf_app_index_rules(app);
	}
}

static void parse_log(struct loader *ld, const config_setting_t *log, const char *file)
{
	if (config_setting_type(log) != CONFIG_TYPE_GROUP) {
		report(ld, log, file, "log must be a group { file = \"...\"; syslog = false; }");
		return;
	}
	check_known_keys(ld, log, file, log_keys, "log");
	config_setting_t *path = config_setting_get_member(log, "file");
	config_setting_t *use_syslog = config_setting_get_member(log, "syslog");
	if (path) {
		const char *text = get_string(ld, path, file, "log.file");
		if (text && text[0] == '\0')
			report(ld, path, file, "log.file is empty");
		else if (text) {
			free(ld->policy->log_file);
			ld->policy->log_file = strdup(text);
		}
	}
	if (use_syslog) {
		if (config_setting_type(use_syslog) != CONFIG_TYPE_BOOL)
			report(ld, use_syslog, file, "log.syslog must be true or false");
		else
			ld->policy->log_syslog = config_setting_get_bool(use_syslog);
	}
}

static void parse_root_member(struct loader *ld, const config_setting_t *member,
			      const char *file, enum root_key key)
{
	static const char *const on_error_choices[] = {"deny", "pass", NULL};
	const char *text;
	long long version;

	switch (key) {
	case KEY_VERSION:
		if (!is_integer(member))
			report(ld, member, file, "version must be an integer");
		else if (get_integer(ld, member, &version) && version != 1)
			report(ld, member, file, "unsupported version %lld (this portfence reads version 1)",
			       version);
		break;
	case KEY_LOG:
		parse_log(ld, member, file);
		break;
	case KEY_ON_ERROR:
		ld->policy->on_error_pass =
			get_choice(ld, member, file, "on_error", on_error_choices, 0) == 1;
		break;
	case KEY_STATE_DIR:
		text = get_string(ld, member, file, "state_dir");
		if (text && text[0] != '/')
			report(ld, member, file, "state_dir must be an absolute path");
		else if (text)
			ld->policy->state_dir = strdup(text);
		break;
	case KEY_DEFAULT:
		text = get_string(ld, member, file, "default");
		if (text) {
			ld->default_name = strdup(text);
			ld->default_file = setting_file(ld, member, file);
			ld->default_line = setting_line(ld, member);
		}
		break;
	case KEY_APPS:
		parse_apps(ld, member, file);
		break;
	case KEY_COUNT:
		break;
	}
}

void pf_load_root(struct loader *ld, const config_setting_t *root, const char *file)
{
	int count = config_setting_length(root);

	for (int i = 0; i < count; i++) {
		config_setting_t *member = config_setting_get_elem(root, (unsigned)i);
		const char *name = config_setting_name(member);
		int key = 0;
		while (key < KEY_COUNT && strcmp(root_keys[key], name) != 0)
			key++;
		if (key == KEY_COUNT) {
			report(ld, member, file, "unknown setting '%s'", name);
			continue;
		}
		if (ld->set_file[key] && key != KEY_APPS) {
			report(ld, member, file, "'%s' is already set at %s:%d", name,
			       ld->set_file[key], ld->set_line[key]);
			continue;
		}
		ld->set_file[key] = setting_file(ld, member, file);
		ld->set_line[key] = setting_line(ld, member);
		parse_root_member(ld, member, file, (enum root_key)key);
	}
}
