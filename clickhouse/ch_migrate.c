/*
 * ch_migrate.c - au's ClickHouse schema and its migrations (ch_migrate.h).
 *
 * Steps, in order, each with its strategy:
 * - alter: one DDL statement, skipped when its effect is already there
 *   (18.16 has no ADD COLUMN IF NOT EXISTS).
 * - callback: C code moving data with ALTER UPDATE; it counts as done only
 *   once system.mutations says its mutations are done (they are
 *   asynchronous).
 * - rebuild: a shadow table: create <t>__shadow, copy (INSERT ... SELECT,
 *   after emptying the shadow, so a rerun never duplicates rows), verify
 *   the counts, swap with RENAME (no EXCHANGE on 18.16's Ordinary
 *   databases) keeping the old table as <t>__old_vN, verify, drop it.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ch_migrate.h"

#define LOG "au_operation_log"
#define SHADOW LOG "__shadow"
#define OLD LOG "__old_v4"

#define VERSION_TABLE \
	"CREATE TABLE IF NOT EXISTS au_schema_version (version UInt32, step UInt32, name String,\n" \
	"  strategy String, state String, at DateTime DEFAULT now(), sql String)\n" \
	"ENGINE = MergeTree ORDER BY (version, step)"

struct step;
typedef int (*step_fn)(struct au_clickhouse *ch, const struct step *s, struct au_err *err);

static const struct step {
	int version, step;
	const char *name, *strategy, *sql;
	step_fn fn;     /* NULL: run sql */
} steps[];

/* ---- requests ---- */

/* Runs sql; the answer (trailing newline cut) into *ans when not NULL. */
static int run(struct au_clickhouse *ch, const char *sql, char **ans, struct au_err *err)
{
	struct au_ch_query q = { .sql = sql };
	struct au_ch_response r;
	int rc = au_ch_query_sync(ch, &q, &r);

	if (rc < 0) {
		*err = r.err;
	} else if (ans) {
		size_t n = r.body.len;

		if (n && r.body.data[n - 1] == '\n')
			n--;
		*ans = au_asprintf("%.*s", (int)n, n ? (char *)r.body.data : "");
		if (!*ans)
			rc = au_seterr(err, AU_ENOMEM, "out of memory");
	}
	au_ch_response_release(&r);
	return rc;
}

static int count_of(struct au_clickhouse *ch, const char *sql, long long *n, struct au_err *err)
{
	char *a;

	if (run(ch, sql, &a, err) < 0)
		return -1;
	*n = atoll(a);
	free(a);
	return 0;
}

/* Whether table t (a constant name of ours) exists in the URL's database. */
static int exists(struct au_clickhouse *ch, const char *t, int *yes, struct au_err *err)
{
	char sql[256];
	long long n;

	snprintf(sql, sizeof(sql), "SELECT count() FROM system.tables WHERE database = "
		 "currentDatabase() AND name = '%s'", t);
	if (count_of(ch, sql, &n, err) < 0)
		return -1;
	*yes = n > 0;
	return 0;
}

static int record(struct au_clickhouse *ch, const struct step *s, const char *state,
		  struct au_err *err)
{
	struct au_buf b = { 0 };
	int rc = -1;

	if (au_buf_printf(&b, "INSERT INTO au_schema_version (version, step, name, strategy, state, "
			  "sql) VALUES (%d, %d, ", s->version, s->step) >= 0 &&
	    au_sql_quote(&b, s->name, strlen(s->name)) >= 0 && au_buf_puts(&b, ", ") >= 0 &&
	    au_sql_quote(&b, s->strategy, strlen(s->strategy)) >= 0 && au_buf_puts(&b, ", ") >= 0 &&
	    au_sql_quote(&b, state, strlen(state)) >= 0 && au_buf_puts(&b, ", ") >= 0 &&
	    au_sql_quote(&b, s->sql, strlen(s->sql)) >= 0 && au_buf_puts(&b, ")") >= 0 &&
	    au_buf_reserve(&b, 1) >= 0) {
		b.data[b.len] = '\0';
		rc = run(ch, (char *)b.data, NULL, err);
	} else {
		au_seterr(err, AU_ENOMEM, "out of memory");
	}
	au_buf_release(&b);
	return rc;
}

/* ---- the steps that are code ---- */

static int add_rows(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	long long n;

	if (count_of(ch, "SELECT count() FROM system.columns WHERE database = currentDatabase() "
		     "AND table = '" LOG "' AND name = 'rows'", &n, err) < 0)
		return -1;
	return n ? 0 : run(ch, s->sql, NULL, err);
}

/* Waits until no mutation of table t is left undone. */
static int mutations_wait(struct au_clickhouse *ch, const char *t, struct au_err *err)
{
	char sql[256];
	long long n;

	snprintf(sql, sizeof(sql), "SELECT count() FROM system.mutations WHERE database = "
		 "currentDatabase() AND table = '%s' AND is_done = 0", t);
	for (;;) {
		if (count_of(ch, sql, &n, err) < 0)
			return -1;
		if (!n)
			return 0;
		usleep(100 * 1000);
	}
}

/* An UPDATE whose WHERE leaves done rows alone: sent again after a crash
 * it changes nothing more. Done when its mutation is. */
static int backfill_flow(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	if (mutations_wait(ch, LOG, err) < 0 || run(ch, s->sql, NULL, err) < 0)
		return -1;
	return mutations_wait(ch, LOG, err);
}

static int create_shadow(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	if (run(ch, "DROP TABLE IF EXISTS " SHADOW, NULL, err) < 0)
		return -1;
	return run(ch, s->sql, NULL, err);
}

/* Empties the shadow first: a copy cut short is copied again, whole. */
static int copy(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	long long a, b;
	int yes;

	if (exists(ch, SHADOW, &yes, err) < 0)
		return -1;
	if (!yes)
		return au_seterr(err, AU_ESTATE, "clickhouse migration v4: " SHADOW " is missing");
	if (run(ch, "TRUNCATE TABLE " SHADOW, NULL, err) < 0 || run(ch, s->sql, NULL, err) < 0 ||
	    count_of(ch, "SELECT count() FROM " LOG, &a, err) < 0 ||
	    count_of(ch, "SELECT count() FROM " SHADOW, &b, err) < 0)
		return -1;
	if (a != b)
		return au_seterr(err, AU_ESTATE, "clickhouse migration v4: " LOG " has %lld rows, its"
				 " copy %lld: something writes to it (stop older workers), then run"
				 " 'au migrate --clickhouse' again", a, b);
	return 0;
}

/* Finds where a swap cut short stopped from the tables that exist. */
static int swap(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	int log, shadow, old;

	if (exists(ch, LOG, &log, err) < 0 || exists(ch, SHADOW, &shadow, err) < 0 ||
	    exists(ch, OLD, &old, err) < 0)
		return -1;
	if (log && !shadow && old)
		return 0;    /* swapped */
	if (!log && shadow && old)
		return run(ch, "RENAME TABLE " SHADOW " TO " LOG, NULL, err);
	if (log && shadow && !old)
		return run(ch, s->sql, NULL, err);
	return au_seterr(err, AU_ESTATE, "clickhouse migration v4: unexpected tables (" LOG " %s, "
			 SHADOW " %s, " OLD " %s)", log ? "exists" : "missing",
			 shadow ? "exists" : "missing", old ? "exists" : "missing");
}

static int drop_old(struct au_clickhouse *ch, const struct step *s, struct au_err *err)
{
	long long a, b;
	int old;

	if (exists(ch, OLD, &old, err) < 0)
		return -1;
	if (!old)
		return 0;
	if (count_of(ch, "SELECT count() FROM " LOG, &a, err) < 0 ||
	    count_of(ch, "SELECT count() FROM " OLD, &b, err) < 0)
		return -1;
	if (a < b)
		return au_seterr(err, AU_ESTATE, "clickhouse migration v4: " LOG " has %lld rows, "
				 OLD " %lld: kept", a, b);
	return run(ch, s->sql, NULL, err);
}

static const struct step steps[] = {
	{ 1, 1, "the operation log", "alter",
	  "CREATE TABLE IF NOT EXISTS " LOG " (day Date, at_ms UInt64, operation String,\n"
	  "  inputs Array(String), output String, computation String, flow String,\n"
	  "  attempt UInt32, sql String)\n"
	  "ENGINE = MergeTree(day, (output, at_ms), 8192)", NULL },
	{ 2, 1, "rows: the output's count", "alter",
	  "ALTER TABLE " LOG " ADD COLUMN rows UInt64", add_rows },
	{ 3, 1, "a computation outside a flow is its own flow", "callback",
	  "ALTER TABLE " LOG " UPDATE flow = computation WHERE flow = ''\n"
	  "-- then wait for system.mutations is_done", backfill_flow },
	{ 4, 1, "create the shadow ordered by (flow, output, at_ms)", "rebuild",
	  "CREATE TABLE " SHADOW " (day Date, at_ms UInt64, operation String,\n"
	  "  inputs Array(String), output String, computation String, flow String,\n"
	  "  attempt UInt32, sql String, rows UInt64)\n"
	  "ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (flow, output, at_ms)",
	  create_shadow },
	{ 4, 2, "copy into the shadow, verify the counts", "rebuild",
	  "INSERT INTO " SHADOW " SELECT day, at_ms, operation, inputs, output, computation,\n"
	  "  flow, attempt, sql, rows FROM " LOG, copy },
	{ 4, 3, "swap", "rebuild",
	  "RENAME TABLE " LOG " TO " OLD ", " SHADOW " TO " LOG, swap },
	{ 4, 4, "verify the counts, drop the old table", "rebuild",
	  "DROP TABLE " OLD, drop_old },
};

/* ---- versions ---- */

/* The done steps, from au_schema_version: *version the highest version
 * whose steps are all done, *newest the highest version with any done. */
static int state(struct au_clickhouse *ch, int *version, int *newest, int *done_n,
		 struct au_err *err)
{
	char *a, *line, *save = NULL;
	int yes, done[AU_ARRAY_SIZE(steps)] = { 0 };
	size_t i;

	*version = *newest = 0;
	if (done_n)
		*done_n = 0;
	if (exists(ch, "au_schema_version", &yes, err) < 0)
		return -1;
	if (!yes)
		return 0;
	if (run(ch, "SELECT DISTINCT version, step FROM au_schema_version WHERE state = 'done'",
		&a, err) < 0)
		return -1;
	for (line = strtok_r(a, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int v = 0, st = 0;

		if (sscanf(line, "%d\t%d", &v, &st) != 2)
			continue;
		if (v > *newest)
			*newest = v;
		for (i = 0; i < AU_ARRAY_SIZE(steps); i++)
			if (steps[i].version == v && steps[i].step == st)
				done[i] = 1;
	}
	free(a);
	for (i = 0; i < AU_ARRAY_SIZE(steps) && done[i]; i++)
		if (i + 1 == AU_ARRAY_SIZE(steps) || steps[i + 1].version != steps[i].version)
			*version = steps[i].version;
	if (done_n)
		*done_n = (int)i;
	return 0;
}

static int newer_error(struct au_err *err, int newest)
{
	return au_seterr(err, AU_ESTATE, "your ClickHouse schema is at v%d, newer than this au (v%d):"
			 " upgrade au", newest, AU_CH_SCHEMA_VERSION);
}

int au_ch_schema_version(struct au_clickhouse *ch, int *version, struct au_err *err)
{
	int newest;

	return state(ch, version, &newest, NULL, err);
}

int au_ch_schema_state(struct au_clickhouse *ch, int *version, int *newest, struct au_err *err)
{
	return state(ch, version, newest, NULL, err);
}

int au_ch_schema_check(struct au_clickhouse *ch, struct au_err *err)
{
	int version, newest;

	if (state(ch, &version, &newest, NULL, err) < 0)
		return -1;
	if (newest > AU_CH_SCHEMA_VERSION)
		return newer_error(err, newest);
	if (version < AU_CH_SCHEMA_VERSION)
		return au_seterr(err, AU_ESTATE, "your ClickHouse schema is at v%d, this au expects v%d:"
				 " run 'au migrate --clickhouse'", version, AU_CH_SCHEMA_VERSION);
	return 0;
}

static int die_after(const struct step *s)
{
	const char *e = getenv("AU_CH_MIGRATE_DIE_AFTER");
	int v, st;

	return e && sscanf(e, "%d.%d", &v, &st) == 2 && v == s->version && st == s->step;
}

int au_ch_migrate(struct au_clickhouse *ch, int target, int dry_run, FILE *out,
		  struct au_err *err)
{
	int version, newest, first;
	size_t i;

	if (target <= 0 || target > AU_CH_SCHEMA_VERSION)
		target = AU_CH_SCHEMA_VERSION;
	if (state(ch, &version, &newest, &first, err) < 0)
		return -1;
	if (newest > AU_CH_SCHEMA_VERSION)
		return newer_error(err, newest);
	if (version >= target) {
		if (out)
			fprintf(out, "nothing to do: clickhouse schema is at v%d\n", version);
		return 0;
	}
	if (dry_run && out)
		fprintf(out, "-- clickhouse schema is at v%d, this au expects v%d\n", version, target);
	else if (!dry_run && run(ch, VERSION_TABLE, NULL, err) < 0)
		return -1;
	for (i = (size_t)first; i < AU_ARRAY_SIZE(steps) && steps[i].version <= target; i++) {
		const struct step *s = &steps[i];

		if (dry_run) {
			if (out)
				fprintf(out, "\n-- v%d step %d (%s): %s\n%s;\n", s->version, s->step,
					s->strategy, s->name, s->sql);
			continue;
		}
		if (record(ch, s, "started", err) < 0 ||
		    (s->fn ? s->fn(ch, s, err) : run(ch, s->sql, NULL, err)) < 0)
			return -1;
		if (die_after(s))
			_exit(9);
		if (record(ch, s, "done", err) < 0)
			return -1;
		if (out)
			fprintf(out, "v%d step %d (%s): %s: done\n", s->version, s->step, s->strategy,
				s->name);
	}
	if (!dry_run && out)
		fprintf(out, "migrated clickhouse schema to v%d\n", target);
	return 0;
}
