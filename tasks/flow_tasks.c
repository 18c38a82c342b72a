/*
 * flow_tasks.c - au.map: a table in partitions of N rows becomes one
 * computation per partition, children of the map's flow ({"$spawn"},
 * worker/flow.h), and whatever waits for the map (its reduce) waits for
 * them all and gets their results, in order, through {"$ref"}.
 *
 *   {"table": T, "partition": N, "task": "ch.op", "args": {...},
 *    "as": "input", "order": [["id", "asc"]], "queue": "..."}
 *
 * Each child gets args plus, under "as" (default "input"), the view of its
 * rows: {"table": T, "limit": N, "offset": k * N[, "order": order]}. Rows
 * come in partitions by order (give one: without it ClickHouse may read a
 * table's parts in any order, and partitions may then overlap).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clickhouse.h"
#include "task.h"
#include "tasks.h"

struct map_req {
	struct au_task_ctx *ctx;
	struct au_clickhouse *ch;
	json_t *args;
};

static void map_fail(struct map_req *m, int kind, const char *msg)
{
	au_task_fail(m->ctx, kind, "au.map: %s", msg);
	json_decref(m->args);
	free(m);
}

/* The map's result: the children, and what it saw. */
static void map_spawn(struct map_req *m, unsigned long long rows)
{
	const json_t *a = m->args, *user = json_object_get(a, "args"), *order = json_object_get(a, "order");
	const char *as = json_is_string(json_object_get(a, "as")) ? json_string_value(json_object_get(a, "as"))
								   : "input";
	json_int_t part = json_integer_value(json_object_get(a, "partition"));
	unsigned long long parts = rows ? (rows + (unsigned long long)part - 1) / (unsigned long long)part : 0;
	json_t *res = json_object(), *spawn = json_array();
	struct au_buf out = AU_BUF_INIT;
	struct au_err err;

	for (unsigned long long k = 0; res && spawn && k < parts; k++) {
		json_t *kid = json_object(), *kargs = json_is_object(user) ? json_deep_copy(user) : json_object();
		json_t *view = json_object();

		json_object_set(view, "table", json_object_get(a, "table"));
		json_object_set_new(view, "limit", json_integer(part));
		json_object_set_new(view, "offset", json_integer((json_int_t)(k * (unsigned long long)part)));
		if (order)
			json_object_set(view, "order", (json_t *)order);
		json_object_set_new(kargs, as, view);
		json_object_set(kid, "task", json_object_get(a, "task"));
		json_object_set_new(kid, "args", kargs);
		if (json_is_string(json_object_get(a, "queue")))
			json_object_set(kid, "queue", json_object_get(a, "queue"));
		json_array_append_new(spawn, kid);
	}
	json_object_set_new(res, "$spawn", spawn);
	json_object_set(res, "table", json_object_get(a, "table"));
	json_object_set_new(res, "rows", json_integer((json_int_t)rows));
	json_object_set_new(res, "parts", json_integer((json_int_t)parts));
	if (au_jansson_to_msgpack(res, &out, &err) < 0) {
		json_decref(res);
		au_buf_release(&out);
		map_fail(m, AU_FAIL_RETRY, err.str);
		return;
	}
	json_decref(res);
	au_task_complete(m->ctx, out.data, out.len);
	au_buf_release(&out);
	json_decref(m->args);
	free(m);
}

static void on_count(struct au_ch_response *resp, void *arg)
{
	struct map_req *m = arg;
	char text[32] = "";
	unsigned long long rows;
	char *end;

	if (resp->err.code) {
		map_fail(m, au_ch_fault(m->ch, resp) == AU_CH_OUTAGE ? AU_FAIL_OUTAGE
			    : au_ch_fault(m->ch, resp) == AU_CH_RETRY ? AU_FAIL_RETRY : AU_FAIL_FOR_GOOD,
			 resp->err.str);
		return;
	}
	snprintf(text, sizeof(text), "%.*s", resp->body.len < 31 ? (int)resp->body.len : 31,
		 (const char *)resp->body.data);
	rows = strtoull(text, &end, 10);
	if (end == text || (*end && *end != '\n')) {
		map_fail(m, AU_FAIL_FOR_GOOD, "clickhouse answered the count with something else");
		return;
	}
	map_spawn(m, rows);
}

static void on_cancel(void *arg)
{
	struct map_req *m = arg;

	au_ch_cancel(m->ch, on_count, m);
	json_decref(m->args);
	free(m);
}

static void task_map(struct au_task_ctx *ctx, const struct au_computation *c, void *arg)
{
	struct au_ch_query q = { .timeout_ms = c->timeout_ms };
	struct map_req *m;
	json_t *a = NULL, *part, *table, *task;
	char *sql;

	(void)arg;
	if (au_msgpack_to_jansson(c->args, c->args_len, &a, NULL) < 0 || !json_is_object(a)) {
		json_decref(a);
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "au.map: its args must be a map");
		return;
	}
	table = json_object_get(a, "table");
	part = json_object_get(a, "partition");
	task = json_object_get(a, "task");
	if (!json_is_string(table) || !au_sql_identifier_valid(json_string_value(table)) ||
	    !json_is_integer(part) || json_integer_value(part) < 1 ||
	    json_integer_value(part) > 1000000000 || !json_is_string(task) ||
	    (json_object_get(a, "args") && !json_is_object(json_object_get(a, "args"))) ||
	    (json_object_get(a, "as") && !json_is_string(json_object_get(a, "as")))) {
		json_decref(a);
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "au.map: needs 'table' (a table name), 'partition'"
			     " (rows, 1 to 1000000000) and 'task'; 'args' a map and 'as' a key if given");
		return;
	}
	if (!au_task_clickhouse(ctx)) {
		json_decref(a);
		au_task_fail(ctx, AU_FAIL_FOR_GOOD, "au.map: no clickhouse server configured");
		return;
	}
	if (!(m = calloc(1, sizeof(*m))) ||
	    !(sql = au_asprintf("SELECT count() FROM %s FORMAT TSV", json_string_value(table)))) {
		free(m);
		json_decref(a);
		au_task_fail(ctx, AU_FAIL_RETRY, "au.map: out of memory");
		return;
	}
	*m = (struct map_req){ ctx, au_task_clickhouse(ctx), a };
	q.sql = sql;
	q.query_id = au_task_query_id(ctx);
	if (au_ch_send(m->ch, &q, on_count, m) < 0) {
		free(sql);
		map_fail(m, AU_FAIL_RETRY, "unable to start the clickhouse request");
		return;
	}
	free(sql);
	au_task_on_cancel(ctx, on_cancel, m);
}

int au_flow_tasks_add(struct au_registry *reg)
{
	return au_registry_add(reg, "au.map", task_map, NULL);
}
