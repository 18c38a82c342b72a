/*
 * ch_migrate.h - the versioned ClickHouse schema of au's own tables
 * (au_operation_log) and its migrations (docs/clickhouse.md, "Migrations").
 *
 * ClickHouse has no transactions, so au_schema_version records each step
 * twice: 'started' before it runs, 'done' after. Every step is written so
 * that running it again after a crash anywhere in it is safe; a rerun
 * starts at the first step without 'done'. There is no dirty state.
 */
#ifndef AU_CH_MIGRATE_H
#define AU_CH_MIGRATE_H

#include <stdio.h>

#include "clickhouse.h"

/* The schema version this build reads and writes. */
#define AU_CH_SCHEMA_VERSION 4

/* Brings the server's schema to AU_CH_SCHEMA_VERSION (at most target when
 * target > 0). With dry_run, prints each pending step's strategy and SQL to
 * out and sends nothing but reads. Progress lines go to out (may be NULL).
 * A schema newer than this build is AU_ESTATE (au_ch_schema_check's text).
 * Test hook: AU_CH_MIGRATE_DIE_AFTER=V.S makes the process _exit(9) right
 * after step S of version V ran, before its 'done' row is written. */
int au_ch_migrate(struct au_clickhouse *ch, int target, int dry_run, FILE *out,
		  struct au_err *err);
/* *version: the highest version whose steps are all done (0: none). */
int au_ch_schema_version(struct au_clickhouse *ch, int *version, struct au_err *err);
/* 0 when the schema is at AU_CH_SCHEMA_VERSION, else -1 with AU_ESTATE:
 * "your ClickHouse schema is at v3, this au expects v4: run 'au migrate
 * --clickhouse'" or "your ClickHouse schema is at v6, newer than this au
 * (v4): upgrade au". */
int au_ch_schema_check(struct au_clickhouse *ch, struct au_err *err);
/* *version as au_ch_schema_version, *newest the highest version with any
 * step done (above *version when one is half applied, or newer than au). */
int au_ch_schema_state(struct au_clickhouse *ch, int *version, int *newest, struct au_err *err);

#endif
