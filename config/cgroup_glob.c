/* Globs over cgroup paths: matching (fnmatch), whether two globs can
 * match one path (for `check`), and a glob written with the mount read
 * relative to it. */
#include <fnmatch.h>
#include <stdint.h>
#include <string.h>

#include "config/cgroup_glob.h"

#define MAX_COMPONENT 255
#define MAX_DEPTH 64

/* One component as tokens: a star, or a set of the bytes it takes. */
struct token {
	bool star;
	uint64_t set[4];
};

static void set_add(struct token *t, unsigned char c)
{
	if (c != '/' && c != '\0')
		t->set[c / 64] |= 1ULL << (c % 64);
}

static bool sets_meet(const struct token *a, const struct token *b)
{
	for (int i = 0; i < 4; i++)
		if (a->set[i] & b->set[i])
			return true;
	return false;
}

/* A bracket expression at p ('[' consumed by the caller): into t, the
 * position after its ']'; NULL when it never closes. */
static const char *parse_bracket(const char *p, const char *end, struct token *t)
{
	bool negate = p < end && (*p == '!' || *p == '^');
	struct token in = {0};

	if (negate)
		p++;
	for (bool first = true; p < end && (first || *p != ']'); first = false) {
		unsigned char lo = (unsigned char)*p++, hi = lo;
		if (lo == '\\' && p < end)
			lo = hi = (unsigned char)*p++;
		if (p + 1 < end && *p == '-' && p[1] != ']') {
			hi = (unsigned char)p[1];
			p += 2;
		}
		for (unsigned c = lo; c <= hi; c++)
			set_add(&in, (unsigned char)c);
	}
	if (p >= end)
		return NULL;
	for (unsigned c = 1; c < 256; c++) {
		bool has = in.set[c / 64] >> (c % 64) & 1;
		if (has != negate)
			set_add(t, (unsigned char)c);
	}
	return p + 1;
}

/* The component [p, end) as tokens; their count, or -1 when malformed. */
static int tokenize(const char *p, const char *end, struct token *tokens)
{
	int n = 0;

	while (p < end) {
		if (n == MAX_COMPONENT)
			return -1;
		struct token *t = &tokens[n++];
		memset(t, 0, sizeof(*t));
		char c = *p++;
		if (c == '*') {
			t->star = true;
			while (p < end && *p == '*')
				p++;
		} else if (c == '?') {
			for (unsigned b = 1; b < 256; b++)
				set_add(t, (unsigned char)b);
		} else if (c == '[') {
			if (!(p = parse_bracket(p, end, t)))
				return -1;
		} else if (c == '\\') {
			if (p >= end)
				return -1;
			set_add(t, (unsigned char)*p++);
		} else {
			set_add(t, (unsigned char)c);
		}
	}
	return n;
}

/* Whether one string matches both token lists: a walk over the pairs of
 * positions, a star taking nothing or one more byte. */
static bool components_meet(const struct token *a, int na, const struct token *b, int nb)
{
	static bool seen[MAX_COMPONENT + 1][MAX_COMPONENT + 1];
	static uint8_t stack[(MAX_COMPONENT + 1) * (MAX_COMPONENT + 1)][2];
	int top = 0;
	bool met = false;

	for (int i = 0; i <= na; i++)
		memset(seen[i], 0, (size_t)(nb + 1) * sizeof(bool));
	stack[0][0] = 0, stack[0][1] = 0, top = 1;
	seen[0][0] = true;
	while (top && !met) {
		top--;
		int i = stack[top][0], j = stack[top][1];
		int next[4][2], count = 0;
		if (i == na && j == nb) {
			met = true;
			break;
		}
		if (i < na && a[i].star)
			next[count][0] = i + 1, next[count][1] = j, count++;
		if (j < nb && b[j].star)
			next[count][0] = i, next[count][1] = j + 1, count++;
		if (i < na && j < nb) {
			if (a[i].star && !b[j].star)
				next[count][0] = i, next[count][1] = j + 1, count++;
			else if (!a[i].star && b[j].star)
				next[count][0] = i + 1, next[count][1] = j, count++;
			else if (!a[i].star && sets_meet(&a[i], &b[j]))
				next[count][0] = i + 1, next[count][1] = j + 1, count++;
		}
		for (int k = 0; k < count; k++)
			if (!seen[next[k][0]][next[k][1]]) {
				seen[next[k][0]][next[k][1]] = true;
				stack[top][0] = (uint8_t)next[k][0], stack[top][1] = (uint8_t)next[k][1], top++;
			}
	}
	return met;
}

/* The components of path: their starts and ends, at most max. */
static size_t split(const char *path, const char **starts, const char **ends, size_t max)
{
	size_t n = 0;

	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *end = p + strcspn(p, "/");
		if (n < max) {
			starts[n] = p;
			ends[n] = end;
		}
		n++;
		p = end;
	}
	return n;
}

size_t pf_cgroup_glob_depth(const char *path)
{
	const char *starts[1], *ends[1];
	return split(path, starts, ends, 0);
}

const char *pf_cgroup_glob_invalid(const char *glob)
{
	static struct token tokens[MAX_COMPONENT];
	const char *starts[MAX_DEPTH], *ends[MAX_DEPTH];
	size_t n = split(glob, starts, ends, MAX_DEPTH);

	if (n == 0)
		return "it names no cgroup below the root";
	if (n > MAX_DEPTH)
		return "it is deeper than 64 components";
	if (strstr(glob, "//"))
		return "it has an empty component";
	for (size_t i = 0; i < n; i++) {
		if (ends[i] - starts[i] == 2 && strncmp(starts[i], "..", 2) == 0)
			return "it has a \"..\" component";
		if (tokenize(starts[i], ends[i], tokens) < 0)
			return "a '[' is never closed, a '\\' ends it, or a component is longer than 255";
	}
	return NULL;
}

const char *pf_cgroup_under_mount(const char *glob, const char *mount)
{
	size_t len = strlen(mount);

	return len > 1 && strncmp(glob, mount, len) == 0 && glob[len] == '/' ? glob + len : glob;
}

bool pf_cgroup_glob_match(const char *glob, const char *relative)
{
	while (*glob == '/')
		glob++;
	while (*relative == '/')
		relative++;
	return fnmatch(glob, relative, FNM_PATHNAME) == 0;
}

bool pf_cgroup_glob_leads(const char *glob, const char *relative)
{
	char head[4096];
	const char *starts[MAX_DEPTH], *ends[MAX_DEPTH];
	size_t depth = pf_cgroup_glob_depth(relative), n = split(glob, starts, ends, MAX_DEPTH);

	if (depth >= n || n > MAX_DEPTH)
		return false;
	if (depth == 0)
		return true;
	size_t len = (size_t)(ends[depth - 1] - starts[0]);
	if (len >= sizeof(head))
		return false;
	memcpy(head, starts[0], len);
	head[len] = '\0';
	return pf_cgroup_glob_match(head, relative);
}

bool pf_cgroup_globs_intersect(const char *a, const char *b)
{
	static struct token ta[MAX_COMPONENT], tb[MAX_COMPONENT];
	const char *sa[MAX_DEPTH], *ea[MAX_DEPTH], *sb[MAX_DEPTH], *eb[MAX_DEPTH];
	size_t na = split(a, sa, ea, MAX_DEPTH), nb = split(b, sb, eb, MAX_DEPTH);

	if (na != nb || na > MAX_DEPTH)
		return false;
	for (size_t i = 0; i < na; i++) {
		int ca = tokenize(sa[i], ea[i], ta), cb = tokenize(sb[i], eb[i], tb);
		if (ca < 0 || cb < 0 || !components_meet(ta, ca, tb, cb))
			return false;
	}
	return true;
}
