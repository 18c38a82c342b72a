#!/usr/bin/env bash
# t_cancel.sh - cancel of a running computation, on each queue backend: the
# cancel reaches the worker that runs it (Redis PUBLISH, PostgreSQL NOTIFY),
# its ClickHouse query is killed by its query_id (gone from
# system.processes within a second), the record is CANCELLED and no late
# result overwrites it.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_cancel.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
hang='{"sql":"SELECT count() FROM numbers(100000000000)"}'
running() {
	curl -sf "$AU_TEST_CH" --data-binary \
		"SELECT count() FROM system.processes WHERE query_id LIKE '$1-%'"
}
runs_now() { [ "$(running "$1")" -ge 1 ] 2>/dev/null; }
status_is() { [ "$("$au" status "$1" --queue "$2")" = "$3" ]; }

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=c$RANDOM$RANDOM
	"$au" worker --queue "$Q" >/dev/null 2>"$dir/$b.log" &
	wpid=$!
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
