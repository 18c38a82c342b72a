/*
 * flow_gc.c - a flow's end (flow_gc.h). A flow is finished when every node
 * it was submitted with, and every child those nodes added, has a terminal
 * record; it expires its ttl_s after the last of them finished. Then its
 * tables go (t_<flow>_* and f_<flow>_*: temporary and named per flow;
 * p_* are persistent and stay), then its description. Nothing of a flow
 * that still runs is touched: its tables may still be read downstream.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickhouse.h"
#include "flow_gc.h"

static int is_key(const msgpack_object *k, const char *s)
{
	size_t n = strlen(s);

	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && !memcmp(k->via.str.ptr, s, n);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	for (size_t i = 0; m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++)
		if (is_key(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

static int id_of(const msgpack_object *o, char id[AU_ID_SIZE])
{
	if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size != AU_ID_SIZE - 1)
		return -1;
	memcpy(id, o->via.str.ptr, AU_ID_SIZE - 1);
	id[AU_ID_SIZE - 1] = 0;
	return au_id_valid(id) ? 0 : -1;
}

/* 1 and the last finish when id and all it spawned have terminal records,
 * 0 when one is still to come, -1 when the store failed. */
static int finished(struct au_store *s, const char *id, uint64_t *last, unsigned depth,
		    struct au_err *err)
{
	struct au_record r;
	int rc = 1;

	if (au_store_get(s, id, &r) < 0) {
		if (s->err.code == AU_ENOTFOUND)
			return 0;   /* not yet: or gone, and the flow waits for its ttl */
		*err = s->err;
		return -1;
	}
	if (r.status != AU_COMPLETED && r.status != AU_FAILED && r.status != AU_CANCELLED) {
		au_record_release(&r);
		return 0;
	}
	if (r.finished_at_ms > *last)
		*last = r.finished_at_ms;
	if (r.status == AU_COMPLETED && r.result_len && depth < 8 &&
	    memmem(r.result, r.result_len, "$children", 9)) {
		msgpack_zone zone;
		msgpack_object res;
		size_t off = 0;

		if (msgpack_zone_init(&zone, 2048)) {
			if (msgpack_unpack((const char *)r.result, r.result_len, &off, &zone, &res) ==
			    MSGPACK_UNPACK_SUCCESS) {
				const msgpack_object *kids = map_get(&res, "$children");

				for (size_t i = 0; kids && kids->type == MSGPACK_OBJECT_ARRAY &&
						   rc == 1 && i < kids->via.array.size; i++) {
					char kid[AU_ID_SIZE];

					if (id_of(&kids->via.array.ptr[i], kid) == 0)
						rc = finished(s, kid, last, depth + 1, err);
				}
			}
			msgpack_zone_destroy(&zone);
		}
	}
	au_record_release(&r);
	return rc;
}

int au_flow_drop_tables(struct au_clickhouse *ch, const char *flow, size_t *dropped,
			struct au_err *err)
{
	struct au_ch_response resp;
	struct au_ch_query q = { 0 };
	char sql[512];
	const char *p, *end;
	int rc;

	*dropped = 0;
	if (!au_id_valid(flow))
		return au_seterr(err, AU_EINVAL, "invalid flow id '%.40s'", flow);
	/* the id is 32 hex digits: nothing in it can leave the quotes */
	snprintf(sql, sizeof(sql), "SELECT name FROM system.tables WHERE database = currentDatabase()"
		 " AND (startsWith(name, 't_%s_') OR startsWith(name, 'f_%s_')) FORMAT TSV", flow, flow);
	q.sql = sql;
	rc = au_ch_query_sync(ch, &q, &resp);
	if (rc < 0) {
		*err = resp.err;
		au_ch_response_release(&resp);
		return -1;
	}
	p = (const char *)resp.body.data;
	end = p ? p + resp.body.len : p;
	while (p && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char name[128];
		struct au_ch_response r2;

		if (n && n < sizeof(name)) {
			memcpy(name, p, n);
			name[n] = 0;
			if (au_sql_identifier_valid(name)) {
				snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", name);
				q.sql = sql;
				if (au_ch_query_sync(ch, &q, &r2) < 0) {
					*err = r2.err;
					au_ch_response_release(&r2);
					au_ch_response_release(&resp);
					return -1;
				}
				au_ch_response_release(&r2);
				++*dropped;
			}
		}
		p = nl ? nl + 1 : end;
	}
	au_ch_response_release(&resp);
	return 0;
}

int au_flow_gc(struct au_queue *q, struct au_store *s, struct au_clickhouse *ch,
	       const char *holder, struct au_flow_gc_stats *st, struct au_err *err)
{
	char **keys = NULL;
	size_t n = 0, i;
	int done = 0, rc = 0;
	uint64_t now = au_now_ms();

	memset(st, 0, sizeof(*st));
	/* one collector at a time across the fleet */
	if (au_queue_kv_put(q, "lock", "flow_gc", (const unsigned char *)holder, strlen(holder),
			    AU_FLOW_GC_LOCK_MS, 1, &done) < 0) {
		if (q->err.code == AU_ESTATE)
			return 0;   /* a queue without flows */
		*err = q->err;
		return -1;
	}
	if (!done)
		return 0;
	if (au_queue_kv_keys(q, "flow", "", AU_FLOW_GC_MAX, &keys, &n) < 0) {
		*err = q->err;
		rc = -1;
	}
	for (i = 0; rc == 0 && i < n; i++) {
		unsigned char *val = NULL;
		size_t len = 0;
		msgpack_zone zone;
		msgpack_object d;
		const msgpack_object *nodes, *ttl;
		uint64_t last = 0, ttl_s = 0, at;
		size_t off = 0, k;
		char id[AU_ID_SIZE], text[32];
		int fin = 1;

		if (!au_id_valid(keys[i]))
			continue;
		st->flows++;
		/* seen finished already: its time, and whether it is up */
		if (au_queue_kv_get(q, "flow_done", keys[i], &val, &len) == 0) {
			snprintf(text, sizeof(text), "%.*s", len < 31 ? (int)len : 31, (const char *)val);
			free(val);
			at = strtoull(text, NULL, 10);
			if (at > now)
				continue;
			if (ch && au_flow_drop_tables(ch, keys[i], &k, err) < 0) {
				rc = -1;   /* ClickHouse away: next time */
				break;
			}
			st->tables += ch ? k : 0;
			au_queue_kv_del(q, "flow", keys[i], NULL, 0, &done);
			au_queue_kv_del(q, "flow_done", keys[i], NULL, 0, &done);
			st->expired++;
			continue;
		}
		if (q->err.code != AU_ENOTFOUND) {
			*err = q->err;
			rc = -1;
			break;
		}
		if (au_queue_kv_get(q, "flow", keys[i], &val, &len) < 0)
			continue;   /* gone meanwhile */
		if (!msgpack_zone_init(&zone, 4096)) {
			free(val);
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
			break;
		}
		if (msgpack_unpack((const char *)val, len, &off, &zone, &d) != MSGPACK_UNPACK_SUCCESS ||
		    !(nodes = map_get(&d, "nodes")) || nodes->type != MSGPACK_OBJECT_ARRAY) {
			fin = 0;   /* not one au wrote: left alone */
		} else {
			ttl = map_get(&d, "ttl_s");
			ttl_s = ttl && ttl->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? ttl->via.u64 : 0;
			for (k = 0; fin == 1 && k < nodes->via.array.size; k++)
				if (id_of(map_get(&nodes->via.array.ptr[k], "id"), id) == 0)
					fin = finished(s, id, &last, 0, err);
		}
		msgpack_zone_destroy(&zone);
		free(val);
		if (fin < 0) {
			rc = -1;
			break;
		}
		if (fin == 1 && ttl_s) {   /* ttl 0: kept until deleted */
			snprintf(text, sizeof(text), "%llu", (unsigned long long)(last + ttl_s * 1000));
			au_queue_kv_put(q, "flow_done", keys[i], (const unsigned char *)text, strlen(text), 0,
					0, &done);
			st->finished++;
		}
	}
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	au_queue_kv_del(q, "lock", "flow_gc", (const unsigned char *)holder, strlen(holder), &done);
	return rc;
}
