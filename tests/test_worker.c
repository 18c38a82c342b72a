/*
 * test_worker.c - the worker embedded in a program: memory:// queue and
 * store, the caller's event loop, a task of the program's own, the
 * middleware chain (order of hooks, a before hook refusing), retries with
 * their delays, timeouts that cancel the task, stop with work in flight.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core.h"
#include "harness.h"
#include "metrics.h"
#include "queue.h"

static char trace[4096];
static char name_a[] = "a", name_b[] = "b";

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	size_t n = strlen(trace);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(trace + n, sizeof(trace) - n, fmt, ap);
	va_end(ap);
}

static int mw_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	note("before:%s ", (char *)ctx);
	for (size_t i = 0; i < run->c->nheaders; i++)
		if (!strcmp(run->c->headers[i].key, "deny") && !strcmp(ctx, "a")) {
			snprintf(errbuf, errlen, "denied by policy");
			return -1;
		}
	return 0;
}

static int mw_after(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	note("after:%s ", (char *)ctx);
	T_OK(run->status == AU_COMPLETED && run->result_len > 0, "after hook sees the result (%s)",
	     (char *)ctx);
	return 0;
}

static int mw_error(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	(void)errbuf;
	(void)errlen;
	note("error:%s ", (char *)ctx);
	note("(%s) ", au_status_name(run->status));
	return 0;
}

/* fail-closed: a before hook's error fails the attempt */
static const struct au_middleware_ops mw = {
	.name = "trace", .flags = AU_MW_FAIL_CLOSED,
	.before = mw_before, .after = mw_after, .on_error = mw_error,
};

/* "double" task: {"x": n} -> 2n, completing on the loop later. */
struct later {
	struct au_task_ctx *ctx;
	struct event *ev;
	long long x;
};

static void double_done(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	struct au_buf b = AU_BUF_INIT;

	(void)fd;
	(void)what;
	au_mp_int(&b, 2 * l->x);
	event_free(l->ev);
	au_task_complete(l->ctx, b.data, b.len);
	au_buf_release(&b);
	free(l);
}

static void task_double(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct later *l = calloc(1, sizeof(*l));
	struct timeval tv = { 0, 1000 };
	char *json = au_msgpack_to_json(c->args, c->args_len, NULL);

	(void)arg;
	l->ctx = ctx;
	l->x = json ? strtoll(strchr(json, ':') + 1, NULL, 10) : 0;
	free(json);
	l->ev = evtimer_new(au_task_base(ctx), double_done, l);
	evtimer_add(l->ev, &tv);
}

/* "big": a result of nearly AU_MAX_RESULT bytes (a msgpack bin 32). */
static void task_big(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	size_t n = AU_MAX_RESULT - 100;
	unsigned char *b = calloc(1, n);

	(void)c;
	(void)arg;
	b[0] = 0xc6;
	b[1] = (unsigned char)((n - 5) >> 24);
	b[2] = (unsigned char)((n - 5) >> 16);
	b[3] = (unsigned char)((n - 5) >> 8);
	b[4] = (unsigned char)(n - 5);
	au_task_complete(ctx, b, n);
	free(b);
}

static struct au_handle *submit(struct au_client *cl, const char *task, const char *json,
				const struct au_enqueue_opts *eo)
{
	struct au_handle *h = NULL;
	unsigned char *args;
	size_t len;

	if (au_json_to_msgpack(json, &args, &len, NULL) < 0)
		return NULL;
	au_enqueue(cl, task, args, len, eo, &h);
	free(args);
	return h;
}

static void stop_soon(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	au_worker_stop(arg);
}

/* "stubborn": completes after {"ms": n} and has no cancel hook, so a
 * timeout leaves it running as a zombie that holds its slot. */
static void stubborn_done(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;

	(void)fd;
	(void)what;
	event_free(l->ev);
	au_task_complete(l->ctx, (const unsigned char *)"\xc0", 1);
	free(l);
}

static void task_stubborn(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct later *l = calloc(1, sizeof(*l));
	char *json = au_msgpack_to_json(c->args, c->args_len, NULL);
	struct timeval tv;

	(void)arg;
	l->ctx = ctx;
	l->x = json ? strtoll(strchr(json, ':') + 1, NULL, 10) : 0;
	free(json);
	tv.tv_sec = l->x / 1000;
	tv.tv_usec = (l->x % 1000) * 1000;
	l->ev = evtimer_new(au_task_base(ctx), stubborn_done, l);
	evtimer_add(l->ev, &tv);
}

/* A zombie holds its slot until its task calls back; then the next
 * computation gets the slot. */
static void test_zombie(struct au_config *cfg, struct au_client *cl, struct event_base *base,
			struct au_registry *reg)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_handle *z, *next;
	struct au_worker *w;
	struct au_record rz, rn;

	au_registry_add(reg, "test.stubborn", task_stubborn, NULL);
	eo.queue = "zq";
	eo.timeout_ms = 50;
	eo.max_attempts = 1;
	z = submit(cl, "test.stubborn", "{\"ms\":400}", &eo);
	eo.timeout_ms = 0;
	next = submit(cl, "test.stubborn", "{\"ms\":1}", &eo);
	wo.queue = "zq";
	wo.concurrency = 1;
	wo.idle_exit_ms = 700;
	w = au_worker_new(cfg, &wo, reg, base);
	T_OK(w && au_worker_start(w) == 0, "zombie: a worker with one slot");
	event_base_dispatch(base);
	T_OK(au_handle_result(z, &rz) == 0 && rz.status == AU_FAILED && rz.error &&
	     strstr(rz.error, "timed out after 50 ms"), "zombie: its attempt timed out");
	T_OK(au_handle_result(next, &rn) == 0 && rn.status == AU_COMPLETED,
	     "zombie: the next one completed");
	T_OK(rn.started_at_ms >= rz.started_at_ms + 350,
	     "zombie: the next one began once the zombie let go of its slot (%lld ms later)",
	     (long long)(rn.started_at_ms - rz.started_at_ms));
	au_record_release(&rz);
	au_record_release(&rn);
	au_worker_free(w);
	au_handle_free(z);
	au_handle_free(next);
}

static struct au_queue_stats pf_seen;

static void look(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	au_queue_stats(arg, "pf", &pf_seen);
}

/*
 * Prefetch: a worker with 2 slots and batches of 2 holds a batch beyond its
 * slots; stopped, it lets the held ones go without spending an attempt,
 * and another worker runs them, each on its first attempt.
 */
static void test_prefetch(struct au_config *cfg, struct au_client *cl, struct event_base *base)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_handle *hs[8];
	struct au_queue *q = au_queue_open(cfg->queue_url);
	struct au_worker *w;
	struct au_worker_stats st;
	struct event *peek, *stopper;
	struct timeval at_peek = { 0, 150000 }, at_stop = { 0, 200000 };
	int i, first = 0;

	eo.queue = "pf";
	for (i = 0; i < 8; i++)
		hs[i] = submit(cl, "au.sleep", "{\"ms\":400}", &eo);
	wo.queue = "pf";
	wo.concurrency = 2;
	wo.batch = 2;
	w = au_worker_new(cfg, &wo, NULL, base);
	peek = evtimer_new(base, look, q);
	stopper = evtimer_new(base, stop_soon, w);
	evtimer_add(peek, &at_peek);
	evtimer_add(stopper, &at_stop);
	T_OK(w && au_worker_start(w) == 0, "prefetch: a worker with 2 slots, batches of 2");
	event_base_dispatch(base);
	T_EQ_INT(pf_seen.leased, 4, "prefetch: 2 running and a batch of 2 held");
	au_worker_stats(w, &st);
	T_EQ_INT(st.completed, 2, "prefetch: the running ones finish within the grace period");
	T_EQ_INT(st.released, 2, "prefetch: the held ones are released at stop");
	au_worker_free(w);
	au_queue_stats(q, "pf", &pf_seen);
	T_EQ_INT(pf_seen.ready, 6, "prefetch: released ones are ready again");

	wo.concurrency = 8;
	wo.idle_exit_ms = 300;
	w = au_worker_new(cfg, &wo, NULL, base);
	T_OK(w && au_worker_start(w) == 0, "prefetch: a second worker");
	event_base_dispatch(base);
	for (i = 0; i < 8; i++) {
		struct au_record rec;

		if (au_handle_result(hs[i], &rec) == 0 && rec.status == AU_COMPLETED &&
		    rec.attempts == 1)
			first++;
		au_record_release(&rec);
		au_handle_free(hs[i]);
	}
	T_EQ_INT(first, 8, "prefetch: all completed on their first attempt");
	au_worker_free(w);
	event_free(peek);
	event_free(stopper);
	au_queue_close(q);
}

/* An outage for its first two calls, then the server is back. */
static int away_calls;
static void task_away(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	(void)c;
	(void)arg;
	if (away_calls++ < 2)
		au_task_fail(ctx, AU_FAIL_OUTAGE, "unable to connect to 'x': connection refused");
	else
		au_task_complete(ctx, (const unsigned char *)"\xc0", 1);
}

/* A task failed by an outage (au.fail "outage"): the attempt does not
 * count, the worker pauses, then tries one computation at a time; one that
 * comes to an outcome of its own resumes leasing for the rest. */
static void test_outage(struct au_config *cfg, struct au_client *cl, struct event_base *base,
			struct au_registry *reg)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_queue *q = au_queue_open(cfg->queue_url);
	struct au_handle *down, *good[4];
	struct au_worker *w;
	struct au_worker_stats st;
	struct au_queued info;
	struct au_record rec;
	struct event *stopper;
	struct timeval at_stop = { 1, 300000 };
	int i, done = 0;

	eo.queue = "ou";
	eo.max_attempts = 1;
	down = submit(cl, "au.fail", "{\"message\":\"server away\",\"outage\":true}", &eo);
	wo.queue = "ou";
	wo.concurrency = 4;
	w = au_worker_new(cfg, &wo, NULL, base);
	stopper = evtimer_new(base, stop_soon, w);
	evtimer_add(stopper, &at_stop);
	T_OK(w && au_worker_start(w) == 0, "outage: a worker starts");
	event_base_dispatch(base);
	au_worker_stats(w, &st);
	T_EQ_INT(st.failed + st.buried + st.completed, 0, "outage: no attempt failed or was buried");
	T_EQ_INT(st.outages, 1, "outage: one outage, begun once");
	/* 1.3 s: tried at 0, then after 250, 500 ms of back-off (0.25 + 0.5 < 1.3 < 0.25 + 0.5 + 1) */
	T_OK(st.released >= 3 && st.released <= 4, "outage: tried again after each back-off (%llu)",
	     (unsigned long long)st.released);
	T_OK(au_queue_peek(q, "ou", au_handle_id(down), &info) == 0 && info.state == AU_QUEUED_READY &&
	     info.attempts == 0, "outage: back in the queue, no attempt spent (%u)", info.attempts);
	au_queued_release(&info);
	au_worker_free(w);
	event_free(stopper);

	/* away for two calls, then back: the one tried after the back-off
	 * passes, and leasing resumes for the rest */
	eo.queue = wo.queue = "ou2";
	for (i = 0; i < 4; i++)
		good[i] = submit(cl, "test.away", "{}", &eo);
	wo.idle_exit_ms = 1000;
	w = au_worker_new(cfg, &wo, reg, base);
	T_OK(w && au_worker_start(w) == 0, "outage: a second worker");
	event_base_dispatch(base);
	for (i = 0; i < 4; i++) {
		if (au_handle_result(good[i], &rec) == 0 && rec.status == AU_COMPLETED)
			done++;
		au_record_release(&rec);
		au_handle_free(good[i]);
	}
	T_EQ_INT(done, 4, "outage: once one passes, the rest run (the outage ends)");
	au_worker_stats(w, &st);
	T_OK(st.outages >= 1 && st.failed == 0 && st.completed == 4,
	     "outage: those that met it cost nothing (outages %llu, completed %llu)",
	     (unsigned long long)st.outages, (unsigned long long)st.completed);
	au_worker_free(w);
	au_handle_free(down);
	au_queue_close(q);
}

/* A client cancels a running computation: the worker hears it through the
 * queue, stops the task at once and acks; the record stays CANCELLED. */
static void cancel_it(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	T_OK(au_handle_cancel(arg) == 0, "cancel: a running computation is cancelled: %s",
	     au_handle_err(arg)->str);
}

static void test_cancel_running(struct au_config *cfg, struct au_client *cl, struct event_base *base)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_handle *h;
	struct au_worker *w;
	struct au_worker_stats st;
	struct au_record rec;
	struct event *canceller;
	struct timeval at = { 0, 200000 };
	uint64_t t0;

	eo.queue = wo.queue = "cr";
	h = submit(cl, "au.sleep", "{\"ms\":5000}", &eo);
	wo.idle_exit_ms = 300;
	w = au_worker_new(cfg, &wo, NULL, base);
	canceller = evtimer_new(base, cancel_it, h);
	evtimer_add(canceller, &at);
	t0 = au_mono_us();
	T_OK(w && au_worker_start(w) == 0, "cancel: a worker starts");
	event_base_dispatch(base);
	au_worker_stats(w, &st);
	T_EQ_INT(st.cancelled, 1, "cancel: the worker stopped it");
	T_OK(au_mono_us() - t0 < 2000000, "cancel: well before its 5 s (%llu ms)",
	     (unsigned long long)((au_mono_us() - t0) / 1000));
	T_OK(au_handle_result(h, &rec) == 0 && rec.status == AU_CANCELLED, "cancel: the record says cancelled");
	au_record_release(&rec);
	T_OK(au_handle_cancel(h) < 0 && au_handle_err(h)->code == AU_ESTATE,
	     "cancel: a second cancel says it is already cancelled: %s", au_handle_err(h)->str);
	au_worker_free(w);
	event_free(canceller);
	au_handle_free(h);
}

/* The queue of each attempt begun, as one letter: the last byte of its name. */
static char began[512];
static size_t nbegan;
static int note_queue(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	const char *q = run->c->queue;

	(void)ctx;
	(void)errbuf;
	(void)errlen;
	if (nbegan + 1 < sizeof(began) && q && *q)
		began[nbegan++] = q[strlen(q) - 1];
	return 0;
}
static const struct au_middleware_ops queue_notes = { .name = "queues", .before = note_queue };

/* One worker, several queues: strict order, weights, retries and results
 * on a queue other than the first. */
static void test_queues(struct au_config *cfg, struct au_client *cl, struct event_base *base)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_handle *h[20], *flaky;
	struct au_worker *w;
	struct au_record rec;
	size_t i, na = 0;
	int done = 0;

	eo.queue = "mq-l";
	for (i = 0; i < 10; i++)
		h[i] = submit(cl, "au.echo", "[1]", &eo);
	eo.queue = "mq-h";
	for (i = 10; i < 20; i++)
		h[i] = submit(cl, "au.echo", "[2]", &eo);
	eo.queue = "mq-l";
	eo.max_attempts = 2;
	flaky = submit(cl, "au.fail", "{\"message\":\"again\",\"retryable\":true}", &eo);
	wo.queue = "mq-h,mq-l";
	wo.concurrency = 1;
	wo.batch = 1;
	wo.retry_base_ms = 10;
	wo.poll_ms = 50;   /* the retry comes due while the worker idles */
	wo.idle_exit_ms = 300;
	nbegan = 0;
	w = au_worker_new(cfg, &wo, NULL, base);
	T_OK(w && !au_worker_err(w)->code && au_worker_use(w, &queue_notes, NULL) == 0 &&
	     au_worker_start(w) == 0, "queues: a worker on 'mq-h,mq-l'");
	event_base_dispatch(base);
	began[nbegan] = '\0';
	T_EQ_STR(began, "hhhhhhhhhhllllllllllll", "queues: strict order, all of mq-h first");
	for (i = 0; i < 20; i++) {
		done += au_handle_result(h[i], &rec) == 0 && rec.status == AU_COMPLETED &&
			rec.queue && !strcmp(rec.queue, i < 10 ? "mq-l" : "mq-h");
		au_record_release(&rec);
		au_handle_free(h[i]);
	}
	T_EQ_INT(done, 20, "queues: each record names the queue it came from");
	T_OK(au_handle_result(flaky, &rec) == 0 && rec.status == AU_FAILED && rec.attempts == 2,
	     "queues: a retry on the second queue goes back to it and runs again");
	{
		char *json = au_msgpack_to_json(rec.history, rec.history_len, NULL);

		T_OK(json && strstr(json, "[{\"attempt\":1,\"worker\":\"") == json &&
		     strstr(json, "\"outcome\":\"retrying\",\"error\":\"again\"},{\"attempt\":2,") &&
		     strstr(json, "\"outcome\":\"failed\",\"error\":\"again\"}]"),
		     "history (memory): both attempts, the queue kept the first: %s", json);
		free(json);
	}
	au_record_release(&rec);
	au_handle_free(flaky);
	au_worker_free(w);

	memset(&eo, 0, sizeof(eo));
	for (i = 0; i < 400; i++) {
		struct au_handle *x;

		eo.queue = i % 2 ? "mq-b" : "mq-a";
		x = submit(cl, "au.noop", "null", &eo);
		au_handle_free(x);
	}
	wo.queue = "mq-a:3,mq-b:1";
	wo.max_jobs = 200;
	nbegan = 0;
	w = au_worker_new(cfg, &wo, NULL, base);
	T_OK(w && au_worker_use(w, &queue_notes, NULL) == 0 && au_worker_start(w) == 0,
	     "queues: a worker on 'mq-a:3,mq-b:1'");
	event_base_dispatch(base);
	for (i = 0; i < nbegan; i++)
		na += began[i] == 'a';
	T_EQ_INT(nbegan, 200, "queues: weighted: 200 begun");
	/* binomial(200, 3/4): mean 150, sd 6.1 */
	T_OK(na >= 120 && na <= 180, "queues: weighted: about 3 in 4 from mq-a (%zu of 200)", na);
	au_worker_free(w);

	wo.queue = "mq-a,,mq-b";
	w = au_worker_new(cfg, &wo, NULL, base);
	T_OK(w && au_worker_err(w)->code == AU_EINVAL &&
	     !strcmp(au_worker_err(w)->str, "invalid queues 'mq-a,,mq-b': an empty queue name") &&
	     au_worker_start(w) < 0, "queues: an empty name is refused: %s",
	     w ? au_worker_err(w)->str : "");
	au_worker_free(w);
}

/* ---- the hook set: order, failure policy, refuse, delay, answer later ---- */
static char htrace[8192];
static int hdelays;

static void hnote(const char *hook, const char *mw, const struct au_run *run)
{
	const char *c = au_computation_header(run->c, "case");
	size_t n = strlen(htrace);

	snprintf(htrace + n, sizeof(htrace) - n, "%s:%s:%s ", hook, mw, c ? c : "?");
}

struct resume_later {
	struct au_run *run;
	int rc;
	struct event *ev;
};

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resume_later *r = arg;

	(void)fd;
	(void)what;
	au_run_resume(r->run, r->rc, 0, r->rc == AU_HOOK_REFUSE ? "refused later" : NULL);
	event_free(r->ev);
	free(r);
}

static int h_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	const char *c = au_computation_header(run->c, "case"), *me = ctx;

	hnote("before", me, run);
	if (!c || strcmp(me, "2") != 0) {
		if (c && !strcmp(c, "open") && !strcmp(me, "1")) {
			snprintf(errbuf, errlen, "could not look");
			return AU_HOOK_ERROR;   /* middleware 1 is fail-open */
		}
		return AU_HOOK_OK;
	}
	if (!strcmp(c, "closed")) {
		snprintf(errbuf, errlen, "could not look");
		return AU_HOOK_ERROR;       /* middleware 2 is fail-closed */
	}
	if (!strcmp(c, "refuse")) {
		snprintf(errbuf, errlen, "no entry");
		return AU_HOOK_REFUSE;
	}
	if (!strcmp(c, "delay") && hdelays++ == 0) {
		run->delay_ms = 300;
		return AU_HOOK_DELAY;
	}
	if (!strcmp(c, "later") || !strcmp(c, "later-refuse")) {
		struct resume_later *r = calloc(1, sizeof(*r));
		struct timeval tv = { 0, 50000 };

		r->run = run;
		r->rc = !strcmp(c, "later") ? AU_HOOK_OK : AU_HOOK_REFUSE;
		r->ev = evtimer_new(au_run_base(run), resume_cb, r);
		evtimer_add(r->ev, &tv);
		return AU_HOOK_PENDING;
	}
	if (!strcmp(c, "stamp"))
		return au_computation_header(run->c, "stamp") ? AU_HOOK_OK : AU_HOOK_REFUSE;
	return AU_HOOK_OK;
}

#define H_HOOK(name)                                                                  \
	static int h_##name(void *ctx, struct au_run *run, char *errbuf, size_t errlen) \
	{                                                                             \
		(void)errbuf;                                                         \
		(void)errlen;                                                         \
		hnote(#name, ctx, run);                                               \
		return AU_HOOK_OK;                                                    \
	}
H_HOOK(after)
H_HOOK(on_error)
H_HOOK(on_retry)
H_HOOK(on_dead)

static const struct au_middleware_ops h_open = {
	.name = "one", .before = h_before, .after = h_after, .on_error = h_on_error,
	.on_retry = h_on_retry, .on_dead = h_on_dead,
};
static const struct au_middleware_ops h_closed = {
	.name = "two", .flags = AU_MW_FAIL_CLOSED, .before = h_before, .after = h_after,
	.on_error = h_on_error, .on_retry = h_on_retry, .on_dead = h_on_dead,
};

static int h_enqueue(void *ctx, struct au_enqueue_ctx *e, char *errbuf, size_t errlen)
{
	const char *c = au_computation_header(e->c, "case");

	(void)ctx;
	if (c && !strcmp(c, "no")) {
		snprintf(errbuf, errlen, "not from this client");
		return AU_HOOK_REFUSE;
	}
	if (c && !strcmp(c, "stamp"))
		return au_computation_set_header(e->c, "stamp", "1") == 0 ? AU_HOOK_OK : AU_HOOK_ERROR;
	return AU_HOOK_OK;
}

static const struct au_middleware_ops h_client = { .name = "stamper", .before_enqueue = h_enqueue };

static struct au_handle *hsubmit(struct au_client *cl, const char *task, const char *json,
				 const char *c, uint32_t max_attempts)
{
	struct au_header h = { (char *)"case", (char *)c };
	struct au_enqueue_opts eo = { 0 };

	eo.headers = &h;
	eo.nheaders = 1;
	eo.max_attempts = max_attempts;
	return submit(cl, task, json, &eo);
}

static void test_hooks(struct event_base *base)
{
	struct au_config cfg = { "memory://th", "memory://th", "http://127.0.0.1:1/default" };
	struct au_client *cl = au_client_new(&cfg);
	struct au_worker_opts wo = { 0 };
	struct au_handle *h[9], *no;
	static const char *const cases[] = { "ok", "open", "closed", "refuse", "delay", "later",
					     "later-refuse", "stamp", "retry" };
	struct au_record rec;
	struct au_worker *w;
	uint64_t t0 = au_now_ms();
	size_t i;

	T_OK(cl && au_client_use(cl, &h_client, NULL) == 0, "hooks: a client with a before_enqueue");
	for (i = 0; i < 9; i++)
		h[i] = !strcmp(cases[i], "retry")
		       ? hsubmit(cl, "au.fail", "{\"message\":\"again\",\"retryable\":true}", cases[i], 2)
		       : hsubmit(cl, "au.echo", "{\"x\":1}", cases[i], 1);
	no = hsubmit(cl, "au.echo", "{}", "no", 1);
	T_OK(!no && au_client_err(cl)->code == AU_EREFUSED &&
	     !strcmp(au_client_err(cl)->str, "not from this client"),
	     "hooks: before_enqueue refuses, with its message: %s", au_client_err(cl)->str);
	wo.concurrency = 4;
	wo.retry_base_ms = 20;
	wo.idle_exit_ms = 2000;   /* well past the 300 ms deferral, on a loaded machine too */
	w = au_worker_new(&cfg, &wo, NULL, base);
	T_OK(w && au_worker_use(w, &h_open, (void *)"1") == 0 &&
	     au_worker_use(w, &h_closed, (void *)"2") == 0 && au_worker_start(w) == 0,
	     "hooks: a worker with a fail-open and a fail-closed middleware");
	event_base_dispatch(base);

	T_OK(strstr(htrace, "before:1:ok before:2:ok after:2:ok after:1:ok") != NULL,
	     "hooks: before in order, after in reverse");
	T_OK(au_handle_result(h[0], &rec) == 0 && rec.status == AU_COMPLETED, "hooks: ok completes");
	au_record_release(&rec);
	T_OK(au_handle_result(h[1], &rec) == 0 && rec.status == AU_COMPLETED,
	     "hooks: a fail-open middleware's error is logged, the computation runs");
	au_record_release(&rec);
	T_OK(au_handle_result(h[2], &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strcmp(rec.error, "middleware 'two': before: could not look"),
	     "hooks: a fail-closed middleware's error fails it, named: %s", rec.error);
	au_record_release(&rec);
	T_OK(strstr(htrace, "on_error:2:closed on_error:1:closed ") && !strstr(htrace, "on_dead:2:closed"),
	     "hooks: on_error in reverse; failed for good is not dead");
	T_OK(au_handle_result(h[3], &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strcmp(rec.error, "no entry"), "hooks: a refusal fails it with the reason");
	au_record_release(&rec);
	T_OK(strstr(htrace, "on_dead:2:refuse on_dead:1:refuse ") != NULL,
	     "hooks: a refusal dead-letters it (on_dead, in reverse)");
	T_OK(au_handle_result(h[4], &rec) == 0 && rec.status == AU_COMPLETED && rec.attempts == 1 &&
	     rec.started_at_ms >= t0 + 300,
	     "hooks: a delay defers it 300 ms, then it runs, on its first attempt (%s, %u attempts, "
	     "began %lld ms after)", au_status_name(rec.status), rec.attempts,
	     (long long)rec.started_at_ms - (long long)t0);
	au_record_release(&rec);
	T_OK(strstr(htrace, "before:2:delay before:1:delay before:2:delay after:2:delay") ||
	     strstr(htrace, "before:2:delay ") != NULL, "hooks: before runs again when it is due");
	T_OK(au_handle_result(h[5], &rec) == 0 && rec.status == AU_COMPLETED,
	     "hooks: a hook that answers later lets it run");
	au_record_release(&rec);
	T_OK(au_handle_result(h[6], &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strcmp(rec.error, "refused later"), "hooks: or refuses it later: %s", rec.error);
	au_record_release(&rec);
	T_OK(au_handle_result(h[7], &rec) == 0 && rec.status == AU_COMPLETED,
	     "hooks: the worker sees the header the client's hook added");
	au_record_release(&rec);
	T_OK(au_handle_result(h[8], &rec) == 0 && rec.status == AU_FAILED && rec.attempts == 2,
	     "hooks: retried, then failed for good");
	au_record_release(&rec);
	T_OK(strstr(htrace, "on_error:2:retry on_error:1:retry on_retry:2:retry on_retry:1:retry ") &&
	     strstr(htrace, "on_dead:2:retry on_dead:1:retry "),
	     "hooks: on_error then on_retry, then on_error and on_dead: %s", htrace);
	for (i = 0; i < 9; i++)
		au_handle_free(h[i]);
	au_worker_free(w);
	au_client_free(cl);
}

/* The metrics middleware on a memory:// worker: its figures per task and
 * queue as the beat carries them, and a busy port refused. */
static void test_metrics(struct au_config *cfg, struct au_client *cl, struct event_base *base)
{
	struct au_enqueue_opts eo = { 0 };
	struct au_worker_opts wo = { 0 };
	struct au_err err = { 0, "" };
	struct au_worker *w;
	unsigned char blob[AU_METRICS_BLOB_MAX];
	char addr[64];
	void *m, *m2;
	size_t i, len;
	char *json;

	eo.queue = "mqm";
	for (i = 0; i < 3; i++)
		au_handle_free(submit(cl, "au.noop", "null", &eo));
	au_handle_free(submit(cl, "au.fail", "{}", &eo));
	eo.max_attempts = 2;
	au_handle_free(submit(cl, "au.fail", "{\"retryable\":true}", &eo));
	wo.queue = "mqm";
	wo.retry_base_ms = 10;
	wo.poll_ms = 50;
	wo.idle_exit_ms = 300;
	w = au_worker_new(cfg, &wo, NULL, base);
	m = au_metrics_new(&err);
	T_OK(w && m && au_worker_use(w, &au_metrics_middleware, m) == 0 && au_worker_start(w) == 0,
	     "metrics: a worker with the middleware");
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", atoi(getenv("AU_PORT_BASE") ? getenv("AU_PORT_BASE")
								: "17300") + 71);
	T_OK(au_metrics_listen(m, base, addr, &err) == 0, "metrics: listens on %s (%s)", addr, err.str);
	m2 = au_metrics_new(&err);
	T_OK(au_metrics_listen(m2, base, addr, &err) < 0 && err.code == AU_ESTATE,
	     "metrics: a second listener on the port is refused");
	T_OK(strstr(err.str, "unable to listen on '") && strstr(err.str, "': address already in use"),
	     "metrics: the message: %s", err.str);
	au_metrics_middleware.free(m2);
	event_base_dispatch(base);
	len = au_metrics_blob(m, blob, sizeof(blob));
	json = au_msgpack_to_json(blob, len, NULL);
	T_OK(json && strstr(json, "{\"v\":1,\"le_us\":[5000,10000,"), "metrics: the blob: %s",
	     json ? json : "(none)");
	T_OK(json && strstr(json, "[\"au.noop\",\"mqm\",3,3,0,0,0,0,0,0,0,0,["),
	     "metrics: au.noop: 3 started, 3 completed");
	T_OK(json && strstr(json, "[\"au.fail\",\"mqm\",3,0,1,1,1,0,0,0,0,0,["),
	     "metrics: au.fail: 3 started, 1 failed, 1 retried, 1 dead, none in flight");
	T_OK(json && strstr(json, "\"dropped\":0}"), "metrics: nothing dropped");
	T_OK(au_metrics_blob(m, blob, 16) == 0, "metrics: no room, no blob");
	free(json);
	au_worker_free(w);
}

int main(void)
{
	struct au_config cfg = { "memory://tw", "memory://tw", "http://127.0.0.1:1/default" };
	struct event_base *base = event_base_new();
	struct au_registry *reg = au_registry_new();
	struct au_client *cl = au_client_new(&cfg);
	struct au_worker_opts wo = { 0 };
	struct au_enqueue_opts eo = { 0 };
	struct au_header deny = { (char *)"deny", (char *)"1" };
	struct au_handle *ok, *denied, *flaky, *slow, *never, *big;
	struct au_worker *w;
	struct au_worker_stats st;
	struct au_record rec;
	struct event *stopper;
	struct timeval tv = { 3, 0 };
	uint64_t t0;

	au_log_set_level(AU_LOG_ERROR);
	T_OK(cl && !au_client_err(cl)->code, "client on memory:// opens");
	T_OK(au_registry_add(reg, "test.double", task_double, NULL) == 0, "task registered");
	au_registry_add(reg, "test.big", task_big, NULL);

	ok = submit(cl, "test.double", "{\"x\":21}", NULL);
	eo.headers = &deny;
	eo.nheaders = 1;
	denied = submit(cl, "test.double", "{\"x\":1}", &eo);
	memset(&eo, 0, sizeof(eo));
	eo.max_attempts = 3;
	flaky = submit(cl, "au.fail", "{\"message\":\"flaky\",\"retryable\":true}", &eo);
	eo.timeout_ms = 100;
	eo.max_attempts = 1;
	slow = submit(cl, "au.sleep", "{\"ms\":60000}", &eo);
	memset(&eo, 0, sizeof(eo));
	eo.delay_ms = 600000;
	never = submit(cl, "au.echo", "{}", &eo);
	memset(&eo, 0, sizeof(eo));
	big = submit(cl, "test.big", "{}", &eo);
	T_OK(ok && denied && flaky && slow && never && big, "six computations enqueued");

	wo.concurrency = 4;
	wo.batch = 2;
	wo.retry_base_ms = 20;
	w = au_worker_new(&cfg, &wo, reg, base);
	T_OK(w && !au_worker_err(w)->code, "worker attaches to the caller's loop");
	au_worker_use(w, &mw, name_a);
	au_worker_use(w, &mw, name_b);
	stopper = evtimer_new(base, stop_soon, w);
	evtimer_add(stopper, &tv);
	T_OK(au_worker_start(w) == 0, "worker starts");
	t0 = au_mono_us();
	event_base_dispatch(base);
	T_OK(au_mono_us() - t0 < 6000000, "loop exits after stop");

	T_OK(au_handle_result(ok, &rec) == 0 && rec.status == AU_COMPLETED, "own task completed");
	{
		char *json = au_msgpack_to_json(rec.result, rec.result_len, NULL);

		T_EQ_STR(json, "42", "own task's result");
		free(json);
	}
	au_record_release(&rec);
	T_OK(strstr(trace, "before:a before:b ") && strstr(trace, "after:b after:a ") &&
	     !strstr(trace, "after:a after:b"), "before hooks in order, after hooks in reverse");
	T_OK(au_handle_result(denied, &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     !strcmp(rec.error, "middleware 'trace': before: denied by policy"),
	     "a fail-closed before hook's error fails it, named: %s", rec.error ? rec.error : "");
	T_OK(strstr(trace, "before:a error:b (failed) error:a (failed)") != NULL,
	     "refusal stops the chain and runs on_error");
	au_record_release(&rec);
	T_OK(au_handle_result(flaky, &rec) == 0 && rec.status == AU_FAILED && rec.attempts == 3,
	     "retryable failure: 3 attempts then failed");
	T_OK(rec.error && strstr(rec.error, "failed after 3 attempts: flaky"), "last error kept");
	au_record_release(&rec);
	T_OK(strstr(trace, "(retrying)") != NULL, "on_error sees the retrying attempts");
	T_OK(au_handle_result(slow, &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     strstr(rec.error, "timed out after 100 ms"), "timeout fails the attempt");
	au_record_release(&rec);
	{
		enum au_status s;

		T_OK(au_handle_status(never, &s) == 0 && s == AU_SCHEDULED, "delayed one still waits");
	}
	T_OK(au_handle_result(big, &rec) == 0 && rec.status == AU_FAILED && rec.error &&
	     strstr(rec.error, "result too large"), "an oversized result fails the computation");
	au_record_release(&rec);
	au_worker_stats(w, &st);
	T_EQ_INT(st.completed, 1, "stats: completed");
	T_EQ_INT(st.failed, 4, "stats: failed");
	T_EQ_INT(st.retried, 2, "stats: retried");
	{
		uint64_t calls = 0;

		for (int k = 0; k < AU_LOOP_HIST_BUCKETS; k++)
			calls += st.loop_hist[k];
		T_OK(calls >= st.leased, "stats: the loop's callbacks are timed (%llu calls)",
		     (unsigned long long)calls);
		T_OK(st.loop_max_us > 0 && st.loop_max_us < 6000000,
		     "stats: the longest callback took %llu us", (unsigned long long)st.loop_max_us);
		T_OK(st.loop_hist[AU_LOOP_HIST_BUCKETS - 1] == 0, "stats: none in the overflow bucket");
	}

	event_free(stopper);
	au_worker_free(w);
	test_prefetch(&cfg, cl, base);
	au_registry_add(reg, "test.away", task_away, NULL);
	test_outage(&cfg, cl, base, reg);
	test_cancel_running(&cfg, cl, base);
	test_queues(&cfg, cl, base);
	test_metrics(&cfg, cl, base);
	test_zombie(&cfg, cl, base, reg);
	test_hooks(base);
	au_handle_free(ok);
	au_handle_free(denied);
	au_handle_free(flaky);
	au_handle_free(slow);
	au_handle_free(never);
	au_handle_free(big);
	au_client_free(cl);
	au_registry_free(reg);
	event_base_free(base);
	return t_done();
}
