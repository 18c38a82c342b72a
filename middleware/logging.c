/*
 * logging.c - the built-in logging middleware: one line per finished attempt
 * on stderr (ctx may be a FILE * to log elsewhere).
 *
 *   au: 9f2c...e1 ch.query queue=default attempt=1/3 completed 3.2ms worker=host:123
 */
#include <stdio.h>

#include "core.h"
#include "middleware.h"

static void log_line(void *ctx, struct au_run *run)
{
	FILE *out = ctx ? ctx : stderr;
	double ms = (double)(run->finished_at_us - run->started_at_us) / 1000.0;

	fprintf(out, "au: %s %s queue=%s attempt=%u/%u %s %.1fms worker=%s%s%s\n",
		run->c->id, run->c->task ? run->c->task : "?",
		run->c->queue ? run->c->queue : "?", run->c->attempts, run->c->max_attempts,
		au_status_name(run->status), ms, run->worker, run->error ? ": " : "",
		run->error ? run->error : "");
}

const struct au_middleware_ops au_logging_middleware = {
	.name = "logging",
	.after = log_line,
	.on_error = log_line,
};
