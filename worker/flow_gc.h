/*
 * flow_gc.h - what a flow leaves behind goes after its TTL: its temporary
 * and per-flow ClickHouse tables and its description (kv "flow"). Workers
 * run it from their housekeeping, one at a time across the fleet (a kv
 * lock), every AU_FLOW_GC_EVERY_MS; blocking: on the I/O thread.
 */
#ifndef AU_WORKER_FLOW_GC_H
#define AU_WORKER_FLOW_GC_H

#include <stddef.h>

#include "core.h"
#include "queue.h"
#include "store.h"

struct au_clickhouse;

#define AU_FLOW_GC_EVERY_MS 30000u  /* AU_FLOW_GC_MS overrides it (tests) */
#define AU_FLOW_GC_LOCK_MS 60000u
#define AU_FLOW_GC_MAX 10000u       /* flows looked at per round */

struct au_flow_gc_stats {
	size_t flows;               /* descriptions looked at */
	size_t finished;            /* found finished this round: their ttl runs */
	size_t expired;             /* past their ttl: removed */
	size_t tables;              /* ClickHouse tables dropped */
};

/* One round; ch NULL drops no table. -1 with err when a server failed
 * (what was not done is done next round). */
int au_flow_gc(struct au_queue *q, struct au_store *s, struct au_clickhouse *ch,
	       const char *holder, struct au_flow_gc_stats *st, struct au_err *err);
/* Drops the tables t_<flow>_* and f_<flow>_* of the current database. */
int au_flow_drop_tables(struct au_clickhouse *ch, const char *flow, size_t *dropped,
			struct au_err *err);

#endif
