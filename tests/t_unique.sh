#!/usr/bin/env bash
# t_unique.sh - idempotency keys, on each queue backend: 8 producers
# enqueue one key at once and make one computation; the key returns it
# while it waits, runs and while its record lasts, and is free again once
# the record expired; the same key on another queue is another computation.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_unique.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
waiting() { # queue: its ready count
	"$au" queues --json | grep -o "\"queue\":\"$1\",\"ready\":[0-9]*" | grep -o '[0-9]*$'
}

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=u$RANDOM$RANDOM
	K=order-$RANDOM
	for i in 1 2 3 4 5 6 7 8; do
		"$au" enqueue au.echo --queue "$Q" --key "$K" --ttl 2 --args "[$i]" >"$dir/$b.$i" &
	done
	wait
	t_eq "$b: 8 producers at once, one key: one id" "$(cat "$dir/$b".[1-8] | sort -u | wc -l)" 1
	id=$(cat "$dir/$b.1")
	t_eq "$b: one computation waits" "$(waiting "$Q")" 1
	"$au" worker --queue "$Q" --idle-exit 500ms >/dev/null 2>"$dir/$b.log" &
	wpid=$!
	wait "$wpid"; wpid=
	t_eq "$b: it ran once" "$(grep -c "$id .*completed" "$dir/$b.log")" 1
	t_eq "$b: while its record lasts the key gives that one" \
		"$("$au" enqueue au.echo --queue "$Q" --key "$K" --args '[9]')" "$id"
	t_eq "$b: and adds nothing to the queue" "$(waiting "$Q")" 0
	t_eq "$b: the same key on another queue is another computation" \
		"$("$au" enqueue au.echo --queue "$Q-b" --key "$K" | grep -c "^$id$")" 0
	sleep 2.5   # the record's ttl of 2 s runs out
	t_eq "$b: once the record expired, the key is free: the same id again" \
		"$("$au" enqueue au.echo --queue "$Q" --key "$K" --args '[10]')" "$id"
	t_eq "$b: and it waits to run again" "$(waiting "$Q")" 1
	out=$("$au" enqueue au.echo --queue "$Q" --key '' 2>&1); rc=$?
	t_eq "$b: an empty key is refused (exit 2)" "$rc" 2
	t_match "$b: and says why" "$out" "idempotency key must be 1 to 1024 bytes"
done
t_done
