#!/usr/bin/env bash
# t_startup.sh - the worker's start-up checks: the block it prints (version,
# masked URLs, queue, processes, tasks); a queue, a store or a ClickHouse
# that does not answer, and a ClickHouse that refuses the password or knows
# no such database, each refused with exit 5 and a message naming the part
# and its URL, also with --processes before any child starts;
# --wait-for-servers waits for a server and starts once it is up.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets
# them); starts a Redis of its own on AU_PORT_BASE + 22.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_startup.XXXXXX")
wport=$((${AU_PORT_BASE:-17300} + 22))
chport=${AU_TEST_CH_PORT:-${AU_TEST_CH##*:}}
chport=${chport%%/*}
pgbase=${AU_TEST_PG%/*}
wpid= rpid=
cleanup() {
	[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
	[ -n "$rpid" ] && kill -KILL "$rpid" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$dir/store" AU_CLICKHOUSE=$AU_TEST_CH
Q=s$$

# --- the block, with the password masked
out=$("$au" worker --queue "$Q" --processes 2 --concurrency 3 --idle-exit 300ms \
	--clickhouse "http://au:au-secret@127.0.0.1:$chport/default" 2>&1); rc=$?
t_eq "checks pass: the fleet runs and exits 0" "$rc" 0
t_match "block: the version" "$out" "info: au [0-9]+\.[0-9]+\.[0-9]+ \(wire format v1\) worker"
t_match "block: the queue url" "$out" "queue +$AU_TEST_REDIS"
t_match "block: the store url" "$out" "store +file://$dir/store"
t_match "block: clickhouse, password masked, and its version" "$out" \
	"clickhouse +http://au:\*\*\*@127.0.0.1:$chport/default \(version [0-9.]+\)"
t_ok "block: the password itself is never printed" sh -c "! printf '%s' \"\$1\" | grep -q au-secret" _ "$out"
t_match "block: the queues served" "$out" "queues +$Q"
t_match "block: processes and concurrency" "$out" "processes +2 x concurrency 3, supervised"
t_match "block: the tasks" "$out" "tasks +au\.noop au\.echo au\.sleep au\.fail ch\.query ch\.exec ch\.insert"

refused() { # name, expected message (regex), worker args...
	local name=$1 want=$2 t0 ms
	shift 2
	t0=$(date +%s%N)
	out=$(timeout 20 "$au" worker --queue "$Q" "$@" 2>&1); rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	t_eq "$name: exit 5" "$rc" 5
	t_match "$name: the message" "$out" "^au: unable to start the worker: $want"
	t_ok "$name: at once ($ms ms)" test "$ms" -lt 5000
}
refused "queue down" "queue: unable to connect to 'redis://127.0.0.1:1': connection refused" \
	--queue-url redis://127.0.0.1:1
refused "queue on postgres down" \
	"queue: unable to connect to 'postgres://postgres@127.0.0.1:1/postgres': connection refused" \
	--queue-url postgres://postgres@127.0.0.1:1/postgres
refused "queue: unknown postgres user, password masked" \
	"queue: unable to connect to 'postgres://nobody_here:\*\*\*@${pgbase#postgres://*@}/postgres': role \"nobody_here\" does not exist" \
	--queue-url "postgres://nobody_here:pw@${pgbase#postgres://*@}/postgres"
refused "store down" "store: unable to connect to 'redis://127.0.0.1:1': connection refused" \
	--store-url redis://127.0.0.1:1
refused "store: unknown postgres database" \
	"store: unable to connect to '$pgbase/no_such_db': database \"no_such_db\" does not exist" \
	--store-url "$pgbase/no_such_db"
refused "clickhouse down" "clickhouse: unable to connect to 'http://127.0.0.1:1/default': connection refused" \
	--clickhouse http://127.0.0.1:1/default
refused "clickhouse: wrong password" \
	"clickhouse error (193|516) at 'http://au:\*\*\*@127.0.0.1:$chport/default': .*(password|Authentication failed)" \
	--clickhouse "http://au:wrong@127.0.0.1:$chport/default"
t_ok "clickhouse: wrong password: not printed" sh -c "! printf '%s' \"\$1\" | grep -q wrong@" _ "$out"
refused "clickhouse: unknown database" \
	"clickhouse error 81 at 'http://127.0.0.1:$chport/no_such_db': .*no_such_db" \
	--clickhouse "http://127.0.0.1:$chport/no_such_db"
refused "with --processes: refused before any child starts" \
	"clickhouse: unable to connect to 'http://127.0.0.1:1/default'" \
	--processes 2 --clickhouse http://127.0.0.1:1/default
t_ok "with --processes: no child started" sh -c "! printf '%s' \"\$1\" | grep -q 'on queue'" _ "$out"
out=$("$au" worker --queue "$Q" --idle-exit 200ms --skip-check clickhouse \
	--clickhouse http://127.0.0.1:1/default 2>&1); rc=$?
t_eq "--skip-check clickhouse: starts without it" "$rc" 0
t_match "--skip-check clickhouse: and says so" "$out" "clickhouse +http://127.0.0.1:1/default \(not checked\)"
out=$("$au" worker --skip-check postgres 2>&1); rc=$?
t_eq "--skip-check of no such part: usage error" "$rc" 2

# --- --wait-for-servers: waits, logging what for, then starts
"$au" worker --queue "$Q" --processes 2 --wait-for-servers --queue-url "redis://127.0.0.1:$wport" \
	2>"$dir/wait.log" &
wpid=$!
waits() { grep -c "waiting for queue: unable to connect to 'redis://127.0.0.1:$wport'" "$dir/wait.log"; }
at_least() { [ "$($1)" -ge "$2" ]; }
t_ok "wait: it waits for the queue, and says so" t_until 10 at_least waits 2
t_match "wait: with a growing delay" "$(cat "$dir/wait.log")" "next try in 1000 ms"
t_ok "wait: no child meanwhile" test "$(pgrep -P "$wpid" | wc -l)" = 0
redis-server --port "$wport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
	--logfile "$dir/redis.log" &
rpid=$!
children() { pgrep -P "$wpid" | wc -l; }
is() { [ "$($1)" = "$2" ]; }
t_ok "wait: it starts once the server is up" t_until 20 is children 2
id=$(AU_QUEUE="redis://127.0.0.1:$wport" "$au" enqueue au.echo --queue "$Q" --args '{"w":1}')
t_eq "wait: and runs computations" \
	"$(AU_QUEUE="redis://127.0.0.1:$wport" "$au" wait "$id" --queue "$Q" --timeout 10000ms)" '{"w":1}'
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "wait: the fleet stops with 0" "$rc" 0
kill -KILL "$rpid"; wait "$rpid" 2>/dev/null; rpid=
"$au" worker --queue "$Q" --wait-for-servers --clickhouse http://127.0.0.1:1/default 2>"$dir/wait2.log" &
wpid=$!
t_ok "wait: for clickhouse too" t_until 10 grep -q "waiting for clickhouse: unable to connect" "$dir/wait2.log"
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "wait: SIGTERM while waiting stops it with 0" "$rc" 0

[ "$_t_fail" = 0 ] && rm -rf "$dir"
t_done
