#!/usr/bin/env bash
# t_hints.sh - a newcomer's mistakes get a hint, on the Redis and the
# PostgreSQL queue: a worker writing to another store than the client's
# leaves its computations "unknown" with a message that names where the
# client looked and what would explain it; a cancelled computation's
# record keeps its task, queue, created_at and attempts; a result holding
# a UInt64 above INT64_MAX prints as its decimal string.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_hints.XXXXXX")
export AU_STORE="file://$dir/a" AU_CLICKHOUSE=$AU_TEST_CH
wpid=
worker() { # queue, store: runs a worker in the background, sets $wpid
	AU_STORE=$2 "$au" worker --queue "$1" --quiet --retry-base 50ms 2>>"$dir/worker.log" &
	wpid=$!
}
stop() { [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null; wpid=; }
trap 'stop; rm -rf "$dir"' EXIT
status_in() { # id, store, status
	[ "$(AU_STORE=$2 "$au" status "$1" 2>/dev/null)" = "$3" ]
}
hint="(a worker writing to another AU_STORE, or another queue server, would explain it)"

for url in "$AU_TEST_REDIS" "$AU_TEST_PG"; do
	export AU_QUEUE=$url
	b=${url%%:*}
	Q=hint$RANDOM$RANDOM

	# --- the worker writes to store b, the client reads store a
	worker "$Q" "file://$dir/b"
	id=$("$au" enqueue au.echo --queue "$Q" --args '[1]')
	t_ok "$b: the worker completes it, in its own store" t_until 15 status_in "$id" "file://$dir/b" completed
	out=$("$au" status "$id" 2>"$dir/err"); rc=$?
	t_eq "$b: the client's store has no record: unknown, exit 3" "$rc $out" "3 unknown"
	t_eq "$b: the message names the queue server, the client's store and the hint" "$(cat "$dir/err")" \
		"au: unknown computation '$id': not on any queue of '$url' and no record in store 'file://$dir/a' $hint"
	out=$("$au" result "$id" --queue "$Q" 2>&1); rc=$?
	t_eq "$b: with --queue it names the queue too" "$rc $out" \
		"3 au: unknown computation '$id': not on queue '$Q' or any other of '$url' and no record in store 'file://$dir/a' $hint"
	out=$(AU_STORE="file://$dir/b" "$au" result "$id" 2>&1); rc=$?
	t_eq "$b: with the worker's store the result is there" "$rc $out" "0 [1]"

	# --- a result with a UInt64 above INT64_MAX prints as its digits
	id=$("$au" enqueue au.echo --queue "$Q" \
		--args '[9223372036854775807,9223372036854775808,18446744073709551615,-9223372036854775808]')
	out=$(AU_STORE="file://$dir/b" "$au" wait "$id" --timeout 10000 2>&1); rc=$?
	t_eq "$b: a UInt64 over INT64_MAX round trips through --args and the result, as a string" \
		"$rc $out" '0 [9223372036854775807,"9223372036854775808","18446744073709551615",-9223372036854775808]'
	out=$(AU_STORE="file://$dir/b" "$au" result "$id" --json 2>&1)
	t_match "$b: result --json too, no 'undecodable'" "$out" \
		'"result":\[9223372036854775807,"9223372036854775808","18446744073709551615",-9223372036854775808\]'
	stop

	# --- a cancelled computation keeps its task, queue, created_at, attempts
	id=$("$au" enqueue au.echo --queue "$Q" --args '[2]' --ttl 600)
	t_eq "$b: cancel a waiting one" "$("$au" cancel "$id")" cancelled
	out=$("$au" result "$id" --json); rc=$?
	t_eq "$b: its result exits 1" "$rc" 1
	t_match "$b: the cancelled record has its task and queue" "$out" \
		"^\\{\"v\":1,\"id\":\"$id\",\"status\":\"cancelled\",\"task\":\"au.echo\",\"queue\":\"$Q\","
	t_match "$b: ... its attempts (none) and the computation's ttl" "$out" '"attempts":0,"ttl_s":600,'
	t_match "$b: ... and its created_at" "$out" '"created_at":1[0-9]{12},'
	t_match "$b: ... and why" "$out" '"error":"cancelled by client"'

	# scheduled ones and running ones too: the record of a running one
	# counts the attempt that was running
	id=$("$au" enqueue au.echo --queue "$Q" --args '[3]' --delay 60000ms)
	t_eq "$b: cancel a scheduled one" "$("$au" cancel "$id" --queue "$Q")" cancelled
	t_match "$b: its record has the task and created_at" "$("$au" result "$id" --json)" \
		"\"task\":\"au.echo\",\"queue\":\"$Q\",.*\"created_at\":1[0-9]{12},"
	worker "$Q" "file://$dir/a"
	id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":20000}')
	t_ok "$b: the sleep runs" t_until 15 status_in "$id" "file://$dir/a" running
	t_eq "$b: cancel a running one" "$("$au" cancel "$id")" cancelled
	out=$("$au" result "$id" --json)
	t_match "$b: the running one's record: task, queue, one attempt" "$out" \
		"\"status\":\"cancelled\",\"task\":\"au.sleep\",\"queue\":\"$Q\",\"attempts\":1,"
	t_match "$b: ... and created_at" "$out" '"created_at":1[0-9]{12},'
	stop
done
t_done
