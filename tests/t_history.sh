#!/usr/bin/env bash
# t_history.sh - every record keeps its story, on each queue backend: each
# attempt's worker, start and end, outcome and error with the ClickHouse
# code; an attempt whose worker was killed is told as lost by the next
# one; `au status --json` shows the history while the computation waits
# for its retry, and `au dlq show --json` a dead letter's.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_history.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
status_is() { [ "$("$au" status "$1" --queue "$2")" = "$3" ]; }
W='"worker":"[^"]+:[0-9]+:[0-9a-f]{8}"'
T='"started_at":[0-9]+,"finished_at":[0-9]+'

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=h$RANDOM$RANDOM

	# three attempts by two workers: the first makes attempt 1 and leaves
	# (--max-tasks 1), the second makes 2 and 3
	id=$("$au" enqueue au.fail --queue "$Q" --max-attempts 3 \
		--args '{"message":"flaky","retryable":true}')
	"$au" worker --queue "$Q" --max-tasks 1 --retry-base 100ms >/dev/null 2>"$dir/$b.w1" &
	wpid=$!; wait "$wpid"; wpid=
	out=$("$au" status "$id" --json)
	t_match "$b: status --json while it waits for its retry: retrying, 1 attempt" "$out" \
		"^\{\"id\":\"$id\",\"status\":\"retrying\",\"queue\":\"$Q\",\"attempts\":1,"
	t_match "$b: with the queue's history of attempt 1" "$out" \
		"\"history\":\[\{\"attempt\":1,$W,$T,\"outcome\":\"retrying\",\"error\":\"flaky\"\}\]\}$"
	w1=$(echo "$out" | grep -o '"worker":"[^"]*"' | tail -1)
	"$au" worker --queue "$Q" --retry-base 100ms --idle-exit 1500ms >/dev/null 2>"$dir/$b.w2" &
	wpid=$!; wait "$wpid"; wpid=
	out=$("$au" result "$id" --json)
	t_match "$b: the record tells all three attempts" "$out" \
		"\"history\":\[\{\"attempt\":1,$W,$T,\"outcome\":\"retrying\",\"error\":\"flaky\"\},\{\"attempt\":2,$W,$T,\"outcome\":\"retrying\",\"error\":\"flaky\"\},\{\"attempt\":3,$W,$T,\"outcome\":\"failed\",\"error\":\"flaky\"\}\]"
	t_match "$b: attempt 1 names the first worker" "$out" "\"attempt\":1,$w1,"
	t_eq "$b: attempts 2 and 3 another one" "$(echo "$out" | grep -o '"worker":"[^"]*:[0-9a-f]\{8\}"' | sort -u | wc -l)" 2
	t_match "$b: the record's error says all attempts failed" "$out" \
		"\"error\":\"failed after 3 attempts: flaky\""
	out=$("$au" status "$id" --json)
	t_match "$b: status --json of a finished one: its record, without v and result" "$out" \
		"^\{\"id\":\"$id\",\"status\":\"failed\",\"task\":\"au.fail\",\"queue\":\"$Q\",.*\"history\":\[.*\]\}$"
	out=$("$au" dlq show "$id" --json)
	t_match "$b: the dead letter keeps the history the queue had (attempts 1 and 2)" "$out" \
		"\"history\":\[\{\"attempt\":1,[^]]*\{\"attempt\":2,[^]]*\}\]"

	# the ClickHouse code of a failed query
	id=$("$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT * FROM no_such_table_au"}')
	"$au" worker --queue "$Q" --idle-exit 800ms >/dev/null 2>"$dir/$b.ch" &
	wpid=$!; wait "$wpid"; wpid=
	out=$("$au" result "$id" --json)
	t_match "$b: a query on a missing table: failed, ch_code 60 in its history" "$out" \
		"\"history\":\[\{\"attempt\":1,$W,$T,\"outcome\":\"failed\",\"error\":\"ch.query: clickhouse error 60[^\"]*\",\"ch_code\":60\}\]"

	# a worker killed mid-run: the next attempt tells the first as lost
	"$au" worker --queue "$Q" --lease 1000ms >/dev/null 2>"$dir/$b.k1" &
	wpid=$!
	id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":1500}')
	t_ok "$b: a 1.5 s computation runs" t_until 10 status_is "$id" "$Q" running
	kill -KILL "$wpid"; wait "$wpid" 2>/dev/null
	"$au" worker --queue "$Q" --lease 1000ms --idle-exit 4000ms >/dev/null 2>"$dir/$b.k2" &
	wpid=$!
	t_ok "$b: a second worker completes it" t_until 15 status_is "$id" "$Q" completed
	kill -TERM "$wpid"; wait "$wpid"; wpid=
	out=$("$au" result "$id" --json)
	t_match "$b: attempt 1 lost, attempt 2 completed" "$out" \
		"\"history\":\[\{\"attempt\":1,\"outcome\":\"lost\",\"error\":\"the lease ran out[^\"]*\"\},\{\"attempt\":2,$W,$T,\"outcome\":\"completed\"\}\]"
done
t_done
