/* log.c - leveled log lines on stderr: "au: <level>: <message>". */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "core.h"

static enum au_loglevel log_level = AU_LOG_INFO;

void au_log_set_level(enum au_loglevel lvl)
{
	log_level = lvl;
}

enum au_loglevel au_log_level(void)
{
	return log_level;
}

/* A line goes out in one write(2): stderr is unbuffered, and the worker
 * processes of a fleet share it, so a line written piece by piece would
 * interleave with theirs. */
void au_log(enum au_loglevel lvl, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warning", "error" };
	char line[2048];
	va_list ap;
	int n, m;

	if (lvl < log_level || lvl >= AU_LOG_QUIET)
		return;
	n = snprintf(line, sizeof(line), "au: %s: ", names[lvl]);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m < (int)(sizeof(line) - (size_t)n - 1) ? m : (int)(sizeof(line) - (size_t)n - 2);
	line[n++] = '\n';
	flockfile(stderr);   /* and whole, when threads log at once */
	fflush(stderr);
	if (write(2, line, (size_t)n) < 0)
		n = 0;
	funlockfile(stderr);
}
