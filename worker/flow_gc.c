/*
 * flow_gc.c - a flow's end (flow_gc.h). A flow is finished when every node
 * it was submitted with, and every child those nodes added, has a terminal
 * record; it expires its ttl_s after the last of them finished. Then its
 * tables go (t_<flow>_* and f_<flow>_*: temporary and named per flow;
 * p_* are persistent and stay), then its description. Nothing of a flow
 * that still runs is touched: its tables may still be read downstream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ch_ops.h"
#include "clickhouse.h"
#include "flow.h"
#include "flow_gc.h"

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
	if (r.status == AU_COMPLETED && depth < 8) {
		char (*kids)[AU_ID_SIZE] = NULL;
		size_t nk = 0;

		if (au_result_children(r.result, r.result_len, &kids, &nk) < 0)
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
		for (size_t i = 0; rc == 1 && i < nk; i++)
			rc = finished(s, kids[i], last, depth + 1, err);
		free(kids);
	}
	au_record_release(&r);
	return rc;
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
		char (*ids)[AU_ID_SIZE] = NULL, text[32];
		uint64_t last = 0, ttl_s = 0, at;
		size_t k, nids = 0;
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
			if (ch && au_ch_drop_flow_tables(ch, keys[i], err) < 0) {
				rc = -1;   /* ClickHouse away: next time */
				break;
			}
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
		fin = au_flow_desc_nodes(val, len, &ids, &nids, &ttl_s);
		free(val);
		if (fin < 0) {
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
			break;
		}
		for (k = 0; fin == 1 && k < nids; k++)
			fin = finished(s, ids[k], &last, 0, err);
		free(ids);
		ids = NULL;
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
