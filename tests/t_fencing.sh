#!/usr/bin/env bash
# t_fencing.sh - a worker stopped (SIGSTOP) past its lease while another
# one runs the same computation to its end: after SIGCONT its late result
# is refused (first write wins) and its ack too (fencing); the stored
# record is the other worker's, unchanged. On each queue backend.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_fencing.XXXXXX")
a= b=
trap 'kill -CONT $a 2>/dev/null; kill -KILL $a $b 2>/dev/null' EXIT
status_is() { [ "$("$au" status "$1" --queue "$2")" = "$3" ]; }

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) k=redis ;; *) k=pg ;; esac
	export AU_QUEUE=$qurl
	Q=f$RANDOM$RANDOM
	"$au" worker --queue "$Q" --lease 1000ms >/dev/null 2>"$dir/$k-a.log" &
	a=$!
	id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":1500}' --max-attempts 3)
	t_ok "$k: the first worker runs it" t_until 10 status_is "$id" "$Q" running
	kill -STOP "$a"
	"$au" worker --queue "$Q" --lease 1000ms >/dev/null 2>"$dir/$k-b.log" &
	b=$!
	t_ok "$k: the second worker takes it over once the lease ran out and completes it" \
		t_until 15 status_is "$id" "$Q" completed
	before=$("$au" result "$id" --queue "$Q" --json)
	t_match "$k: the record is the second worker's, attempt 2" "$before" "\"worker\":\"[^\"]*:$b\",\"attempts\":2,"
	kill -CONT "$a"
	sleep 2   # the first one's sleep is long over: it writes back now
	t_ok "$k: the first worker, resumed, finished its attempt" \
		t_until 5 grep -q "$id .*attempt=1/3 completed" "$dir/$k-a.log"
	t_eq "$k: its late result is refused: the record is unchanged" \
		"$("$au" result "$id" --queue "$Q" --json)" "$before"
	t_match "$k: nothing left in the queue, nothing dead" "$("$au" queues --json)" \
		"\"queue\":\"$Q\",\"ready\":0,\"scheduled\":0,\"running\":0,\"dead\":0"
	kill -TERM "$a" "$b"; wait "$a"; wait "$b"
	a= b=
done
t_done
