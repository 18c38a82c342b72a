/*
 * ratelimit.c - the built-in rate limit middleware: a token bucket per task,
 * or per task and value of one of its arguments, kept by the queue's server
 * (au_queue_rate_take), so that the whole fleet shares it. A computation
 * over its limit is delayed, not failed: its before hook answers
 * AU_HOOK_DELAY with the time until its token, and the worker sets it aside
 * without a slot or an attempt. Tasks the spec does not name pass at once.
 *
 *   ch.query=200/s,ch.insert[table]=5/s:burst=10,report.daily=30/h
 *
 * The take is a round trip to a server, and hooks run on the worker's
 * loop: the hook hands it to a thread of the middleware's own, with a
 * queue connection of its own, and answers AU_HOOK_PENDING; the thread
 * hands it back through an eventfd on the loop (as worker/io_thread.c
 * does), where au_run_resume answers for the computation.
 *
 * A take reserves its token up to RESERVE_MS ahead, and the middleware
 * remembers the attempt it is for: when that attempt comes back after its
 * delay, it passes with no second round trip. Without the reservation
 * every waiting computation would ask again each time a token came, and
 * all but one would be told to wait once more.
 *
 * A rate limit server that does not answer is an outage, not the
 * computation's fault: the computation waits OUTAGE_MS and asks again.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "core.h"
#include "middleware.h"
#include "queue.h"

#define RESERVE_MS 10000u   /* a token may be taken this far ahead */
#define OUTAGE_MS 1000u     /* a computation waits this (+-25%) when the server is away */
#define REOPEN_MS 1000u     /* a connection that failed is tried again after this */
#define VALUE_MAX 128       /* argument bytes a key shows; longer ones are hashed */
#define HELD_SLOTS 256

#define EXPECTED "expected TASK=N/s"

struct rule {
	char *task;
	char *arg;                  /* TASK[ARG]: a bucket per value of this argument */
	double rate;                /* tokens a second */
	double burst;
};

/* One take, from the loop to the thread and back. */
struct take {
	struct take *next;
	struct au_run *run;         /* the loop's */
	const struct rule *rule;
	char *key;
	/* the thread's answer */
	int rc;
	int taken;
	uint64_t wait_ms;
	char err[AU_ERRSTR_SIZE];
};

/* A token taken ahead for one attempt. */
struct held {
	char id[AU_ID_SIZE];
	uint32_t attempt;
	uint64_t forget_us;         /* au_mono_us: gone after this, used or not */
	struct held *next;
};

struct ratelimit {
	struct rule *rules;
	size_t n;
	char *queue_url;

	/* the loop's */
	struct event *ev;
	int efd;
	struct held *held[HELD_SLOTS];
	int down;                   /* an outage was logged */

	/* shared, under mu */
	int started;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct take *todo, *todo_tail, *done, *done_tail;
	int stop;

	/* the thread's */
	struct au_queue *q;
	uint64_t failed_us;         /* when the last open failed */
};

/* ---- the spec ---- */

static int bad(struct au_err *err, const char *rule, size_t n, const char *why)
{
	return au_seterr(err, AU_EINVAL, "bad rate limit '%.*s': %s", (int)n, rule, why);
}

/* A positive finite number at *p, read up to a byte not of it. */
static int number(const char **p, double *out)
{
	char *end;

	if (!(**p >= '0' && **p <= '9') && **p != '.')
		return -1;
	errno = 0;
	*out = strtod(*p, &end);
	if (errno || end == *p || !isfinite(*out) || !(*out > 0))
		return -1;
	*p = end;
	return 0;
}

static int name_char(int c)
{
	return c > ' ' && c < 0x7f && c != '=' && c != ',' && c != '[' && c != ']';
}

/* One rule, s[0..n), into ru. */
static int parse_rule(const char *s, size_t n, struct rule *ru, struct au_err *err)
{
	const char *eq = memchr(s, '=', n), *p, *end = s + n, *open, *name_end;
	double count, per;

	if (!eq || eq == s)
		return bad(err, s, n, EXPECTED);
	open = memchr(s, '[', (size_t)(eq - s));
	name_end = open ? open : eq;
	for (p = s; p < name_end; p++)
		if (!name_char((unsigned char)*p))
			return bad(err, s, n, EXPECTED);
	if (name_end == s)
		return bad(err, s, n, EXPECTED);
	if (open) {
		if (eq[-1] != ']' || eq - 1 == open + 1)
			return bad(err, s, n, "expected TASK[ARGUMENT]=N/s");
		for (p = open + 1; p < eq - 1; p++)
			if (!name_char((unsigned char)*p))
				return bad(err, s, n, "expected TASK[ARGUMENT]=N/s");
	}
	p = eq + 1;
	if (number(&p, &count) < 0 || p + 2 > end || *p != '/')
		return bad(err, s, n, EXPECTED);
	switch (p[1]) {
	case 's': per = 1; break;
	case 'm': per = 60; break;
	case 'h': per = 3600; break;
	default: return bad(err, s, n, EXPECTED);
	}
	p += 2;
	ru->rate = count / per;
	ru->burst = 1;
	if (p < end) {
		if ((size_t)(end - p) < 7 || memcmp(p, ":burst=", 7))
			return bad(err, s, n, EXPECTED);
		p += 7;
		if (number(&p, &ru->burst) < 0 || p != end)
			return bad(err, s, n, "expected :burst=B, B a number");
		if (ru->burst < 1)
			return bad(err, s, n, "burst must be at least 1");
	}
	ru->task = au_strndup(s, (size_t)(name_end - s));
	ru->arg = open ? au_strndup(open + 1, (size_t)(eq - 1 - open - 1)) : NULL;
	if (!ru->task || (open && !ru->arg))
		return au_seterr(err, AU_ENOMEM, "out of memory");
	return 0;
}

static int parse(struct ratelimit *rl, const char *spec, struct au_err *err)
{
	const char *s = spec, *comma;
	size_t cap = 0, i;

	if (!*spec)
		return bad(err, spec, 0, EXPECTED);
	for (;; s = comma + 1) {
		size_t n;

		comma = strchr(s, ',');
		n = comma ? (size_t)(comma - s) : strlen(s);
		if (rl->n == cap) {
			struct rule *r = realloc(rl->rules, (cap = cap ? 2 * cap : 4) * sizeof(*r));

			if (!r)
				return au_seterr(err, AU_ENOMEM, "out of memory");
			rl->rules = r;
		}
		memset(&rl->rules[rl->n], 0, sizeof(rl->rules[0]));
		rl->n++;
		if (parse_rule(s, n, &rl->rules[rl->n - 1], err) < 0)
			return -1;
		for (i = 0; i + 1 < rl->n; i++)
			if (!strcmp(rl->rules[i].task, rl->rules[rl->n - 1].task))
				return bad(err, s, n, "the task has a limit already");
		if (!comma)
			return 0;
	}
}

/* ---- buckets ---- */

static const struct rule *rule_of(const struct ratelimit *rl, const char *task)
{
	size_t i;

	for (i = 0; task && i < rl->n; i++)
		if (!strcmp(rl->rules[i].task, task))
			return &rl->rules[i];
	return NULL;
}

static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	while (n--)
		h = (h ^ (unsigned char)*p++) * 1099511628211ull;
	return h;
}

/* Whether v (n bytes) can stand in a key as it is. */
static int plain(const char *v, size_t n)
{
	size_t i, k;

	if (n > VALUE_MAX)
		return 0;
	for (i = 0; i < n; i += k)
		if ((unsigned char)v[i] < ' ' || v[i] == 0x7f ||
		    !(k = au_utf8_seq((const unsigned char *)v + i, n - i)))
			return 0;
	return 1;
}

/*
 * The bucket of c: "TASK", or "TASK[ARG=VALUE]" with the argument's value
 * (a string as it is, anything else as JSON; absent: empty). A value that
 * is long, or not plain UTF-8 text, shows as "~" and a hash of its bytes.
 * NULL on OOM.
 */
static char *bucket_key(const struct rule *ru, const struct au_computation *c)
{
	struct au_err err;
	char *v = NULL, *key;
	size_t n = 0;

	if (!ru->arg)
		return au_strdup(ru->task);
	if (au_msgpack_map_text(c->args, c->args_len, ru->arg, &v, &n, &err) < 0 &&
	    err.code == AU_ENOMEM)
		return NULL;
	if (!v || plain(v, n))
		key = au_asprintf("%s[%s=%s]", ru->task, ru->arg, v ? v : "");
	else
		key = au_asprintf("%s[%s=~%016llx]", ru->task, ru->arg,
				  (unsigned long long)fnv1a(v, n));
	free(v);
	if (key && strlen(key) > AU_RATE_KEY_MAX) {   /* long task or argument names */
		char *h = au_asprintf("~%016llx", (unsigned long long)fnv1a(key, strlen(key)));

		free(key);
		key = h;
	}
	return key;
}

/* ---- tokens taken ahead (the loop's) ---- */

static struct held **held_slot(struct ratelimit *rl, const char *id)
{
	return &rl->held[fnv1a(id, strlen(id)) % HELD_SLOTS];
}

static void held_add(struct ratelimit *rl, const char *id, uint32_t attempt, uint64_t wait_ms)
{
	struct held **p = held_slot(rl, id), *h;
	uint64_t now = au_mono_us();

	while ((h = *p)) {   /* the slot's forgotten ones go on the way */
		if (h->forget_us <= now) {
			*p = h->next;
			free(h);
		} else {
			p = &h->next;
		}
	}
	if (!(h = calloc(1, sizeof(*h))))
		return;   /* it asks again: at worst a token is lost */
	memcpy(h->id, id, AU_ID_SIZE);
	h->attempt = attempt;
	/* well after it was due: one released meanwhile comes back elsewhere */
	h->forget_us = now + (wait_ms + 60000) * 1000;
	h->next = *held_slot(rl, id);
	*held_slot(rl, id) = h;
}

/* 1, forgetting it, when a token was taken ahead for this attempt. */
static int held_take(struct ratelimit *rl, const char *id, uint32_t attempt)
{
	struct held **p, *h;

	for (p = held_slot(rl, id); (h = *p); p = &h->next)
		if (h->attempt == attempt && !strcmp(h->id, id)) {
			*p = h->next;
			free(h);
			return 1;
		}
	return 0;
}

/* ---- the thread ---- */

static void append(struct take **head, struct take **tail, struct take *t)
{
	t->next = NULL;
	if (*tail)
		(*tail)->next = t;
	else
		*head = t;
	*tail = t;
}

/* The round trip, on the thread, with the thread's connection. */
static void take_one(struct ratelimit *rl, struct take *t)
{
	struct au_rate_limit lim = { t->rule->rate, t->rule->burst, RESERVE_MS };

	if (!rl->q || !rl->q->ops) {   /* not open: opened again, once a second at most */
		if (rl->q && au_mono_us() - rl->failed_us < REOPEN_MS * 1000ull) {
			t->rc = -1;
			snprintf(t->err, sizeof(t->err), "%s", rl->q->err.str);
			return;
		}
		au_queue_close(rl->q);
		rl->q = au_queue_open(rl->queue_url);
		if (!rl->q || !rl->q->ops) {
			rl->failed_us = au_mono_us();
			t->rc = -1;
			snprintf(t->err, sizeof(t->err), "%s", rl->q ? rl->q->err.str : "out of memory");
			return;
		}
	}
	t->rc = au_queue_rate_take(rl->q, t->key, &lim, &t->wait_ms, &t->taken);
	if (t->rc < 0)
		snprintf(t->err, sizeof(t->err), "%s", rl->q->err.str);
}

static void *thread_main(void *arg)
{
	struct ratelimit *rl = arg;
	struct take *t;
	uint64_t one = 1;

	pthread_mutex_lock(&rl->mu);
	for (;;) {
		while (!rl->todo && !rl->stop)
			pthread_cond_wait(&rl->cond, &rl->mu);
		if (rl->stop)
			break;
		t = rl->todo;
		if (!(rl->todo = t->next))
			rl->todo_tail = NULL;
		pthread_mutex_unlock(&rl->mu);

		take_one(rl, t);

		pthread_mutex_lock(&rl->mu);
		/* one wake-up per batch: only when done was empty */
		if (!rl->done && write(rl->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			abort();   /* an eventfd we own cannot fail otherwise */
		append(&rl->done, &rl->done_tail, t);
	}
	pthread_mutex_unlock(&rl->mu);
	return NULL;
}

/* ---- on the loop ---- */

static void answer(struct ratelimit *rl, struct take *t)
{
	struct au_run *run = t->run;
	uint64_t jitter;

	if (t->rc < 0) {
		if (!rl->down)
			au_log(AU_LOG_WARN, "rate limit: %s: rate-limited computations wait until it"
			       " answers", t->err);
		rl->down = 1;
		jitter = au_random64() % (OUTAGE_MS / 2);
		au_run_resume(run, AU_HOOK_DELAY, OUTAGE_MS - OUTAGE_MS / 4 + jitter, NULL);
		return;
	}
	if (rl->down)
		au_log(AU_LOG_INFO, "rate limit: its server answers again");
	rl->down = 0;
	if (t->taken && !t->wait_ms) {
		au_run_resume(run, AU_HOOK_OK, 0, NULL);
		return;
	}
	if (t->taken)   /* before the resume, which may let go of run */
		held_add(rl, run->c->id, run->attempt, t->wait_ms);
	au_run_resume(run, AU_HOOK_DELAY, t->wait_ms, NULL);
}

static void take_free(struct take *t)
{
	free(t->key);
	free(t);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct ratelimit *rl = arg;
	struct take *t, *next;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&rl->mu);
	t = rl->done;
	rl->done = rl->done_tail = NULL;
	pthread_mutex_unlock(&rl->mu);
	for (; t; t = next) {
		next = t->next;
		answer(rl, t);
		take_free(t);
	}
}

/* The thread and its wake-up, on the first take (after a fork: a worker
 * process makes its own middleware). */
static int start(struct ratelimit *rl, struct event_base *base)
{
	if (rl->started)
		return 0;
	if ((rl->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		return -1;
	if (!(rl->ev = event_new(base, rl->efd, EV_READ | EV_PERSIST, on_done, rl)) ||
	    event_add(rl->ev, NULL) < 0 || pthread_create(&rl->thread, NULL, thread_main, rl)) {
		if (rl->ev)
			event_free(rl->ev);
		rl->ev = NULL;
		close(rl->efd);
		rl->efd = -1;
		return -1;
	}
	rl->started = 1;
	return 0;
}

static int on_before(void *ctx, struct au_run *run, char *errbuf, size_t errlen)
{
	struct ratelimit *rl = ctx;
	const struct rule *ru = rule_of(rl, run->c->task);
	struct take *t = NULL;

	if (!ru || held_take(rl, run->c->id, run->attempt))
		return AU_HOOK_OK;
	if (start(rl, au_run_base(run)) < 0 || !(t = calloc(1, sizeof(*t))) ||
	    !(t->key = bucket_key(ru, run->c))) {
		free(t);
		snprintf(errbuf, errlen, "rate limit: out of memory or threads");
		run->delay_ms = OUTAGE_MS;
		return AU_HOOK_DELAY;
	}
	t->run = run;
	t->rule = ru;
	pthread_mutex_lock(&rl->mu);
	append(&rl->todo, &rl->todo_tail, t);
	pthread_cond_signal(&rl->cond);
	pthread_mutex_unlock(&rl->mu);
	return AU_HOOK_PENDING;
}

static void rl_free(void *ctx)
{
	struct ratelimit *rl = ctx;
	struct take *t;
	size_t i;

	if (!rl)
		return;
	if (rl->started) {
		pthread_mutex_lock(&rl->mu);
		rl->stop = 1;
		pthread_cond_signal(&rl->cond);
		pthread_mutex_unlock(&rl->mu);
		pthread_join(rl->thread, NULL);
	}
	/* the worker let go of their runs already: dropped, not answered */
	while ((t = rl->todo)) {
		rl->todo = t->next;
		take_free(t);
	}
	while ((t = rl->done)) {
		rl->done = t->next;
		take_free(t);
	}
	if (rl->ev)
		event_free(rl->ev);
	if (rl->efd >= 0)
		close(rl->efd);
	au_queue_close(rl->q);
	pthread_cond_destroy(&rl->cond);
	pthread_mutex_destroy(&rl->mu);
	for (i = 0; i < rl->n; i++) {
		free(rl->rules[i].task);
		free(rl->rules[i].arg);
	}
	free(rl->rules);
	for (i = 0; i < HELD_SLOTS; i++)
		while (rl->held[i]) {
			struct held *h = rl->held[i];

			rl->held[i] = h->next;
			free(h);
		}
	free(rl->queue_url);
	free(rl);
}

void *au_ratelimit_new(const char *spec, const char *queue_url, struct au_err *err)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));
	struct au_config cfg = { queue_url, NULL, NULL };

	if (!rl) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		return NULL;
	}
	rl->efd = -1;
	pthread_mutex_init(&rl->mu, NULL);
	pthread_cond_init(&rl->cond, NULL);
	au_config_from_env(&cfg);
	if (parse(rl, spec ? spec : "", err) < 0) {
		rl_free(rl);
		return NULL;
	}
	if (!(rl->queue_url = au_strdup(cfg.queue_url))) {
		au_seterr(err, AU_ENOMEM, "out of memory");
		rl_free(rl);
		return NULL;
	}
	return rl;
}

const struct au_middleware_ops au_ratelimit_middleware = {
	.name = "ratelimit",
	.before = on_before,
	.free = rl_free,
};
