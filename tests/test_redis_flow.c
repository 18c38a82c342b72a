/*
 * test_redis_flow.c - flows and the kv space on the Redis queue, against the
 * real server ($AU_TEST_REDIS): computations waiting for others (in the
 * same push, across queues), what settles a dependency (ack, bury, rescue,
 * cancel, empty, drop), adopt, and the kv space (nx among two handles,
 * expiry, compare-and-delete, listing); and what a flow costs the server,
 * counted by INFO commandstats: linear in its nodes, and nothing more for a
 * computation without dependencies than one EXISTS per settle.
 *
 *   test_redis_flow
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis.h>

#include "harness.h"
#include "plug.h"
#include "queue.h"

static const char *url;           /* $AU_TEST_REDIS */
static redisContext *raw;         /* the same server, for what only it tells */

/* c waits for deps[0..n) (ids). */
static void depend(struct au_computation *c, const struct au_computation *const *deps, size_t n)
{
	size_t i;

	free(c->deps);
	c->deps = calloc(n, sizeof(*c->deps));
	for (i = 0; c->deps && i < n; i++)
		memcpy(c->deps[i], deps[i]->id, AU_ID_SIZE);
	c->ndeps = c->deps ? n : 0;
}

static enum au_queued_state state(struct au_queue *q, const char *queue, const char *id)
{
	struct au_queued info;
	int rc = au_queue_peek(q, queue, id, &info);

	au_queued_release(&info);
	if (rc < 0)
		return q->err.code == AU_ENOTFOUND ? 0 : -1;
	return info.state;
}

/* Leases one from queue: 1 when it got id, with its ref in *ref. */
static int lease_id(struct au_queue *q, const char *queue, const char *id, struct au_ref *ref)
{
	struct au_lease l;
	int got;

	if (t_lease(q, queue, 1, LONG_LEASE, 0, &l) != 1)
		return 0;
	got = !strcmp(l.ref.id, id);
	*ref = l.ref;
	au_lease_release(&l);
	return got;
}

static int ack1(struct au_queue *q, const char *queue, const struct au_ref *ref)
{
	int applied = 0;

	return au_queue_ack(q, queue, ref, 1, &applied) == 0 && applied;
}

static long long raw_int(const char *fmt, ...)
{
	redisReply *r;
	va_list ap;
	long long v = -1;

	va_start(ap, fmt);
	r = redisvCommand(raw, fmt, ap);
	va_end(ap);
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	if (r)
		freeReplyObject(r);
	return v;
}

/* A → (B, C) → D, pushed together: D waits until both B and C settled. */
static void test_diamond(struct au_queue *q)
{
	struct au_computation c[4];
	const struct au_computation *a[] = { &c[0] }, *bc[] = { &c[1], &c[2] };
	struct au_queue_stats st;
	struct au_ref ra, rb, rc, rd, r2[2];
	struct au_lease l[4];
	char name[64];
	size_t n, i;

	t_queue_name(name, "flow", "diamond");
	for (i = 0; i < 4; i++)
		t_computation(&c[i], name, (int)i);
	depend(&c[1], a, 1);
	depend(&c[2], a, 1);
	depend(&c[3], bc, 2);
	T_OK(au_queue_push(q, c, 4) == 0, "diamond pushed: %s", q->err.str);
	st = t_stats(q, name);
	EQ(st.ready, 1, "diamond: A ready");
	EQ(st.waiting, 3, "diamond: B, C, D waiting");
	EQ(state(q, name, c[3].id), AU_QUEUED_WAITING, "diamond: D is WAITING");
	T_OK(lease_id(q, name, c[0].id, &ra), "diamond: the lease takes A");
	EQ(t_lease(q, name, 4, LONG_LEASE, 0, l), 0, "diamond: nothing else is ready");
	T_OK(ack1(q, name, &ra), "diamond: A acked");
	st = t_stats(q, name);
	EQ(st.ready, 2, "diamond: B and C ready after A");
	EQ(st.waiting, 1, "diamond: D still waiting");
	n = t_lease(q, name, 4, LONG_LEASE, 0, l);
	EQ(n, 2, "diamond: B and C leased");
	for (i = 0; i < n && i < 2; i++)
		r2[i] = l[i].ref;
	t_leases_release(l, n);
	rb = r2[0];
	rc = r2[1];
	T_OK(ack1(q, name, &rb), "diamond: one of B, C acked");
	EQ(state(q, name, c[3].id), AU_QUEUED_WAITING, "diamond: D waits for the other");
	T_OK(ack1(q, name, &rc), "diamond: the other acked");
	EQ(state(q, name, c[3].id), AU_QUEUED_READY, "diamond: D ready");
	T_OK(lease_id(q, name, c[3].id, &rd) && ack1(q, name, &rd), "diamond: D runs");
	st = t_stats(q, name);
	EQ(st.ready + st.waiting + st.leased + st.scheduled, 0, "diamond: nothing left");
	EQ(raw_int("EXISTS au:{%s}:parents au:{%s}:waiting", name, name), 0,
	   "diamond: no flow key left behind");
	t_computations_release(c, 4);
}

/* A bury settles; one not held at push (unknown, dead) does not count; a
 * push of a waiting id again adds nothing; run_at holds after the wait. */
static void test_settles(struct au_queue *q)
{
	struct au_computation c[5], ghost;
	const struct au_computation *a[] = { &c[0] }, *g[] = { &ghost }, *dead[] = { &c[0] };
	const char *why = "no";
	struct au_ref ra;
	char name[64];
	int applied = 0;
	size_t i;

	t_queue_name(name, "flow", "settles");
	for (i = 0; i < 5; i++)
		t_computation(&c[i], name, (int)i);
	t_computation(&ghost, name, 9);
	depend(&c[1], a, 1);
	depend(&c[2], a, 1);
	c[2].run_at_ms = au_now_ms() + 3600000;
	depend(&c[3], g, 1);
	T_OK(au_queue_push(q, c, 4) == 0, "pushed: %s", q->err.str);
	EQ(state(q, name, c[3].id), AU_QUEUED_READY, "a dependency never held does not count");
	EQ(state(q, name, c[1].id), AU_QUEUED_WAITING, "B waits for A");
	T_OK(au_queue_push(q, &c[1], 1) == 0, "B pushed again (with deps)");
	c[1].ndeps = 0;
	T_OK(au_queue_push(q, &c[1], 1) == 0, "B pushed again (without deps)");
	EQ(t_stats(q, name).waiting, 2, "a push again adds nothing");
	EQ(state(q, name, c[1].id), AU_QUEUED_WAITING, "B still waiting");
	T_OK(lease_id(q, name, c[0].id, &ra), "A leased");
	T_OK(au_queue_bury(q, name, &ra, 1, &why, &applied) == 0 && applied, "A buried");
	EQ(state(q, name, c[1].id), AU_QUEUED_READY, "the bury settled A: B ready");
	EQ(state(q, name, c[2].id), AU_QUEUED_SCHEDULED, "C, with a run_at ahead, scheduled");
	depend(&c[4], dead, 1);
	T_OK(au_queue_push(q, &c[4], 1) == 0, "E pushed, waiting for dead A");
	EQ(state(q, name, c[4].id), AU_QUEUED_READY, "a dead dependency has settled");
	au_queue_drop(q, name, 1);
	t_computations_release(c, 5);
	au_computation_release(&ghost);
}

/* rescue's bury of an expired lease at max_attempts settles too. */
static void test_rescue(struct au_queue *q)
{
	struct au_computation c[2];
	const struct au_computation *a[] = { &c[0] };
	struct au_lease l;
	char name[64];
	size_t requeued = 0, buried = 0;

	t_queue_name(name, "flow", "rescue");
	t_computation(&c[0], name, 0);
	t_computation(&c[1], name, 1);
	c[0].max_attempts = 1;
	depend(&c[1], a, 1);
	T_OK(au_queue_push(q, c, 2) == 0, "pushed");
	EQ(t_lease(q, name, 1, 50, 0, &l), 1, "A leased for 50 ms");
	au_lease_release(&l);
	t_sleep_ms(120);
	T_OK(au_queue_rescue(q, name, 100, &requeued, &buried) == 0 && buried == 1,
	     "rescue buried A (%zu)", buried);
	EQ(state(q, name, c[1].id), AU_QUEUED_READY, "rescue's bury settled A: B ready");
	au_queue_drop(q, name, 1);
	t_computations_release(c, 2);
}

/* Cancel of a waiting one (it settles for its own dependents), and of a
 * ready one. */
static void test_cancel(struct au_queue *q)
{
	struct au_computation c[4];
	const struct au_computation *a[] = { &c[0] }, *b[] = { &c[1] }, *cc[] = { &c[2] };
	struct au_cancelled seen;
	char name[64];
	size_t i;

	t_queue_name(name, "flow", "cancel");
	for (i = 0; i < 4; i++)
		t_computation(&c[i], name, (int)i);
	depend(&c[1], a, 1);
	depend(&c[2], b, 1);
	depend(&c[3], cc, 1);
	T_OK(au_queue_push(q, c, 4) == 0, "chain A → B → C → D pushed");
	T_OK(au_queue_cancel_seen(q, name, c[1].id, &seen) == 0, "waiting B cancelled: %s",
	     q->err.str);
	T_OK(seen.body && seen.body_len > 0 && seen.attempts == 0, "the cancel saw B's body");
	au_cancelled_release(&seen);
	EQ(state(q, name, c[1].id), 0, "B is gone");
	EQ(state(q, name, c[2].id), AU_QUEUED_READY, "B's cancel settled it: C ready");
	T_OK(au_queue_cancel(q, name, c[2].id) == 0, "ready C cancelled");
	EQ(state(q, name, c[3].id), AU_QUEUED_READY, "C's cancel settled it: D ready");
	EQ(raw_int("SCARD au:{%s}:rdeps:%s", name, c[0].id), 0, "A has no dependent left");
	EQ(raw_int("SISMEMBER au:{%s}:parents %s", name, c[0].id), 0, "A is no parent any more");
	EQ(t_stats(q, name).waiting, 0, "none waiting");
	au_queue_drop(q, name, 1);
	t_computations_release(c, 4);
}

/* Dependencies in another queue: the ack there makes it ready here, with
 * a wake token on this queue's wake list; empty and drop settle too. */
static void test_cross(struct au_queue *q)
{
	struct au_computation c[6];
	const struct au_computation *a[] = { &c[0] }, *c2[] = { &c[2] }, *c4[] = { &c[4] };
	struct au_ref ra;
	char q1[64], q2[64];
	size_t removed = 0;
	long long tokens;

	t_queue_name(q1, "flow", "up");
	t_queue_name(q2, "flow", "down");
	t_computation(&c[0], q1, 0);
	t_computation(&c[1], q2, 1);
	t_computation(&c[2], q1, 2);
	t_computation(&c[3], q2, 3);
	t_computation(&c[4], q1, 4);
	t_computation(&c[5], q2, 5);
	depend(&c[1], a, 1);
	depend(&c[3], c2, 1);
	depend(&c[5], c4, 1);
	T_OK(au_queue_push(q, c, 6) == 0, "pushed across two queues");
	EQ(t_stats(q, q2).waiting, 3, "three wait in the second queue");
	raw_int("DEL au:{%s}:wakelist", q2);
	T_OK(lease_id(q, q1, c[0].id, &ra) && ack1(q, q1, &ra), "A acked in its queue");
	EQ(state(q, q2, c[1].id), AU_QUEUED_READY, "its dependent ready in the other");
	tokens = raw_int("LLEN au:{%s}:wakelist", q2);
	EQ(tokens, 1, "one wake token on the other queue's wake list");
	T_OK(au_queue_cancel(q, q1, c[4].id) == 0 && au_queue_cancel(q, q1, c[2].id) == 0 &&
	     au_queue_drop(q, q1, 1) == 0, "q1 emptied by cancels, dropped");
	EQ(t_stats(q, q2).waiting, 0, "none waits any more");
	au_queue_drop(q, q2, 1);

	/* empty, and drop with force */
	t_computations_release(c, 6);
	t_computation(&c[0], q1, 0);
	t_computation(&c[1], q2, 1);
	t_computation(&c[2], q1, 2);
	t_computation(&c[3], q2, 3);
	depend(&c[1], a, 1);
	depend(&c[3], c2, 1);
	T_OK(au_queue_push(q, c, 2) == 0, "A in q1, B in q2 waiting for it");
	T_OK(au_queue_empty(q, q1, &removed) == 0 && removed == 1, "q1 emptied");
	EQ(state(q, q2, c[1].id), AU_QUEUED_READY, "empty settled A");
	T_OK(au_queue_push(q, &c[2], 2) == 0, "C in q1, D in q2 waiting for it");
	T_OK(au_queue_drop(q, q1, 0) < 0 && q->err.code == AU_ESTATE, "q1 not dropped unforced");
	T_OK(au_queue_drop(q, q2, 0) < 0 && strstr(q->err.str, "1 waiting"),
	     "q2 refuses a drop while one waits: %s", q->err.str);
	T_OK(au_queue_drop(q, q1, 1) == 0, "q1 dropped with force");
	EQ(state(q, q2, c[3].id), AU_QUEUED_READY, "drop settled C");
	au_queue_drop(q, q2, 1);
	EQ(raw_int("EXISTS au:{%s}:parents au:{%s}:waiting au:{%s}:parents au:{%s}:waiting",
		   q1, q1, q2, q2), 0, "no flow key left behind");
	t_computations_release(c, 4);
}

/* adopt: a fan-out adds waits, once however often it is sent. */
static void test_adopt(struct au_queue *q)
{
	struct au_computation c[5];
	const struct au_computation *a[] = { &c[0] };
	char deps[3][AU_ID_SIZE], name[64];
	struct au_ref ra, rx;
	struct au_lease l[2];
	size_t i, n;

	t_queue_name(name, "flow", "adopt");
	for (i = 0; i < 5; i++)
		t_computation(&c[i], name, (int)i);
	depend(&c[1], a, 1);
	T_OK(au_queue_push(q, c, 2) == 0, "A, and W waiting for it");
	T_OK(lease_id(q, name, c[0].id, &ra), "A leased");
	T_OK(au_queue_push(q, &c[2], 2) == 0, "X and Y, A's children, pushed");
	memcpy(deps[0], c[2].id, AU_ID_SIZE);
	memcpy(deps[1], c[3].id, AU_ID_SIZE);
	memcpy(deps[2], c[4].id, AU_ID_SIZE);  /* never pushed: not held */
	T_OK(au_queue_adopt(q, c[0].id, (const char (*)[AU_ID_SIZE])deps, 3) == 0,
	     "adopt: %s", q->err.str);
	T_OK(au_queue_adopt(q, c[0].id, (const char (*)[AU_ID_SIZE])deps, 3) == 0,
	     "adopt again");
	T_OK(au_queue_adopt(q, c[4].id, (const char (*)[AU_ID_SIZE])deps, 2) == 0,
	     "adopt of an id nobody waits for is no error");
	EQ(raw_int("SCARD au:{%s}:need:%s", name, c[1].id), 3, "W waits for A, X, Y, once each");
	T_OK(ack1(q, name, &ra), "A acked");
	EQ(state(q, name, c[1].id), AU_QUEUED_WAITING, "W waits for X and Y");
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	EQ(n, 2, "X and Y leased");
	for (i = 0; i < n; i++) {
		rx = l[i].ref;
		EQ(state(q, name, c[1].id), AU_QUEUED_WAITING, "W waits until both settled");
		T_OK(ack1(q, name, &rx), "a child acked");
	}
	t_leases_release(l, n);
	EQ(state(q, name, c[1].id), AU_QUEUED_READY, "W ready once X and Y settled");
	au_queue_drop(q, name, 1);
	t_computations_release(c, 5);
}

/* A root, 9,998 children of it and a sink waiting for all of them, pushed
 * at once (ten scripts in one MULTI): the root's ack readies the children,
 * the last child's ack the sink. */
static void test_big(struct au_queue *q)
{
	enum { N = 10000, MID = N - 2 };
	struct au_computation *c = calloc(N, sizeof(*c));
	const struct au_computation *root[1], **mid = calloc(MID, sizeof(*mid));
	struct au_lease *l = calloc(500, sizeof(*l));
	struct au_ref *refs = calloc(500, sizeof(*refs));
	int *applied = calloc(500, sizeof(*applied));
	struct au_queue_stats st;
	char name[64];
	size_t i, n, acked = 0, rounds = 0;
	uint64_t t0;

	if (!T_OK(c && mid && l && refs && applied, "memory for the big flow"))
		goto out;
	t_queue_name(name, "flow", "big");
	for (i = 0; i < N; i++)
		t_computation(&c[i], name, (int)i);
	root[0] = &c[0];
	for (i = 1; i <= MID; i++) {
		depend(&c[i], root, 1);
		mid[i - 1] = &c[i];
	}
	depend(&c[N - 1], mid, MID);
	t0 = au_mono_us();
	T_OK(au_queue_push(q, c, N) == 0, "10,000 nodes pushed at once: %s", q->err.str);
	printf("# 10,000 nodes pushed in %llu ms\n", (unsigned long long)t_ms_since(t0));
	st = t_stats(q, name);
	T_OK(st.ready == 1 && st.waiting == N - 1, "one ready, the rest waiting (%llu, %llu)",
	     (unsigned long long)st.ready, (unsigned long long)st.waiting);
	EQ(raw_int("SCARD au:{%s}:need:%s", name, c[N - 1].id), MID, "the sink waits for 9,998");
	while (acked < N && rounds++ < 2 * N / 500 + 10) {
		if (!(n = t_lease(q, name, 500, LONG_LEASE, 0, l)))
			break;
		for (i = 0; i < n; i++)
			refs[i] = l[i].ref;
		if (acked + n == N)
			T_OK(!strcmp(l[n - 1].ref.id, c[N - 1].id), "the sink comes last");
		t_leases_release(l, n);
		if (au_queue_ack(q, name, refs, n, applied) < 0)
			break;
		acked += n;
		if (acked == 1)
			EQ(t_stats(q, name).ready, MID, "the root's ack readied its 9,998 children");
	}
	EQ(acked, N, "all 10,000 ran, each after what it waited for");
	printf("# 10,000 nodes pushed, leased and acked in %llu ms\n",
	       (unsigned long long)t_ms_since(t0));
	au_queue_drop(q, name, 1);
	t_computations_release(c, N);
out:
	free(c);
	free(mid);
	free(l);
	free(refs);
	free(applied);
}

/* ---- cost ---- */

/* Commands the server ran since the last call (commandstats' calls). */
static long long commands(void)
{
	static long long last;
	redisReply *r = redisCommand(raw, "INFO commandstats");
	long long total = 0, now;
	const char *p;

	for (p = r && r->type == REDIS_REPLY_STRING ? r->str : ""; (p = strstr(p, "calls=")); p++)
		total += atoll(p + 6);
	if (r)
		freeReplyObject(r);
	now = total - last;
	last = total;
	return now;
}

/* n computations, each (chained) waiting for the one before, pushed one by
 * one, then leased and acked one by one: the commands it took, less what
 * the INFO calls took. */
static long long chain_cost(struct au_queue *q, size_t n, int chained)
{
	struct au_computation prev, c;
	const struct au_computation *d[] = { &prev };
	struct au_ref ref;
	char name[64];
	size_t i, ok = 0;
	long long cost;

	t_queue_name(name, "flow", chained ? "chain" : "plain");
	t_computation(&prev, name, 0);
	T_OK(au_queue_push(q, &prev, 1) == 0, "chain's first pushed");
	commands();
	for (i = 1; i <= n; i++) {
		t_computation(&c, name, (int)i);
		if (chained && i < n)
			depend(&c, d, 1);
		if (i < n && au_queue_push(q, &c, 1) < 0)
			break;
		au_computation_release(&prev);
		prev = c;
	}
	for (i = 0; i < n; i++) {
		struct au_lease l;

		if (t_lease(q, name, 1, LONG_LEASE, 0, &l) != 1)
			break;
		ref = l.ref;
		au_lease_release(&l);
		ok += ack1(q, name, &ref);
	}
	cost = commands() - 1;
	EQ(ok, n, chained ? "chain: each leased after the one before was acked" :
	   "plain: each leased and acked");
	au_computation_release(&prev);
	au_queue_drop(q, name, 1);
	return cost;
}

static void test_cost(struct au_queue *q)
{
	redisReply *reset = redisCommand(raw, "CONFIG RESETSTAT");
	long long small, big, plain;

	if (reset)
		freeReplyObject(reset);
	if (!T_OK(reset != NULL, "commandstats reset"))
		return;
	small = chain_cost(q, 100, 1);
	big = chain_cost(q, 1000, 1);
	plain = chain_cost(q, 1000, 0);
	printf("# commands: chain of 100 %lld, of 1000 %lld, 1000 without deps %lld\n", small,
	       big, plain);
	T_OK(big * 100 <= small * 1000 * 12 / 10, "a chain's cost per node is linear (%lld per 1000"
	     " nodes, %lld per 100)", big, small);
	/* its wait: ~7 commands at its push, ~9 at the ack of its dependency */
	T_OK(big <= plain + 1000 * 20, "a chained node costs at most 20 commands more than a plain"
	     " one (%lld, plain %lld)", big, plain);
	T_OK(plain / 1000 <= 20, "a plain push, lease and ack stay cheap (%lld per node)",
	     plain / 1000);
}

/* ---- the kv space ---- */

struct racer {
	struct au_queue *q;
	const char *prefix;
	int won[100];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	char key[64];
	int i;

	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "%s.%d", r->prefix, i);
		if (au_queue_kv_put(r->q, "test", key, (const unsigned char *)"x", 1, 0, 1,
				    &r->won[i]) < 0)
			r->won[i] = -1;
	}
	return NULL;
}

static void test_kv(struct au_queue *q)
{
	struct au_queue *q2 = t_open_queue(url);
	struct racer a = { q, NULL, { 0 } }, b = { q2, NULL, { 0 } };
	char prefix[32], key[80], **keys = NULL;
	unsigned char *val = NULL;
	size_t len = 0, n = 0, i;
	pthread_t ta, tb;
	int done = 0, one = 1;

	snprintf(prefix, sizeof(prefix), "r%08llx", (unsigned long long)(au_random64() & 0xffffffff));
	a.prefix = b.prefix = prefix;
	pthread_create(&ta, NULL, race, &a);
	pthread_create(&tb, NULL, race, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	for (i = 0; i < 100; i++)
		if (a.won[i] + b.won[i] != 1)
			one = 0;
	T_OK(one, "nx: one winner per key among two handles");
	T_OK(au_queue_kv_keys(q, "test", prefix, 0, &keys, &n) == 0 && n == 100,
	     "kv_keys lists the 100 (%zu)", n);
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	T_OK(au_queue_kv_keys(q, "test", prefix, 7, &keys, &n) == 0 && n == 7, "max 7 lists 7");
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);

	snprintf(key, sizeof(key), "%s:lock", prefix);
	T_OK(au_queue_kv_put(q, "test", key, (const unsigned char *)"me", 2, 0, 0, &done) == 0 &&
	     done, "put");
	T_OK(au_queue_kv_put(q2, "test", key, (const unsigned char *)"you", 3, 0, 1, &done) == 0 &&
	     !done, "nx put of a key that is there writes nothing");
	T_OK(au_queue_kv_get(q2, "test", key, &val, &len) == 0 && len == 2 && !memcmp(val, "me", 2),
	     "get");
	free(val);
	T_OK(au_queue_kv_del(q2, "test", key, (const unsigned char *)"you", 3, &done) == 0 && !done,
	     "compare-and-delete with another value deletes nothing");
	T_OK(au_queue_kv_get(q, "test", key, &val, &len) == 0, "the key is there");
	free(val);
	T_OK(au_queue_kv_del(q, "test", key, (const unsigned char *)"me", 2, &done) == 0 && done,
	     "compare-and-delete with its value deletes");
	T_OK(au_queue_kv_get(q, "test", key, &val, &len) < 0 && q->err.code == AU_ENOTFOUND,
	     "gone: %s", q->err.str);
	T_OK(au_queue_kv_del(q, "test", key, NULL, 0, &done) == 0 && !done, "del of none: 0");

	snprintf(key, sizeof(key), "%s:ttl", prefix);
	T_OK(au_queue_kv_put(q, "test", key, (const unsigned char *)"", 0, 150, 0, &done) == 0 &&
	     done, "put of an empty value for 150 ms");
	T_OK(au_queue_kv_get(q, "test", key, &val, &len) == 0 && len == 0, "there, empty");
	free(val);
	T_OK(au_queue_kv_keys(q, "test", key, 0, &keys, &n) == 0 && n == 1, "listed while live (%zu: %s)", n, q->err.str);
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	t_sleep_ms(250);
	T_OK(au_queue_kv_get(q, "test", key, &val, &len) < 0 && q->err.code == AU_ENOTFOUND,
	     "expired");
	T_OK(au_queue_kv_keys(q, "test", key, 0, &keys, &n) == 0 && n == 0, "not listed expired");
	free(keys);
	T_OK(au_queue_kv_put(q, "test", key, (const unsigned char *)"2", 1, 0, 1, &done) == 0 &&
	     done, "an nx put after expiry writes");
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "%s.%zu", prefix, i);
		au_queue_kv_del(q, "test", key, NULL, 0, &done);
	}
	T_OK(au_queue_kv_keys(q, "test", prefix, 0, &keys, &n) == 0 && n == 1,
	     "deleted keys are not listed (%zu)", n);
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	au_queue_close(q2);
}

int main(void)
{
	struct au_queue *q;

	signal(SIGPIPE, SIG_IGN);
	alarm(300);
	url = t_env("AU_TEST_REDIS");
	q = t_open_queue(url);
	raw = redisConnect(q->url.host, q->url.port ? q->url.port : 6379);
	if (!T_OK(raw && !raw->err, "raw connection"))
		return t_done();
	printf("# flows on '%s'\n", url);
	test_diamond(q);
	test_settles(q);
	test_rescue(q);
	test_cancel(q);
	test_cross(q);
	test_adopt(q);
	test_big(q);
	test_cost(q);
	test_kv(q);
	redisFree(raw);
	au_queue_close(q);
	return t_done();
}
