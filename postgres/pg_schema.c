/*
 * pg_schema.c - the PostgreSQL schema of au and its migrations
 * (pg_schema.h).
 *
 * The schema is a list of numbered steps below. The database records the
 * steps it has in au_schema_version; each step runs in its own transaction
 * under a transaction-level advisory lock, and re-reads the version once
 * it holds the lock, so workers starting together migrate once.
 */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "pg_client.h"
#include "pg_schema.h"

/* pg_advisory_xact_lock key of migrations: "au_migr" in ASCII. */
#define MIGRATE_LOCK_KEY "32199251564587378"

static const struct step {
	int version;
	const char *what;
	const char *sql;
} steps[] = {
	{ 1, "queue",
	  "CREATE TABLE au_schema_version (\n"
	  "\tversion int PRIMARY KEY,\n"
	  "\tapplied_at timestamptz NOT NULL DEFAULT now()\n"
	  ");\n"
	  "-- state: 0 waiting (ready once run_at <= now()), 1 leased, 2 dead.\n"
	  "-- body is the computation in au's wire format (docs/wire-format.md).\n"
	  "CREATE TABLE au_jobs (\n"
	  "\tid uuid PRIMARY KEY,\n"
	  "\tpriority smallint NOT NULL DEFAULT 0,\n"
	  "\tstate smallint NOT NULL DEFAULT 0,\n"
	  "\tattempts int NOT NULL DEFAULT 0,\n"
	  "\tmax_attempts int NOT NULL DEFAULT 1,\n"
	  "\tseq bigint GENERATED ALWAYS AS IDENTITY (CACHE 100),\n"
	  "\trun_at timestamptz NOT NULL DEFAULT now(),\n"
	  "\tlease_until timestamptz,\n"
	  "\tcreated_at timestamptz NOT NULL DEFAULT now(),\n"
	  "\tqueue text COLLATE \"C\" NOT NULL,\n"
	  "\ttoken text,\n"
	  "\terror text,\n"
	  "\tbody bytea NOT NULL\n"
	  ");\n"
	  "-- The lease walks this index from its head; seq keeps one push FIFO.\n"
	  "CREATE INDEX au_jobs_ready ON au_jobs (queue, priority DESC, run_at, seq)"
	  " WHERE state = 0;\n"
	  "CREATE INDEX au_jobs_leased ON au_jobs (queue, lease_until) WHERE state = 1;\n" },
	{ 2, "result store",
	  "-- record is the result record in au's wire format.\n"
	  "CREATE TABLE au_results (\n"
	  "\tid uuid PRIMARY KEY,\n"
	  "\texpires_at timestamptz NOT NULL,\n"
	  "\trecord bytea NOT NULL\n"
	  ");\n"
	  "CREATE INDEX au_results_expires ON au_results (expires_at);\n" },
	{ 3, "queue list, dead letter index, vacuum settings",
	  "CREATE TABLE au_queues (\n"
	  "\tname text COLLATE \"C\" PRIMARY KEY,\n"
	  "\tcreated_at timestamptz NOT NULL DEFAULT now()\n"
	  ");\n"
	  "INSERT INTO au_queues (name) SELECT DISTINCT queue FROM au_jobs;\n"
	  "CREATE INDEX au_jobs_dead ON au_jobs (queue) WHERE state = 2;\n"
	  "-- Every computation inserts, updates and deletes a row of au_jobs:\n"
	  "-- vacuum soon after each wave rather than after a fifth of the table.\n"
	  "-- (No fillfactor: a lease changes indexed columns, so no update is\n"
	  "-- HOT and room left on pages would only make the table bigger.)\n"
	  "ALTER TABLE au_jobs SET (autovacuum_vacuum_scale_factor = 0.01,\n"
	  "\tautovacuum_vacuum_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0.01,\n"
	  "\tautovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);\n"
	  "ALTER TABLE au_results SET (autovacuum_vacuum_scale_factor = 0.05,\n"
	  "\tautovacuum_vacuum_cost_delay = 0);\n" },
	{ 4, "room on the pages of au_jobs for the new versions of its rows",
	  "-- A lease (and a retry, an extend) writes a new version of its row.\n"
	  "-- With room on the row's page the new version stays there: one WAL\n"
	  "-- record instead of two (no lock record for a move), without the\n"
	  "-- unchanged end of the row (the body), and one page dirtied instead\n"
	  "-- of two. About 230 of 1,700 bytes of WAL per computation. Pages\n"
	  "-- filled from now on keep half their space for this.\n"
	  "ALTER TABLE au_jobs SET (fillfactor = 50);\n" },
	{ 5, "paused queues, totals, when dead letters died",
	  "-- paused: leases take nothing. processed and failed: totals, one\n"
	  "-- update per statement; mark_*/prev_*: samples of processed for the\n"
	  "-- rate, taken every 30 s by housekeeping.\n"
	  "ALTER TABLE au_queues ADD COLUMN paused boolean NOT NULL DEFAULT false,\n"
	  "\tADD COLUMN processed bigint NOT NULL DEFAULT 0,\n"
	  "\tADD COLUMN failed bigint NOT NULL DEFAULT 0,\n"
	  "\tADD COLUMN mark_n bigint, ADD COLUMN mark_at timestamptz,\n"
	  "\tADD COLUMN prev_n bigint, ADD COLUMN prev_at timestamptz;\n"
	  "-- When a dead row died (NULL: before v5, or buried by hand; then its\n"
	  "-- created_at stands in). Dead letters are listed, purged and bounded\n"
	  "-- in that order.\n"
	  "ALTER TABLE au_jobs ADD COLUMN dead_at timestamptz;\n"
	  "DROP INDEX au_jobs_dead;\n"
	  "CREATE INDEX au_jobs_dead ON au_jobs (queue, (coalesce(dead_at, created_at)))"
	  " WHERE state = 2;\n" },
	{ 6, "worker registry",
	  "-- One row per live worker process, written by its beat every few\n"
	  "-- seconds; a row whose expires_at passed is a worker gone (listed by\n"
	  "-- no one, deleted by the next list or beat). stop_at: 'au worker stop'\n"
	  "-- asked it to drain.\n"
	  "CREATE TABLE au_workers (\n"
	  "\tid text COLLATE \"C\" PRIMARY KEY,\n"
	  "\thost text NOT NULL,\n"
	  "\tpid int NOT NULL,\n"
	  "\tqueues text[] NOT NULL,\n"
	  "\tversion text NOT NULL,\n"
	  "\tstarted_at timestamptz NOT NULL,\n"
	  "\tconcurrency int NOT NULL,\n"
	  "\tstate text NOT NULL,\n"
	  "\tpaused_by text,\n"
	  "\trunning int NOT NULL DEFAULT 0,\n"
	  "\trunning_ids uuid[] NOT NULL DEFAULT '{}',\n"
	  "\tleased bigint NOT NULL DEFAULT 0,\n"
	  "\tcompleted bigint NOT NULL DEFAULT 0,\n"
	  "\tfailed bigint NOT NULL DEFAULT 0,\n"
	  "\tretried bigint NOT NULL DEFAULT 0,\n"
	  "\treleased bigint NOT NULL DEFAULT 0,\n"
	  "\toutages bigint NOT NULL DEFAULT 0,\n"
	  "\tbeat_at timestamptz NOT NULL DEFAULT now(),\n"
	  "\texpires_at timestamptz NOT NULL,\n"
	  "\tstop_at timestamptz\n"
	  ");\n"
	  "CREATE INDEX au_workers_expires ON au_workers (expires_at);\n" },
	{ 7, "the stories of computations",
	  "-- story: what the attempts of a computation did, as the worker\n"
	  "-- encodes it (opaque to the queue), left by its last retry for the\n"
	  "-- next attempt; NULL when none, as on every first attempt. Last in\n"
	  "-- the row, so a lease's new version of a row without one costs\n"
	  "-- nothing more.\n"
	  "ALTER TABLE au_jobs ADD COLUMN story bytea;\n" },
	{ 8, "rate limits",
	  "-- One token bucket per row, for the rate limit middleware: what it\n"
	  "-- held at `at` (the server's clock), refilled by the next take; full\n"
	  "-- again from full_at on, when a sweep may delete it. UNLOGGED: a take\n"
	  "-- writes no WAL, and a bucket lost in a crash comes back full.\n"
	  "CREATE UNLOGGED TABLE au_rate (\n"
	  "\tkey text COLLATE \"C\" PRIMARY KEY,\n"
	  "\ttokens float8 NOT NULL,\n"
	  "\tat timestamptz NOT NULL,\n"
	  "\tfull_at timestamptz NOT NULL\n"
	  ");\n"
	  "CREATE INDEX au_rate_full ON au_rate (full_at);\n" },
	{ 9, "the metrics of workers",
	  "-- metrics: the figures a worker's metrics middleware keeps (opaque to\n"
	  "-- the queue, read by 'au stats'), written by each beat; NULL when it\n"
	  "-- has the middleware off.\n"
	  "ALTER TABLE au_workers ADD COLUMN metrics bytea;\n" },
	{ 10, "flows: dependencies, the kv space",
	  "-- state 3: waiting for ndeps dependencies (never leased; not in\n"
	  "-- au_jobs_ready). au_deps says who waits for whom: a row per held\n"
	  "-- dependency, deleted when the dependency settles.\n"
	  "ALTER TABLE au_jobs ADD COLUMN ndeps int NOT NULL DEFAULT 0;\n"
	  "CREATE INDEX au_jobs_waiting ON au_jobs (queue) WHERE state = 3;\n"
	  "CREATE TABLE au_deps (\n"
	  "\tdep uuid NOT NULL,\n"
	  "\twaiter uuid NOT NULL,\n"
	  "\tPRIMARY KEY (dep, waiter)\n"
	  ");\n"
	  "-- Settles dependencies ids: each waiter's count goes down by the ones\n"
	  "-- it waited for, and one at 0 becomes waiting (ready or scheduled),\n"
	  "-- its queue told as a push tells it. Called by every statement that\n"
	  "-- settles computations, with the ids it settled. VOLATILE: its\n"
	  "-- statements take a snapshot of their own, after the caller locked\n"
	  "-- the rows it settles, so they see the au_deps rows of a push that\n"
	  "-- held one of them FOR SHARE and committed meanwhile. The UPDATE\n"
	  "-- locks each waiter: two settles of its dependencies go one after\n"
	  "-- the other, the second counting from what the first left.\n"
	  "CREATE FUNCTION au_settle(ids uuid[]) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$\n"
	  "DECLARE n int;\n"
	  "BEGIN\n"
	  "\tIF ids IS NULL OR cardinality(ids) = 0 THEN RETURN 0; END IF;\n"
	  "\tWITH d AS (DELETE FROM au_deps WHERE dep = ANY(ids) RETURNING waiter),\n"
	  "\tc AS (SELECT waiter, count(*)::int AS k FROM d GROUP BY waiter),\n"
	  "\tu AS (UPDATE au_jobs j SET ndeps = greatest(j.ndeps - c.k, 0),\n"
	  "\t\tstate = CASE WHEN j.ndeps - c.k <= 0 THEN 0 ELSE 3 END,\n"
	  "\t\trun_at = CASE WHEN j.ndeps - c.k <= 0 THEN greatest(j.run_at, now()) ELSE j.run_at END\n"
	  "\t\tFROM c WHERE j.id = c.waiter AND j.state = 3 RETURNING j.queue, j.state, j.run_at),\n"
	  "\tr AS (SELECT queue FROM u WHERE state = 0),\n"
	  "\tw AS (SELECT pg_notify('au_queue', queue) FROM u WHERE state = 0 AND run_at <= now()\n"
	  "\t\tGROUP BY queue)\n"
	  "\tSELECT (SELECT count(*) FROM r) + 0 * (SELECT count(*) FROM w) INTO n;\n"
	  "\tRETURN n;\n"
	  "END\n"
	  "$f$;\n"
	  "-- The kv space: values by namespace and key; expires_at NULL: kept\n"
	  "-- until deleted; a row past it reads as absent and is deleted lazily.\n"
	  "CREATE TABLE au_kv (\n"
	  "\tns text COLLATE \"C\" NOT NULL,\n"
	  "\tkey text COLLATE \"C\" NOT NULL,\n"
	  "\tval bytea NOT NULL,\n"
	  "\texpires_at timestamptz,\n"
	  "\tPRIMARY KEY (ns, key)\n"
	  ");\n" },
};

/* ---- versions and migrations ---- */

/* Runs sql (no parameters); the single value of its first row, if any, goes
 * to *val (NULL: not wanted). */
static int simple(PGconn *c, const struct au_url *url, const char *sql, int *val,
		  struct au_err *err)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	int rc = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		rc = au_pg_query_error(err, url, c, r);
	else if (val)
		*val = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? atoi(PQgetvalue(r, 0, 0)) : 0;
	PQclear(r);
	return rc;
}

static int db_version(PGconn *c, const struct au_url *url, int *version, struct au_err *err)
{
	int exists;

	if (simple(c, url, "SELECT count(*) FROM pg_catalog.pg_class"
		   " WHERE oid = to_regclass('au_schema_version')", &exists, err) < 0)
		return -1;
	*version = 0;
	return exists ? simple(c, url, "SELECT max(version) FROM au_schema_version", version, err)
		      : 0;
}

static int version_error(struct au_err *err, int version)
{
	if (version > AU_PG_SCHEMA_VERSION)
		return au_seterr(err, AU_ESTATE, "database schema is at v%d, this au expects v%d: upgrade au",
				 version, AU_PG_SCHEMA_VERSION);
	return au_seterr(err, AU_ESTATE, "database schema is at v%d, this au expects v%d: run 'au migrate'",
			 version, AU_PG_SCHEMA_VERSION);
}

/* What step s runs once it holds the lock. The planner may scan whole
 * tables here (the backfill of v3). */
static char *step_body(const struct step *s)
{
	return au_asprintf("SET LOCAL enable_seqscan = on;\n"
			   "SET LOCAL enable_bitmapscan = on;\n"
			   "SET LOCAL enable_nestloop = on;\n"
			   "%s"
			   "INSERT INTO au_schema_version (version) VALUES (%d);\n",
			   s->sql, s->version);
}

#define STEP_BEGIN "BEGIN;\nSELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ");\n"

/* Applies step s unless another process did while we waited for the lock. */
static int apply_step(PGconn *c, const struct au_url *url, const struct step *s, FILE *out,
		      struct au_err *err)
{
	char *body = step_body(s);
	int version, rc, applied = 0;

	if (!body)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	rc = simple(c, url, STEP_BEGIN, NULL, err);
	if (rc == 0)
		rc = db_version(c, url, &version, err);
	if (rc == 0 && version < s->version) {
		rc = simple(c, url, body, NULL, err);
		applied = 1;
	}
	if (rc == 0)
		rc = simple(c, url, "COMMIT", NULL, err);
	else if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
		PQclear(PQexec(c, "ROLLBACK"));
	if (rc == 0 && applied && out)
		fprintf(out, "migrated to v%d: %s\n", s->version, s->what);
	free(body);
	return rc;
}

/* The steps after version up to target: applied, or printed (dry_run). */
static int run_steps(PGconn *c, const struct au_url *url, int version, int target, int dry_run,
		     FILE *out, struct au_err *err)
{
	size_t i;

	for (i = 0; i < AU_ARRAY_SIZE(steps); i++) {
		const struct step *s = &steps[i];

		if (s->version <= version || s->version > target)
			continue;
		if (dry_run) {
			char *body = step_body(s);

			if (!body)
				return au_seterr(err, AU_ENOMEM, "out of memory");
			if (out)
				fprintf(out, "\n-- v%d: %s\n" STEP_BEGIN "%sCOMMIT;\n", s->version,
					s->what, body);
			free(body);
		} else if (apply_step(c, url, s, out, err) < 0) {
			return -1;
		}
	}
	return 0;
}

/*
 * Migrates the database behind c to target (at most AU_PG_SCHEMA_VERSION);
 * with only_empty, only a database without au. Besides the lock of each
 * step, a real run holds the lock for the session, so a process arriving
 * meanwhile waits and then sees where the run ended, not a step between.
 */
static int migrate(PGconn *c, const struct au_url *url, int target, int dry_run, int only_empty,
		   FILE *out, int *before, int *after, struct au_err *err)
{
	int version, rc;

	if (!dry_run && simple(c, url, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", NULL, err) < 0)
		return -1;
	rc = db_version(c, url, &version, err);
	if (rc == 0 && before)
		*before = version;
	if (rc == 0 && version > AU_PG_SCHEMA_VERSION)
		rc = version_error(err, version);
	else if (rc == 0 && version > target)
		rc = au_seterr(err, AU_ESTATE, "database schema is at v%d: cannot go back to v%d",
			       version, target);
	if (rc == 0 && dry_run && out)
		fprintf(out, "-- database schema is at v%d, this au expects v%d%s\n", version, target,
			version == target ? ": nothing to do" : "");
	else if (rc == 0 && out && version == target)
		fprintf(out, "postgres schema of '%s' is already at v%d: nothing to do\n", url->text,
			version);
	if (rc == 0 && (!only_empty || version == 0))
		rc = run_steps(c, url, version, target, dry_run, out, err);
	if (rc == 0 && after)
		*after = dry_run || (only_empty && version) ? version : target;
	if (!dry_run && PQstatus(c) == CONNECTION_OK)
		PQclear(PQexec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
	return rc;
}

/* Connects for a one-off job (migrate, version). */
static PGconn *connect_url(const char *text, struct au_url *url, struct au_err *err)
{
	char *conninfo;
	PGconn *c;

	if (au_url_parse(text, url, err) < 0)
		return NULL;
	if (!(conninfo = au_pg_conninfo(url, err)))
		goto fail;
	c = PQconnectdb(conninfo);
	au_pg_notices(c);
	free(conninfo);
	if (PQstatus(c) == CONNECTION_OK)
		return c;
	au_pg_connect_error(err, url, c);
	PQfinish(c);
fail:
	au_url_release(url);
	return NULL;
}

static int migrate_url(const char *text, int version, int dry_run, FILE *out, int *before,
		       int *after, struct au_err *err)
{
	struct au_url url;
	PGconn *c;
	int rc;

	if (version < 1 || version > AU_PG_SCHEMA_VERSION)
		return au_seterr(err, AU_EINVAL, "no schema version %d (this au knows 1 to %d)", version,
				 AU_PG_SCHEMA_VERSION);
	if (!(c = connect_url(text, &url, err)))
		return -1;
	rc = migrate(c, &url, version, dry_run, 0, out, before, after, err);
	PQfinish(c);
	au_url_release(&url);
	return rc;
}

int au_pg_migrate_to(const char *text, int version, int dry_run, FILE *out, struct au_err *err)
{
	return migrate_url(text, version, dry_run, out, NULL, NULL, err);
}

int au_pg_migrate(const char *url, int dry_run, FILE *out, struct au_err *err)
{
	return migrate_url(url, AU_PG_SCHEMA_VERSION, dry_run, out, NULL, NULL, err);
}

int au_pg_migrate_report(const char *url, int dry_run, FILE *out, int *before, int *after,
			 struct au_err *err)
{
	return migrate_url(url, AU_PG_SCHEMA_VERSION, dry_run, out, before, after, err);
}

int au_pg_url(const char *url)
{
	return url && (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13));
}

/* url for a message: its password masked; one that does not parse is
 * not shown (it may hold a password where the parser saw none). */
static char *shown_url(const char *text)
{
	struct au_url url;
	struct au_err ignored;
	char *s;

	if (!text || !*text)
		return au_strdup("(none)");
	if (au_url_parse(text, &url, &ignored) < 0)
		return au_strdup("(an invalid url)");
	s = au_strdup(url.text);
	au_url_release(&url);
	return s;
}

int au_pg_migrate_all(const char *queue_url, const char *store_url, int dry_run, FILE *out,
		      struct au_err *err)
{
	const char *urls[2];
	int n = 0, i;

	if (au_pg_url(queue_url))
		urls[n++] = queue_url;
	if (au_pg_url(store_url) && !(n && !strcmp(store_url, urls[0])))
		urls[n++] = store_url;
	if (!n) {
		char *q = shown_url(queue_url), *s = shown_url(store_url);

		if (q && s && out)
			fprintf(out, "nothing to migrate: neither the queue '%s' nor the store '%s' is"
				" on PostgreSQL\n", q, s);
		free(q);
		free(s);
		return 0;
	}
	for (i = 0; i < n; i++)
		if (au_pg_migrate(urls[i], dry_run, out, err) < 0)
			return -1;
	return 0;
}

int au_pg_schema_version(const char *text, int *db_version_out, int *binary_version,
			 struct au_err *err)
{
	struct au_url url;
	PGconn *c;
	int rc;

	if (!(c = connect_url(text, &url, err)))
		return -1;
	rc = db_version(c, &url, db_version_out, err);
	*binary_version = AU_PG_SCHEMA_VERSION;
	PQfinish(c);
	au_url_release(&url);
	return rc;
}

int au_pg_schema_check(PGconn *c, struct au_err *err)
{
	struct au_url url = { .text = au_asprintf("postgres://%s:%s/%s", PQhost(c), PQport(c),
						  PQdb(c)) };
	int version, rc;

	if (!url.text)
		return au_seterr(err, AU_ENOMEM, "out of memory");
	rc = db_version(c, &url, &version, err);
	if (rc == 0 && version != AU_PG_SCHEMA_VERSION)
		rc = version_error(err, version);
	free(url.text);
	return rc;
}

int au_pg_schema_ensure(PGconn *c, const struct au_url *url, int upgrade, struct au_err *err)
{
	int version;

	/* A database without au gets its tables; an older schema is only
	 * upgraded when asked, since other programs may still use it. */
	if (db_version(c, url, &version, err) < 0)
		return -1;
	if (version < AU_PG_SCHEMA_VERSION &&
	    (migrate(c, url, AU_PG_SCHEMA_VERSION, 0, !upgrade, NULL, NULL, NULL, err) < 0 ||
	     db_version(c, url, &version, err) < 0))
		return -1;
	return version == AU_PG_SCHEMA_VERSION ? 0 : version_error(err, version);
}
