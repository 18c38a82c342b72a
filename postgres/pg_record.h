/*
 * pg_record.h - a result record as a row of au_results, written the same
 * way by the store (store/pg_store.c, put) and by the queue
 * (backends/pg_queue.c, ack_store, when the store lives in the queue's
 * database): the parameters of a batch, and the SQL that inserts them.
 * Only the PostgreSQL files include libpq-fe.h; this header does not need
 * it.
 *
 * The row is the encoded record and its expiry on the server's clock
 * ('infinity' for ttl_s = 0). A live row is kept (the first terminal write
 * wins); an expired one counts as absent and is replaced. Each row written
 * notifies AU_PG_RESULT_CHANNEL<id> in the same statement.
 */
#ifndef AU_PG_RECORD_H
#define AU_PG_RECORD_H

#include "core.h"
#include "pg_schema.h"

/*
 * The rows of parameters ids (uuid[]), recs (bytea[]) and ttls (int8[]),
 * e.g. AU_PG_RECORD_ROWS("$1", "$2", "$3").
 */
#define AU_PG_RECORD_ROWS(ids, recs, ttls) \
	" SELECT id, record," \
	" CASE WHEN ttl = 0 THEN 'infinity' ELSE now() + ttl * interval '1 s' END" \
	" FROM unnest(" ids "::uuid[], " recs "::bytea[], " ttls "::int8[]) AS t(id, record, ttl)"

/*
 * Two forms of the same write. The plain insert is tried first: a batch
 * of new ids (nearly every batch) then costs no speculative insertion, no
 * second look into the primary key and no confirmation record per row. It
 * fails whole with a unique violation (au_pg_unique_violation) when an id
 * has a row already, and the statement is then run again in the form that
 * keeps live rows and replaces expired ones. Both end in RETURNING id.
 */
#define AU_PG_RECORD_INSERT(rows) \
	"INSERT INTO au_results AS r (id, record, expires_at)" rows " RETURNING id"
#define AU_PG_RECORD_UPSERT(rows) \
	"INSERT INTO au_results AS r (id, record, expires_at)" rows \
	" ON CONFLICT (id) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at" \
	" WHERE r.expires_at <= now() RETURNING id"

/* The notification of a row written, for a uuid column named col. */
#define AU_PG_RECORD_NOTIFY(col) \
	"pg_notify('" AU_PG_RESULT_CHANNEL "' || encode(uuid_send(" col "), 'hex'), '')"

/* The records of one batch, as parameters. */
struct au_pg_records {
	size_t n;                   /* records in the batch */
	size_t nput;                /* rows sent: the first record of each id */
	unsigned char *dup;         /* dup[i]: an earlier record of the batch has this id */
	struct au_pg_record_slot *sorted;  /* ids in order, to place returned ids */
};

/*
 * Appends three parameters to b: the ids, the encoded records and the ttls
 * of recs[0..n), and sets at[0..3) to their offsets in b. A second record
 * of an id in the batch is left out (it loses to the first, as it would in
 * two puts; one statement may not touch a row twice). Each record is
 * encoded with its expires_at_ms from this machine's clock, for readers of
 * the bytes; the row's own expiry is the server's. The ids must be valid
 * (callers check). -1 with err set (AU_ENOMEM, or a record that cannot be
 * encoded); release pr in any case.
 */
int au_pg_records_params(struct au_buf *b, const struct au_record *recs, size_t n,
			 struct au_pg_records *pr, size_t at[3], struct au_err *err);
/* The index of the first record of the batch with this binary uuid (as
 * RETURNING id sends it), or pr->n if none. */
size_t au_pg_records_find(const struct au_pg_records *pr, const void *uuid);
void au_pg_records_release(struct au_pg_records *pr);

#endif
