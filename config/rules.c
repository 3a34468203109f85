/* Destination rules: "CIDR", "CIDR:PORT", "CIDR:LO-HI"; IPv6 in brackets. */
#include "config/policy.h"
#include "config/rule_index.h"
#include "core/constants.h"
#include "record/record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *text, size_t len, uint16_t *port)
{
	unsigned long value = 0;

	if (len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		value = value * 10 + (unsigned long)(text[i] - '0');
	}
	if (value < 1 || value > 65535)
		return -1;
	*port = (uint16_t)value;
	return 0;
}

static int parse_port_part(const char *text, struct pf_rule *rule,
			   const char **why)
{
	const char *dash = strchr(text, '-');
	size_t len = strlen(text);

	if (!dash) {
		if (parse_port(text, len, &rule->port_lo) < 0) {
			*why = "port must be a number from 1 to 65535";
			return -1;
		}
		rule->port_hi = rule->port_lo;
		return 0;
	}
	if (parse_port(text, (size_t)(dash - text), &rule->port_lo) < 0 ||
	    parse_port(dash + 1, len - (size_t)(dash - text) - 1,
		       &rule->port_hi) < 0) {
		*why = "port range must be LO-HI with ports from 1 to 65535";
		return -1;
	}
	if (rule->port_lo > rule->port_hi) {
		*why = "port range has LO greater than HI";
		return -1;
	}
	return 0;
}

static int parse_prefix(const char *text, unsigned max, uint8_t *prefix)
{
	unsigned long value = 0;
	size_t len = strlen(text);

	if (len == 0 || len > 3)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		value = value * 10 + (unsigned long)(text[i] - '0');
	}
	if (value > max)
		return -1;
	*prefix = (uint8_t)value;
	return 0;
}

static void mask_host_bits(struct pf_rule *rule)
{
	size_t bytes = rule->family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < bytes; i++) {
		int bits_left = rule->prefix - (int)i * 8;
		if (bits_left >= 8)
			continue;
		rule->addr[i] &= bits_left <= 0 ? 0 : (uint8_t)(0xff << (8 - bits_left));
	}
}

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Destinations in ::ffff:0:0/96 are judged as IPv4, so a rule inside that
 * block is rewritten as the IPv4 rule it means; otherwise it could never
 * match anything. */
static void fold_v4_mapped(struct pf_rule *rule)
{
	if (rule->family != AF_INET6 || rule->prefix < 96 ||
	    memcmp(rule->addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) != 0)
		return;
	memmove(rule->addr, rule->addr + 12, 4);
	memset(rule->addr + 4, 0, 12);
	rule->family = AF_INET;
	rule->prefix = (uint8_t)(rule->prefix - 96);
}

/* Splits "ADDR[/PREFIX]" in place and fills family, address and prefix. */
static int parse_cidr(char *cidr, sa_family_t family, struct pf_rule *rule,
		      const char **why)
{
	unsigned max = family == AF_INET ? 32 : 128;
	char *slash = strchr(cidr, '/');

	rule->family = family;
	rule->prefix = (uint8_t)max;
	if (slash) {
		*slash = '\0';
		if (parse_prefix(slash + 1, max, &rule->prefix) < 0) {
			*why = family == AF_INET ? "prefix length must be 0 to 32"
						 : "prefix length must be 0 to 128";
			return -1;
		}
	}
	if (inet_pton(family, cidr, rule->addr) != 1) {
		*why = family == AF_INET ? "not an IPv4 address"
					 : "not an IPv6 address";
		return -1;
	}
	mask_host_bits(rule);
	return 0;
}

int pf_rule_parse(const char *text, struct pf_rule *rule, const char **why)
{
	char buf[128];
	char *addr_part, *port_part = NULL;
	sa_family_t family;

	memset(rule, 0, sizeof(*rule));
	rule->port_lo = 0;	/* no port: every port, 0 too (a UDP datagram goes there) */
	rule->port_hi = 65535;
	if (strlen(text) >= sizeof(buf) || text[0] == '\0') {
		*why = text[0] ? "rule is too long" : "rule is empty";
		return -1;
	}
	strcpy(buf, text);
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');
		if (!close) {
			*why = "IPv6 address lacks its closing ']'";
			return -1;
		}
		*close = '\0';
		addr_part = buf + 1;
		if (close[1] == ':')
			port_part = close + 2;
		else if (close[1] != '\0') {
			*why = "expected ':PORT' after ']'";
			return -1;
		}
		family = AF_INET6;
	} else {
		if (strchr(buf, '[') || strchr(buf, ']')) {
			*why = "misplaced bracket";
			return -1;
		}
		char *colon = strchr(buf, ':');
		if (colon && strchr(colon + 1, ':')) {
			*why = "IPv6 addresses must be written in brackets, as [ADDR/PREFIX]:PORT";
			return -1;
		}
		if (colon) {
			*colon = '\0';
			port_part = colon + 1;
		}
		addr_part = buf;
		family = AF_INET;
	}
	if (parse_cidr(addr_part, family, rule, why) < 0)
		return -1;
	fold_v4_mapped(rule);
	if (port_part && parse_port_part(port_part, rule, why) < 0)
		return -1;
	return 0;
}

/* The destination as the rules see it: IPv4-mapped IPv6 becomes IPv4. */
int pf_dest_normalise(const struct sockaddr *dest, socklen_t dest_len,
		      struct pf_dest *out)
{
	if (!dest)
		return -1;
	if (dest->sa_family == AF_INET && dest_len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)dest;
		out->family = AF_INET;
		out->addr = (const uint8_t *)&sin->sin_addr;
		out->port = ntohs(sin->sin_port);
		return 0;
	}
	if (dest->sa_family == AF_INET6 && dest_len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)dest;
		const uint8_t *bytes = sin6->sin6_addr.s6_addr;
		out->port = ntohs(sin6->sin6_port);
		if (memcmp(bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
			out->family = AF_INET;
			out->addr = bytes + 12;
		} else {
			out->family = AF_INET6;
			out->addr = bytes;
		}
		return 0;
	}
	return -1;
}

/* The kernel delivers a connect to 0.0.0.0 or :: (and ::ffff:0.0.0.0)
 * on loopback, so that is where the rules must look. */
static void route_unspecified(struct pf_dest *dest)
{
	static const uint8_t zero[16];
	static const uint8_t loopback4[4] = {127, 0, 0, 1};
	static const uint8_t loopback6[16] = {[15] = 1};
	bool v4 = dest->family == AF_INET;

	if (memcmp(dest->addr, zero, v4 ? 4 : 16) == 0)
		dest->addr = v4 ? loopback4 : loopback6;
}

int pf_dest_for_rules(const struct sockaddr *dest, socklen_t dest_len,
		      struct pf_dest *out)
{
	if (pf_dest_normalise(dest, dest_len, out) < 0)
		return -1;
	route_unspecified(out);
	return 0;
}

static bool prefix_matches(const uint8_t *net, const uint8_t *addr, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(net, addr, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (net[whole] & mask) == (addr[whole] & mask);
}

static bool rule_matches_dest(const struct pf_rule *rule, const struct pf_dest *dest)
{
	return rule->family == dest->family && dest->port >= rule->port_lo &&
	       dest->port <= rule->port_hi && prefix_matches(rule->addr, dest->addr, rule->prefix);
}

bool pf_rule_matches(const struct pf_rule *rule, const struct sockaddr *dest,
		     socklen_t dest_len)
{
	struct pf_dest normalised;

	if (pf_dest_normalise(dest, dest_len, &normalised) < 0)
		return false;
	return rule_matches_dest(rule, &normalised);
}

static bool list_matches(const struct pf_rule_list *list, const struct pf_dest *dest)
{
	for (size_t i = 0; i < list->count; i++)
		if (rule_matches_dest(&list->rules[i], dest))
			return true;
	return false;
}

bool pf_app_permits_linear(const struct pf_app *app, const struct sockaddr *dest,
			   socklen_t dest_len)
{
	struct pf_dest judged;

	if (!app->has_allow && app->deny.count == 0)
		return true;
	if (pf_dest_for_rules(dest, dest_len, &judged) < 0)
		return true; /* not an inet destination: not ours to judge */
	if (list_matches(&app->deny, &judged))
		return false;
	return !app->has_allow || list_matches(&app->allow, &judged);
}

bool pf_app_permits(const struct pf_app *app, const struct sockaddr *dest,
		    socklen_t dest_len)
{
	struct pf_dest judged;

	if (!app->rule_index)
		return pf_app_permits_linear(app, dest, dest_len);
	if (!app->has_allow && app->deny.count == 0)
		return true;
	if (pf_dest_for_rules(dest, dest_len, &judged) < 0)
		return true;
	return pf_rule_index_permits(app->rule_index, app->has_allow, &judged);
}

static const struct pf_rule *first_match(const struct pf_rule_list *list, const struct pf_dest *dest)
{
	for (size_t i = 0; i < list->count; i++)
		if (rule_matches_dest(&list->rules[i], dest))
			return &list->rules[i];
	return NULL;
}

void pf_app_refusal_rule(const struct pf_app *app, const struct sockaddr *dest,
			 socklen_t dest_len, char *out, size_t out_len)
{
	struct pf_dest judged;
	const struct pf_rule *rule;

	out[0] = '\0';
	if (pf_dest_for_rules(dest, dest_len, &judged) < 0)
		return;
	if ((rule = first_match(&app->deny, &judged)))
		snprintf(out, out_len, "deny \"%s\" %s:%d", rule->text, app->file ? app->file : "",
			 rule->line);
	else if (app->has_allow && !first_match(&app->allow, &judged))
		snprintf(out, out_len, "allow (no rule matches) %s:%d", app->file ? app->file : "",
			 app->allow_line);
}

bool pf_app_bind_allows(const struct pf_app *app, uint16_t port)
{
	for (size_t i = 0; i < app->bind_allow_count; i++)
		if (port >= app->bind_allow[i].lo && port <= app->bind_allow[i].hi)
			return true;
	return false;
}

void pf_app_bind_rule(const struct pf_policy *policy, const struct pf_app *app, uint16_t port,
		      char *out, size_t out_len)
{
	int owner = policy && port ? pf_policy_app_at_port(policy, port) : -1;
	const char *file = app->file ? app->file : "";

	if (owner >= 0 && &policy->apps[owner] != app) {
		const struct pf_app *other = &policy->apps[owner];
		snprintf(out, out_len, "range %u-%u of app '%s' %s:%d", other->range_lo, other->range_hi,
			 other->name, other->file ? other->file : "", other->range_line);
	} else if (app->deny_explicit_bind && (!port || port < app->range_lo || port > app->range_hi)) {
		snprintf(out, out_len, "explicit_bind = \"deny\" %s:%d (bind_allow lists the ports app '%s' may bind)",
			 file, app->explicit_bind_line, app->name);
	} else {
		snprintf(out, out_len, "another app's range (see portfence check %s)", file);
	}
}

void pf_app_exhaustion_reason(const struct pf_app *app, char *out, size_t out_len)
{
	snprintf(out, out_len, "no free port in range %u-%u of app '%s' (%s:%d)", app->range_lo, app->range_hi,
		 app->name, app->file ? app->file : "", app->range_line);
}

enum pf_explanation pf_app_explain(const struct pf_policy *policy, const struct pf_app *app, int event, int error,
				   uint16_t local_port, const struct sockaddr *remote, char *out, size_t out_len)
{
	bool refused = event == PF_CORE_EVENT_DENY || (event == PF_CORE_EVENT_AUDIT && error);

	out[0] = '\0';
	if (refused && error == EACCES && local_port) {
		pf_app_bind_rule(policy, app, local_port, out, out_len);
	} else if (refused && remote) {
		socklen_t remote_len = remote->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								   : sizeof(struct sockaddr_in);
		pf_app_refusal_rule(app, remote, remote_len, out, out_len);
	} else if (error == PF_CORE_ERROR_UNSEEN && event == PF_CORE_EVENT_BIND) {
		snprintf(out, out_len, "the kernel refused the bind of port %u (which errno the program saw, no hook can tell)",
			 local_port);
		return PF_EXPLAINS_REASON;
	} else if (error == PF_CORE_ERROR_UNSEEN && (event == PF_CORE_EVENT_ASSIGN || event == PF_CORE_EVENT_ERROR)) {
		snprintf(out, out_len,
			 "the call failed in the kernel after port %u of range %u-%u was given to it "
			 "(which errno the program saw, no hook can tell)",
			 local_port, app->range_lo, app->range_hi);
		return PF_EXPLAINS_REASON;
	} else if (event == PF_CORE_EVENT_ERROR) {
		if (error == EADDRNOTAVAIL || error == EAGAIN || error == EADDRINUSE)
			pf_app_exhaustion_reason(app, out, out_len);
		else
			snprintf(out, out_len, "cannot give a port of range %u-%u: %s", app->range_lo, app->range_hi,
				 pf_errno_name(error));
		return PF_EXPLAINS_REASON;
	}
	return out[0] ? PF_EXPLAINS_RULE : PF_EXPLAINS_NOTHING;
}

static bool copy_rules(struct pf_rule_list *to, const struct pf_rule_list *from)
{
	to->count = 0;
	to->rules = malloc((from->count + 1) * sizeof(*to->rules));
	if (!to->rules)
		return false;
	if (from->count)
		memcpy(to->rules, from->rules, from->count * sizeof(*to->rules));
	to->count = from->count;
	return true;
}

/* Into copy: what names app in a record (name, file, range and their
 * lines), and with rules its rules too; false when out of memory. */
static bool copy_explaining(struct pf_app *copy, const struct pf_app *app, bool rules)
{
	copy->range_lo = app->range_lo;
	copy->range_hi = app->range_hi;
	copy->has_allow = app->has_allow;
	copy->deny_explicit_bind = app->deny_explicit_bind;
	copy->udp_unbound_audit = app->udp_unbound_audit;
	copy->line = app->line;
	copy->range_line = app->range_line;
	copy->explicit_bind_line = app->explicit_bind_line;
	copy->allow_line = app->allow_line;
	copy->udp_unbound_line = app->udp_unbound_line;
	copy->name = strdup(app->name ? app->name : "");
	copy->file = strdup(app->file ? app->file : "");
	return copy->name && copy->file &&
	       (!rules || (copy_rules(&copy->allow, &app->allow) && copy_rules(&copy->deny, &app->deny)));
}

struct pf_explainer *pf_explainer_new(const struct pf_policy *policy, const struct pf_app *app)
{
	struct pf_explainer *e = calloc(1, sizeof(*e));
	size_t count = policy ? policy->app_count : 0;
	bool ok = e && (e->policy.apps = calloc(count + 1, sizeof(*e->policy.apps)));

	/* app may be a copy of the policy's (run --audit changes its mode):
	 * names are unique in a valid policy. */
	for (size_t i = 0; ok && i < count; i++) {
		const struct pf_app *other = &policy->apps[i];
		bool itself = !e->app && other->name && app->name && strcmp(other->name, app->name) == 0;
		e->policy.app_count++;
		ok = copy_explaining(&e->policy.apps[i], itself ? app : other, itself);
		if (itself)
			e->app = &e->policy.apps[i];
	}
	/* An app from no policy (or not of this one): itself alone. */
	if (ok && !e->app) {
		e->app = &e->policy.apps[e->policy.app_count++];
		ok = copy_explaining(e->app, app, true);
	}
	if (!ok) {
		pf_explainer_free(e);
		return NULL;
	}
	e->policy.default_app = -1;
	return e;
}

void pf_explainer_free(struct pf_explainer *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->policy.app_count; i++) {
		struct pf_app *copy = &e->policy.apps[i];
		free(copy->name);
		free((char *)copy->file);
		free(copy->allow.rules);
		free(copy->deny.rules);
	}
	free(e->policy.apps);
	free(e);
}
