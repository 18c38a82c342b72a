#!/usr/bin/env bash
# t_pg.sh - the CLI on PostgreSQL: `au migrate` (dry run, apply, refusal of
# an outdated schema) and a computation's life on a postgres:// queue and
# store. Needs AU_BIN and AU_TEST_PG (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
db="au_cli_$RANDOM$RANDOM"
psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" || exit 1
url="${AU_TEST_PG%/*}/$db"
export AU_QUEUE=$url AU_STORE=$url AU_CLICKHOUSE=${AU_TEST_CH:-http://127.0.0.1:1/default}
version() { psql -tAq "$url" -c "SELECT max(version) FROM au_schema_version" 2>/dev/null; }

out=$("$au" migrate --dry-run 2>&1); rc=$?
t_eq "dry run exits 0" "$rc" 0
t_match "dry run prints the SQL" "$out" "CREATE TABLE"
t_eq "dry run changes nothing" "$(psql -tAq "$url" -c "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'au_%'")" 0
"$au" migrate >/dev/null 2>&1
t_eq "migrate exits 0" "$?" 0
t_eq "schema at the latest version" "$(version)" 10
t_match "migrating again has nothing to do" "$("$au" migrate --dry-run 2>&1)" "(up to date|nothing|v10)"
out=$("$au" migrate 2>&1); rc=$?
t_eq "a second migrate says the schema is already there" "$rc $out" \
	"0 postgres schema of '$url' is already at v10: nothing to do"

"$au" worker --quiet --retry-base 50ms 2>/dev/null &
wpid=$!
id=$("$au" enqueue au.echo --args '{"on":"postgres"}')
t_eq "a computation runs on postgres://" "$("$au" wait "$id" --timeout 10000ms)" '{"on":"postgres"}'
id=$("$au" enqueue au.fail --max-attempts 2 --args '{"message":"nope","retryable":true}')
t_match "retries on postgres://" "$("$au" wait "$id" --timeout 10000ms --json 2>&1)" '"status":"failed".*"attempts":2'
id=$("$au" enqueue au.echo --delay 600000ms)
t_eq "cancel on postgres://" "$("$au" cancel "$id")" cancelled
kill -TERM $wpid; wait $wpid
t_eq "worker stops with 0" "$?" 0

psql -q "$url" -c "UPDATE au_schema_version SET version = 99 WHERE version = (SELECT max(version) FROM au_schema_version)"
out=$("$au" enqueue au.echo 2>&1); rc=$?
t_match "a newer schema is refused" "$out" "database schema is at v99, this au expects v10: upgrade au"
t_ok "refused with a failure exit" [ "$rc" -ne 0 ]
psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1
t_done
