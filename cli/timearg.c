/* TIME arguments (report --since/--until, who --at), as SPEC fixes them:
 * ISO 8601 in UTC, a duration back from now, today or yesterday.  The
 * result is the log's own form cut to the second, so that it compares
 * with a record's "ts" as text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void format_utc(time_t when, char out[CLI_TIME_LEN])
{
	struct tm tm;
	gmtime_r(&when, &tm);
	strftime(out, CLI_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
}

static int parse_duration(const char *text, time_t now, char out[CLI_TIME_LEN])
{
	char *end;
	long long amount = strtoll(text, &end, 10);
	long long unit;

	if (end == text || amount < 0 || end[0] == '\0' || end[1] != '\0')
		return -1;
	switch (*end) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	default: return -1;
	}
	if (amount > (long long)now / unit)
		return -1;
	format_utc(now - (time_t)(amount * unit), out);
	return 0;
}

int cli_parse_time(const char *text, char out[CLI_TIME_LEN])
{
	static const char *const formats[] = {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
					      "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"};
	time_t now = time(NULL);

	if (strcmp(text, "today") == 0 || strcmp(text, "yesterday") == 0) {
		time_t day = now - now % 86400 - (text[0] == 'y' ? 86400 : 0);
		format_utc(day, out);
		return 0;
	}
	if (text[0] >= '0' && text[0] <= '9' && !strchr(text, '-') && !strchr(text, ':'))
		return parse_duration(text, now, out);
	for (size_t i = 0; i < sizeof(formats) / sizeof(*formats); i++) {
		struct tm tm = {0};
		const char *end = strptime(text, formats[i], &tm);
		if (!end)
			continue;
		if (*end == '.') /* fractions of a second: the log's own form */
			for (end++; *end >= '0' && *end <= '9'; end++)
				;
		if (*end == '\0' || strcmp(end, "Z") == 0 || strcmp(end, "+00:00") == 0) {
			strftime(out, CLI_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
			return 0;
		}
	}
	return -1;
}
