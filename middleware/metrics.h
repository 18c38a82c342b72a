/*
 * metrics.h - what the worker and the `au` command see of the metrics
 * middleware (middleware/metrics.c) beyond include/au.h: its figures as
 * the opaque blob a worker's beat carries (backends/queue.h,
 * au_worker_beat.metrics), and the bucket bounds they are counted in.
 *
 * The blob is one msgpack map (at most AU_METRICS_BLOB_MAX bytes):
 *   {"v":1, "le_us":[5000, 10000, ...],           bucket upper bounds, us
 *    "s":[[task, queue, started, completed, failed, retried, dead,
 *          cancelled, in_flight, ch_rows, ch_bytes, enqueued,
 *          [run buckets...], run_sum_us, [wait buckets...], wait_sum_us], ...],
 *    "dropped": N}                                 series left out for room
 * Buckets are not cumulative in the blob (each counts its own interval,
 * the last one everything above the last bound).
 */
#ifndef AU_METRICS_H
#define AU_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "au.h"

#define AU_METRICS_BLOB_MAX 8192
#define AU_METRICS_NBOUNDS 15       /* finite bounds; one more bucket for +Inf */

/* The bucket upper bounds, in microseconds, ascending. */
extern const uint64_t au_metrics_bounds_us[AU_METRICS_NBOUNDS];

/* Writes the figures of ctx (an au_metrics_new context) as the blob into
 * out (size bytes); returns its length, 0 when there is nothing or no
 * room. Runs on the worker's loop. */
size_t au_metrics_blob(void *ctx, unsigned char *out, size_t size);

/* Where the worker's own counters come from (au_worker_use sets it for a
 * worker that uses au_metrics_middleware). */
void au_metrics_stats_source(void *ctx, void (*fn)(void *arg, struct au_worker_stats *st),
			     void *arg);

/* As au_metrics_listen, but an address in use is no error: it is tried
 * again every second until it is free (a fleet's child that replaces one
 * still draining on the same port). */
int au_metrics_listen_wait(void *ctx, struct event_base *base, const char *addr,
			   struct au_err *err);

/* 0 if a listening socket can be bound at addr ("HOST:PORT") now, else -1
 * with err as au_metrics_listen says it. port_offset is added to PORT. */
int au_metrics_probe(const char *addr, int port_offset, struct au_err *err);
/* addr with port_offset added to its PORT, into out; -1 (err) if addr is
 * not HOST:PORT or the sum is over 65535. */
int au_metrics_addr_offset(const char *addr, int port_offset, char *out, size_t size,
			   struct au_err *err);

#endif
