/*
 * tracing.c - the built-in tracing middleware: every computation a client
 * enqueues carries a W3C traceparent header (docs/wire-format.md,
 * "Tracing"): the caller's when it gives a valid one (a header of its own,
 * or AU_TRACEPARENT in the environment of the au command), a new trace
 * otherwise. Workers log it with every event of the computation and put
 * its trace id first in the ClickHouse query_id ("<trace id>:<id>-<n>"),
 * and in log_comment where the server keeps one (21.1 and later), so that
 * one trace id finds the computation in au's logs and in
 * system.query_log.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "middleware.h"

static int on_enqueue(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	const char *given = au_computation_header(e->c, "traceparent");
	char trace[AU_ID_SIZE], tp[AU_TRACEPARENT_SIZE];

	(void)ctx;
	if (given && au_traceparent_trace_id(given, trace) == 0)
		return AU_HOOK_OK;
	/* none, or one that is not a traceparent: a trace starts here */
	au_traceparent_new(tp);
	if (au_computation_set_header(e->c, "traceparent", tp) < 0) {
		snprintf(errbuf, errlen, "out of memory, or the computation has 32 headers already");
		return AU_HOOK_ERROR;
	}
	return AU_HOOK_OK;
}

const struct au_middleware_ops au_tracing_middleware = {
	.name = "tracing",
	.before_enqueue = on_enqueue,
};
