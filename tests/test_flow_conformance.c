/*
 * test_flow_conformance.c - the parts of the queue contract that flows and
 * schedules stand on (backends/queue.h): dependencies held by push and
 * resolved by whatever settles them, adopt, and the kv space. The same
 * cases run on every backend: Redis, memory:// and PostgreSQL by default,
 * or the URLs given as arguments. A backend without adopt (or kv_put) is
 * named and skipped, so that the suite tells which have them.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plug.h"
#include "queue.h"

static const char *url;

static int state_of(struct au_queue *q, const char *queue, const char *id)
{
	struct au_queued info;
	int st;

	memset(&info, 0, sizeof(info));
	st = au_queue_peek(q, queue, id, &info) < 0 ? -q->err.code : (int)info.state;
	au_queued_release(&info);
	return st;
}

/* c waits for deps[0..n) (ids copied). */
static void needs(struct au_computation *c, const char *const *deps, size_t n)
{
	size_t i;

	c->deps = calloc(n, sizeof(*c->deps));
	for (i = 0; i < n; i++)
		memcpy(c->deps[i], deps[i], AU_ID_SIZE);
	c->ndeps = n;
}

/* Leases what is ready in queue (at most max) and acks it; the ids into
 * got (when not NULL). Returns how many. */
static size_t lease_ack(struct au_queue *q, const char *queue, size_t max, char (*got)[AU_ID_SIZE])
{
	struct au_lease l[16];
	struct au_ref refs[16];
	size_t n, i;

	n = t_lease(q, queue, max < 16 ? max : 16, LONG_LEASE, 0, l);
	for (i = 0; i < n; i++) {
		refs[i] = l[i].ref;
		if (got)
			memcpy(got[i], l[i].ref.id, AU_ID_SIZE);
	}
	if (n)
		T_OK(au_queue_ack(q, queue, refs, n, NULL) == 0, "ack %zu (%s)", n, q->err.str);
	t_leases_release(l, n);
	return n;
}

static int has(char (*ids)[AU_ID_SIZE], size_t n, const char *id)
{
	while (n--)
		if (!strcmp(ids[n], id))
			return 1;
	return 0;
}

/* A→(B, C)→D in one push: D waits for both, A runs once. */
static void test_diamond(struct au_queue *q)
{
	struct au_computation c[4];
	char name[64], got[16][AU_ID_SIZE];
	const char *a, *bc[2];
	size_t n;

	t_queue_name(name, "flow", "diamond");
	for (int i = 0; i < 4; i++)
		t_computation(&c[i], name, i);
	a = c[0].id;
	needs(&c[1], &a, 1);
	needs(&c[2], &a, 1);
	bc[0] = c[1].id;
	bc[1] = c[2].id;
	needs(&c[3], bc, 2);
	T_OK(au_queue_push(q, c, 4) == 0, "diamond: pushed in one call (%s)", q->err.str);
	EQ(state_of(q, name, a), AU_QUEUED_READY, "diamond: A ready");
	EQ(state_of(q, name, c[1].id), AU_QUEUED_WAITING, "diamond: B waits");
	EQ(state_of(q, name, c[3].id), AU_QUEUED_WAITING, "diamond: D waits");
	EQ(t_stats(q, name).waiting, 3, "diamond: stats count 3 waiting");
	EQ(t_stats(q, name).ready, 1, "diamond: and 1 ready");
	n = lease_ack(q, name, 10, got);
	T_OK(n == 1 && !strcmp(got[0], a), "diamond: only A is leased (%zu)", n);
	EQ(state_of(q, name, c[1].id), AU_QUEUED_READY, "diamond: A acked, B ready");
	EQ(state_of(q, name, c[2].id), AU_QUEUED_READY, "diamond: and C ready");
	EQ(state_of(q, name, c[3].id), AU_QUEUED_WAITING, "diamond: D still waits");
	{
		struct au_lease l[4];
		struct au_ref r;

		n = t_lease(q, name, 1, LONG_LEASE, 0, l);
		EQ(n, 1, "diamond: one of B and C leased");
		if (n) {
			r = l[0].ref;
			T_OK(au_queue_ack(q, name, &r, 1, NULL) == 0, "diamond: acked it");
		}
		t_leases_release(l, n);
		EQ(state_of(q, name, c[3].id), AU_QUEUED_WAITING, "diamond: one of two settled, D waits");
	}
	n = lease_ack(q, name, 10, got);
	T_OK(n == 1 && (has(got, 1, c[1].id) || has(got, 1, c[2].id)), "diamond: the other one (%zu)", n);
	EQ(state_of(q, name, c[3].id), AU_QUEUED_READY, "diamond: both settled, D ready");
	n = lease_ack(q, name, 10, got);
	T_OK(n == 1 && !strcmp(got[0], c[3].id), "diamond: D leased last (%zu)", n);
	EQ(lease_ack(q, name, 10, NULL), 0, "diamond: nothing runs twice");
	EQ(t_stats(q, name).waiting, 0, "diamond: none waiting");
	t_computations_release(c, 4);
}

/* A dependency the queue does not hold has settled: finished or unknown. */
static void test_settled_already(struct au_queue *q)
{
	struct au_computation a, b, x;
	char name[64], unknown[AU_ID_SIZE];
	const char *d[2];

	t_queue_name(name, "flow", "settled");
	t_computation(&a, name, 0);
	T_OK(t_push1(q, &a) == 0, "settled: push A");
	EQ(lease_ack(q, name, 10, NULL), 1, "settled: A done");
	au_id_new(unknown);
	t_computation(&b, name, 1);
	d[0] = a.id;
	d[1] = unknown;
	needs(&b, d, 2);
	T_OK(t_push1(q, &b) == 0, "settled: push B after A, waiting for A and an unknown id");
	EQ(state_of(q, name, b.id), AU_QUEUED_READY, "settled: B is ready at once");
	/* the same dependency twice counts once */
	t_computation(&x, name, 2);
	d[0] = b.id;
	d[1] = b.id;
	needs(&x, d, 2);
	T_OK(t_push1(q, &x) == 0, "settled: push X waiting for B twice");
	EQ(state_of(q, name, x.id), AU_QUEUED_WAITING, "settled: X waits");
	EQ(lease_ack(q, name, 1, NULL), 1, "settled: B done");
	EQ(state_of(q, name, x.id), AU_QUEUED_READY, "settled: X ready after one settle");
	lease_ack(q, name, 10, NULL);
	au_computation_release(&a);
	au_computation_release(&b);
	au_computation_release(&x);
}

/* Bury, cancel, rescue's bury and empty settle too; cross-queue; run_at. */
static void test_settles(struct au_queue *q)
{
	struct au_computation f, e, g, h, g2, m, nn, s, t, r1, r2;
	char name[64], other[64], third[64];
	const char *d;
	struct au_lease l[4];
	const char *why = "no good";
	size_t n, req, bur;

	t_queue_name(name, "flow", "settles");
	t_queue_name(other, "flow", "other");
	t_queue_name(third, "flow", "third");

	/* bury */
	t_computation(&f, name, 0);
	t_computation(&e, other, 1);
	d = f.id;
	needs(&e, &d, 1);
	T_OK(t_push1(q, &f) == 0 && t_push1(q, &e) == 0, "bury: F, and E in another queue waiting for it");
	EQ(state_of(q, other, e.id), AU_QUEUED_WAITING, "bury: E waits across queues");
	n = t_lease(q, name, 1, LONG_LEASE, 0, l);
	T_OK(n == 1 && au_queue_bury(q, name, &l[0].ref, 1, &why, NULL) == 0, "bury: F buried");
	t_leases_release(l, n);
	EQ(state_of(q, other, e.id), AU_QUEUED_READY, "bury: a dead letter settles: E ready in its queue");
	lease_ack(q, other, 10, NULL);

	/* cancel of a waiting one, and of a ready one */
	t_computation(&h, name, 2);
	t_computation(&g, name, 3);
	t_computation(&g2, name, 4);
	d = h.id;
	needs(&g, &d, 1);
	needs(&g2, &d, 1);
	T_OK(t_push1(q, &h) == 0 && t_push1(q, &g) == 0 && t_push1(q, &g2) == 0, "cancel: H, G and G2 waiting for H");
	T_OK(au_queue_cancel(q, name, g.id) == 0, "cancel: a waiting one can be cancelled (%s)", q->err.str);
	EQ(state_of(q, name, g.id), -AU_ENOTFOUND, "cancel: G gone");
	T_OK(au_queue_cancel(q, name, h.id) == 0, "cancel: H cancelled while ready");
	EQ(state_of(q, name, g2.id), AU_QUEUED_READY, "cancel: settles G2");
	lease_ack(q, name, 10, NULL);

	/* empty settles what waits elsewhere, and takes waiting ones */
	t_computation(&m, third, 5);
	t_computation(&nn, other, 6);
	d = m.id;
	needs(&nn, &d, 1);
	T_OK(t_push1(q, &m) == 0 && t_push1(q, &nn) == 0, "empty: M, and N waiting for it elsewhere");
	{
		size_t removed = 0;

		T_OK(au_queue_empty(q, third, &removed) == 0 && removed == 1, "empty: M removed");
	}
	EQ(state_of(q, other, nn.id), AU_QUEUED_READY, "empty: N ready");
	lease_ack(q, other, 10, NULL);

	/* rescue buries an expired lease at its last attempt */
	t_computation(&r1, name, 7);
	t_computation(&r2, name, 8);
	r1.max_attempts = 1;
	d = r1.id;
	needs(&r2, &d, 1);
	T_OK(t_push1(q, &r1) == 0 && t_push1(q, &r2) == 0, "rescue: R1 (one attempt), R2 waiting for it");
	n = t_lease(q, name, 1, 50, 0, l);
	EQ(n, 1, "rescue: R1 leased for 50 ms");
	t_leases_release(l, n);
	t_sleep_ms(1100);
	T_OK(au_queue_rescue(q, name, 10, &req, &bur) == 0 && bur == 1, "rescue: buried it (%zu)", bur);
	EQ(state_of(q, name, r2.id), AU_QUEUED_READY, "rescue: R2 ready");
	lease_ack(q, name, 10, NULL);

	/* a dependent due later becomes scheduled */
	t_computation(&s, name, 9);
	t_computation(&t, name, 10);
	t.run_at_ms = au_now_ms() + 600000;
	d = s.id;
	needs(&t, &d, 1);
	T_OK(t_push1(q, &s) == 0 && t_push1(q, &t) == 0, "run_at: S, T due in 10 min waiting for it");
	EQ(lease_ack(q, name, 1, NULL), 1, "run_at: S done");
	EQ(state_of(q, name, t.id), AU_QUEUED_SCHEDULED, "run_at: T scheduled, not ready");
	T_OK(au_queue_cancel(q, name, t.id) == 0, "run_at: T cancelled");
	EQ(t_stats(q, name).waiting, 0, "settles: none left waiting");

	au_computation_release(&f);
	au_computation_release(&e);
	au_computation_release(&g);
	au_computation_release(&h);
	au_computation_release(&g2);
	au_computation_release(&m);
	au_computation_release(&nn);
	au_computation_release(&s);
	au_computation_release(&t);
	au_computation_release(&r1);
	au_computation_release(&r2);
}

/* Fan-out: what waits for P waits for its children too. */
static void test_adopt(struct au_queue *q)
{
	struct au_computation p, j, k[3];
	char name[64], ids[3][AU_ID_SIZE];
	struct au_lease l[4];
	const char *d;
	size_t n, i;

	t_queue_name(name, "flow", "adopt");
	t_computation(&p, name, 0);
	t_computation(&j, name, 1);
	d = p.id;
	needs(&j, &d, 1);
	T_OK(t_push1(q, &p) == 0 && t_push1(q, &j) == 0, "adopt: P, and J waiting for it");
	n = t_lease(q, name, 1, LONG_LEASE, 0, l);
	EQ(n, 1, "adopt: P leased");
	for (i = 0; i < 3; i++) {
		t_computation(&k[i], name, 10 + (int)i);
		memcpy(ids[i], k[i].id, AU_ID_SIZE);
	}
	T_OK(au_queue_push(q, k, 3) == 0, "adopt: P's three children pushed");
	T_OK(au_queue_adopt(q, p.id, (const char (*)[AU_ID_SIZE])ids, 3) == 0, "adopt: J adopts them (%s)",
	     q->err.str);
	T_OK(au_queue_adopt(q, p.id, (const char (*)[AU_ID_SIZE])ids, 3) == 0, "adopt: again, as a retry would");
	if (n)
		T_OK(au_queue_ack(q, name, &l[0].ref, 1, NULL) == 0, "adopt: P acked");
	t_leases_release(l, n);
	EQ(state_of(q, name, j.id), AU_QUEUED_WAITING, "adopt: J waits for the children");
	n = t_lease(q, name, 2, LONG_LEASE, 0, l);
	EQ(n, 2, "adopt: two children leased");
	if (n == 2) {
		struct au_ref r[2] = { l[0].ref, l[1].ref };

		T_OK(strcmp(l[0].ref.id, j.id) != 0 && strcmp(l[1].ref.id, j.id) != 0, "adopt: not J");
		au_queue_ack(q, name, r, 2, NULL);
	}
	t_leases_release(l, n);
	EQ(state_of(q, name, j.id), AU_QUEUED_WAITING, "adopt: two of three: J waits (counted once)");
	EQ(lease_ack(q, name, 1, NULL), 1, "adopt: the third child");
	EQ(state_of(q, name, j.id), AU_QUEUED_READY, "adopt: J ready");
	lease_ack(q, name, 10, NULL);
	T_OK(au_queue_adopt(q, p.id, (const char (*)[AU_ID_SIZE])ids, 3) == 0,
	     "adopt: nothing waits for P any more: no error");
	au_computation_release(&p);
	au_computation_release(&j);
	t_computations_release(k, 3);
}

/* A chain of 1,000 pushed at once runs in order, each leased alone. */
static void test_chain(struct au_queue *q)
{
	enum { N = 1000 };
	struct au_computation *c = calloc(N, sizeof(*c));
	char name[64], got[16][AU_ID_SIZE];
	size_t i, ok = 0;
	const char *d;

	t_queue_name(name, "flow", "chain");
	for (i = 0; i < N; i++) {
		t_computation(&c[i], name, (int)i);
		if (i) {
			d = c[i - 1].id;
			needs(&c[i], &d, 1);
		}
	}
	T_OK(au_queue_push(q, c, N) == 0, "chain: 1000 pushed in one call (%s)", q->err.str);
	EQ(t_stats(q, name).waiting, N - 1, "chain: 999 waiting");
	for (i = 0; i < N; i++)
		ok += lease_ack(q, name, 16, got) == 1 && !strcmp(got[0], c[i].id);
	EQ(ok, N, "chain: each in turn, alone");
	t_computations_release(c, N);
	free(c);
}

static void test_kv(struct au_queue *q)
{
	struct au_queue *q2 = t_open_queue(url);
	unsigned char *v = NULL;
	size_t len = 0, n = 0, i, found = 0;
	char key[64], k2[80], **keys = NULL;
	int done = -1, done2 = -1;

	snprintf(key, sizeof(key), "conf-%08x", (unsigned)random());
	T_OK(au_queue_kv_put(q, "test", key, (const unsigned char *)"one", 3, 0, 0, &done) == 0 && done,
	     "kv: put (%s)", q->err.str);
	T_OK(au_queue_kv_get(q2, "test", key, &v, &len) == 0 && len == 3 && !memcmp(v, "one", 3),
	     "kv: another handle reads it");
	free(v);
	T_OK(au_queue_kv_put(q2, "test", key, (const unsigned char *)"two", 3, 0, 1, &done) == 0 && !done,
	     "kv: nx on a present key writes nothing");
	T_OK(au_queue_kv_put(q2, "test", key, (const unsigned char *)"three", 5, 0, 0, &done) == 0 && done,
	     "kv: a plain put replaces");
	T_OK(au_queue_kv_get(q, "test", key, &v, &len) == 0 && len == 5 && !memcmp(v, "three", 5),
	     "kv: the new value");
	free(v);
	T_OK(au_queue_kv_del(q, "test", key, (const unsigned char *)"one", 3, &done) == 0 && !done,
	     "kv: delete expecting another value deletes nothing");
	T_OK(au_queue_kv_del(q, "test", key, (const unsigned char *)"three", 5, &done) == 0 && done,
	     "kv: delete expecting its value deletes it");
	T_OK(au_queue_kv_get(q, "test", key, &v, &len) < 0 && q->err.code == AU_ENOTFOUND,
	     "kv: gone: not found");
	/* one winner of two nx puts */
	T_OK(au_queue_kv_put(q, "test", key, (const unsigned char *)"a", 1, 0, 1, &done) == 0 &&
	     au_queue_kv_put(q2, "test", key, (const unsigned char *)"b", 1, 0, 1, &done2) == 0 &&
	     done + done2 == 1 && done, "kv: of two nx puts, the first wins");
	au_queue_kv_del(q, "test", key, NULL, 0, &done);
	/* ttl */
	snprintf(k2, sizeof(k2), "%s:ttl", key);
	T_OK(au_queue_kv_put(q, "test", k2, (const unsigned char *)"x", 1, 300, 0, &done) == 0 && done,
	     "kv: put with a 300 ms ttl");
	T_OK(au_queue_kv_get(q, "test", k2, &v, &len) == 0, "kv: there at once");
	free(v);
	t_sleep_ms(700);
	T_OK(au_queue_kv_get(q, "test", k2, &v, &len) < 0 && q->err.code == AU_ENOTFOUND,
	     "kv: gone after its ttl");
	/* keys by prefix; an empty value */
	for (i = 0; i < 3; i++) {
		snprintf(k2, sizeof(k2), "%s:%zu", key, i);
		au_queue_kv_put(q, "test", k2, (const unsigned char *)"", 0, 0, 0, &done);
	}
	snprintf(k2, sizeof(k2), "%s:", key);
	T_OK(au_queue_kv_keys(q, "test", k2, 0, &keys, &n) == 0 && n == 3, "kv: three keys by prefix (%zu)", n);
	for (i = 0; i < n; i++) {
		found += !strncmp(keys[i], k2, strlen(k2));
		free(keys[i]);
	}
	free(keys);
	EQ(found, 3, "kv: each with the prefix");
	T_OK(au_queue_kv_keys(q, "other", k2, 0, &keys, &n) == 0 && n == 0, "kv: namespaces are apart");
	free(keys);
	snprintf(k2, sizeof(k2), "%s:1", key);
	T_OK(au_queue_kv_get(q, "test", k2, &v, &len) == 0 && len == 0, "kv: an empty value reads empty");
	free(v);
	for (i = 0; i < 3; i++) {
		snprintf(k2, sizeof(k2), "%s:%zu", key, i);
		au_queue_kv_del(q, "test", k2, NULL, 0, &done);
	}
	T_OK(au_queue_kv_put(q, "Bad", key, (const unsigned char *)"", 0, 0, 0, &done) < 0 &&
	     q->err.code == AU_EINVAL, "kv: a bad namespace refused: %s", q->err.str);
	T_OK(au_queue_kv_put(q, "test", "a b", (const unsigned char *)"", 0, 0, 0, &done) < 0 &&
	     q->err.code == AU_EINVAL, "kv: a bad key refused: %s", q->err.str);
	au_queue_close(q2);
}

static void run_suite(const char *u)
{
	struct au_queue *q;

	url = u;
	printf("# queue '%s'\n", u);
	q = t_open_queue(url);
	if (!q->ops->adopt) {
		printf("# '%s' keeps no flows: skipped\n", u);
	} else {
		test_diamond(q);
		test_settled_already(q);
		test_settles(q);
		test_adopt(q);
		test_chain(q);
	}
	if (!q->ops->kv_put)
		printf("# '%s' keeps no shared keys: skipped\n", u);
	else
		test_kv(q);
	au_queue_close(q);
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			run_suite(argv[i]);
	} else {
		run_suite(t_env("AU_TEST_REDIS"));
		run_suite("memory://flowconf");
		run_suite(t_env("AU_TEST_PG"));
	}
	return t_done();
}
