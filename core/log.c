/* log.c - leveled log lines on stderr: "au: <level>: <message>". */
#include <stdarg.h>
#include <stdio.h>

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

void au_log(enum au_loglevel lvl, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warning", "error" };
	va_list ap;

	if (lvl < log_level || lvl >= AU_LOG_QUIET)
		return;
	flockfile(stderr);   /* one line, whole, when threads log at once */
	fprintf(stderr, "au: %s: ", names[lvl]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}
