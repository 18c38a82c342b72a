/*
 * test_queue_conformance.c - one suite, run unchanged on every queue backend
 * named on the command line (default: $AU_TEST_REDIS, memory://conformance
 * and $AU_TEST_PG), against the real thing. Each case works on a queue of
 * its own. What only the Redis backend does (its layout written by hand,
 * connections killed, scripts flushed) is tested in test_redis.c.
 *
 *   test_queue_conformance [url...]
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "harness.h"
#include "plug.h"
#include "queue.h"

static const char *url;           /* the backend under test */

/* The applied flag of one fenced write, named by op; -1 if the call failed. */
static int applied1(struct au_queue *q, const char *queue, const struct au_ref *ref,
		    const char *op)
{
	int applied = -1, rc = -1;
	uint64_t delay = 0;
	const char *text = "stale";

	if (!strcmp(op, "ack"))
		rc = au_queue_ack(q, queue, ref, 1, &applied);
	else if (!strcmp(op, "retry"))
		rc = au_queue_retry(q, queue, ref, 1, &delay, &text, NULL, &applied);
	else if (!strcmp(op, "release"))
		rc = au_queue_release(q, queue, ref, 1, &applied);
	else if (!strcmp(op, "bury"))
		rc = au_queue_bury(q, queue, ref, 1, &text, &applied);
	else if (!strcmp(op, "extend"))
		rc = au_queue_extend(q, queue, ref, 1, LONG_LEASE, &applied);
	return rc < 0 ? -1 : applied;
}

/* The state of id, or minus the error code; info without its story. */
static int peek(struct au_queue *q, const char *queue, const char *id, struct au_queued *info)
{
	int st;

	memset(info, 0, sizeof(*info));
	st = au_queue_peek(q, queue, id, info) < 0 ? -q->err.code : (int)info->state;
	au_queued_release(info);
	return st;
}

/* ---- cases ---- */

static void test_roundtrip(struct au_queue *q)
{
	char k1[] = "trace", v1[] = "abc", k2[] = "user", v2[] = "ann";
	struct au_header h[] = { { k1, v1 }, { k2, v2 } };
	struct au_computation c, d;
	struct au_lease l[4];
	struct au_queued info;
	struct au_err err;
	char name[64];
	size_t n;
	int applied = -1;

	t_queue_name(name, "conf", "roundtrip");
	t_computation(&c, name, 42);
	c.priority = 7;
	c.timeout_ms = 1500;
	c.headers = h;
	c.nheaders = 2;
	T_OK(t_push1(q, &c) == 0, "push one (%s)", q->err.str);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 1, "lease gets it");
	if (n == 1) {
		T_EQ_STR(l[0].ref.id, c.id, "leased id");
		EQ(l[0].attempts, 1, "first attempt");
		T_OK(strlen(l[0].ref.token) > 0, "a token '%s'", l[0].ref.token);
		T_OK(au_computation_decode(l[0].body, l[0].body_len, &d, &err) == 0, "body decodes");
		T_EQ_STR(d.task, "noop", "task");
		T_EQ_STR(d.queue, name, "queue");
		T_OK(d.args_len == c.args_len && !memcmp(d.args, c.args, c.args_len), "args bytes");
		EQ(d.priority, 7, "priority");
		EQ(d.max_attempts, 3, "max_attempts");
		EQ(d.timeout_ms, 1500, "timeout_ms");
		EQ(d.created_at_ms, c.created_at_ms, "created_at");
		T_OK(d.nheaders == 2 && !strcmp(d.headers[1].key, "user") &&
		     !strcmp(d.headers[1].value, "ann"), "headers");
		au_computation_release(&d);
		EQ(peek(q, name, c.id, &info), AU_QUEUED_LEASED, "peek: leased");
		T_OK(au_queue_ack(q, name, &l[0].ref, 1, &applied) == 0 && applied == 1, "ack applies");
		EQ(peek(q, name, c.id, &info), -AU_ENOTFOUND, "acked: gone");
		EQ(t_stats(q, name).leased, 0, "nothing leased after the ack");
		EQ(t_lease(q, name, 4, LONG_LEASE, 0, l), 0, "nothing left to lease");
	}
	t_leases_release(l, n);
	c.headers = NULL;
	c.nheaders = 0;
	au_computation_release(&c);
}

static int id_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Pushes n computations (batches of batch), their sorted ids into ids. */
static void push_many(struct au_queue *q, const char *name, size_t n, size_t batch,
		      char (*ids)[AU_ID_SIZE])
{
	struct au_computation *cs = calloc(batch, sizeof(*cs));
	size_t i, k;

	for (i = 0; i < n; i += batch) {
		size_t m = n - i < batch ? n - i : batch;

		for (k = 0; k < m; k++) {
			t_computation(&cs[k], name, (int)(i + k));
			memcpy(ids[i + k], cs[k].id, AU_ID_SIZE);
		}
		if (!T_OK(au_queue_push(q, cs, m) == 0, "push %zu (%s)", m, q->err.str))
			i = n;
		t_computations_release(cs, m);
	}
	qsort(ids, n, AU_ID_SIZE, id_cmp);
	free(cs);
}

static void test_batch(struct au_queue *q)
{
	enum { N = 1000 };
	static char ids[N][AU_ID_SIZE];
	static int seen[N];
	struct au_lease l[100];
	struct au_ref refs[100];
	int applied[100];
	char name[64];
	size_t n, i, total = 0, twice = 0, acked = 0;

	t_queue_name(name, "conf", "batch");
	memset(seen, 0, sizeof(seen));
	push_many(q, name, N, N, ids);
	EQ(t_stats(q, name).ready, N, "1000 ready after one batch push");
	while ((n = t_lease(q, name, 100, LONG_LEASE, 0, l)) > 0) {
		T_OK(n <= 100, "a lease gives at most max");
		for (i = 0; i < n; i++) {
			char (*hit)[AU_ID_SIZE] = bsearch(l[i].ref.id, ids, N, AU_ID_SIZE, id_cmp);

			if (hit && seen[hit - ids]++)
				twice++;
			refs[i] = l[i].ref;
		}
		total += n;
		if (au_queue_ack(q, name, refs, n, applied) == 0)
			for (i = 0; i < n; i++)
				acked += applied[i] == 1;
		t_leases_release(l, n);
		if (total > N)
			break;
	}
	EQ(total, N, "leased 1000 in batches of 100");
	EQ(twice, 0, "none twice");
	for (i = 0; i < N && seen[i] == 1; i++)
		;
	EQ(i, N, "each exactly once");
	EQ(acked, N, "all acked");
	EQ(t_stats(q, name).leased, 0, "none leased at the end");
}

static void test_order(struct au_queue *q)
{
	static const int prio[] = { 0, 5, -3, 5, 0, 100, -100 };
	/* indexes of prio[] in the expected order, then the late 5 (index 7) */
	static const int want[] = { 5, 1, 3, 7, 0, 4, 2, 6 };
	struct au_computation cs[8];
	struct au_lease l[3];
	char name[64];
	size_t i, k, got = 0, n;
	int ok = 1;

	t_queue_name(name, "conf", "order");
	for (i = 0; i < 8; i++) {
		t_computation(&cs[i], name, (int)i);
		cs[i].priority = i < 7 ? prio[i] : 5;
	}
	T_OK(au_queue_push(q, cs, 7) == 0 && t_push1(q, &cs[7]) == 0, "push mixed priorities");
	while ((n = t_lease(q, name, 3, LONG_LEASE, 0, l)) > 0) {
		for (k = 0; k < n; k++, got++)
			if (got >= 8 || strcmp(l[k].ref.id, cs[want[got]].id))
				ok = 0;
		t_leases_release(l, n);
	}
	EQ(got, 8, "all leased");
	T_OK(ok, "priority order (high first), FIFO within a priority, across lease calls");
	t_computations_release(cs, 8);
}

static void test_scheduled(struct au_queue *q)
{
	enum { LATER = 20 };
	struct au_computation later[LATER], now;
	struct au_lease l[LATER + 1];
	struct au_queued info;
	uint64_t t0, run_at = au_now_ms() + 400;
	char name[64];
	size_t n, i;
	int fifo = 1;

	t_queue_name(name, "conf", "sched");
	for (i = 0; i < LATER; i++) {
		t_computation(&later[i], name, (int)i);
		later[i].run_at_ms = run_at;
	}
	t_computation(&now, name, -1);
	T_OK(au_queue_push(q, later, LATER) == 0 && t_push1(q, &now) == 0,
	     "push 20 due in the same millisecond and a ready one");
	n = t_lease(q, name, LATER + 1, LONG_LEASE, 0, l);
	T_OK(n == 1 && !strcmp(l[0].ref.id, now.id), "only the ready one is leased");
	t_leases_release(l, n);
	EQ(peek(q, name, later[0].id, &info), AU_QUEUED_SCHEDULED, "peek: scheduled");
	EQ(t_stats(q, name).scheduled, LATER, "stats: 20 scheduled");
	t0 = au_mono_us();
	n = t_lease(q, name, LATER + 1, LONG_LEASE, 5000, l);
	T_OK(t_ms_since(t0) >= 300 && t_ms_since(t0) < 1500,
	     "a blocking lease returns when run_at comes (%llu ms)", (unsigned long long)t_ms_since(t0));
	EQ(n, LATER, "all leased once due");
	for (i = 0; i < n; i++)
		fifo &= !strcmp(l[i].ref.id, later[i].id);
	T_OK(n == LATER && fifo, "in the order they were pushed");
	t_leases_release(l, n);
	t_computations_release(later, LATER);
	au_computation_release(&now);
}

static void test_block(struct au_queue *q)
{
	struct t_pusher p = { url, NULL, 200, 0, 0, NULL };
	struct au_lease l[4];
	char name[64];
	pthread_t th;
	uint64_t t0, t1;
	size_t n;

	t_queue_name(name, "conf", "block");
	t0 = au_mono_us();
	n = t_lease(q, name, 4, LONG_LEASE, 300, l);
	t1 = t_ms_since(t0);
	EQ(n, 0, "a blocking lease on an empty queue gets nothing");
	T_OK(t1 >= 280 && t1 < 800, "... after block_ms (%llu ms for 300)", (unsigned long long)t1);

	p.name = name;
	pthread_create(&th, NULL, t_pusher_main, &p);
	n = t_lease(q, name, 4, LONG_LEASE, 5000, l);
	t1 = au_mono_us();
	pthread_join(th, NULL);
	EQ(n, 1, "a blocking lease gets what another thread pushes");
	T_OK(p.done_us && t1 >= p.start_us && t1 < p.done_us + 100000,
	     "... promptly (%lld ms after the push returned)",
	     (long long)((int64_t)t1 - (int64_t)p.done_us) / 1000);
	t_leases_release(l, n);
}

static void test_stale(struct au_queue *q)
{
	static const char *const ops[] = { "ack", "retry", "release", "bury", "extend" };
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	struct au_ref old, wrong;
	char name[64];
	size_t i, n;
	int changed = 0;

	t_queue_name(name, "conf", "stale");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	EQ(n, 1, "leased");
	if (n != 1)
		goto out;
	old = l[0].ref;
	wrong = old;
	snprintf(wrong.token, sizeof(wrong.token), "1-%016llx", 0x1234ull);
	for (i = 0; i < AU_ARRAY_SIZE(ops); i++)
		EQ(applied1(q, name, &wrong, ops[i]), 0, ops[i]);
	EQ(peek(q, name, c.id, &info), AU_QUEUED_LEASED, "wrong tokens changed nothing");
	EQ(applied1(q, name, &old, "retry"), 1, "retry with the right token");
	t_leases_release(l, n);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && l[0].attempts == 2, "leased again, attempt 2");
	if (n != 1)
		goto out;
	T_OK(strcmp(l[0].ref.token, old.token) != 0, "a new token (%s, was %s)", l[0].ref.token,
	     old.token);
	for (i = 0; i < AU_ARRAY_SIZE(ops); i++)
		if (applied1(q, name, &old, ops[i]) != 0)
			changed++;
	EQ(changed, 0, "the previous attempt's token applies to nothing");
	T_OK(peek(q, name, c.id, &info) == AU_QUEUED_LEASED && info.attempts == 2,
	     "state unchanged: leased, attempt 2");
	EQ(applied1(q, name, &l[0].ref, "ack"), 1, "the current token acks");
out:
	t_leases_release(l, n);
	au_computation_release(&c);
}

static void test_retry_delay(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	const char *err = "boom";
	uint64_t delay = 300, t0;
	char name[64];
	size_t n;
	int applied = -1;

	t_queue_name(name, "conf", "retry");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && au_queue_retry(q, name, &l[0].ref, 1, &delay, &err, NULL, &applied) == 0 &&
	     applied == 1, "retry after 300 ms");
	t_leases_release(l, n);
	EQ(peek(q, name, c.id, &info), AU_QUEUED_SCHEDULED, "retrying: scheduled");
	T_EQ_STR(info.error, "boom", "the error is kept");
	EQ(info.attempts, 1, "the attempt counted");
	EQ(t_lease(q, name, 2, LONG_LEASE, 0, l), 0, "not leased before the delay");
	t0 = au_mono_us();
	n = t_lease(q, name, 2, LONG_LEASE, 3000, l);
	T_OK(n == 1 && l[0].attempts == 2, "leased after the delay, attempt 2");
	T_OK(t_ms_since(t0) >= 150, "... not before (%llu ms)", (unsigned long long)t_ms_since(t0));
	t_leases_release(l, n);
	au_computation_release(&c);
}

static void test_release(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	char name[64];
	size_t n;

	t_queue_name(name, "conf", "release");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "release") == 1, "release applies");
	t_leases_release(l, n);
	T_OK(peek(q, name, c.id, &info) == AU_QUEUED_READY && info.attempts == 0,
	     "released: ready, the attempt does not count (%u)", info.attempts);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && l[0].attempts == 1, "leased again as attempt 1");
	t_leases_release(l, n);
	au_computation_release(&c);
}

static void test_bury(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	const char *reason = "bad input: no table 'x'";
	char name[64];
	size_t n;
	int applied = -1;

	t_queue_name(name, "conf", "bury");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && au_queue_bury(q, name, &l[0].ref, 1, &reason, &applied) == 0 && applied == 1,
	     "bury applies");
	t_leases_release(l, n);
	EQ(peek(q, name, c.id, &info), AU_QUEUED_DEAD, "buried: dead");
	T_EQ_STR(info.error, reason, "the reason is kept");
	EQ(t_stats(q, name).dead, 1, "stats: 1 dead");
	EQ(t_lease(q, name, 2, LONG_LEASE, 0, l), 0, "the dead are not leased");
	T_OK(au_queue_cancel(q, name, c.id) < 0 && q->err.code == AU_ENOTFOUND,
	     "cancel of a dead one: not found");
	au_computation_release(&c);
}

static void test_extend(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	char name[64];
	size_t n, requeued = 9, buried = 9;
	int applied = -1;

	t_queue_name(name, "conf", "extend");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, 300, 0, l);
	T_OK(n == 1 && au_queue_extend(q, name, &l[0].ref, 1, 5000, &applied) == 0 && applied == 1,
	     "extend a 300 ms lease to 5 s");
	t_sleep_ms(600);
	T_OK(au_queue_rescue(q, name, 100, &requeued, &buried) == 0 && requeued == 0 && buried == 0,
	     "not rescued after 600 ms");
	EQ(peek(q, name, c.id, &info), AU_QUEUED_LEASED, "still leased");
	EQ(n == 1 ? applied1(q, name, &l[0].ref, "ack") : -1, 1, "and the token still acks");
	t_leases_release(l, n);
	au_computation_release(&c);
}

static void test_rescue(struct au_queue *q)
{
	struct au_computation a, b;
	struct au_lease l[4], l2[4];
	struct au_queued info;
	struct au_ref old = { "", "" };
	char name[64];
	size_t n, n2 = 0, requeued = 0, buried = 0, i;

	t_queue_name(name, "conf", "rescue");
	t_computation(&a, name, 1);
	a.max_attempts = 2;
	t_computation(&b, name, 2);
	b.max_attempts = 1;
	T_OK(t_push1(q, &a) == 0 && t_push1(q, &b) == 0, "push two");
	n = t_lease(q, name, 4, 200, 0, l);
	EQ(n, 2, "lease both for 200 ms");
	for (i = 0; i < n; i++)
		if (!strcmp(l[i].ref.id, a.id))
			old = l[i].ref;
	t_leases_release(l, n);
	t_sleep_ms(450);
	EQ(t_stats(q, name).leased, 2, "expired leases stay until rescued");
	T_OK(au_queue_rescue(q, name, 100, &requeued, &buried) == 0, "rescue (%s)", q->err.str);
	EQ(requeued, 1, "one requeued");
	EQ(buried, 1, "one at max_attempts buried");
	EQ(peek(q, name, b.id, &info), AU_QUEUED_DEAD, "the buried one is dead");
	T_EQ_STR(info.error, "lease expired after 1 attempts", "with the reason");
	EQ(peek(q, name, a.id, &info), AU_QUEUED_READY, "the other is ready again");
	n2 = t_lease(q, name, 4, LONG_LEASE, 0, l2);
	T_OK(n2 == 1 && !strcmp(l2[0].ref.id, a.id) && l2[0].attempts == 2,
	     "leased again as attempt 2");
	EQ(applied1(q, name, &old, "ack"), 0, "the expired attempt cannot ack");
	EQ(n2 == 1 ? applied1(q, name, &l2[0].ref, "ack") : -1, 1, "the new one can");
	T_OK(t_stats(q, name).failed == 1 && t_stats(q, name).processed == 1,
	     "stats: the burial by rescue counts as failed, the ack as processed");
	t_leases_release(l2, n2);
	au_computation_release(&a);
	au_computation_release(&b);
}

/* ---- stories: the worker's bytes kept with a computation between attempts ---- */

/* Whether got[0..got_len) is exactly want[0..len); len 0: none (NULL). */
static int story_is(const unsigned char *got, size_t got_len, const void *want, size_t len)
{
	if (!len)
		return !got && !got_len;
	return got && got_len == len && !memcmp(got, want, len);
}

/* Whether peek finds id with exactly the story want[0..len) (len 0: none). */
static int peeked_story(struct au_queue *q, const char *queue, const char *id, const void *want,
			size_t len)
{
	struct au_queued info;
	int ok;

	memset(&info, 0, sizeof(info));
	ok = au_queue_peek(q, queue, id, &info) == 0 &&
	     story_is(info.story, info.story_len, want, len);
	au_queued_release(&info);
	return ok;
}

/* Retries ref at once with story s (NULL: none given); its applied flag,
 * or -1 when the call failed. */
static int retry_story(struct au_queue *q, const char *queue, const struct au_ref *ref,
		       const struct au_story *s)
{
	uint64_t delay = 0;
	const char *why = "again";
	int applied = -1;

	return au_queue_retry(q, queue, ref, 1, &delay, &why, s, &applied) < 0 ? -1 : applied;
}

/* Leases the one computation waiting in queue into l (lease_ms long):
 * 1 when it is id at attempt a with exactly the story want[0..len). */
static int lease_story(struct au_queue *q, const char *queue, uint32_t lease_ms, struct au_lease *l,
		       const char *id, uint32_t a, const void *want, size_t len)
{
	size_t n = t_lease(q, queue, 1, lease_ms, 0, l);

	if (n != 1) {
		memset(l, 0, sizeof(*l));
		return 0;
	}
	return !strcmp(l->ref.id, id) && l->attempts == a && story_is(l->story, l->story_len, want, len);
}

static void test_story(struct au_queue *q)
{
	enum { BIG = 60 * 1024 };
	static const unsigned char small[] = { 0x92, 0x00, 'o', 'k', 0x00, 0xff, 0x00 };
	unsigned char *big = malloc(BIG), *huge = malloc(AU_MAX_STORY + 1);
	const struct au_story s_small = { small, sizeof(small) }, s_big = { big, BIG },
			      s_keep = { NULL, 0 }, s_huge = { huge, AU_MAX_STORY + 1 };
	struct au_computation c, e;
	struct au_lease l = { 0 };
	struct au_dead dead[2];
	struct au_queued info;
	struct au_ref old;
	const char *ids[1], *why = "too long";
	char name[64], want[AU_ERRSTR_SIZE];
	uint64_t delay = 0;
	size_t i, n = 0, requeued = 0, buried = 0;
	int applied = -1;

	for (i = 0; i < BIG; i++)   /* every byte value, NULs among them */
		big[i] = (unsigned char)(i * 7 + i / 256);
	memset(huge, 'h', AU_MAX_STORY + 1);
	t_queue_name(name, "conf", "story");
	t_computation(&c, name, 0);
	c.max_attempts = 10;
	T_OK(t_push1(q, &c) == 0, "story: push (%s)", q->err.str);
	T_OK(peeked_story(q, name, c.id, NULL, 0), "story: none when pushed");
	if (!T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 1, NULL, 0),
		  "story: a first lease has none"))
		goto out;
	old = l.ref;
	EQ(retry_story(q, name, &l.ref, &s_small), 1, "story: a retry with a story applies");
	au_lease_release(&l);
	T_OK(peeked_story(q, name, c.id, small, sizeof(small)), "story: peek returns it");
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 2, small, sizeof(small)),
	     "story: the next lease returns exactly its bytes, NULs and all");

	EQ(retry_story(q, name, &old, &s_big), 0, "story: a stale token's retry does not apply");
	T_OK(peeked_story(q, name, c.id, small, sizeof(small)), "story: ... and changes no story");
	EQ(retry_story(q, name, &l.ref, NULL), 1, "story: a retry without stories applies");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 3, small, sizeof(small)),
	     "story: ... and keeps the one it had");
	EQ(retry_story(q, name, &l.ref, &s_keep), 1, "story: a retry with an empty story applies");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 4, small, sizeof(small)),
	     "story: ... and keeps the one it had too");

	T_OK(au_queue_retry(q, name, &l.ref, 1, &delay, &why, &s_huge, &applied) < 0 &&
	     q->err.code == AU_EINVAL, "story: one over AU_MAX_STORY is refused");
	snprintf(want, sizeof(want), "story of computation '%s' too large: %u bytes (limit 65536)",
		 c.id, AU_MAX_STORY + 1);
	T_EQ_STR(q->err.str, want, "story: with the message");
	T_OK(peek(q, name, c.id, &info) == AU_QUEUED_LEASED && info.attempts == 4 &&
	     strcmp(info.error, "too long"), "story: ... before anything is applied");
	EQ(retry_story(q, name, &l.ref, &s_big), 1, "story: a retry with a 60 KiB story");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 5, big, BIG),
	     "story: the 60 KiB story comes back whole");

	EQ(applied1(q, name, &l.ref, "release"), 1, "story: release");
	au_lease_release(&l);
	T_OK(lease_story(q, name, 200, &l, c.id, 5, big, BIG), "story: a release keeps it");
	au_lease_release(&l);
	t_sleep_ms(450);
	T_OK(au_queue_rescue(q, name, 100, &requeued, &buried) == 0 && requeued == 1,
	     "story: the 200 ms lease expires and is rescued (%s)", q->err.str);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 6, big, BIG),
	     "story: a rescue of the expired lease keeps it");

	T_OK(au_queue_bury(q, name, &l.ref, 1, &why, &applied) == 0 && applied == 1, "story: bury");
	au_lease_release(&l);
	T_OK(au_queue_dead(q, name, c.id, 1, dead, &n) == 0 && n == 1 &&
	     story_is(dead[0].story, dead[0].story_len, big, BIG),
	     "story: the dead letter keeps it, and dead returns it");
	if (n)
		au_dead_release(&dead[0]);
	T_OK(au_queue_dead(q, name, NULL, 2, dead, &n) == 0 && n == 1 &&
	     story_is(dead[0].story, dead[0].story_len, big, BIG), "story: so does the list");
	if (n)
		au_dead_release(&dead[0]);
	T_OK(peeked_story(q, name, c.id, big, BIG), "story: peek of the dead letter returns it");

	ids[0] = c.id;
	T_OK(au_queue_requeue(q, name, ids, 1, &applied) == 0 && applied == 1, "story: requeue");
	T_OK(peeked_story(q, name, c.id, NULL, 0), "story: requeue clears it");
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 1, NULL, 0), "story: leased as new");
	EQ(retry_story(q, name, &l.ref, NULL), 1, "story: retried without a story");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 2, NULL, 0),
	     "story: the attempt after has none either");

	/* an ack takes it along: the id pushed again is a new computation */
	EQ(retry_story(q, name, &l.ref, &s_small), 1, "story: retried with a story again");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 3, small, sizeof(small)), "story: leased");
	EQ(applied1(q, name, &l.ref, "ack"), 1, "story: ack");
	au_lease_release(&l);
	T_OK(t_push1(q, &c) == 0 && peeked_story(q, name, c.id, NULL, 0),
	     "story: the acked id pushed again has none");
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 1, NULL, 0) &&
	     retry_story(q, name, &l.ref, NULL) == 1, "story: retried without one");
	au_lease_release(&l);
	T_OK(lease_story(q, name, LONG_LEASE, &l, c.id, 2, NULL, 0),
	     "story: its second attempt has none: the ack deleted it");
	EQ(applied1(q, name, &l.ref, "ack"), 1, "story: ack");
	au_lease_release(&l);
	t_computation(&e, name, 1);
	T_OK(t_push1(q, &e) == 0 && peeked_story(q, name, e.id, NULL, 0),
	     "story: a new computation after the ack has none");
	T_OK(lease_story(q, name, LONG_LEASE, &l, e.id, 1, NULL, 0), "story: nor its lease");
	EQ(applied1(q, name, &l.ref, "ack"), 1, "story: ack");
	au_computation_release(&e);
out:
	au_lease_release(&l);
	au_computation_release(&c);
	free(big);
	free(huge);
}

/* Pushes c, leases it and retries it with story s: 1 when c then waits
 * with that story. */
static int waiting_with(struct au_queue *q, const char *name, const struct au_computation *c,
			const struct au_story *s)
{
	struct au_lease l = { 0 };
	int ok = t_push1(q, c) == 0 && lease_story(q, name, LONG_LEASE, &l, c->id, 1, NULL, 0) &&
		 retry_story(q, name, &l.ref, s) == 1;

	au_lease_release(&l);
	return ok && peeked_story(q, name, c->id, s->data, s->len);
}

/* 1 when c, pushed again after it went, has no story, nor does its second
 * attempt after a retry without one: nothing of the story before is left
 * under its id. Acks it. */
static int none_left(struct au_queue *q, const char *name, const struct au_computation *c)
{
	struct au_lease l = { 0 };
	int ok = t_push1(q, c) == 0 && peeked_story(q, name, c->id, NULL, 0) &&
		 lease_story(q, name, LONG_LEASE, &l, c->id, 1, NULL, 0) &&
		 retry_story(q, name, &l.ref, NULL) == 1;

	au_lease_release(&l);
	ok = ok && lease_story(q, name, LONG_LEASE, &l, c->id, 2, NULL, 0);
	if (l.body)
		applied1(q, name, &l.ref, "ack");
	au_lease_release(&l);
	return ok;
}

/* The story goes with the computation however it goes. */
static void test_story_gone(struct au_queue *q)
{
	static const unsigned char text[] = "a story\0in two parts";
	static const char *const ways[] = { "cancel", "empty", "purge", "drop" };
	const struct au_story s = { text, sizeof(text) };
	struct au_computation c;
	struct au_lease l = { 0 };
	const char *why = "dead";
	char name[64];
	size_t i, removed = 0;
	int applied = -1, done;

	t_queue_name(name, "conf", "storygone");
	t_computation(&c, name, 0);
	c.max_attempts = 10;
	for (i = 0; i < AU_ARRAY_SIZE(ways); i++) {
		if (!T_OK(waiting_with(q, name, &c, &s), "story gone: %s: it waits with its story",
			  ways[i]))
			break;
		if (!strcmp(ways[i], "cancel")) {
			done = au_queue_cancel(q, name, c.id) == 0;
		} else if (!strcmp(ways[i], "empty")) {
			done = au_queue_empty(q, name, &removed) == 0 && removed == 1;
		} else if (!strcmp(ways[i], "purge")) {
			done = lease_story(q, name, LONG_LEASE, &l, c.id, 2, text, sizeof(text)) &&
			       au_queue_bury(q, name, &l.ref, 1, &why, &applied) == 0 && applied == 1 &&
			       au_queue_purge(q, name, 0, &removed) == 0 && removed == 1;
			au_lease_release(&l);
		} else {
			done = au_queue_drop(q, name, 1) == 0;
		}
		T_OK(done, "story gone: %s (%s)", ways[i], q->err.str);
		T_OK(none_left(q, name, &c), "story gone: %s takes the story along", ways[i]);
	}
	au_computation_release(&c);
}

/*
 * Stories in batches: each of one retry call goes to its own computation
 * (more than 16 leased at once take the other path of the Redis lease),
 * and a lease of later attempts along with a first one.
 */
static void test_story_batch(struct au_queue *q)
{
	enum { N = 20 };
	static char ids[N][AU_ID_SIZE];
	static unsigned char text[N][AU_ID_SIZE + 8];
	struct au_lease l[N + 2];
	struct au_story story[N];
	struct au_ref refs[N];
	struct au_computation f;
	uint64_t delay[N] = { 0 };
	int applied[N];
	char name[64];
	size_t n, i, k, right = 0, applies = 0;

	t_queue_name(name, "conf", "storybatch");
	push_many(q, name, N, N, ids);
	/* two lease calls, two tokens: the refs of the retry interleave them,
	 * so a backend that sorts them by token must keep each story with
	 * its ref */
	n = t_lease(q, name, N / 2, LONG_LEASE, 0, l);
	n += t_lease(q, name, N / 2, LONG_LEASE, 0, l + n);
	EQ(n, N, "story batch: lease all");
	for (i = 0; i < n; i++) {
		refs[i] = l[i % 2 ? N / 2 + i / 2 : i / 2].ref;
		/* the id, a NUL, its place; every fourth one none */
		memcpy(text[i], refs[i].id, AU_ID_SIZE);
		text[i][AU_ID_SIZE] = (unsigned char)i;
		story[i].data = text[i];
		story[i].len = i % 4 ? AU_ID_SIZE + 1 : 0;
	}
	T_OK(au_queue_retry(q, name, refs, n, delay, NULL, story, applied) == 0,
	     "story batch: retry all with their stories (%s)", q->err.str);
	for (i = 0; i < n; i++)
		applies += applied[i] == 1;
	EQ(applies, N, "story batch: every one applies");
	t_leases_release(l, n);
	n = t_lease(q, name, N, LONG_LEASE, 0, l);
	EQ(n, N, "story batch: lease all again");
	for (i = 0; i < n; i++) {
		for (k = 0; k < N && memcmp(text[k], l[i].ref.id, AU_ID_SIZE); k++)
			;
		right += k < N && l[i].attempts == 2 &&
			 story_is(l[i].story, l[i].story_len, text[k], story[k].len);
	}
	EQ(right, N, "story batch: each has its own story (or none), attempt 2");

	/* two later attempts and a first one in one lease */
	for (i = 0; i < n; i++)
		refs[i] = l[i].ref;
	T_OK(au_queue_retry(q, name, refs, 2, delay, NULL, story + 2, applied) == 0 &&
	     applied[0] == 1 && applied[1] == 1, "story batch: retry two (%s)", q->err.str);
	T_OK(au_queue_ack(q, name, refs + 2, n - 2, NULL) == 0, "story batch: ack the rest");
	t_computation(&f, name, N);
	t_push1(q, &f);
	t_leases_release(l, n);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 3, "story batch: lease the two and the new one");
	for (i = right = 0; i < n; i++) {
		const struct au_ref *r = !strcmp(l[i].ref.id, f.id) ? NULL :
					 !strcmp(l[i].ref.id, refs[0].id) ? &refs[0] : &refs[1];
		const struct au_story *s = r == &refs[0] ? &story[2] : &story[3];

		if (!r)
			right += l[i].attempts == 1 && !l[i].story && !l[i].story_len;
		else
			right += !strcmp(l[i].ref.id, r->id) && l[i].attempts == 3 &&
				 story_is(l[i].story, l[i].story_len, s->data, s->len);
	}
	EQ(right, 3, "story batch: the later attempts have their stories, the first one none");
	for (i = 0; i < n; i++)
		refs[i] = l[i].ref;
	T_OK(au_queue_ack(q, name, refs, n, NULL) == 0, "story batch: ack them");
	t_leases_release(l, n);
	au_computation_release(&f);
}

static void test_cancel(struct au_queue *q)
{
	struct au_computation run, wait, later;
	struct au_lease l[4];
	struct au_queued info;
	char name[64], unknown[AU_ID_SIZE];
	size_t n;

	t_queue_name(name, "conf", "cancel");
	t_computation(&run, name, 0);
	t_computation(&wait, name, 1);
	t_computation(&later, name, 2);
	later.run_at_ms = au_now_ms() + 60000;
	t_push1(q, &run);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 1, "one running");
	T_OK(t_push1(q, &wait) == 0 && t_push1(q, &later) == 0, "push a pending and a scheduled one");
	T_OK(au_queue_cancel(q, name, wait.id) == 0, "cancel pending (%s)", q->err.str);
	T_OK(au_queue_cancel(q, name, later.id) == 0, "cancel scheduled (%s)", q->err.str);
	T_OK(au_queue_cancel(q, name, run.id) < 0 && q->err.code == AU_ESTATE,
	     "cancel running: AU_ESTATE (%s)", q->err.str);
	au_id_new(unknown);
	T_OK(au_queue_cancel(q, name, unknown) < 0 && q->err.code == AU_ENOTFOUND,
	     "cancel unknown: AU_ENOTFOUND (%s)", q->err.str);
	T_OK(au_queue_cancel(q, name, wait.id) < 0 && q->err.code == AU_ENOTFOUND,
	     "cancel twice: AU_ENOTFOUND");
	EQ(peek(q, name, wait.id, &info), -AU_ENOTFOUND, "cancelled: gone");
	{
		/* what a cancel saw: the canceller's record is made of it */
		struct au_computation seen_c, back;
		struct au_cancelled seen;
		struct au_err err;

		au_computation_init(&back);
		t_computation(&seen_c, name, 3);
		t_push1(q, &seen_c);
		T_OK(au_queue_cancel_seen(q, name, seen_c.id, &seen) == 0, "cancel, seeing (%s)",
		     q->err.str);
		T_OK(seen.body && au_computation_decode(seen.body, seen.body_len, &back, &err) == 0 &&
		     !strcmp(back.id, seen_c.id) && !strcmp(back.task, seen_c.task) &&
		     back.created_at_ms == seen_c.created_at_ms,
		     "cancel saw the computation it removed");
		EQ(seen.attempts, 0, "cancel saw no attempts made");
		T_OK(!seen.story && !seen.story_len, "cancel saw no story");
		au_computation_release(&back);
		au_computation_init(&back);
		au_cancelled_release(&seen);
		T_OK(au_queue_cancel_seen(q, name, run.id, &seen) < 0 && q->err.code == AU_ESTATE,
		     "cancel running, seeing: AU_ESTATE");
		T_OK(seen.body && au_computation_decode(seen.body, seen.body_len, &back, &err) == 0 &&
		     !strcmp(back.id, run.id), "cancel saw the running computation");
		EQ(seen.attempts, 1, "cancel saw the running attempt");
		au_computation_release(&back);
		au_cancelled_release(&seen);
		T_OK(au_queue_cancel_seen(q, name, seen_c.id, &seen) < 0 && q->err.code == AU_ENOTFOUND,
		     "cancel twice, seeing: AU_ENOTFOUND");
		T_OK(!seen.body && !seen.attempts, "cancel of nothing saw nothing");
		au_computation_release(&seen_c);
	}
	EQ(t_lease(q, name, 4, LONG_LEASE, 0, l + n), 0, "cancelled ones are never leased");
	EQ(peek(q, name, run.id, &info), AU_QUEUED_LEASED, "the running one is untouched");
	t_leases_release(l, n);
	au_computation_release(&run);
	au_computation_release(&wait);
	au_computation_release(&later);
}

static void test_stats_queues(struct au_queue *q)
{
	struct au_computation cs[4];
	struct au_queue_stats st;
	struct au_lease l[2];
	const char *reason = "no";
	char name[64], **names = NULL;
	size_t i, n, nnames = 0;
	int found = 0, applied;

	t_queue_name(name, "conf", "stats");
	for (i = 0; i < 4; i++)
		t_computation(&cs[i], name, (int)i);
	cs[3].run_at_ms = au_now_ms() + 60000;
	T_OK(au_queue_push(q, cs, 4) == 0, "push 3 ready, 1 scheduled");
	T_OK(au_queue_push(q, cs, 1) == 0, "push a known id again");
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	EQ(n, 2, "lease 2");
	if (n)
		au_queue_bury(q, name, &l[0].ref, 1, &reason, &applied);
	t_leases_release(l, n);
	st = t_stats(q, name);
	T_OK(st.ready == 1 && st.scheduled == 1 && st.leased == 1 && st.dead == 1,
	     "stats ready/scheduled/leased/dead = %llu/%llu/%llu/%llu (want 1/1/1/1)",
	     (unsigned long long)st.ready, (unsigned long long)st.scheduled,
	     (unsigned long long)st.leased, (unsigned long long)st.dead);
	T_OK(au_queue_list(q, &names, &nnames) == 0, "queues");
	for (i = 0; i < nnames; i++) {
		found |= !strcmp(names[i], name);
		free(names[i]);
	}
	free(names);
	T_OK(found, "queues lists '%s'", name);
	st = t_stats(q, "conf-never-used");
	T_OK(!st.ready && !st.scheduled && !st.leased && !st.dead, "an unknown queue is empty");
	t_computations_release(cs, 4);
}

static void test_watch(struct au_queue *q)
{
	struct t_waker w = { event_base_new(), 0, 0, 0 };
	char name[64];

	t_queue_name(name, "conf", "watch");
	if (!q->ops->watch) {
		T_OK(0, "watch is implemented");
		return;
	}
	T_OK(au_queue_watch(q, name, w.base, t_on_wake, &w) == 0, "watch (%s)", q->err.str);
	T_OK(au_queue_watch(q, name, w.base, t_on_wake, &w) < 0 && q->err.code == AU_ESTATE,
	     "one watch per handle");
	T_OK(t_run_until(&w, &w.calls, 1, 5000), "a first wake once watching");
	T_OK(t_wake_by_push(&w, url, name), "a push from another thread wakes the loop");
	au_queue_unwatch(q);
	au_queue_unwatch(q);
	event_base_free(w.base);
}

/* A paused watch is not woken: the wake-up goes to a watch with room
 * (backends without watch_pause wake every watcher). */
static void test_watch_pause(struct au_queue *q)
{
	struct event_base *base = event_base_new();
	struct t_waker a = { base, 0, 0, 0 }, b = { base, 0, 0, 0 };
	struct au_queue *other;
	char name[64];

	t_queue_name(name, "conf", "pause");
	if (!q->ops->watch || !q->ops->watch_pause) {
		T_OK(1, "watch_pause: not implemented (every watcher wakes)");
		event_base_free(base);
		return;
	}
	other = t_open_queue(url);
	T_OK(au_queue_watch(q, name, base, t_on_wake, &a) == 0 &&
	     au_queue_watch(other, name, base, t_on_wake, &b) == 0, "watch_pause: two watches");
	T_OK(t_run_until(&a, &a.calls, 1, 5000) && t_run_until(&b, &b.calls, 1, 5000),
	     "watch_pause: both woke once watching");
	au_queue_watch_pause(q, 1);
	a.calls = 0;
	T_OK(t_wake_by_push(&b, url, name), "watch_pause: a push wakes the watch with room");
	t_run_until(&a, &a.calls, 1, 300);
	EQ(a.calls, 0, "watch_pause: not the paused one");
	au_queue_watch_pause(q, 0);
	au_queue_watch_pause(other, 1);
	b.calls = 0;
	T_OK(t_wake_by_push(&a, url, name), "watch_pause: resumed, it is woken again");
	t_run_until(&b, &b.calls, 1, 300);
	EQ(b.calls, 0, "watch_pause: and the other, paused now, is not");
	au_queue_watch_pause(other, 0);
	au_queue_unwatch(q);
	au_queue_close(other);
	au_queue_watch_pause(q, 1);   /* no watch: nothing to pause */
	event_base_free(base);
}

/* Cancels of running computations: every watch of the queue hears the id,
 * one of another queue does not (backends without the ops: the record the
 * canceller stores decides alone). */
static char heard[AU_ID_SIZE];
static struct t_waker *heard_by;

static void on_cancel_heard(void *arg, const char *id)
{
	memcpy(heard, id, AU_ID_SIZE);
	heard_by = arg;
	((struct t_waker *)arg)->calls++;
}

static void test_cancel_running(struct au_queue *q)
{
	struct event_base *base = event_base_new();
	struct t_waker a = { base, 0, 0, 0 }, b = { base, 0, 0, 0 };
	struct au_queue *other, *elsewhere;
	char name[64], id[AU_ID_SIZE];

	t_queue_name(name, "conf", "cancels");
	if (!q->ops->cancel_running) {
		T_OK(au_queue_cancel_running(q, name, "0123456789abcdef0123456789abcdef") < 0 &&
		     q->err.code == AU_ESTATE, "cancel_running: not implemented, said so");
		event_base_free(base);
		return;
	}
	other = t_open_queue(url);
	elsewhere = t_open_queue(url);
	T_OK(au_queue_watch_cancels(q, name, base, on_cancel_heard, &a) == 0,
	     "watch_cancels (%s)", q->err.str);
	T_OK(au_queue_watch_cancels(q, name, base, on_cancel_heard, &a) < 0 && q->err.code == AU_ESTATE,
	     "watch_cancels: one per handle");
	T_OK(au_queue_watch_cancels(elsewhere, "conf-cancels-other", base, on_cancel_heard, &b) == 0,
	     "watch_cancels of another queue");
	/* the wake watch too, as a worker has both (PostgreSQL hears cancels on it) */
	au_queue_watch(q, name, base, t_on_wake, &b);
	t_run_until(&a, &a.calls, 1, 500);   /* subscriptions settle */
	a.calls = b.calls = 0;
	au_id_new(id);
	T_OK(au_queue_cancel_running(other, name, id) == 0, "cancel_running (%s)", other->err.str);
	T_OK(t_run_until(&a, &a.calls, 1, 5000), "cancel_running: the watch hears it");
	T_OK(!strcmp(heard, id) && heard_by == &a, "cancel_running: with the id");
	T_OK(au_queue_cancel_running(other, name, "nope") < 0 && other->err.code == AU_EINVAL,
	     "cancel_running: an invalid id is refused");
	au_queue_unwatch_cancels(q);
	a.calls = 0;
	au_queue_cancel_running(other, name, id);
	t_run_until(&a, &a.calls, 1, 300);
	EQ(a.calls, 0, "cancel_running: unwatched, nothing is heard");
	au_queue_unwatch(q);
	au_queue_unwatch_cancels(q);
	au_queue_close(other);
	au_queue_close(elsewhere);
	event_base_free(base);
}

/* The fields of a record as a store keeps them (expiry within 2 s). */
static int same_record(const struct au_record *a, const struct au_record *b)
{
	long long dx = (long long)a->expires_at_ms - (long long)b->expires_at_ms;

	return a->status == b->status && a->result_len == b->result_len &&
	       (!a->result_len || !memcmp(a->result, b->result, a->result_len)) &&
	       !strcmp(a->error ? a->error : "", b->error ? b->error : "") &&
	       !strcmp(a->task ? a->task : "", b->task ? b->task : "") &&
	       !strcmp(a->queue ? a->queue : "", b->queue ? b->queue : "") &&
	       !strcmp(a->worker ? a->worker : "", b->worker ? b->worker : "") &&
	       a->attempts == b->attempts && a->ttl_s == b->ttl_s &&
	       a->created_at_ms == b->created_at_ms && a->started_at_ms == b->started_at_ms &&
	       a->finished_at_ms == b->finished_at_ms && (a->expires_at_ms == 0) == (b->expires_at_ms == 0) &&
	       dx < 2000 && dx > -2000;
}

/* A finished attempt's record, as a worker writes it. */
static void record_for(struct au_record *r, const char *id, const char *queue, uint32_t ttl_s)
{
	static unsigned char result[] = { 0x81, 0xa1, 'n', 0x2a };   /* {"n": 42} */

	au_record_init(r);
	memcpy(r->id, id, AU_ID_SIZE);
	r->status = AU_COMPLETED;
	r->result = result;
	r->result_len = sizeof(result);
	r->task = (char *)"noop";
	r->queue = (char *)queue;
	r->worker = (char *)"conformance";
	r->attempts = 1;
	r->ttl_s = ttl_s;
	r->created_at_ms = 1700000000000ull;
	r->started_at_ms = 1700000000100ull;
	r->finished_at_ms = 1700000000200ull;
}

/* The record of id read back from s into *out (released by the caller);
 * 0 or the error code of get. */
static int get_record(struct au_store *s, const char *id, struct au_record *out)
{
	au_record_init(out);
	return au_store_get(s, id, out) < 0 ? s->err.code : 0;
}

struct ack_store_waiter {
	struct au_store *s;
	const char *id;
	int rc;
};

static void *ack_store_wait_main(void *arg)
{
	struct ack_store_waiter *w = arg;
	struct au_record r;

	au_record_init(&r);
	w->rc = au_store_wait(w->s, w->id, 5000, &r);
	au_record_release(&r);
	return NULL;
}

/*
 * ack_store: the records of acked attempts stored and the acks applied in
 * one call, as a put followed by an ack would leave them; AU_ESTATE when
 * the store lives elsewhere (or the backend cannot). The store at the
 * queue's own URL reads the records back as it reads its own: fields,
 * TTL (0: never expires), first write wins, an expired record replaced. A
 * stale ref's record is still kept when it is the first, its ack is not.
 */
static void test_ack_store(struct au_queue *q)
{
	enum { N = 5 };
	struct au_computation cs[N];
	struct au_lease l[N];
	struct au_ref refs[N];
	struct au_record recs[N], got, want, earlier;
	struct au_store *s, *ws;
	struct ack_store_waiter waiter;
	struct au_queued info;
	pthread_t th;
	char name[64];
	int applied[N], rc;
	size_t n, i;

	t_queue_name(name, "conf", "ackstore");
	rc = au_queue_ack_store(q, name, "memory://conformance-elsewhere", refs, recs, 0, applied);
	T_OK(rc < 0 && q->err.code == AU_ESTATE, "ack_store: a store elsewhere is AU_ESTATE (%s)",
	     q->err.str);
	if (!q->ops->ack_store) {
		rc = au_queue_ack_store(q, name, url, refs, recs, 0, applied);
		T_OK(rc < 0 && q->err.code == AU_ESTATE, "ack_store: not implemented, AU_ESTATE");
		return;
	}
	s = t_open_store(url);
	ws = t_open_store(url);
	for (i = 0; i < N; i++) {
		t_computation(&cs[i], name, (int)i);
		t_push1(q, &cs[i]);
	}
	n = t_lease(q, name, N, LONG_LEASE, 0, l);
	EQ(n, N, "ack_store: lease 5");
	if (n != N)
		goto out;
	for (i = 0; i < N; i++) {
		refs[i] = l[i].ref;
		record_for(&recs[i], l[i].ref.id, name, 60);
	}
	recs[1].ttl_s = 0;                        /* never expires */
	recs[2].status = AU_FAILED;               /* an error, no result */
	recs[2].result_len = 0;
	recs[2].error = (char *)"it broke";
	snprintf(refs[3].token, sizeof(refs[3].token), "0-stale");   /* lost its lease */
	record_for(&earlier, refs[4].id, name, 60);                  /* a record exists */
	earlier.worker = (char *)"the first";
	EQ(t_put1(s, &earlier), 1, "ack_store: an earlier record of one of them");

	waiter = (struct ack_store_waiter){ ws, refs[0].id, -1 };
	pthread_create(&th, NULL, ack_store_wait_main, &waiter);
	t_sleep_ms(200);
	rc = au_queue_ack_store(q, name, url, refs, recs, N, applied);
	pthread_join(th, NULL);
	T_OK(rc == 0, "ack_store (%s)", q->err.str);
	T_OK(applied[0] && applied[1] && applied[2] && !applied[3] && applied[4],
	     "ack_store: applied %d %d %d %d %d (want 1 1 1 0 1)", applied[0], applied[1],
	     applied[2], applied[3], applied[4]);
	EQ(waiter.rc, 0, "ack_store: a waiter on the store is woken by the record");
	for (i = 0; i < 4; i++) {
		char other[AU_ID_SIZE];

		/* the same record put by the store under another id */
		want = recs[i];
		au_id_new(other);
		memcpy(want.id, other, AU_ID_SIZE);
		T_OK(t_put1(s, &want) == 1 && get_record(s, other, &want) == 0 &&
		     get_record(s, recs[i].id, &got) == 0 && same_record(&got, &want),
		     "ack_store: record %zu reads back as put writes it%s", i,
		     i == 3 ? " (a stale ref's, the first record of its id)" : "");
		au_record_release(&got);
		au_record_release(&want);
	}
	T_OK(get_record(s, recs[1].id, &got) == 0 && got.expires_at_ms == 0,
	     "ack_store: ttl 0 never expires");
	au_record_release(&got);
	EQ(peek(q, name, refs[3].id, &info), AU_QUEUED_LEASED, "ack_store: a stale ref's ack is not applied");
	T_OK(get_record(s, refs[4].id, &got) == 0 && got.worker && !strcmp(got.worker, "the first"),
	     "ack_store: the first write wins");
	au_record_release(&got);
	EQ(t_stats(q, name).leased, 1, "ack_store: the others are acked");

	/* an expired record is replaced, as by put */
	au_computation_release(&cs[0]);
	au_lease_release(&l[0]);
	t_computation(&cs[0], name, 9);
	t_push1(q, &cs[0]);
	record_for(&earlier, cs[0].id, name, 1);
	EQ(t_put1(s, &earlier), 1, "ack_store: a record with ttl 1 s");
	t_sleep_ms(1100);
	if (t_lease(q, name, 1, LONG_LEASE, 0, &l[0]) == 1) {
		record_for(&recs[0], l[0].ref.id, name, 60);
		recs[0].worker = (char *)"the second";
		T_OK(au_queue_ack_store(q, name, url, &l[0].ref, &recs[0], 1, applied) == 0 && applied[0],
		     "ack_store: over an expired record (%s)", q->err.str);
		T_OK(get_record(s, l[0].ref.id, &got) == 0 && got.worker &&
		     !strcmp(got.worker, "the second"), "ack_store: the expired record is replaced");
		au_record_release(&got);
	} else {
		T_OK(0, "ack_store: lease the one over an expired record");
	}
	t_computations_release(cs, N);
	t_leases_release(l, N);
	au_store_close(s);
	au_store_close(ws);
	return;
out:
	t_leases_release(l, n);
	t_computations_release(cs, N);
	au_store_close(s);
	au_store_close(ws);
}

struct leaser {
	const char *name;
	char (*ids)[AU_ID_SIZE];
	atomic_int *seen;
	size_t n, got, errors;
};

static void *leaser_main(void *arg)
{
	struct leaser *t = arg;
	struct au_queue *q = au_queue_open(url);
	struct au_lease l[25];
	struct au_ref refs[25];
	size_t n, i;

	if (!q || q->err.code) {
		t->errors++;
		au_queue_close(q);
		return NULL;
	}
	while (au_queue_lease(q, t->name, 25, LONG_LEASE, 0, l, &n) == 0 && n) {
		for (i = 0; i < n; i++) {
			char (*hit)[AU_ID_SIZE] = bsearch(l[i].ref.id, t->ids, t->n, AU_ID_SIZE, id_cmp);

			if (hit)
				t->seen[hit - t->ids]++;
			else
				t->errors++;
			refs[i] = l[i].ref;
		}
		t->got += n;
		if (au_queue_ack(q, t->name, refs, n, NULL) < 0)
			t->errors++;
		t_leases_release(l, n);
	}
	au_queue_close(q);
	return NULL;
}

static void test_concurrent(struct au_queue *q)
{
	enum { N = 2000, T = 4 };
	static char ids[N][AU_ID_SIZE];
	static atomic_int seen[N];
	struct leaser t[T];
	pthread_t th[T];
	char name[64];
	size_t i, total = 0, errors = 0, once = 0;

	t_queue_name(name, "conf", "concurrent");
	push_many(q, name, N, 500, ids);
	for (i = 0; i < N; i++)
		seen[i] = 0;
	for (i = 0; i < T; i++) {
		t[i] = (struct leaser){ name, ids, seen, N, 0, 0 };
		pthread_create(&th[i], NULL, leaser_main, &t[i]);
	}
	for (i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		total += t[i].got;
		errors += t[i].errors;
	}
	for (i = 0; i < N; i++)
		once += seen[i] == 1;
	EQ(errors, 0, "4 threads: no errors");
	EQ(total, N, "4 threads leased 2000 in all");
	EQ(once, N, "each exactly once");
	EQ(t_stats(q, name).leased, 0, "all acked");
}

static void test_registry(void)
{
	struct au_queue *q = au_queue_open("foo://x");

	T_OK(q && q->err.code == AU_EINVAL, "unknown scheme: AU_EINVAL");
	T_EQ_STR(q ? q->err.str : "", "unknown queue scheme 'foo' in 'foo://x'", "unknown scheme: message");
	au_queue_close(q);
	q = au_queue_open("redis:/oops");
	T_OK(q && q->err.code == AU_EINVAL, "bad url: AU_EINVAL (%s)", q ? q->err.str : "oom");
	au_queue_close(q);
}

/* ---- administration: dead letters, bounds, pause, empty, drop, locate ---- */

/* Leases what is ready in name and buries it with reason. */
static void bury_all(struct au_queue *q, const char *name, const char *reason)
{
	struct au_lease l[8];
	size_t n = t_lease(q, name, 8, LONG_LEASE, 0, l), i;
	int applied[8];
	const char *why[8];

	for (i = 0; i < n; i++)
		why[i] = reason;
	for (i = 0; i < n; i++) {   /* one a call: each its own time of death */
		T_OK(au_queue_bury(q, name, &l[i].ref, 1, &why[i], &applied[i]) == 0 && applied[i],
		     "bury (%s)", q->err.str);
		t_sleep_ms(3);
	}
	t_leases_release(l, n);
}

static void test_dead_letters(struct au_queue *q)
{
	struct au_computation c[5], d;
	struct au_dead dead[8];
	struct au_lease l[4];
	struct au_queued info;
	struct au_queue_stats st;
	struct au_err err;
	const char *ids[2];
	char name[64];
	uint64_t t0 = au_now_ms();
	size_t n, i, removed = 9;
	int applied[2] = { -1, -1 };

	t_queue_name(name, "conf", "dead");
	for (i = 0; i < 3; i++) {
		t_computation(&c[i], name, (int)i);
		t_push1(q, &c[i]);
		bury_all(q, name, i == 0 ? "r0" : i == 1 ? "r1" : "r2");
	}
	/* the first housekeeping of the queue takes the rate's sample */
	T_OK(au_queue_rescue(q, name, 10, &n, &i) == 0, "rescue (%s)", q->err.str);
	T_OK(au_queue_dead(q, name, NULL, 8, dead, &n) == 0, "dead: list (%s)", q->err.str);
	EQ(n, 3, "dead: three listed");
	if (n == 3) {
		T_OK(!strcmp(dead[0].id, c[2].id) && !strcmp(dead[1].id, c[1].id) &&
		     !strcmp(dead[2].id, c[0].id), "dead: newest first");
		T_EQ_STR(dead[0].reason, "r2", "dead: with the reason");
		EQ(dead[0].attempts, 1, "dead: with the attempts made");
		T_OK(dead[0].died_at_ms + 2000 >= t0 && dead[0].died_at_ms <= au_now_ms() + 2000 &&
		     dead[0].died_at_ms >= dead[1].died_at_ms, "dead: with when it died (%llu)",
		     (unsigned long long)dead[0].died_at_ms);
		T_OK(au_computation_decode(dead[0].body, dead[0].body_len, &d, &err) == 0 &&
		     !strcmp(d.id, c[2].id), "dead: with its body");
		au_computation_release(&d);
	}
	for (i = 0; i < n; i++)
		au_dead_release(&dead[i]);
	T_OK(au_queue_dead(q, name, NULL, 2, dead, &n) == 0 && n == 2, "dead: max is kept");
	for (i = 0; i < n; i++)
		au_dead_release(&dead[i]);
	T_OK(au_queue_dead(q, name, c[1].id, 1, dead, &n) == 0 && n == 1 &&
	     !strcmp(dead[0].id, c[1].id) && !strcmp(dead[0].reason, "r1"), "dead: one by id");
	if (n)
		au_dead_release(&dead[0]);
	t_computation(&c[3], name, 3);
	t_push1(q, &c[3]);
	T_OK(au_queue_dead(q, name, c[3].id, 1, dead, &n) == 0 && n == 0,
	     "dead: a waiting one is not a dead letter");
	st = t_stats(q, name);
	EQ(st.failed, 3, "stats: 3 failed");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	T_OK(n == 1 && au_queue_ack(q, name, &l[0].ref, 1, NULL) == 0, "ack one");
	t_leases_release(l, n);
	EQ(t_stats(q, name).processed, 1, "stats: 1 processed");

	/* requeue: back to ready as new, only if dead */
	ids[0] = c[0].id;
	ids[1] = c[3].id;
	T_OK(au_queue_requeue(q, name, ids, 2, applied) == 0, "requeue (%s)", q->err.str);
	T_OK(applied[0] == 1 && applied[1] == 0, "requeue: the dead one applies, the gone one not");
	EQ(peek(q, name, c[0].id, &info), AU_QUEUED_READY, "requeued: ready");
	T_OK(info.attempts == 0 && !info.error[0], "requeued: attempts and error reset (%u '%s')",
	     info.attempts, info.error);
	EQ(t_stats(q, name).dead, 2, "requeued: 2 dead left");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	T_OK(n == 1 && !strcmp(l[0].ref.id, c[0].id) && l[0].attempts == 1,
	     "requeued: leased again as a first attempt");
	/* a leased one is not touched: fencing holds */
	T_OK(au_queue_requeue(q, name, ids, 1, applied) == 0 && applied[0] == 0,
	     "requeue of a running one does not apply");
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "ack") == 1, "its lease still acks");
	t_leases_release(l, n);
	T_OK(au_queue_requeue(q, name, ids, 1, applied) == 0 && applied[0] == 0,
	     "requeue of a finished one does not apply");
	ids[0] = "nope";
	T_OK(au_queue_requeue(q, name, ids, 1, applied) < 0 && q->err.code == AU_EINVAL,
	     "requeue of an invalid id: AU_EINVAL");

	/* purge */
	T_OK(au_queue_purge(q, name, 3600000, &removed) == 0 && removed == 0,
	     "purge older than 1 h: none (%zu)", removed);
	T_OK(au_queue_purge(q, name, 0, &removed) == 0 && removed == 2, "purge: the 2 dead (%zu)",
	     removed);
	EQ(t_stats(q, name).dead, 0, "purged: none dead");
	EQ(-peek(q, name, c[1].id, &info), AU_ENOTFOUND, "purged: its data is gone");
	st = t_stats(q, name);
	T_OK(st.processed == 2 && st.per_minute >= 1 && st.per_minute <= 10,
	     "stats: 2 processed, and a rate of the recent ones (%llu a minute)",
	     (unsigned long long)st.per_minute);
	for (i = 0; i < 4; i++)
		au_computation_release(&c[i]);
}

/* url with its query extended by param */
static char *url_with(const char *param)
{
	return au_asprintf("%s%s%s", url, strchr(url, '?') ? "&" : "?", param);
}

static void test_dead_bounds(struct au_queue *q)
{
	struct au_computation c[5];
	struct au_queue *a, *b;
	struct au_dead dead[8];
	struct au_queued info;
	char name[64], *u;
	size_t i, n, rq, bu;

	t_queue_name(name, "conf", "bounds");
	u = url_with("dead_max=2&dead_max_age=1s");
	a = t_open_queue(u);
	b = t_open_queue(u);
	for (i = 0; i < 4; i++) {
		t_computation(&c[i], name, (int)i);
		t_push1(q, &c[i]);
	}
	bury_all(a, name, "boom");
	EQ(t_stats(q, name).dead, 4, "bounds: 4 buried");
	T_OK(au_queue_rescue(a, name, 100, &rq, &bu) == 0, "bounds: rescue (%s)", a->err.str);
	EQ(t_stats(q, name).dead, 2, "bounds: dead_max=2 keeps 2");
	T_OK(au_queue_dead(q, name, NULL, 8, dead, &n) == 0 && n == 2 &&
	     !strcmp(dead[0].id, c[3].id) && !strcmp(dead[1].id, c[2].id), "bounds: the newest");
	for (i = 0; i < n; i++)
		au_dead_release(&dead[i]);
	EQ(-peek(q, name, c[0].id, &info), AU_ENOTFOUND, "bounds: the oldest are gone, data and all");
	t_sleep_ms(1100);
	t_computation(&c[4], name, 4);
	t_push1(q, &c[4]);
	bury_all(q, name, "boom");
	T_OK(au_queue_rescue(b, name, 100, &rq, &bu) == 0, "bounds: rescue of another handle");
	T_OK(au_queue_dead(q, name, NULL, 8, dead, &n) == 0 && n == 1 && !strcmp(dead[0].id, c[4].id),
	     "bounds: dead_max_age=1s drops those older (%zu left)", n);
	for (i = 0; i < n; i++)
		au_dead_release(&dead[i]);
	au_queue_close(a);
	au_queue_close(b);
	free(u);
	u = url_with("dead_max=many");
	a = au_queue_open(u);
	T_OK(a && a->err.code == AU_EINVAL && strstr(a->err.str, "dead_max must be a count"),
	     "bounds: a bad dead_max is refused (%s)", a ? a->err.str : "oom");
	au_queue_close(a);
	free(u);
	u = url_with("dead_max_age=soon");
	a = au_queue_open(u);
	T_OK(a && a->err.code == AU_EINVAL && strstr(a->err.str, "dead_max_age must be a duration"),
	     "bounds: a bad dead_max_age is refused (%s)", a ? a->err.str : "oom");
	au_queue_close(a);
	free(u);
	for (i = 0; i < 5; i++)
		au_computation_release(&c[i]);
}

static int listed(struct au_queue *q, const char *name)
{
	char **names = NULL;
	size_t n = 0, i;
	int found = 0;

	if (au_queue_list(q, &names, &n) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		found |= !strcmp(names[i], name);
		free(names[i]);
	}
	free(names);
	return found;
}

static void test_pause(struct au_queue *q)
{
	struct au_computation c[2];
	struct au_lease l[4];
	char name[64], other[64];
	size_t n;

	t_queue_name(name, "conf", "pause");
	t_computation(&c[0], name, 0);
	t_computation(&c[1], name, 1);
	t_push1(q, &c[0]);
	n = t_lease(q, name, 1, LONG_LEASE, 0, l);
	EQ(n, 1, "pause: one running");
	t_push1(q, &c[1]);
	T_OK(au_queue_pause(q, name, 1) == 0, "pause (%s)", q->err.str);
	T_OK(t_stats(q, name).paused, "paused: stats say so");
	EQ(t_lease(q, name, 4, LONG_LEASE, 0, l + 1), 0, "paused: nothing is leased");
	EQ(t_lease(q, name, 4, LONG_LEASE, 100, l + 1), 0, "paused: nor by a blocking lease");
	EQ(t_stats(q, name).ready, 1, "paused: the waiting one waits");
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "ack") == 1, "paused: a running one still acks");
	t_leases_release(l, n);
	T_OK(au_queue_pause(q, name, 0) == 0, "resume (%s)", q->err.str);
	T_OK(!t_stats(q, name).paused, "resumed: stats say so");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	T_OK(n == 1 && !strcmp(l[0].ref.id, c[1].id), "resumed: leased");
	t_leases_release(l, n);
	t_queue_name(other, "conf", "pause-new");
	T_OK(au_queue_pause(q, other, 1) == 0 && listed(q, other) == 1 && t_stats(q, other).paused,
	     "a queue paused before its first push is listed, paused");
	au_queue_drop(q, other, 0);
	au_computation_release(&c[0]);
	au_computation_release(&c[1]);
}

static void test_empty(struct au_queue *q)
{
	struct au_computation c[5];
	struct au_lease l[2], k[2];
	struct au_queued info;
	struct au_queue_stats st;
	char name[64];
	size_t i, n, m, removed = 0;
	const char *why = "boom";
	int applied = 0;

	t_queue_name(name, "conf", "empty");
	for (i = 0; i < 5; i++) {
		t_computation(&c[i], name, (int)i);
		if (i == 4)
			c[i].run_at_ms = au_now_ms() + 600000;
		t_push1(q, &c[i]);
	}
	n = t_lease(q, name, 1, LONG_LEASE, 0, l);
	m = t_lease(q, name, 1, LONG_LEASE, 0, k);
	T_OK(n == 1 && m == 1 && au_queue_bury(q, name, &k[0].ref, 1, &why, &applied) == 0 && applied,
	     "empty: one running, one dead");
	T_OK(au_queue_empty(q, name, &removed) == 0 && removed == 3,
	     "empty: the 2 ready and the scheduled one go (%zu)", removed);
	st = t_stats(q, name);
	T_OK(st.ready == 0 && st.scheduled == 0 && st.leased == 1 && st.dead == 1,
	     "empty: running and dead ones stay");
	EQ(-peek(q, name, c[2].id, &info), AU_ENOTFOUND, "empty: their data is gone");
	EQ(-peek(q, name, c[4].id, &info), AU_ENOTFOUND, "empty: the scheduled one's too");
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "ack") == 1, "empty: the running one acks");
	t_leases_release(l, n);
	t_leases_release(k, m);
	T_OK(au_queue_empty(q, name, &removed) == 0 && removed == 0, "empty again: nothing");
	for (i = 0; i < 5; i++)
		au_computation_release(&c[i]);
}

static void test_drop(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	struct au_queued info;
	struct au_queue_stats st;
	char name[64], want[200];
	size_t n;

	t_queue_name(name, "conf", "drop");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	bury_all(q, name, "boom");
	snprintf(want, sizeof(want), "queue '%s' holds computations: 0 ready, 0 scheduled,"
		 " 0 running, 1 dead", name);
	T_OK(au_queue_drop(q, name, 0) < 0 && q->err.code == AU_ESTATE, "drop: refused with work");
	T_EQ_STR(q->err.str, want, "drop: the message says what it holds");
	EQ(listed(q, name), 1, "drop refused: still listed");
	T_OK(au_queue_drop(q, name, 1) == 0, "drop --force (%s)", q->err.str);
	EQ(listed(q, name), 0, "dropped: not listed");
	st = t_stats(q, name);
	T_OK(st.ready + st.scheduled + st.leased + st.dead + st.processed + st.failed == 0,
	     "dropped: nothing counted");
	EQ(-peek(q, name, c.id, &info), AU_ENOTFOUND, "dropped: its data is gone");
	au_computation_release(&c);

	t_queue_name(name, "conf", "drop-idle");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "ack") == 1, "drop: a queue whose work is done");
	t_leases_release(l, n);
	T_OK(au_queue_drop(q, name, 0) == 0 && listed(q, name) == 0, "drop: an idle queue goes");
	au_computation_release(&c);
}

static void test_locate(struct au_queue *q)
{
	struct au_computation c;
	struct au_lease l[2];
	char name[64], *found = NULL;
	size_t n;

	t_queue_name(name, "conf", "locate");
	t_computation(&c, name, 0);
	t_push1(q, &c);
	T_OK(au_queue_locate(q, c.id, NULL, &found) == 0 && found && !strcmp(found, name),
	     "locate: found on its queue (%s)", q->err.str);
	free(found);
	found = NULL;
	T_OK(au_queue_locate(q, c.id, "conf-no-such-queue", &found) == 0 && found &&
	     !strcmp(found, name), "locate: a wrong hint does not matter");
	free(found);
	found = NULL;
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(au_queue_locate(q, c.id, NULL, &found) == 0 && found && !strcmp(found, name),
	     "locate: a running one");
	free(found);
	found = NULL;
	T_OK(n == 1 && applied1(q, name, &l[0].ref, "ack") == 1, "locate: ack");
	t_leases_release(l, n);
	T_OK(au_queue_locate(q, c.id, NULL, &found) < 0 && q->err.code == AU_ENOTFOUND && !found,
	     "locate: a finished one is on no queue");
	au_computation_release(&c);
}

/*
 * Out-of-range input never reaches a backend as it is, and never fails an
 * operation: a run_at or retry delay beyond what a backend can store stays
 * scheduled (it is not taken for "now"), and an absurdly long id is cut
 * in the message that refuses it.
 */
/* rate_take: a bucket's burst at once, then a token per 1/rate; keys apart;
 * tokens taken ahead within reserve_ms, due in turn; the contract's bounds. */
static void test_rate(struct au_queue *q)
{
	struct au_rate_limit lim = { 10, 3, 0 };   /* 10 a second, 3 at once */
	char key[64], other[80];
	uint64_t wait = 0, last = 0;
	int taken = 0, ok = 1, i, ahead = 0;

	snprintf(key, sizeof(key), "conf:rate[%08x]", (unsigned)au_random64());
	snprintf(other, sizeof(other), "%s-other", key);
	for (i = 0; i < 3; i++)
		ok &= au_queue_rate_take(q, key, &lim, &wait, &taken) == 0 && taken && wait == 0;
	T_OK(ok, "rate: the burst is taken at once");
	ok = au_queue_rate_take(q, key, &lim, &wait, &taken) == 0;
	T_OK(ok && !taken && wait >= 50 && wait <= 100, "rate: then none, for about 1/rate (%llu ms)",
	     (unsigned long long)wait);
	T_OK(au_queue_rate_take(q, other, &lim, &last, &taken) == 0 && taken && last == 0,
	     "rate: another key has its own bucket");
	t_sleep_ms((unsigned)wait + 5);
	T_OK(au_queue_rate_take(q, key, &lim, &wait, &taken) == 0 && taken && wait == 0,
	     "rate: a token after the wait");

	lim.reserve_ms = 1000;
	ok = au_queue_rate_take(q, key, &lim, &wait, &taken) == 0;
	T_OK(ok && taken && wait >= 50 && wait <= 100, "rate: with reserve_ms, the next token is"
	     " taken ahead (due in %llu ms)", (unsigned long long)wait);
	last = wait;
	for (i = 0; i < 20; i++) {
		if (au_queue_rate_take(q, key, &lim, &wait, &taken) < 0 || !taken)
			break;
		ok &= wait >= last + 80 && wait <= last + 100;
		last = wait;
		ahead++;
	}
	T_OK(ok && ahead >= 8 && ahead <= 10, "rate: each taken ahead is due 1/rate after the"
	     " last (%d of them, the last in %llu ms)", ahead, (unsigned long long)last);
	T_OK(i < 20 && !taken && wait >= 1 && wait <= 100, "rate: beyond reserve_ms none is"
	     " taken, and the wait says when one could be (%llu ms)", (unsigned long long)wait);

	lim.rate_per_s = 0;
	T_OK(au_queue_rate_take(q, key, &lim, &wait, &taken) < 0 && q->err.code == AU_EINVAL,
	     "rate: a rate of 0 is refused");
	lim.rate_per_s = 10;
	lim.burst = 0.5;
	T_OK(au_queue_rate_take(q, key, &lim, &wait, &taken) < 0 && q->err.code == AU_EINVAL,
	     "rate: a burst under 1 is refused");
	lim.burst = 1;
	T_OK(au_queue_rate_take(q, "", &lim, &wait, &taken) < 0 && q->err.code == AU_EINVAL &&
	     au_queue_rate_take(q, "\xff", &lim, &wait, &taken) < 0 && q->err.code == AU_EINVAL &&
	     au_queue_rate_take(q, "a\nb", &lim, &wait, &taken) < 0 && q->err.code == AU_EINVAL,
	     "rate: an empty key, bytes not UTF-8, a control byte are refused");
	T_EQ_STR(q->err.str, "invalid rate limit key 'a?b'", "rate: ... naming the key");
}

static void test_out_of_range(struct au_queue *q)
{
	struct au_computation c, d;
	struct au_queued info;
	struct au_lease l[2];
	uint64_t forever = UINT64_MAX;
	const char *why = "again";
	char name[64], want[200], *longid = malloc(100001);
	size_t n;

	t_queue_name(name, "conf", "range");
	t_computation(&c, name, 1);
	c.run_at_ms = UINT64_MAX;
	T_OK(t_push1(q, &c) == 0, "range: a push with run_at UINT64_MAX (%s)", q->err.str);
	EQ(peek(q, name, c.id, &info), AU_QUEUED_SCHEDULED, "range: it is scheduled, not ready");
	EQ(t_lease(q, name, 2, LONG_LEASE, 0, l), 0, "range: and not leased");
	t_computation(&d, name, 2);
	t_push1(q, &d);
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	T_OK(n == 1 && au_queue_retry(q, name, &l[0].ref, 1, &forever, &why, NULL, NULL) == 0,
	     "range: a retry with a delay of UINT64_MAX (%s)", q->err.str);
	t_leases_release(l, n);
	EQ(peek(q, name, d.id, &info), AU_QUEUED_SCHEDULED, "range: it waits, not ready at once");
	EQ(t_stats(q, name).scheduled, 2, "range: both counted as scheduled");

	memset(longid, 'a', 100000);
	longid[100000] = '\0';
	snprintf(want, sizeof(want), "invalid computation id '%.64s\xe2\x80\xa6'", longid);
	T_OK(au_queue_peek(q, name, longid, &info) < 0 && q->err.code == AU_EINVAL && !info.story,
	     "range: peek of a 100 KB id is refused");
	T_EQ_STR(q->err.str, want, "range: the id cut after 64 bytes in the message");
	T_OK(au_queue_cancel(q, name, longid) < 0, "range: so is cancel");
	T_EQ_STR(q->err.str, want, "range: with the same message");
	longid[3] = '\n';
	au_queue_peek(q, name, longid, &info);
	au_queued_release(&info);
	T_OK(!strchr(q->err.str, '\n'), "range: a control byte of the id is not echoed");
	free(longid);
	au_computation_release(&c);
	au_computation_release(&d);
}

/* ---- the worker registry ---- */

static void beat_init(struct au_worker_beat *b, const char *id, uint32_t ttl_ms)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "%s", id);
	snprintf(b->host, sizeof(b->host), "conf-host");
	b->pid = 4242;
	snprintf(b->queues, sizeof(b->queues), "a,b");
	snprintf(b->version, sizeof(b->version), "%s", AU_VERSION);
	b->started_ms = au_now_ms() - 5000;
	b->concurrency = 8;
	b->state = AU_BEAT_RUNNING;
	b->running = 2;
	b->nids = 2;
	au_id_new(b->ids[0]);
	au_id_new(b->ids[1]);
	b->leased = 10;
	b->completed = 7;
	b->failed = 1;
	b->retried = 2;
	b->released = 3;
	b->outages = 4;
	b->ttl_ms = ttl_ms;
	/* the metrics blob: opaque bytes, NULs and high bytes among them, to the full size */
	b->metrics_len = AU_BEAT_METRICS_MAX;
	for (size_t i = 0; i < AU_BEAT_METRICS_MAX; i++)
		b->metrics[i] = (unsigned char)(i * 7 + 3);
	b->metrics[5] = 0;
}

/* The listed entry of id (copied to *out), 1 if there is one. */
static int worker_listed(struct au_queue *q, const char *id, struct au_worker_beat *out)
{
	struct au_worker_beat *all;
	size_t n, i;
	int found = 0;

	if (au_queue_workers(q, &all, &n) < 0) {
		T_OK(0, "workers (%s)", q->err.str);
		return 0;
	}
	for (i = 0; i < n; i++)
		if (!strcmp(all[i].id, id)) {
			if (out)
				*out = all[i];
			found = 1;
		}
	free(all);
	return found;
}

static void test_workers(struct au_queue *q)
{
	struct au_worker_beat b, got, b2;
	struct au_queue *other;
	char id[128], id2[128];
	int stop = -1;

	if (!q->ops->beat) {
		beat_init(&b, "x", 1000);
		T_OK(au_queue_beat(q, &b, &stop) < 0 && q->err.code == AU_ESTATE,
		     "registry: not kept, said so");
		return;
	}
	other = t_open_queue(url);
	snprintf(id, sizeof(id), "conf-host:4242:%08x", (unsigned)au_random64());
	snprintf(id2, sizeof(id2), "conf-host:4243:%08x", (unsigned)au_random64());
	beat_init(&b, id, 30000);
	T_OK(au_queue_beat(q, &b, &stop) == 0 && stop == 0, "registry: a beat registers (%s)",
	     q->err.str);
	memset(&got, 0, sizeof(got));
	T_OK(worker_listed(other, id, &got), "registry: listed, by another handle too");
	T_EQ_STR(got.host, "conf-host", "registry: host");
	T_EQ_STR(got.queues, "a,b", "registry: queues");
	T_EQ_STR(got.version, AU_VERSION, "registry: version");
	T_OK(got.pid == 4242 && got.started_ms == b.started_ms && got.concurrency == 8 &&
	     got.state == AU_BEAT_RUNNING && got.ttl_ms == 30000, "registry: pid, started,"
	     " concurrency, state, ttl");
	T_OK(got.running == 2 && got.nids == 2 && !strcmp(got.ids[0], b.ids[0]) &&
	     !strcmp(got.ids[1], b.ids[1]), "registry: what runs now");
	T_OK(got.leased == 10 && got.completed == 7 && got.failed == 1 && got.retried == 2 &&
	     got.released == 3 && got.outages == 4, "registry: counts");
	T_OK(got.metrics_len == AU_BEAT_METRICS_MAX &&
	     !memcmp(got.metrics, b.metrics, AU_BEAT_METRICS_MAX),
	     "registry: the metrics blob, 8 KiB of any bytes, as given (%u bytes)",
	     (unsigned)got.metrics_len);
	T_OK(got.age_ms < 3000 && got.beat_at_ms + 10000 > au_now_ms() &&
	     got.beat_at_ms < au_now_ms() + 10000, "registry: last beat just now (%llu ms ago)",
	     (unsigned long long)got.age_ms);

	b.completed = 9;
	b.state = AU_BEAT_PAUSED;
	snprintf(b.paused_by, sizeof(b.paused_by), "store");
	b.running = 0;
	b.nids = 0;
	b.metrics_len = 3;
	memcpy(b.metrics, "\x81\xa1v", 3);
	T_OK(au_queue_beat(q, &b, &stop) == 0 && stop == 0, "registry: a second beat (%s)",
	     q->err.str);
	T_OK(worker_listed(q, id, &got) && got.completed == 9 && got.state == AU_BEAT_PAUSED &&
	     !strcmp(got.paused_by, "store") && got.running == 0 && got.nids == 0,
	     "registry: ... refreshes the entry");
	T_OK(got.metrics_len == 3 && !memcmp(got.metrics, "\x81\xa1v", 3),
	     "registry: ... and its metrics blob");
	b.metrics_len = 0;
	T_OK(au_queue_beat(q, &b, &stop) == 0 && worker_listed(q, id, &got) && got.metrics_len == 0,
	     "registry: a beat without metrics (the middleware off) lists none");

	T_OK(au_queue_worker_stop(other, "conf-host:1:nobody") < 0 &&
	     other->err.code == AU_ENOTFOUND, "registry: stop of an unknown worker: AU_ENOTFOUND");
	T_OK(au_queue_worker_stop(other, "bad id") < 0 && other->err.code == AU_EINVAL,
	     "registry: an id with a space is refused");
	T_OK(au_queue_worker_stop(other, id) == 0, "registry: stop (%s)", other->err.str);
	T_OK(au_queue_beat(q, &b, &stop) == 0 && stop == 1, "registry: the next beat hears it");
	stop = 0;
	T_OK(au_queue_beat(q, &b, &stop) == 0 && stop == 1, "registry: ... and the one after");

	beat_init(&b2, id2, 300);
	T_OK(au_queue_beat(q, &b2, &stop) == 0 && stop == 0, "registry: an entry with a 300 ms ttl");
	T_OK(worker_listed(q, id2, NULL), "registry: listed while it lives");
	t_sleep_ms(800);
	T_OK(!worker_listed(q, id2, NULL), "registry: gone after its ttl");
	T_OK(au_queue_worker_stop(q, id2) < 0 && q->err.code == AU_ENOTFOUND,
	     "registry: a gone worker cannot be stopped");
	T_OK(au_queue_beat(q, &b2, &stop) == 0 && stop == 0 && worker_listed(q, id2, NULL),
	     "registry: beating again brings it back");

	T_OK(au_queue_worker_gone(q, id) == 0 && !worker_listed(other, id, NULL),
	     "registry: worker_gone removes the entry");
	T_OK(au_queue_worker_gone(q, id) == 0, "registry: removing it twice is no error");
	T_OK(worker_listed(q, id2, NULL), "registry: the other stays");
	au_queue_worker_gone(q, id2);
	au_queue_close(other);
}

static void run_suite(const char *u)
{
	struct au_queue *q;

	url = u;
	printf("# queue '%s'\n", u);
	q = t_open_queue(url);
	test_roundtrip(q);
	test_batch(q);
	test_order(q);
	test_scheduled(q);
	test_block(q);
	test_stale(q);
	test_retry_delay(q);
	test_release(q);
	test_bury(q);
	test_extend(q);
	test_rescue(q);
	test_story(q);
	test_story_batch(q);
	test_story_gone(q);
	test_cancel(q);
	test_stats_queues(q);
	test_watch(q);
	test_watch_pause(q);
	test_cancel_running(q);
	test_ack_store(q);
	test_concurrent(q);
	test_dead_letters(q);
	test_dead_bounds(q);
	test_pause(q);
	test_empty(q);
	test_drop(q);
	test_locate(q);
	test_rate(q);
	test_out_of_range(q);
	test_workers(q);
	au_queue_close(q);
}

int main(int argc, char **argv)
{
	/* The Redis backend writes to sockets the server may have closed. */
	signal(SIGPIPE, SIG_IGN);
	test_registry();
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			run_suite(argv[i]);
	} else {
		run_suite(t_env("AU_TEST_REDIS"));
		run_suite("memory://conformance");
		run_suite(t_env("AU_TEST_PG"));
	}
	return t_done();
}
