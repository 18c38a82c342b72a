/*
 * test_flow_worker.c - what the worker does for flows, on memory://: a
 * diamond whose last node gets both results through {"$ref"}, A run once;
 * each dependency policy when a middle node fails; a {"$table"} taken from
 * a result; a fan-out of 100 children ({"$spawn"}) and the join that gets
 * all their results; a reference that cannot be resolved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clickhouse.h"
#include "core.h"
#include "plug.h"
#include "queue.h"
#include "store.h"

static const char *const url = "memory://fw";
static struct au_queue *q;
static struct au_store *st;
static int runs_of_a;

static void task_count(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	(void)arg;
	runs_of_a++;
	au_task_complete(ctx, c->args, c->args_len);
}

/* A computation of task with args (JSON), waiting for deps, in queue "fw". */
static void make(struct au_computation *c, const char *task, const char *json,
		 const struct au_computation *const *deps, size_t ndeps, int policy, const char *flow)
{
	struct au_err err;

	au_computation_init(c);
	au_id_new(c->id);
	c->task = au_strdup(task);
	c->queue = au_strdup("fw");
	if (au_json_to_msgpack(json, &c->args, &c->args_len, &err) < 0)
		T_OK(0, "json: %s", err.str);
	c->max_attempts = 1;
	c->ttl_s = 600;
	c->created_at_ms = au_now_ms();
	c->dep_policy = policy;
	c->flow = flow ? au_strdup(flow) : NULL;
	if (ndeps) {
		c->deps = calloc(ndeps, sizeof(*c->deps));
		for (size_t i = 0; i < ndeps; i++)
			memcpy(c->deps[i], deps[i]->id, AU_ID_SIZE);
		c->ndeps = ndeps;
	}
}


static const char *ch_url = "http://127.0.0.1:1/default";
static uint32_t idle_ms = 700;   /* the collector's tests wait for a housekeeping round */

static void run_worker(struct event_base *base, struct au_registry *reg)
{
	struct au_config cfg = { url, url, ch_url };
	struct au_worker_opts wo = { 0 };
	struct au_worker *w;
	wo.concurrency = 8;
	wo.idle_exit_ms = idle_ms;
	wo.queue = "fw";
	w = au_worker_new(&cfg, &wo, reg, base);
	T_OK(w && au_worker_start(w) == 0, "a worker on queue fw");
	event_base_dispatch(base);
	au_worker_free(w);
}

/* The record of c: its status, and its result as JSON (malloc'ed) or its error. */
static enum au_status outcome(const struct au_computation *c, char **text)
{
	struct au_record r;
	enum au_status s;
	struct au_err err;

	*text = NULL;
	if (au_store_get(st, c->id, &r) < 0)
		return AU_UNKNOWN;
	s = r.status;
	if (r.result_len)
		*text = au_msgpack_to_json(r.result, r.result_len, &err);
	else if (r.error)
		*text = au_strdup(r.error);
	au_record_release(&r);
	return s;
}

static void test_diamond(struct event_base *base, struct au_registry *reg)
{
	struct au_computation c[4];
	const struct au_computation *pa = &c[0], *pbc[2] = { &c[1], &c[2] };
	char *j, *text;

	make(&c[0], "test.count", "{\"v\":7}", NULL, 0, AU_DEP_FAIL, NULL);
	j = au_asprintf("{\"from\":\"b\",\"a\":{\"$ref\":\"%s\"}}", c[0].id);
	make(&c[1], "au.echo", j, &pa, 1, AU_DEP_FAIL, NULL);
	free(j);
	j = au_asprintf("{\"from\":\"c\",\"a\":{\"$ref\":\"%s\"}}", c[0].id);
	make(&c[2], "au.echo", j, &pa, 1, AU_DEP_FAIL, NULL);
	free(j);
	j = au_asprintf("[{\"$ref\":\"%s\"},{\"$ref\":\"%s\"}]", c[1].id, c[2].id);
	make(&c[3], "au.echo", j, pbc, 2, AU_DEP_FAIL, NULL);
	free(j);
	T_OK(au_queue_push(q, c, 4) == 0, "diamond: pushed (%s)", q->err.str);
	runs_of_a = 0;
	run_worker(base, reg);
	EQ(runs_of_a, 1, "diamond: A ran once");
	T_OK(outcome(&c[3], &text) == AU_COMPLETED && text &&
	     !strcmp(text, "[{\"from\":\"b\",\"a\":{\"v\":7}},{\"from\":\"c\",\"a\":{\"v\":7}}]"),
	     "diamond: D got both results, each with A's: %s", text ? text : "(none)");
	free(text);
	for (int i = 0; i < 4; i++)
		au_computation_release(&c[i]);
}

/* A→B(fails)→D, A→C→D: B's failure decides D by the policy; C, its
 * sibling, completes whatever the policy. */
static void test_policy(struct event_base *base, struct au_registry *reg, int policy,
			enum au_status want, const char *want_text)
{
	struct au_computation c[4];
	const struct au_computation *pa = &c[0], *pbc[2] = { &c[1], &c[2] };
	const char *name = au_dep_policy_name(policy);
	char *j, *text;

	make(&c[0], "au.echo", "{\"v\":1}", NULL, 0, policy, NULL);
	make(&c[1], "au.fail", "{\"message\":\"b broke\"}", &pa, 1, policy, NULL);
	make(&c[2], "au.echo", "{\"c\":2}", &pa, 1, policy, NULL);
	j = au_asprintf("{\"b\":{\"$ref\":\"%s\"},\"c\":{\"$ref\":\"%s\"}}", c[1].id, c[2].id);
	make(&c[3], "au.echo", j, pbc, 2, policy, NULL);
	free(j);
	T_OK(au_queue_push(q, c, 4) == 0, "policy %s: pushed", name);
	run_worker(base, reg);
	T_OK(outcome(&c[1], &text) == AU_FAILED, "policy %s: B failed", name);
	free(text);
	T_OK(outcome(&c[2], &text) == AU_COMPLETED, "policy %s: its sibling C completed", name);
	free(text);
	T_OK(outcome(&c[3], &text) == want && text && strstr(text, want_text),
	     "policy %s: D is %s: %s", name, au_status_name(want), text ? text : "(none)");
	free(text);
	for (int i = 0; i < 4; i++)
		au_computation_release(&c[i]);
}

static void test_table_and_bad_refs(struct event_base *base, struct au_registry *reg)
{
	struct au_computation c[4];
	const struct au_computation *pa = &c[0];
	char *j, *text, bogus[AU_ID_SIZE];

	make(&c[0], "au.echo", "{\"table\":\"t_made\",\"rows\":3}", NULL, 0, AU_DEP_FAIL, NULL);
	j = au_asprintf("{\"input\":{\"$table\":\"%s\"}}", c[0].id);
	make(&c[1], "au.echo", j, &pa, 1, AU_DEP_FAIL, NULL);
	free(j);
	au_id_new(bogus);
	j = au_asprintf("{\"x\":{\"$ref\":\"%s\"}}", bogus);
	make(&c[2], "au.echo", j, NULL, 0, AU_DEP_FAIL, NULL);
	free(j);
	make(&c[3], "au.echo", "{\"x\":{\"$ref\":\"not-an-id\"}}", NULL, 0, AU_DEP_FAIL, NULL);
	T_OK(au_queue_push(q, c, 4) == 0, "refs: pushed");
	run_worker(base, reg);
	T_OK(outcome(&c[1], &text) == AU_COMPLETED && text && !strcmp(text, "{\"input\":\"t_made\"}"),
	     "refs: {\"$table\"} reads the table its dependency made: %s", text ? text : "(none)");
	free(text);
	T_OK(outcome(&c[2], &text) == AU_FAILED && text && strstr(text, "has no record"),
	     "refs: a reference to an id without a record fails it, unrun: %s", text ? text : "(none)");
	free(text);
	T_OK(outcome(&c[3], &text) == AU_FAILED && text && strstr(text, "not a computation id"),
	     "refs: a reference that is not an id fails it: %s", text ? text : "(none)");
	free(text);
	for (int i = 0; i < 4; i++)
		au_computation_release(&c[i]);
}

/* P spawns 100 children; J, waiting for P, gets their 100 results. */
static void test_fan_out(struct event_base *base, struct au_registry *reg)
{
	struct au_computation p, jn;
	const struct au_computation *pp = &p;
	struct au_buf b = AU_BUF_INIT;
	char *j, *text, flow[AU_ID_SIZE];
	size_t i, ok;

	au_buf_append(&b, "{\"$spawn\":[", 11);
	for (i = 0; i < 100; i++) {
		char one[64];
		int n = snprintf(one, sizeof(one), "%s{\"task\":\"au.echo\",\"args\":%zu}", i ? "," : "", i);

		au_buf_append(&b, one, (size_t)n);
	}
	au_buf_append(&b, "],\"note\":\"p\"}", 14);
	au_id_new(flow);
	make(&p, "au.echo", (const char *)b.data, NULL, 0, AU_DEP_FAIL, flow);
	j = au_asprintf("{\"all\":{\"$ref\":\"%s\"}}", p.id);
	make(&jn, "au.echo", j, &pp, 1, AU_DEP_FAIL, flow);
	free(j);
	T_OK(au_queue_push(q, &p, 1) == 0 && au_queue_push(q, &jn, 1) == 0, "fan-out: P and J pushed");
	run_worker(base, reg);
	T_OK(outcome(&p, &text) == AU_COMPLETED && text && strstr(text, "\"$children\":[") &&
	     strstr(text, "\"note\":\"p\"") && !strstr(text, "$spawn"),
	     "fan-out: P's record names its children, not the request");
	free(text);
	T_OK(outcome(&jn, &text) == AU_COMPLETED && text, "fan-out: the join completed");
	ok = 0;
	if (text) {
		char want[16];

		for (i = 0; i < 100; i++) {
			snprintf(want, sizeof(want), i ? ",%zu" : "[%zu", i);
			ok += strstr(text, want) != NULL;
		}
		ok += !strncmp(text, "{\"all\":[0,1,2,", 14);
	}
	EQ(ok, 101, "fan-out: the join got the 100 results, in order");
	free(text);
	au_buf_release(&b);
	au_computation_release(&p);
	au_computation_release(&jn);
}

/* au.map over a table of 1,000 rows in partitions of 100: ten children,
 * and the reduce gets their ten results in order. The table is made and
 * filled by the flow's first two nodes. */
static void test_map(struct event_base *base, struct au_registry *reg)
{
	struct au_computation c[5];
	const struct au_computation *p;
	char table[48], *j, *text;
	size_t ok = 0;

	snprintf(table, sizeof(table), "fw_map_%08x", (unsigned)random());
	j = au_asprintf("{\"sql\":\"CREATE TABLE %s (n UInt32) ENGINE = Memory\"}", table);
	make(&c[0], "ch.exec", j, NULL, 0, AU_DEP_FAIL, NULL);
	free(j);
	p = &c[0];
	j = au_asprintf("{\"sql\":\"INSERT INTO %s SELECT number FROM numbers(1000)\"}", table);
	make(&c[1], "ch.exec", j, &p, 1, AU_DEP_FAIL, NULL);
	free(j);
	p = &c[1];
	j = au_asprintf("{\"table\":\"%s\",\"partition\":100,\"task\":\"au.echo\","
			"\"args\":{\"k\":1},\"order\":[[\"n\",\"asc\"]]}", table);
	make(&c[2], "au.map", j, &p, 1, AU_DEP_FAIL, NULL);
	free(j);
	p = &c[2];
	j = au_asprintf("{\"parts\":{\"$ref\":\"%s\"}}", c[2].id);
	make(&c[3], "au.echo", j, &p, 1, AU_DEP_FAIL, NULL);
	free(j);
	p = &c[3];
	j = au_asprintf("{\"sql\":\"DROP TABLE %s\"}", table);
	make(&c[4], "ch.exec", j, &p, 1, AU_DEP_IGNORE, NULL);
	free(j);
	T_OK(au_queue_push(q, c, 5) == 0, "map: create, fill, map, reduce, drop pushed");
	run_worker(base, reg);
	T_OK(outcome(&c[2], &text) == AU_COMPLETED && text && strstr(text, "\"rows\":1000") &&
	     strstr(text, "\"parts\":10"), "map: counted 1000 rows, 10 parts: %s", text ? text : "(none)");
	free(text);
	T_OK(outcome(&c[3], &text) == AU_COMPLETED && text, "map: the reduce completed");
	for (int k = 0; text && k < 10; k++) {
		char want[160];

		snprintf(want, sizeof(want), "{\"k\":1,\"input\":{\"table\":\"%s\",\"limit\":100,\"offset\":%d,",
			 table, k * 100);
		ok += strstr(text, want) != NULL;
	}
	EQ(ok, 10, "map: the reduce got the ten partitions' results, each its rows");
	free(text);
	T_OK(outcome(&c[4], &text) == AU_COMPLETED, "map: the table dropped after");
	free(text);
	for (int k = 0; k < 5; k++)
		au_computation_release(&c[k]);
}

/* 1 when ClickHouse has table name, 0 when not, -1 when it cannot say. */
static int table_exists(const char *name)
{
	struct au_err err;
	struct au_clickhouse *ch = au_ch_new(ch_url, &err);
	struct au_ch_response r;
	struct au_ch_query cq = { 0 };
	char sql[160];
	int rc;

	if (!ch)
		return -1;
	snprintf(sql, sizeof(sql), "EXISTS TABLE %s FORMAT TSV", name);
	cq.sql = sql;
	rc = au_ch_query_sync(ch, &cq, &r) < 0 ? -1 : r.body.len && r.body.data[0] == '1';
	au_ch_response_release(&r);
	au_ch_free(ch);
	return rc;
}

/* A flow's temporary table stays until the flow's ttl after it finished,
 * then goes with the flow's description; a persistent one stays. */
static void test_flow_gc(struct event_base *base, struct au_registry *reg)
{
	struct au_computation c[2];
	char flow[AU_ID_SIZE], tmp[80], keep[80], *j, *desc, *text;
	unsigned char *mp = NULL, *v = NULL;
	size_t len = 0, vlen = 0;
	struct au_err err;
	int done = 0;

	au_id_new(flow);
	snprintf(tmp, sizeof(tmp), "t_%s_gc", flow);
	snprintf(keep, sizeof(keep), "p_fw_%.8s", flow);
	j = au_asprintf("{\"sql\":\"CREATE TABLE %s (n UInt8) ENGINE = Memory\"}", tmp);
	make(&c[0], "ch.exec", j, NULL, 0, AU_DEP_FAIL, flow);
	free(j);
	j = au_asprintf("{\"sql\":\"CREATE TABLE %s (n UInt8) ENGINE = Memory\"}", keep);
	make(&c[1], "ch.exec", j, NULL, 0, AU_DEP_FAIL, flow);
	free(j);
	desc = au_asprintf("{\"id\":\"%s\",\"name\":\"gc\",\"ttl_s\":5,\"nodes\":[{\"name\":\"a\","
			   "\"id\":\"%s\"},{\"name\":\"b\",\"id\":\"%s\"}]}", flow, c[0].id, c[1].id);
	T_OK(au_json_to_msgpack(desc, &mp, &len, &err) == 0 &&
	     au_queue_kv_put(q, "flow", flow, mp, len, 0, 0, &done) == 0 && done,
	     "gc: the flow's description stored (%s)", q->err.str);
	free(desc);
	free(mp);
	T_OK(au_queue_push(q, c, 2) == 0, "gc: its two nodes pushed");
	setenv("AU_FLOW_GC_MS", "100", 1);
	idle_ms = 1600;
	run_worker(base, reg);
	T_OK(outcome(&c[0], &text) == AU_COMPLETED, "gc: the temporary table made: %s", text ? text : "");
	free(text);
	EQ(table_exists(tmp), 1, "gc: finished, its ttl not over: the temporary table stays");
	T_OK(au_queue_kv_get(q, "flow_done", flow, &v, &vlen) == 0, "gc: the flow noted finished");
	free(v);
	t_sleep_ms(4000);
	idle_ms = 2500;
	run_worker(base, reg);
	EQ(table_exists(tmp), 0, "gc: past its ttl: the temporary table dropped");
	EQ(table_exists(keep), 1, "gc: the persistent one stays");
	T_OK(au_queue_kv_get(q, "flow", flow, &v, &vlen) < 0 && q->err.code == AU_ENOTFOUND,
	     "gc: the description is gone");
	unsetenv("AU_FLOW_GC_MS");
	idle_ms = 700;
	j = au_asprintf("{\"sql\":\"DROP TABLE %s\"}", keep);
	au_computation_release(&c[1]);
	make(&c[1], "ch.exec", j, NULL, 0, AU_DEP_FAIL, NULL);
	free(j);
	au_queue_push(q, &c[1], 1);
	run_worker(base, reg);
	au_computation_release(&c[0]);
	au_computation_release(&c[1]);
}

int main(void)
{
	struct event_base *base = event_base_new();
	struct au_registry *reg = au_registry_new();

	au_log_set_level(AU_LOG_ERROR);
	q = au_queue_open(url);
	st = au_store_open(url);
	T_OK(q && !q->err.code && st && !st->err.code, "memory queue and store");
	au_registry_add(reg, "test.count", task_count, NULL);
	test_diamond(base, reg);
	test_policy(base, reg, AU_DEP_FAIL, AU_FAILED, "failed: b broke");
	test_policy(base, reg, AU_DEP_CANCEL, AU_CANCELLED, "cancelled: dependency");
	test_policy(base, reg, AU_DEP_IGNORE, AU_COMPLETED, "{\"b\":null,\"c\":{\"c\":2}}");
	test_policy(base, reg, AU_DEP_CONTINUE, AU_COMPLETED, "{\"status\":\"failed\",\"error\":\"b broke\"}");
	test_table_and_bad_refs(base, reg);
	test_fan_out(base, reg);
	if (getenv("AU_TEST_CH")) {
		ch_url = getenv("AU_TEST_CH");
		test_map(base, reg);
		test_flow_gc(base, reg);
	} else {
		printf("# no AU_TEST_CH: au.map not tried\n");
	}
	au_store_close(st);
	au_queue_close(q);
	au_registry_free(reg);
	event_base_free(base);
	return t_done();
}
