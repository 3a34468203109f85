/* portfence status --watch: the ranges as a live picture, refreshed each
 * second with plain ANSI: per app a port map (one cell per port, or per
 * block of ports when the range is wider than the screen allows), its
 * assignments and failures per second (the shim's and the BPF programs'
 * counters, summed), and a time to exhaustion from the trend of the
 * ports held over the last 30 s.
 * It fits the terminal's size, and q quits. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "loader/loader.h"
#include "status.h"

#define TREND 31	/* samples kept: 30 s of trend */
#define MAX_ROWS 4	/* map rows per app at most */
/* Between two passes over /proc, the processes and the sockets they held
 * come from the last pass (new sockets count for their range's app until
 * the next).  /proc is read again once at least FULL_PASS_EVERY refreshes
 * have passed and the last one met sockets no cached process held, and
 * every REREAD_EVERY refreshes in any case (a socket handed to another
 * process keeps its inode). */
#define FULL_PASS_EVERY 5
#define REREAD_EVERY 30

struct history {
	double when[TREND];
	unsigned held[TREND];
	unsigned long long assignments, failures;
	size_t count;
	bool counted;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The cell's glyph: the strongest state of its ports. */
static const char *glyph(uint8_t state)
{
	static const char *const glyphs[] = {".", "o", "L", "\033[33m~\033[0m", "\033[32m#\033[0m",
					     "\033[1;31m!\033[0m"};
	return glyphs[state];
}

static unsigned draw_app(FILE *out, const struct status *st, const struct app_status *app, struct history *h,
			 unsigned cols, unsigned rows_left, double t)
{
	unsigned lo = app->app->range_lo, size = app->app->range_hi - lo + 1u;
	unsigned width = cols > 12 ? cols - 4 : 8;
	unsigned rows = rows_left < 3 ? 1 : rows_left - 2 > MAX_ROWS ? MAX_ROWS : rows_left - 2;
	unsigned cells = size < width * rows ? size : width * rows;
	unsigned per = (size + cells - 1) / cells;
	char rate[64] = "assign/s -, failures -", eta[48] = "no trend";

	cells = (size + per - 1) / per;
	/* rates from the counters, trend from the ports held */
	size_t slot = h->count % TREND;
	h->when[slot] = t;
	h->held[slot] = app->distinct_ports;
	if (app->counters_known) {
		if (h->counted && h->count) {
			double dt = t - h->when[(h->count - 1) % TREND];
			snprintf(rate, sizeof(rate), "assign/s %.1f, failures %llu (+%llu)",
				 dt > 0 ? (double)(app->assignments - h->assignments) / dt : 0.0, app->failures,
				 app->failures - h->failures);
		}
		h->assignments = app->assignments;
		h->failures = app->failures;
		h->counted = true;
	}
	h->count++;
	if (h->count > 1) {
		size_t oldest = h->count > TREND ? h->count % TREND : 0;
		double dt = t - h->when[oldest];
		double slope = dt > 0 ? ((double)app->distinct_ports - h->held[oldest]) / dt : 0;
		if (app->distinct_ports >= size)
			snprintf(eta, sizeof(eta), "EXHAUSTED");
		else if (slope > 0)
			snprintf(eta, sizeof(eta), "full in %.0f s", (size - app->distinct_ports) / slope);
		else
			snprintf(eta, sizeof(eta), "not filling");
	}
	unsigned lines = 1 + (cells + width - 1) / width + (per > 1);
	fprintf(out, "\033[1m%s\033[0m %u-%u: in use %lu, held %u/%u (%.1f%%), intruders %lu, %s, %s\033[K\r\n",
	       app->app->name, lo, app->app->range_hi, app->in_use, app->distinct_ports, size,
	       100.0 * app->distinct_ports / size, app->intruder_sockets, rate, eta);
	for (unsigned c = 0; c < cells; c++) {
		if (c % width == 0)
			fputs("  ", out);
		uint8_t worst = PORT_FREE;
		for (unsigned p = lo + c * per; p < lo + (c + 1) * per && p <= app->app->range_hi; p++)
			if (st->port_state[p] > worst)
				worst = st->port_state[p];
		fputs(glyph(worst), out);
		if (c % width == width - 1 || c == cells - 1)
			fputs("\033[K\r\n", out);
	}
	if (per > 1)
		fprintf(out, "  (each cell %u ports)\033[K\r\n", per);
	return lines;
}

/* What the screen shows: the last frame, and the size it was drawn for. */
struct shown {
	char *frame;
	unsigned cols, rows;
};

/* The line of frame that starts at *at ("...\r\n"), its length without
 * the "\r\n"; *at moves past it.  0 and NULL at the end. */
static const char *next_line(const char *frame, size_t *at, size_t *len)
{
	if (!frame || !frame[*at])
		return NULL;
	const char *line = frame + *at, *end = strstr(line, "\r\n");
	*len = end ? (size_t)(end - line) : strlen(line);
	*at += *len + (end ? 2 : 0);
	return line;
}

/* Draws frame (lines ending "\033[K\r\n") over the last one: only the
 * lines that changed are written, each at its row; the rows the last
 * frame used beyond this one are cleared.  A new terminal size redraws
 * all.  frame becomes the shown one. */
static void show_frame(struct shown *shown, char *frame, unsigned cols, unsigned rows)
{
	bool all = !shown->frame || cols != shown->cols || rows != shown->rows;
	size_t at = 0, old_at = 0, len, old_len = 0;
	const char *line, *old = NULL;
	unsigned row = 1;

	if (all)
		fputs("\033[H\033[2J", stdout);
	for (; (line = next_line(frame, &at, &len)); row++) {
		old = all ? NULL : next_line(shown->frame, &old_at, &old_len);
		if (all || !old || old_len != len || memcmp(old, line, len) != 0)
			printf("\033[%u;1H%.*s", row, (int)len, line);
	}
	while (!all && next_line(shown->frame, &old_at, &old_len))
		printf("\033[%u;1H\033[K", row++);
	free(shown->frame);
	*shown = (struct shown){frame, cols, rows};
}

static void terminal_size(unsigned *cols, unsigned *rows)
{
	struct winsize ws;
	*cols = 80;
	*rows = 24;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
		*cols = ws.ws_col;
		*rows = ws.ws_row;
	}
}

/* One frame of the view: the header, then each app's rows in its share
 * of the terminal (draw_app): a string the caller frees, or NULL. */
static char *compose_frame(const struct status *st, const struct pf_policy *policy, struct history *histories,
			   unsigned cols, unsigned rows, double t)
{
	char *frame = NULL, clock[16];
	size_t frame_len = 0;
	FILE *out = open_memstream(&frame, &frame_len);
	time_t wall = time(NULL);
	struct tm tm;

	if (!out)
		return NULL;
	localtime_r(&wall, &tm);
	strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
	fprintf(out, "portfence status --watch  %s  (q quits)  . free  \033[32m#\033[0m established  "
		     "\033[33m~\033[0m time-wait  L listen  o other  \033[1;31m!\033[0m intruder\033[K\r\n",
		clock);
	if (st->warning[0])
		fprintf(out, "%.*s\033[K\r\n", (int)strcspn(st->warning, "\n"), st->warning);
	unsigned used = st->warning[0] ? 2 : 1;
	for (size_t i = 0; i < st->app_count && used + 2 <= rows; i++) {
		size_t index = (size_t)(st->apps[i].app - policy->apps);
		used += draw_app(out, st, &st->apps[i], &histories[index], cols,
				 (rows - used) / (unsigned)(st->app_count - i), t);
	}
	fclose(out);
	return frame;
}

/* Until a second after t, or a key: 'q' sets stop.  At the end of a
 * non-terminal input, *input goes false: only signals stop it then. */
static void wait_tick(double t, bool tty, bool *input)
{
	for (double left = 1.0 - (now_s() - t); !stop && left > 0; left = 1.0 - (now_s() - t)) {
		struct pollfd in = {.fd = *input ? STDIN_FILENO : -1, .events = POLLIN};
		if (poll(&in, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		char key;
		ssize_t n = read(STDIN_FILENO, &key, 1);
		if (n == 0 && !tty)
			*input = false;
		else if (n == 1 && (key == 'q' || key == 'Q'))
			stop = 1;
	}
}

/* Keys as they are typed, unechoed, for a terminal on stdin. */
static void keys_raw(const struct termios *saved)
{
	struct termios raw = *saved;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 0;
	raw.c_cc[VTIME] = 0;
	tcsetattr(STDIN_FILENO, TCSANOW, &raw);
}

int status_watch(const char *path, const char *only)
{
	struct pf_policy policy;
	struct termios saved;
	bool tty = tcgetattr(STDIN_FILENO, &saved) == 0, input = true;
	struct proc_cache cache = {0};
	struct shown shown = {0};
	int rc = 0;

	if (cli_load_policy(path, &policy) < 0)
		return 1;
	struct history *histories = calloc(policy.app_count + 1, sizeof(*histories));
	struct status *st = calloc(1, sizeof(*st));
	if (!histories || !st) {
		free(histories);
		free(st);
		pf_policy_free(&policy);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (tty)
		keys_raw(&saved);
	fputs("\033[?1049h\033[?25l", stdout);
	for (unsigned round = 0, since_pass = 0; !stop; round++, since_pass++) {
		double t = now_s();
		unsigned cols, rows;
		memset(st, 0, sizeof(*st));
		st->quiet = true;
		st->cache = &cache;
		st->use_cache = round > 0 && since_pass < REREAD_EVERY &&
				(since_pass < FULL_PASS_EVERY || cache.unknown == 0);
		if (!st->use_cache)
			since_pass = 0;
		/* cmd_status swept before the first round; a pass over /proc
		 * after it sweeps again, for a daemon or run that died since. */
		if (!st->use_cache && round > 0)
			pf_bpf_sweep_leftovers();
		if ((rc = status_gather(st, &policy, only, path)) != 0) {
			status_free(st);
			break;
		}
		terminal_size(&cols, &rows);
		char *frame = compose_frame(st, &policy, histories, cols, rows, t);
		status_free(st);
		if (!frame) {
			rc = 1;
			break;
		}
		show_frame(&shown, frame, cols, rows);
		fflush(stdout);
		wait_tick(t, tty, &input);
	}
	fputs("\033[?25h\033[?1049l", stdout);
	fflush(stdout);
	if (tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	status_cache_free(&cache);
	free(shown.frame);
	free(histories);
	free(st);
	pf_policy_free(&policy);
	return rc;
}
