/*
 * worker.c - the worker: one libevent loop leasing computations in batches,
 * running each attempt through the middleware chain, writing outcomes to the
 * store and then telling the queue, extending leases while attempts run,
 * rescuing expired leases of crashed workers, stopping gracefully.
 *
 * One attempt moves through three states, each a list of the worker:
 *
 *   running ──decide()──▶ decided ──flush()──▶ freed
 *                                       └────▶ zombie ──task calls back──▶ freed
 *
 * decide() is the one place an outcome becomes a disposition (ack, retry,
 * bury, release); complete, fail, timeout, reject and the end of the grace
 * period all go through it, and it runs the after/on_error hooks. flush()
 * writes the records of decided attempts in one store call, then tells the
 * queue in one call per disposition. A record that cannot be stored turns
 * its attempt into a retry or a dead letter, and the on_error hooks hear of
 * that second outcome too (include/au.h, struct au_run). The result is written
 * before the ack, so a crash between the two re-runs the computation but
 * never loses its result (the store keeps the first). A zombie timed out
 * while its task, which has no cancel hook, still runs: it holds its slot
 * until the task calls back.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clickhouse.h"
#include "core.h"
#include "middleware.h"
#include "queue.h"
#include "store.h"
#include "task.h"
#include "tasks.h"

/* Housekeeping, on the loop's timers. */
#define RESCUE_EVERY_MS 1000      /* expired leases back to the queue */
#define RESCUE_MAX 1000           /* per rescue pass */
#define SWEEP_EVERY_MS 60000      /* expired records out of stores without native expiry */
#define SWEEP_MAX 10000           /* per sweep */
#define UNWATCHED_POLL_MS 50      /* a queue that cannot wake the worker is polled */
#define DRAIN_MAX_MS 2000         /* at exit, for ClickHouse requests still under way */

enum attempt_state {
	ATTEMPT_RUNNING,    /* the task has not reported; holds a slot */
	ATTEMPT_DECIDED,    /* outcome known, waiting for flush() */
	ATTEMPT_ZOMBIE,     /* written back, the task still runs; holds a slot */
	ATTEMPT_NSTATES
};

/* What the queue is told of a decided attempt. */
enum disposition {
	DISPOSE_ACK,        /* done: completed, or failed for good */
	DISPOSE_RETRY,      /* again after a delay; the attempt counts */
	DISPOSE_BURY,       /* to the dead letter set with the error as reason */
	DISPOSE_RELEASE,    /* back unharmed; the attempt does not count */
	DISPOSE_N
};

/* What an attempt came to, as decide() is told it. */
enum verdict {
	VERDICT_COMPLETED,  /* the task's result */
	VERDICT_FAILED,     /* the computation's own permanent error */
	VERDICT_RETRYABLE,  /* may succeed again: retried while attempts remain */
	VERDICT_REJECTED,   /* cannot run at all: malformed, unknown task */
	VERDICT_RELEASED,   /* the worker lets go (grace over) */
};

struct attempt {
	struct au_task_ctx task;      /* first: what the task holds */
	struct au_worker *w;
	enum attempt_state state;
	enum disposition disposition; /* set by decide() */
	int task_busy;                /* the task has neither called back nor been cancelled */
	int lost;                     /* the lease was taken over (extend refused) */
	struct au_lease lease;
	struct au_computation c;
	struct au_run run;
	uint64_t started_at_ms;
	struct event *timer;          /* the computation's timeout */
	uint64_t retry_delay_ms;
	unsigned char *result;
	size_t result_len;
	char *error;
	struct attempt *prev, *next;
};

struct attempt_list {
	struct attempt *head;
	size_t n;
};

/*
 * Scratch space of flush() and the heartbeat, sized once for `cap`
 * attempts: flush() writes back at most cap attempts per round, and no more
 * than the concurrency run at once.
 */
struct scratch {
	size_t cap;
	struct attempt **attempts;
	struct au_record *recs;
	struct au_ref *refs[DISPOSE_N];
	uint64_t *delays;
	const char **errors;          /* of retries */
	const char **reasons;         /* of buries */
	int *applied;
};

struct au_worker {
	struct event_base *base;
	struct au_worker_opts opts;
	char *queue_name;
	struct au_queue *q;
	struct au_store *store;
	struct au_clickhouse *ch;
	struct au_registry *reg;       /* the caller's tasks, may be NULL */
	struct au_registry *builtins;
	struct au_chain chain;
	struct au_err err;

	struct attempt_list lists[ATTEMPT_NSTATES];
	struct au_lease *leases;
	struct scratch scratch;

	struct event *pump_ev, *flush_ev, *poll_ev, *extend_ev, *rescue_ev, *grace_ev, *drain_ev;
	uint64_t drain_deadline_us;
	int watching;
	int stopping;
	int exited;
	uint64_t last_active_us;       /* monotonic: last lease or decision */
	uint64_t last_sweep_ms;
	char last_error[AU_ERRSTR_SIZE];
	uint64_t last_report_us;
	unsigned cb_depth;             /* callbacks of ours under way (they nest) */
	struct au_worker_stats stats;
};

static const struct au_task_ops attempt_task_ops;

static void pump_cb(evutil_socket_t fd, short what, void *arg);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void poll_cb(evutil_socket_t fd, short what, void *arg);
static void extend_cb(evutil_socket_t fd, short what, void *arg);
static void rescue_cb(evutil_socket_t fd, short what, void *arg);
static void drain_cb(evutil_socket_t fd, short what, void *arg);
static void grace_cb(evutil_socket_t fd, short what, void *arg);

/* Times the loop's calls of the worker's callbacks into stats.loop_hist:
 * the outermost one only, when one calls another. */
static uint64_t cb_enter(struct au_worker *w)
{
	return w->cb_depth++ ? 0 : au_mono_us();
}

static void cb_leave(struct au_worker *w, uint64_t t0)
{
	uint64_t d;
	unsigned k = 0;

	if (--w->cb_depth || !t0)
		return;
	d = au_mono_us() - t0;
	while (d >> k && k < AU_LOOP_HIST_BUCKETS - 1)
		k++;
	w->stats.loop_hist[k]++;
	if (d > w->stats.loop_max_us)
		w->stats.loop_max_us = d;
}

static void list_add(struct attempt_list *l, struct attempt *a)
{
	a->prev = NULL;
	a->next = l->head;
	if (l->head)
		l->head->prev = a;
	l->head = a;
	l->n++;
}

static void list_del(struct attempt_list *l, struct attempt *a)
{
	if (a->prev)
		a->prev->next = a->next;
	else
		l->head = a->next;
	if (a->next)
		a->next->prev = a->prev;
	a->prev = a->next = NULL;
	l->n--;
}

static void set_state(struct attempt *a, enum attempt_state st)
{
	list_del(&a->w->lists[a->state], a);
	a->state = st;
	list_add(&a->w->lists[st], a);
}

static size_t count(const struct au_worker *w, enum attempt_state st)
{
	return w->lists[st].n;
}

/* Attempts not yet written back. */
static size_t inflight(const struct au_worker *w)
{
	return count(w, ATTEMPT_RUNNING) + count(w, ATTEMPT_DECIDED);
}

/* Slots taken: decided attempts waiting for flush() hold none; zombies do. */
static size_t busy(const struct au_worker *w)
{
	return count(w, ATTEMPT_RUNNING) + count(w, ATTEMPT_ZOMBIE);
}

/* Logs a failing server operation: a new message at most once a second,
 * the same one again every 10 s, so an outage does not flood the log. */
static void report(struct au_worker *w, const struct au_err *err)
{
	uint64_t now = au_mono_us();
	int same = strcmp(w->last_error, err->str) == 0;

	if (now - w->last_report_us < (same ? 10000000u : 1000000u))
		return;
	w->last_report_us = now;
	au_log(AU_LOG_ERROR, "%s", err->str);
	snprintf(w->last_error, sizeof(w->last_error), "%s", err->str);
}

static void recovered(struct au_worker *w)
{
	if (w->last_error[0]) {
		au_log(AU_LOG_INFO, "recovered after: %s", w->last_error);
		w->last_error[0] = '\0';
	}
}

static void attempt_free(struct attempt *a)
{
	list_del(&a->w->lists[a->state], a);
	if (a->timer)
		event_free(a->timer);
	au_lease_release(&a->lease);
	au_computation_release(&a->c);
	free(a->result);
	free(a->error);
	free(a);
}

static uint64_t retry_delay(const struct au_worker *w, uint32_t attempt)
{
	uint64_t d = w->opts.retry_base_ms;
	uint32_t i;

	for (i = 1; i < attempt && d < w->opts.retry_max_ms; i++)
		d *= 2;
	/* +-20% jitter so that a burst of failures does not retry in step */
	d = d - d / 5 + (d ? au_random64() % (2 * (d / 5) + 1) : 0);
	return d > w->opts.retry_max_ms ? w->opts.retry_max_ms : d;
}

/* The after (completed) or on_error hooks, with the outcome as it stands. */
static void run_hooks(struct au_worker *w, struct attempt *a)
{
	a->run.result = a->run.status == AU_COMPLETED ? a->result : NULL;
	a->run.result_len = a->run.status == AU_COMPLETED ? a->result_len : 0;
	a->run.error = a->error;
	au_chain_finish(&w->chain, &a->run);
}

/*
 * Settles a running attempt: what the queue will be told and what the
 * record will say. Takes error (may be NULL). A settled attempt stays
 * settled: a second decision (a task calling back after its timeout) is
 * dropped.
 */
static void decide(struct attempt *a, enum verdict v, char *error)
{
	struct au_worker *w = a->w;
	enum au_status status = AU_FAILED;

	if (a->state != ATTEMPT_RUNNING) {
		free(error);
		return;
	}
	free(a->error);
	a->error = error;
	/* errors quote what a task or a server said: make them text that
	 * every client can read */
	au_utf8_scrub(a->error);
	if (a->timer)
		evtimer_del(a->timer);
	a->run.finished_at_us = au_mono_us();
	w->last_active_us = a->run.finished_at_us;
	switch (v) {
	case VERDICT_COMPLETED:
		a->disposition = DISPOSE_ACK;
		status = AU_COMPLETED;
		w->stats.completed++;
		break;
	case VERDICT_FAILED:
		a->disposition = DISPOSE_ACK;
		w->stats.failed++;
		break;
	case VERDICT_RETRYABLE:
		if (a->lease.attempts < a->c.max_attempts) {
			a->disposition = DISPOSE_RETRY;
			a->retry_delay_ms = retry_delay(w, a->lease.attempts);
			status = AU_RETRYING;
			w->stats.retried++;
		} else {
			char *e = au_asprintf("failed after %u attempts: %s", a->lease.attempts,
					      a->error ? a->error : "");

			if (e) {
				free(a->error);
				a->error = e;
			}
			a->disposition = DISPOSE_BURY;
			w->stats.failed++;
		}
		break;
	case VERDICT_REJECTED:
		a->disposition = DISPOSE_BURY;
		w->stats.failed++;
		break;
	case VERDICT_RELEASED:
		a->disposition = DISPOSE_RELEASE;
		status = AU_RUNNING;   /* no outcome: another attempt will have one */
		w->stats.released++;
		break;
	}
	a->run.status = status;
	if (v != VERDICT_RELEASED)
		run_hooks(w, a);
	set_state(a, ATTEMPT_DECIDED);
	event_active(w->flush_ev, 0, 0);
}

/* Ack and bury are terminal: they leave a record. */
static int writes_record(const struct attempt *a)
{
	return a->disposition == DISPOSE_ACK || a->disposition == DISPOSE_BURY;
}

/* The task called back: 1 if its call still decides the attempt, 0 if the
 * worker gave up on it already (a zombie is then done with). */
static int task_returned(struct attempt *a)
{
	a->task_busy = 0;
	if (a->state == ATTEMPT_RUNNING)
		return 1;
	if (a->state == ATTEMPT_ZOMBIE)
		attempt_free(a);
	return 0;
}

static void attempt_complete(struct au_task_ctx *ctx, const unsigned char *result, size_t len)
{
	struct attempt *a = (struct attempt *)ctx;

	if (!task_returned(a))
		return;
	/* the record around the result needs room too */
	if (len > AU_MAX_RESULT - 4096) {
		decide(a, VERDICT_FAILED, au_asprintf("result too large: %zu bytes (limit %u)", len,
						      AU_MAX_RESULT - 4096));
		return;
	}
	if (!(a->result = malloc(len ? len : 1))) {
		decide(a, VERDICT_RETRYABLE, au_strdup("out of memory"));
		return;
	}
	memcpy(a->result, result, len);
	a->result_len = len;
	decide(a, VERDICT_COMPLETED, NULL);
}

static void attempt_fail(struct au_task_ctx *ctx, int retryable, const char *msg)
{
	struct attempt *a = (struct attempt *)ctx;

	if (task_returned(a))
		decide(a, retryable ? VERDICT_RETRYABLE : VERDICT_FAILED, au_strdup(msg));
}

static const struct au_task_ops attempt_task_ops = {
	.complete = attempt_complete,
	.fail = attempt_fail,
};

/* Tells a still-running task to let go. Without a cancel hook it is
 * waited for, and becomes a zombie once written back. */
static void abandon(struct attempt *a)
{
	if (!a->task_busy || !a->task.cancel_fn)
		return;
	a->task_busy = 0;
	a->task.cancel_fn(a->task.cancel_arg);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct attempt *a = arg;
	struct au_worker *w = a->w;
	uint64_t t0 = cb_enter(w);

	(void)fd;
	(void)what;
	/* decided first, so a cancel hook that calls back at once finds the
	 * attempt settled */
	decide(a, VERDICT_RETRYABLE, au_asprintf("timed out after %u ms", a->c.timeout_ms));
	abandon(a);
	cb_leave(w, t0);
}

static int find_task(const struct au_worker *w, const char *name, au_task_fn *fn, void **arg)
{
	return (w->reg && au_registry_find(w->reg, name, fn, arg) == 0) ||
	       au_registry_find(w->builtins, name, fn, arg) == 0 ? 0 : -1;
}

static void start(struct au_worker *w, struct au_lease *l)
{
	struct attempt *a = calloc(1, sizeof(*a));
	struct au_err err = { 0, "" };
	au_task_fn fn;
	void *arg;
	char errbuf[512];

	if (!a) {
		au_log(AU_LOG_ERROR, "out of memory starting computation '%s'", l->ref.id);
		au_lease_release(l);   /* the lease runs out and another worker takes it */
		return;
	}
	a->w = w;
	a->task.ops = &attempt_task_ops;
	a->task.base = w->base;
	a->task.ch = w->ch;
	a->lease = *l;
	memset(l, 0, sizeof(*l));
	a->run.c = &a->c;
	a->run.worker = au_worker_name();
	a->run.started_at_us = au_mono_us();
	a->run.status = AU_RUNNING;
	a->started_at_ms = au_now_ms();
	a->state = ATTEMPT_RUNNING;
	list_add(&w->lists[ATTEMPT_RUNNING], a);
	w->stats.leased++;
	w->last_active_us = a->run.started_at_us;

	if (au_computation_decode(a->lease.body, a->lease.body_len, &a->c, &err) < 0) {
		au_computation_init(&a->c);
		memcpy(a->c.id, a->lease.ref.id, AU_ID_SIZE);
		a->c.queue = au_strdup(w->queue_name);
		a->c.attempts = a->lease.attempts;
		a->c.ttl_s = AU_DEFAULT_TTL_S;   /* its record must not stay forever */
		decide(a, VERDICT_REJECTED, au_strdup(err.str));
		return;
	}
	a->c.attempts = a->lease.attempts;
	snprintf(a->task.query_id, sizeof(a->task.query_id), "%s-%u", a->c.id, a->lease.attempts);
	if (strcmp(a->c.id, a->lease.ref.id) != 0) {
		decide(a, VERDICT_REJECTED,
		       au_strdup("malformed computation: id does not match the queue's"));
		return;
	}
	if (find_task(w, a->c.task, &fn, &arg) < 0) {
		decide(a, VERDICT_REJECTED, au_asprintf("unknown task '%s'", a->c.task));
		return;
	}
	if (au_chain_before(&w->chain, &a->run, errbuf, sizeof(errbuf)) < 0) {
		decide(a, VERDICT_FAILED, au_strdup(errbuf));
		return;
	}
	if (a->c.timeout_ms) {
		struct timeval tv = { (time_t)(a->c.timeout_ms / 1000),
				      (suseconds_t)(a->c.timeout_ms % 1000) * 1000 };

		a->timer = evtimer_new(w->base, on_timeout, a);
		if (a->timer)
			evtimer_add(a->timer, &tv);
	}
	a->task_busy = 1;
	fn(&a->task, &a->c, arg);
}

static void stop_now(struct au_worker *w);

static void record_of(const struct attempt *a, struct au_record *r)
{
	memset(r, 0, sizeof(*r));
	memcpy(r->id, a->c.id, AU_ID_SIZE);
	r->status = a->run.status;
	r->result = a->result;
	r->result_len = a->result_len;
	r->error = a->error;
	r->task = a->c.task;
	r->queue = a->c.queue;
	r->worker = (char *)a->run.worker;
	r->attempts = a->lease.attempts;
	r->ttl_s = a->c.ttl_s;   /* 0: never expires */
	r->created_at_ms = a->c.created_at_ms;
	r->started_at_ms = a->started_at_ms;
	r->finished_at_ms = a->started_at_ms + (a->run.finished_at_us - a->run.started_at_us) / 1000;
}

/*
 * A batch of records failed to store. Each is tried alone, so one bad record
 * (too large, say) does not hold back the others. An attempt whose record
 * cannot be stored must not be acked: a completed one is tried again while
 * it has attempts left (the store may be down), anything else goes to the
 * dead letter set with the reason.
 */
static void unstored(struct au_worker *w, struct attempt **as, size_t n,
		     const struct au_record *recs)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		struct attempt *a = as[i];
		char *why;

		if (!writes_record(a))
			continue;
		if (au_store_put(w->store, &recs[k++], 1, NULL) == 0)
			continue;
		why = au_asprintf("result not stored: %s", w->store->err.str);
		if (why) {
			free(a->error);
			a->error = why;
		}
		if (a->run.status == AU_COMPLETED && w->store->err.code == AU_ECONN &&
		    a->lease.attempts < a->c.max_attempts) {
			a->disposition = DISPOSE_RETRY;
			a->retry_delay_ms = retry_delay(w, a->lease.attempts);
			a->run.status = AU_RETRYING;
		} else {
			a->disposition = DISPOSE_BURY;
			a->run.status = AU_FAILED;
		}
		run_hooks(w, a);
	}
}

/* Writes back up to scratch.cap decided attempts: records first, then one
 * queue call per disposition. */
static void flush_some(struct au_worker *w)
{
	struct scratch *s = &w->scratch;
	size_t n = 0, nrec = 0, cnt[DISPOSE_N] = { 0 }, i;
	struct attempt *a;
	int rc;

	for (a = w->lists[ATTEMPT_DECIDED].head; a && n < s->cap; a = a->next)
		s->attempts[n++] = a;
	for (i = 0; i < n; i++)
		if (writes_record(s->attempts[i]))
			record_of(s->attempts[i], &s->recs[nrec++]);
	if (nrec && au_store_put(w->store, s->recs, nrec, NULL) < 0) {
		report(w, &w->store->err);
		unstored(w, s->attempts, n, s->recs);
	}

	for (i = 0; i < n; i++) {
		enum disposition d;

		a = s->attempts[i];
		d = a->disposition;
		if (d == DISPOSE_RETRY) {
			s->delays[cnt[d]] = a->retry_delay_ms;
			s->errors[cnt[d]] = a->error;
		} else if (d == DISPOSE_BURY) {
			s->reasons[cnt[d]] = a->error ? a->error : "failed";
			w->stats.buried++;
		}
		s->refs[d][cnt[d]++] = a->lease.ref;
	}
	/* Each call on its own: what fails here runs out its lease and is
	 * rescued, and must not hold back the others. */
	for (i = 0; i < DISPOSE_N; i++) {
		if (!cnt[i])
			continue;
		switch ((enum disposition)i) {
		case DISPOSE_ACK:
			rc = au_queue_ack(w->q, w->queue_name, s->refs[i], cnt[i], s->applied);
			break;
		case DISPOSE_RETRY:
			rc = au_queue_retry(w->q, w->queue_name, s->refs[i], cnt[i], s->delays,
					    s->errors, s->applied);
			break;
		case DISPOSE_BURY:
			rc = au_queue_bury(w->q, w->queue_name, s->refs[i], cnt[i], s->reasons,
					   s->applied);
			break;
		default:
			rc = au_queue_release(w->q, w->queue_name, s->refs[i], cnt[i], s->applied);
			break;
		}
		if (rc < 0)
			report(w, &w->q->err);
	}

	for (i = 0; i < n; i++) {
		a = s->attempts[i];
		if (a->task_busy)
			set_state(a, ATTEMPT_ZOMBIE);
		else
			attempt_free(a);
	}
}

static void flush(struct au_worker *w)
{
	while (count(w, ATTEMPT_DECIDED))
		flush_some(w);
}

static void flush_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;

	(void)fd;
	(void)what;
	/* Lease and start the next computations first, so that their
	 * ClickHouse requests run while this batch's results are written. */
	if (!w->stopping)
		pump_cb(-1, 0, w);
	flush(w);
	if (w->stopping) {
		if (!inflight(w))
			stop_now(w);
		return;
	}
	/* max_jobs counts attempts leased: stop once they are all written back */
	if (w->opts.max_jobs && w->stats.leased >= w->opts.max_jobs && !inflight(w)) {
		au_worker_stop(w);
		return;
	}
	event_active(w->pump_ev, 0, 0);
}

static void pump_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	size_t room, n = 0, i;

	(void)fd;
	(void)what;
	if (w->stopping || busy(w) >= w->opts.concurrency)
		return;
	room = w->opts.concurrency - busy(w);
	if (room > w->opts.batch)
		room = w->opts.batch;
	if (w->opts.max_jobs) {
		uint64_t left = w->opts.max_jobs > w->stats.leased ? w->opts.max_jobs - w->stats.leased : 0;

		if (left < room)
			room = (size_t)left;
		if (!room)
			return;
	}
	if (au_queue_lease(w->q, w->queue_name, room, w->opts.lease_ms, 0, w->leases, &n) < 0) {
		report(w, &w->q->err);
		return;   /* the poll timer tries again */
	}
	recovered(w);
	for (i = 0; i < n; i++)
		start(w, &w->leases[i]);
	/* A full batch means more may be waiting. */
	if (n == room && busy(w) < w->opts.concurrency)
		event_active(w->pump_ev, 0, 0);
}

static void wake_cb(void *arg)
{
	struct au_worker *w = arg;

	event_active(w->pump_ev, 0, 0);
}

static void poll_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;

	(void)fd;
	(void)what;
	if (w->opts.idle_exit_ms && !inflight(w) &&
	    au_mono_us() - w->last_active_us >= (uint64_t)w->opts.idle_exit_ms * 1000) {
		au_worker_stop(w);
		return;
	}
	event_active(w->pump_ev, 0, 0);
}

/* Heartbeat: keeps the leases of running computations alive. */
static void extend_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct scratch *s = &w->scratch;
	struct au_ref *refs = s->refs[DISPOSE_ACK];
	size_t n = 0, i;
	struct attempt *a;

	(void)fd;
	(void)what;
	for (a = w->lists[ATTEMPT_RUNNING].head; a && n < s->cap; a = a->next) {
		refs[n] = a->lease.ref;
		s->attempts[n++] = a;
	}
	if (!n)
		return;
	if (au_queue_extend(w->q, w->queue_name, refs, n, w->opts.lease_ms, s->applied) < 0) {
		report(w, &w->q->err);
		return;
	}
	for (i = 0; i < n; i++)
		if (!s->applied[i] && !s->attempts[i]->lost) {
			s->attempts[i]->lost = 1;
			au_log(AU_LOG_WARN, "lease of computation '%s' was lost",
			       s->attempts[i]->c.id);
		}
}

/* Housekeeping: expired leases of crashed workers go back to the queue;
 * expired records leave stores that have no native expiry. */
static void rescue_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	size_t requeued = 0, buried = 0, swept = 0;
	uint64_t now = au_now_ms();

	(void)fd;
	(void)what;
	if (au_queue_rescue(w->q, w->queue_name, RESCUE_MAX, &requeued, &buried) < 0)
		report(w, &w->q->err);
	else if (requeued || buried)
		au_log(AU_LOG_WARN, "rescued %zu expired leases on queue '%s' (%zu dead-lettered)",
		       requeued + buried, w->queue_name, buried);
	if (requeued)
		event_active(w->pump_ev, 0, 0);
	if (now - w->last_sweep_ms >= SWEEP_EVERY_MS) {
		w->last_sweep_ms = now;
		if (au_store_sweep(w->store, SWEEP_MAX, &swept) < 0)
			report(w, &w->store->err);
	}
}

/* Leaves the loop once ClickHouse requests still under way (the KILLs of
 * abandoned queries, above all) are done, or after DRAIN_MAX_MS. */
static void drain_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct timeval tick = { 0, 20000 };

	(void)fd;
	(void)what;
	if (!w->ch || !au_ch_inflight(w->ch) || au_mono_us() >= w->drain_deadline_us)
		event_base_loopexit(w->base, NULL);
	else
		evtimer_add(w->drain_ev, &tick);
}

static void stop_now(struct au_worker *w)
{
	if (w->exited)
		return;
	w->exited = 1;
	event_del(w->poll_ev);
	event_del(w->extend_ev);
	event_del(w->rescue_ev);
	event_del(w->grace_ev);
	w->drain_deadline_us = au_mono_us() + DRAIN_MAX_MS * 1000;
	drain_cb(-1, 0, w);
}

/* Grace period over: what still runs goes back to the queue unharmed. */
static void grace_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct attempt *a;

	(void)fd;
	(void)what;
	while ((a = w->lists[ATTEMPT_RUNNING].head)) {
		decide(a, VERDICT_RELEASED, NULL);
		abandon(a);
	}
	flush(w);
	stop_now(w);
}

void au_worker_stop(struct au_worker *w)
{
	struct timeval grace;

	if (w->stopping)
		return;
	w->stopping = 1;
	if (w->watching)
		au_queue_unwatch(w->q);
	w->watching = 0;
	event_del(w->poll_ev);
	if (!inflight(w)) {
		stop_now(w);
		return;
	}
	au_log(AU_LOG_INFO, "stopping: waiting up to %u ms for %zu computations",
	       w->opts.grace_ms, inflight(w));
	grace.tv_sec = (time_t)(w->opts.grace_ms / 1000);
	grace.tv_usec = (suseconds_t)(w->opts.grace_ms % 1000) * 1000;
	evtimer_add(w->grace_ev, &grace);
}

/* The loop calls these; each times its callback (cb_enter/cb_leave). */
#define TIMED(name) \
	static void name##_cb(evutil_socket_t fd, short what, void *arg) \
	{ \
		struct au_worker *w = arg; \
		uint64_t t0 = cb_enter(w); \
		name##_run(fd, what, arg); \
		cb_leave(w, t0); \
	}
TIMED(pump)
TIMED(flush)
TIMED(poll)
TIMED(extend)
TIMED(rescue)
TIMED(drain)
TIMED(grace)

static struct event *timer(struct au_worker *w, event_callback_fn fn, short flags)
{
	return event_new(w->base, -1, flags, fn, w);
}

static int scratch_init(struct scratch *s, size_t cap)
{
	size_t i;

	s->cap = cap;
	s->attempts = calloc(cap, sizeof(*s->attempts));
	s->recs = calloc(cap, sizeof(*s->recs));
	s->delays = calloc(cap, sizeof(*s->delays));
	s->errors = calloc(cap, sizeof(*s->errors));
	s->reasons = calloc(cap, sizeof(*s->reasons));
	s->applied = calloc(cap, sizeof(*s->applied));
	for (i = 0; i < DISPOSE_N; i++)
		s->refs[i] = calloc(cap, sizeof(*s->refs[i]));
	for (i = 0; i < DISPOSE_N; i++)
		if (!s->refs[i])
			return -1;
	return s->attempts && s->recs && s->delays && s->errors && s->reasons && s->applied ? 0
												   : -1;
}

static void scratch_release(struct scratch *s)
{
	size_t i;

	free(s->attempts);
	free(s->recs);
	free(s->delays);
	free(s->errors);
	free(s->reasons);
	free(s->applied);
	for (i = 0; i < DISPOSE_N; i++)
		free(s->refs[i]);
}

struct au_worker *au_worker_new(const struct au_config *cfg, const struct au_worker_opts *opts,
				struct au_registry *reg, struct event_base *base)
{
	struct au_worker *w = calloc(1, sizeof(*w));
	struct au_config conf = *cfg;

	if (!w)
		return NULL;
	au_config_from_env(&conf);
	w->base = base;
	if (opts)
		w->opts = *opts;
	if (!w->opts.concurrency)
		w->opts.concurrency = AU_DEFAULT_CONCURRENCY;
	if (!w->opts.batch)
		w->opts.batch = AU_DEFAULT_BATCH;
	if (w->opts.batch > w->opts.concurrency)
		w->opts.batch = w->opts.concurrency;
	if (!w->opts.lease_ms)
		w->opts.lease_ms = AU_DEFAULT_LEASE_MS;
	if (!w->opts.grace_ms)
		w->opts.grace_ms = AU_DEFAULT_GRACE_MS;
	if (!w->opts.retry_base_ms)
		w->opts.retry_base_ms = AU_DEFAULT_RETRY_BASE_MS;
	if (!w->opts.retry_max_ms)
		w->opts.retry_max_ms = AU_DEFAULT_RETRY_MAX_MS;
	if (!w->opts.poll_ms)
		w->opts.poll_ms = AU_DEFAULT_POLL_MS;
	w->queue_name = au_strdup(au_queue_name(w->opts.queue));
	w->opts.queue = w->queue_name;
	w->reg = reg;
	w->builtins = au_registry_new();
	w->leases = calloc(w->opts.batch, sizeof(*w->leases));
	w->pump_ev = timer(w, pump_cb, 0);
	w->flush_ev = timer(w, flush_cb, 0);
	w->poll_ev = timer(w, poll_cb, EV_PERSIST);
	w->extend_ev = timer(w, extend_cb, EV_PERSIST);
	w->rescue_ev = timer(w, rescue_cb, EV_PERSIST);
	w->grace_ev = timer(w, grace_cb, 0);
	w->drain_ev = timer(w, drain_cb, 0);
	w->q = au_queue_open(conf.queue_url);
	w->store = au_store_open(conf.store_url);
	if (!w->queue_name || !w->builtins || au_tasks_add_builtins(w->builtins) < 0 ||
	    !w->leases || scratch_init(&w->scratch, w->opts.concurrency) < 0 || !w->pump_ev ||
	    !w->flush_ev || !w->poll_ev || !w->extend_ev || !w->rescue_ev || !w->grace_ev ||
	    !w->drain_ev || !w->q || !w->store) {
		au_worker_free(w);
		return NULL;
	}
	if (w->q->err.code) {
		w->err = w->q->err;
		return w;
	}
	if (w->store->err.code) {
		w->err = w->store->err;
		return w;
	}
	w->ch = au_ch_new(conf.clickhouse_url, &w->err);
	if (w->ch && au_ch_attach(w->ch, base) < 0)
		au_seterr(&w->err, AU_ENOMEM, "unable to attach the clickhouse client to the loop");
	return w;
}

const struct au_err *au_worker_err(const struct au_worker *w)
{
	return &w->err;
}

int au_worker_use(struct au_worker *w, const struct au_middleware_ops *ops, void *ctx)
{
	return au_chain_add(&w->chain, ops, ctx);
}

static void set_timer(struct event *ev, uint32_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

int au_worker_start(struct au_worker *w)
{
	uint32_t beat = w->opts.lease_ms / AU_HEARTBEAT_DIVISOR;

	if (w->err.code)
		return -1;
	w->last_active_us = au_mono_us();
	w->last_sweep_ms = au_now_ms();
	/* a queue that cannot watch is polled */
	if (au_queue_watch(w->q, w->queue_name, w->base, wake_cb, w) == 0)
		w->watching = 1;
	set_timer(w->poll_ev, w->watching ? w->opts.poll_ms : UNWATCHED_POLL_MS);
	set_timer(w->extend_ev, beat ? beat : 1);
	set_timer(w->rescue_ev, RESCUE_EVERY_MS);
	event_active(w->pump_ev, 0, 0);
	return 0;
}

void au_worker_stats(const struct au_worker *w, struct au_worker_stats *st)
{
	*st = w->stats;
}

void au_worker_free(struct au_worker *w)
{
	struct attempt *a;
	size_t i;

	if (!w)
		return;
	if (w->watching)
		au_queue_unwatch(w->q);
	/* Running tasks let go first (their cancel hooks may use the
	 * ClickHouse client); then the client drops what is still pending
	 * without calling back. */
	for (i = 0; i < ATTEMPT_NSTATES; i++)
		while ((a = w->lists[i].head)) {
			abandon(a);
			attempt_free(a);
		}
	au_ch_free(w->ch);
	au_chain_release(&w->chain);
	if (w->leases)
		for (i = 0; i < w->opts.batch; i++)
			au_lease_release(&w->leases[i]);
	free(w->leases);
	scratch_release(&w->scratch);
	if (w->pump_ev)
		event_free(w->pump_ev);
	if (w->flush_ev)
		event_free(w->flush_ev);
	if (w->poll_ev)
		event_free(w->poll_ev);
	if (w->extend_ev)
		event_free(w->extend_ev);
	if (w->rescue_ev)
		event_free(w->rescue_ev);
	if (w->grace_ev)
		event_free(w->grace_ev);
	if (w->drain_ev)
		event_free(w->drain_ev);
	if (w->q)
		au_queue_close(w->q);
	if (w->store)
		au_store_close(w->store);
	au_registry_free(w->builtins);
	free(w->queue_name);
	free(w);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	au_log(AU_LOG_INFO, "received %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
	au_worker_stop(arg);
}

int au_worker_run(const struct au_config *cfg, const struct au_worker_opts *opts,
		  struct au_registry *reg, struct au_err *err)
{
	struct event_base *base = event_base_new();
	struct au_worker *w = NULL;
	struct event *sigterm = NULL, *sigint = NULL;
	int rc = -1;

	if (!base)
		return au_seterr(err, AU_ENOMEM, "unable to create an event loop");
	signal(SIGPIPE, SIG_IGN);
	w = au_worker_new(cfg, opts, reg, base);
	if (!w) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		goto out;
	}
	if (opts && opts->log)
		au_worker_use(w, &au_logging_middleware, NULL);
	sigterm = evsignal_new(base, SIGTERM, on_signal, w);
	sigint = evsignal_new(base, SIGINT, on_signal, w);
	if (!sigterm || !sigint) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		goto out;
	}
	evsignal_add(sigterm, NULL);
	evsignal_add(sigint, NULL);
	if (au_worker_start(w) < 0) {
		if (err)
			*err = w->err;
		goto out;
	}
	au_log(AU_LOG_INFO, "worker %s on queue '%s' (concurrency %u, batch %u)", au_worker_name(),
	       w->queue_name, w->opts.concurrency, w->opts.batch);
	event_base_dispatch(base);
	au_log(AU_LOG_INFO, "worker %s stopped: %llu completed, %llu failed, %llu retried, "
	       "%llu dead-lettered, %llu released", au_worker_name(),
	       (unsigned long long)w->stats.completed, (unsigned long long)w->stats.failed,
	       (unsigned long long)w->stats.retried, (unsigned long long)w->stats.buried,
	       (unsigned long long)w->stats.released);
	rc = 0;
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	au_worker_free(w);
	event_base_free(base);
	return rc;
}
