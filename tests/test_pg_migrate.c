/*
 * test_pg_migrate.c - the PostgreSQL schema and its migrations, and what
 * only the PostgreSQL backends do: plain-SQL producers, connections the
 * server drops. Each case works in a database of its own (au_mig_<random>)
 * on the server of $AU_TEST_PG.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "harness.h"
#include "pg_client.h"
#include "pg_schema.h"
#include "queue.h"
#include "store.h"

/* T_EQ_INT evaluates its arguments twice; calls go through this */
#define EQ(a, b, name) do { \
		long long a_ = (long long)(a), b_ = (long long)(b); \
		T_EQ_INT(a_, b_, name); \
	} while (0)

static struct au_url server;      /* $AU_TEST_PG */
static PGconn *admin;             /* to its own database */

/* ---- databases ---- */

static PGconn *connect_to(const char *url)
{
	PGconn *c = PQconnectdb(url);

	if (PQstatus(c) != CONNECTION_OK) {
		T_OK(0, "connect to '%s': %s", url, PQerrorMessage(c));
		PQfinish(c);
		exit(t_done());
	}
	return c;
}

/* Runs sql on c; the first value of the first row (malloc'ed) or NULL. */
static char *sql(PGconn *c, const char *text)
{
	PGresult *r = PQexec(c, text);
	ExecStatusType st = PQresultStatus(r);
	char *v = NULL;

	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
		T_OK(0, "sql '%s': %s", text, PQresultErrorMessage(r));
	else if (st == PGRES_TUPLES_OK && PQntuples(r) && !PQgetisnull(r, 0, 0))
		v = au_strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static long sql_int(PGconn *c, const char *text)
{
	char *v = sql(c, text);
	long n = v ? strtol(v, NULL, 10) : -1;

	free(v);
	return n;
}

/* A fresh database; its URL (malloc'ed) points at it. */
static char *fresh_db(void)
{
	char name[64], cmd[128];

	snprintf(name, sizeof(name), "au_mig_%016llx", (unsigned long long)au_random64());
	snprintf(cmd, sizeof(cmd), "CREATE DATABASE %s", name);
	free(sql(admin, cmd));
	return au_asprintf("postgres://%s@%s:%d/%s", server.user ? server.user : "postgres",
			   server.host, server.port ? server.port : 5432, name);
}

static void drop_db(char *url)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "DROP DATABASE %s WITH (FORCE)", strrchr(url, '/') + 1);
	free(sql(admin, cmd));
	free(url);
}

static int db_version(const char *url)
{
	struct au_err err;
	int db = -1, bin = -1;

	if (au_pg_schema_version(url, &db, &bin, &err) < 0)
		T_OK(0, "schema version of '%s': %s", url, err.str);
	return db;
}

static int has_table(PGconn *c, const char *table)
{
	char q[128], *v;
	int yes;

	snprintf(q, sizeof(q), "SELECT to_regclass('%s') IS NOT NULL", table);
	v = sql(c, q);
	yes = v && *v == 't';
	free(v);
	return yes;
}

/* The error of opening a queue and a store on url: 0 when both open. */
static int open_error(const char *url, char *msg, size_t len)
{
	struct au_queue *q = au_queue_open(url);
	struct au_store *s = au_store_open(url);
	int code = q ? q->err.code : AU_ENOMEM;

	snprintf(msg, len, "%s", q ? q->err.str : "out of memory");
	if (!s || s->err.code != code || strcmp(s->err.str, msg))
		T_OK(0, "the store opens like the queue (%s)", s ? s->err.str : "oom");
	au_queue_close(q);
	au_store_close(s);
	return code;
}

/* A computation of queue "q" in the wire format, as a SQL bytea literal. */
static char *job_literal(struct au_computation *c, const char *queue)
{
	struct au_buf b = AU_BUF_INIT, hex = AU_BUF_INIT;
	struct au_err err;
	char *out;
	size_t i;

	au_computation_init(c);
	au_id_new(c->id);
	c->task = au_strdup("noop");
	c->queue = au_strdup(queue);
	c->max_attempts = 2;
	au_computation_encode(c, &b, &err);
	au_buf_puts(&hex, "'\\x");
	for (i = 0; i < b.len; i++)
		au_buf_printf(&hex, "%02x", b.data[i]);
	au_buf_puts(&hex, "'");
	out = (char *)au_buf_detach(&hex, NULL);
	au_buf_release(&b);
	return out;
}

/* ---- cases ---- */

static void test_fresh(void)
{
	char *url = fresh_db(), *printed = NULL;
	struct au_err err;
	size_t len;
	FILE *out;
	PGconn *c;

	EQ(db_version(url), 0, "fresh: no schema");
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate(url, 0, out, &err) == 0, "fresh: migrate (%s)", err.str);
	fclose(out);
	EQ(db_version(url), AU_PG_SCHEMA_VERSION, "fresh: at the latest version");
	T_OK(printed && strstr(printed, "migrated to v1: queue") &&
	     strstr(printed, "migrated to v4:") &&
	     strstr(printed, "migrated to v6: worker registry") &&
	     strstr(printed, "migrated to v7: the stories of computations") &&
	     strstr(printed, "migrated to v8: rate limits") &&
	     strstr(printed, "migrated to v9: the metrics of workers") &&
	     strstr(printed, "migrated to v10: flows: dependencies, the kv space"),
	     "fresh: every step reported");
	free(printed);
	c = connect_to(url);
	T_OK(has_table(c, "au_jobs") && has_table(c, "au_results") && has_table(c, "au_queues"),
	     "fresh: the tables exist");
	EQ(sql_int(c, "SELECT count(*) FROM pg_class WHERE relname = 'au_jobs'"
		   " AND 'fillfactor=50' = ANY(reloptions)"), 1, "fresh: au_jobs keeps room for updates (v4)");
	T_OK(has_table(c, "au_workers"), "fresh: the worker registry exists (v6)");
	EQ(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'au_jobs'"
		   " AND column_name = 'story' AND data_type = 'bytea' AND is_nullable = 'YES'"), 1,
	   "fresh: au_jobs keeps the stories (v7)");
	EQ(sql_int(c, "SELECT count(*) FROM pg_class WHERE relname = 'au_rate'"
		   " AND relpersistence = 'u'"), 1, "fresh: the rate limits' buckets, unlogged (v8)");
	EQ(sql_int(c, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'au_workers'"
		   " AND column_name = 'metrics' AND data_type = 'bytea' AND is_nullable = 'YES'"), 1,
	   "fresh: au_workers keeps the workers' metrics (v9)");
	T_OK(has_table(c, "au_deps") && has_table(c, "au_kv"), "fresh: au_deps and au_kv exist (v10)");
	EQ(sql_int(c, "SELECT count(*) FROM pg_proc WHERE proname = 'au_settle'"), 1,
	   "fresh: au_settle exists (v10)");
	EQ(sql_int(c, "SELECT count(*) - count(DISTINCT version) FROM au_schema_version"), 0,
	   "fresh: one version row per step");
	PQfinish(c);
	printed = NULL;
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate(url, 0, out, &err) == 0, "fresh: migrating again works");
	fclose(out);
	{
		char want[AU_ERRSTR_SIZE];

		snprintf(want, sizeof(want), "postgres schema of '%s' is already at v%d: nothing to do\n",
			 url, AU_PG_SCHEMA_VERSION);
		T_EQ_STR(printed, want, "... does nothing, and says so");
	}
	free(printed);
	drop_db(url);

	/* an empty database is migrated by the first open */
	url = fresh_db();
	{
		char msg[AU_ERRSTR_SIZE];

		EQ(open_error(url, msg, sizeof(msg)), AU_OK, "fresh: queue and store open an empty database");
	}
	EQ(db_version(url), AU_PG_SCHEMA_VERSION, "fresh: ... and migrate it");
	drop_db(url);
}

/* What `au migrate` prints and says it did (au_pg_migrate_report,
 * au_pg_migrate_all). */
static void test_report(void)
{
	char *url = fresh_db(), *printed = NULL, want[AU_ERRSTR_SIZE], *pw;
	int before = -1, after = -1;
	struct au_err err;
	size_t len;
	FILE *out;

	T_OK(au_pg_migrate_to(url, 1, 0, NULL, &err) == 0, "report: a database at v1 (%s)", err.str);
	T_OK(au_pg_migrate_report(url, 1, NULL, &before, &after, &err) == 0, "report: a dry run (%s)",
	     err.str);
	EQ(before, 1, "report: a dry run says v1 before");
	EQ(after, 1, "report: ... and v1 after (it changed nothing)");
	before = after = -1;
	T_OK(au_pg_migrate_report(url, 0, NULL, &before, &after, &err) == 0, "report: migrate (%s)",
	     err.str);
	EQ(before, 1, "report: v1 before");
	EQ(after, AU_PG_SCHEMA_VERSION, "report: the latest after");
	before = after = -1;
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate_report(url, 0, out, &before, &after, &err) == 0, "report: again (%s)", err.str);
	fclose(out);
	EQ(before, AU_PG_SCHEMA_VERSION, "report: again: the latest before");
	EQ(after, AU_PG_SCHEMA_VERSION, "report: again: the same after");
	snprintf(want, sizeof(want), "postgres schema of '%s' is already at v%d: nothing to do\n", url,
		 AU_PG_SCHEMA_VERSION);
	T_EQ_STR(printed, want, "report: again: says it is already there");
	free(printed);

	/* the whole `au migrate`: the queue's and the store's, once when the same */
	printed = NULL;
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate_all(url, url, 0, out, &err) == 0, "all: queue and store on one database (%s)",
	     err.str);
	fclose(out);
	T_EQ_STR(printed, want, "all: one database is migrated once");
	free(printed);
	printed = NULL;
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate_all("redis://127.0.0.1:1", "file:///tmp/x", 0, out, &err) == 0,
	     "all: neither on PostgreSQL is no error");
	fclose(out);
	T_EQ_STR(printed, "nothing to migrate: neither the queue 'redis://127.0.0.1:1' nor the store"
		 " 'file:///tmp/x' is on PostgreSQL\n", "all: and says so");
	free(printed);
	printed = NULL;
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate_all("redis://:s3cret@127.0.0.1:1", "memory://", 1, out, &err) == 0,
	     "all: a dry run likewise");
	fclose(out);
	T_OK(printed && strstr(printed, "nothing to migrate: neither the queue 'redis://:***@127.0.0.1:1'"),
	     "all: the password masked (%s)", printed ? printed : "nothing");
	T_OK(printed && !strstr(printed, "s3cret"), "all: never shown");
	free(printed);
	printed = NULL;
	out = open_memstream(&printed, &len);
	pw = au_asprintf("postgres://%s@127.0.0.1:1/none", "au:s3cret");
	T_OK(au_pg_migrate_all("redis://127.0.0.1:1", pw, 0, out, &err) < 0 && err.code != AU_OK,
	     "all: a store on PostgreSQL that is not there fails");
	T_OK(!strstr(err.str, "s3cret"), "all: the error hides the password (%s)", err.str);
	fclose(out);
	free(printed);
	free(pw);
	EQ(au_pg_url("postgresql://h/db") + au_pg_url("postgres://h/db") + au_pg_url("redis://h") +
	   au_pg_url(NULL), 2, "au_pg_url: postgres:// and postgresql://");
	drop_db(url);
}

static void test_dry_run(void)
{
	char *url = fresh_db(), *printed = NULL;
	struct au_err err;
	size_t len;
	FILE *out;
	PGconn *c;

	T_OK(au_pg_migrate_to(url, 1, 0, NULL, &err) == 0, "dry run: a database at v1 (%s)", err.str);
	out = open_memstream(&printed, &len);
	T_OK(au_pg_migrate(url, 1, out, &err) == 0, "dry run (%s)", err.str);
	fclose(out);
	T_OK(printed && strstr(printed, "-- database schema is at v1, this au expects v10") &&
	     strstr(printed, "CREATE TABLE au_results") && strstr(printed, "CREATE TABLE au_queues") &&
	     strstr(printed, "fillfactor = 50") && strstr(printed, "VALUES (8);\nCOMMIT;") &&
	     strstr(printed, "CREATE TABLE au_workers") &&
	     strstr(printed, "ADD COLUMN dead_at") &&
	     strstr(printed, "ADD COLUMN story bytea") &&
	     strstr(printed, "CREATE UNLOGGED TABLE au_rate") &&
	     strstr(printed, "ADD COLUMN metrics bytea") &&
	     strstr(printed, "CREATE TABLE au_deps") && strstr(printed, "VALUES (10);\nCOMMIT;") &&
	     !strstr(printed, "CREATE TABLE au_jobs"),
	     "dry run: prints the SQL of v2 to v10 only, v5 among them");
	free(printed);
	EQ(db_version(url), 1, "dry run: the version is unchanged");
	c = connect_to(url);
	T_OK(!has_table(c, "au_results") && !has_table(c, "au_queues"), "dry run: no table created");
	EQ(sql_int(c, "SELECT count(*) FROM au_schema_version"), 1, "dry run: one version row");
	PQfinish(c);
	drop_db(url);
}

static void test_upgrade(void)
{
	char *url = fresh_db(), *lit, *cmd, *migrate_url, msg[AU_ERRSTR_SIZE];
	struct au_computation c, d;
	struct au_queue *q;
	struct au_lease l[2];
	struct au_err err;
	char **names = NULL;
	size_t n = 0, nn = 0, i;
	PGconn *pc;

	T_OK(au_pg_migrate_to(url, 1, 0, NULL, &err) == 0, "upgrade: a database at v1 (%s)", err.str);
	pc = connect_to(url);
	lit = job_literal(&c, "old");
	cmd = au_asprintf("INSERT INTO au_jobs (id, queue, max_attempts, body) VALUES ('%s', 'old', 2, %s)",
			  c.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	free(lit);
	EQ(open_error(url, msg, sizeof(msg)), AU_ESTATE, "upgrade: an older schema is not used");
	T_EQ_STR(msg, "database schema is at v1, this au expects v10: run 'au migrate'",
		 "upgrade: the message");
	EQ(db_version(url), 1, "upgrade: opening changed nothing");

	migrate_url = au_asprintf("%s?migrate=1", url);
	q = au_queue_open(migrate_url);
	T_OK(q && !q->err.code, "upgrade: ?migrate=1 upgrades on open (%s)", q ? q->err.str : "oom");
	EQ(db_version(url), AU_PG_SCHEMA_VERSION, "upgrade: at the latest version");
	T_OK(q && au_queue_list(q, &names, &nn) == 0 && nn == 1 && !strcmp(names[0], "old"),
	     "upgrade: the queue of the old job is listed (v3 backfill)");
	for (i = 0; i < nn; i++)
		free(names[i]);
	free(names);
	if (q && !q->err.code && au_queue_lease(q, "old", 2, 30000, 0, l, &n) == 0 && n == 1) {
		T_OK(!strcmp(l[0].ref.id, c.id) && au_computation_decode(l[0].body, l[0].body_len, &d,
									  &err) == 0,
		     "upgrade: the job pushed at v1 is leased and decodes");
		T_OK(!l[0].story && !l[0].story_len, "upgrade: it has no story (v7)");
		au_computation_release(&d);
		au_lease_release(&l[0]);
	} else {
		T_OK(0, "upgrade: lease the old job (%s)", q ? q->err.str : "oom");
	}
	au_queue_close(q);
	free(migrate_url);
	au_computation_release(&c);
	PQfinish(pc);
	drop_db(url);

	/* the same from v2 with au_pg_migrate (what `au migrate` runs) */
	url = fresh_db();
	au_pg_migrate_to(url, 2, 0, NULL, &err);
	EQ(db_version(url), 2, "upgrade: a database at v2");
	T_OK(au_pg_migrate(url, 0, NULL, &err) == 0 && db_version(url) == AU_PG_SCHEMA_VERSION,
	     "upgrade: au migrate brings v2 to v10");
	T_OK(au_pg_migrate_to(url, 1, 0, NULL, &err) < 0 && err.code == AU_ESTATE,
	     "upgrade: no way back (%s)", err.str);
	drop_db(url);
}

/* v4 to v5: a dead row of v4 keeps its place among the dead letters, its
 * queue is not paused and its totals start at 0. */
static void test_v5(void)
{
	char *url = fresh_db(), *lit, *cmd;
	struct au_computation c;
	struct au_queue_stats st;
	struct au_dead d;
	struct au_queue *q;
	struct au_err err;
	size_t n = 0;
	PGconn *pc;

	T_OK(au_pg_migrate_to(url, 4, 0, NULL, &err) == 0, "v5: a database at v4 (%s)", err.str);
	pc = connect_to(url);
	lit = job_literal(&c, "old");
	cmd = au_asprintf("INSERT INTO au_queues (name) VALUES ('old');"
			  "INSERT INTO au_jobs (id, queue, state, attempts, error, body, created_at)"
			  " VALUES ('%s', 'old', 2, 3, 'died at v4', %s, 'epoch'::timestamptz"
			  " + interval '1000 s')", c.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	free(lit);
	T_OK(au_pg_migrate(url, 0, NULL, &err) == 0 && db_version(url) == AU_PG_SCHEMA_VERSION,
	     "v5: migrated (%s)",
	     err.str);
	EQ(sql_int(pc, "SELECT count(*) FROM pg_indexes WHERE indexname = 'au_jobs_dead'"
		   " AND indexdef ILIKE '%coalesce(dead_at, created_at)%'"), 1,
	   "v5: the dead letter index orders by when they died");
	q = au_queue_open(url);
	T_OK(q && !q->err.code, "v5: open (%s)", q ? q->err.str : "oom");
	if (q && !q->err.code) {
		T_OK(au_queue_dead(q, "old", NULL, 10, &d, &n) == 0 && n == 1, "v5: the old dead row is"
		     " listed (%s)", q->err.str);
		if (n == 1) {
			T_OK(!strcmp(d.id, c.id) && d.died_at_ms == 1000000 && d.attempts == 3 &&
			     !strcmp(d.reason, "died at v4"), "v5: its created_at stands in for when it"
			     " died (%llu)", (unsigned long long)d.died_at_ms);
			au_dead_release(&d);
		}
		memset(&st, 0, sizeof(st));
		T_OK(au_queue_stats(q, "old", &st) == 0 && st.dead == 1 && !st.paused &&
		     st.processed == 0 && st.failed == 0, "v5: stats of the old queue");
	}
	au_queue_close(q);
	au_computation_release(&c);
	PQfinish(pc);
	drop_db(url);
}

/* v9 to v10: rows pushed at v9 keep their state (no dependencies), and
 * the new parts work on the migrated database. */
static void test_v10(void)
{
	char *url = fresh_db(), *lit, *cmd;
	struct au_computation c, w;
	struct au_queued info;
	struct au_queue_stats st;
	struct au_queue *q;
	struct au_lease l[2];
	struct au_ref ref;
	struct au_err err;
	unsigned char *val = NULL;
	size_t n = 0, len = 0;
	int applied = 0, done = 0;
	PGconn *pc;

	T_OK(au_pg_migrate_to(url, 9, 0, NULL, &err) == 0, "v10: a database at v9 (%s)", err.str);
	pc = connect_to(url);
	lit = job_literal(&c, "old");
	cmd = au_asprintf("INSERT INTO au_queues (name) VALUES ('old');"
			  "INSERT INTO au_jobs (id, queue, max_attempts, body) VALUES ('%s', 'old', 2, %s)",
			  c.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	free(lit);
	T_OK(au_pg_migrate(url, 0, NULL, &err) == 0 && db_version(url) == AU_PG_SCHEMA_VERSION,
	     "v10: migrated (%s)", err.str);
	EQ(sql_int(pc, "SELECT count(*) FROM au_jobs WHERE state = 0 AND ndeps = 0"), 1,
	   "v10: the row of v9 is kept, waiting for nothing");
	q = au_queue_open(url);
	T_OK(q && !q->err.code, "v10: open (%s)", q ? q->err.str : "oom");
	if (q && !q->err.code) {
		char deps[1][AU_ID_SIZE];

		/* a computation pushed now waits for the one of v9 */
		au_computation_init(&w);
		au_id_new(w.id);
		w.task = au_strdup("noop");
		w.queue = au_strdup("old");
		memcpy(deps[0], c.id, AU_ID_SIZE);
		w.deps = deps;
		w.ndeps = 1;
		T_OK(au_queue_push(q, &w, 1) == 0, "v10: push with a dependency (%s)", q->err.str);
		T_OK(au_queue_peek(q, "old", w.id, &info) == 0 && info.state == AU_QUEUED_WAITING,
		     "v10: it waits");
		au_queued_release(&info);
		T_OK(au_queue_lease(q, "old", 2, 30000, 0, l, &n) == 0 && n == 1 &&
		     !strcmp(l[0].ref.id, c.id), "v10: only the old one is leased");
		if (n == 1) {
			ref = l[0].ref;
			au_lease_release(&l[0]);
			T_OK(au_queue_ack(q, "old", &ref, 1, &applied) == 0 && applied, "v10: acked");
		}
		T_OK(au_queue_peek(q, "old", w.id, &info) == 0 && info.state == AU_QUEUED_READY,
		     "v10: the ack made it ready");
		au_queued_release(&info);
		memset(&st, 0, sizeof(st));
		T_OK(au_queue_stats(q, "old", &st) == 0 && st.ready == 1 && st.waiting == 0,
		     "v10: stats");
		T_OK(au_queue_kv_put(q, "mig", "k", (const unsigned char *)"v", 1, 0, 1, &done) == 0 &&
		     done, "v10: kv_put (%s)", q->err.str);
		T_OK(au_queue_kv_get(q, "mig", "k", &val, &len) == 0 && len == 1 && val[0] == 'v',
		     "v10: kv_get");
		free(val);
		w.deps = NULL;
		w.ndeps = 0;
		au_computation_release(&w);
	}
	au_queue_close(q);
	au_computation_release(&c);
	PQfinish(pc);
	drop_db(url);
}

static void test_ahead(void)
{
	char *url = fresh_db(), msg[AU_ERRSTR_SIZE];
	const char *want = "database schema is at v11, this au expects v10: upgrade au";
	struct au_err err;
	PGconn *c;

	au_pg_migrate(url, 0, NULL, &err);
	c = connect_to(url);
	free(sql(c, "INSERT INTO au_schema_version (version) VALUES (11)"));
	EQ(open_error(url, msg, sizeof(msg)), AU_ESTATE, "ahead: the queue and the store refuse");
	T_EQ_STR(msg, want, "ahead: the message");
	T_OK(au_pg_schema_check(c, &err) < 0 && !strcmp(err.str, want), "ahead: schema check");
	T_OK(au_pg_migrate(url, 0, NULL, &err) < 0 && !strcmp(err.str, want), "ahead: migrate refuses");
	EQ(sql_int(c, "SELECT max(version) FROM au_schema_version"), 11, "ahead: left alone");
	PQfinish(c);
	drop_db(url);
}

/* Children wait for the parent to close the pipe, then run fn(url). */
static int race(const char *url, int n, int (*fn)(const char *url))
{
	int fds[2], ok = 0, i, status;
	pid_t pids[8];
	char b;

	if (pipe(fds) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			close(fds[1]);
			while (read(fds[0], &b, 1) > 0)
				;
			_exit(fn(url) == 0 ? 0 : 1);
		}
	}
	close(fds[0]);
	close(fds[1]);
	for (i = 0; i < n; i++)
		if (pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 0)
			ok++;
	return ok;
}

static int run_migrate(const char *url)
{
	struct au_err err;

	if (au_pg_migrate(url, 0, NULL, &err) == 0)
		return 0;
	fprintf(stderr, "migrate: %s\n", err.str);
	return -1;
}

static int run_open(const char *url)
{
	struct au_queue *q = au_queue_open(url);
	int rc = q && !q->err.code ? 0 : -1;

	if (rc)
		fprintf(stderr, "open: %s\n", q ? q->err.str : "oom");
	au_queue_close(q);
	return rc;
}

static void test_concurrent(void)
{
	char *url = fresh_db();
	PGconn *c;

	EQ(race(url, 6, run_migrate), 6, "concurrent: 6 processes migrate at once, all succeed");
	EQ(db_version(url), AU_PG_SCHEMA_VERSION, "concurrent: at the latest version");
	c = connect_to(url);
	EQ(sql_int(c, "SELECT count(*) - count(DISTINCT version) FROM au_schema_version"), 0,
	   "concurrent: each step applied once");
	PQfinish(c);
	drop_db(url);

	url = fresh_db();
	EQ(race(url, 6, run_open), 6, "concurrent: 6 processes open an empty database at once");
	EQ(db_version(url), AU_PG_SCHEMA_VERSION, "concurrent: ... which is migrated once");
	drop_db(url);
}

static void test_errors(void)
{
	const char *down = "postgres://postgres:secret@127.0.0.1:1/postgres";
	const char *want = "unable to connect to 'postgres://postgres:***@127.0.0.1:1/postgres': "
			   "connection refused";
	char msg[AU_ERRSTR_SIZE];
	struct au_err err;

	EQ(open_error(down, msg, sizeof(msg)), AU_ECONN, "errors: server down gives AU_ECONN");
	T_EQ_STR(msg, want, "errors: the message masks the password");
	T_OK(au_pg_migrate(down, 0, NULL, &err) < 0 && err.code == AU_ECONN && !strcmp(err.str, want),
	     "errors: migrate says the same");
	T_OK(au_pg_migrate("redis://127.0.0.1:1", 0, NULL, &err) < 0 && err.code == AU_EINVAL,
	     "errors: not a postgres url (%s)", err.str);
	EQ(open_error("postgres://127.0.0.1:1/x?nonsense=1", msg, sizeof(msg)), AU_ECONN,
	   "errors: libpq refuses an unknown parameter");
	T_OK(strstr(msg, "nonsense") != NULL, "errors: ... naming it (%s)", msg);
}

/* A producer in another language: plain SQL, as docs/postgres.md shows. */
static void test_plain_sql(void)
{
	char *url = fresh_db(), *lit, *cmd;
	struct au_computation c;
	struct au_record rec, out;
	struct au_queue *q = au_queue_open(url);
	struct au_store *s = au_store_open(url);
	struct au_lease l[2];
	uint64_t t0;
	size_t n = 0;
	PGconn *pc = connect_to(url);

	if (!T_OK(q && s && !q->err.code && !s->err.code, "plain sql: open"))
		goto out;
	lit = job_literal(&c, "reports");
	cmd = au_asprintf("BEGIN;"
			  " INSERT INTO au_queues (name) VALUES ('reports') ON CONFLICT DO NOTHING;"
			  " INSERT INTO au_jobs (id, queue, priority, max_attempts, body)"
			  " VALUES ('%s', 'reports', 0, 2, %s);"
			  " SELECT pg_notify('au_queue', 'reports');"
			  " COMMIT;", c.id, lit);
	/* the lease below blocks; the insert arrives 200 ms later */
	if (fork() == 0) {
		PGconn *p = connect_to(url);

		usleep(200000);
		free(sql(p, cmd));
		PQfinish(p);
		_exit(0);
	}
	t0 = au_mono_us();
	T_OK(au_queue_lease(q, "reports", 2, 30000, 5000, l, &n) == 0 && n == 1 &&
	     !strcmp(l[0].ref.id, c.id), "plain sql: a blocked lease gets the inserted job");
	T_OK(au_mono_us() - t0 < 1500000, "plain sql: woken by the notification (%llu ms)",
	     (unsigned long long)(au_mono_us() - t0) / 1000);
	wait(NULL);
	free(cmd);
	free(lit);

	au_record_init(&rec);
	memcpy(rec.id, c.id, AU_ID_SIZE);
	rec.status = AU_COMPLETED;
	rec.ttl_s = 60;
	T_OK(au_store_put(s, &rec, 1, NULL) == 0, "plain sql: the worker's result is stored");
	cmd = au_asprintf("SELECT length(record) FROM au_results WHERE id = '%s' AND expires_at > now()",
			  c.id);
	T_OK(sql_int(pc, cmd) > 0, "plain sql: and reads back with SELECT");
	free(cmd);
	au_record_init(&out);
	T_OK(au_store_get(s, c.id, &out) == 0 && out.status == AU_COMPLETED, "plain sql: get");
	au_record_release(&out);
	if (n)
		au_lease_release(&l[0]);
	au_computation_release(&c);
out:
	PQfinish(pc);
	au_queue_close(q);
	au_store_close(s);
	drop_db(url);
}

/* Ends every other session on the database of url (what a restart does to
 * the clients). */
static void kill_sessions(PGconn *c)
{
	long n = sql_int(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
			 " WHERE datname = current_database() AND pid <> pg_backend_pid()");

	T_OK(n > 0, "reconnect: terminated %ld sessions", n);
	usleep(100000);
}

struct wakes {
	struct event_base *base;
	int calls;
};

static void on_wake(void *arg)
{
	struct wakes *w = arg;

	w->calls++;
	event_base_loopbreak(w->base);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* Runs the loop until a wake or ms pass; 1 if woken. (Not loopexit: its
 * timer would outlive a loop broken early.) */
static int woken_within(struct wakes *w, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event *t = evtimer_new(w->base, on_timeout, w->base);
	int before = w->calls;

	evtimer_add(t, &tv);
	event_base_dispatch(w->base);
	event_free(t);
	return w->calls > before;
}

static void test_reconnect(void)
{
	char *url = fresh_db();
	struct au_queue *q = au_queue_open(url), *other = au_queue_open(url);
	struct au_store *s = au_store_open(url);
	struct wakes w = { event_base_new(), 0 };
	struct au_computation c;
	struct au_record rec, out;
	struct au_lease l[2];
	PGconn *pc = connect_to(url);
	size_t n = 0;
	int applied = 0;

	if (!T_OK(q && other && s && !q->err.code && !other->err.code && !s->err.code,
		  "reconnect: open"))
		goto out;
	T_OK(au_queue_watch(q, "r", w.base, on_wake, &w) == 0, "reconnect: watch (%s)", q->err.str);
	T_OK(woken_within(&w, 1000), "reconnect: the first wake");
	au_computation_init(&c);
	au_id_new(c.id);
	c.task = au_strdup("noop");
	c.queue = au_strdup("r");
	T_OK(au_queue_push(q, &c, 1) == 0, "reconnect: push");
	T_OK(woken_within(&w, 1000), "reconnect: the push wakes the watch");

	kill_sessions(pc);
	T_OK(au_queue_lease(q, "r", 2, 30000, 0, l, &n) == 0 && n == 1,
	     "reconnect: the queue reconnects and leases (%s)", q->err.str);
	kill_sessions(pc);
	T_OK(n == 1 && au_queue_ack(q, "r", &l[0].ref, 1, &applied) == 0 && applied == 1,
	     "reconnect: and acks after another drop (%s)", q->err.str);
	au_record_init(&rec);
	memcpy(rec.id, c.id, AU_ID_SIZE);
	rec.status = AU_COMPLETED;
	rec.ttl_s = 60;
	T_OK(au_store_put(s, &rec, 1, NULL) == 0, "reconnect: the store reconnects (%s)", s->err.str);
	au_record_init(&out);
	T_OK(au_store_wait(s, c.id, 1000, &out) == 0, "reconnect: wait finds the record");
	au_record_release(&out);

	/* the watch's connection died with the others: it comes back by
	 * itself, wakes once, and then wakes on pushes again */
	T_OK(woken_within(&w, 3000), "reconnect: the watch reconnects and wakes");
	au_computation_release(&c);
	au_computation_init(&c);
	au_id_new(c.id);
	c.task = au_strdup("noop");
	c.queue = au_strdup("r");
	T_OK(au_queue_push(other, &c, 1) == 0, "reconnect: push from another handle (%s)",
	     other->err.str);
	T_OK(woken_within(&w, 1000), "reconnect: the watch wakes on it");
	au_queue_unwatch(q);
	if (n)
		au_lease_release(&l[0]);
	au_computation_release(&c);
out:
	PQfinish(pc);
	event_base_free(w.base);
	au_queue_close(q);
	au_queue_close(other);
	au_store_close(s);
	drop_db(url);
}

/* ---- ack_store: which store is in the queue's database ---- */

/* 1 if ack_store on q takes a store at store_url (0 records, nothing sent),
 * 0 if AU_ESTATE; the message of the refusal to msg. */
static int takes_store(struct au_queue *q, const char *store_url, char *msg, size_t len)
{
	int rc = au_queue_ack_store(q, "q", store_url, NULL, NULL, 0, NULL);

	snprintf(msg, len, "%s", rc < 0 ? q->err.str : "");
	if (rc < 0 && q->err.code != AU_ESTATE)
		T_OK(0, "ack_store on '%s': %s", store_url, q->err.str);
	return rc == 0;
}

static void test_ack_store_where(void)
{
	char *url = fresh_db(), *other = fresh_db(), *u, msg[AU_ERRSTR_SIZE], want[AU_ERRSTR_SIZE];
	const char *path = strrchr(url, '/') + 1;
	struct au_queue *q = au_queue_open(url);
	struct au_url a, b;
	struct au_err err;

	if (!T_OK(q && !q->err.code, "ack_store: open (%s)", q ? q->err.str : "oom"))
		goto out;
	T_OK(takes_store(q, url, msg, sizeof(msg)), "ack_store: the queue's own URL");
	u = au_asprintf("postgresql://%s@%s:%d/%s?application_name=results&connect_timeout=3",
			server.user ? server.user : "postgres", server.host, server.port, path);
	T_OK(takes_store(q, u, msg, sizeof(msg)), "ack_store: postgresql://, another application name");
	free(u);
	T_OK(!takes_store(q, other, msg, sizeof(msg)), "ack_store: another database is AU_ESTATE");
	snprintf(want, sizeof(want), "result store '%s' is not in the database of queue '%s'", other,
		 url);
	T_EQ_STR(msg, want, "ack_store: the message");
	u = au_asprintf("%s?options=-c%%20search_path%%3Delsewhere", url);
	T_OK(!takes_store(q, u, msg, sizeof(msg)), "ack_store: another search_path is AU_ESTATE");
	free(u);
	u = au_asprintf("postgres://someone:secret@%s:%d/%s", server.host, server.port, path);
	T_OK(!takes_store(q, u, msg, sizeof(msg)), "ack_store: another user is AU_ESTATE");
	T_OK(strstr(msg, "postgres://someone:***@") && !strstr(msg, "secret"),
	     "ack_store: the password is masked (%s)", msg);
	free(u);
	T_OK(!takes_store(q, "redis://127.0.0.1:6379", msg, sizeof(msg)) &&
	     !takes_store(q, "file:///tmp/au-results", msg, sizeof(msg)),
	     "ack_store: stores of other kinds are AU_ESTATE");
	T_OK(takes_store(q, url, msg, sizeof(msg)), "ack_store: its own again (the answer is per URL)");

	/* the rule itself */
	T_OK(au_url_parse("postgres://u@H:5/d?sslmode=require&application_name=x", &a, &err) == 0 &&
	     au_url_parse("postgresql://u:pw@h:5/d?application_name=y&sslmode=require", &b, &err) == 0,
	     "ack_store: parse");
	T_OK(au_pg_same_database(&a, &b), "same database: host case, password, order, application_name");
	au_url_release(&b);
	au_url_parse("postgres://u@h:5/d", &b, &err);
	T_OK(!au_pg_same_database(&a, &b), "not the same: a libpq parameter on one side only");
	au_url_release(&b);
	au_url_parse("postgres://u@h/d?sslmode=require", &b, &err);
	T_OK(!au_pg_same_database(&a, &b), "not the same: a port on one side only (unsure)");
	au_url_release(&a);
	au_url_release(&b);
out:
	au_queue_close(q);
	drop_db(url);
	drop_db(other);
}

/* ---- bounded waiters: at most K idle watches of a queue listen ---- */

enum { WATCHES = 5 };

struct fleet {
	struct event_base *base;
	struct au_queue *q[WATCHES];
	int wakes[WATCHES];
};

static struct fleet *woken_fleet;

static void on_fleet_wake(void *arg)
{
	woken_fleet->wakes[(int)(intptr_t)arg]++;
}

/* Runs f's loop for ms. */
static void fleet_run(struct fleet *f, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/* How many watches a push to queue "w" wakes (within 300 ms). */
static int fleet_push(struct fleet *f, struct au_queue *pusher)
{
	struct au_computation c;
	int i, woken = 0;

	fleet_run(f, 50);
	memset(f->wakes, 0, sizeof(f->wakes));
	au_computation_init(&c);
	au_id_new(c.id);
	c.task = au_strdup("noop");
	c.queue = au_strdup("w");
	if (au_queue_push(pusher, &c, 1) < 0)
		T_OK(0, "watchers: push (%s)", pusher->err.str);
	au_computation_release(&c);
	fleet_run(f, 300);
	for (i = 0; i < WATCHES; i++)
		woken += f->wakes[i] > 0;
	return woken;
}

static long slots_held(PGconn *c)
{
	return sql_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
		       " AND granted AND database = (SELECT oid FROM pg_database"
		       " WHERE datname = current_database())");
}

static void test_watchers(void)
{
	char *url = fresh_db(), *u;
	struct fleet f = { event_base_new(), { NULL }, { 0 } };
	struct au_queue *pusher = au_queue_open(url), *bad;
	PGconn *pc = connect_to(url);
	int i, holder = -1;

	woken_fleet = &f;
	for (i = 0; i < WATCHES; i++) {
		f.q[i] = au_queue_open(url);
		T_OK(f.q[i] && !f.q[i]->err.code &&
		     au_queue_watch(f.q[i], "w", f.base, on_fleet_wake, (void *)(intptr_t)i) == 0,
		     "watchers: watch %d (%s)", i, f.q[i] ? f.q[i]->err.str : "oom");
	}
	fleet_run(&f, 100);
	for (i = 0; i < WATCHES; i++)
		T_OK(f.wakes[i] >= 1, "watchers: watch %d woke once watching", i);
	EQ(slots_held(pc), 2, "watchers: 2 slots held (the default)");
	EQ(fleet_push(&f, pusher), 2, "watchers: a push wakes 2 of 5 watches");
	for (i = 0; i < WATCHES && holder < 0; i++)
		if (f.wakes[i])
			holder = i;

	/* a paused watch gives its slot to one that waits */
	au_queue_watch_pause(f.q[holder], 1);
	memset(f.wakes, 0, sizeof(f.wakes));
	fleet_run(&f, 1500);
	EQ(f.wakes[holder], 0, "watchers: the paused one is not woken");
	T_OK(f.wakes[0] + f.wakes[1] + f.wakes[2] + f.wakes[3] + f.wakes[4] == 1,
	     "watchers: another takes its slot and wakes once");
	EQ(fleet_push(&f, pusher), 2, "watchers: a push still wakes 2");
	EQ(f.wakes[holder], 0, "watchers: ... not the paused one");
	au_queue_watch_pause(f.q[holder], 0);
	fleet_run(&f, 1500);
	EQ(slots_held(pc), 2, "watchers: resumed, still 2 slots held");

	/* slots die with their sessions, and are taken again */
	kill_sessions(pc);
	fleet_run(&f, 3500);
	EQ(slots_held(pc), 2, "watchers: after the sessions were killed, 2 slots again");
	EQ(fleet_push(&f, pusher), 2, "watchers: ... and a push wakes 2");

	/* an unwatched slot is taken by another */
	for (i = 0; i < WATCHES; i++)
		if (f.wakes[i]) {
			au_queue_unwatch(f.q[i]);
			break;
		}
	fleet_run(&f, 1500);
	EQ(fleet_push(&f, pusher), 2, "watchers: one unwatched, a push still wakes 2");
	for (i = 0; i < WATCHES; i++)
		au_queue_close(f.q[i]);

	/* watchers=K */
	u = au_asprintf("%s?watchers=1", url);
	for (i = 0; i < 3; i++)
		if ((f.q[i] = au_queue_open(u)))
			au_queue_watch(f.q[i], "w", f.base, on_fleet_wake, (void *)(intptr_t)i);
	fleet_run(&f, 100);
	EQ(fleet_push(&f, pusher), 1, "watchers=1: a push wakes 1 of 3");
	for (i = 0; i < 3; i++)
		au_queue_close(f.q[i]);
	free(u);
	u = au_asprintf("%s?watchers=0", url);
	bad = au_queue_open(u);
	T_OK(bad && bad->err.code == AU_EINVAL && strstr(bad->err.str, "watchers must be 1 to"),
	     "watchers=0: refused (%s)", bad ? bad->err.str : "oom");
	au_queue_close(bad);
	free(u);
	au_queue_close(pusher);
	PQfinish(pc);
	event_base_free(f.base);
	drop_db(url);
}

/*
 * Rows a buggy plain-SQL producer could write: the lease dead-letters the
 * ones it cannot count an attempt of, with the reason, and leases the good
 * one behind them in the same call (max 1: the bad rows take no place);
 * a leased row with no deadline is rescued; run_at at either infinity
 * makes no statement fail; peek, stats and cancel read every row.
 */
/* The state of id, or minus the error code. */
static int peek(struct au_queue *q, const char *queue, const char *id, struct au_queued *info)
{
	int st;

	memset(info, 0, sizeof(*info));
	st = au_queue_peek(q, queue, id, info) < 0 ? -q->err.code : (int)info->state;
	au_queued_release(info);
	return st;
}

static void test_bad_rows(void)
{
	char *url = fresh_db(), *lit, *cmd, *v;
	struct au_computation c, w;
	struct au_queue *q = au_queue_open(url);
	struct au_queue_stats st;
	struct au_queued info;
	struct au_lease l[2];
	size_t n = 0, requeued, buried;
	PGconn *pc = connect_to(url);

	if (!T_OK(q && !q->err.code, "bad rows: open"))
		goto out;
	lit = job_literal(&c, "r");
	cmd = au_asprintf("INSERT INTO au_jobs (id, queue, attempts, max_attempts, run_at, body) VALUES"
			  " ('11111111111111111111111111111111', 'r', 2147483647, 3, now() - interval '2 s', %s),"
			  " ('22222222222222222222222222222222', 'r', -1, 3, now() - interval '1 s', %s),"
			  " ('%s', 'r', 0, 2, now(), %s)", lit, lit, c.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	T_OK(au_queue_lease(q, "r", 1, 30000, 0, l, &n) == 0 && n == 1 && !strcmp(l[0].ref.id, c.id),
	     "bad rows: one lease of 1 passes both bad rows and leases the good one (%s)",
	     q->err.str);
	if (n)
		au_lease_release(&l[0]);
	v = sql(pc, "SELECT state || ' ' || error FROM au_jobs WHERE id = '11111111111111111111111111111111'");
	T_EQ_STR(v, "2 malformed computation: attempts 2147483647 out of range",
		 "bad rows: attempts 2147483647 dead-lettered, with the reason");
	free(v);
	v = sql(pc, "SELECT state || ' ' || error FROM au_jobs WHERE id = '22222222222222222222222222222222'");
	T_EQ_STR(v, "2 malformed computation: attempts -1 out of range", "bad rows: so is -1");
	free(v);
	T_OK(au_queue_peek(q, "r", "22222222222222222222222222222222", &info) == 0 &&
	     info.state == AU_QUEUED_DEAD && info.attempts == 0,
	     "bad rows: peek reads it (dead, attempts shown as 0)");
	au_queued_release(&info);
	T_OK(au_queue_stats(q, "r", &st) == 0 && st.dead == 2, "bad rows: stats count the two dead");

	/* leased by hand, with neither deadline nor token: rescued */
	lit = (free(lit), job_literal(&w, "r"));
	cmd = au_asprintf("INSERT INTO au_jobs (id, queue, state, attempts, max_attempts, body)"
			  " VALUES ('%s', 'r', 1, 1, 3, %s)", w.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	T_OK(au_queue_rescue(q, "r", 10, &requeued, &buried) == 0 && requeued == 1,
	     "bad rows: a leased row without a deadline is rescued (%s)", q->err.str);
	EQ(peek(q, "r", w.id, &info), AU_QUEUED_READY, "bad rows: it is ready again");
	T_OK(au_queue_cancel(q, "r", w.id) == 0, "bad rows: and cancels");

	/* run_at at the infinities: due at once, and never */
	cmd = au_asprintf("UPDATE au_jobs SET state = 0, run_at = 'infinity' WHERE id = '%s';"
			  " INSERT INTO au_jobs (id, queue, run_at, body) VALUES ('%s', 'r', '-infinity', %s)",
			  c.id, w.id, lit);
	free(sql(pc, cmd));
	free(cmd);
	T_OK(au_queue_lease(q, "r", 2, 30000, 0, l, &n) == 0 && n == 1 && !strcmp(l[0].ref.id, w.id),
	     "bad rows: run_at -infinity is due (%s)", q->err.str);
	if (n)
		au_lease_release(&l[0]);
	T_OK(au_queue_lease(q, "r", 2, 30000, 100, l, &n) == 0 && n == 0,
	     "bad rows: a blocking lease with run_at infinity waiting fails not (%s)", q->err.str);
	EQ(peek(q, "r", c.id, &info), AU_QUEUED_SCHEDULED, "bad rows: infinity is scheduled");
	T_OK(au_queue_cancel(q, "r", c.id) == 0, "bad rows: and cancels");
	free(lit);
	au_computation_release(&c);
	au_computation_release(&w);
out:
	PQfinish(pc);
	au_queue_close(q);
	drop_db(url);
}

int main(void)
{
	struct au_err err;
	const char *url = t_env("AU_TEST_PG");

	signal(SIGPIPE, SIG_IGN);
	if (au_url_parse(url, &server, &err) < 0) {
		T_OK(0, "AU_TEST_PG '%s': %s", url, err.str);
		return t_done();
	}
	admin = connect_to(url);
	test_fresh();
	test_dry_run();
	test_report();
	test_upgrade();
	test_v5();
	test_v10();
	test_ahead();
	test_concurrent();
	test_errors();
	test_plain_sql();
	test_reconnect();
	test_ack_store_where();
	test_watchers();
	test_bad_rows();
	PQfinish(admin);
	au_url_release(&server);
	return t_done();
}
