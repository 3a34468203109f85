/* One audit record from its line (logline.h). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logline.h"

static const char *const keys[] = {"ts", "event", "app", "local", "remote", "result", "rule", "exe", "comm",
				   "proto"};
#define KEY_COUNT (sizeof(keys) / sizeof(*keys))
static const size_t key_lens[KEY_COUNT] = {2, 5, 3, 5, 6, 6, 4, 3, 4, 5};
/* the integers: their bits in scan()'s seen follow the strings' */
static const char *const int_keys[] = {"pid", "attempts", "lost"};
#define INT_KEY_COUNT (sizeof(int_keys) / sizeof(*int_keys))
static const size_t int_key_lens[INT_KEY_COUNT] = {3, 8, 4};

static const char **slot(struct log_record *r, size_t index)
{
	const char **slots[KEY_COUNT] = {&r->ts,     &r->event, &r->app, &r->local, &r->remote,
					 &r->result, &r->rule,  &r->exe, &r->comm,  &r->proto};
	return slots[index];
}

static long long *int_slot(struct log_record *r, size_t index, bool **has)
{
	long long *slots[INT_KEY_COUNT] = {&r->pid, &r->attempts, &r->lost};
	bool *known[INT_KEY_COUNT] = {&r->has_pid, &r->has_attempts, &r->has_lost};
	*has = known[index];
	return slots[index];
}

static char *skip_space(char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static int hex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool hex4(const char *p, unsigned *out)
{
	*out = 0;
	for (int i = 0; i < 4; i++) {
		int h = hex(p[i]);
		if (h < 0)
			return false;
		*out = *out << 4 | (unsigned)h;
	}
	return true;
}

/* A string starting after its '"', decoded in place; returns the byte
 * after the closing quote, or NULL (then jansson decides). */
static char *string_at(char *p, const char **out)
{
	char *w = p;
	*out = p;
	for (;;) {
		unsigned char c = (unsigned char)*p;
		if (c == '"') {
			*w = '\0';
			return p + 1;
		}
		if (c < 0x20 || c >= 0x80)	/* control bytes, and UTF-8 left to jansson to judge */
			return NULL;
		if (c != '\\') {
			*w++ = *p++;
			continue;
		}
		unsigned u;
		switch (p[1]) {
		case '"': case '\\': case '/': *w++ = p[1]; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u':
			/* only ASCII here: the rest is jansson's */
			if (!hex4(p + 2, &u) || u == 0 || u >= 0x80)
				return NULL;
			*w++ = (char)u;
			p += 4;
			break;
		default:
			return NULL;
		}
		p += 2;
	}
}

/* A value other than a string: an integer, or a number, true, false or
 * null (read and dropped).  Returns the byte after it, or NULL. */
static char *scalar_at(char *p, long long *integer, bool *is_integer)
{
	static const char *const words[] = {"true", "false", "null"};
	*is_integer = false;
	if (*p == '-' || (*p >= '0' && *p <= '9')) {
		char *end;
		long long v = strtoll(p, &end, 10);
		if (end == p || (p[0] == '-' ? p[1] == '0' && end - p > 2 : p[0] == '0' && end - p > 1))
			return NULL;
		if (*end == '.' || *end == 'e' || *end == 'E') {
			strtod(p, &end);
			return end;
		}
		*integer = v;
		*is_integer = true;
		return end;
	}
	for (size_t i = 0; i < 3; i++)
		if (strncmp(p, words[i], strlen(words[i])) == 0)
			return p + strlen(words[i]);
	return NULL;
}

static bool scan(char *p, struct log_record *r)
{
	unsigned seen = 0;	/* keys taken, a bit each */
	p = skip_space(p);
	if (*p++ != '{')
		return false;
	p = skip_space(p);
	if (*p == '}')
		return *skip_space(p + 1) == '\0';
	for (;;) {
		const char *key, *text = NULL;
		long long integer = 0;
		bool is_integer = false;
		if (*p != '"' || !(p = string_at(p + 1, &key)))
			return false;
		p = skip_space(p);
		if (*p++ != ':')
			return false;
		p = skip_space(p);
		p = *p == '"' ? string_at(p + 1, &text) : scalar_at(p, &integer, &is_integer);
		if (!p)
			return false;
		size_t key_len = strlen(key), i = 0;
		while (i < INT_KEY_COUNT && !(key_len == int_key_lens[i] && memcmp(key, int_keys[i], key_len) == 0))
			i++;
		if (i < INT_KEY_COUNT) {
			unsigned bit = 1u << (KEY_COUNT + i);
			bool *has;
			if (seen & bit)
				return false;	/* a duplicate: jansson refuses it */
			seen |= bit;
			*int_slot(r, i, &has) = integer;
			*has = is_integer;
		} else {
			for (size_t k = 0; k < KEY_COUNT; k++)
				if (key[0] == keys[k][0] && key_len == key_lens[k] && memcmp(key, keys[k], key_len) == 0) {
					if (seen & (1u << k))
						return false;
					seen |= 1u << k;
					*slot(r, k) = text;
				}
		}
		p = skip_space(p);
		if (*p == '}')
			return *skip_space(p + 1) == '\0';
		if (*p++ != ',')
			return false;
		p = skip_space(p);
	}
}

static void from_tree(json_t *tree, struct log_record *r)
{
	for (size_t k = 0; k < KEY_COUNT; k++)
		*slot(r, k) = json_string_value(json_object_get(tree, keys[k]));
	for (size_t i = 0; i < INT_KEY_COUNT; i++) {
		json_t *value = json_object_get(tree, int_keys[i]);
		bool *has;
		*int_slot(r, i, &has) = json_integer_value(value);
		*has = json_is_integer(value);
	}
}

bool log_record_read(char *line, struct log_record *record)
{
	size_t len = strlen(line);
	char *copy = NULL;

	memset(record, 0, sizeof(*record));
	/* The scan writes into the line; jansson may need it whole after. */
	if (len < 4096) {
		char buf[4096];
		memcpy(buf, line, len + 1);
		if (scan(line, record))
			return true;
		memcpy(line, buf, len + 1);
	} else if ((copy = strdup(line))) {
		if (scan(line, record)) {
			free(copy);
			return true;
		}
		memcpy(line, copy, len + 1);
		free(copy);
	}
	memset(record, 0, sizeof(*record));
	json_t *tree = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(tree)) {
		json_decref(tree);
		return false;
	}
	record->tree = tree;
	from_tree(tree, record);
	return true;
}

void log_record_done(struct log_record *record)
{
	json_decref(record->tree);
	record->tree = NULL;
}
