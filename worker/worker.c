/*
 * worker.c - the worker: one libevent loop leasing computations in batches,
 * running them through the middleware chain, writing outcomes to the store
 * and then acking, extending leases while they run, rescuing expired leases
 * of crashed workers, stopping gracefully.
 *
 * Flow of one batch: pump() leases up to `batch` computations (no more than
 * the free concurrency), starts each task; tasks finish now or later on the
 * loop; finished attempts wait in `done` until flush() writes their records
 * in one store call and their acks/retries/buries in one queue call each.
 * The result is written before the ack, so a crash between the two re-runs
 * the computation but never loses its result (the store keeps the first).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clickhouse.h"
#include "core.h"
#include "middleware.h"
#include "queue.h"
#include "registry.h"
#include "store.h"

enum action { ACT_NONE, ACT_ACK, ACT_RETRY, ACT_BURY, ACT_RELEASE };

struct job_list {
	struct au_task_ctx *head;
	size_t n;
};

/* One attempt in flight; also the task's context. */
struct au_task_ctx {
	struct au_worker *w;
	struct au_lease lease;
	struct au_computation c;
	struct au_run run;
	char query_id[AU_ID_SIZE + 16];
	uint64_t started_at_ms;
	struct event *timer;          /* timeout */
	void (*cancel_fn)(void *);
	void *cancel_arg;
	int task_running;             /* the task has not called back yet */
	int finished;                 /* outcome decided */
	int lost;                     /* lease taken over (extend refused) */
	enum action action;
	uint64_t retry_delay_ms;
	int write_record;
	unsigned char *result;
	size_t result_len;
	char *error;
	struct job_list *list;        /* the list it is on */
	struct au_task_ctx *prev, *next;
};

struct au_worker {
	struct event_base *base;
	struct au_worker_opts opts;
	char *queue_name;
	struct au_queue *q;
	struct au_store *store;
	struct au_clickhouse *ch;
	struct au_registry *reg;
	int own_reg;
	struct au_chain chain;
	struct au_err err;

	struct job_list running;      /* task not finished */
	struct job_list done;         /* outcome decided, not yet flushed */
	struct job_list zombies;      /* flushed, task still running (timed out) */
	struct au_lease *leases;

	struct event *pump_ev, *flush_ev, *poll_ev, *extend_ev, *rescue_ev, *grace_ev, *drain_ev;
	uint64_t drain_deadline_us;
	int watching;
	int stopping;
	int exited;
	uint64_t last_active_us;       /* monotonic: last lease or finish */
	uint64_t last_sweep_ms;
	char last_error[AU_ERRSTR_SIZE];
	uint64_t last_report_us;
	struct au_worker_stats stats;
};

static void list_add(struct job_list *l, struct au_task_ctx *j)
{
	j->list = l;
	j->prev = NULL;
	j->next = l->head;
	if (l->head)
		l->head->prev = j;
	l->head = j;
	l->n++;
}

static void list_del(struct job_list *l, struct au_task_ctx *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		l->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	j->prev = j->next = NULL;
	j->list = NULL;
	l->n--;
}

/* Attempts not yet written back. */
static size_t inflight(const struct au_worker *w)
{
	return w->running.n + w->done.n;
}

/* Slots taken: finished attempts waiting for flush() hold none; tasks that
 * timed out but still run (no cancel hook) do. */
static size_t busy(const struct au_worker *w)
{
	return w->running.n + w->zombies.n;
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

static void job_free(struct au_task_ctx *j)
{
	if (j->timer)
		event_free(j->timer);
	au_lease_release(&j->lease);
	au_computation_release(&j->c);
	free(j->result);
	free(j->error);
	free(j);
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

/* Decides what happens to a finished attempt and queues it for flush(). */
static void finish(struct au_task_ctx *j, enum au_status status)
{
	struct au_worker *w = j->w;
	const struct au_computation *c = &j->c;

	j->finished = 1;
	if (j->timer)
		evtimer_del(j->timer);
	j->run.finished_at_us = au_mono_us();
	w->last_active_us = j->run.finished_at_us;
	j->write_record = 1;
	if (status == AU_COMPLETED) {
		j->action = ACT_ACK;
		w->stats.completed++;
	} else if (status == AU_RETRYING && j->lease.attempts < c->max_attempts) {
		j->action = ACT_RETRY;
		j->write_record = 0;
		j->retry_delay_ms = retry_delay(w, j->lease.attempts);
		w->stats.retried++;
	} else if (status == AU_RETRYING) {
		char *e = au_asprintf("failed after %u attempts: %s", j->lease.attempts,
				      j->error ? j->error : "");

		if (e) {
			free(j->error);
			j->error = e;
		}
		status = AU_FAILED;
		j->action = ACT_BURY;
		w->stats.failed++;
	} else {
		j->action = ACT_ACK;
		w->stats.failed++;
	}
	j->run.status = status;
	j->run.result = j->result;
	j->run.result_len = j->result_len;
	j->run.error = j->error;
	au_chain_finish(&w->chain, &j->run);
	list_del(&w->running, j);
	list_add(&w->done, j);
	event_active(w->flush_ev, 0, 0);
}

/* A computation that cannot run at all (malformed, unknown task): it fails
 * for good and goes to the dead letter set with the reason. */
static void reject(struct au_task_ctx *j, const char *reason)
{
	j->error = au_strdup(reason);
	j->run.status = AU_FAILED;
	finish(j, AU_FAILED);
	j->action = ACT_BURY;
}

/* A call from a task the worker already gave up on (timeout): if the attempt
 * was flushed, the context only waited for this call. */
static void late_call(struct au_task_ctx *j)
{
	if (j->list == &j->w->zombies) {
		list_del(&j->w->zombies, j);
		job_free(j);
	}
}

void au_task_complete(struct au_task_ctx *j, const unsigned char *result, size_t len)
{
	j->task_running = 0;
	if (j->finished) {
		late_call(j);
		return;
	}
	/* the record around the result needs room too */
	if (len > AU_MAX_RESULT - 4096) {
		j->error = au_asprintf("result too large: %zu bytes (limit %u)", len,
				       AU_MAX_RESULT - 4096);
		finish(j, AU_FAILED);
		return;
	}
	j->result = malloc(len ? len : 1);
	if (!j->result) {
		j->error = au_strdup("out of memory");
		finish(j, AU_RETRYING);
		return;
	}
	memcpy(j->result, result, len);
	j->result_len = len;
	finish(j, AU_COMPLETED);
}

void au_task_fail(struct au_task_ctx *j, int retryable, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	j->task_running = 0;
	if (j->finished) {
		late_call(j);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	j->error = au_strdup(msg);
	finish(j, retryable ? AU_RETRYING : AU_FAILED);
}

struct au_clickhouse *au_task_clickhouse(struct au_task_ctx *j)
{
	return j->w->ch;
}

struct event_base *au_task_base(struct au_task_ctx *j)
{
	return j->w->base;
}

const char *au_task_query_id(struct au_task_ctx *j)
{
	return j->query_id;
}

void au_task_on_cancel(struct au_task_ctx *j, void (*fn)(void *arg), void *arg)
{
	j->cancel_fn = fn;
	j->cancel_arg = arg;
}

/* Tells a still-running task to let go; returns 1 if it did (or had
 * nothing to let go of), 0 if it must be waited for. */
static int abandon(struct au_task_ctx *j)
{
	if (!j->task_running)
		return 1;
	if (!j->cancel_fn)
		return 0;
	j->cancel_fn(j->cancel_arg);
	j->task_running = 0;
	return 1;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct au_task_ctx *j = arg;

	(void)fd;
	(void)what;
	if (j->finished)
		return;
	j->finished = 1;   /* a hook calling back at once finds it settled */
	abandon(j);
	j->error = au_asprintf("timed out after %u ms", j->c.timeout_ms);
	finish(j, AU_RETRYING);
}

static void start(struct au_worker *w, struct au_lease *l)
{
	struct au_task_ctx *j = calloc(1, sizeof(*j));
	struct au_err err = { 0, "" };
	au_task_fn fn;
	void *arg;
	char errbuf[512];

	if (!j) {
		au_log(AU_LOG_ERROR, "out of memory starting computation '%s'", l->ref.id);
		au_lease_release(l);   /* the lease runs out and another worker takes it */
		return;
	}
	j->w = w;
	j->lease = *l;
	memset(l, 0, sizeof(*l));
	j->run.c = &j->c;
	j->run.worker = au_worker_name();
	j->run.started_at_us = au_mono_us();
	j->run.status = AU_RUNNING;
	j->started_at_ms = au_now_ms();
	list_add(&w->running, j);
	w->stats.leased++;
	w->last_active_us = j->run.started_at_us;

	if (au_computation_decode(j->lease.body, j->lease.body_len, &j->c, &err) < 0) {
		au_computation_init(&j->c);
		memcpy(j->c.id, j->lease.ref.id, AU_ID_SIZE);
		j->c.queue = au_strdup(w->queue_name);
		j->c.attempts = j->lease.attempts;
		reject(j, err.str);
		return;
	}
	j->c.attempts = j->lease.attempts;
	snprintf(j->query_id, sizeof(j->query_id), "%s-%u", j->c.id, j->lease.attempts);
	if (strcmp(j->c.id, j->lease.ref.id) != 0) {
		reject(j, "malformed computation: id does not match the queue's");
		return;
	}
	if (au_registry_find(w->reg, j->c.task, &fn, &arg) < 0) {
		snprintf(errbuf, sizeof(errbuf), "unknown task '%s'", j->c.task);
		reject(j, errbuf);
		return;
	}
	if (au_chain_before(&w->chain, &j->run, errbuf, sizeof(errbuf)) < 0) {
		j->error = au_strdup(errbuf);
		finish(j, AU_FAILED);
		return;
	}
	if (j->c.timeout_ms) {
		struct timeval tv = { (time_t)(j->c.timeout_ms / 1000),
				      (suseconds_t)(j->c.timeout_ms % 1000) * 1000 };

		j->timer = evtimer_new(w->base, on_timeout, j);
		if (j->timer)
			evtimer_add(j->timer, &tv);
	}
	j->task_running = 1;
	fn(j, &j->c, arg);
}

static void stop_now(struct au_worker *w);
static void pump_cb(evutil_socket_t fd, short what, void *arg);

/*
 * A batch of records failed to store. Each is tried alone, so one bad record
 * (too large, say) does not hold back the others. An attempt whose record
 * cannot be stored must not be acked: a completed one is tried again while
 * it has attempts left (the store may be down), anything else goes to the
 * dead letter set with the reason.
 */
static void unstored(struct au_worker *w, struct au_task_ctx **jobs, size_t n,
		     const struct au_record *recs)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		struct au_task_ctx *j = jobs[i];
		char *why;

		if (!j->write_record)
			continue;
		if (w->store->ops->put(w->store, &recs[k++], 1, NULL) == 0)
			continue;
		if (j->run.status == AU_COMPLETED && w->store->err.code == AU_ECONN &&
		    j->lease.attempts < j->c.max_attempts) {
			j->action = ACT_RETRY;
			j->retry_delay_ms = retry_delay(w, j->lease.attempts);
			continue;
		}
		why = au_asprintf("result not stored: %s", w->store->err.str);
		if (why) {
			free(j->error);
			j->error = why;
		}
		j->action = ACT_BURY;
	}
}

/* Writes records, then acks / retries / buries, for every finished attempt. */
static void flush(struct au_worker *w)
{
	size_t n = w->done.n, nrec = 0, nack = 0, nretry = 0, nbury = 0, nrel = 0, i;
	struct au_record *recs;
	struct au_ref *acks, *retries, *buries, *rels;
	uint64_t *delays;
	const char **rerrors, **reasons;
	struct au_task_ctx **jobs, *j;
	int *applied;

	if (!n)
		return;
	recs = calloc(n, sizeof(*recs));
	acks = calloc(n, sizeof(*acks));
	retries = calloc(n, sizeof(*retries));
	buries = calloc(n, sizeof(*buries));
	rels = calloc(n, sizeof(*rels));
	delays = calloc(n, sizeof(*delays));
	rerrors = calloc(n, sizeof(*rerrors));
	reasons = calloc(n, sizeof(*reasons));
	jobs = calloc(n, sizeof(*jobs));
	applied = calloc(n, sizeof(*applied));
	if (!recs || !acks || !retries || !buries || !rels || !delays || !rerrors || !reasons ||
	    !jobs || !applied) {
		au_log(AU_LOG_ERROR, "out of memory flushing %zu computations", n);
		goto out;   /* retried on the next flush */
	}

	for (i = 0, j = w->done.head; j; j = j->next, i++) {
		jobs[i] = j;
		if (!j->write_record)
			continue;
		struct au_record *r = &recs[nrec++];

		memcpy(r->id, j->c.id, AU_ID_SIZE);
		r->status = j->run.status;
		r->result = j->result;
		r->result_len = j->result_len;
		r->error = j->error;
		r->task = j->c.task;
		r->queue = j->c.queue;
		r->worker = (char *)j->run.worker;
		r->attempts = j->lease.attempts;
		r->ttl_s = j->c.ttl_s ? j->c.ttl_s : 86400;
		r->created_at_ms = j->c.created_at_ms;
		r->started_at_ms = j->started_at_ms;
		r->finished_at_ms = j->started_at_ms +
			(j->run.finished_at_us - j->run.started_at_us) / 1000;
	}
	if (nrec && w->store->ops->put(w->store, recs, nrec, NULL) < 0) {
		report(w, &w->store->err);
		unstored(w, jobs, n, recs);
	}

	for (i = 0; i < n; i++) {
		j = jobs[i];
		switch (j->action) {
		case ACT_ACK:
			acks[nack++] = j->lease.ref;
			break;
		case ACT_RETRY:
			delays[nretry] = j->retry_delay_ms;
			rerrors[nretry] = j->error;
			retries[nretry++] = j->lease.ref;
			break;
		case ACT_BURY:
			reasons[nbury] = j->error ? j->error : "failed";
			buries[nbury++] = j->lease.ref;
			w->stats.buried++;
			break;
		case ACT_RELEASE:
			rels[nrel++] = j->lease.ref;
			break;
		case ACT_NONE:
			break;
		}
	}
	/* Each call on its own: what fails here runs out its lease and is
	 * rescued, and must not hold back the others. */
	if (nack && w->q->ops->ack(w->q, w->queue_name, acks, nack, applied) < 0)
		report(w, &w->q->err);
	if (nretry && w->q->ops->retry(w->q, w->queue_name, retries, nretry, delays, rerrors,
				       applied) < 0)
		report(w, &w->q->err);
	if (nbury && w->q->ops->bury(w->q, w->queue_name, buries, nbury, reasons, applied) < 0)
		report(w, &w->q->err);
	if (nrel && w->q->ops->release(w->q, w->queue_name, rels, nrel, applied) < 0)
		report(w, &w->q->err);

	while ((j = w->done.head)) {
		list_del(&w->done, j);
		if (j->task_running)
			list_add(&w->zombies, j);
		else
			job_free(j);
	}
out:
	free(recs);
	free(acks);
	free(retries);
	free(buries);
	free(rels);
	free(delays);
	free(rerrors);
	free(reasons);
	free(jobs);
	free(applied);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
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

static void pump_cb(evutil_socket_t fd, short what, void *arg)
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
	if (w->q->ops->lease(w->q, w->queue_name, room, w->opts.lease_ms, 0, w->leases, &n) < 0) {
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

static void poll_cb(evutil_socket_t fd, short what, void *arg)
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
static void extend_cb(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	size_t n = w->running.n, i = 0;
	struct au_ref *refs;
	struct au_task_ctx **jobs, *j;
	int *applied;

	(void)fd;
	(void)what;
	if (!n)
		return;
	refs = calloc(n, sizeof(*refs));
	jobs = calloc(n, sizeof(*jobs));
	applied = calloc(n, sizeof(*applied));
	if (refs && jobs && applied) {
		for (j = w->running.head; j; j = j->next, i++) {
			refs[i] = j->lease.ref;
			jobs[i] = j;
		}
		if (w->q->ops->extend(w->q, w->queue_name, refs, n, w->opts.lease_ms, applied) < 0) {
			report(w, &w->q->err);
		} else {
			for (i = 0; i < n; i++)
				if (!applied[i] && !jobs[i]->lost) {
					jobs[i]->lost = 1;
					au_log(AU_LOG_WARN, "lease of computation '%s' was lost",
					       jobs[i]->c.id);
				}
		}
	}
	free(refs);
	free(jobs);
	free(applied);
}

/* Housekeeping: expired leases of crashed workers go back to the queue;
 * expired records leave stores that have no native expiry. */
static void rescue_cb(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	size_t requeued = 0, buried = 0, swept = 0;
	uint64_t now = au_now_ms();

	(void)fd;
	(void)what;
	if (w->q->ops->rescue(w->q, w->queue_name, 1000, &requeued, &buried) < 0)
		report(w, &w->q->err);
	else if (requeued || buried)
		au_log(AU_LOG_WARN, "rescued %zu expired leases on queue '%s' (%zu dead-lettered)",
		       requeued + buried, w->queue_name, buried);
	if (requeued)
		event_active(w->pump_ev, 0, 0);
	if (now - w->last_sweep_ms >= 60000) {
		w->last_sweep_ms = now;
		if (w->store->ops->sweep(w->store, 10000, &swept) < 0)
			report(w, &w->store->err);
	}
}

/* Leaves the loop once ClickHouse requests still under way (the KILLs of
 * abandoned queries, above all) are done, or after 2 s. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
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
	w->drain_deadline_us = au_mono_us() + 2000000;
	drain_cb(-1, 0, w);
}

/* Grace period over: what still runs goes back to the queue unharmed. */
static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct au_task_ctx *j;

	(void)fd;
	(void)what;
	while ((j = w->running.head)) {
		j->finished = 1;
		abandon(j);
		j->write_record = 0;
		j->action = ACT_RELEASE;
		w->stats.released++;
		list_del(&w->running, j);
		list_add(&w->done, j);
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
	if (w->watching && w->q->ops->unwatch)
		w->q->ops->unwatch(w->q);
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

static struct event *timer(struct au_worker *w, event_callback_fn fn, short flags)
{
	return event_new(w->base, -1, flags, fn, w);
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
		w->opts.concurrency = 16;
	if (!w->opts.batch)
		w->opts.batch = 64;
	if (w->opts.batch > w->opts.concurrency)
		w->opts.batch = w->opts.concurrency;
	if (!w->opts.lease_ms)
		w->opts.lease_ms = 30000;
	if (!w->opts.grace_ms)
		w->opts.grace_ms = 10000;
	if (!w->opts.retry_base_ms)
		w->opts.retry_base_ms = 1000;
	if (!w->opts.retry_max_ms)
		w->opts.retry_max_ms = 300000;
	if (!w->opts.poll_ms)
		w->opts.poll_ms = 1000;
	w->queue_name = au_strdup(w->opts.queue ? w->opts.queue : "default");
	w->opts.queue = w->queue_name;
	w->reg = reg;
	if (!reg) {
		w->reg = au_registry_new();
		w->own_reg = 1;
	}
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
	if (!w->queue_name || !w->reg || !w->leases || !w->pump_ev || !w->flush_ev || !w->poll_ev ||
	    !w->extend_ev || !w->rescue_ev || !w->grace_ev || !w->drain_ev || !w->q || !w->store) {
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
	if (w->err.code)
		return -1;
	w->last_active_us = au_mono_us();
	w->last_sweep_ms = au_now_ms();
	if (w->q->ops->watch && w->q->ops->watch(w->q, w->queue_name, w->base, wake_cb, w) == 0)
		w->watching = 1;
	set_timer(w->poll_ev, w->watching ? w->opts.poll_ms : 50);
	set_timer(w->extend_ev, w->opts.lease_ms / 3 ? w->opts.lease_ms / 3 : 1);
	set_timer(w->rescue_ev, 1000);
	event_active(w->pump_ev, 0, 0);
	return 0;
}

void au_worker_stats(const struct au_worker *w, struct au_worker_stats *st)
{
	*st = w->stats;
}

static void free_list(struct job_list *l)
{
	struct au_task_ctx *j;

	while ((j = l->head)) {
		list_del(l, j);
		abandon(j);
		job_free(j);
	}
}

void au_worker_free(struct au_worker *w)
{
	size_t i;

	if (!w)
		return;
	if (w->watching && w->q->ops->unwatch)
		w->q->ops->unwatch(w->q);
	/* Running tasks let go first (their cancel hooks may use the
	 * ClickHouse client); then the client drops what is still pending
	 * without calling back. */
	free_list(&w->running);
	free_list(&w->done);
	free_list(&w->zombies);
	au_ch_free(w->ch);
	au_chain_release(&w->chain);
	if (w->leases)
		for (i = 0; i < w->opts.batch; i++)
			au_lease_release(&w->leases[i]);
	free(w->leases);
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
	if (w->own_reg)
		au_registry_free(w->reg);
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
