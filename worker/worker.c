/*
 * worker.c - the worker: one libevent loop leasing computations in batches,
 * running each attempt through the middleware chain, writing outcomes to the
 * store and then telling the queue, extending leases while attempts run,
 * rescuing expired leases of crashed workers, stopping gracefully.
 *
 * The loop never waits on the queue or the store: every call to them runs
 * on the worker's I/O thread (io_thread.h), one request of each kind at a
 * time, while the loop goes on running tasks and their ClickHouse requests.
 * What the loop decides meanwhile waits for the next request, so a busy
 * worker writes back in batches as large as its round trips make them.
 *
 * One attempt moves through these states, each a list of the worker:
 *
 *   held ──begin()──▶ running ──decide()──▶ decided ──flush()──▶ writing ──▶ freed
 *                                                                  └──▶ zombie ──task calls back──▶ freed
 *
 * A held attempt was leased ahead (prefetch) and waits for a slot. decide()
 * is the one place an outcome becomes a disposition (ack, retry, bury,
 * release); complete, fail, timeout, reject and the end of the grace period
 * all go through it, and it runs the after/on_error hooks. flush() hands
 * decided attempts to the I/O thread, which writes their records in one
 * store call, then tells the queue in one call per disposition. A record
 * that cannot be stored turns its attempt into a retry or a dead letter,
 * and the on_error hooks hear of that second outcome too (include/au.h,
 * struct au_run). The result is written before the ack, so a crash between
 * the two re-runs the computation but never loses its result (the store
 * keeps the first). A zombie timed out while its task, which has no cancel
 * hook, still runs: it holds its slot until the task calls back.
 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clickhouse.h"
#include "core.h"
#include "flow.h"
#include "flow_gc.h"
#include "io_thread.h"
#include "metrics.h"
#include "middleware.h"
#include "plugin.h"
#include "pool.h"
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
#define START_PER_CALLBACK 64     /* attempts begun in one callback: the loop stays responsive */
#define OUTAGE_FIRST_MS 250       /* an outage is tried again after this, */
#define OUTAGE_MAX_MS 5000        /* doubled up to this */

enum attempt_state {
	ATTEMPT_HELD,       /* leased ahead, waiting for a slot */
	ATTEMPT_DEFERRED,   /* a before hook said not yet (AU_HOOK_DELAY): waits
			       for its timer, without a slot */
	ATTEMPT_RUNNING,    /* the task has not reported; holds a slot */
	ATTEMPT_DECIDED,    /* outcome known, waiting for flush() */
	ATTEMPT_WRITING,    /* with the I/O thread, being written back */
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
	VERDICT_RELEASED,   /* the worker lets go (grace over, or never begun) */
	VERDICT_OUTAGE,     /* a server the task needs failed it: released, and the worker pauses */
	VERDICT_CANCELLED,  /* a client cancelled it (its record says so already) */
};

struct attempt {
	struct au_task_ctx task;      /* first: what the task holds */
	struct au_worker *w;
	enum attempt_state state;
	enum disposition disposition; /* set by decide() */
	int task_busy;                /* the task has neither called back nor been cancelled */
	int lost;                     /* the lease was taken over (extend refused) */
	int stored;                   /* its record is stored; the queue is still to be told */
	int unpacked;                 /* c is decoded (a deferred attempt begins again) */
	int in_hook;                  /* a before hook answers later (AU_HOOK_PENDING) */
	size_t hook_pos;              /* the before hook it is at */
	struct event *defer_ev;       /* ATTEMPT_DEFERRED: when it may begin again */
	uint64_t defer_due_us;        /* au_mono_us() it may begin at */
	unsigned qi;                  /* the queue it came from: w->ql.names[qi] */
	struct au_prep prep;          /* what its flow's records said (flow.h) */
	struct au_computation *kids;  /* the children its result asked for */
	size_t nkids;
	struct au_lease lease;
	struct au_computation c;
	au_task_fn fn;                /* found when leased, called by begin() */
	void *fn_arg;
	struct au_run run;
	uint64_t started_at_ms;
	struct event *timer;          /* the computation's timeout */
	uint64_t retry_delay_ms;
	unsigned char *result;
	size_t result_len;
	char *error;
	struct au_buf history;        /* with this attempt, once decided: its record's, or
				       * what the queue keeps for the next attempt */
	struct attempt *prev, *next;
};

struct attempt_list {
	struct attempt *head, *tail;  /* oldest first */
	size_t n;
};

/*
 * The requests the loop hands the I/O thread, one of each kind at a time
 * (busy). What run() on the thread fills in is read by the loop once the
 * request is back.
 */
struct lease_req {
	struct au_io_req io;          /* first */
	struct au_worker *w;
	int busy;
	size_t max, n;
	int rc;
	struct au_err err;
	struct au_lease *out;         /* [batch] */
	unsigned *qi;                 /* [batch]: the queue each came from */
	struct au_prep *prep;         /* [batch]: a flow's, read with the lease */
};

/* One attempt being written back. The thread reads none of the attempt. */
struct writeback {
	struct attempt *a;
	struct au_ref ref;
	unsigned qi;
	enum disposition d;           /* the thread may change it: record not stored */
	int record;                   /* its index in recs, -1 for none */
	int completed;                /* its record says completed */
	int retries_left;             /* attempts remain */
	uint32_t attempts;            /* of the lease, for the delay of a retry the thread makes */
	uint64_t delay_ms;            /* of a retry */
	const char *error;            /* reason of a bury, last error of a retry */
	const unsigned char *history; /* the attempt's, kept by the queue with a retry */
	size_t history_len;
	const struct au_computation *kids;   /* its children, added before its ack */
	size_t nkids;
	unsigned char *body;          /* the lease's, freed by the thread that allocated it */
	char *why;                    /* by the thread: "result not stored: ..." */
	int stored;                   /* its record is in the store (before, or by this call) */
	int done;                     /* the queue was told (ack_store) */
	int kept;                     /* by the thread: the store or the queue is down, so
				       * nothing was decided: the loop keeps it for later */
};

struct flush_req {
	struct au_io_req io;
	struct au_worker *w;
	int busy;
	size_t cap, n, nrec, nack;    /* recs[0..nack) are those of acks */
	struct writeback *wb;         /* [cap] */
	struct au_record *recs;       /* [cap] */
	/* one queue call's arguments, reused per disposition */
	struct au_ref *refs;
	uint64_t *delays;
	const char **texts;
	struct au_story *stories;
	int *applied;
	size_t *idx;
	int store_failed, queue_failed;
	int store_down, queue_down;   /* failed for a reason no record is to blame for */
	struct au_err store_err, queue_err;
};

struct extend_req {
	struct au_io_req io;
	struct au_worker *w;
	int busy;
	size_t cap, n;
	struct au_ref *refs;          /* [cap], those of each queue together */
	size_t from[AU_MAX_QUEUES + 1];   /* queue qi's: refs[from[qi]..from[qi + 1]) */
	int *applied;
	int rc;
	struct au_err err;
};

struct rescue_req {
	struct au_io_req io;
	struct au_worker *w;
	int busy;
	int sweep;                    /* the store is swept too */
	int gc;                       /* and finished flows past their ttl collected */
	int gc_rc;
	struct au_flow_gc_stats gc_st;
	struct au_err gc_err;
	size_t requeued, buried, swept;
	int queue_rc, store_rc;
	struct au_err queue_err, store_err;
};

/* The worker's entry in the registry (backends/queue.h, beat), refreshed
 * every AU_BEAT_EVERY_MS; the loop fills b before each submit. */
struct beat_req {
	struct au_io_req io;
	struct au_worker *w;
	int busy;
	int off;                      /* the queue keeps no registry: no more beats */
	int registered;               /* a beat went through: the entry is removed at exit */
	int stop;                     /* by the thread: a stop was asked for this worker */
	int rc;
	struct au_err err;
	struct au_worker_beat b;
};

/* The servers a worker needs, each of which can be down. */
enum part { PART_TASKS, PART_STORE, PART_QUEUE, PART_N };
static const char *const part_name[PART_N] = { "a server the tasks need", "the result store",
					       "the queue" };

struct au_worker {
	struct event_base *base;
	struct au_worker_opts opts;
	struct au_queue_list ql;       /* the queues it serves, in order or by weight */
	char *queues_text;             /* "a,b" or "a:5,b:1", as logged and registered */
	char *store_url;
	char *queue_url;
	char *ch_url;                  /* for the flow collector's own client */
	struct au_clickhouse *gc_ch;   /* the I/O thread's: blocking requests */
	uint64_t last_gc_ms;
	struct task_timeout {          /* timeout:TASK=DURATION of au_worker_use_spec */
		char *task;
		uint32_t ms;
	} *timeouts;
	size_t ntimeouts;
	struct au_queue *q;            /* the I/O thread's, but for watching */
	/* The handles that watch each queue (one watch per handle): wq[0] is
	 * q, the others are opened for watching only. */
	struct au_queue *wq[AU_MAX_QUEUES];
	struct au_store *store;        /* the I/O thread's */
	struct au_clickhouse *ch;
	struct au_registry *reg;       /* the caller's tasks, may be NULL */
	struct au_registry *builtins;
	struct au_registry *plugins;   /* the plugins' tasks (worker/plugin.c), may be NULL */
	struct au_pool *pool;          /* au_task_offload's threads, from the first offload */
	struct au_chain chain;
	struct au_err err;

	struct au_io *io;
	struct lease_req lease;
	struct flush_req flush;
	struct extend_req extend;
	struct rescue_req rescue;
	struct beat_req beat;
	struct event *beat_ev;
	char id[AU_WORKER_ID_SIZE];    /* in the registry: "<host>:<pid>:<8 hex>" */
	uint64_t started_ms;
	int ack_store;                 /* the thread's: worth trying au_queue_ack_store */

	struct attempt_list lists[ATTEMPT_NSTATES];

	/*
	 * Outages (an outage is not the computation's fault): while a part is
	 * down nothing is leased. ClickHouse: the first task failed by an
	 * outage releases what has not begun; after a back-off one computation
	 * is leased to try (half open), and its outcome, if not another
	 * outage, resumes leasing. Store or queue: decided attempts are kept
	 * (their leases extended) and written again after the back-off.
	 */
	struct outage {
		int down;
		int trying;                /* tasks: 1 one may be leased to try, 2 it is out */
		uint32_t backoff_ms;
		uint64_t since_us;
	} outage[PART_N];
	struct event *outage_ev;       /* the end of the back-off */
	int flush_retry;               /* the back-off is over: write what was kept */

	struct event *pump_ev, *start_ev, *flush_ev, *poll_ev, *extend_ev, *rescue_ev, *grace_ev,
		*drain_ev;
	uint64_t drain_deadline_us;
	unsigned watching;             /* bit qi: wq[qi] watches queue qi */
	unsigned watching_cancels;     /* likewise, for cancels */
	int watch_paused;
	int wake_pending;              /* woken since the last lease was sent */
	int queue_empty;               /* the last lease found fewer than it asked for */
	int stopping;
	int asked_to_stop;             /* by `au worker stop`, through the registry */
	int exited;
	uint64_t avg_run_us;           /* moving average of an attempt's run time */
	uint64_t last_active_us;       /* monotonic: last lease or decision */
	uint64_t last_sweep_ms;
	char last_error[AU_ERRSTR_SIZE];
	uint64_t last_report_us;
	size_t tasks_busy;             /* attempts whose task_busy is set: the slots taken */
	struct attempt *spares;        /* freed attempts kept for reuse, through ->next */
	size_t nspares;
	unsigned cb_depth;             /* callbacks of ours under way (they nest) */
	struct au_worker_stats stats;
	void *metrics;                 /* the metrics middleware's ctx, for the beat */
};

static const struct au_task_ops attempt_task_ops;

static void pump_cb(evutil_socket_t fd, short what, void *arg);
static void start_cb(evutil_socket_t fd, short what, void *arg);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void poll_cb(evutil_socket_t fd, short what, void *arg);
static void outage_cb(evutil_socket_t fd, short what, void *arg);
static void extend_cb(evutil_socket_t fd, short what, void *arg);
static void rescue_cb(evutil_socket_t fd, short what, void *arg);
static void drain_cb(evutil_socket_t fd, short what, void *arg);
static void grace_cb(evutil_socket_t fd, short what, void *arg);
static void beat_cb(evutil_socket_t fd, short what, void *arg);
static void maybe_exit(struct au_worker *w);

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
	a->next = NULL;
	a->prev = l->tail;
	if (l->tail)
		l->tail->next = a;
	else
		l->head = a;
	l->tail = a;
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
	else
		l->tail = a->prev;
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
	return count(w, ATTEMPT_HELD) + count(w, ATTEMPT_DEFERRED) + count(w, ATTEMPT_RUNNING) +
	       count(w, ATTEMPT_DECIDED) + count(w, ATTEMPT_WRITING);
}

/* Slots taken: by every task still running, whatever its attempt's state
 * (a timed-out task without a cancel hook holds its slot until it calls
 * back). */
static size_t busy(const struct au_worker *w)
{
	return w->tasks_busy;
}

static void task_done(struct attempt *a)
{
	if (a->task_busy) {
		a->task_busy = 0;
		a->w->tasks_busy--;
	}
}

/*
 * How many a worker may hold beyond its slots: a batch while attempts are
 * short, fewer as they grow, so that what it holds can begin well within
 * its lease and is not kept from idle workers elsewhere.
 */
static size_t prefetch_max(const struct au_worker *w)
{
	uint64_t n;

	if (!w->avg_run_us)
		return w->opts.batch;
	n = (uint64_t)w->opts.concurrency * w->opts.lease_ms * 1000 / 2 / w->avg_run_us;
	return n < w->opts.batch ? (size_t)n : w->opts.batch;
}

/* How many more it may lease now: what it holds counts until it is
 * written back, so a write-back that falls behind holds the leases back. */
static size_t room(const struct au_worker *w)
{
	size_t have = busy(w) + count(w, ATTEMPT_HELD) + count(w, ATTEMPT_DEFERRED) +
		      count(w, ATTEMPT_DECIDED) + count(w, ATTEMPT_WRITING);
	size_t cap = w->opts.concurrency + prefetch_max(w);
	size_t n = have < cap ? cap - have : 0;

	if (w->opts.max_jobs) {
		uint64_t left = w->opts.max_jobs > w->stats.leased ? w->opts.max_jobs - w->stats.leased : 0;

		if (left < n)
			n = (size_t)left;
	}
	return n;
}

/* A full worker lets wake-ups go to others. */
static void update_watch(struct au_worker *w)
{
	int paused = w->stopping || room(w) == 0;

	size_t qi;

	if (w->watching && paused != w->watch_paused) {
		w->watch_paused = paused;
		for (qi = 0; qi < w->ql.n; qi++)
			if (w->watching & 1u << qi)
				au_queue_watch_pause(w->wq[qi], paused);
	}
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

static void set_timer(struct event *ev, uint32_t ms);
static void decide(struct attempt *a, enum verdict v, char *error);

/* An error no record or computation is to blame for: the server is away. */
static int outage_code(int code)
{
	return code == AU_ECONN || code == AU_ETIMEDOUT;
}

static int writes_held(const struct au_worker *w)
{
	return w->outage[PART_STORE].down || w->outage[PART_QUEUE].down;
}

static int any_down(const struct au_worker *w)
{
	return w->outage[PART_TASKS].down || writes_held(w);
}

/* Part p failed for want of its server: leasing stops, what has not begun
 * goes back unharmed, and it is tried again after a back-off that doubles
 * while the outage lasts. */
static void release_held(struct au_worker *w);

static void outage_begin(struct au_worker *w, enum part p, const char *why)
{
	struct outage *o = &w->outage[p];

	if (!o->down) {
		o->down = 1;
		o->since_us = au_mono_us();
		o->backoff_ms = OUTAGE_FIRST_MS;
		w->stats.outages++;
		au_log(AU_LOG_WARN, "%s is unavailable, leasing paused until it is back: %s",
		       part_name[p], why);
		snprintf(w->last_error, sizeof(w->last_error), "%s", why);
		w->last_report_us = au_mono_us();
	} else {
		struct au_err err = { AU_ECONN, "" };

		o->backoff_ms = o->backoff_ms >= OUTAGE_MAX_MS / 2 ? OUTAGE_MAX_MS : 2 * o->backoff_ms;
		snprintf(err.str, sizeof(err.str), "%s", why);
		report(w, &err);
	}
	o->trying = 0;
	release_held(w);
	if (!w->stopping || p != PART_TASKS)
		set_timer(w->outage_ev, o->backoff_ms);
}

static void outage_end(struct au_worker *w, enum part p)
{
	struct outage *o = &w->outage[p];

	if (!o->down)
		return;
	o->down = 0;
	o->trying = 0;
	au_log(AU_LOG_INFO, "%s is back after %.1f s, leasing again", part_name[p],
	       (double)(au_mono_us() - o->since_us) / 1e6);
	w->last_error[0] = '\0';
	if (!any_down(w)) {
		w->wake_pending = 1;
		event_active(w->pump_ev, 0, 0);
	}
}

/* A zeroed attempt, from the spares when there is one: a busy worker
 * would otherwise free and allocate a batch of them per round trip, and
 * fault the pages back in each time the allocator gave them back. */
static struct attempt *attempt_new(struct au_worker *w)
{
	struct attempt *a = w->spares;

	if (!a)
		return calloc(1, sizeof(*a));
	w->spares = a->next;
	w->nspares--;
	memset(a, 0, sizeof(*a));
	return a;
}

static void attempt_free(struct attempt *a)
{
	struct au_worker *w = a->w;

	task_done(a);
	list_del(&w->lists[a->state], a);
	if (a->timer)
		event_free(a->timer);
	if (a->defer_ev)
		event_free(a->defer_ev);
	au_lease_release(&a->lease);
	au_computation_release(&a->c);
	au_prep_release(&a->prep);
	while (a->nkids)
		au_computation_release(&a->kids[--a->nkids]);
	free(a->kids);
	free(a->result);
	free(a->error);
	au_buf_release(&a->history);
	/* as many spares as a worker can hold attempts at once */
	if (w->nspares < (size_t)w->opts.concurrency + w->opts.batch) {
		a->next = w->spares;
		w->spares = a;
		w->nspares++;
	} else {
		free(a);
	}
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

static int ch_code_of(const char *error);

/* The after (completed) or on_error hooks, with the outcome as it stands. */
static void run_hooks(struct au_worker *w, struct attempt *a)
{
	a->run.result = a->run.status == AU_COMPLETED ? a->result : NULL;
	a->run.result_len = a->run.status == AU_COMPLETED ? a->result_len : 0;
	a->run.error = a->error;
	a->run.ch_code = ch_code_of(a->error);
	a->run.ch_read_rows = a->task.ch_read_rows;
	a->run.ch_read_bytes = a->task.ch_read_bytes;
	au_chain_finish(&w->chain, &a->run);
}

/* The ClickHouse code an error names ("clickhouse error 60 ..."), 0 for none. */
static int ch_code_of(const char *error)
{
	const char *p = error ? strstr(error, "clickhouse error ") : NULL;
	int code = 0;

	if (!p)
		return 0;
	for (p += 17; *p >= '0' && *p <= '9' && code < 1000000; p++)
		code = code * 10 + (*p - '0');
	return code;
}

/* This attempt joins the history the queue kept with the computation
 * (docs/wire-format.md, "History"): its record's, or the queue's again
 * for the next attempt. Without memory for it the history is left out. */
static void note_attempt(struct attempt *a, const char *outcome, const char *error)
{
	struct au_attempt_note n = { 0 };

	n.attempt = a->lease.attempts;
	n.worker = a->w->id;
	n.started_at_ms = a->started_at_ms;
	n.finished_at_ms = a->started_at_ms ? a->started_at_ms + (a->run.finished_at_us -
								  a->run.started_at_us) / 1000 : 0;
	n.outcome = outcome;
	n.error = error;
	n.ch_code = ch_code_of(error);
	au_buf_reset(&a->history);
	if (au_history_append(a->lease.story, a->lease.story_len, &n, &a->history, NULL) < 0)
		au_buf_release(&a->history);
}

/*
 * Settles a held or running attempt: what the queue will be told and what
 * the record will say. Takes error (may be NULL). A settled attempt stays
 * settled: a second decision (a task calling back after its timeout) is
 * dropped.
 */
static void decide(struct attempt *a, enum verdict v, char *error)
{
	struct au_worker *w = a->w;
	enum au_status status = AU_FAILED;
	const char *outcome = "failed";
	char *own = NULL;             /* the attempt's own error, where a->error says more */
	uint64_t ran;

	if (a->state != ATTEMPT_RUNNING && a->state != ATTEMPT_HELD && a->state != ATTEMPT_DEFERRED) {
		free(error);
		return;
	}
	if (a->defer_ev)
		evtimer_del(a->defer_ev);
	free(a->error);
	a->error = error;
	/* errors quote what a task or a server said: make them text that
	 * every client can read */
	au_utf8_scrub(a->error);
	if (a->timer)
		evtimer_del(a->timer);
	a->run.finished_at_us = au_mono_us();
	w->last_active_us = a->run.finished_at_us;
	if (a->state == ATTEMPT_RUNNING) {
		ran = a->run.finished_at_us - a->run.started_at_us;
		w->avg_run_us = w->avg_run_us ? (7 * w->avg_run_us + ran) / 8 : ran + 1;
	}
	switch (v) {
	case VERDICT_COMPLETED:
		a->disposition = DISPOSE_ACK;
		status = AU_COMPLETED;
		outcome = "completed";
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
			outcome = "retrying";
			w->stats.retried++;
		} else {
			char *e = au_asprintf("failed after %u attempts: %s", a->lease.attempts,
					      a->error ? a->error : "");

			if (e) {
				own = a->error;
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
	case VERDICT_CANCELLED:
		a->disposition = DISPOSE_ACK;
		status = AU_CANCELLED;
		outcome = "cancelled";
		w->stats.cancelled++;
		break;
	case VERDICT_RELEASED:
	case VERDICT_OUTAGE:
		a->disposition = DISPOSE_RELEASE;
		status = AU_RUNNING;   /* no outcome: another attempt will have one */
		w->stats.released++;
		break;
	}
	a->run.status = status;
	a->run.retry_in_ms = a->disposition == DISPOSE_RETRY ? a->retry_delay_ms : 0;
	a->run.dead = a->disposition == DISPOSE_BURY;
	if (v != VERDICT_RELEASED && v != VERDICT_OUTAGE) {
		note_attempt(a, outcome, own ? own : a->error);
		free(own);
		run_hooks(w, a);
	}
	set_state(a, ATTEMPT_DECIDED);
	event_active(w->flush_ev, 0, 0);
	/* the one tried while the tasks' server was down came to an outcome */
	if (v == VERDICT_OUTAGE)
		outage_begin(w, PART_TASKS, a->error ? a->error : "unavailable");
	else if (v != VERDICT_RELEASED && v != VERDICT_REJECTED && w->outage[PART_TASKS].trying == 2)
		outage_end(w, PART_TASKS);
	else if (w->outage[PART_TASKS].trying == 2 && v != VERDICT_OUTAGE)
		w->outage[PART_TASKS].trying = 1;   /* it proved nothing: try another */
}

/* The task called back: 1 if its call still decides the attempt, 0 if the
 * worker gave up on it already (a zombie is then done with). */
static int task_returned(struct attempt *a)
{
	struct au_worker *w = a->w;

	task_done(a);
	if (a->state == ATTEMPT_RUNNING)
		return 1;
	if (a->state == ATTEMPT_ZOMBIE) {
		attempt_free(a);
		event_active(w->start_ev, 0, 0);   /* a slot came free */
	}
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
	if (len && memmem(result, len, "$spawn", 6)) {   /* children for its flow */
		unsigned char *kept = NULL;
		size_t kept_len = 0;
		struct au_err err;

		if (au_flow_spawn(&a->c, result, len, &a->kids, &a->nkids, &kept, &kept_len, &err) < 0) {
			decide(a, VERDICT_FAILED, au_asprintf("cannot add its children: %s", err.str));
			return;
		}
		if (kept) {
			a->result = kept;
			a->result_len = kept_len;
			decide(a, VERDICT_COMPLETED, NULL);
			return;
		}
	}
	if (!(a->result = malloc(len ? len : 1))) {
		decide(a, VERDICT_RETRYABLE, au_strdup("out of memory"));
		return;
	}
	memcpy(a->result, result, len);
	a->result_len = len;
	decide(a, VERDICT_COMPLETED, NULL);
}

static void attempt_fail(struct au_task_ctx *ctx, int kind, const char *msg)
{
	struct attempt *a = (struct attempt *)ctx;

	if (task_returned(a))
		decide(a, kind == AU_FAIL_OUTAGE ? VERDICT_OUTAGE
			  : kind ? VERDICT_RETRYABLE : VERDICT_FAILED, au_strdup(msg));
}

/* au_task_offload: the pool starts with the first job (worker/pool.c). */
static int attempt_offload(struct au_task_ctx *ctx, void (*work)(void *arg),
			   void (*done)(struct au_task_ctx *ctx, void *arg), void *arg)
{
	struct au_worker *w = ((struct attempt *)ctx)->w;
	unsigned n = w->opts.pool_threads ? w->opts.pool_threads : AU_DEFAULT_POOL_THREADS;

	if (!w->pool && !(w->pool = au_pool_new(w->base, n))) {
		au_log(AU_LOG_ERROR, "unable to start the worker's %u pool threads", n);
		return -1;
	}
	return au_pool_offload(w->pool, ctx, work, done, arg);
}

static const struct au_task_ops attempt_task_ops = {
	.complete = attempt_complete,
	.fail = attempt_fail,
	.offload = attempt_offload,
};

/* Tells a still-running task to let go. Without a cancel hook it is
 * waited for, and becomes a zombie once written back. */
static void abandon(struct attempt *a)
{
	if (!a->task_busy || !a->task.cancel_fn)
		return;
	task_done(a);
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
	decide(a, a->c.fail_on_timeout ? VERDICT_FAILED : VERDICT_RETRYABLE,
	       au_asprintf("timed out after %u ms", a->c.timeout_ms));
	abandon(a);
	cb_leave(w, t0);
}

static int find_task(const struct au_worker *w, const char *name, au_task_fn *fn, void **arg)
{
	return (w->reg && au_registry_find(w->reg, name, fn, arg) == 0) ||
	       (w->plugins && au_registry_find(w->plugins, name, fn, arg) == 0) ||
	       au_registry_find(w->builtins, name, fn, arg) == 0 ? 0 : -1;
}

/* A lease came back: its attempt is held until a slot is free. */
static void take(struct au_worker *w, struct au_lease *l, unsigned qi, struct au_prep *prep)
{
	struct attempt *a = attempt_new(w);

	if (!a) {
		au_log(AU_LOG_ERROR, "out of memory starting computation '%s'", l->ref.id);
		au_lease_release(l);   /* the lease runs out and another worker takes it */
		au_prep_release(prep);
		return;
	}
	a->w = w;
	a->task.ops = &attempt_task_ops;
	a->task.base = w->base;
	a->task.ch = w->ch;
	a->lease = *l;
	a->qi = qi;
	memset(l, 0, sizeof(*l));
	a->prep = *prep;
	memset(prep, 0, sizeof(*prep));
	a->run.c = &a->c;
	a->run.worker = au_worker_name();
	a->run.status = AU_RUNNING;
	a->run.queue = w->ql.names[qi];
	a->run.attempt = a->lease.attempts;
	a->run.query_id = a->task.query_id;
	a->run.worker_ctx = a;
	au_computation_init(&a->c);
	memcpy(a->c.id, a->lease.ref.id, AU_ID_SIZE);
	a->c.attempts = a->lease.attempts;
	a->state = ATTEMPT_HELD;
	list_add(&w->lists[ATTEMPT_HELD], a);
	w->stats.leased++;
}

/* "[<trace id>:]<id>-<attempt>", without a printf per computation: a
 * computation with a traceparent header is found by its trace id in
 * ClickHouse's system.query_log too. */
static void query_id(char out[AU_QUERY_ID_SIZE], const struct au_computation *c, uint32_t attempt)
{
	char tmp[12], *p = tmp + sizeof(tmp), trace[AU_ID_SIZE];
	size_t n, at = 0;

	do
		*--p = (char)('0' + attempt % 10);
	while (attempt /= 10);
	n = (size_t)(tmp + sizeof(tmp) - p);
	if (c->nheaders && au_traceparent_trace_id(au_computation_header(c, "traceparent"), trace) == 0) {
		memcpy(out, trace, AU_ID_SIZE - 1);
		out[AU_ID_SIZE - 1] = ':';
		at = AU_ID_SIZE;
	}
	memcpy(out + at, c->id, AU_ID_SIZE - 1);
	out[at + AU_ID_SIZE - 1] = '-';
	memcpy(out + at + AU_ID_SIZE, p, n);
	out[at + AU_ID_SIZE + n] = '\0';
}

/* Reads a held attempt's computation; -1 when it cannot run at all (the
 * attempt is then decided). */
static int unpack(struct au_worker *w, struct attempt *a)
{
	struct au_err err = { 0, "" };

	if (a->unpacked)
		return 0;
	a->unpacked = 1;
	if (au_computation_decode(a->lease.body, a->lease.body_len, &a->c, &err) < 0) {
		au_computation_release(&a->c);
		au_computation_init(&a->c);
		memcpy(a->c.id, a->lease.ref.id, AU_ID_SIZE);
		a->c.queue = au_strdup(w->ql.names[a->qi]);
		a->c.attempts = a->lease.attempts;
		a->c.ttl_s = AU_DEFAULT_TTL_S;   /* its record must not stay forever */
		decide(a, VERDICT_REJECTED, au_strdup(err.str));
		return -1;
	}
	a->c.attempts = a->lease.attempts;
	query_id(a->task.query_id, &a->c, a->lease.attempts);
	if (strcmp(a->c.id, a->lease.ref.id) != 0) {
		decide(a, VERDICT_REJECTED,
		       au_strdup("malformed computation: id does not match the queue's"));
		return -1;
	}
	if (a->prep.verdict) {
		enum verdict v = a->prep.verdict == AU_PREP_CANCEL ? VERDICT_CANCELLED
				 : a->prep.verdict == AU_PREP_AWAY ? VERDICT_OUTAGE : VERDICT_FAILED;

		decide(a, v, a->prep.error);   /* unrun */
		a->prep.error = NULL;
		return -1;
	}
	if (a->prep.args) {   /* its references, replaced by what they produced */
		free(a->c.args);
		a->c.args = a->prep.args;
		a->c.args_len = a->prep.args_len;
		a->prep.args = NULL;
	}
	if (find_task(w, a->c.task, &a->fn, &a->fn_arg) < 0) {
		decide(a, VERDICT_REJECTED, au_asprintf("unknown task '%s'", a->c.task));
		return -1;
	}
	if (!a->c.timeout_ms && w->ntimeouts) {   /* its task's default, if it has none */
		size_t i;

		for (i = 0; i < w->ntimeouts; i++)
			if (!strcmp(w->timeouts[i].task, a->c.task))
				a->c.timeout_ms = w->timeouts[i].ms;
	}
	return 0;
}

/* Its timer and its task: the before hooks let it run. */
static void run_task(struct au_worker *w, struct attempt *a)
{
	if (a->c.timeout_ms) {
		struct timeval tv = { (time_t)(a->c.timeout_ms / 1000),
				      (suseconds_t)(a->c.timeout_ms % 1000) * 1000 };

		if (!a->timer)
			a->timer = evtimer_new(w->base, on_timeout, a);
		if (a->timer)
			evtimer_add(a->timer, &tv);
	}
	a->task_busy = 1;
	w->tasks_busy++;
	a->fn(&a->task, &a->c, a->fn_arg);
}

static void defer_cb(evutil_socket_t fd, short what, void *arg);

/* What the before hooks came to (au_chain_before's answer). */
static void hooks_said(struct au_worker *w, struct attempt *a, int rc, const char *msg)
{
	struct timeval tv;

	switch (rc) {
	case AU_HOOK_OK:
		run_task(w, a);
		return;
	case AU_HOOK_PENDING:
		/* the hook holds the slot, as a task would, until it answers */
		a->in_hook = 1;
		a->task_busy = 1;
		w->tasks_busy++;
		return;
	case AU_HOOK_REFUSE:
		decide(a, VERDICT_REJECTED, au_strdup(msg));
		return;
	case AU_HOOK_DELAY:
		/* back to wait, without its slot: it begins again when due */
		if (!a->defer_ev && !(a->defer_ev = evtimer_new(w->base, defer_cb, a))) {
			decide(a, VERDICT_RELEASED, NULL);
			return;
		}
		tv.tv_sec = (time_t)(a->run.delay_ms / 1000);
		tv.tv_usec = (suseconds_t)(a->run.delay_ms % 1000) * 1000;
		a->defer_due_us = au_mono_us() + a->run.delay_ms * 1000;
		set_state(a, ATTEMPT_DEFERRED);
		evtimer_add(a->defer_ev, &tv);
		event_active(w->start_ev, 0, 0);   /* its slot is free */
		return;
	default:
		decide(a, VERDICT_FAILED, au_strdup(msg));
	}
}

/* A held attempt gets its slot: the before hooks, then its timer and its task. */
static void begin(struct au_worker *w, struct attempt *a)
{
	char errbuf[512];

	a->run.started_at_us = au_mono_us();
	a->started_at_ms = au_now_ms();
	w->last_active_us = a->run.started_at_us;
	if (unpack(w, a) < 0)
		return;
	set_state(a, ATTEMPT_RUNNING);
	if (!w->chain.n) {
		run_task(w, a);
		return;
	}
	{
		uint64_t due = a->c.run_at_ms > a->c.created_at_ms ? a->c.run_at_ms : a->c.created_at_ms;

		a->run.queued_ms = due && due < a->started_at_ms ? a->started_at_ms - due : 0;
	}
	a->hook_pos = 0;
	hooks_said(w, a, au_chain_before(&w->chain, &a->run, &a->hook_pos, errbuf, sizeof(errbuf)),
		   errbuf);
}

/* A deferred attempt is due: it waits for a slot again, first in line. */
static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct attempt *a = arg;
	struct au_worker *w = a->w;
	uint64_t now;

	(void)fd;
	(void)what;
	if (a->state != ATTEMPT_DEFERRED)
		return;
	now = au_mono_us();
	if (now < a->defer_due_us) {
		/* libevent's clock is the coarse one, a tick early at times: the
		 * delay asked for is at least */
		uint64_t left = a->defer_due_us - now;
		struct timeval tv = { (time_t)(left / 1000000), (suseconds_t)(left % 1000000) };

		evtimer_add(a->defer_ev, &tv);
		return;
	}
	list_del(&w->lists[ATTEMPT_DEFERRED], a);
	a->state = ATTEMPT_HELD;
	a->next = w->lists[ATTEMPT_HELD].head;
	a->prev = NULL;
	if (a->next)
		a->next->prev = a;
	else
		w->lists[ATTEMPT_HELD].tail = a;
	w->lists[ATTEMPT_HELD].head = a;
	w->lists[ATTEMPT_HELD].n++;
	event_active(w->start_ev, 0, 0);
}

void au_run_resume(struct au_run *run, int rc, uint64_t delay_ms, const char *message)
{
	struct attempt *a = run->worker_ctx;
	struct au_worker *w = a->w;
	char errbuf[512];

	if (!a->in_hook)
		return;
	a->in_hook = 0;
	if (!task_returned(a))   /* given up meanwhile (shutdown, cancel) */
		return;
	run->delay_ms = delay_ms;
	rc = au_chain_hook_result(&w->chain, a->hook_pos, "before", rc, message, errbuf,
				  sizeof(errbuf));
	if (rc == AU_HOOK_OK) {
		a->hook_pos++;
		rc = au_chain_before(&w->chain, &a->run, &a->hook_pos, errbuf, sizeof(errbuf));
	}
	hooks_said(w, a, rc, errbuf);
}

struct event_base *au_run_base(const struct au_run *run)
{
	return ((const struct attempt *)run->worker_ctx)->w->base;
}

/* Held and deferred attempts go back to the queue unharmed. */
static void release_held(struct au_worker *w)
{
	struct attempt *a;

	while ((a = w->lists[ATTEMPT_DEFERRED].head))
		decide(a, VERDICT_RELEASED, NULL);
	while ((a = w->lists[ATTEMPT_HELD].head))
		decide(a, VERDICT_RELEASED, NULL);
}

static void stop_now(struct au_worker *w);
static void pump(struct au_worker *w);

/* Begins held attempts while slots are free, a bounded number per call. */
static void start_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	int n = 0;

	(void)fd;
	(void)what;
	while (w->lists[ATTEMPT_HELD].head && busy(w) < w->opts.concurrency &&
	       !(w->outage[PART_TASKS].down && w->outage[PART_TASKS].trying != 2)) {
		if (n++ == START_PER_CALLBACK) {
			event_active(w->start_ev, 0, 0);
			return;
		}
		begin(w, w->lists[ATTEMPT_HELD].head);
	}
	pump(w);
}

static void record_of(const struct attempt *a, struct au_record *r)
{
	memset(r, 0, sizeof(*r));
	memcpy(r->id, a->c.id, AU_ID_SIZE);
	r->status = a->run.status;
	r->result = a->result;
	r->result_len = a->result_len;
	r->error = a->error;
	r->history = a->history.data;
	r->history_len = a->history.len;
	r->task = a->c.task;
	r->queue = a->c.queue;
	r->worker = (char *)a->run.worker;
	r->attempts = a->lease.attempts;
	r->ttl_s = a->c.ttl_s;   /* 0: never expires */
	r->created_at_ms = a->c.created_at_ms;
	r->started_at_ms = a->started_at_ms;
	r->finished_at_ms = a->started_at_ms + (a->run.finished_at_us - a->run.started_at_us) / 1000;
}

/* ---- on the I/O thread ---- */

static void lease_io(struct au_io_req *r)
{
	struct lease_req *l = (struct lease_req *)r;
	struct au_worker *w = l->w;

	size_t order[AU_MAX_QUEUES], k, i, got;

	/* strict order, or one drawn by weight: the first queue gets all it
	 * has, the next what is still missing, and so on */
	au_queue_list_order(&w->ql, order);
	l->n = 0;
	l->rc = 0;
	for (k = 0; k < w->ql.n && l->n < l->max; k++) {
		got = 0;
		if (au_queue_lease(w->q, w->ql.names[order[k]], l->max - l->n, w->opts.lease_ms, 0,
				   l->out + l->n, &got) < 0) {
			/* what the others gave is kept: reported only when nothing came */
			l->rc = l->n ? 0 : -1;
			l->err = w->q->err;
			break;
		}
		for (i = 0; i < got; i++)
			l->qi[l->n + i] = (unsigned)order[k];
		l->n += got;
	}
	/* a flow's computation: its dependencies' records, read here, off the loop */
	for (i = 0; i < l->n; i++) {
		struct au_err err;

		memset(&l->prep[i], 0, sizeof(l->prep[i]));
		if (au_flow_needs_prep(l->out[i].body, l->out[i].body_len) &&
		    au_flow_prepare(w->store, l->out[i].body, l->out[i].body_len, &l->prep[i], &err) < 0) {
			l->prep[i].verdict = AU_PREP_AWAY;
			l->prep[i].error = au_strdup(err.str);
		}
	}
}

/*
 * The records of [from, to) failed to store together. A store that is
 * away (no connection, no answer) is no record's fault: they are all kept
 * for later, and nothing is decided. Otherwise each is tried alone, so
 * one bad record (too large, say) does not hold back the others; one the
 * store refuses goes to the dead letter set with the reason, since its
 * attempt must not be acked without it.
 */
static void unstored(struct flush_req *f, size_t from, size_t to)
{
	struct au_store *store = f->w->store;
	int away = outage_code(store->err.code);
	size_t i;

	for (i = 0; i < f->n; i++) {
		struct writeback *b = &f->wb[i];

		if (b->record < (int)from || b->record >= (int)to || b->done)
			continue;
		if (!away && au_store_put(store, &f->recs[b->record], 1, NULL) == 0) {
			b->stored = 1;
			continue;
		}
		if (away || outage_code(store->err.code)) {
			b->kept = 1;
			f->store_down = 1;
			f->store_err = store->err;
			continue;
		}
		b->why = au_asprintf("result not stored: %s", store->err.str);
		b->error = b->why ? b->why : "result not stored";
		b->d = DISPOSE_BURY;
	}
}

/* Acks with their records in one transaction per queue, where the queue
 * can: 0 when every ack went so. (The records of each queue's acks are
 * together in recs, in the order of wb: see flush.) */
static int ack_stored(struct flush_req *f)
{
	struct au_worker *w = f->w;
	size_t i, k, qi;
	int rc = 0;

	if (!w->ack_store || !f->nack)
		return -1;
	for (qi = 0; qi < w->ql.n && w->ack_store; qi++) {
		for (i = k = 0; i < f->n; i++)
			if (f->wb[i].d == DISPOSE_ACK && f->wb[i].record >= 0 && f->wb[i].qi == qi) {
				f->refs[k] = f->wb[i].ref;
				f->idx[k++] = i;
			}
		if (!k)
			continue;
		if (au_queue_ack_store(w->q, w->ql.names[qi], w->store_url, f->refs,
				       f->recs + f->wb[f->idx[0]].record, k, f->applied) < 0) {
			if (w->q->err.code == AU_ESTATE)
				w->ack_store = 0;   /* not one database: never again */
			rc = -1;
			continue;
		}
		for (i = 0; i < k; i++)
			f->wb[f->idx[i]].done = f->wb[f->idx[i]].stored = 1;
	}
	return w->ack_store ? rc : -1;
}

/* Tells queue (the worker's qi-th) what became of the attempts of f that
 * came from it and have disposition d, in one call. */
static void tell_queue(struct flush_req *f, const char *name, unsigned qi, enum disposition d)
{
	struct au_worker *w = f->w;
	size_t i, k = 0;
	int rc;

	for (i = 0; i < f->n; i++) {
		struct writeback *b = &f->wb[i];

		if (b->done || b->kept || b->d != d || b->qi != qi)
			continue;
		f->refs[k] = b->ref;
		f->delays[k] = b->delay_ms;
		f->texts[k] = b->error ? b->error : "failed";
		f->stories[k].data = b->history;
		f->stories[k].len = b->history_len;
		f->idx[k++] = i;
	}
	if (!k)
		return;
	switch (d) {
	case DISPOSE_ACK:
		rc = au_queue_ack(w->q, name, f->refs, k, f->applied);
		break;
	case DISPOSE_RETRY:
		rc = au_queue_retry(w->q, name, f->refs, k, f->delays, f->texts, f->stories,
				    f->applied);
		break;
	case DISPOSE_BURY:
		rc = au_queue_bury(w->q, name, f->refs, k, f->texts, f->applied);
		break;
	default:
		rc = au_queue_release(w->q, name, f->refs, k, f->applied);
		break;
	}
	if (rc < 0 && outage_code(w->q->err.code)) {
		/* told nothing: kept, told again once the queue is back */
		for (i = 0; i < k; i++)
			f->wb[f->idx[i]].kept = 1;
		f->queue_down = 1;
		f->queue_err = w->q->err;
	} else if (rc < 0) {
		f->queue_failed = 1;
		f->queue_err = w->q->err;
	}
}

/*
 * The children that completed parents asked for go to the queue before
 * the parents' acks, and what waits for each parent waits for its
 * children too (adopt): a crash in between re-runs the parent, which adds
 * the same ids again, which the queue leaves alone. A queue that is away
 * keeps the parent for later; one that refuses buries it with the reason.
 * 0 when there were none or all went.
 */
static int add_children(struct flush_req *f)
{
	struct au_worker *w = f->w;
	int rc = 0;

	for (size_t i = 0; i < f->n; i++) {
		struct writeback *b = &f->wb[i];
		char (*ids)[AU_ID_SIZE];

		if (!b->nkids || b->d != DISPOSE_ACK)
			continue;
		rc = -1;
		if (!(ids = malloc(b->nkids * sizeof(*ids)))) {
			b->kept = f->queue_down = 1;
			au_seterr(&f->queue_err, AU_ENOMEM, "out of memory");
			continue;
		}
		for (size_t k = 0; k < b->nkids; k++)
			memcpy(ids[k], b->kids[k].id, AU_ID_SIZE);
		if (au_queue_push(w->q, b->kids, b->nkids) < 0 ||
		    au_queue_adopt(w->q, b->ref.id, (const char (*)[AU_ID_SIZE])ids, b->nkids) < 0) {
			if (outage_code(w->q->err.code)) {
				b->kept = f->queue_down = 1;
				f->queue_err = w->q->err;
			} else {
				b->why = au_asprintf("cannot add its children: %s", w->q->err.str);
				b->error = b->why ? b->why : "cannot add its children";
				b->d = DISPOSE_BURY;
			}
		}
		free(ids);
	}
	return rc;
}

static void flush_io(struct au_io_req *r)
{
	struct flush_req *f = (struct flush_req *)r;
	struct au_worker *w = f->w;
	size_t from = 0, i, d, qi;

	f->store_failed = f->queue_failed = f->store_down = f->queue_down = 0;
	if (add_children(f) == 0 && ack_stored(f) == 0)
		from = f->nack;
	if (f->nrec > from && au_store_put(w->store, f->recs + from, f->nrec - from, NULL) < 0) {
		f->store_failed = !outage_code(w->store->err.code);
		f->store_err = w->store->err;
		unstored(f, from, f->nrec);
	} else {
		for (i = 0; i < f->n; i++)
			if (f->wb[i].record >= (int)from)
				f->wb[i].stored = 1;
	}
	/* Each call on its own: what fails here runs out its lease and is
	 * rescued, and must not hold back the others. */
	for (qi = 0; qi < w->ql.n; qi++)
		for (d = 0; d < DISPOSE_N; d++)
			tell_queue(f, w->ql.names[qi], (unsigned)qi, (enum disposition)d);
	for (i = 0; i < f->n; i++) {
		free(f->wb[i].body);
		f->wb[i].body = NULL;
	}
}

static void extend_io(struct au_io_req *r)
{
	struct extend_req *e = (struct extend_req *)r;
	struct au_worker *w = e->w;
	size_t qi, from, n, i;

	e->rc = 0;
	for (qi = 0; qi < w->ql.n; qi++) {
		from = e->from[qi];
		n = e->from[qi + 1] - from;
		if (n && au_queue_extend(w->q, w->ql.names[qi], e->refs + from, n, w->opts.lease_ms,
					 e->applied + from) < 0) {
			e->rc = -1;
			e->err = w->q->err;
			for (i = 0; i < n; i++)   /* not known to be lost */
				e->applied[from + i] = 1;
		}
	}
}

static void rescue_io(struct au_io_req *r)
{
	struct rescue_req *s = (struct rescue_req *)r;
	struct au_worker *w = s->w;

	size_t qi, requeued, buried;

	s->requeued = s->buried = s->swept = 0;
	s->queue_rc = 0;
	for (qi = 0; qi < w->ql.n; qi++) {
		requeued = buried = 0;
		if (au_queue_rescue(w->q, w->ql.names[qi], RESCUE_MAX, &requeued, &buried) < 0) {
			s->queue_rc = -1;
			s->queue_err = w->q->err;
		}
		s->requeued += requeued;
		s->buried += buried;
	}
	s->store_rc = 0;
	if (s->sweep && (s->store_rc = au_store_sweep(w->store, SWEEP_MAX, &s->swept)) < 0)
		s->store_err = w->store->err;
	s->gc_rc = 0;
	if (s->gc) {
		if (!w->gc_ch && w->ch_url)
			w->gc_ch = au_ch_new(w->ch_url, &s->gc_err);
		s->gc_rc = au_flow_gc(w->q, w->store, w->gc_ch, w->id, &s->gc_st, &s->gc_err);
	}
}

/* ---- back on the loop ---- */

static void lease_done(struct au_worker *w)
{
	struct lease_req *l = &w->lease;
	size_t i;

	l->busy = 0;
	if (l->rc < 0) {
		report(w, &l->err);
		if (w->outage[PART_TASKS].trying == 2)
			w->outage[PART_TASKS].trying = 1;
		return;   /* the poll timer tries again */
	}
	recovered(w);
	w->queue_empty = l->n < l->max;
	if (!l->n && w->outage[PART_TASKS].trying == 2)
		w->outage[PART_TASKS].trying = 1;   /* nothing to try with yet */
	for (i = 0; i < l->n; i++)
		take(w, &l->out[i], l->qi[i], &l->prep[i]);
	if (w->stopping)   /* leased while stopping: back unharmed */
		release_held(w);
	start_run(-1, 0, w);
}

/* Sends a lease when there is room and maybe work: after a wake-up, or
 * while the last lease found all it asked for. Small refills wait until
 * a slot is idle or half a prefetch is missing. */
static void pump(struct au_worker *w)
{
	size_t n;

	update_watch(w);
	if (w->stopping || w->lease.busy || !w->io || (w->queue_empty && !w->wake_pending))
		return;
	if (writes_held(w))
		return;
	if (w->outage[PART_TASKS].down) {
		/* half open: one computation tries whether the server is back */
		if (w->outage[PART_TASKS].trying != 1 || busy(w) || count(w, ATTEMPT_HELD))
			return;
		w->outage[PART_TASKS].trying = 2;
		n = 1;
	} else {
		n = room(w);
		if (!n || (busy(w) + count(w, ATTEMPT_HELD) >= w->opts.concurrency &&
			   n < (prefetch_max(w) + 1) / 2))
			return;
	}
	w->lease.max = n < w->opts.batch ? n : w->opts.batch;
	w->lease.busy = 1;
	w->wake_pending = 0;
	au_io_submit(w->io, &w->lease.io);
}

static void pump_run(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pump(arg);
}

/* Hands up to flush.cap decided attempts to the I/O thread. */
static void flush(struct au_worker *w)
{
	struct flush_req *f = &w->flush;
	struct attempt *a;
	size_t i, pass, qi;

	if (f->busy || !w->lists[ATTEMPT_DECIDED].head)
		return;
	if (writes_held(w) && !w->flush_retry)
		return;   /* what is kept waits for the end of the back-off */
	w->flush_retry = 0;
	f->n = f->nrec = f->nack = 0;
	while ((a = w->lists[ATTEMPT_DECIDED].head) && f->n < f->cap) {
		struct writeback *b = &f->wb[f->n++];

		set_state(a, ATTEMPT_WRITING);
		b->a = a;
		b->ref = a->lease.ref;
		b->qi = a->qi;
		b->d = a->disposition;
		b->record = -1;
		b->completed = a->run.status == AU_COMPLETED;
		b->retries_left = a->lease.attempts < a->c.max_attempts;
		b->attempts = a->lease.attempts;
		b->delay_ms = b->d == DISPOSE_RETRY ? a->retry_delay_ms : 0;
		b->error = a->error;
		b->history = a->history.data;
		b->history_len = a->history.len;
		b->kids = b->d == DISPOSE_ACK && b->completed ? a->kids : NULL;
		b->nkids = b->kids ? a->nkids : 0;
		b->why = NULL;
		b->done = b->kept = 0;
		b->stored = a->stored;
		/* the body came from the thread's allocations: freed there, it
		 * costs the loop no free into another thread's arena */
		b->body = a->lease.body;
		a->lease.body = NULL;
		a->lease.body_len = 0;
	}
	/* records of acks first, those of each queue together: ack_store
	 * takes recs[0..nack), one queue's at a time */
	for (pass = 0; pass < 2; pass++) {
		for (qi = 0; qi < (pass ? 1 : w->ql.n); qi++) {
			for (i = 0; i < f->n; i++) {
				struct writeback *b = &f->wb[i];

				if (b->stored || b->d != (pass ? DISPOSE_BURY : DISPOSE_ACK) ||
				    (!pass && b->qi != qi))
					continue;
				b->record = (int)f->nrec;
				record_of(b->a, &f->recs[f->nrec++]);
				if (!pass)
					f->nack++;
			}
		}
	}
	f->busy = 1;
	au_io_submit(w->io, &f->io);
}

static void flush_done(struct au_worker *w)
{
	struct flush_req *f = &w->flush;
	int tried_store = 0, tried_queue = 0;
	size_t i;

	f->busy = 0;
	if (f->store_failed)
		report(w, &f->store_err);
	if (f->queue_failed)
		report(w, &f->queue_err);
	for (i = 0; i < f->n; i++) {
		struct writeback *b = &f->wb[i];
		struct attempt *a = b->a;

		if (b->kept) {   /* nothing decided: again after the back-off */
			a->stored = b->stored;
			set_state(a, ATTEMPT_DECIDED);
			continue;
		}
		if (b->record >= 0 && b->stored)
			tried_store = 1;
		tried_queue = 1;

		if (b->why) {   /* its record was not stored: a second outcome */
			free(a->error);
			a->error = b->why;
			a->disposition = b->d;
			a->run.status = b->d == DISPOSE_RETRY ? AU_RETRYING : AU_FAILED;
			run_hooks(w, a);
		}
		if (a->disposition == DISPOSE_BURY)
			w->stats.buried++;
		if (a->task_busy)
			set_state(a, ATTEMPT_ZOMBIE);
		else
			attempt_free(a);
	}
	f->n = 0;
	if (f->store_down)
		outage_begin(w, PART_STORE, f->store_err.str);
	else if (tried_store)
		outage_end(w, PART_STORE);
	if (f->queue_down)
		outage_begin(w, PART_QUEUE, f->queue_err.str);
	else if (tried_queue)
		outage_end(w, PART_QUEUE);
	if (w->stopping)
		return;
	/* max_jobs counts attempts leased: stop once they are all written back */
	if (w->opts.max_jobs && w->stats.leased >= w->opts.max_jobs && !inflight(w)) {
		au_worker_stop(w);
		return;
	}
	start_run(-1, 0, w);
}

static void extend_done(struct au_worker *w)
{
	struct extend_req *e = &w->extend;
	struct attempt *a;
	size_t i;
	int st;

	e->busy = 0;
	if (e->rc < 0)
		report(w, &e->err);   /* applied[] is 1 for what the failed calls held */
	/* rare: find the attempts, which may have moved on since */
	for (i = 0; i < e->n; i++) {
		if (e->applied[i])
			continue;
		for (st = ATTEMPT_HELD; st <= ATTEMPT_DECIDED; st++)
			for (a = w->lists[st].head; a; a = a->next)
				if (!a->lost && !strcmp(a->lease.ref.id, e->refs[i].id) &&
				    !strcmp(a->lease.ref.token, e->refs[i].token)) {
					a->lost = 1;
					au_log(AU_LOG_WARN, "lease of computation '%s' was lost",
					       a->c.id);
				}
	}
}

static void rescue_done(struct au_worker *w)
{
	struct rescue_req *s = &w->rescue;

	s->busy = 0;
	if (s->queue_rc < 0)
		report(w, &s->queue_err);
	else if (s->requeued || s->buried)
		au_log(AU_LOG_WARN, "rescued %zu expired leases on queue%s '%s' (%zu dead-lettered)",
		       s->requeued + s->buried, w->ql.n > 1 ? "s" : "", w->queues_text, s->buried);
	if (s->store_rc < 0)
		report(w, &s->store_err);
	if (s->gc && s->gc_rc < 0)
		au_log(AU_LOG_WARN, "flows past their ttl wait: %s", s->gc_err.str);
	else if (s->gc && s->gc_st.expired)
		au_log(AU_LOG_INFO, "%zu flows past their ttl removed, with %zu tables",
		       s->gc_st.expired, s->gc_st.tables);
	if (s->requeued) {
		w->wake_pending = 1;
		pump(w);
	}
}

/* ---- the registry: one beat every AU_BEAT_EVERY_MS ---- */

/* What the entry says now: counts, what runs, the state. */
static void beat_fill(struct au_worker *w, struct au_worker_beat *b)
{
	const char *name = au_worker_name(), *colon = strrchr(name, ':');
	static const enum attempt_state runs[] = { ATTEMPT_RUNNING, ATTEMPT_ZOMBIE };
	struct attempt *a;
	size_t i;

	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "%s", w->id);
	snprintf(b->host, sizeof(b->host), "%.*s", colon ? (int)(colon - name) : (int)strlen(name),
		 name);
	b->pid = (uint32_t)getpid();
	snprintf(b->queues, sizeof(b->queues), "%s", w->queues_text);
	snprintf(b->version, sizeof(b->version), "%s", AU_VERSION);
	b->started_ms = w->started_ms;
	b->concurrency = w->opts.concurrency;
	if (w->stopping) {
		b->state = AU_BEAT_DRAINING;
	} else if (any_down(w)) {
		b->state = AU_BEAT_PAUSED;
		snprintf(b->paused_by, sizeof(b->paused_by), "%s",
			 w->outage[PART_TASKS].down ? "tasks"
			 : w->outage[PART_STORE].down ? "store" : "queue");
	}
	/* running, then timed out but still holding their slots */
	b->running = (uint32_t)(count(w, ATTEMPT_RUNNING) + count(w, ATTEMPT_ZOMBIE));
	for (i = 0; i < AU_ARRAY_SIZE(runs); i++)
		for (a = w->lists[runs[i]].head; a && b->nids < AU_BEAT_IDS; a = a->next)
			memcpy(b->ids[b->nids++], a->lease.ref.id, AU_ID_SIZE);
	b->leased = w->stats.leased;
	b->completed = w->stats.completed;
	b->failed = w->stats.failed;
	b->retried = w->stats.retried;
	b->released = w->stats.released;
	b->outages = w->stats.outages;
	b->ttl_ms = AU_BEAT_TTL_MS;
	if (w->metrics)
		b->metrics_len = (uint32_t)au_metrics_blob(w->metrics, b->metrics, sizeof(b->metrics));
}

static void beat_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct beat_req *b = &w->beat;

	(void)fd;
	(void)what;
	if (b->busy || b->off || !w->io || w->exited)
		return;
	beat_fill(w, &b->b);
	b->busy = 1;
	au_io_submit(w->io, &b->io);
}

static void beat_io(struct au_io_req *r)
{
	struct beat_req *b = (struct beat_req *)r;
	struct au_worker *w = b->w;

	b->stop = 0;
	b->rc = au_queue_beat(w->q, &b->b, &b->stop);
	if (b->rc < 0)
		b->err = w->q->err;
}

static void beat_done(struct au_worker *w)
{
	struct beat_req *b = &w->beat;

	b->busy = 0;
	if (b->rc < 0) {
		if (b->err.code == AU_ESTATE) {   /* no registry: nothing to beat */
			au_log(AU_LOG_DEBUG, "%s", b->err.str);
			b->off = 1;
		} else {
			report(w, &b->err);
		}
		return;
	}
	b->registered = 1;
	if (b->stop && !w->stopping) {
		au_log(AU_LOG_INFO, "worker '%s' asked to stop (au worker stop): draining", w->id);
		w->asked_to_stop = 1;
		au_worker_stop(w);
		beat_run(-1, 0, w);   /* the registry shows it draining */
	}
}

/* The I/O thread handed requests back. */
static void io_ready(void *arg)
{
	struct au_worker *w = arg;
	uint64_t t0 = cb_enter(w);
	struct au_io_req *r, *next;

	for (r = au_io_done(w->io); r; r = next) {
		next = r->next;
		if (r == &w->lease.io)
			lease_done(w);
		else if (r == &w->flush.io)
			flush_done(w);
		else if (r == &w->extend.io)
			extend_done(w);
		else if (r == &w->beat.io)
			beat_done(w);
		else
			rescue_done(w);
	}
	flush(w);
	maybe_exit(w);
	cb_leave(w, t0);
}

static void flush_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;

	(void)fd;
	(void)what;
	flush(w);
	/* decisions free slots: begin what is held, lease what is missing */
	start_run(-1, 0, w);
}

static void wake_cb(void *arg)
{
	struct au_worker *w = arg;

	w->wake_pending = 1;
	event_active(w->pump_ev, 0, 0);
}

/* A client cancelled computation id: if it is ours and has no outcome
 * yet, it stops (its ClickHouse query is killed by the task's cancel
 * hook) and is acked; its record, stored by the client first, stays. */
static void cancel_cb(void *arg, const char *id)
{
	struct au_worker *w = arg;
	uint64_t t0 = cb_enter(w);
	struct attempt *a, *next;
	int st;

	for (st = ATTEMPT_HELD; st <= ATTEMPT_RUNNING; st++)
		for (a = w->lists[st].head; a; a = next) {
			next = a->next;
			if (strcmp(a->lease.ref.id, id) != 0)
				continue;
			au_log(AU_LOG_INFO, "computation '%s' cancelled by a client: stopping it", id);
			decide(a, VERDICT_CANCELLED, au_strdup("cancelled by client"));
			abandon(a);
		}
	cb_leave(w, t0);
}

static void poll_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;

	(void)fd;
	(void)what;
	if (w->opts.idle_exit_ms && !inflight(w) && !w->lease.busy &&
	    au_mono_us() - w->last_active_us >= (uint64_t)w->opts.idle_exit_ms * 1000) {
		au_worker_stop(w);
		return;
	}
	w->wake_pending = 1;
	pump(w);
}

/* A back-off is over: write what was kept, try one computation. */
static void outage_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;

	(void)fd;
	(void)what;
	if (writes_held(w)) {
		w->flush_retry = 1;
		flush(w);
	}
	if (w->outage[PART_TASKS].down && !w->stopping) {
		w->outage[PART_TASKS].trying = 1;
		w->wake_pending = 1;
		pump(w);
	}
}

/* Heartbeat: keeps the leases of held and running computations alive. */
static void extend_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct extend_req *e = &w->extend;
	struct attempt *a;
	size_t qi;
	int st;

	(void)fd;
	(void)what;
	if (e->busy)
		return;
	e->n = 0;
	/* decided ones too: those kept while the store or queue is away */
	for (qi = 0; qi < w->ql.n; qi++) {
		e->from[qi] = e->n;
		for (st = ATTEMPT_HELD; st <= ATTEMPT_DECIDED; st++)
			for (a = w->lists[st].head; a && e->n < e->cap; a = a->next)
				if (a->qi == qi)
					e->refs[e->n++] = a->lease.ref;
	}
	e->from[w->ql.n] = e->n;
	if (!e->n)
		return;
	e->busy = 1;
	au_io_submit(w->io, &e->io);
}

/* How often flows are collected: AU_FLOW_GC_MS, a test hook, or the default. */
static uint64_t gc_every_ms(void)
{
	const char *v = getenv("AU_FLOW_GC_MS");
	unsigned long long ms = v ? strtoull(v, NULL, 10) : 0;

	return ms ? ms : AU_FLOW_GC_EVERY_MS;
}

/* Housekeeping: expired leases of crashed workers go back to the queue;
 * expired records leave stores that have no native expiry; finished flows
 * past their ttl lose their tables. */
static void rescue_run(evutil_socket_t fd, short what, void *arg)
{
	struct au_worker *w = arg;
	struct rescue_req *s = &w->rescue;
	uint64_t now = au_now_ms();

	(void)fd;
	(void)what;
	if (s->busy)
		return;
	s->sweep = now - w->last_sweep_ms >= SWEEP_EVERY_MS;
	if (s->sweep)
		w->last_sweep_ms = now;
	s->gc = now - w->last_gc_ms >= gc_every_ms();
	if (s->gc)
		w->last_gc_ms = now;
	s->busy = 1;
	au_io_submit(w->io, &s->io);
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

/* Each queue on its own handle (one watch per handle), for arrivals and
 * for cancels; a queue whose backend cannot watch is polled. */
static void watch_all(struct au_worker *w)
{
	size_t qi;

	for (qi = 0; qi < w->ql.n; qi++) {
		if (au_queue_watch_cancels(w->wq[qi], w->ql.names[qi], w->base, cancel_cb, w) == 0)
			w->watching_cancels |= 1u << qi;
		if (au_queue_watch(w->wq[qi], w->ql.names[qi], w->base, wake_cb, w) == 0)
			w->watching |= 1u << qi;
	}
}

static void unwatch_all(struct au_worker *w)
{
	size_t qi;

	for (qi = 0; qi < w->ql.n; qi++)
		if (w->watching & 1u << qi)
			au_queue_unwatch(w->wq[qi]);
	w->watching = 0;
}

static void unwatch_cancels_all(struct au_worker *w)
{
	size_t qi;

	for (qi = 0; qi < w->ql.n; qi++)
		if (w->watching_cancels & 1u << qi)
			au_queue_unwatch_cancels(w->wq[qi]);
	w->watching_cancels = 0;
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
	event_del(w->outage_ev);
	event_del(w->beat_ev);
	unwatch_cancels_all(w);
	w->drain_deadline_us = au_mono_us() + DRAIN_MAX_MS * 1000;
	drain_cb(-1, 0, w);
}

/* Stopping, and everything is written back (a lease still out comes back
 * first: what it brings is released). */
static void maybe_exit(struct au_worker *w)
{
	if (w->stopping && !inflight(w) && !w->lease.busy && !w->flush.busy)
		stop_now(w);
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
	if (writes_held(w) && count(w, ATTEMPT_DECIDED)) {
		au_log(AU_LOG_WARN, "leaving %zu outcomes unwritten: %s is still unavailable; "
		       "their leases run out and they run again", count(w, ATTEMPT_DECIDED),
		       part_name[w->outage[PART_STORE].down ? PART_STORE : PART_QUEUE]);
		while ((a = w->lists[ATTEMPT_DECIDED].head))
			attempt_free(a);
	}
	flush(w);
	maybe_exit(w);
}

void au_worker_stop(struct au_worker *w)
{
	struct timeval grace;

	if (w->stopping)
		return;
	w->stopping = 1;
	unwatch_all(w);
	event_del(w->poll_ev);
	/* what was leased ahead never began: back unharmed */
	release_held(w);
	if (w->io)
		flush(w);
	maybe_exit(w);
	if (w->exited)
		return;
	/* what still runs, or waits for the store or queue to be back */
	if (count(w, ATTEMPT_RUNNING))
		au_log(AU_LOG_INFO, "stopping: waiting up to %u ms for %zu computations",
		       w->opts.grace_ms, count(w, ATTEMPT_RUNNING));
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
TIMED(start)
TIMED(flush)
TIMED(poll)
TIMED(extend)
TIMED(rescue)
TIMED(drain)
TIMED(grace)
TIMED(outage)
TIMED(beat)

static struct event *timer(struct au_worker *w, event_callback_fn fn, short flags)
{
	return event_new(w->base, -1, flags, fn, w);
}

static int requests_init(struct au_worker *w)
{
	struct flush_req *f = &w->flush;
	struct extend_req *e = &w->extend;
	size_t cap = (size_t)w->opts.concurrency + w->opts.batch;

	w->lease.io.run = lease_io;
	w->lease.w = w;
	w->lease.out = calloc(w->opts.batch, sizeof(*w->lease.out));
	w->lease.qi = calloc(w->opts.batch, sizeof(*w->lease.qi));
	w->lease.prep = calloc(w->opts.batch, sizeof(*w->lease.prep));
	f->io.run = flush_io;
	f->w = w;
	f->cap = cap;
	f->wb = calloc(f->cap, sizeof(*f->wb));
	f->recs = calloc(f->cap, sizeof(*f->recs));
	f->refs = calloc(f->cap, sizeof(*f->refs));
	f->delays = calloc(f->cap, sizeof(*f->delays));
	f->texts = calloc(f->cap, sizeof(*f->texts));
	f->stories = calloc(f->cap, sizeof(*f->stories));
	f->applied = calloc(f->cap, sizeof(*f->applied));
	f->idx = calloc(f->cap, sizeof(*f->idx));
	e->io.run = extend_io;
	e->w = w;
	e->cap = cap;
	e->refs = calloc(cap, sizeof(*e->refs));
	e->applied = calloc(cap, sizeof(*e->applied));
	w->rescue.io.run = rescue_io;
	w->rescue.w = w;
	w->beat.io.run = beat_io;
	w->beat.w = w;
	return w->lease.out && w->lease.qi && w->lease.prep && f->wb && f->recs && f->refs && f->delays &&
			       f->texts && f->stories && f->applied &&
			       f->idx && e->refs && e->applied ? 0 : -1;
}

static void requests_release(struct au_worker *w)
{
	size_t i;

	if (w->lease.out)
		for (i = 0; i < w->opts.batch; i++)
			au_lease_release(&w->lease.out[i]);
	free(w->lease.out);
	free(w->lease.qi);
	free(w->lease.prep);
	for (i = 0; i < w->flush.n; i++) {
		free(w->flush.wb[i].why);
		free(w->flush.wb[i].body);
	}
	free(w->flush.wb);
	free(w->flush.recs);
	free(w->flush.refs);
	free(w->flush.delays);
	free(w->flush.texts);
	free(w->flush.stories);
	free(w->flush.applied);
	free(w->flush.idx);
	free(w->extend.refs);
	free(w->extend.applied);
}

struct au_worker *au_worker_new(const struct au_config *cfg, const struct au_worker_opts *opts,
				struct au_registry *reg, struct event_base *base)
{
	struct au_worker *w = calloc(1, sizeof(*w));
	struct au_config conf = *cfg;
	struct au_err bad = { 0, "" };
	size_t i;
	int opened = 1;

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
	if (au_queue_list_parse(w->opts.queue, &w->ql, &bad) < 0) {
		/* the worker says why at start; it still needs one name meanwhile */
		if (!(w->ql.names[0] = au_strdup(AU_DEFAULT_QUEUE))) {
			free(w);
			return NULL;
		}
		w->ql.n = 1;
		w->ql.weights[0] = 1;
	}
	w->queues_text = au_queue_list_text(&w->ql);
	w->opts.queue = w->queues_text;
	w->reg = reg;
	w->builtins = au_registry_new();
	w->pump_ev = timer(w, pump_cb, 0);
	w->start_ev = timer(w, start_cb, 0);
	w->flush_ev = timer(w, flush_cb, 0);
	w->poll_ev = timer(w, poll_cb, EV_PERSIST);
	w->extend_ev = timer(w, extend_cb, EV_PERSIST);
	w->rescue_ev = timer(w, rescue_cb, EV_PERSIST);
	w->grace_ev = timer(w, grace_cb, 0);
	w->drain_ev = timer(w, drain_cb, 0);
	w->outage_ev = timer(w, outage_cb, 0);
	w->beat_ev = timer(w, beat_cb, EV_PERSIST);
	/* unique per process and start, as Sidekiq's "host:pid:nonce" */
	snprintf(w->id, sizeof(w->id), "%s:%08x", au_worker_name(), (unsigned)au_random64());
	w->store_url = au_strdup(conf.store_url);
	w->ch_url = conf.clickhouse_url ? au_strdup(conf.clickhouse_url) : NULL;
	w->queue_url = au_strdup(conf.queue_url);
	w->ack_store = 1;
	w->q = au_queue_open(conf.queue_url);
	w->wq[0] = w->q;
	for (i = 1; i < w->ql.n && w->q && !w->q->err.code; i++)
		opened &= (w->wq[i] = au_queue_open(conf.queue_url)) != NULL;
	w->store = au_store_open(conf.store_url);
	/* the attempts it can hold, allocated and touched once now rather
	 * than page by page in the loop's first rounds */
	while (w->nspares < (size_t)w->opts.concurrency + w->opts.batch) {
		struct attempt *a = malloc(sizeof(*a));

		if (!a)
			break;
		memset(a, 0, sizeof(*a));
		a->next = w->spares;
		w->spares = a;
		w->nspares++;
	}
	if (!opened || !w->queues_text || !w->store_url || !w->queue_url || !w->builtins ||
	    au_tasks_add_builtins(w->builtins) < 0 || requests_init(w) < 0 || !w->pump_ev ||
	    !w->start_ev || !w->flush_ev || !w->poll_ev || !w->extend_ev || !w->rescue_ev || !w->grace_ev ||
	    !w->drain_ev || !w->outage_ev || !w->beat_ev || !w->q || !w->store) {
		au_worker_free(w);
		return NULL;
	}
	if (!bad.code)   /* AU_SIGNING_KEY's check: first, before the caller's middlewares */
		au_signing_from_env(&w->chain, &bad);
	if (bad.code) {
		w->err = bad;
		return w;
	}
	if (w->q->err.code) {
		w->err = w->q->err;
		return w;
	}
	for (i = 1; i < w->ql.n; i++)
		if (w->wq[i]->err.code) {
			w->err = w->wq[i]->err;
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

/* timeout:TASK=DURATION,...: defaults for computations without one */
static int task_timeout(void *arg, const char *task, uint32_t ms)
{
	struct au_worker *w = arg;
	struct task_timeout *t = realloc(w->timeouts, (w->ntimeouts + 1) * sizeof(*t));

	if (!t)
		return -1;
	w->timeouts = t;
	if (!(t[w->ntimeouts].task = au_strdup(task)))
		return -1;
	t[w->ntimeouts++].ms = ms;
	return 0;
}

static int spec_item(void *arg, const char *name, const char *value, struct au_err *err)
{
	struct au_worker *w = arg;
	struct au_config cfg = { w->queue_url, w->store_url, NULL };
	const struct au_middleware_ops *ops;
	void *ctx;

	if (!strcmp(name, "timeout"))
		return au_mw_timeouts(value, task_timeout, w, err);
	if (au_mw_new(name, value, &cfg, &ops, &ctx, err) < 0)
		return -1;
	if (au_worker_use(w, ops, ctx) < 0)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	return 0;
}

int au_worker_use_spec(struct au_worker *w, const char *spec, struct au_err *err)
{
	struct au_err own = { 0, "" };

	if (au_mw_spec_each(spec, spec_item, w, err ? err : &own) < 0) {
		w->err = err ? *err : own;
		return -1;
	}
	return 0;
}

static void metrics_stats(void *arg, struct au_worker_stats *st)
{
	au_worker_stats(arg, st);
}

int au_worker_use(struct au_worker *w, const struct au_middleware_ops *ops, void *ctx)
{
	if (ops == &au_metrics_middleware && ctx && !w->metrics) {
		w->metrics = ctx;   /* its figures go with the beat */
		au_metrics_stats_source(ctx, metrics_stats, w);
	}
	return au_chain_add(&w->chain, ops, ctx);
}

int au_worker_load_plugin(struct au_worker *w, const char *path, struct au_err *err)
{
	struct au_buf what = AU_BUF_INIT;
	int rc;

	if (!w->plugins && !(w->plugins = au_registry_new()))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	rc = au_plugin_load(path, w->plugins, w, &what, err);
	if (rc == 0)
		au_log(AU_LOG_DEBUG, "plugin '%s': %s", path, what.data ? (char *)what.data : "");
	au_buf_release(&what);
	return rc;
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
	/* what the queue's server puts at risk, logged once (a Redis that
	 * keeps nothing across a restart) */
	if (au_queue_check(w->q) < 0)
		au_log(AU_LOG_INFO, "could not check the queue's server: %s", w->q->err.str);
	/* arrivals, and cancels of running computations, where the queue
	 * can tell them; a queue that cannot watch is polled */
	watch_all(w);
	/* from here on the queue and store handles belong to the thread */
	if (!w->io && !(w->io = au_io_new(w->base, io_ready, w))) {
		unwatch_all(w);
		unwatch_cancels_all(w);
		return au_seterr(&w->err, AU_ENOMEM, "unable to start the worker's i/o thread");
	}
	set_timer(w->poll_ev, w->watching == (1u << w->ql.n) - 1 ? w->opts.poll_ms : UNWATCHED_POLL_MS);
	set_timer(w->extend_ev, beat ? beat : 1);
	set_timer(w->rescue_ev, RESCUE_EVERY_MS);
	w->started_ms = au_now_ms();
	set_timer(w->beat_ev, AU_BEAT_EVERY_MS);
	beat_run(-1, 0, w);   /* registered at once */
	wake_cb(w);
	return 0;
}

void au_worker_stats(const struct au_worker *w, struct au_worker_stats *st)
{
	*st = w->stats;
}

const char *au_worker_id(const struct au_worker *w)
{
	return w->id;
}

void au_worker_free(struct au_worker *w)
{
	struct attempt *a;
	size_t i;

	if (!w)
		return;
	unwatch_all(w);
	unwatch_cancels_all(w);
	/* the thread finishes what it is doing; what it has not begun, it drops */
	au_io_free(w->io);
	w->io = NULL;
	/* the thread is gone and the queue handle is the loop's again: the
	 * entry goes at once rather than at the end of its ttl (best effort) */
	if (w->beat.registered && au_queue_worker_gone(w->q, w->id) < 0)
		au_log(AU_LOG_DEBUG, "could not remove worker '%s' from the registry: %s", w->id,
		       w->q->err.str);
	/* Running tasks let go first (their cancel hooks may use the
	 * ClickHouse client); then the client drops what is still pending
	 * without calling back. */
	for (i = 0; i < ATTEMPT_NSTATES; i++)
		while ((a = w->lists[i].head)) {
			abandon(a);
			attempt_free(a);
		}
	/* offloaded work still running is waited for; its done hears of no ctx */
	au_pool_free(w->pool);
	au_ch_free(w->ch);
	au_chain_release(&w->chain);
	requests_release(w);
	while ((a = w->spares)) {
		w->spares = a->next;
		free(a);
	}
	if (w->pump_ev)
		event_free(w->pump_ev);
	if (w->start_ev)
		event_free(w->start_ev);
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
	if (w->outage_ev)
		event_free(w->outage_ev);
	if (w->beat_ev)
		event_free(w->beat_ev);
	if (w->q)
		au_queue_close(w->q);
	for (i = 1; i < w->ql.n; i++)
		if (w->wq[i])
			au_queue_close(w->wq[i]);
	if (w->store)
		au_store_close(w->store);
	au_registry_free(w->builtins);
	au_registry_free(w->plugins);
	au_queue_list_release(&w->ql);
	free(w->queues_text);
	free(w->store_url);
	free(w->ch_url);
	if (w->gc_ch)
		au_ch_free(w->gc_ch);
	free(w->queue_url);
	while (w->ntimeouts--)
		free(w->timeouts[w->ntimeouts].task);
	free(w->timeouts);
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
	if (opts && opts->log &&
	    au_worker_use(w, &au_logging_middleware, au_logging_new(NULL, opts->log_format)) < 0) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		goto out;
	}
	if (opts && opts->middleware && au_worker_use_spec(w, opts->middleware, err) < 0)
		goto out;
	if (opts && opts->plugins && au_worker_load_plugins(w, opts->plugins, err) < 0)
		goto out;
	if (opts && opts->metrics_addr && opts->metrics_addr[0]) {
		void *m = au_metrics_new(err);

		if (!m || au_worker_use(w, &au_metrics_middleware, m) < 0 ||
		    (opts->metrics_wait ? au_metrics_listen_wait(m, base, opts->metrics_addr, err)
		     : au_metrics_listen(m, base, opts->metrics_addr, err)) < 0)
			goto out;
		if (!opts->metrics_wait)   /* else logged once it listens */
			au_log(AU_LOG_INFO, "metrics on http://%s/metrics", opts->metrics_addr);
	}
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
	au_log(AU_LOG_INFO, "worker %s on queue%s '%s' (concurrency %u, batch %u)", w->id,
	       w->ql.n > 1 ? "s" : "", w->queues_text, w->opts.concurrency, w->opts.batch);
	event_base_dispatch(base);
	{
		struct au_worker_stats st = w->stats;

		rc = w->asked_to_stop;
		au_worker_free(w);   /* its middlewares first write what they hold */
		w = NULL;
		au_log(AU_LOG_INFO, "worker %s stopped: %llu completed, %llu failed, %llu retried, "
		       "%llu dead-lettered, %llu released", au_worker_name(),
		       (unsigned long long)st.completed, (unsigned long long)st.failed,
		       (unsigned long long)st.retried, (unsigned long long)st.buried,
		       (unsigned long long)st.released);
	}
out:
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	au_worker_free(w);
	event_base_free(base);
	return rc;
}
