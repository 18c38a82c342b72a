/*
 * pg_client.h - how au talks to PostgreSQL, shared by the queue
 * (backends/pg_queue.c) and the store (store/pg_store.c): connecting from an
 * au URL, one connection that survives server restarts, binary parameters,
 * waiting for a notification, messages in au's style. Only the PostgreSQL
 * files include libpq-fe.h (before this header).
 */
#ifndef AU_PG_CLIENT_H
#define AU_PG_CLIENT_H

#include "core.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

/* ---- connections ---- */

/* A prepared statement: name, SQL. Types come from casts in the SQL. */
struct au_pg_stmt {
	const char *name;
	const char *sql;
};

/* One blocking connection of a queue or store handle. */
struct au_pg {
	PGconn *c;
	const struct au_url *url;        /* for messages; owned by the handle */
	char *conninfo;
	const struct au_pg_stmt *stmts;  /* indexed by the callers' enums */
	size_t nstmts;
	uint64_t prepared;               /* bit i: stmts[i] exists on c */
	char sqlstate[6];                /* of the last statement that failed on
					    the server, "" after one that did not */
};

/*
 * Connects for a handle opened on url (postgres:// or postgresql://, with
 * libpq's own query parameters passed through) and makes sure the schema
 * is current: a database without au tables is migrated at once, an older
 * schema only with ?migrate=1 in the URL. stmts (up to 64) are prepared on
 * first use.
 */
int au_pg_open(struct au_pg *pg, const struct au_url *url, const struct au_pg_stmt *stmts,
	       size_t nstmts, struct au_err *err);
void au_pg_close(struct au_pg *pg);
/*
 * 1 if URLs a and b (postgres:// or postgresql://) name the same database
 * as the same role: the same host, port, database and user as written, and
 * the same libpq parameters (options=-c search_path=... among them), apart
 * from those that change nothing about where the tables are
 * (application_name, connect_timeout, password, and au's own). 0 otherwise,
 * including when unsure: the caller then talks to each on its own.
 */
int au_pg_same_database(const struct au_url *a, const struct au_url *b);
/* The libpq connection string for url; malloc'ed, NULL with err set. */
char *au_pg_conninfo(const struct au_url *url, struct au_err *err);

/*
 * Runs prepared statement stmt with binary parameters (lens[i] bytes of
 * vals[i]; NULL vals[i] is SQL NULL) and asks for binary results.
 * Notifications received earlier are dropped first. A connection found
 * broken is reset and the statement sent once more, so every statement
 * must be safe to repeat. Returns the result (PQclear it) or NULL with
 * err set (AU_ECONN when the server cannot be reached).
 */
PGresult *au_pg_exec(struct au_pg *pg, int stmt, int nparams, const char *const *vals,
		     const int *lens, struct au_err *err);
/* 1 if the last statement failed with a unique violation (23505). */
int au_pg_unique_violation(const struct au_pg *pg);
/* Plain SQL without parameters (LISTEN, UNLISTEN), same recovery. */
int au_pg_command(struct au_pg *pg, const char *sql, struct au_err *err);

/* Waits for a notification on channel whose payload is payload (any payload
 * when NULL) until deadline_us (au_mono_us; 0 = forever): 1 got one, 0
 * deadline passed, -1 connection lost (err set). */
int au_pg_wait(struct au_pg *pg, const char *channel, const char *payload, uint64_t deadline_us,
	       struct au_err *err);

/* Server notices and errors arriving outside a statement (a session
 * terminated, a NOTICE of a migration) go to au_log at debug level
 * instead of libpq's stderr. Kept across PQreset. */
void au_pg_notices(PGconn *c);

/* Sets err from a failed connection attempt: "unable to connect to
 * '<url>': connection refused". Returns -1. */
int au_pg_connect_error(struct au_err *err, const struct au_url *url, PGconn *c);
/* Sets err from a failed statement (r may be NULL): a dropped connection
 * is AU_ECONN "lost connection to '<url>': ...", anything the server said
 * AU_EPROTO "postgres error from '<url>': ...". Returns -1. */
int au_pg_query_error(struct au_err *err, const struct au_url *url, PGconn *c,
		      const PGresult *r);

/* ---- binary values ---- */

/* A binary array of n elements of type elem (an OID) in b, started by
 * au_pg_array and filled by n calls of au_pg_array_add (len < 0: NULL).
 * au_pg_array_open/au_pg_array_close wrap an element written straight into
 * b (returns its offset). -1 on OOM. */
int au_pg_array(struct au_buf *b, unsigned elem, size_t n);
int au_pg_array_add(struct au_buf *b, const void *p, int len);
int au_pg_array_open(struct au_buf *b, size_t *at);
void au_pg_array_close(struct au_buf *b, size_t at);

/* 16 bytes of a uuid from 32 hex digits; -1 when id is not a valid id. */
int au_pg_uuid(unsigned char out[16], const char *id);
/* The id (32 lowercase hex digits) of a binary uuid. */
void au_pg_id(char out[AU_ID_SIZE], const unsigned char *uuid);
uint32_t au_pg_get_u32(const char *p);
uint64_t au_pg_get_u64(const char *p);
void au_pg_put_u32(unsigned char *p, uint32_t v);
void au_pg_put_u64(unsigned char *p, uint64_t v);

/* OIDs of the element types used by au's statements. */
enum {
	AU_PG_BOOL = 16, AU_PG_BYTEA = 17, AU_PG_INT8 = 20, AU_PG_INT2 = 21,
	AU_PG_INT4 = 23, AU_PG_TEXT = 25, AU_PG_UUID = 2950
};

#endif
