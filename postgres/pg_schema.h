/*
 * pg_schema.h - au's versioned PostgreSQL schema and its migrations
 * (docs/postgres.md): the tables of the queue and of the store, the
 * notification channels, `au migrate`. Only the PostgreSQL files include
 * libpq-fe.h (before this header).
 */
#ifndef AU_PG_SCHEMA_H
#define AU_PG_SCHEMA_H

#include <stdio.h>

#include "core.h"

/* libpq's handle, declared as libpq-fe.h declares it, so that a caller
 * of the migration API (the CLI) need not include libpq. */
typedef struct pg_conn PGconn;

/* The schema version this build reads and writes. */
#define AU_PG_SCHEMA_VERSION 10

/* Channels: a push, retry, release or rescue that makes computations of a
 * queue ready sends the queue's name on AU_PG_QUEUE_CHANNEL; a result write
 * notifies AU_PG_RESULT_CHANNEL<id> (empty payload). */
#define AU_PG_QUEUE_CHANNEL "au_queue"
#define AU_PG_RESULT_CHANNEL "au_r_"

/* ---- migrations ---- */

/*
 * Brings the database at url to AU_PG_SCHEMA_VERSION, one step per
 * transaction under an advisory lock (and the whole run under the same lock
 * for the session), so concurrent migrations are safe. Progress lines go
 * to out (may be NULL). With dry_run, prints the SQL it would run to out
 * and changes nothing. A database ahead of this build is an AU_ESTATE
 * error with the message of au_pg_schema_check.
 */
int au_pg_migrate(const char *url, int dry_run, FILE *out, struct au_err *err);
/* Same, and where the database was and is: *before the run (0: no au
 * schema) and *after it (a dry run changes nothing: *after == *before);
 * either may be NULL; on -1 *after is left alone. A database already at
 * AU_PG_SCHEMA_VERSION prints "postgres schema of '<url>' is already at
 * v8: nothing to do" to out (au_pg_migrate does too; the URL's password
 * masked). */
int au_pg_migrate_report(const char *url, int dry_run, FILE *out, int *before, int *after,
			 struct au_err *err);
/* 1 when url is postgres:// or postgresql://, else 0 (NULL too). */
int au_pg_url(const char *url);
/* `au migrate`: migrates (au_pg_migrate) the database of queue_url and
 * that of store_url, whichever are PostgreSQL, once when they are the
 * same. When neither is, prints "nothing to migrate: neither the queue
 * '<url>' nor the store '<url>' is on PostgreSQL" to out (may be NULL)
 * and returns 0: nothing to do is no error. -1 with err as au_pg_migrate. */
int au_pg_migrate_all(const char *queue_url, const char *store_url, int dry_run, FILE *out,
		      struct au_err *err);
/* Same, to an older version (tests build databases at old versions). */
int au_pg_migrate_to(const char *url, int version, int dry_run, FILE *out,
		     struct au_err *err);
/* *db_version (0: no au schema) and *binary_version (AU_PG_SCHEMA_VERSION). */
int au_pg_schema_version(const char *url, int *db_version, int *binary_version,
			 struct au_err *err);
/* 0 if the database behind c is at AU_PG_SCHEMA_VERSION, else -1 with
 * AU_ESTATE: "database schema is at v1, this au expects v8: run 'au
 * migrate'" or "... at v9, this au expects v8: upgrade au". */
int au_pg_schema_check(PGconn *c, struct au_err *err);
/* On a fresh connection to url: a database without au tables is migrated at
 * once, an older schema only with upgrade (?migrate=1); 0 when the schema
 * is then current, else -1 with the message of au_pg_schema_check. */
int au_pg_schema_ensure(PGconn *c, const struct au_url *url, int upgrade, struct au_err *err);

#endif
