#!/usr/bin/env bash
# t_middleware.sh - the built-in middlewares through the au command, on
# Redis and ClickHouse: --log-format json gives one JSON object per event
# (finished, failed, retried, dead; enqueued from a client's logging)
# with an RFC 3339 time; tracing gives each computation a W3C traceparent
# (or keeps the caller's), logged with its events and found by its trace
# id in ClickHouse's system.query_log; timeout:TASK=DURATION is a task's
# default, a computation's own timeout wins; a bad list is refused.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_middleware.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS/6 AU_STORE=$AU_TEST_REDIS/7 AU_CLICKHOUSE=$AU_TEST_CH
Q=mw$RANDOM
wpid=
stop() { [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null; wpid=; }
trap 'stop; rm -rf "$dir"' EXIT
ch() { curl -sS "$AU_TEST_CH" --data-binary "$1"; }

"$au" worker --queue "$Q" --log-format json --retry-base 50ms \
	--middleware 'timeout:au.sleep=300ms,ch.exec=20s' 2>"$dir/w.log" &
wpid=$!
t_ok "a worker with --log-format json and a middleware list starts" \
	t_until 20 grep -q '"event"\|worker .* on queue' "$dir/w.log"

ok=$("$au" enqueue au.echo --queue "$Q" --args '{"x":1}' --wait --wait-timeout 20s --json)
t_match "au.echo completes" "$ok" '"status":"completed"'
"$au" enqueue au.fail --queue "$Q" --max-attempts 2 --wait --wait-timeout 20s \
	--args '{"message":"again","retryable":true}' >/dev/null 2>&1
"$au" enqueue au.fail --queue "$Q" --wait --wait-timeout 20s --args '{"message":"no"}' \
	>/dev/null 2>&1
slow=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":5000}' --wait --wait-timeout 20s --json 2>&1)
t_match "timeout:au.sleep=300ms: a task's default ends it" "$slow" 'timed out after 300 ms'
own=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":600}' --timeout 5s --wait \
	--wait-timeout 20s --json 2>&1)
t_match "a computation's own timeout wins over its task's" "$own" '"status":"completed"'

# traced: a new trace, and one the caller gives
tid=$("$au" enqueue ch.query --queue "$Q" --middleware tracing --args '{"sql":"SELECT 7 AS seven"}')
given=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
gid=$("$au" enqueue ch.query --queue "$Q" --middleware tracing --header traceparent=$given \
	--args '{"sql":"SELECT 8 AS eight"}')
bad=$("$au" enqueue au.echo --queue "$Q" --middleware tracing --header traceparent=nonsense)
"$au" wait "$tid" --timeout 20s >/dev/null
"$au" wait "$gid" --timeout 20s >/dev/null
"$au" wait "$bad" --timeout 20s >/dev/null
cli=$("$au" enqueue au.noop --queue "$Q" --middleware tracing,logging 2>&1 >/dev/null)
t_match "a client's logging middleware says enqueued, with the trace" "$cli" \
	'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z au: [0-9a-f]{32} au\.noop queue='"$Q"' enqueued trace=00-[0-9a-f]{32}-[0-9a-f]{16}-01$'
sleep 0.5
stop

log=$(grep '^{' "$dir/w.log")
t_ok "every event line is a JSON object" python3 -c '
import json, sys, re
n = 0
for line in open(sys.argv[1]):
    if not line.startswith("{"): continue
    e = json.loads(line); n += 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]), e
    assert e["event"] in ("started", "finished", "failed", "retried", "dead", "cancelled"), e
    for k in ("id", "task", "queue", "attempt", "max_attempts", "duration_ms", "worker"):
        assert k in e, (k, e)
assert n >= 8, n
' "$dir/w.log"
ev() { # event, task: how many lines
	printf '%s\n' "$log" | grep -c "\"event\":\"$1\".*\"task\":\"$2\""
}
t_eq "finished: au.echo" "$(ev finished au.echo)" 2
t_eq "retried: the retryable au.fail, once" "$(printf '%s\n' "$log" | grep -c '"event":"retried".*"task":"au.fail".*"retry_in_ms":')" 1
t_eq "dead: the au.fail whose retries ran out" "$(printf '%s\n' "$log" | grep -c '"event":"dead".*"error":"failed after 2 attempts: again"')" 1
t_eq "failed: the au.fail that failed for good" "$(printf '%s\n' "$log" | grep -c '"event":"failed".*"error":"no"')" 1
tp=$(printf '%s\n' "$log" | grep "\"id\":\"$tid\"" | sed -n 's/.*"traceparent":"\([^"]*\)".*/\1/p')
t_match "a traced computation's events carry its traceparent" "$tp" '^00-[0-9a-f]{32}-[0-9a-f]{16}-01$'
t_match "and its ClickHouse query_id begins with the trace id" \
	"$(printf '%s\n' "$log" | grep "\"id\":\"$tid\"")" "\"query_id\":\"${tp:3:32}:$tid-1\""
t_match "the caller's traceparent is kept" "$(printf '%s\n' "$log" | grep "\"id\":\"$gid\"")" \
	"\"traceparent\":\"$given\""
t_ok "one that is not a traceparent is replaced by a new trace" \
	bash -c "printf '%s\n' '$(printf '%s\n' "$log" | grep "\"id\":\"$bad\"")' | grep -Eq '\"traceparent\":\"00-[0-9a-f]{32}-'"
ch "SYSTEM FLUSH LOGS" >/dev/null
t_eq "the trace id finds the query in system.query_log" \
	"$(ch "SELECT count() > 0 FROM system.query_log WHERE query_id = '4bf92f3577b34da6a3ce929d0e0e4736:$gid-1' AND type = 2")" 1
t_eq "and the new trace's too" \
	"$(ch "SELECT count() > 0 FROM system.query_log WHERE query_id LIKE '${tp:3:32}:%' AND type = 2")" 1

# refused lists
out=$("$au" worker --queue "$Q" --middleware 'nosuch' 2>&1); rc=$?
t_eq "an unknown middleware: exit 2" "$rc" 2
t_match "named" "$out" "unknown middleware 'nosuch'"
out=$("$au" worker --queue "$Q" --middleware 'timeout:au.sleep=fast' 2>&1); rc=$?
t_match "a bad timeout: exit 2, named" "$rc $out" "^2 au: invalid middleware 'timeout:au.sleep=fast'"
out=$("$au" worker --queue "$Q" --log-format xml 2>&1); rc=$?
t_match "--log-format xml: exit 2" "$rc $out" "^2 au: invalid value 'xml' for --log-format"
out=$("$au" enqueue au.noop --queue "$Q" --middleware 'logging:yaml' 2>&1); rc=$?
t_match "a bad middleware on enqueue: exit 2, nothing enqueued" "$rc $out" "^2 au: invalid middleware 'logging:yaml'"
"$au" queue empty "$Q" >/dev/null 2>&1
t_done
