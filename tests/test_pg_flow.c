/*
 * test_pg_flow.c - what the flow conformance suite cannot show of the
 * PostgreSQL queue: two settles of one waiter's dependencies racing from
 * two connections, the kv space's nx race between two handles, its ttl
 * and compare-and-delete, and the lease's plan, which dependencies leave
 * alone.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "harness.h"
#include "plug.h"
#include "queue.h"

#define ROUNDS 40

struct acker {
	struct au_queue *q;
	const char *queue;
	struct au_ref ref;
	pthread_barrier_t *go;
	int applied, rc;
};

static void *ack_one(void *arg)
{
	struct acker *a = arg;

	pthread_barrier_wait(a->go);
	a->rc = au_queue_ack(a->q, a->queue, &a->ref, 1, &a->applied);
	return NULL;
}

/* A and B acked at once from two connections: D is made ready once. */
static void test_racing_acks(const char *url)
{
	struct au_queue *q1 = t_open_queue(url), *q2 = t_open_queue(url);
	int round, ok = 0, once = 0;
	char name[64];

	t_queue_name(name, "pgflow", "race");
	for (round = 0; round < ROUNDS; round++) {
		struct au_computation c[3];
		char deps[2][AU_ID_SIZE];
		struct au_lease l[3];
		struct acker a[2];
		pthread_barrier_t go;
		pthread_t t[2];
		struct au_queued info;
		size_t n, i;

		for (i = 0; i < 3; i++)
			t_computation(&c[i], name, (int)i);
		memcpy(deps[0], c[0].id, AU_ID_SIZE);
		memcpy(deps[1], c[1].id, AU_ID_SIZE);
		c[2].deps = deps;
		c[2].ndeps = 2;
		if (au_queue_push(q1, c, 3) < 0) {
			T_OK(0, "race: push (%s)", q1->err.str);
			break;
		}
		n = t_lease(q1, name, 3, 30000, 0, l);
		if (n != 2) {
			T_OK(0, "race: A and B leased, not D (%zu)", n);
			t_leases_release(l, n);
			break;
		}
		pthread_barrier_init(&go, NULL, 2);
		for (i = 0; i < 2; i++) {
			a[i] = (struct acker){ i ? q2 : q1, name, l[i].ref, &go, 0, 0 };
			pthread_create(&t[i], NULL, ack_one, &a[i]);
		}
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		t_leases_release(l, n);
		ok += a[0].rc == 0 && a[1].rc == 0 && a[0].applied && a[1].applied &&
		      au_queue_peek(q1, name, c[2].id, &info) == 0 && info.state == AU_QUEUED_READY;
		au_queued_release(&info);
		n = t_lease(q1, name, 3, 30000, 0, l);
		once += n == 1 && !strcmp(l[0].ref.id, c[2].id);
		if (n)
			au_queue_ack(q1, name, &l[0].ref, 1, NULL);
		t_leases_release(l, n);
		c[2].deps = NULL;
		c[2].ndeps = 0;
		t_computations_release(c, 3);
	}
	T_EQ_INT(ok, ROUNDS, "race: after two concurrent acks D is ready, every round");
	T_EQ_INT(once, ROUNDS, "race: and leased exactly once");
	T_EQ_INT((int)t_stats(q1, name).waiting, 0, "race: nothing left waiting");
	au_queue_drop(q1, name, 1);
	au_queue_close(q1);
	au_queue_close(q2);
}

struct putter {
	struct au_queue *q;
	const char *key;
	pthread_barrier_t *go;
	int done, rc;
};

static void *put_nx(void *arg)
{
	struct putter *p = arg;

	pthread_barrier_wait(p->go);
	p->rc = au_queue_kv_put(p->q, "pgflow", p->key, (const unsigned char *)p, sizeof(p), 0, 1,
				&p->done);
	return NULL;
}

static void test_kv(const char *url)
{
	struct au_queue *q1 = t_open_queue(url), *q2 = t_open_queue(url);
	int round, one = 0, done = 0;
	unsigned char *val = NULL;
	char key[64], **keys = NULL;
	size_t len = 0, n = 0, i;

	for (round = 0; round < ROUNDS; round++) {
		struct putter p[2];
		pthread_barrier_t go;
		pthread_t t[2];

		snprintf(key, sizeof(key), "nx.%d.%llx", round, (unsigned long long)au_random64());
		pthread_barrier_init(&go, NULL, 2);
		for (i = 0; i < 2; i++) {
			p[i] = (struct putter){ i ? q2 : q1, key, &go, 0, 0 };
			pthread_create(&t[i], NULL, put_nx, &p[i]);
		}
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		one += p[0].rc == 0 && p[1].rc == 0 && p[0].done + p[1].done == 1;
		au_queue_kv_del(q1, "pgflow", key, NULL, 0, &done);
	}
	T_EQ_INT(one, ROUNDS, "kv: of two nx puts racing, exactly one writes");

	/* ttl, on the server's clock */
	T_OK(au_queue_kv_put(q1, "pgflow", "ttl", (const unsigned char *)"x", 1, 300, 0, &done) == 0 &&
	     done, "kv: a put with a ttl (%s)", q1->err.str);
	T_OK(au_queue_kv_get(q2, "pgflow", "ttl", &val, &len) == 0 && len == 1 && val[0] == 'x',
	     "kv: read before its ttl");
	free(val);
	val = NULL;
	T_OK(au_queue_kv_put(q2, "pgflow", "ttl", (const unsigned char *)"y", 1, 0, 1, &done) == 0 &&
	     !done, "kv: nx over a live value writes nothing");
	t_sleep_ms(450);
	T_OK(au_queue_kv_get(q2, "pgflow", "ttl", &val, &len) < 0 && q2->err.code == AU_ENOTFOUND,
	     "kv: gone after its ttl");
	T_OK(au_queue_kv_keys(q1, "pgflow", "ttl", 0, &keys, &n) == 0 && n == 0,
	     "kv: an expired key is not listed");
	free(keys);
	keys = NULL;
	T_OK(au_queue_kv_put(q2, "pgflow", "ttl", (const unsigned char *)"y", 1, 0, 1, &done) == 0 &&
	     done, "kv: nx over an expired value writes");

	/* compare-and-delete */
	T_OK(au_queue_kv_del(q1, "pgflow", "ttl", (const unsigned char *)"x", 1, &done) == 0 && !done,
	     "kv: delete expecting another value deletes nothing");
	T_OK(au_queue_kv_get(q1, "pgflow", "ttl", &val, &len) == 0 && len == 1 && val[0] == 'y',
	     "kv: the value stays");
	free(val);
	val = NULL;
	T_OK(au_queue_kv_del(q1, "pgflow", "ttl", (const unsigned char *)"y", 1, &done) == 0 && done,
	     "kv: delete expecting its value deletes");
	T_OK(au_queue_kv_del(q1, "pgflow", "ttl", NULL, 0, &done) == 0 && !done,
	     "kv: a second delete finds nothing");

	/* prefix: '_' is no wildcard */
	au_queue_kv_put(q1, "pgflow", "p_a", (const unsigned char *)"1", 1, 0, 0, &done);
	au_queue_kv_put(q1, "pgflow", "pxa", (const unsigned char *)"1", 1, 0, 0, &done);
	T_OK(au_queue_kv_keys(q1, "pgflow", "p_", 0, &keys, &n) == 0 && n == 1 &&
	     !strcmp(keys[0], "p_a"), "kv: keys by prefix, literally");
	for (i = 0; keys && i < n; i++)
		free(keys[i]);
	free(keys);
	au_queue_kv_del(q1, "pgflow", "p_a", NULL, 0, &done);
	au_queue_kv_del(q1, "pgflow", "pxa", NULL, 0, &done);
	au_queue_close(q1);
	au_queue_close(q2);
}

/* The lease's plan: one index scan of au_jobs_ready, no other table but
 * au_queues' pause, au_deps nowhere. */
static void test_lease_plan(const char *url)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r;
	char *plan = NULL;
	size_t len = 0;
	int i;

	r = PQexec(c, "SET enable_seqscan = off; EXPLAIN SELECT ctid FROM au_jobs"
		   " WHERE queue = 'x' AND state = 0 AND run_at <= now()"
		   " AND NOT EXISTS (SELECT FROM au_queues WHERE name = 'x' AND paused)"
		   " ORDER BY priority DESC, run_at, seq LIMIT 10 FOR UPDATE SKIP LOCKED");
	FILE *out = open_memstream(&plan, &len);

	for (i = 0; i < PQntuples(r); i++)
		fprintf(out, "%s\n", PQgetvalue(r, i, 0));
	fclose(out);
	T_OK(plan && strstr(plan, "au_jobs_ready") && !strstr(plan, "au_deps") &&
	     !strstr(plan, "Join"), "plan: the lease walks au_jobs_ready and joins nothing:\n%s",
	     plan ? plan : "");
	free(plan);
	PQclear(r);
	PQfinish(c);
}

int main(void)
{
	const char *url = t_env("AU_TEST_PG");
	struct au_queue *q = t_open_queue(url);

	au_queue_close(q);   /* the schema, made */
	test_racing_acks(url);
	test_kv(url);
	test_lease_plan(url);
	return t_done();
}
