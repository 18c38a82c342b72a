#!/usr/bin/env bash
# t_ch_migrate.sh - `au migrate --clickhouse` against the real ClickHouse:
# from nothing; --dry-run writes nothing; from v1 with rows kept; the
# migrator killed after each step of v4's shadow rebuild
# (AU_CH_MIGRATE_DIE_AFTER, a test hook) and rerun to a correct table
# with no duplicate rows; a newer schema refused.
# Needs AU_BIN, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_CLICKHOUSE=$AU_TEST_CH AU_QUEUE=memory://
ch() { curl -sS "$AU_TEST_CH" --data-binary "$1"; }
reset() { for t in au_operation_log au_operation_log__shadow au_operation_log__old_v4 au_schema_version; do ch "DROP TABLE IF EXISTS $t"; done; }
tables() { ch "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() ORDER BY name"; ch "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, name"; }
final="day Date,at_ms UInt64,operation String,inputs Array(String),output String,computation String,flow String,attempt UInt32,sql String,rows UInt64"
cols() { ch "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'au_operation_log'" | tr '\t' ' ' | paste -sd, -; }

reset
before=$(tables)
out=$("$au" migrate --clickhouse --dry-run)
t_eq "--dry-run writes nothing" "$(tables)" "$before"
t_match "--dry-run prints the rebuild's swap" "$out" "v4 step 3 \\(rebuild\\): swap"
t_match "--dry-run prints the callback's SQL" "$out" "\\(callback\\).*"
t_ok "from nothing" "$au" migrate --clickhouse
t_eq "the final columns" "$(cols)" "$final"
t_eq "ordered by flow, output, at_ms" "$(ch "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'au_operation_log'")" "flow, output, at_ms"
t_eq "current: nothing to do" "$("$au" migrate --clickhouse)" "nothing to do: clickhouse schema is at v4"

for die in 1.1 2.1 3.1 4.1 4.2 4.3 4.4; do
	reset
	AU_CH_MIGRATE_DIE_AFTER=1.1 "$au" migrate --clickhouse >/dev/null 2>&1
	ch "INSERT INTO au_operation_log (day, at_ms, operation, inputs, output, computation, flow, attempt, sql) VALUES ('2026-01-02', 5, 'add', ['a','b'], 'p_x', 'c1', '', 1, 'SELECT 1'), ('2026-01-03', 6, 'sum', [], 'p_y', 'c2', 'f1', 2, 'SELECT 2')"
	AU_CH_MIGRATE_DIE_AFTER=$die "$au" migrate --clickhouse >/dev/null 2>&1
	t_eq "killed after $die: exit 9" "$?" 9
	"$au" migrate --clickhouse >/dev/null 2>&1
	t_eq "killed after $die, rerun: rows kept, no duplicates, backfilled" \
		"$(ch "SELECT output, flow, rows, inputs FROM au_operation_log ORDER BY output" | tr '\t\n' ' ;')" \
		"p_x c1 0 ['a','b'];p_y f1 0 [];"
	t_eq "killed after $die, rerun: final columns" "$(cols)" "$final"
	t_eq "killed after $die, rerun: no shadow or old table left" \
		"$(ch "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'au_operation_log__%'")" 0
done

ch "INSERT INTO au_schema_version (version, step, name, strategy, state, sql) VALUES (6, 1, 'x', 'alter', 'done', '')"
out=$("$au" migrate --clickhouse 2>&1)
t_eq "a newer schema refused" "$?:$out" "1:au: your ClickHouse schema is at v6, newer than this au (v4): upgrade au"
out=$("$au" worker --queue chm --store memory:// --idle-exit 1s 2>&1)
rc=$?
t_ok "a worker refuses a newer schema (exit $rc)" test "$rc" -ne 0
t_match "saying why" "$out" "your ClickHouse schema is at v6, newer than this au \(v4\): upgrade au"
reset
out=$("$au" worker --queue chm --store memory:// --idle-exit 1s 2>&1)
t_eq "a worker on a ClickHouse au never migrated runs (exit 0)" "$?" 0
t_match "and names the command" "$out" "your ClickHouse schema is at v0, this au expects v4: run 'au migrate --clickhouse'"
reset

# the lock lives in the queue's kv space: on Redis, shared by every migrator
export AU_QUEUE=$AU_TEST_REDIS
rcli() { redis-cli -p "$AU_TEST_REDIS_PORT" "$@" >/dev/null; }
rcli SET au:kv:lock:ch_migrate "db7:4242:1767225600" PX 60000
rcli ZADD au:kv:lock 0 ch_migrate
out=$("$au" migrate --clickhouse 2>&1)
t_eq "held by another migrator: exit 1, naming it" "$?:$out" \
	"1:au: clickhouse migration is held by db7:4242 since 2026-01-01T00:00:00Z: try again when it is done"
t_eq "and nothing was applied" "$(ch "EXISTS TABLE au_operation_log")" 0
# one of this host whose process is gone is taken over
sleep 0.1 & dead=$!; wait $dead
rcli SET au:kv:lock:ch_migrate "$(hostname):$dead:1767225600" PX 60000
out=$("$au" migrate --clickhouse 2>&1)
t_eq "a lock left by a dead migrator of this host: taken over, applied" "$?" 0
t_match "saying so" "$out" "taking over the clickhouse migration lock of $(hostname):$dead, which is gone"
t_eq "the lock let go after" "$(redis-cli -p "$AU_TEST_REDIS_PORT" EXISTS au:kv:lock:ch_migrate)" 0
# two at once: one applies, the other waits for nothing and says who holds it, or finds it done
reset
"$au" migrate --clickhouse >"$AU_TEST_TMP/m1.out" 2>&1 & m1=$!
"$au" migrate --clickhouse >"$AU_TEST_TMP/m2.out" 2>&1 & m2=$!
wait $m1; r1=$?; wait $m2; r2=$?
both="$r1:$(cat "$AU_TEST_TMP/m1.out") | $r2:$(cat "$AU_TEST_TMP/m2.out")"
t_match "two migrators at once: one applied (v4)" "$both" "migrated|applied|v4 step 4"
case $both in *"held by"*|*"nothing to do"*) t_ok "the other held off or found nothing to do" true ;; *) t_ok "the other held off or found nothing to do: $both" false ;; esac
t_eq "two migrators at once: the final columns" "$(cols)" "$final"
t_eq "one version row set: each step done once" \
	"$(ch "SELECT count() FROM au_schema_version WHERE state = 'done'")" \
	"$(ch "SELECT count() FROM (SELECT DISTINCT version, step FROM au_schema_version)")"
reset
t_done
