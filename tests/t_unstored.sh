#!/usr/bin/env bash
# t_unstored.sh - a result that cannot be stored is never acked: while the
# store is down the worker keeps the outcome, leases nothing more, and
# writes it once the store is back, without running it again; a store that
# refuses the record for good sends it to the dead letter set with the
# reason, and the on_error hooks hear of that second outcome
# (docs/architecture.md).
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them); starts a Redis of
# its own for the store, on AU_PORT_BASE + 10.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_unstored.XXXXXX")
sport=$((${AU_PORT_BASE:-17300} + 10))
spid=
wpid=
cleanup() {
	[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
	[ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT
export AU_QUEUE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
q() { echo "u$RANDOM$RANDOM"; }
worker() { # queue, log: a worker with the logging middleware, sets $wpid
	"$au" worker --queue "$1" --retry-base 100ms >/dev/null 2>>"$2" &
	wpid=$!
}
stop_worker() { kill -TERM "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; wpid=; }
store_up() {
	redis-server --port "$sport" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --maxmemory-policy noeviction --logfile "$dir/store.log" &
	spid=$!
	t_until 10 redis-cli -p "$sport" ping >/dev/null
}
dead_count() { "$au" queues --json | grep -o "\"queue\":\"$1\"[^}]*\"dead\":[0-9]*" | grep -o '[0-9]*$'; }
log_has() { grep -q -- "$2" "$1"; }

# --- the store is down: the outcome is kept and written once it is back;
# nothing is re-run, nothing more is leased meanwhile
Q=$(q)
export AU_STORE="redis://127.0.0.1:$sport"
store_up
worker "$Q" "$dir/down.log"
id=$("$au" enqueue au.echo --queue "$Q" --max-attempts 8 --args '{"n":1}')
t_ok "store up: the first computation completes" \
	t_until 10 log_has "$dir/down.log" "$id .* completed"
kill -KILL "$spid"; wait "$spid" 2>/dev/null; spid=
# the client opens a store too: this one needs none
id=$(AU_STORE=memory:// "$au" enqueue au.echo --queue "$Q" --max-attempts 8 --args '{"n":2}')
t_ok "store down: the task's own outcome is heard" \
	t_until 10 log_has "$dir/down.log" "$id .*attempt=1/8 completed"
t_ok "store down: the worker says the store is away and stops leasing" \
	t_until 10 log_has "$dir/down.log" "the result store is unavailable, leasing paused until it is back: .*'redis://127.0.0.1:$sport'"
id2=$(AU_STORE=memory:// "$au" enqueue au.echo --queue "$Q" --max-attempts 8 --args '{"n":3}')
sleep 1
t_eq "store down: what is enqueued meanwhile waits in the queue" \
	"$(AU_STORE=memory:// "$au" status "$id2" --queue "$Q")" pending
store_up
out=$("$au" wait "$id" --queue "$Q" --timeout 15000ms --json 2>&1)
t_match "store back: the kept result is stored" "$out" '"status":"completed"'
t_match "store back: from its first attempt, not run again" "$out" '"attempts":1,'
t_match "store back: with its result" "$out" '"result":\{"n":2\}'
t_eq "store back: it ran once" "$(grep -c "$id .*attempt=" "$dir/down.log")" 1
t_ok "store back: the worker says so and leases again" \
	t_until 5 log_has "$dir/down.log" "the result store is back after [0-9.]* s, leasing again"
out=$("$au" wait "$id2" --queue "$Q" --timeout 15000ms --json 2>&1)
t_match "store back: what waited runs, on its first attempt" "$out" '"attempts":1,.*"result":\{"n":3\}'
t_eq "store down: nothing was dead-lettered" "$(dead_count "$Q")" 0
stop_worker

# --- the store refuses the record for good: dead letter with the reason
Q=$(q)
export AU_STORE="file://$dir/files"
worker "$Q" "$dir/gone.log"
id=$("$au" enqueue au.echo --queue "$Q" --args '{"n":3}')
t_eq "file store: a first result is stored" \
	"$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" '{"n":3}'
# The worker holds the directory open; once it is gone no record can be
# linked into it, and trying again would not help.
rm -rf "$dir/files"
id=$("$au" enqueue au.echo --queue "$Q" --max-attempts 3 --args '{"n":4}')
t_ok "store refuses: the computation is dead-lettered" t_until 10 test "$(dead_count "$Q")" = 1
# the worker writes its log lines together, within 50 ms: wait for them
t_ok "store refuses: on_error hears it failed, with the reason" \
	t_until 5 log_has "$dir/gone.log" "$id .*attempt=1/3 failed.*result not stored: "
t_until 5 sh -c "[ \"\$(grep -c '$id .*attempt=' '$dir/gone.log')\" -ge 2 ]"
t_eq "store refuses: it ran once" "$(grep -c "$id .*attempt=" "$dir/gone.log")" 2
stop_worker

t_done
