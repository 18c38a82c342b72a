#!/usr/bin/env bash
# t_loop.sh - the worker's loop never waits on its queue or store: with the
# queue's Redis stopped (SIGSTOP) while computations run and their leases
# are due for a heartbeat, the running ones still end on time, and all are
# written back once the server continues. Starts a Redis of its own on
# AU_PORT_BASE + 11 (it is stopped); the store is a file store.
# Needs AU_BIN, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_loop.XXXXXX")
port=$((${AU_PORT_BASE:-17300} + 11))
rpid= wpid=
cleanup() {
	[ -n "$rpid" ] && kill -CONT "$rpid" 2>/dev/null
	[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
	[ -n "$rpid" ] && kill -KILL "$rpid" 2>/dev/null
	wait 2>/dev/null
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
	--logfile "$dir/redis.log" &
rpid=$!
t_until 10 redis-cli -p "$port" ping >/dev/null 2>&1
export AU_QUEUE="redis://127.0.0.1:$port" AU_STORE="file://$dir/store" \
	AU_CLICKHOUSE=$AU_TEST_CH
Q=loop$RANDOM
ids=
for i in 1 2 3 4; do
	ids="$ids $("$au" enqueue au.sleep --queue "$Q" --args '{"ms":1500}')"
done
running() { "$au" queues --json | grep -q "\"queue\":\"$Q\",.*\"running\":4"; }
# a heartbeat every second: the first one after the stop would wait for
# the server, and with it every timer of a loop that calls it
"$au" worker --queue "$Q" --concurrency 4 --lease 3000ms --quiet 2>"$dir/worker.log" &
wpid=$!
t_ok "the four computations are running" t_until 10 running
sleep 0.2
kill -STOP "$rpid"
sleep 2.5
kill -CONT "$rpid"
n=0 late=0
for id in $ids; do
	out=$("$au" wait "$id" --queue "$Q" --timeout 15000ms --json 2>&1) && n=$((n + 1))
	s=$(printf '%s' "$out" | grep -o '"started_at":[0-9]*' | grep -o '[0-9]*$' | head -1)
	f=$(printf '%s' "$out" | grep -o '"finished_at":[0-9]*' | grep -o '[0-9]*$' | head -1)
	ms=$((${f:-0} - ${s:-0}))
	echo "# $id ran $ms ms"
	{ [ "$ms" -ge 1400 ] && [ "$ms" -lt 2000 ]; } || late=$((late + 1))
done
t_eq "all four complete once the server continues" "$n" 4
t_eq "each ran its 1500 ms while the queue's server was stopped" "$late" 0
kill -TERM "$wpid"; wait "$wpid"
t_eq "the worker exits 0" "$?" 0
wpid=
t_done
