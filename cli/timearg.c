/* TIME arguments (report --since/--until, who --at), as SPEC fixes them:
 * ISO 8601 (UTC or with an offset), a duration back from now, now, today
 * or yesterday.  The result is the log's own form, to the second and a
 * fraction when one was given (to the microsecond, the log's), which
 * cli_time_cmp() compares with a record's "ts". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* TIME, as UTC text the log's timestamps compare with: ISO 8601
 * (2026-12-02, 2026-12-02T10:00[:00[.frac]][Z|+HH:MM|-HH:MM], a space for
 * the T), a duration back from now (90s, 15m, 1h, 2d, 1w), now, today or
 * yesterday (UTC midnights).  The fields given for a day the calendar
 * lacks go to *given. */
static int parse_time(const char *text, char out[CLI_TIME_LEN], struct tm *given)
{
	static const char *const formats[] = {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
					      "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"};
	time_t now = time(NULL), when = (time_t)-1;
	char *end, fraction[8] = "";

	if (strcmp(text, "now") == 0)
		when = now;
	else if (strcmp(text, "today") == 0)
		when = now - now % 86400;
	else if (strcmp(text, "yesterday") == 0)
		when = now - now % 86400 - 86400;
	else if (text[0] >= '0' && text[0] <= '9' && !strchr(text, '-')) {
		unsigned long long count = strtoull(text, &end, 10);
		static const char units[] = "smhdw";
		static const long seconds[] = {1, 60, 3600, 86400, 7 * 86400};
		const char *unit = end[0] && !end[1] ? strchr(units, end[0]) : NULL;
		if (!unit || count > 100ULL * 365 * 86400)
			return -1;
		when = now - (time_t)(count * (unsigned long long)seconds[unit - units]);
	} else {
		for (size_t i = 0; i < sizeof(formats) / sizeof(*formats) && when == (time_t)-1; i++) {
			struct tm tm = {0};
			const char *rest = strptime(text, formats[i], &tm);
			if (!rest)
				continue;
			if (*rest == '.' && i < 2) {
				/* to the microsecond: a record is never finer */
				size_t digits = strspn(rest + 1, "0123456789");
				snprintf(fraction, sizeof(fraction), "%.*s", digits < 6 ? (int)digits : 6, rest + 1);
				rest += 1 + digits;
			}
			long offset = 0;
			int hours, minutes, used = 0;
			if (strcmp(rest, "Z") == 0 || *rest == '\0')
				offset = 0;
			else if ((*rest == '+' || *rest == '-') &&
				 (sscanf(rest + 1, "%2d:%2d%n", &hours, &minutes, &used) == 2 ||
				  sscanf(rest + 1, "%2d%2d%n", &hours, &minutes, &used) == 2) &&
				 rest[1 + used] == '\0' && hours < 24 && minutes < 60)
				offset = (*rest == '+' ? 1 : -1) * (hours * 3600L + minutes * 60L);
			else
				continue;
			*given = tm;
			when = timegm(&tm) - offset;
			/* timegm rolls 2026-02-30 over to 2026-03-02: no such day */
			if (tm.tm_year != given->tm_year || tm.tm_mon != given->tm_mon || tm.tm_mday != given->tm_mday ||
			    tm.tm_hour != given->tm_hour || tm.tm_min != given->tm_min || tm.tm_sec != given->tm_sec)
				return CLI_TIME_NO_SUCH_DAY;
		}
		if (when == (time_t)-1)
			return -1;
	}
	struct tm utc;
	if (!gmtime_r(&when, &utc))
		return -1;
	size_t len = strftime(out, CLI_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &utc);
	size_t kept = strlen(fraction);
	while (kept && fraction[kept - 1] == '0')
		kept--;
	if (kept)
		snprintf(out + len, CLI_TIME_LEN - len, ".%.*s", (int)kept, fraction);
	return 0;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

int cli_time_cmp(const char *ts, const char *time)
{
	int order = strncmp(ts, time, 19);
	if (order || strlen(ts) < 19)
		return order;
	/* the fractions, the shorter one filled out with zeros */
	const char *a = ts + 19 + (ts[19] == '.'), *b = time + 19 + (time[19] == '.');
	while (is_digit(*a) || is_digit(*b)) {
		char x = is_digit(*a) ? *a++ : '0', y = is_digit(*b) ? *b++ : '0';
		if (x != y)
			return x < y ? -1 : 1;
	}
	return 0;
}

void cli_time_record_form(const char *time, char out[CLI_TIME_LEN])
{
	const char *fraction = time[19] == '.' ? time + 20 : "";
	snprintf(out, CLI_TIME_LEN, "%.19s.%.6s%.*sZ", time, fraction, (int)(6 - strnlen(fraction, 6)), "000000");
}

int cli_parse_time(const char *text, char out[CLI_TIME_LEN])
{
	struct tm given;
	return parse_time(text, out, &given);
}

int cli_time_option(const char *option, const char *text, char out[CLI_TIME_LEN])
{
	char message[512], why[80];
	struct tm given = {0};
	int rc = parse_time(text, out, &given);

	if (rc == 0)
		return 0;
	if (rc == CLI_TIME_NO_SUCH_DAY) {
		/* day 0 of the next month is the last of this one */
		struct tm last = {.tm_year = given.tm_year, .tm_mon = given.tm_mon + 1, .tm_mday = 0};
		timegm(&last);
		if (given.tm_mday > last.tm_mday)
			snprintf(why, sizeof(why), "no such day (%04d-%02d has %d days)", given.tm_year + 1900,
				 given.tm_mon + 1, last.tm_mday);
		else
			snprintf(why, sizeof(why), "no such time of day");
		snprintf(message, sizeof(message), "%s: %s '%.64s': %s", cli_command_name(), option, text, why);
	} else {
		snprintf(message, sizeof(message),
			 "%s: %s '%.64s' is no TIME: 2026-12-02T10:00:00Z (or +01:00), 2026-12-02, 90s, 15m, "
			 "1h, 2d, 1w, now, today or yesterday",
			 cli_command_name(), option, text);
	}
	return usage_error(message);
}
