/*
 * schedule.c - fleet-wide cron schedules (schedule.h, docs/schedules.md).
 * Each worker looks at every schedule once a second; each tick it means
 * to fire is claimed with a kv put nx, and only the winner enqueues it,
 * under an id made from the schedule's name and the tick, so that even a
 * claim whose answer was lost enqueues nothing twice.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cron.h"
#include "middleware.h"
#include "queue.h"
#include "schedule.h"

#define TICKS_MAX 1000              /* enqueued per schedule and pass */
#define CLAIM_TTL_MS (3ull * 86400000)
#define GAP_PASSES 10               /* unseen this long: the fleet was away */

void au_schedule_release(struct au_schedule *s)
{
	free(s->name);
	free(s->cron);
	free(s->tz);
	free(s->task);
	free(s->queue);
	free(s->args);
	memset(s, 0, sizeof(*s));
}

/* ---- the clock (a test hook) ---- */

static double clock_rate(void)
{
	const char *r = getenv("AU_TEST_CLOCK_RATE");
	double v = r ? strtod(r, NULL) : 1;

	return getenv("AU_TEST_CLOCK_MS") && v > 0 ? v : 1;
}

uint64_t au_schedule_now(void)
{
	static uint64_t first;
	const char *start = getenv("AU_TEST_CLOCK_MS"), *at = getenv("AU_TEST_CLOCK_AT");
	uint64_t now = au_now_ms(), base;

	if (!start)
		return now;
	if (!first)
		first = now;
	base = at ? strtoull(at, NULL, 10) : first;
	if (now < base)
		now = base;
	return strtoull(start, NULL, 10) + (uint64_t)((double)(now - base) * clock_rate());
}

uint64_t au_schedule_pass_ms(void)
{
	return (uint64_t)(1000 * clock_rate());
}

/* ---- definitions ---- */

static const char *const missed_names[] = { "skip", "latest", "all" };
static const char *const overlap_names[] = { "allow", "skip" };

const char *au_sched_missed_name(int m)
{
	return m >= 0 && m < 3 ? missed_names[m] : "skip";
}

int au_sched_missed_parse(const char *s, int *m)
{
	for (int i = 0; i < 3; i++)
		if (s && !strcmp(s, missed_names[i]))
			return *m = i, 0;
	return -1;
}

const char *au_sched_overlap_name(int o)
{
	return o == AU_OVERLAP_SKIP ? "skip" : "allow";
}

int au_sched_overlap_parse(const char *s, int *o)
{
	for (int i = 0; i < 2; i++)
		if (s && !strcmp(s, overlap_names[i]))
			return *o = i, 0;
	return -1;
}

int au_schedule_name_check(const char *name, struct au_err *err)
{
	size_t n = name ? strlen(name) : 0, i;

	for (i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
			    name[i]))
			break;
	if (n && n <= AU_SCHED_NAME_MAX && i == n)
		return 0;
	return au_seterr(err, AU_EINVAL, "invalid schedule name '%s' (expected 1 to %d of"
			 " [A-Za-z0-9_.-])", name ? name : "", AU_SCHED_NAME_MAX);
}

int au_schedule_check(const struct au_schedule *s, struct au_err *err)
{
	struct au_cron c;
	struct au_tz *tz;

	if (au_schedule_name_check(s->name, err) < 0 || au_cron_parse(s->cron, &c, err) < 0)
		return -1;
	if (!(tz = au_tz_load(s->tz && *s->tz ? s->tz : "UTC", err)))
		return -1;
	au_tz_free(tz);
	if (!s->task || !*s->task)
		return au_seterr(err, AU_EINVAL, "schedule '%s' names no task", s->name);
	return au_queue_name_check(au_queue_name(s->queue), err);
}

static int mp_kstr(struct au_buf *b, const char *k, const char *v)
{
	return au_mp_str(b, k, strlen(k)) | au_mp_str(b, v ? v : "", v ? strlen(v) : 0);
}

static int mp_kuint(struct au_buf *b, const char *k, uint64_t v)
{
	return au_mp_str(b, k, strlen(k)) | au_mp_uint(b, v);
}

static int encode(const struct au_schedule *s, uint64_t created, struct au_buf *b)
{
	int rc = au_mp_map(b, 15);

	rc |= mp_kuint(b, "v", 1);
	rc |= mp_kstr(b, "name", s->name);
	rc |= mp_kstr(b, "cron", s->cron);
	rc |= mp_kstr(b, "tz", s->tz && *s->tz ? s->tz : "UTC");
	rc |= mp_kstr(b, "task", s->task);
	rc |= au_mp_str(b, "args", 4);
	rc |= s->args_len ? au_buf_append(b, s->args, s->args_len) : au_mp_map(b, 0);
	rc |= mp_kstr(b, "queue", au_queue_name(s->queue));
	rc |= au_mp_str(b, "priority", 8) | au_mp_int(b, s->priority);
	rc |= mp_kuint(b, "max_attempts", s->max_attempts ? s->max_attempts : AU_DEFAULT_MAX_ATTEMPTS);
	rc |= mp_kuint(b, "ttl", s->ttl_s ? s->ttl_s : AU_DEFAULT_TTL_S);
	rc |= au_mp_str(b, "paused", 6) | au_mp_bool(b, s->paused);
	rc |= mp_kstr(b, "missed", au_sched_missed_name(s->missed));
	rc |= mp_kstr(b, "overlap", au_sched_overlap_name(s->overlap));
	rc |= mp_kuint(b, "window", s->window_ms ? s->window_ms : AU_SCHED_WINDOW_DEFAULT_MS);
	rc |= mp_kuint(b, "created_at", created);
	return rc ? -1 : 0;
}

static char *jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return au_strdup(v ? v : "");
}

static uint64_t juint(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));

	return v > 0 ? (uint64_t)v : 0;
}

static int decode(const unsigned char *buf, size_t len, struct au_schedule *s, struct au_err *err)
{
	json_t *j = NULL, *args;
	struct au_buf b = AU_BUF_INIT;

	memset(s, 0, sizeof(*s));
	if (au_msgpack_check(buf, len, AU_MAX_DEPTH, err) < 0 ||
	    au_msgpack_to_jansson(buf, len, &j, err) < 0)
		return -1;
	if (!json_is_object(j)) {
		json_decref(j);
		return au_seterr(err, AU_EPROTO, "malformed schedule definition");
	}
	s->name = jstr(j, "name");
	s->cron = jstr(j, "cron");
	s->tz = jstr(j, "tz");
	s->task = jstr(j, "task");
	s->queue = jstr(j, "queue");
	s->priority = (int)json_integer_value(json_object_get(j, "priority"));
	s->max_attempts = (uint32_t)juint(j, "max_attempts");
	s->ttl_s = (uint32_t)juint(j, "ttl");
	s->paused = json_is_true(json_object_get(j, "paused"));
	au_sched_missed_parse(json_string_value(json_object_get(j, "missed")), &s->missed);
	au_sched_overlap_parse(json_string_value(json_object_get(j, "overlap")), &s->overlap);
	s->window_ms = juint(j, "window");
	s->created_at_ms = juint(j, "created_at");
	args = json_object_get(j, "args");
	if (args && au_jansson_to_msgpack(args, &b, err) == 0)
		s->args = au_buf_detach(&b, &s->args_len);
	au_buf_release(&b);
	json_decref(j);
	if (!s->name || !s->cron || !s->tz || !s->task || !s->queue) {
		au_schedule_release(s);
		return au_seterr(err, AU_ENOMEM, "out of memory");
	}
	return 0;
}

static int qerr(struct au_queue *q, struct au_err *err)
{
	*err = q->err;
	return -1;
}

int au_schedule_get(struct au_queue *q, const char *name, struct au_schedule *s,
		    struct au_err *err)
{
	unsigned char *v;
	size_t len;
	int rc;

	memset(s, 0, sizeof(*s));
	if (au_schedule_name_check(name, err) < 0)
		return -1;
	if (au_queue_kv_get(q, "sched", name, &v, &len) < 0) {
		if (q->err.code == AU_ENOTFOUND)
			return au_seterr(err, AU_ENOTFOUND, "no schedule '%s'", name);
		return qerr(q, err);
	}
	rc = decode(v, len, s, err);
	free(v);
	return rc;
}

int au_schedule_put(struct au_queue *q, const struct au_schedule *s, int *outcome,
		    struct au_err *err)
{
	struct au_buf mine = AU_BUF_INIT, theirs = AU_BUF_INIT, full = AU_BUF_INIT;
	struct au_schedule old;
	int done, rc = -1, tries;

	*outcome = 0;
	if (au_schedule_check(s, err) < 0)
		return -1;
	if (encode(s, 0, &mine) < 0)
		goto oom;
	/* one winner creates it; the others find it and compare */
	for (tries = 0; tries < 3; tries++) {
		if (au_schedule_get(q, s->name, &old, err) == 0) {
			au_buf_reset(&theirs);
			au_buf_reset(&full);
			if (encode(&old, 0, &theirs) < 0 || encode(s, old.created_at_ms, &full) < 0) {
				au_schedule_release(&old);
				goto oom;
			}
			au_schedule_release(&old);
			if (theirs.len == mine.len && !memcmp(theirs.data, mine.data, mine.len)) {
				*outcome = 2;
				rc = 0;
				goto out;
			}
			if (au_queue_kv_put(q, "sched", s->name, full.data, full.len, 0, 0, &done) < 0) {
				qerr(q, err);
				goto out;
			}
			*outcome = 1;
			rc = 0;
			goto out;
		}
		if (err->code != AU_ENOTFOUND)
			goto out;
		au_buf_reset(&full);
		if (encode(s, au_schedule_now(), &full) < 0)
			goto oom;
		if (au_queue_kv_put(q, "sched", s->name, full.data, full.len, 0, 1, &done) < 0) {
			qerr(q, err);
			goto out;
		}
		if (done) {
			/* a schedule made anew starts afresh */
			au_queue_kv_del(q, "sched_last", s->name, NULL, 0, &done);
			rc = 0;
			goto out;
		}
	}
	au_seterr(err, AU_ESTATE, "schedule '%s' changes under us: try again", s->name);
	goto out;
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
out:
	au_buf_release(&mine);
	au_buf_release(&theirs);
	au_buf_release(&full);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct au_schedule *)a)->name, ((const struct au_schedule *)b)->name);
}

int au_schedule_list(struct au_queue *q, struct au_schedule **out, size_t *n,
		     struct au_err *err)
{
	char **keys = NULL;
	size_t nk = 0, i;
	struct au_schedule *v;

	*out = NULL;
	*n = 0;
	if (au_queue_kv_keys(q, "sched", "", 0, &keys, &nk) < 0)
		return qerr(q, err);
	v = calloc(nk ? nk : 1, sizeof(*v));
	for (i = 0; v && i < nk; i++) {
		if (au_schedule_get(q, keys[i], &v[*n], err) == 0)
			(*n)++;
		else if (err->code != AU_ENOTFOUND && err->code != AU_EPROTO)
			break;
	}
	for (size_t k = 0; k < nk; k++)
		free(keys[k]);
	free(keys);
	if (!v)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	if (i < nk) {
		for (i = 0; i < *n; i++)
			au_schedule_release(&v[i]);
		free(v);
		*n = 0;
		return -1;
	}
	qsort(v, *n, sizeof(*v), by_name);
	*out = v;
	return 0;
}

int au_schedule_pause(struct au_queue *q, const char *name, int paused, struct au_err *err)
{
	struct au_schedule s;
	int outcome, rc;

	if (au_schedule_get(q, name, &s, err) < 0)
		return -1;
	s.paused = paused;
	rc = au_schedule_put(q, &s, &outcome, err);
	au_schedule_release(&s);
	return rc;
}

int au_schedule_remove(struct au_queue *q, const char *name, struct au_err *err)
{
	int done;

	if (au_schedule_name_check(name, err) < 0)
		return -1;
	if (au_queue_kv_del(q, "sched", name, NULL, 0, &done) < 0)
		return qerr(q, err);
	if (!done)
		return au_seterr(err, AU_ENOTFOUND, "no schedule '%s'", name);
	au_queue_kv_del(q, "sched_last", name, NULL, 0, &done);
	return 0;
}

int au_schedule_state(struct au_queue *q, const char *name, struct au_schedule_state *st,
		      struct au_err *err)
{
	unsigned char *v;
	size_t len;
	char text[96];

	memset(st, 0, sizeof(*st));
	if (au_queue_kv_get(q, "sched_last", name, &v, &len) < 0)
		return q->err.code == AU_ENOTFOUND ? 1 : qerr(q, err);
	snprintf(text, sizeof(text), "%.*s", (int)(len < 95 ? len : 95), (const char *)v);
	free(v);
	if (sscanf(text, "%" SCNu64 " %" SCNu64 " %" SCNu64, &st->last, &st->fired, &st->seen) != 3)
		return memset(st, 0, sizeof(*st)), 1;
	return 0;
}

int au_schedule_next(const struct au_schedule *s, uint64_t after_ms, uint64_t *next_ms,
		     struct au_err *err)
{
	struct au_cron c;
	struct au_tz *tz;
	int rc;

	if (au_cron_parse(s->cron, &c, err) < 0 || !(tz = au_tz_load(s->tz, err)))
		return -1;
	rc = au_cron_next(&c, tz, after_ms, next_ms);
	au_tz_free(tz);
	if (rc < 0)
		return au_seterr(err, AU_ENOTFOUND, "schedule '%s' never fires", s->name);
	return 0;
}

int au_schedule_tick_id(const struct au_schedule *s, uint64_t tick_ms, char out[AU_ID_SIZE])
{
	char key[AU_SCHED_NAME_MAX + 48];

	snprintf(key, sizeof(key), "au.schedule:%s:%" PRIu64, s->name, tick_ms);
	return au_id_from_key(out, au_queue_name(s->queue), key);
}

/* ---- firing ---- */

struct au_scheduler {
	char *worker;
	struct au_chain signing;    /* AU_SIGNING_KEY's: what we enqueue is signed */
	struct au_err sign_err;
};

struct au_scheduler *au_scheduler_new(const char *worker_id)
{
	struct au_scheduler *sc = calloc(1, sizeof(*sc));

	if (!sc || !(sc->worker = au_strdup(worker_id))) {
		free(sc);
		return NULL;
	}
	au_signing_from_env(&sc->signing, &sc->sign_err);
	return sc;
}

void au_scheduler_free(struct au_scheduler *sc)
{
	if (!sc)
		return;
	au_chain_release(&sc->signing);
	free(sc->worker);
	free(sc);
}

static int enqueue(struct au_scheduler *sc, struct au_queue *q, const struct au_schedule *s,
		   uint64_t tick, struct au_err *err)
{
	struct au_computation c;
	struct au_enqueue_ctx e;
	char errbuf[512], num[24];
	int rc = -1;

	if (sc->sign_err.code) {
		*err = sc->sign_err;
		return -1;
	}
	au_computation_init(&c);
	if (au_schedule_tick_id(s, tick, c.id) < 0)
		return au_seterr(err, AU_ENOMEM, "unable to hash the tick's key");
	c.task = au_strdup(s->task);
	c.queue = au_strdup(au_queue_name(s->queue));
	c.args = malloc(s->args_len ? s->args_len : 1);
	if (!c.task || !c.queue || !c.args)
		goto oom;
	if (s->args_len)
		memcpy(c.args, s->args, s->args_len);
	else
		c.args[0] = 0x80;   /* {} */
	c.args_len = s->args_len ? s->args_len : 1;
	c.priority = s->priority;
	c.max_attempts = s->max_attempts ? s->max_attempts : AU_DEFAULT_MAX_ATTEMPTS;
	c.ttl_s = s->ttl_s ? s->ttl_s : AU_DEFAULT_TTL_S;
	c.created_at_ms = au_now_ms();
	snprintf(num, sizeof(num), "%" PRIu64, tick);
	if (au_computation_set_header(&c, "au-schedule", s->name) < 0 ||
	    au_computation_set_header(&c, "au-schedule-tick", num) < 0)
		goto oom;
	e.c = &c;
	e.queue = c.queue;
	if (sc->signing.n && au_chain_before_enqueue(&sc->signing, &e, errbuf, sizeof(errbuf))) {
		au_seterr(err, AU_EREFUSED, "%s", errbuf);
		goto out;
	}
	if (au_queue_push(q, &c, 1) < 0) {
		qerr(q, err);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	au_seterr(err, AU_ENOMEM, "out of memory");
out:
	au_computation_release(&c);
	return rc;
}

/* 1 when the computation of tick still waits or runs. */
static int still_busy(struct au_queue *q, const struct au_schedule *s, uint64_t tick)
{
	struct au_queued info;
	char id[AU_ID_SIZE];
	int rc;

	if (!tick || au_schedule_tick_id(s, tick, id) < 0)
		return 0;
	rc = au_queue_peek(q, s->queue, id, &info);
	au_queued_release(&info);
	return rc == 0 && info.state != AU_QUEUED_DEAD;
}

/* Claims tick and, when this worker wins it, enqueues or skips it. */
static int claim(struct au_scheduler *sc, struct au_queue *q, const struct au_schedule *s,
		 uint64_t tick, struct au_schedule_state *st, size_t *fired, struct au_err *err)
{
	char key[AU_SCHED_NAME_MAX + 24], val[AU_WORKER_ID_SIZE + 8];
	int skip = s->overlap == AU_OVERLAP_SKIP && still_busy(q, s, st->fired), done;
	unsigned char *got;
	size_t len;
	uint64_t ttl = CLAIM_TTL_MS;

	if (s->window_ms + 86400000 > ttl)
		ttl = s->window_ms + 86400000;
	snprintf(key, sizeof(key), "%s:%" PRIu64, s->name, tick);
	snprintf(val, sizeof(val), "%s %s", skip ? "skip" : "fire", sc->worker);
	if (au_queue_kv_put(q, "tick", key, (const unsigned char *)val, strlen(val), ttl, 1,
			    &done) < 0)
		return qerr(q, err);
	if (!done || s->overlap == AU_OVERLAP_SKIP) {
		/* lost, or our own answer lost: the claim says who and what */
		if (au_queue_kv_get(q, "tick", key, &got, &len) < 0)
			return q->err.code == AU_ENOTFOUND ? 0 : qerr(q, err);
		done = len == strlen(val) && !memcmp(got, val, len);
		if (len > 5 && !memcmp(got, "fire ", 5))
			st->fired = tick;
		free(got);
		if (!done)
			return 0;
	}
	if (skip)
		return 0;
	if (enqueue(sc, q, s, tick, err) < 0)
		return -1;
	st->fired = tick;
	(*fired)++;
	return 0;
}

static int run_one(struct au_scheduler *sc, struct au_queue *q, const struct au_schedule *s,
		   uint64_t now, size_t *fired, struct au_err *err)
{
	struct au_schedule_state st, was;
	uint64_t ticks[TICKS_MAX], window = s->window_ms ? s->window_ms : AU_SCHED_WINDOW_DEFAULT_MS;
	uint64_t gap = GAP_PASSES * au_schedule_pass_ms(), t, from, latest_missed = 0;
	struct au_cron c;
	struct au_tz *tz;
	size_t n = 0, i, seen = 0;
	int rc, away;
	char text[96];

	if ((rc = au_schedule_state(q, s->name, &st, err)) < 0)
		return -1;
	if (rc == 1)
		st.last = st.seen = s->created_at_ms;
	was = st;
	away = now > st.seen + gap;
	if (au_cron_parse(s->cron, &c, err) < 0 || !(tz = au_tz_load(s->tz, err)))
		return -1;
	/* Ticks due: (last, now]. While the fleet watched, each fires; a tick
	 * that came due while none did (away), or long ago, was missed. */
	from = st.last;
	if (now > window && from < now - window)
		from = now - window;
	for (t = from; au_cron_next(&c, tz, t, &t) == 0 && t <= now && seen < 100000; seen++) {
		int missed = away || t + gap < now;

		if (s->paused)
			missed = 1, latest_missed = t;
		else if (missed && s->missed == AU_MISSED_LATEST)
			latest_missed = t;
		else if (!missed || s->missed == AU_MISSED_ALL) {
			if (n == TICKS_MAX)
				break;
			ticks[n++] = t;
		}
		if (!missed || s->missed != AU_MISSED_ALL)
			st.last = t;
	}
	au_tz_free(tz);
	if (!s->paused && latest_missed) {   /* in order, before the on-time ones */
		size_t k = n < TICKS_MAX ? n : TICKS_MAX - 1;

		memmove(ticks + 1, ticks, k * sizeof(*ticks));
		ticks[0] = latest_missed;
		n = k + 1;
	}
	for (i = 0; i < n; i++) {
		if (claim(sc, q, s, ticks[i], &st, fired, err) < 0)
			break;
		if (ticks[i] > st.last)
			st.last = ticks[i];
	}
	if (i < n && i > 0)
		st.last = ticks[i - 1];
	else if (i < n)
		st.last = was.last;
	if (latest_missed > st.last)
		st.last = latest_missed;
	st.seen = now;
	if (st.last != was.last || st.fired != was.fired || now - was.seen >= gap / 4) {
		int done;

		snprintf(text, sizeof(text), "%" PRIu64 " %" PRIu64 " %" PRIu64, st.last, st.fired,
			 st.seen);
		if (au_queue_kv_put(q, "sched_last", s->name, (const unsigned char *)text,
				    strlen(text), 0, 0, &done) < 0 && i == n)
			return qerr(q, err);
	}
	return i < n ? -1 : 0;
}

int au_scheduler_run(struct au_scheduler *sc, struct au_queue *q, size_t *fired,
		     struct au_err *err)
{
	struct au_schedule *v;
	size_t n, i;
	int rc = 0;
	uint64_t now = au_schedule_now();

	*fired = 0;
	if (au_schedule_list(q, &v, &n, err) < 0)   /* no kv space: no schedules */
		return err->code == AU_ESTATE ? (au_clearerr(err), 0) : -1;
	for (i = 0; i < n; i++) {
		struct au_err one = { 0, "" };

		if (run_one(sc, q, &v[i], now, fired, &one) < 0 && !rc) {
			au_seterr(err, one.code, "schedule '%s': %s", v[i].name, one.str);
			rc = -1;
		}
		au_schedule_release(&v[i]);
	}
	free(v);
	return rc;
}
