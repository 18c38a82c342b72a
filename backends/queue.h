/*
 * queue.h - the queue plug point. A backend is one file that fills one
 * `struct au_queue_ops` and one line in backends/registry.c.
 *
 * Every operation takes batches; every write of an attempt presents the lease
 * token it was given (fencing): a stale token changes nothing and is reported
 * per item through `applied[i] = 0`. Times come from the server's clock where
 * the server has one. All operations return 0 or -1 with q->err set; -1 means
 * the operation as a whole failed (server down, bad reply) and nothing is
 * known to have been applied.
 */
#ifndef AU_QUEUE_H
#define AU_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

struct event_base;

/* Identifies one attempt of one computation. */
struct au_ref {
	char id[AU_ID_SIZE];
	char token[AU_TOKEN_SIZE];
};

/* One leased computation. body is the stored message, malloc'ed. */
struct au_lease {
	struct au_ref ref;
	uint32_t attempts;          /* including this one */
	unsigned char *body;
	size_t body_len;
};
void au_lease_release(struct au_lease *l);

struct au_queue_stats {
	uint64_t ready, scheduled, leased, dead;
};

enum au_job_state {
	AU_JOB_READY = 1,      /* waiting to run (first time or retry) */
	AU_JOB_SCHEDULED,      /* waiting for run_at or a retry delay */
	AU_JOB_LEASED,         /* running */
	AU_JOB_DEAD            /* buried */
};

/* What the queue knows about one computation (peek). */
struct au_job_info {
	enum au_job_state state;
	uint32_t attempts;
	uint32_t max_attempts;
	char error[AU_ERRSTR_SIZE];  /* last error or bury reason, "" if none */
};

struct au_queue;

/* Called on the loop when computations may have arrived on the queue. */
typedef void (*au_queue_wake_fn)(void *arg);

struct au_queue_ops {
	const char *scheme;

	int (*open)(struct au_queue *q, const struct au_url *url);
	void (*close)(struct au_queue *q);

	/* Adds n computations (each c->queue names its queue); c->run_at_ms in
	 * the future makes it scheduled. All or nothing. */
	int (*push)(struct au_queue *q, const struct au_computation *cs, size_t n);

	/* Leases up to max ready computations of queue (due scheduled ones
	 * first become ready), ordered by priority (high first) then FIFO.
	 * Each lease runs out lease_ms from now unless extended. When none is
	 * ready, waits up to block_ms for one to arrive (no busy polling).
	 * *n gets the number leased into out[0..max). */
	int (*lease)(struct au_queue *q, const char *queue, size_t max, uint32_t lease_ms,
		     uint32_t block_ms, struct au_lease *out, size_t *n);

	/* Done: removes the computations. */
	int (*ack)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		   size_t n, int *applied);
	/* Back to the queue after delay_ms[i] (0 = ready now); error[i] (may be
	 * NULL) is kept as the last error. The attempt counts. */
	int (*retry)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		     size_t n, const uint64_t *delay_ms, const char *const *error,
		     int *applied);
	/* Like retry, but the attempt does not count (graceful shutdown). */
	int (*release)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		       size_t n, int *applied);
	/* To the dead letter set, with a reason each. */
	int (*bury)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		    size_t n, const char *const *reason, int *applied);
	/* Pushes the lease deadline to now + lease_ms. */
	int (*extend)(struct au_queue *q, const char *queue, const struct au_ref *refs,
		      size_t n, uint32_t lease_ms, int *applied);
	/* Expired leases go back to ready, or to dead letter when their attempts
	 * reached max_attempts. At most max per call. */
	int (*rescue)(struct au_queue *q, const char *queue, size_t max,
		      size_t *requeued, size_t *buried);
	/* Removes a ready or scheduled computation so it never runs. -1 with
	 * AU_ESTATE when it is leased, AU_ENOTFOUND when the queue has no
	 * such id waiting. */
	int (*cancel)(struct au_queue *q, const char *queue, const char *id);
	/* State of one computation; -1 with AU_ENOTFOUND if unknown. */
	int (*peek)(struct au_queue *q, const char *queue, const char *id,
		    struct au_job_info *info);
	int (*stats)(struct au_queue *q, const char *queue, struct au_queue_stats *st);
	/* Names of known queues (malloc'ed array of malloc'ed strings). */
	int (*queues)(struct au_queue *q, char ***names, size_t *n);

	/* Calls fn(arg) on base when computations may have arrived in queue.
	 * One watch per queue handle. NULL if the backend cannot (the worker
	 * then polls). */
	int (*watch)(struct au_queue *q, const char *queue, struct event_base *base,
		     au_queue_wake_fn fn, void *arg);
	void (*unwatch)(struct au_queue *q);
};

struct au_queue {
	const struct au_queue_ops *ops;
	void *ctx;                  /* the backend's state */
	struct au_url url;
	struct au_err err;
};

/* Opens the backend named by the URL's scheme (backends/registry.c).
 * NULL only on OOM; check q->err.code. */
struct au_queue *au_queue_open(const char *url);
void au_queue_close(struct au_queue *q);
/* The table of backends, NULL-terminated. */
extern const struct au_queue_ops *const au_queue_backends[];

/* Fresh lease token for an attempt. */
void au_token_new(char out[AU_TOKEN_SIZE], uint32_t attempt);

#endif
