/*
 * pg_store.c - results in PostgreSQL: postgres://[user[:password]@]host[:port]/db
 * (postgresql:// too; the URL works as for the queue, backends/pg_queue.c).
 *
 * One row of au_results per record (postgres/pg_record.h, shared with the
 * queue's ack_store): the encoded record and its expiry on the server's
 * clock ('infinity' for ttl_s = 0). A put is one statement for the whole
 * batch, a plain insert; should an id of the batch have a row already, it
 * fails whole and the batch goes again in the form where an expired row
 * counts as absent, so it is replaced, while a live one is kept (the first
 * terminal write wins). Each row written notifies the channel au_r_<id> in
 * the same statement, which is what wait listens to. Expired rows stay
 * until sweep deletes them, or a get that finds one (and says
 * AU_EEXPIRED).
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pg_client.h"
#include "pg_record.h"
#include "pg_schema.h"
#include "store.h"

/* Rows deleted per statement by sweep. */
#define SWEEP_CHUNK 10000

enum stmt { S_PUT, S_PUT_KEEP, S_GET, S_DEL, S_SWEEP };

/* The rows written, with their notifications. */
#define PUT_NOTIFY(insert) \
	"WITH w AS (" insert ") SELECT id, " AU_PG_RECORD_NOTIFY("id") " FROM w"

static const struct au_pg_stmt stmts[] = {
	/* new ids (nearly always); a unique violation sends the batch again
	 * as S_PUT_KEEP, which keeps live rows (postgres/pg_record.h) */
	[S_PUT] = { "au_put",
		PUT_NOTIFY(AU_PG_RECORD_INSERT(AU_PG_RECORD_ROWS("$1", "$2", "$3"))) },
	[S_PUT_KEEP] = { "au_put_keep",
		PUT_NOTIFY(AU_PG_RECORD_UPSERT(AU_PG_RECORD_ROWS("$1", "$2", "$3"))) },
	/* An expired row is reported once, then deleted, as a sweep would. */
	[S_GET] = { "au_get",
		"WITH d AS (DELETE FROM au_results WHERE id = $1::uuid AND expires_at <= now())"
		" SELECT CASE WHEN expires_at > now() THEN record END, expires_at <= now(),"
		" CASE WHEN isfinite(expires_at) THEN floor(extract(epoch FROM expires_at) * 1000)::int8"
		" ELSE 0 END FROM au_results WHERE id = $1::uuid" },
	[S_DEL] = { "au_del", "DELETE FROM au_results WHERE id = $1::uuid" },
	[S_SWEEP] = { "au_sweep",
		"DELETE FROM au_results WHERE id = ANY(ARRAY(SELECT id FROM au_results"
		" WHERE expires_at <= now() LIMIT $1::int8 FOR UPDATE SKIP LOCKED))" },
};

struct pgs {
	struct au_pg pg;
	struct au_buf params;       /* binary parameters, reused */
};

static int oom(struct au_store *s)
{
	return au_seterr(&s->err, AU_ENOMEM, "out of memory");
}

static PGresult *run(struct au_store *s, enum stmt st, int n, const char *const *vals,
		     const int *lens)
{
	return au_pg_exec(&((struct pgs *)s->ctx)->pg, st, n, vals, lens, &s->err);
}

static int pgs_open(struct au_store *s, const struct au_url *url)
{
	struct pgs *p = calloc(1, sizeof(*p));

	if (!p)
		return oom(s);
	if (au_pg_open(&p->pg, url, stmts, AU_ARRAY_SIZE(stmts), &s->err) < 0) {
		free(p);
		return -1;
	}
	s->ctx = p;
	return 0;
}

static void pgs_close(struct au_store *s)
{
	struct pgs *p = s->ctx;

	au_pg_close(&p->pg);
	au_buf_release(&p->params);
	free(p);
	s->ctx = NULL;
}

static int pgs_put(struct au_store *s, const struct au_record *recs, size_t n, int *applied)
{
	struct au_buf *b = &((struct pgs *)s->ctx)->params;
	struct au_pg *pg = &((struct pgs *)s->ctx)->pg;
	struct au_pg_records pr;
	size_t at[3], i;
	const char *vals[3];
	int lens[3], rc = -1;
	PGresult *r = NULL;

	if (!n)
		return 0;
	au_buf_reset(b);
	if (au_pg_records_params(b, recs, n, &pr, at, &s->err) < 0)
		goto out;
	for (i = 0; i < 3; i++) {
		vals[i] = (const char *)b->data + at[i];
		lens[i] = (int)((i < 2 ? at[i + 1] : b->len) - at[i]);
	}
	r = run(s, S_PUT, 3, vals, lens);
	if (!r && au_pg_unique_violation(pg) && (r = run(s, S_PUT_KEEP, 3, vals, lens)))
		au_clearerr(&s->err);
	if (!r)
		goto out;
	if (applied) {
		memset(applied, 0, n * sizeof(*applied));
		for (i = 0; i < (size_t)PQntuples(r); i++) {
			size_t k = au_pg_records_find(&pr, PQgetvalue(r, (int)i, 0));

			if (k < n)
				applied[k] = 1;
		}
	}
	rc = 0;
out:
	PQclear(r);
	au_pg_records_release(&pr);
	return rc;
}

static int pgs_get(struct au_store *s, const char *id, struct au_record *out)
{
	unsigned char uuid[16];
	const char *vals[] = { (const char *)uuid };
	int lens[] = { 16 }, rc;
	PGresult *r;

	au_pg_uuid(uuid, id);
	if (!(r = run(s, S_GET, 1, vals, lens)))
		return -1;
	if (!PQntuples(r))
		rc = au_seterr(&s->err, AU_ENOTFOUND, "no result for computation '%s'", id);
	else if (*PQgetvalue(r, 0, 1))
		rc = au_seterr(&s->err, AU_EEXPIRED, "result of computation '%s' expired", id);
	else if ((rc = au_record_decode((const unsigned char *)PQgetvalue(r, 0, 0),
					(size_t)PQgetlength(r, 0, 0), out, &s->err)) == 0) {
		if (strcmp(out->id, id) != 0) {
			rc = au_seterr(&s->err, AU_EPROTO, "the row of computation '%s' holds '%s'", id,
				       out->id);
			au_record_release(out);
		} else {
			out->expires_at_ms = au_pg_get_u64(PQgetvalue(r, 0, 2));
		}
	}
	PQclear(r);
	return rc;
}

static int pgs_del(struct au_store *s, const char *id)
{
	unsigned char uuid[16];
	const char *vals[] = { (const char *)uuid };
	int lens[] = { 16 };
	PGresult *r;

	au_pg_uuid(uuid, id);
	r = run(s, S_DEL, 1, vals, lens);
	PQclear(r);
	return r ? 0 : -1;
}

static int pgs_sweep(struct au_store *s, size_t max, size_t *removed)
{
	size_t done = 0, chunk, got;

	/* bounded statements: no transaction holds many rows for long */
	do {
		unsigned char lim[8];
		const char *vals[] = { (const char *)lim };
		int lens[] = { 8 };
		PGresult *r;

		chunk = max - done < SWEEP_CHUNK ? max - done : SWEEP_CHUNK;
		if (!chunk)
			break;
		au_pg_put_u64(lim, chunk);
		if (!(r = run(s, S_SWEEP, 1, vals, lens)))
			return -1;
		got = (size_t)strtoul(PQcmdTuples(r), NULL, 10);
		PQclear(r);
		done += got;
	} while (got == chunk);
	if (removed)
		*removed = done;
	return 0;
}

static int timed_out(struct au_store *s, const char *id, int timeout_ms)
{
	return au_seterr(&s->err, AU_ETIMEDOUT, "timed out after %d ms waiting for computation '%s'",
			 timeout_ms, id);
}

static int pgs_wait(struct au_store *s, const char *id, int timeout_ms, struct au_record *out)
{
	struct au_pg *pg = &((struct pgs *)s->ctx)->pg;
	uint64_t deadline = timeout_ms < 0 ? 0 : au_mono_us() + (uint64_t)timeout_ms * 1000;
	char channel[sizeof(AU_PG_RESULT_CHANNEL) + AU_ID_SIZE], sql[sizeof(channel) + 16];
	int rc, got, listening = 0, lost = 0;
	struct au_err ignored;

	/* present already: one round trip */
	rc = pgs_get(s, id, out);
	if (rc == 0 || s->err.code != AU_ENOTFOUND)
		return rc;
	if (timeout_ms == 0)
		return timed_out(s, id, timeout_ms);
	snprintf(channel, sizeof(channel), AU_PG_RESULT_CHANNEL "%s", id);
	/* Listen, then look again: a write in between is seen either way. */
	for (;;) {
		if (!listening) {
			snprintf(sql, sizeof(sql), "LISTEN %s", channel);
			if ((rc = au_pg_command(pg, sql, &s->err)) < 0)
				break;
			listening = 1;
		}
		rc = pgs_get(s, id, out);
		if (rc == 0 || s->err.code != AU_ENOTFOUND)
			break;
		got = au_pg_wait(pg, channel, NULL, deadline, &s->err);
		if (got == 0) {
			rc = timed_out(s, id, timeout_ms);
			break;
		}
		/* a dropped connection is reset by the next LISTEN, once */
		if (got < 0 && lost++) {
			rc = -1;
			break;
		}
		listening = got > 0;
	}
	if (listening && PQstatus(pg->c) == CONNECTION_OK) {
		snprintf(sql, sizeof(sql), "UNLISTEN %s", channel);
		au_pg_command(pg, sql, &ignored);
	}
	return rc;
}

/* libpq takes both spellings of the scheme; so does au. */
const struct au_store_ops au_pg_store_ops = {
	.scheme = "postgres",
	.alias = "postgresql",
	.features = AU_STORE_TELLS_EXPIRED | AU_STORE_SHARED,
	.open = pgs_open,
	.close = pgs_close,
	.put = pgs_put,
	.get = pgs_get,
	.del = pgs_del,
	.sweep = pgs_sweep,
	.wait = pgs_wait,
};
