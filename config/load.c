/* Loading and validating a policy with libconfig.  Every problem found is
 * reported as FILE:LINE: message; loading goes on after an error so that
 * one run of `portfence check` shows them all. */
#include "config/policy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum root_key { KEY_VERSION, KEY_LOG, KEY_ON_ERROR, KEY_STATE_DIR, KEY_DEFAULT, KEY_APPS, KEY_COUNT };

static const char *const root_keys[KEY_COUNT] = {
	"version", "log", "on_error", "state_dir", "default", "apps",
};

static const char *const log_keys[] = {"file", "syslog", NULL};
static const char *const match_keys[] = {"exe", "comm", NULL};
static const char *const app_keys[] = {
	"name", "match", "range", "algorithm", "protocols", "mode",
	"explicit_bind", "allow", "deny", "cgroups", "udp_unbound", NULL,
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
};

static const char *setting_file(const config_setting_t *setting, const char *fallback)
{
	const char *file = config_setting_source_file(setting);
	return file ? file : fallback;
}

static int setting_line(const config_setting_t *setting)
{
	/* libconfig does not number every array element; its parent is
	 * numbered and is the nearest honest place. */
	while (setting && config_setting_source_line(setting) == 0)
		setting = config_setting_parent(setting);
	return setting ? (int)config_setting_source_line(setting) : 0;
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
	pf_diags_add(ld->diags, setting_file(setting, file), setting_line(setting),
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

/* Strings of an array or list, each validated by the caller. */
static char **get_string_list(struct loader *ld, const config_setting_t *setting,
			      const char *file, const char *what, size_t *count)
{
	*count = 0;
	if (!is_sequence(setting)) {
		report(ld, setting, file, "%s must be an array of strings [ \"...\", ... ]", what);
		return NULL;
	}
	int length = config_setting_length(setting);
	char **items = calloc((size_t)length + 1, sizeof(*items));
	if (!items)
		return NULL;
	for (int i = 0; i < length; i++) {
		config_setting_t *elem = config_setting_get_elem(setting, (unsigned)i);
		if (config_setting_type(elem) != CONFIG_TYPE_STRING) {
			report(ld, elem, file, "%s must hold only strings", what);
			continue;
		}
		items[(*count)++] = strdup(config_setting_get_string(elem));
	}
	return items;
}

static void parse_globs(struct loader *ld, const config_setting_t *setting,
			const char *file, const char *what, struct pf_glob_list *out)
{
	out->globs = get_string_list(ld, setting, file, what, &out->count);
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
		if (pf_rule_parse(text, &out->rules[out->count], &why) == 0)
			out->rules[out->count++].line = setting_line(elem);
		else
			report(ld, elem, file, "malformed rule \"%s\" in %s: %s", text, what, why);
	}
}

static void parse_range(struct loader *ld, const config_setting_t *setting,
			const char *file, struct pf_app *app)
{
	app->range_line = setting_line(setting);
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
		bounds[i] = config_setting_get_int64(elem);
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
	char **names = get_string_list(ld, setting, file, "protocols", &count);

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

/* A cgroup is a path under the cgroup v2 mount: no "..", nothing empty,
 * so that the daemon never attaches outside the hierarchy. */
static void parse_cgroups(struct loader *ld, const config_setting_t *setting,
			  const char *file, struct pf_app *app)
{
	parse_globs(ld, setting, file, "cgroups", &app->cgroups);
	for (size_t i = 0; i < app->cgroups.count; i++) {
		const char *path = app->cgroups.globs[i];
		const char *rest = path[0] == '/' ? path + 1 : path;
		bool bad = rest[0] == '\0' || strstr(path, "//") || strcmp(rest, "..") == 0 ||
			   strncmp(rest, "../", 3) == 0 || strstr(path, "/../") ||
			   (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0);
		if (bad)
			report(ld, setting, file, "cgroup \"%s\" is not a path inside the cgroup v2 hierarchy",
			       path);
	}
}

static void parse_algorithm(struct loader *ld, const config_setting_t *setting,
			    const char *file, struct pf_app *app)
{
	const char *name = get_string(ld, setting, file, "algorithm");

	app->algorithm_line = setting_line(setting);
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
	else if (strcmp(key, "explicit_bind") == 0)
		app->deny_explicit_bind = get_choice(ld, member, file, "explicit_bind", binds, 0) == 1;
	else if (strcmp(key, "udp_unbound") == 0)
		app->udp_unbound_audit = get_choice(ld, member, file, "udp_unbound", unbound, 0) == 1;
	else if (strcmp(key, "cgroups") == 0) {
		app->cgroups_line = setting_line(member);
		parse_cgroups(ld, member, file, app);
	} else if (strcmp(key, "allow") == 0) {
		app->has_allow = true;
		parse_rules(ld, member, file, "allow", &app->allow);
	} else if (strcmp(key, "deny") == 0)
		parse_rules(ld, member, file, "deny", &app->deny);
}

static void parse_app(struct loader *ld, const config_setting_t *group,
		      const char *file, struct pf_app *app)
{
	memset(app, 0, sizeof(*app));
	app->algorithm = PF_ALGO_DOUBLE_HASH;
	app->protocols = PF_PROTO_TCP | PF_PROTO_UDP;
	app->file = file;
	app->line = setting_line(group);
	app->range_line = app->algorithm_line = app->line;
	check_known_keys(ld, group, file, app_keys, "an app");

	config_setting_t *name = config_setting_get_member(group, "name");
	const char *name_text = name ? get_string(ld, name, file, "name") : NULL;
	if (!name)
		report(ld, group, file, "app has no name");
	else if (name_text && name_text[0] == '\0')
		report(ld, name, file, "app name is empty");
	app->name = strdup(name_text ? name_text : "");
	app->name_line = name ? setting_line(name) : app->line;
	if (!config_setting_get_member(group, "range"))
		report(ld, group, file, "app '%s' has no range", app->name);

	int count = config_setting_length(group);
	for (int i = 0; i < count; i++)
		parse_app_member(ld, config_setting_get_elem(group, (unsigned)i), file, app);
	if (app->algorithm == PF_ALGO_KERNEL && app->cgroups.count) {
		ld->invalid = true;
		pf_diags_add(ld->diags, file, app->algorithm_line,
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

	switch (key) {
	case KEY_VERSION:
		if (!is_integer(member))
			report(ld, member, file, "version must be an integer");
		else if (config_setting_get_int64(member) != 1)
			report(ld, member, file, "unsupported version %lld (this portfence reads version 1)",
			       config_setting_get_int64(member));
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
			ld->default_file = file;
			ld->default_line = setting_line(member);
		}
		break;
	case KEY_APPS:
		parse_apps(ld, member, file);
		break;
	case KEY_COUNT:
		break;
	}
}

static void parse_root(struct loader *ld, const config_setting_t *root, const char *file)
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
		ld->set_file[key] = file;
		ld->set_line[key] = setting_line(member);
		parse_root_member(ld, member, file, (enum root_key)key);
	}
}

static const char *remember_file(struct pf_policy *policy, const char *path)
{
	char **grown = realloc(policy->files, (policy->file_count + 1) * sizeof(*grown));
	if (!grown)
		return NULL;
	policy->files = grown;
	policy->files[policy->file_count] = strdup(path);
	return policy->files[policy->file_count] ? policy->files[policy->file_count++] : NULL;
}

static const char *file_kind(mode_t mode)
{
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISDIR(mode))
		return "a directory";
	return "not a file";
}

/* The whole text of a policy file, or NULL with the reason in diags.
 * Anything but a regular file is refused before it is opened (a device
 * may act on open), and opened without blocking (a FIFO swapped in
 * meanwhile) then checked again: reading a FIFO would wait for a writer
 * forever. */
static char *read_regular_file(struct pf_diags *diags, const char *path)
{
	struct stat info;
	int fd = -1;
	char *text = NULL;
	size_t used = 0;

	if (stat(path, &info) == 0 && !S_ISREG(info.st_mode)) {
		pf_diags_add(diags, path, 0, "not a regular file (%s)", file_kind(info.st_mode));
		return NULL;
	}
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &info) < 0) {
		pf_diags_add(diags, path, 0, "cannot read: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(info.st_mode)) {
		pf_diags_add(diags, path, 0, "not a regular file (%s)", file_kind(info.st_mode));
		goto out;
	}
	for (size_t cap = (size_t)info.st_size + 1;; cap *= 2) {
		char *grown = realloc(text, cap + 1);
		if (!grown) {
			pf_diags_add(diags, path, 0, "cannot read: %s", strerror(ENOMEM));
			goto fail;
		}
		text = grown;
		ssize_t got;
		while (used < cap && (got = read(fd, text + used, cap - used)) != 0) {
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				pf_diags_add(diags, path, 0, "cannot read: %s", strerror(errno));
				goto fail;
			}
			used += (size_t)got;
		}
		if (used < cap)
			break;
	}
	text[used] = '\0';
	if (memchr(text, '\0', used)) {
		pf_diags_add(diags, path, 0, "holds a NUL byte: not a policy text");
		goto fail;
	}
	goto out;
fail:
	free(text);
	text = NULL;
out:
	if (fd >= 0)
		close(fd);
	return text;
}

/* libconfig 1.5 opens @include files itself, with a blocking fopen, and
 * offers no hook: every file the text includes (relative paths resolve
 * from the working directory, as libconfig resolves them) is checked
 * first, recursively, with libconfig's own depth limit.  A line counts as
 * an include where libconfig's scanner would see one: optional blanks,
 * @include, blanks, a quoted name. */
#define INCLUDE_DEPTH_MAX 10

static bool includes_are_regular(struct pf_diags *diags, const char *text, int depth);

static char *include_target(const char *line)
{
	line += strspn(line, " \t");
	if (strncmp(line, "@include", 8) != 0 || (line[8] != ' ' && line[8] != '\t'))
		return NULL;
	line += 8 + strspn(line + 8, " \t");
	if (*line++ != '"')
		return NULL;
	char *name = malloc(strcspn(line, "\n") + 1), *out = name;
	if (!name)
		return NULL;
	for (; *line && *line != '"' && *line != '\n'; line++)
		*out++ = (line[0] == '\\' && line[1] && line[1] != '\n') ? *++line : *line;
	*out = '\0';
	return name;
}

static bool include_is_regular(struct pf_diags *diags, const char *name, int depth)
{
	struct stat info;

	if (stat(name, &info) < 0)
		return true; /* missing: libconfig says so itself */
	if (depth >= INCLUDE_DEPTH_MAX)
		return true; /* libconfig refuses to go deeper */
	char *text = read_regular_file(diags, name);
	if (!text)
		return false;
	bool regular = includes_are_regular(diags, text, depth + 1);
	free(text);
	return regular;
}

static bool includes_are_regular(struct pf_diags *diags, const char *text, int depth)
{
	for (const char *line = text; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		const char *at = line + strspn(line, " \t");
		if (*at != '@')
			continue;
		char *name = include_target(line);
		bool regular = !name || include_is_regular(diags, name, depth);
		free(name);
		if (!regular)
			return false;
	}
	return true;
}

/* Returns false when the file could not be read or parsed at all.  With
 * text, the policy is that text and path only names it. */
static bool load_source(struct loader *ld, const char *path, const char *text)
{
	const char *file = remember_file(ld->policy, path);
	char *read_text = NULL;
	config_t config;
	bool parsed;

	if (!file)
		return false;
	if (!text && !(text = read_text = read_regular_file(ld->diags, file)))
		return false;
	if (!includes_are_regular(ld->diags, text, 0)) {
		free(read_text);
		return false;
	}
	config_init(&config);
	parsed = config_read_string(&config, text) == CONFIG_TRUE;
	free(read_text);
	if (!parsed) {
		if (config_error_type(&config) == CONFIG_ERR_FILE_IO)
			pf_diags_add(ld->diags, file, 0, "cannot read: %s", strerror(errno ? errno : EIO));
		else
			pf_diags_add(ld->diags, config_error_file(&config) ? config_error_file(&config) : file,
				     config_error_line(&config), "%s", config_error_text(&config) ? config_error_text(&config) : "parse error");
	} else if (config_setting_length(config_root_setting(&config)) == 0) {
		/* Most likely truncated, or being rewritten in place: failing
		 * open here would leave every program unconfined. */
		ld->invalid = true;
		pf_diags_add(ld->diags, file, 0,
			     "holds no settings (an empty policy is refused; write \"apps = ( );\" "
			     "to confine nothing)");
	} else {
		parse_root(ld, config_root_setting(&config), file);
	}
	config_destroy(&config);
	return parsed;
}

static int compare_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_conf_file(const struct dirent *entry)
{
	size_t len = strlen(entry->d_name);
	return entry->d_name[0] != '.' && len > 5 && strcmp(entry->d_name + len - 5, ".conf") == 0;
}

static bool load_directory(struct loader *ld, const char *dir)
{
	struct dirent **entries;
	int count = scandir(dir, &entries, is_conf_file, compare_names);
	bool all_parsed = true;

	if (count < 0) {
		pf_diags_add(ld->diags, dir, 0, "cannot read directory: %s", strerror(errno));
		return false;
	}
	if (count == 0) {
		pf_diags_add(ld->diags, dir, 0, "directory holds no *.conf file");
		all_parsed = false;
	}
	for (int i = 0; i < count; i++) {
		char *path = NULL;
		if (asprintf(&path, "%s/%s", dir, entries[i]->d_name) < 0 || !load_source(ld, path, NULL))
			all_parsed = false;
		free(path);
		free(entries[i]);
	}
	free(entries);
	return all_parsed;
}

/* Equal names sort by position, so each run's head is the first one. */
static void report_duplicate_names(struct loader *ld)
{
	const struct pf_policy *policy = ld->policy;
	const struct pf_app *first = policy->app_count ? &policy->apps[policy->by_name[0]] : NULL;

	for (size_t i = 1; i < policy->app_count; i++) {
		const struct pf_app *app = &policy->apps[policy->by_name[i]];
		if (strcmp(first->name, app->name) != 0) {
			first = app;
			continue;
		}
		if (!app->name[0])
			continue;
		ld->invalid = true;
		pf_diags_add(ld->diags, app->file, app->name_line,
			     "duplicate app name '%s' (first defined at %s:%d)", app->name,
			     first->file, first->line);
	}
}

static const struct pf_app *apps_being_sorted;

static int compare_range_lo(const void *a, const void *b)
{
	const struct pf_app *x = &apps_being_sorted[*(const size_t *)a];
	const struct pf_app *y = &apps_being_sorted[*(const size_t *)b];

	if (x->range_lo != y->range_lo)
		return x->range_lo < y->range_lo ? -1 : 1;
	return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* One sweep in port order: an app whose range starts at or below the
 * highest end seen so far overlaps the app that reaches that end.  The
 * later of the two in the files is reported, naming the earlier. */
static void report_overlaps(struct loader *ld)
{
	const struct pf_policy *policy = ld->policy;
	size_t *order = malloc((policy->app_count + 1) * sizeof(*order)), count = 0;

	if (!order)
		return;
	for (size_t i = 0; i < policy->app_count; i++)
		if (policy->apps[i].range_lo)
			order[count++] = i;
	apps_being_sorted = policy->apps;
	qsort(order, count, sizeof(*order), compare_range_lo);
	for (size_t i = 1, reach = count ? order[0] : 0; i < count; i++) {
		size_t next = order[i];
		const struct pf_app *a = &policy->apps[next], *b = &policy->apps[reach];
		if (a->range_lo <= b->range_hi) {
			const struct pf_app *later = next > reach ? a : b, *earlier = next > reach ? b : a;
			ld->invalid = true;
			pf_diags_add(ld->diags, later->file, later->range_line,
				     "range %u-%u of app '%s' overlaps range %u-%u of app '%s' (%s:%d)",
				     later->range_lo, later->range_hi, later->name, earlier->range_lo,
				     earlier->range_hi, earlier->name, earlier->file, earlier->range_line);
		}
		if (a->range_hi > b->range_hi)
			reach = next;
	}
	free(order);
}

/* Two apps with one name, or ranges that overlap: sorted, so that a
 * policy of many apps costs O(n log n), not a comparison per pair. */
static void check_apps_apart(struct loader *ld)
{
	if (ld->policy->by_name)
		report_duplicate_names(ld);
	report_overlaps(ld);
}

static void resolve_default(struct loader *ld)
{
	struct pf_policy *policy = ld->policy;

	policy->default_app = PF_SELECT_PASS;
	if (!ld->default_name || strcmp(ld->default_name, "pass") == 0)
		return;
	policy->default_app = pf_policy_find_app(policy, ld->default_name);
	if (policy->default_app < 0) {
		ld->invalid = true;
		pf_diags_add(ld->diags, ld->default_file, ld->default_line,
			     "default names app '%s', which the policy does not define",
			     ld->default_name);
		policy->default_app = PF_SELECT_PASS;
	}
}

static enum pf_load_status finish_load(struct loader *ld, bool parsed)
{
	if (pf_policy_index_names(ld->policy) < 0)
		pf_diags_add(ld->diags, ld->policy->file_count ? ld->policy->files[0] : "policy", 0,
			     "out of memory");
	check_apps_apart(ld);
	if (pf_policy_index_ranges(ld->policy) < 0)
		pf_diags_add(ld->diags, ld->policy->file_count ? ld->policy->files[0] : "policy", 0,
			     "out of memory");
	resolve_default(ld);
	free(ld->default_name);
	if (!parsed) {
		ld->policy->on_error_pass = false;
		return PF_LOAD_UNREADABLE;
	}
	return ld->invalid ? PF_LOAD_INVALID : PF_LOAD_OK;
}

enum pf_load_status pf_policy_load(const char *path, struct pf_policy *policy,
				   struct pf_diags *diags)
{
	struct loader ld = {.policy = policy, .diags = diags};
	struct stat info;
	bool parsed;

	memset(policy, 0, sizeof(*policy));
	policy->default_app = PF_SELECT_PASS;
	if (stat(path, &info) < 0) {
		pf_diags_add(diags, path, 0, "cannot read: %s", strerror(errno));
		return PF_LOAD_UNREADABLE;
	}
	parsed = S_ISDIR(info.st_mode) ? load_directory(&ld, path) : load_source(&ld, path, NULL);
	return finish_load(&ld, parsed);
}

enum pf_load_status pf_policy_load_text(const char *name, const char *text,
					struct pf_policy *policy, struct pf_diags *diags)
{
	struct loader ld = {.policy = policy, .diags = diags};

	memset(policy, 0, sizeof(*policy));
	policy->default_app = PF_SELECT_PASS;
	return finish_load(&ld, load_source(&ld, name, text));
}

static void free_strings(char **strings, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(strings[i]);
	free(strings);
}

void pf_policy_free(struct pf_policy *policy)
{
	for (size_t i = 0; i < policy->app_count; i++) {
		struct pf_app *app = &policy->apps[i];
		free(app->name);
		free_strings(app->exe_globs.globs, app->exe_globs.count);
		free_strings(app->comm_globs.globs, app->comm_globs.count);
		free_strings(app->cgroups.globs, app->cgroups.count);
		free(app->allow.rules);
		free(app->deny.rules);
		pf_app_free_rule_index(app);
	}
	free(policy->apps);
	free(policy->by_name);
	free(policy->by_range);
	free(policy->log_file);
	free(policy->state_dir);
	free_strings(policy->files, policy->file_count);
	memset(policy, 0, sizeof(*policy));
	policy->default_app = PF_SELECT_PASS;
}
