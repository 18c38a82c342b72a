/*
 * test_redis.c - what only the Redis queue and store do, against the real
 * server ($AU_TEST_REDIS): the queue's layout written by hand, connections
 * killed, scripts flushed, the eviction policy, the store reconnecting; and
 * the shared client (redis/redis_client.h): one URL gives the queue and the
 * store one behaviour, one message. The conformance suites run the rest,
 * unchanged, on every backend.
 *
 *   test_redis
 */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis.h>

#include "harness.h"
#include "plug.h"
#include "queue.h"
#include "redis_client.h"
#include "store.h"

static const char *url;           /* $AU_TEST_REDIS */

/* ---- helpers, as in the conformance suites ---- */

/* ---- the Redis layout, by hand ---- */

static redisContext *raw_connect(const struct au_url *u)
{
	redisContext *c = redisConnect(u->host, u->port ? u->port : 6379);

	if (!T_OK(c && !c->err, "raw connection to '%s'", u->text)) {
		if (c)
			redisFree(c);
		return NULL;
	}
	return c;
}

/* Runs a command, 0 unless it failed or answered an error. */
static int raw(redisContext *c, const char *fmt, ...)
{
	redisReply *r;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	rc = r && r->type != REDIS_REPLY_ERROR ? 0 : -1;
	if (r)
		freeReplyObject(r);
	return rc;
}

/* Entries written by hand: a garbage body and an id without a body. */
static void test_redis_garbage(struct au_queue *q, redisContext *c)
{
	struct au_computation good, d;
	struct au_lease l[4];
	struct au_queued info;
	struct au_err err;
	char name[64], bad[AU_ID_SIZE], ghost[AU_ID_SIZE];
	size_t n, i;
	int got_bad = 0, got_good = 0;

	t_queue_name(name, "redis", "garbage");
	au_id_new(bad);
	au_id_new(ghost);
	T_OK(raw(c, "HSET au:{%s}:body %s xx", name, bad) == 0 &&
	     raw(c, "RPUSH au:{%s}:ready:0 %s %s", name, bad, ghost) == 0 &&
	     raw(c, "ZADD au:{%s}:prios 0 0", name) == 0, "garbage body and a ghost id by hand");
	t_computation(&good, name, 0);
	t_push1(q, &good);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	for (i = 0; i < n; i++) {
		if (!strcmp(l[i].ref.id, bad)) {
			got_bad = l[i].body_len == 2 && !memcmp(l[i].body, "xx", 2);
			T_OK(au_computation_decode(l[i].body, l[i].body_len, &d, &err) < 0,
			     "the garbage does not decode (%s)", err.str);
		}
		got_good |= !strcmp(l[i].ref.id, good.id);
	}
	EQ(n, 2, "the ghost id is not leased, the rest are");
	T_OK(got_bad, "the garbage body is leased as is (the worker dead-letters it)");
	T_OK(got_good, "the good one is leased");
	EQ(t_stats(q, name).ready, 0, "the ghost is gone from ready");
	EQ(t_stats(q, name).dead, 1, "the ghost is dead-lettered, and counted");
	T_OK(au_queue_peek(q, name, ghost, &info) == 0 && info.state == AU_QUEUED_DEAD,
	     "peek: the ghost is dead");
	T_EQ_STR(info.error, "malformed ready entry: no body for it in the queue's body hash",
		 "peek: with the reason");
	au_queued_release(&info);
	t_leases_release(l, n);
	au_computation_release(&good);
}

/* Enqueued with plain commands, as docs/redis-layout.md tells other
 * languages to. */
static void test_redis_by_hand(struct au_queue *q, redisContext *c)
{
	struct au_computation hand, lib;
	struct au_buf body = AU_BUF_INIT;
	struct au_lease l[4];
	struct au_err err;
	char name[64];
	size_t n;

	t_queue_name(name, "redis", "hand");
	t_computation(&hand, name, 7);
	hand.priority = 5;
	t_computation(&lib, name, 8);
	t_push1(q, &lib);
	au_computation_encode(&hand, &body, &err);
	T_OK(raw(c, "MULTI") == 0 &&
	     raw(c, "HSET au:{%s}:body %s %b", name, hand.id, body.data, body.len) == 0 &&
	     raw(c, "RPUSH au:{%s}:ready:5 %s", name, hand.id) == 0 &&
	     raw(c, "ZADD au:{%s}:prios -5 5", name) == 0 && raw(c, "EXEC") == 0 &&
	     raw(c, "LPUSH au:{%s}:wakelist 1", name) == 0 &&
	     raw(c, "SADD au:queues %s", name) == 0, "enqueue by hand");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	T_OK(n == 2 && !strcmp(l[0].ref.id, hand.id) && l[0].attempts == 1,
	     "the hand-made one is leased, first (priority 5)");
	T_OK(n == 2 && l[0].body_len == body.len && !memcmp(l[0].body, body.data, body.len),
	     "with its body");
	t_leases_release(l, n);
	au_buf_release(&body);
	au_computation_release(&hand);
	au_computation_release(&lib);
}

static long long raw_int(redisContext *c, const char *fmt, const char *name)
{
	redisReply *r = redisCommand(c, fmt, name);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	if (r)
		freeReplyObject(r);
	return v;
}

/* Done computations leave nothing behind but the pins (of extend). */
static void test_redis_clean(struct au_queue *q, redisContext *c)
{
	struct au_computation cs[2];
	struct au_lease l[4];
	struct au_ref refs[2];
	uint64_t delay[2] = { 0, 0 };
	const char *err[2] = { "once", "twice" };
	char name[64];
	size_t n, i;

	t_queue_name(name, "redis", "clean");
	for (i = 0; i < 2; i++)
		t_computation(&cs[i], name, (int)i);
	au_queue_push(q, cs, 2);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	for (i = 0; i < n; i++)
		refs[i] = l[i].ref;
	t_leases_release(l, n);
	T_OK(n == 2 && au_queue_retry(q, name, refs, 2, delay, err, NULL, NULL) == 0, "retry both");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	for (i = 0; i < n; i++)
		refs[i] = l[i].ref;
	t_leases_release(l, n);
	T_OK(n == 2 && au_queue_extend(q, name, refs, 1, LONG_LEASE, NULL) == 0, "extend one");
	T_OK(n == 2 && au_queue_ack(q, name, refs, 2, NULL) == 0, "ack both");
	EQ(raw_int(c, "HLEN au:{%s}:body", name), 0, "no body left");
	EQ(raw_int(c, "HLEN au:{%s}:att", name), 0, "no attempts left");
	EQ(raw_int(c, "HLEN au:{%s}:err", name), 0, "no errors left");
	EQ(raw_int(c, "HLEN au:{%s}:tok", name), 1, "only the pin in tok");
	EQ(raw_int(c, "ZCARD au:{%s}:leased", name), 1, "only the pin in leased");
	t_computations_release(cs, 2);
}

/* Pushed again, in every state, in a big push (a MULTI) and alone (the
 * script writes the body): the queue stays as it was. */
static void test_redis_push_again(struct au_queue *q)
{
	enum { N = 20 };
	struct au_computation cs[N];
	struct au_queue_stats st;
	struct au_lease l[3];
	const char *why = "no";
	uint64_t delay = 0;
	char name[64];
	size_t n, i;
	int ok = 1;

	t_queue_name(name, "redis", "again");
	for (i = 0; i < N; i++)
		t_computation(&cs[i], name, (int)i);
	cs[N - 1].run_at_ms = au_now_ms() + 600000;
	au_queue_push(q, cs, N);
	n = t_lease(q, name, 3, LONG_LEASE, 0, l);
	T_OK(n == 3 && au_queue_retry(q, name, &l[1].ref, 1, &delay, &why, NULL, NULL) == 0 &&
	     au_queue_bury(q, name, &l[2].ref, 1, &why, NULL) == 0,
	     "again: one leased, one retried, one dead, one scheduled, the rest ready");
	t_leases_release(l, n);
	T_OK(au_queue_push(q, cs, N) == 0, "again: all of them in one push (%s)", q->err.str);
	for (i = 0; i < N; i++)
		ok &= au_queue_push(q, &cs[i], 1) == 0;
	T_OK(ok, "again: each alone (%s)", q->err.str);
	st = t_stats(q, name);
	T_OK(st.ready == N - 3 && st.scheduled == 1 && st.leased == 1 && st.dead == 1,
	     "again: nothing moved, nothing doubled (%llu/%llu/%llu/%llu)",
	     (unsigned long long)st.ready, (unsigned long long)st.scheduled,
	     (unsigned long long)st.leased, (unsigned long long)st.dead);
	t_computations_release(cs, N);
}

/* How often the server ran cmd (INFO commandstats), -1 if unknown. */
static long long cmd_calls(redisContext *c, const char *cmd)
{
	redisReply *r = redisCommand(c, "INFO commandstats");
	char key[64];
	const char *p;
	long long v = -1;

	snprintf(key, sizeof(key), "cmdstat_%s:calls=", cmd);
	if (r && r->type == REDIS_REPLY_STRING)
		v = (p = strstr(r->str, key)) ? atoll(p + strlen(key)) : 0;
	if (r)
		freeReplyObject(r);
	return v;
}

/* A server that lost its scripts, then our connection. */
static void test_redis_recovery(struct au_queue *q, redisContext *c)
{
	struct au_computation comp;
	struct au_queue *other;
	struct au_lease l[4];
	char name[64];
	long long loads, evals;
	size_t n;

	t_queue_name(name, "redis", "recovery");
	t_computation(&comp, name, 1);
	T_OK(raw(c, "SCRIPT FLUSH") == 0, "script flush");
	T_OK(t_push1(q, &comp) == 0, "push after SCRIPT FLUSH (%s)", q->err.str);
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 1, "lease after SCRIPT FLUSH");
	t_leases_release(l, n);
	evals = cmd_calls(c, "eval");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 0, "another lease");
	T_OK(evals > 0 && cmd_calls(c, "eval") == evals,
	     "it is an EVALSHA the server answers: the SHA-1 computed at open is Redis' own");
	t_leases_release(l, n);
	loads = cmd_calls(c, "script|load");
	other = t_open_queue(q->url.text);
	T_OK(loads >= 0 && cmd_calls(c, "script|load") == loads, "opening a queue loads no script");
	au_queue_close(other);
	T_OK(raw(c, "CLIENT KILL TYPE normal SKIPME yes") == 0, "kill the backend's connection");
	T_OK(au_queue_cancel(q, name, comp.id) < 0 && q->err.code == AU_ESTATE,
	     "a non-idempotent call after the kill works (%s)", q->err.str);
	au_computation_release(&comp);
}

/* Eviction would lose computations. */
static void test_redis_eviction(struct au_queue *q, redisContext *c)
{
	struct au_queue *lru;
	char want[200];

	if (!T_OK(raw(c, "CONFIG SET maxmemory-policy allkeys-lru") == 0, "CONFIG SET maxmemory-policy"))
		return;
	lru = au_queue_open(q->url.text);
	snprintf(want, sizeof(want), "redis at '%s' uses maxmemory-policy 'allkeys-lru': au needs 'noeviction'",
		 q->url.text);
	T_OK(lru && lru->err.code == AU_ESTATE, "allkeys-lru is refused");
	T_EQ_STR(lru ? lru->err.str : "", want, "with a message");
	au_queue_close(lru);
	T_OK(raw(c, "CONFIG SET maxmemory-policy noeviction") == 0, "policy restored");
}

/* Connections blocked in BLPOP (the watches') now, -1 if unknown. */
static long long blocked(redisContext *c)
{
	redisReply *r = redisCommand(c, "INFO clients");
	const char *p;
	long long v = -1;

	if (r && r->type == REDIS_REPLY_STRING && (p = strstr(r->str, "blocked_clients:")))
		v = atoll(p + strlen("blocked_clients:"));
	if (r)
		freeReplyObject(r);
	return v;
}

/* Kills the connections blocked in BLPOP; how many. */
static int kill_blocked(redisContext *c)
{
	redisReply *r = redisCommand(c, "CLIENT LIST");
	const char *line;
	int killed = 0;

	for (line = r && r->type == REDIS_REPLY_STRING ? r->str : NULL; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		const char *end = strchr(line, '\n'), *cmd = strstr(line, " cmd=blpop ");

		if (cmd && (!end || cmd < end) && !strncmp(line, "id=", 3) &&
		    raw(c, "CLIENT KILL ID %lld", atoll(line + 3)) == 0)
			killed++;
	}
	if (r)
		freeReplyObject(r);
	return killed;
}

/* Runs base for ms. */
static void run_ms(struct event_base *base, unsigned ms)
{
	struct timeval tv = { ms / 1000, ms % 1000 * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* Runs base until the server has want connections blocked (or 5 s). */
static int run_until_blocked(redisContext *c, struct event_base *base, long long want)
{
	int i;

	for (i = 0; i < 250 && blocked(c) != want; i++)
		run_ms(base, 20);
	return blocked(c) == want;
}

/* The watch connection is killed: it comes back and wakes again. */
static void test_redis_watch(struct au_queue *q, redisContext *c)
{
	struct t_waker w = { event_base_new(), 0, 0, 0 };
	char name[64];
	int calls;

	t_queue_name(name, "redis", "rewatch");
	au_queue_watch(q, name, w.base, t_on_wake, &w);
	T_OK(t_run_until(&w, &w.calls, 1, 5000), "redis watch: up");
	T_OK(run_until_blocked(c, w.base, 1), "redis watch: waiting in BLPOP");
	EQ(kill_blocked(c), 1, "redis watch: connection killed");
	calls = w.calls;
	T_OK(t_run_until(&w, &w.calls, calls + 1, 5000), "redis watch: up again");
	T_OK(t_wake_by_push(&w, url, name), "redis watch: a push wakes the loop after the reconnect");
	au_queue_unwatch(q);
	event_base_free(w.base);
}

struct wake_count {
	int calls;
};

static void count_wake(void *arg)
{
	((struct wake_count *)arg)->calls++;
}

static long long llen(redisContext *c, const char *name)
{
	redisReply *r = redisCommand(c, "LLEN au:{%s}:wakelist", name);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	if (r)
		freeReplyObject(r);
	return v;
}

/*
 * Wake one, not all: W watches of one queue, each on a handle of its own,
 * as W idle workers. A push of one computation wakes one of them, a push of
 * three wakes three; a paused watch hands the token it gets to another and
 * is not woken; with all paused the token waits in the wake list for the
 * first to resume.
 */
static void test_redis_wake_one(struct au_queue *q, redisContext *c)
{
	enum { W = 4 };
	struct event_base *base = event_base_new();
	struct au_queue *ws[W];
	struct wake_count cnt[W];
	struct au_computation cs[3];
	char name[64];
	int i, total, woken;

	t_queue_name(name, "redis", "wakeone");
	for (i = 0; i < W; i++) {
		ws[i] = t_open_queue(url);
		cnt[i].calls = 0;
		au_queue_watch(ws[i], name, base, count_wake, &cnt[i]);
	}
	T_OK(run_until_blocked(c, base, W), "wake one: %d watches wait in BLPOP", (int)W);
	for (i = 0, total = 0; i < W; i++)
		total += cnt[i].calls;
	EQ(total, W, "wake one: each woke once when it came up");

	for (i = 0; i < W; i++)
		cnt[i].calls = 0;
	t_computation(&cs[0], name, 0);
	t_push1(q, &cs[0]);
	run_ms(base, 300);
	for (i = 0, total = 0; i < W; i++)
		total += cnt[i].calls;
	EQ(total, 1, "wake one: a push of one computation wakes one watch of 4");
	T_OK(run_until_blocked(c, base, W), "wake one: it waits again");
	au_computation_release(&cs[0]);

	for (i = 0; i < W; i++) {
		cnt[i].calls = 0;
		if (i < 3)
			t_computation(&cs[i], name, i + 1);
	}
	au_queue_push(q, cs, 3);
	run_ms(base, 300);
	for (i = 0, total = 0, woken = 0; i < W; i++) {
		total += cnt[i].calls;
		woken += cnt[i].calls == 1;
	}
	T_OK(total == 3 && woken == 3, "wake one: a push of three wakes three watches, once each "
	     "(%d wakes, %d woken)", total, woken);
	t_computations_release(cs, 3);

	for (i = 0; i < W; i++) {
		cnt[i].calls = 0;
		if (i)
			au_queue_watch_pause(ws[i], 1);
	}
	t_computation(&cs[0], name, 4);
	t_push1(q, &cs[0]);
	run_ms(base, 300);
	for (i = 1, total = 0; i < W; i++)
		total += cnt[i].calls;
	T_OK(cnt[0].calls == 1 && total == 0, "wake one: the paused watches are not woken; "
	     "the one with room is (%d, %d)", cnt[0].calls, total);
	EQ(llen(c, name), 0, "wake one: the token went to it");
	au_computation_release(&cs[0]);

	cnt[0].calls = 0;
	au_queue_watch_pause(ws[0], 1);
	t_computation(&cs[0], name, 5);
	t_push1(q, &cs[0]);
	run_ms(base, 300);
	for (i = 0, total = 0; i < W; i++)
		total += cnt[i].calls;
	EQ(total, 0, "wake one: all paused, none is woken");
	EQ(llen(c, name), 1, "wake one: the token waits in the wake list");
	EQ(blocked(c), 0, "wake one: no paused watch waits in BLPOP once the token came back");
	au_queue_watch_pause(ws[2], 0);
	run_ms(base, 300);
	for (i = 0, total = 0; i < W; i++)
		total += cnt[i].calls;
	T_OK(cnt[2].calls == 1 && total == 1, "wake one: the first to resume gets it (%d of %d)",
	     cnt[2].calls, total);
	EQ(llen(c, name), 0, "wake one: the wake list is empty again");
	au_computation_release(&cs[0]);

	for (i = 0; i < W; i++)
		au_queue_close(ws[i]);
	event_base_free(base);
}

/* Tokens nobody takes stay, but no more than a few dozen. */
static void test_redis_wake_bound(struct au_queue *q, redisContext *c)
{
	struct au_computation cs[100];
	char name[64];
	int i;

	t_queue_name(name, "redis", "wakebound");
	for (i = 0; i < 100; i++)
		t_computation(&cs[i], name, i);
	T_OK(au_queue_push(q, cs, 60) == 0, "wake bound: push 60");
	EQ(llen(c, name), 32, "wake bound: 32 tokens for them");
	for (i = 60; i < 100; i++)
		t_push1(q, &cs[i]);
	EQ(llen(c, name), 32, "wake bound: still 32 after 40 more");
	EQ(t_stats(q, name).ready, 100, "wake bound: all 100 ready");
	t_computations_release(cs, 100);
}

/* Runs a command; 1 if its reply has the type. */
static int raw_reply(redisContext *c, int type, const char *fmt, ...)
{
	redisReply *r;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	rc = r && r->type == type;
	if (r)
		freeReplyObject(r);
	return rc;
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

/* The ready entries of queue name, in order, joined by '|', into out. */
static void ready_entries(redisContext *c, const char *name, int prio, char *out, size_t len)
{
	redisReply *r = redisCommand(c, "LRANGE au:{%s}:ready:%d 0 -1", name, prio);
	size_t i;

	*out = '\0';
	for (i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "|" : "",
			 r->element[i]->str);
	if (r)
		freeReplyObject(r);
}

/*
 * Everything a plain-Redis producer could write wrong: entries that are no
 * id, counts that are no count, a seq counter that is no counter, an order
 * with a priority out of range, an attempts field out of range, a key of
 * another type where a ready list belongs. No operation fails, the good
 * computations are leased in the same call, the bad entries that have an
 * id are dead-lettered with the reason, and each lease call costs no more
 * script calls than before.
 */
static void test_redis_poison(struct au_queue *q, redisContext *c)
{
	struct au_computation cs[6];
	struct au_lease l[16];
	struct au_queued info;
	struct au_queue_stats st;
	uint64_t delay = 60000;
	const char *why = "later";
	char name[64], ids[6][AU_ID_SIZE], upper[] = "ABCDEF0123456789ABCDEF0123456789";
	char entries[512], want[512];
	size_t n, i;
	long long evals;

	t_queue_name(name, "redis", "poison");
	for (i = 0; i < 6; i++)
		au_id_new(ids[i]);
	for (i = 0; i < 6; i++)
		t_computation(&cs[i], name, (int)i);
	/* ids[0]: a count that is no number; ids[1]: a count of 10 digits;
	 * upper: no id, with a body; "not an id" and "x": nothing to file */
	T_OK(raw(c, "RPUSH au:{%s}:ready:0 %s%s %s%s %s %s %s", name, ids[0], " x", ids[1],
		 " 9999999999", upper, "not", "x") == 0 &&
	     raw(c, "HSET au:{%s}:body %s xx", name, upper) == 0 &&
	     raw(c, "ZADD au:{%s}:prios 0 0", name) == 0, "poison: bad entries by hand");
	T_OK(au_queue_push(q, cs, 2) == 0, "poison: two good ones behind them (%s)", q->err.str);
	evals = cmd_calls(c, "evalsha");
	n = t_lease(q, name, 16, LONG_LEASE, 0, l);
	T_OK(n == 2 && !strcmp(l[0].ref.id, cs[0].id) && !strcmp(l[1].ref.id, cs[1].id),
	     "poison: one lease call leases the good ones behind the bad (%zu)", n);
	EQ(cmd_calls(c, "evalsha") - evals, 2,
	   "poison: the lease script, then one bury of what it leased that is no id");
	t_leases_release(l, n);
	st = t_stats(q, name);
	T_OK(st.ready == 0 && st.dead == 3, "poison: nothing left ready, three dead (%llu, %llu)",
	     (unsigned long long)st.ready, (unsigned long long)st.dead);
	T_OK(au_queue_peek(q, name, ids[0], &info) == 0 && info.state == AU_QUEUED_DEAD,
	     "poison: a count that is no number: dead");
	snprintf(want, sizeof(want), "malformed ready entry '%s x': attempts not a number", ids[0]);
	T_EQ_STR(info.error, want, "poison: with the reason");
	au_queued_release(&info);
	T_OK(au_queue_peek(q, name, ids[1], &info) == 0 && info.state == AU_QUEUED_DEAD,
	     "poison: a count too long: dead");
	snprintf(want, sizeof(want), "malformed ready entry '%s 9999999999': attempts out of range",
		 ids[1]);
	T_EQ_STR(info.error, want, "poison: with the reason");
	au_queued_release(&info);
	T_OK(raw_reply(c, REDIS_REPLY_STRING, "ZSCORE au:{%s}:dead %s", name, upper),
	     "poison: the id in capitals is filed under itself");

	/* the good path is one script call: as before */
	t_push1(q, &cs[2]);
	evals = cmd_calls(c, "evalsha");
	n = t_lease(q, name, 16, LONG_LEASE, 0, l);
	T_OK(n == 1 && cmd_calls(c, "evalsha") - evals == 1, "poison: a good lease is one script call");
	t_leases_release(l, n);

	/* hand-written fields the scripts read: none makes them fail */
	T_OK(raw(c, "SET au:{%s}:seq nonsense", name) == 0 &&
	     raw(c, "HSET au:{%s}:att %s 1e300", name, cs[3].id) == 0, "poison: seq and att by hand");
	cs[3].run_at_ms = au_now_ms() + 600000;
	T_OK(t_push1(q, &cs[3]) == 0, "poison: a delayed push with a broken seq (%s)", q->err.str);
	EQ(peek(q, name, cs[3].id, &info), AU_QUEUED_SCHEDULED, "poison: it is scheduled");
	EQ(info.attempts, 0, "poison: an attempts field out of range reads as none");
	T_OK(au_queue_cancel(q, name, cs[3].id) == 0, "poison: and cancels (%s)", q->err.str);
	t_push1(q, &cs[4]);
	n = t_lease(q, name, 16, LONG_LEASE, 0, l);
	raw(c, "SET au:{%s}:seq 9223372036854775807", name);
	T_OK(n == 1 && au_queue_retry(q, name, &l[0].ref, 1, &delay, &why, NULL, NULL) == 0,
	     "poison: a retry with a delay, seq at its end (%s)", q->err.str);
	t_leases_release(l, n);
	EQ(peek(q, name, cs[4].id, &info), AU_QUEUED_SCHEDULED, "poison: it waits its delay");

	/* a due scheduled id whose order names a priority out of range: it
	 * joins priority 0, not a list of its own */
	T_OK(raw(c, "ZADD au:{%s}:sched 1 %s", name, ids[2]) == 0 &&
	     raw(c, "HSET au:{%s}:order %s %s", name, ids[2], "99999999999999999999 5") == 0 &&
	     raw(c, "HSET au:{%s}:att %s %s", name, ids[2], "-3") == 0 &&
	     raw(c, "HSET au:{%s}:body %s xx", name, ids[2]) == 0, "poison: a scheduled one by hand");
	n = t_lease(q, name, 16, LONG_LEASE, 0, l);
	T_OK(n == 1 && !strcmp(l[0].ref.id, ids[2]) && l[0].attempts == 1,
	     "poison: it is leased at priority 0, attempts read as none (%zu)", n);
	t_leases_release(l, n);

	/* a key of another type where a ready list belongs */
	T_OK(raw(c, "SET au:{%s}:ready:7 x", name) == 0 && raw(c, "ZADD au:{%s}:prios -7 7", name) == 0,
	     "poison: a string as ready list 7");
	t_push1(q, &cs[5]);
	n = t_lease(q, name, 16, LONG_LEASE, 0, l);
	T_OK(n == 1 && !strcmp(l[0].ref.id, cs[5].id), "poison: the lease passes it by (%s)",
	     n ? "" : q->err.str);
	t_leases_release(l, n);
	/* a score of +inf in sched: a blocking lease waits, and fails not */
	T_OK(au_queue_cancel(q, name, cs[4].id) == 0, "poison: the retried one cancelled");
	T_OK(raw(c, "ZADD au:{%s}:sched +inf %s", name, ids[3]) == 0, "poison: run_at +inf by hand");
	n = t_lease(q, name, 16, LONG_LEASE, 50, l);
	T_OK(n == 0 && !q->err.code, "poison: a blocking lease with +inf scheduled (%s)", q->err.str);
	ready_entries(c, name, 0, entries, sizeof(entries));
	T_EQ_STR(entries, "", "poison: nothing left on the ready list");
	t_computations_release(cs, 6);
}

static void test_redis(struct au_queue *q)
{
	redisContext *c = raw_connect(&q->url);

	if (!c)
		return;
	test_redis_garbage(q, c);
	test_redis_poison(q, c);
	test_redis_by_hand(q, c);
	test_redis_clean(q, c);
	test_redis_push_again(q);
	test_redis_recovery(q, c);
	test_redis_eviction(q, c);
	test_redis_watch(q, c);
	test_redis_wake_one(q, c);
	test_redis_wake_bound(q, c);
	redisFree(c);
}

static void test_redis_down(void)
{
	struct au_queue *down = au_queue_open("redis://127.0.0.1:1");

	T_OK(down && down->err.code == AU_ECONN, "redis: server down gives AU_ECONN");
	T_EQ_STR(down ? down->err.str : "", "unable to connect to 'redis://127.0.0.1:1': connection refused",
		 "redis: the message");
	au_queue_close(down);
}

/* ---- the Redis store ---- */

/* Kills every client connection of the store's server but the killer's. */
static int kill_clients(const struct au_url *u)
{
	redisContext *c = redisConnect(u->host, u->port ? u->port : 6379);
	redisReply *r = c && !c->err ? redisCommand(c, "CLIENT KILL TYPE normal SKIPME yes") : NULL;
	redisReply *p = r ? redisCommand(c, "CLIENT KILL TYPE pubsub") : NULL;
	int rc = r && p && r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? 0 : -1;

	if (r)
		freeReplyObject(r);
	if (p)
		freeReplyObject(p);
	if (c)
		redisFree(c);
	return rc;
}

static void test_redis_store(struct au_store *s)
{
	struct au_store *down = au_store_open("redis://127.0.0.1:1");
	struct au_record r, out;
	int rc;

	T_OK(down && down->err.code == AU_ECONN, "redis: server down gives AU_ECONN");
	T_EQ_STR(down ? down->err.str : NULL,
		 "unable to connect to 'redis://127.0.0.1:1': connection refused", "redis: message");
	au_store_close(down);

	/* Both connections (commands, and wait's subscription) are open now. */
	t_record(&r, AU_COMPLETED, 600);
	EQ(t_put1(s, &r), 1, "redis: put before the connections drop");
	T_OK(kill_clients(&s->url) == 0, "redis: killed the store's connections");
	EQ(t_get_code(s, r.id), AU_OK, "redis: get reconnects after a drop");
	T_OK(kill_clients(&s->url) == 0, "redis: killed them again");
	au_record_init(&out);
	rc = au_store_wait(s, r.id, 1000, &out);
	T_OK(rc == 0, "redis: wait reconnects after a drop (%s)", rc ? s->err.str : "ok");
	au_record_release(&out);
	t_wait_for_writer(s, url, 2000);
}

/* A wait, so that the store has its subscription connection open, as the
 * store conformance suite leaves it. */
static void open_subscription(struct au_store *s)
{
	struct au_record r, out;
	int rc;

	t_record(&r, AU_COMPLETED, 600);
	t_put1(s, &r);
	au_record_init(&out);
	rc = au_store_wait(s, r.id, 1000, &out);
	T_OK(rc == 0, "redis: a wait opens the subscription (%s)", rc ? s->err.str : "ok");
	au_record_release(&out);
}

/* ---- the shared client: one URL, one behaviour ---- */

static void test_client_db(void)
{
	static const struct {
		const char *url;
		int db;         /* -1: refused */
	} cases[] = {
		{ "redis://h", 0 },
		{ "redis://h/", 0 },
		{ "redis://h/0", 0 },
		{ "redis://h/7", 7 },
		{ "redis://h/007", 7 },
		{ "redis://h/2147483647", 2147483647 },
		{ "redis://h/2147483648", -1 },
		{ "redis://h/x", -1 },
		{ "redis://h/-1", -1 },
		{ "redis://h/+1", -1 },
		{ "redis://h/1x", -1 },
		{ "redis://h/ 1", -1 },
	};
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(cases); i++) {
		struct au_url u;
		struct au_err err = { 0 };
		char want[200];
		int db = -2, rc;

		if (!T_OK(au_url_parse(cases[i].url, &u, &err) == 0, "client: parse '%s' (%s)",
			  cases[i].url, err.str))
			continue;
		rc = au_redis_db(&u, &db, &err);
		if (cases[i].db >= 0) {
			T_OK(rc == 0 && db == cases[i].db, "client: '%s' is database %d (%d)",
			     cases[i].url, cases[i].db, db);
		} else {
			snprintf(want, sizeof(want), "invalid redis database '%s' in '%s'", u.path,
				 u.text);
			T_OK(rc < 0 && err.code == AU_EINVAL, "client: '%s' refused", cases[i].url);
			T_EQ_STR(err.str, want, "client: the message");
		}
		au_url_release(&u);
	}
}

static void test_client_auth_argv(void)
{
	struct au_url u;
	struct au_err err;
	const char *argv[3];

	if (au_url_parse("redis://h", &u, &err) == 0) {
		EQ(au_redis_auth_argv(&u, argv), 0, "client: no password, no AUTH");
		au_url_release(&u);
	}
	if (au_url_parse("redis://:pw@h", &u, &err) == 0) {
		T_OK(au_redis_auth_argv(&u, argv) == 2 && !strcmp(argv[0], "AUTH") &&
		     !strcmp(argv[1], "pw"), "client: ':pw@' is AUTH pw (the default user)");
		au_url_release(&u);
	}
	if (au_url_parse("redis://ann:pw@h", &u, &err) == 0) {
		T_OK(au_redis_auth_argv(&u, argv) == 3 && !strcmp(argv[1], "ann") &&
		     !strcmp(argv[2], "pw"), "client: 'ann:pw@' is AUTH ann pw (an ACL user)");
		au_url_release(&u);
	}
}

/* $AU_TEST_REDIS with userinfo ("user:pw@") before its host and path
 * ("/db") after it; malloc'ed. */
static char *with(const char *userinfo, const char *path)
{
	const char *hostport = url + strlen("redis://");

	return au_asprintf("redis://%s%s%s", userinfo, hostport, path);
}

/* The queue and the store, opened on u, fail alike: code and message. */
static void same_failure(const char *u, int code, const char *prefix, const char *what)
{
	struct au_queue *q = au_queue_open(u);
	struct au_store *s = au_store_open(u);

	T_OK(q && q->err.code == code, "same: queue on %s fails with %d (%d: %s)", what, code,
	     q ? q->err.code : -1, q ? q->err.str : "oom");
	T_OK(s && s->err.code == code, "same: store on %s fails with %d (%d: %s)", what, code,
	     s ? s->err.code : -1, s ? s->err.str : "oom");
	T_EQ_STR(q ? q->err.str : "", s ? s->err.str : "", "same: one message for both");
	T_OK(q && !strncmp(q->err.str, prefix, strlen(prefix)), "same: '%s' starts '%s'",
	     q ? q->err.str : "", prefix);
	au_queue_close(q);
	au_store_close(s);
}

static void test_same_behaviour(redisContext *c)
{
	char *u, *prefix;
	struct au_queue *q;
	struct au_store *s;
	struct t_waker w = { event_base_new(), 0, 0, 0 };
	struct au_record r, out;
	struct au_queue *other;
	char name[64];
	int calls;

	u = with("", "/x");
	prefix = au_asprintf("invalid redis database 'x' in '%s'", u);
	same_failure(u, AU_EINVAL, prefix, "a bad database");
	free(prefix);
	free(u);

	u = with("", "/100000");
	prefix = au_asprintf("unable to use '%s': ERR DB index is out of range", u);
	same_failure(u, AU_ECONN, prefix, "a database the server does not have");
	free(prefix);
	free(u);

	u = with(":nope@", "");
	prefix = au_asprintf("unable to use 'redis://:***@%s': ERR", url + strlen("redis://"));
	same_failure(u, AU_ECONN, prefix, "a password the server does not want");
	free(prefix);
	free(u);

	/* an ACL user, on database 1 */
	if (!T_OK(raw(c, "ACL SETUSER au-test on >secret ~* &* +@all") == 0, "acl: user made")) {
		event_base_free(w.base);
		return;
	}
	u = with("au-test:wrong@", "/1");
	prefix = au_asprintf("unable to use 'redis://au-test:***@%s/1': WRONGPASS",
			     url + strlen("redis://"));
	same_failure(u, AU_ECONN, prefix, "a wrong password of an ACL user");
	free(prefix);
	free(u);

	u = with("au-test:secret@", "/1");
	q = au_queue_open(u);
	s = au_store_open(u);
	T_OK(q && !q->err.code, "acl: the queue logs in as the user (%s)", q ? q->err.str : "oom");
	T_OK(s && !s->err.code, "acl: the store logs in as the user (%s)", s ? s->err.str : "oom");
	if (q && !q->err.code && s && !s->err.code) {
		struct au_computation comp;
		struct au_lease l[2];
		size_t n;

		t_queue_name(name, "redis", "acl");
		t_computation(&comp, name, 1);
		T_OK(t_push1(q, &comp) == 0, "acl: push (%s)", q->err.str);
		EQ(raw_int(c, "EXISTS au:{%s}:body", name), 0, "acl: not in database 0");
		T_OK(raw(c, "SELECT 1") == 0, "acl: select 1 by hand");
		EQ(raw_int(c, "HLEN au:{%s}:body", name), 1, "acl: the push went to database 1");
		T_OK(raw(c, "SELECT 0") == 0, "acl: select 0 by hand");
		n = t_lease(q, name, 2, LONG_LEASE, 0, l);
		EQ(n, 1, "acl: lease");
		t_leases_release(l, n);
		au_computation_release(&comp);

		/* the watch connects on its own (async): it logs in too */
		T_OK(au_queue_watch(q, name, w.base, t_on_wake, &w) == 0, "acl: watch (%s)", q->err.str);
		T_OK(t_run_until(&w, &w.calls, 1, 5000), "acl: the watch logs in and selects");
		/* the wake list is in the database, as the queue; the token of
		 * the push above is taken first */
		T_OK(run_until_blocked(c, w.base, 1), "acl: the watch waits in BLPOP");
		other = t_open_queue(url);
		t_computation(&comp, name, 2);
		t_push1(other, &comp);
		au_computation_release(&comp);
		au_queue_close(other);
		calls = w.calls;
		t_run_until(&w, &w.calls, calls + 1, 300);
		EQ(w.calls, calls, "acl: a push to database 0 does not wake the watch of database 1");
		T_OK(t_wake_by_push(&w, u, name), "acl: a push to database 1 wakes it");
		au_queue_unwatch(q);

		t_record(&r, AU_COMPLETED, 600);
		EQ(t_put1(s, &r), 1, "acl: store put");
		au_record_init(&out);
		T_OK(au_store_wait(s, r.id, 1000, &out) == 0, "acl: store wait (%s)", s->err.str);
		au_record_release(&out);
		EQ(raw_int(c, "EXISTS au:r:%s", r.id), 0, "acl: the record is not in database 0");
	}
	au_queue_close(q);
	au_store_close(s);
	free(u);
	T_OK(raw(c, "ACL DELUSER au-test") == 0, "acl: user removed");
	event_base_free(w.base);
}

/* ---- stderr, read back: what au_log said ---- */

static int saved_stderr = -1;
static char log_path[512];

static void log_capture(void)
{
	char *dir = t_tmpdir("redis-log");
	int fd;

	snprintf(log_path, sizeof(log_path), "%s/stderr", dir ? dir : "/tmp");
	free(dir);
	fflush(stderr);
	saved_stderr = dup(2);
	fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
}

/* What was logged since log_capture(), into out. */
static void log_release(char *out, size_t len)
{
	FILE *f;
	size_t n = 0;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	if ((f = fopen(log_path, "r"))) {
		n = fread(out, 1, len - 1, f);
		fclose(f);
	}
	out[n] = '\0';
	unlink(log_path);
}

/*
 * The start-up check of a worker (au_queue_check): the test server keeps
 * nothing (no appendonly, no save) and is warned of, with what it risks;
 * with appendonly on it is not; a user not allowed CONFIG is not refused.
 */
static void test_redis_check(struct au_queue *q, redisContext *c)
{
	struct au_queue *nocfg;
	char out[4096], want[512], *u;
	int rc;

	log_capture();
	rc = au_queue_check(q);
	log_release(out, sizeof(out));
	EQ(rc, 1, "check: a redis that keeps nothing is warned of");
	snprintf(want, sizeof(want), "au: warning: redis at '%s' keeps nothing across a restart "
		 "(appendonly no, save \"\"): a restart or crash of it loses every computation "
		 "queued, running or dead-lettered there; set appendonly yes\n", url);
	T_EQ_STR(out, want, "check: the warning says what it risks and what to do");
	if (T_OK(raw(c, "CONFIG SET appendonly yes") == 0, "check: appendonly on")) {
		log_capture();
		rc = au_queue_check(q);
		log_release(out, sizeof(out));
		EQ(rc, 0, "check: with appendonly, no warning");
		T_EQ_STR(out, "", "check: nothing logged");
		raw(c, "CONFIG SET appendonly no");
	}
	if (T_OK(raw(c, "ACL SETUSER au-nocfg on >pw ~* &* +@all -config") == 0, "check: a user without CONFIG")) {
		u = with("au-nocfg:pw@", "");
		log_capture();
		nocfg = au_queue_open(u);
		rc = nocfg && !nocfg->err.code ? au_queue_check(nocfg) : -1;
		log_release(out, sizeof(out));
		EQ(rc, 0, "check: CONFIG refused is no failure");
		T_OK(strstr(out, "cannot check whether redis at") != NULL, "check: it says it cannot tell (%s)", out);
		au_queue_close(nocfg);
		free(u);
		raw(c, "ACL DELUSER au-nocfg");
	}
	nocfg = t_open_queue("memory://check");
	EQ(au_queue_check(nocfg), 0, "check: a backend without the op has nothing to check");
	au_queue_close(nocfg);
}

/* A server that asks for a password: the queue and the store say so. */
static void test_noauth(redisContext *c)
{
	struct au_queue *q;
	char *prefix;

	if (!T_OK(raw(c, "CONFIG SET requirepass sesame") == 0, "noauth: a password set"))
		return;
	/* this connection stays logged in as it was */
	prefix = au_asprintf("unable to use '%s': the server requires a password (NOAUTH)", url);
	same_failure(url, AU_ECONN, prefix, "a server that wants a password");
	free(prefix);
	/* (hiredis passes quotes as they are: an empty argument is a %s) */
	T_OK(raw(c, "CONFIG SET requirepass %s", "") == 0, "noauth: no password again");
	q = au_queue_open(url);
	T_OK(q && !q->err.code, "noauth: a new connection needs none (%s)", q ? q->err.str : "oom");
	au_queue_close(q);
}

/* An id of 100 KB is cut in every message, the C API's included; an empty
 * AU_QUEUE is refused, not taken for the default. */
static void test_messages(void)
{
	struct au_config cfg = { NULL, NULL, NULL };
	struct au_client *cl;
	struct au_handle *h;
	enum au_status st;
	char *longid = malloc(100001), want[200];

	memset(longid, 'a', 100000);
	longid[100000] = '\0';
	cfg.queue_url = url;
	cl = au_client_new(&cfg);
	h = cl ? au_handle_new(cl, longid, NULL) : NULL;
	snprintf(want, sizeof(want), "invalid computation id '%.64s\xe2\x80\xa6'", longid);
	T_OK(h && au_handle_status(h, &st) < 0, "messages: status of a 100 KB id fails");
	T_EQ_STR(h ? au_handle_err(h)->str : "", want, "messages: the id cut after 64 bytes");
	au_handle_free(h);
	/* 32 hex digits and more: not taken for the id of its first 32 */
	memcpy(longid, "0123456789abcdef0123456789abcdef", 32);
	h = cl ? au_handle_new(cl, longid, NULL) : NULL;
	T_OK(h && au_handle_status(h, &st) < 0 && au_handle_err(h)->code == AU_EINVAL,
	     "messages: an id with more after 32 hex digits is no id");
	au_handle_free(h);
	au_client_free(cl);
	free(longid);

	setenv("AU_QUEUE", "", 1);
	cfg.queue_url = NULL;
	cl = au_client_new(&cfg);
	T_OK(cl && au_client_err(cl)->code == AU_EINVAL, "messages: an empty AU_QUEUE is refused");
	T_EQ_STR(cl ? au_client_err(cl)->str : "",
		 "the queue url is empty (AU_QUEUE or --queue-url set to nothing?): unset it for "
		 "the default 'redis://127.0.0.1:6379'", "messages: saying so");
	au_client_free(cl);
	unsetenv("AU_QUEUE");
}

int main(void)
{
	struct au_queue *q;
	struct au_store *s;
	struct au_url u;
	struct au_err err;
	redisContext *c;

	/* hiredis writes to sockets the server may have closed. */
	signal(SIGPIPE, SIG_IGN);
	/* a wait that never wakes would hang: fail instead */
	alarm(300);
	url = t_env("AU_TEST_REDIS");
	test_client_db();
	test_client_auth_argv();

	printf("# queue '%s'\n", url);
	test_redis_down();
	q = t_open_queue(url);
	test_redis(q);
	if ((c = raw_connect(&q->url))) {
		test_redis_check(q, c);
		redisFree(c);
	}
	au_queue_close(q);
	test_messages();

	printf("# store '%s'\n", url);
	s = t_open_store(url);
	open_subscription(s);
	test_redis_store(s);
	au_store_close(s);

	printf("# one server, one behaviour\n");
	if (T_OK(au_url_parse(url, &u, &err) == 0, "parse '%s'", url)) {
		if ((c = raw_connect(&u))) {
			test_same_behaviour(c);
			test_noauth(c);
			redisFree(c);
		}
		au_url_release(&u);
	}
	return t_done();
}
