/*
 * pool.h - a worker's few threads for blocking user code (au_task_offload
 * in include/au.h). Jobs go in from the loop, run on a free thread, and
 * come back to the loop through an eventfd, where their done callback runs.
 * Everything here but the threads' part runs on the loop's thread.
 */
#ifndef AU_POOL_H
#define AU_POOL_H

#include "au.h"

struct event_base;
struct au_pool;

/* Starts n threads (at least 1) whose results come back on base. NULL
 * when out of memory or when no thread could start. */
struct au_pool *au_pool_new(struct event_base *base, unsigned n);

/* au_task_offload for ctx: takes over ctx's cancel hook until done runs
 * (see au.h). 0, or -1 when out of memory (done is then never called). */
int au_pool_offload(struct au_pool *pool, struct au_task_ctx *ctx, void (*work)(void *arg),
		    void (*done)(struct au_task_ctx *ctx, void *arg), void *arg);

/* Jobs handed over and not yet delivered. */
size_t au_pool_pending(const struct au_pool *pool);

/* Waits for the work running now, stops the threads, and calls done(NULL,
 * arg) for every job not delivered (their attempts are gone by then).
 * NULL does nothing. */
void au_pool_free(struct au_pool *pool);

#endif
