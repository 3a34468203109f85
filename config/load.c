/* Loading a policy: a file, a directory's *.conf files in name order, or
 * a text; every path (and every @include) must be a regular file, read
 * without a wait.  Each file's settings are checked by config/schema.c,
 * the apps against each other by config/apps_apart.c.  Every problem is
 * reported as FILE:LINE: message; loading goes on after an error so that
 * one run of `portfence check` shows them all. */
#include "config/load_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* libconfig 1.5 would open @include files itself: with a blocking
 * fopen, a relative name from the working directory (its include_dir is
 * put before absolute names too), and no hook.  So libconfig never sees
 * an @include: each is replaced here by the text of the file it names,
 * read as the policy is (a regular file, without a wait), a relative
 * name resolved from the directory of the file that includes it, at most
 * libconfig's own depth.  ld->origin says where each line of the result
 * came from, for FILE:LINE.  A line counts as an include where
 * libconfig's scanner would see one: optional blanks, @include, blanks,
 * a quoted name; what follows the name stays on a line of its own. */
#define INCLUDE_DEPTH_MAX 10

static char *include_target(const char *line, const char **rest)
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
	*rest = *line == '"' ? line + 1 : line;
	return name;
}

static bool add_line(struct loader *ld, FILE *out, const char *line, size_t len,
		     const char *file, int number)
{
	if (ld->origin_count == ld->origin_cap) {
		size_t cap = ld->origin_cap ? 2 * ld->origin_cap : 64;
		struct source_line *grown = realloc(ld->origin, cap * sizeof(*grown));
		if (!grown) {
			pf_diags_add(ld->diags, file, number, "out of memory");
			return false;
		}
		ld->origin = grown;
		ld->origin_cap = cap;
	}
	ld->origin[ld->origin_count++] = (struct source_line){.file = file, .line = number};
	fwrite(line, 1, len, out);
	fputc('\n', out);
	return true;
}

static bool expand_includes(struct loader *ld, FILE *out, const char *file, const char *text,
			    int depth);

/* The file `name` that line `number` of `from` includes, expanded. */
static bool expand_include(struct loader *ld, FILE *out, const char *from, int number,
			   const char *name, int depth)
{
	const char *slash = strrchr(from, '/');
	char *path = NULL;
	struct stat info;

	if (name[0] == '/' || !slash)
		path = strdup(name);
	else if (asprintf(&path, "%.*s/%s", (int)(slash - from), from, name) < 0)
		path = NULL;
	const char *file = path ? remember_file(ld->policy, path) : NULL;
	free(path);
	if (!file) {
		pf_diags_add(ld->diags, from, number, "out of memory");
		return false;
	}
	if (depth >= INCLUDE_DEPTH_MAX) {
		pf_diags_add(ld->diags, from, number, "@include nested deeper than %d files",
			     INCLUDE_DEPTH_MAX);
		return false;
	}
	if (stat(file, &info) < 0) {
		pf_diags_add(ld->diags, from, number, "cannot open include file \"%s\": %s", file,
			     strerror(errno));
		return false;
	}
	char *text = read_regular_file(ld->diags, file);
	bool expanded = text && expand_includes(ld, out, file, text, depth + 1);
	free(text);
	return expanded;
}

static bool expand_includes(struct loader *ld, FILE *out, const char *file, const char *text,
			    int depth)
{
	int number = 0;

	for (const char *line = text; *line; line += strcspn(line, "\n"), line += *line == '\n') {
		const char *rest = NULL;
		char *name = include_target(line, &rest);
		bool expanded = name ? expand_include(ld, out, file, ++number, name, depth)
				     : add_line(ld, out, line, strcspn(line, "\n"), file, ++number);
		free(name);
		if (!expanded)
			return false;
		size_t blanks = rest ? strspn(rest, " \t\r") : 0;
		if (rest && rest[blanks] && rest[blanks] != '\n' &&
		    !add_line(ld, out, rest, strcspn(rest, "\n"), file, number))
			return false;
	}
	return true;
}

/* libconfig arrays hold one scalar type, but bind_allow mixes ports and
 * "LO-HI" strings, as SPEC writes it ([ 21, "1024-2048" ]): its brackets
 * become a list's parentheses, in place (lines keep their numbers), in
 * the text with its @include'd files. */
static void bind_allow_as_list(char *text)
{
	static const char key[] = "bind_allow";

	for (char *at = strstr(text, key); at; at = strstr(at + 1, key)) {
		char *p = at + strlen(key);
		if (at > text && (isalnum((unsigned char)at[-1]) || at[-1] == '_'))
			continue;
		p += strspn(p, " \t\r\n");
		if (*p != '=' && *p != ':')
			continue;
		p++;
		p += strspn(p, " \t\r\n");
		if (*p != '[')
			continue;
		char *close = p + 1;
		bool quoted = false;
		for (; *close && (quoted || *close != ']'); close++) {
			if (*close == '"')
				quoted = !quoted;
			else if (quoted && *close == '\\' && close[1])
				close++;
		}
		if (*close != ']')
			return;
		*p = '(';
		*close = ')';
	}
}

/* libconfig 1.5 reads an integer written without an L suffix as a
 * 32-bit int and wraps what does not fit (4294996296 reads as 29000).
 * A lexical scan of the text libconfig read, outside strings, comments
 * and names, reports each such literal as written, and marks its line:
 * the schema does not judge the wrapped value again. */
static const char *integer_literal(struct loader *ld, const char *p, int line)
{
	const char *start = p;

	p += *p == '-' || *p == '+';
	bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && isxdigit((unsigned char)p[2]);
	const char *end = hex ? p + 2 + strspn(p + 2, "0123456789abcdefABCDEF")
			      : p + strspn(p, "0123456789");
	if (!hex && (*end == '.' || *end == 'e' || *end == 'E'))
		return end + strspn(end, "0123456789.eE+-"); /* a float */
	if (*end == 'L')
		return end + 1 + (end[1] == 'L'); /* 64 bits, as written */
	errno = 0;
	long long value = strtoll(start, NULL, hex ? 16 : 10);
	if (errno == ERANGE || value < INT_MIN || value > INT_MAX) {
		struct source_line *at = &ld->origin[line - 1];
		at->wide_integer = true;
		ld->invalid = true;
		pf_diags_add(ld->diags, at->file, at->line, "integer %.*s does not fit in 32 bits",
			     (int)(end - start), start);
	}
	return end;
}

static void report_wide_integers(struct loader *ld, const char *text)
{
	int line = 1;

	for (const char *p = text; *p;) {
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				p += p[0] == '\\' && p[1];
				line += *p == '\n';
			}
			p += *p == '"';
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			const char *close = strstr(p + 2, "*/");
			const char *end = close ? close + 2 : p + strlen(p);
			for (; p < end; p++)
				line += *p == '\n';
		} else if (isalpha((unsigned char)*p) || *p == '*') {
			p += 1 + strspn(p + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*");
		} else if (isdigit((unsigned char)*p) ||
			   ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
			p = integer_literal(ld, p, line);
		} else if (*p == '.' && isdigit((unsigned char)p[1])) {
			p += 1 + strspn(p + 1, "0123456789.eE+-"); /* a float */
		} else {
			line += *p++ == '\n';
		}
	}
}

/* Where line `line` of the text libconfig read came from. */
static struct source_line origin_at(const struct loader *ld, const char *file, int line)
{
	if (line > 0 && (size_t)line <= ld->origin_count)
		return ld->origin[line - 1];
	return (struct source_line){.file = file};
}

/* Returns false when the file could not be read or parsed at all.  With
 * text, the policy is that text and path only names it. */
static bool load_source(struct loader *ld, const char *path, const char *text)
{
	const char *file = remember_file(ld->policy, path);
	char *read_text = NULL, *expanded = NULL;
	size_t size = 0;
	config_t config;
	bool parsed;

	if (!file)
		return false;
	if (!text && !(text = read_text = read_regular_file(ld->diags, file)))
		return false;
	FILE *out = open_memstream(&expanded, &size);
	ld->origin_count = 0;
	parsed = out && expand_includes(ld, out, file, text, 0);
	if (out && fclose(out) != 0)
		parsed = false;
	free(read_text);
	if (!parsed || !expanded) {
		free(expanded);
		return false;
	}
	if (strstr(expanded, "bind_allow"))
		bind_allow_as_list(expanded);
	config_init(&config);
	parsed = config_read_string(&config, expanded) == CONFIG_TRUE;
	if (!parsed) {
		struct source_line at = origin_at(ld, file, config_error_line(&config));
		pf_diags_add(ld->diags, at.file, at.line, "%s",
			     config_error_text(&config) ? config_error_text(&config) : "parse error");
	} else if (config_setting_length(config_root_setting(&config)) == 0) {
		/* Most likely truncated, or being rewritten in place: failing
		 * open here would leave every program unconfined. */
		ld->invalid = true;
		pf_diags_add(ld->diags, file, 0,
			     "holds no settings (an empty policy is refused; write \"apps = ( );\" "
			     "to confine nothing)");
	} else {
		report_wide_integers(ld, expanded);
		pf_load_root(ld, config_root_setting(&config), file);
	}
	free(expanded);
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

static enum pf_load_status finish_load(struct loader *ld, bool parsed)
{
	if (pf_policy_index_names(ld->policy) < 0)
		pf_diags_add(ld->diags, ld->policy->file_count ? ld->policy->files[0] : "policy", 0,
			     "out of memory");
	pf_load_check_apps_apart(ld);
	if (pf_policy_index_ranges(ld->policy) < 0)
		pf_diags_add(ld->diags, ld->policy->file_count ? ld->policy->files[0] : "policy", 0,
			     "out of memory");
	pf_load_resolve_default(ld);
	free(ld->default_name);
	free(ld->origin);
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
		free(app->exe_globs.lines);
		free(app->comm_globs.lines);
		free(app->cgroups.lines);
		free(app->allow.rules);
		free(app->deny.rules);
		free(app->bind_allow);
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
