/*
 * task.c - the calls a task makes on its attempt, forwarded to whoever runs
 * it (core/task.h).
 */
#include <stdarg.h>
#include <stdio.h>

#include "task.h"

void au_task_complete(struct au_task_ctx *ctx, const unsigned char *result, size_t len)
{
	ctx->ops->complete(ctx, result, len);
}

void au_task_fail(struct au_task_ctx *ctx, int kind, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctx->ops->fail(ctx, kind, msg);
}

struct au_clickhouse *au_task_clickhouse(struct au_task_ctx *ctx)
{
	return ctx->ch;
}

struct event_base *au_task_base(struct au_task_ctx *ctx)
{
	return ctx->base;
}

const char *au_task_query_id(struct au_task_ctx *ctx)
{
	return ctx->query_id;
}

void au_task_on_cancel(struct au_task_ctx *ctx, void (*fn)(void *arg), void *arg)
{
	ctx->cancel_fn = fn;
	ctx->cancel_arg = arg;
}

int au_task_offload(struct au_task_ctx *ctx, void (*work)(void *arg),
		    void (*done)(struct au_task_ctx *ctx, void *arg), void *arg)
{
	return ctx->ops->offload ? ctx->ops->offload(ctx, work, done, arg) : -1;
}

void au_task_ch_read(struct au_task_ctx *ctx, uint64_t rows, uint64_t bytes)
{
	if (ctx) {
		ctx->ch_read_rows += rows;
		ctx->ch_read_bytes += bytes;
	}
}
