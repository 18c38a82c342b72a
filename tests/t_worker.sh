#!/usr/bin/env bash
# t_worker.sh - the worker and the CLI against real Redis: garbage on the
# queue, unknown tasks, retries, timeouts, cancel, TTL expiry, graceful and
# hard stops, lease expiry after SIGKILL, clear errors for bad input.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_worker.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$dir/store" AU_CLICKHOUSE=$AU_TEST_CH
rport=${AU_TEST_REDIS##*:}
rcli() { redis-cli -p "$rport" "$@"; }
q() { echo "t$RANDOM$RANDOM"; }
worker() { # queue, extra args...: runs a worker in the background, sets $wpid
	local queue=$1; shift
	"$au" worker --queue "$queue" --quiet --retry-base 50ms "$@" 2>>"$dir/worker.log" &
	wpid=$!
}
status_is() { [ "$("$au" status "$1" --queue "$2" 2>/dev/null)" = "$3" ]; }

# --- a garbage message is dead-lettered with a reason; the worker survives
Q=$(q)
gid=0123456789abcdef0123456789abcdef
# written by hand the way docs/redis-layout.md says, with a garbage body
rcli HSET "au:{$Q}:body" "$gid" 'not msgpack at all' >/dev/null
rcli RPUSH "au:{$Q}:ready:0" "$gid" >/dev/null
rcli ZADD "au:{$Q}:prios" 0 0 >/dev/null
rcli SADD au:queues "$Q" >/dev/null
worker "$Q"
good=$("$au" enqueue au.echo --queue "$Q" --args '{"after":"garbage"}')
t_eq "worker survives garbage and runs the next computation" \
	"$("$au" wait "$good" --queue "$Q" --timeout 10000ms)" '{"after":"garbage"}'
t_ok "garbage computation is failed" status_is "$gid" "$Q" failed
res=$("$au" result "$gid" --queue "$Q" --json 2>&1)
t_match "its record says why" "$res" '"error":"malformed computation'
t_match "it sits in the dead letter set" "$("$au" queues --json)" "\"queue\":\"$Q\".*\"dead\":1"
kill -TERM $wpid; wait $wpid
t_eq "worker exits 0 on SIGTERM" "$?" 0

# --- unknown task, retries with backoff, timeout
Q=$(q)
worker "$Q"
id=$("$au" enqueue no.such.task --queue "$Q")
out=$("$au" wait "$id" --queue "$Q" --timeout 10000ms 2>&1); rc=$?
t_eq "unknown task: wait exits 1" "$rc" 1
t_match "unknown task: named in the error" "$out" "unknown task 'no.such.task'"
id=$("$au" enqueue au.fail --queue "$Q" --max-attempts 3 --args '{"message":"boom","retryable":true}')
out=$("$au" wait "$id" --queue "$Q" --timeout 20000ms --json 2>&1)
t_match "retryable failure is tried max_attempts times" "$out" '"status":"failed".*"attempts":3'
t_match "then fails with the last error" "$out" 'failed after 3 attempts: boom'
id=$("$au" enqueue au.fail --queue "$Q" --max-attempts 3 --args '{"message":"bad input"}')
out=$("$au" wait "$id" --queue "$Q" --timeout 10000ms --json 2>&1)
t_match "permanent failure is not retried" "$out" '"status":"failed".*"attempts":1'
id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":5000}' --timeout 300ms --max-attempts 1)
out=$("$au" wait "$id" --queue "$Q" --timeout 10000ms --json 2>&1)
t_match "timeout fails the attempt" "$out" '"status":"failed".*timed out after 300 ms'
kill -TERM $wpid; wait $wpid

# --- --max-jobs counts attempts: a retried computation does not keep it alive
Q=$(q)
"$au" enqueue au.fail --queue "$Q" --max-attempts 2 --args '{"retryable":true}' >/dev/null
"$au" enqueue au.noop --queue "$Q" >/dev/null
timeout 20 "$au" worker --queue "$Q" --quiet --retry-base 50ms --max-jobs 3 2>/dev/null
t_eq "worker with --max-jobs stops after that many attempts" "$?" 0

# --- cancel of a pending computation: it never runs
Q=$(q)
id=$("$au" enqueue au.echo --queue "$Q" --delay 600000ms)
t_ok "delayed computation is scheduled" status_is "$id" "$Q" scheduled
t_eq "cancel succeeds" "$("$au" cancel "$id" --queue "$Q")" cancelled
t_ok "status is cancelled" status_is "$id" "$Q" cancelled
"$au" cancel "$id" --queue "$Q" >/dev/null 2>&1
t_eq "cancelling twice is refused" "$?" 1
t_match "nothing is left on the queue" "$("$au" queues --json)" "\"queue\":\"$Q\",\"ready\":0,\"scheduled\":0,\"running\":0"

# --- result TTL: readable, then gone
Q=$(q)
worker "$Q"
id=$("$au" enqueue au.echo --queue "$Q" --ttl 1 --args '[1,2]')
t_eq "result readable before the ttl" "$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" '[1,2]'
sleep 2.2
out=$("$au" result "$id" --queue "$Q" 2>&1); rc=$?
t_eq "after the ttl: exit 3" "$rc" 3
t_match "after the ttl: expired" "$out" "expired"

# --- graceful stop: the running computation finishes within the grace period
id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":800}')
t_ok "computation starts" t_until 5 status_is "$id" "$Q" running
kill -TERM $wpid; wait $wpid
t_eq "worker exits 0" "$?" 0
t_ok "in-flight computation completed" status_is "$id" "$Q" completed

# --- grace period over: the computation goes back without spending an attempt
worker "$Q" --grace 200ms
id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":5000}')
t_ok "long computation starts" t_until 5 status_is "$id" "$Q" running
kill -TERM $wpid; wait $wpid
t_eq "worker exits 0 after the grace period" "$?" 0
t_ok "computation is pending again" status_is "$id" "$Q" pending

# --- --processes: several loops; SIGTERM to the parent stops them all
Q=$(q)
"$au" worker --queue "$Q" --quiet --processes 2 2>/dev/null &
ppid_=$!
ids=$(for i in 1 2 3 4; do "$au" enqueue au.echo --queue "$Q" --args "[$i]"; done)
n=0
for id in $ids; do [ "$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" ] && n=$((n + 1)); done
t_eq "--processes 2 runs computations" "$n" 4
t_eq "two worker processes" "$(pgrep -P $ppid_ | wc -l)" 2
kill -TERM $ppid_; wait $ppid_
t_eq "parent and children stop on SIGTERM with 0" "$?" 0
t_eq "no worker process left" "$(pgrep -f "worker --queue $Q" | wc -l)" 0

# --- SIGKILL mid-computation: the lease runs out, another worker finishes it
Q=$(q)
worker "$Q" --lease 1000ms
id=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":300}')
sleep 0.1
kill -STOP $wpid 2>/dev/null
t_ok "computation was leased" status_is "$id" "$Q" running
kill -KILL $wpid; wait $wpid 2>/dev/null
worker "$Q" --lease 1000ms
out=$("$au" wait "$id" --queue "$Q" --timeout 15000ms --json 2>&1)
t_match "rescued and completed on the second attempt" "$out" '"status":"completed".*"attempts":2'
kill -TERM $wpid; wait $wpid

# --- bad input gets clear errors
out=$("$au" --queue-url redis://127.0.0.1:1 enqueue au.noop 2>&1); rc=$?
t_eq "unreachable queue: exit 5" "$rc" 5
t_match "unreachable queue: message" "$out" "unable to connect to 'redis://127.0.0.1:1': connection refused"
out=$("$au" --queue-url bogus enqueue au.noop 2>&1); rc=$?
t_match "bad url: message" "$out" "invalid url 'bogus'"
out=$("$au" enqueue au.echo --args '{"a":' 2>&1); rc=$?
t_eq "malformed json: exit 2" "$rc" 2
t_match "malformed json: message" "$out" "invalid json"
out=$("$au" status not-an-id 2>&1); rc=$?
t_eq "invalid id: exit 2" "$rc" 2
out=$("$au" status 0123456789abcdef0123456789abcdee 2>&1); rc=$?
t_eq "unknown id: exit 3" "$rc" 3
{ printf '"'; head -c 1200000 /dev/zero | tr '\0' a; printf '"\n'; } >"$dir/big.jsonl"
out=$("$au" enqueue au.echo --args-file "$dir/big.jsonl" 2>&1); rc=$?
t_match "oversized computation refused" "$out" "computation too large"

rm -rf "$dir"
t_done
