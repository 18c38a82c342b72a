#!/usr/bin/env bash
# t_outage.sh - an outage is not the computation's fault: ClickHouse stopped
# for 5 s mid-run, then a worker with wrong ClickHouse credentials. On each
# queue backend: every computation completes with its value once the
# server is back, on its first counted attempt, none dead-lettered; the
# worker says what is down and when it is back.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG (tests/run.sh sets them); starts
# a ClickHouse of its own at AU_PORT_BASE + 32..34 to stop and start.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
base=${AU_PORT_BASE:-17300}
queues="$AU_TEST_REDIS $AU_TEST_PG"
# a ClickHouse of our own (servers.sh stops it on exit)
AU_PORT_BASE=$((base + 30)) . "$(dirname "$0")/servers.sh"
AU_PORT_BASE=$((base + 30)) servers_start ch || { echo "# 0 passed, 1 failed"; exit 1; }
ch=$AU_TEST_CH
chdir=$AU_TEST_TMP/ch
wpid=
cleanup() { [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; servers_stop; }
trap cleanup EXIT
export AU_STORE=$AU_TEST_REDIS
N=60

ch_stop() { # the server's own process, found by its config
	pkill -KILL -f "config-file=$chdir/config.xml"
	t_until 20 sh -c "! curl -sf http://127.0.0.1:$AU_TEST_CH_PORT/ping >/dev/null"
}
ch_start() {
	(cd "$chdir" && exec $_au_run_as /usr/sbin/clickhouse-server --config-file="$chdir/config.xml" \
		>>"$chdir/log/stdout.log" 2>&1) &
	_au_pids+=($!)
	t_until 30 sh -c "curl -sf http://127.0.0.1:$AU_TEST_CH_PORT/ping | grep -q Ok"
}
dead_count() { "$au" queues --json | grep -o "\"queue\":\"$1\"[^}]*\"dead\":[0-9]*" | grep -o '[0-9]*$'; }
log_has() { grep -q -- "$2" "$1"; }
# every id of file $1 completed with attempts 1 and value = its number
all_done() { # ids file, queue
	local i id out bad=0
	while read -r i id; do
		out=$("$au" result "$id" --queue "$2" --json 2>/dev/null)
		printf '%s' "$out" | grep -q "\"attempts\":1,.*\"rows\":\[\[$i\]\]" || bad=$((bad + 1))
	done <"$1"
	[ "$bad" = 0 ]
}
pending_all() { # ids file, queue: none has an outcome
	local i id
	while read -r i id; do
		case $("$au" status "$id" --queue "$2" 2>/dev/null) in
		pending|running) ;;
		*) return 1 ;;
		esac
	done <"$1"
}

for qurl in $queues; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_outage.XXXXXX")
	export AU_QUEUE=$qurl

	# --- ClickHouse stopped for 5 s mid-run, default retry settings
	Q=o$RANDOM$RANDOM
	export Q au
	# "i id" per line; four at a time (a PostgreSQL client connects each time)
	seq 0 $((N - 1)) | xargs -P 4 -I{} sh -c \
		'echo {} $("$au" enqueue ch.query --queue "$Q" --args "{\"sql\":\"SELECT sleep(0.1) * 0 + {}\"}")' \
		>"$dir/ids"
	AU_CLICKHOUSE=$ch "$au" worker --queue "$Q" --concurrency 2 >/dev/null 2>"$dir/w.log" &
	wpid=$!
	t_until 20 grep -q "attempt=1/.* completed" "$dir/w.log"
	ch_stop
	t_ok "$b: clickhouse stopped: the worker says so and pauses" \
		t_until 10 log_has "$dir/w.log" "a server the tasks need is unavailable, leasing paused until it is back: .*'$ch'"
	sleep 5
	ch_start
	t_ok "$b: clickhouse back: the worker says so" \
		t_until 20 log_has "$dir/w.log" "a server the tasks need is back after [0-9.]* s, leasing again"
	t_until 60 sh -c "[ \$(grep -c 'attempt=1/.* completed' '$dir/w.log') -ge $N ]"
	t_ok "$b: every computation completes with its value, on its first counted attempt" \
		all_done "$dir/ids" "$Q"
	t_eq "$b: none dead-lettered" "$(dead_count "$Q")" 0
	t_eq "$b: none failed" "$(grep -c "attempt=[0-9/]* failed" "$dir/w.log")" 0
	kill -TERM "$wpid"; wait "$wpid"; wpid=

	# --- wrong ClickHouse credentials: nothing fails, the worker says why
	Q=o$RANDOM$RANDOM
	bad=$(printf '%s' "$ch" | sed 's#://#://au:wrong-pw@#')
	for i in 0 1 2; do
		echo "$i $("$au" enqueue ch.query --queue "$Q" --args "{\"sql\":\"SELECT $i\"}")"
	done >"$dir/ids"
	# (past the start-up checks, which would refuse these credentials
	# outright, as the password of a running fleet can change: t_startup.sh)
	AU_CLICKHOUSE=$bad "$au" worker --queue "$Q" --skip-check clickhouse >/dev/null 2>"$dir/bad.log" &
	wpid=$!
	t_ok "$b: wrong password: the worker says why" \
		t_until 10 log_has "$dir/bad.log" "unavailable, leasing paused until it is back: .*clickhouse error 193 at 'http://au:\*\*\*@"
	t_ok "$b: wrong password: the password is not logged" sh -c "! grep -q wrong-pw '$dir/bad.log'"
	sleep 1
	t_ok "$b: wrong password: no computation has an outcome" pending_all "$dir/ids" "$Q"
	t_eq "$b: wrong password: none dead-lettered" "$(dead_count "$Q")" 0
	kill -TERM "$wpid"; wait "$wpid"
	t_eq "$b: wrong password: the worker still stops cleanly" $? 0
	wpid=
	AU_CLICKHOUSE=$ch "$au" worker --queue "$Q" --idle-exit 1000ms >/dev/null 2>"$dir/good.log" &
	wpid=$!
	wait "$wpid"; wpid=
	t_ok "$b: right password: all complete, on their first counted attempt" \
		all_done "$dir/ids" "$Q"
done
t_done
