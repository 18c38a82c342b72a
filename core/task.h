/*
 * task.h - what a task sees of the attempt that runs it, and the plain task
 * table. The public side (au_task_complete, au_task_fail, ...) is declared
 * in au.h; this is the side a runner fills in.
 *
 * A runner (the worker, or a test driving one task) embeds a struct
 * au_task_ctx in its own per-attempt state, sets ops to its table of
 * callbacks and fills base, ch and query_id. Tasks only call the au_task_*
 * functions (core/task.c), so they know nothing of who runs them: this is
 * what lets tasks/ sit below worker/.
 */
#ifndef AU_TASK_H
#define AU_TASK_H

#include <stddef.h>

#include "au.h"

struct au_task_ops {
	/* The task's outcome, at most once per attempt; the runner decides
	 * what a call after the attempt was abandoned means. result is
	 * borrowed for the call. */
	void (*complete)(struct au_task_ctx *ctx, const unsigned char *result, size_t len);
	void (*fail)(struct au_task_ctx *ctx, int kind, const char *msg);   /* enum au_fail_kind */
	/* au_task_offload, as au.h says; NULL: the runner has no pool (-1) */
	int (*offload)(struct au_task_ctx *ctx, void (*work)(void *arg),
		       void (*done)(struct au_task_ctx *ctx, void *arg), void *arg);
};

struct au_task_ctx {
	const struct au_task_ops *ops;
	struct event_base *base;           /* the loop the task runs on */
	struct au_clickhouse *ch;          /* NULL when none is configured */
	char query_id[AU_QUERY_ID_SIZE];   /* "[<trace id>:]<id>-<attempt>" */
	void (*cancel_fn)(void *arg);      /* set by au_task_on_cancel */
	void *cancel_arg;
	uint64_t ch_read_rows;             /* what the attempt's ClickHouse queries read, */
	uint64_t ch_read_bytes;            /* summed (au_task_ch_read) */
};

/* Adds what one ClickHouse query of the attempt read (its statistics). */
void au_task_ch_read(struct au_task_ctx *ctx, uint64_t rows, uint64_t bytes);

/* Finds a task by name; 0 and fills fn/arg, or -1. */
int au_registry_find(const struct au_registry *reg, const char *name, au_task_fn *fn,
		     void **arg);
/* How many tasks reg holds, and the name of the i-th (0 <= i < count), in
 * the order they were first added; the name is reg's. */
size_t au_registry_count(const struct au_registry *reg);
const char *au_registry_name(const struct au_registry *reg, size_t i);

#endif
