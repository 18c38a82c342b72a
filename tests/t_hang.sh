#!/usr/bin/env bash
# t_hang.sh - a hanging ClickHouse query (a count over numbers() of 10^11
# rows, which ClickHouse can interrupt; 18.16 cannot interrupt sleep()), on
# each queue backend.
# - With a 1 s timeout: ClickHouse stops it (max_execution_time), the worker
#   aborts its request and kills it by its query_id, so it is gone from
#   system.processes within a second; then it is retried or failed as its
#   on_timeout says.
# - Cancelled while it runs: the cancel reaches the worker that runs it
#   (Redis pub/sub, PostgreSQL NOTIFY), its query is gone within a second,
#   the record is CANCELLED and no late result overwrites it.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_hang.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
hang='{"sql":"SELECT count() FROM numbers(100000000000)"}'
running() { # id: its queries still in system.processes
	curl -sf "$AU_TEST_CH" --data-binary \
		"SELECT count() FROM system.processes WHERE query_id LIKE '$1-%'"
}
runs_now() { [ "$(running "$1")" -ge 1 ] 2>/dev/null; }
status_is() { [ "$("$au" status "$1" --queue "$2")" = "$3" ]; }

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=t$RANDOM$RANDOM
	"$au" worker --queue "$Q" --retry-base 100ms >/dev/null 2>"$dir/$b.log" &
	wpid=$!

	# on_timeout fail: one attempt, failed, the query gone
	id=$("$au" enqueue ch.query --queue "$Q" --args "$hang" --timeout 1000ms --on-timeout fail \
		--max-attempts 3)
	t_ok "$b: the hanging query runs on the server" t_until 10 runs_now "$id"
	t_ok "$b: on_timeout fail: failed within its timeout and a little" \
		t_until 3 status_is "$id" "$Q" failed
	t_ok "$b: gone from system.processes within a second" t_until 1 test "$(running "$id")" = 0
	out=$("$au" wait "$id" --queue "$Q" --json)
	t_match "$b: on_timeout fail: one attempt, not retried" "$out" '"attempts":1,'
	t_match "$b: the error says it timed out" "$out" '"error":"[^"]*(timed out after 1000 ms|clickhouse error 159)'

	# on_timeout retry (the default): each attempt ends the same way, then dead letter
	id=$("$au" enqueue ch.query --queue "$Q" --args "$hang" --timeout 1000ms --max-attempts 2)
	t_ok "$b: on_timeout retry: retried, then failed after its attempts" \
		t_until 10 status_is "$id" "$Q" failed
	t_match "$b: on_timeout retry: two attempts" "$("$au" wait "$id" --queue "$Q" --json)" \
		'"attempts":2,'
	t_ok "$b: no query of it is left running" t_until 1 test "$(running "$id")" = 0

	# cancel while running: the cancel reaches the worker through the queue
	# (Redis PUBLISH, PostgreSQL NOTIFY), which kills the query
	id=$("$au" enqueue ch.query --queue "$Q" --args "$hang" --max-attempts 3)
	t_ok "$b: the computation runs on the server" t_until 10 runs_now "$id"
	t_ok "$b: au cancel of a running computation succeeds" "$au" cancel "$id" --queue "$Q"
	t_ok "$b: its query is gone from system.processes within a second" \
		t_until 1 test "$(running "$id")" = 0
	t_eq "$b: its status is cancelled" "$("$au" status "$id" --queue "$Q")" cancelled
	t_ok "$b: the worker heard it" t_until 5 grep -q "computation '$id' cancelled by a client" "$dir/$b.log"
	sleep 1
	t_eq "$b: no late result overwrites it" "$("$au" status "$id" --queue "$Q")" cancelled
	t_eq "$b: it is not run again" "$(running "$id")" 0
	t_match "$b: the queue holds nothing of it" "$("$au" queues --json)" "\"queue\":\"$Q\",\"ready\":0,\"scheduled\":0,\"running\":0"
	t_ok "$b: a second cancel says it is already cancelled" \
		sh -c "'$au' cancel '$id' --queue '$Q' 2>&1 | grep -q 'already cancelled'"
	kill -TERM "$wpid"; wait "$wpid"; wpid=
done
t_done
