#!/usr/bin/env bash
# t_metrics.sh - the metrics middleware seen from outside: a worker with
# --metrics-addr runs a known mix (completed, failed, retried then dead),
# GET /metrics is scraped with curl and parsed (a TYPE line per family,
# exact counters, buckets that never go down, _count equal to the runs);
# ClickHouse's rows and bytes read are counted for ch.query; a port in use
# refuses start-up, alone and for a fleet's PORT+i; `au stats` sums two
# worker processes of a fleet, on Redis and on PostgreSQL.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_metrics.XXXXXX")
export AU_STORE="file://$dir/store" AU_CLICKHOUSE=${AU_TEST_CH:-http://127.0.0.1:1}
base=$(( ${AU_PORT_BASE:-17300} + 60 ))
pids=
trap 'for p in $pids; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$dir"' EXIT
scrape() { curl -sf "http://127.0.0.1:$1/metrics"; }
# the value of one sample line: port, metric name with its labels
value() { scrape "$1" | awk -v k="$2" '$1 == k {print $NF}'; }
has_value() { [ "$(value "$1" "$2")" = "$3" ]; }

export AU_QUEUE=$AU_TEST_REDIS
Q=m$RANDOM$RANDOM
port=$base
"$au" worker --queue "$Q" --retry-base 100ms --metrics-addr "127.0.0.1:$port" 2>"$dir/w.log" &
w=$!
pids="$pids $w"
up() { scrape "$1" >/dev/null; }
t_ok "the endpoint answers" t_until 10 up $port

for i in 1 2 3 4 5; do "$au" enqueue au.noop --queue "$Q" >/dev/null; done
for i in 1 2; do "$au" enqueue au.fail --queue "$Q" >/dev/null; done
"$au" enqueue au.fail --queue "$Q" --max-attempts 2 --args '{"retryable":true}' >/dev/null
"$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT count() FROM numbers(1000)"}' >/dev/null
L="task=\"au.fail\",queue=\"$Q\""
N="task=\"au.noop\",queue=\"$Q\""
C="task=\"ch.query\",queue=\"$Q\""
t_ok "the retried one ends dead" t_until 15 has_value $port "au_computations_total{$L,outcome=\"dead\"}" 1
t_ok "ch.query completes" t_until 10 has_value $port "au_computations_total{$C,outcome=\"completed\"}" 1
m=$(scrape $port)
printf '%s\n' "$m" >"$dir/metrics.txt"
for f in "au_computations_total counter" "au_started_total counter" "au_in_flight gauge" \
	"au_run_seconds histogram" "au_queue_wait_seconds histogram" \
	"au_clickhouse_read_rows_total counter" "au_clickhouse_read_bytes_total counter" \
	"au_worker_leased_total counter" "au_worker_completed_total counter"; do
	t_eq "one TYPE line: $f" "$(printf '%s\n' "$m" | grep -cx "# TYPE $f")" 1
done
get() { printf '%s\n' "$m" | awk -v k="$1" '$1 == k {print $NF}'; }
t_eq "au.noop: 5 completed" "$(get "au_computations_total{$N,outcome=\"completed\"}")" 5
t_eq "au.fail: 2 failed" "$(get "au_computations_total{$L,outcome=\"failed\"}")" 2
t_eq "au.fail: 1 retried" "$(get "au_computations_total{$L,outcome=\"retried\"}")" 1
t_eq "au.fail: 1 dead" "$(get "au_computations_total{$L,outcome=\"dead\"}")" 1
t_eq "au.fail: 0 completed" "$(get "au_computations_total{$L,outcome=\"completed\"}")" 0
t_eq "au.fail: 4 started" "$(get "au_started_total{$L}")" 4
t_eq "au.fail: none in flight" "$(get "au_in_flight{$L}")" 0
t_eq "au.fail: run time _count is the 4 runs" "$(get "au_run_seconds_count{$L}")" 4
t_eq "au.noop: run time _count is the 5 runs" "$(get "au_run_seconds_count{$N}")" 5
t_eq "au.noop: queue wait _count is the 5 starts" "$(get "au_queue_wait_seconds_count{$N}")" 5
t_eq "au.fail: +Inf bucket is _count" "$(get "au_run_seconds_bucket{$L,le=\"+Inf\"}")" 4
mono=$(printf '%s\n' "$m" | awk -v l="$L" '
	index($0, "au_run_seconds_bucket{" l ",") == 1 || index($0, "au_queue_wait_seconds_bucket{" l ",") == 1 {
		split($0, a, "{"); k = a[1]
		if (k in last && $NF + 0 < last[k] + 0) bad = 1
		last[k] = $NF; n++ }
	END { print (bad ? "down" : "up") " " n }')
t_eq "buckets never go down (16 each)" "$mono" "up 32"
t_match "the buckets are in seconds" "$m" "au_run_seconds_bucket\\{$L,le=\"0.005\"\\} [0-9]+"
t_eq "ch.query: rows read" "$(get "au_clickhouse_read_rows_total{$C}")" 1000
t_eq "ch.query: bytes read" "$(get "au_clickhouse_read_bytes_total{$C}")" 8000
t_eq "the worker's own counters" "$(get au_worker_completed_total)" 6
t_eq "a path other than /metrics is 404" \
	"$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")" 404

# --- a port in use
out=$("$au" worker --queue "$Q" --metrics-addr "127.0.0.1:$port" 2>&1)
rc=$?
t_eq "a busy port refuses start-up (exit 1)" "$rc" 1
t_match "and says so" "$out" "unable to listen on '127.0.0.1:$port': address already in use"
out=$("$au" worker --queue "$Q" --processes 2 --metrics-addr "127.0.0.1:$((port - 1))" 2>&1)
t_match "a fleet whose PORT+1 is busy refuses start-up" "$? $out" \
	"^1 .*unable to listen on '127.0.0.1:$port': address already in use"
out=$("$au" worker --queue "$Q" --metrics-addr "nonsense" 2>&1)
t_match "a bad address is a usage error" "$? $out" "^2 .*invalid metrics address 'nonsense'"
kill -TERM $w
wait $w 2>/dev/null

# --- au stats: the sum over two processes of a fleet, on each backend
k=0
for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=s$RANDOM$RANDOM
	p=$((base + 2 + 2 * k))
	k=$((k + 1))
	"$au" worker --queue "$Q" --processes 2 --concurrency 1 --metrics-addr "127.0.0.1:$p" \
		2>"$dir/$b-fleet.log" &
	f=$!
	pids="$pids $f"
	t_ok "$b: both children serve /metrics (PORT, PORT+1)" t_until 10 sh -c \
		"curl -sf http://127.0.0.1:$p/metrics >/dev/null && curl -sf http://127.0.0.1:$((p + 1))/metrics >/dev/null"
	for i in $(seq 1 12); do "$au" enqueue au.sleep --queue "$Q" --args '{"ms":50}' >/dev/null; done
	for i in 1 2 3; do "$au" enqueue au.fail --queue "$Q" >/dev/null; done
	S="task=\"au.sleep\",queue=\"$Q\""
	sum() { echo $(( $(value $p "$1" || echo 0) + $(value $((p + 1)) "$1" || echo 0) )); }
	t_ok "$b: the 12 complete" t_until 15 sh -c "[ \$(( \$(curl -s http://127.0.0.1:$p/metrics | grep -F 'au_computations_total{$S,outcome=\"completed\"} ' | awk '{print \$NF}') + 0 + \$(curl -s http://127.0.0.1:$((p + 1))/metrics | grep -F 'au_computations_total{$S,outcome=\"completed\"} ' | awk '{print \$NF}') + 0 )) = 12 ]"
	row() { "$au" stats --json | grep -F "\"task\":\"$1\",\"queue\":\"$Q\""; }
	stats_done() { row au.sleep | grep -q '"completed":12,' && row au.fail | grep -q '"failed":3,'; }
	t_ok "$b: au stats sums both processes (within a beat)" t_until 10 stats_done
	r=$(row au.sleep)
	t_match "$b: au stats --json: the au.sleep row" "$r" \
		"\"metrics\":true,\"completed\":12,\"failed\":0,\"retried\":0,\"dead\":0,\"cancelled\":0,\"in_flight\":0,\"run_p50_s\":0\\.[0-9]+,\"run_p95_s\":0\\.[0-9]+,\"wait_p95_s\":[0-9.]+"
	t_match "$b: the run time p50 is in the 50-100 ms bucket" "$r" "\"run_p50_s\":0\\.(0[5-9]|1)"
	t_match "$b: au stats table" "$("$au" stats)" "au\\.sleep +$Q +[12] +12 +0 +0 +0 +0 +[0-9.]+ms +[0-9.]+ms +[0-9.]+m?s"
	t_match "$b: au stats table: the au.fail row" "$("$au" stats)" "au\\.fail +$Q +[12] +0 +3 +0 +0 +0 "
	kill -TERM $f
	wait $f 2>/dev/null
	t_eq "$b: the fleet stops cleanly" "$?" 0
done

# --- a reload: the new child of the slot waits for the port its old one drains on
export AU_QUEUE=$AU_TEST_REDIS
Q=h$RANDOM$RANDOM
p=$((base + 8))
echo "AU_CONCURRENCY=2" >"$dir/au.conf"
"$au" worker --queue "$Q" --processes 1 --config "$dir/au.conf" --metrics-addr "127.0.0.1:$p" \
	2>"$dir/hup.log" &
f=$!
pids="$pids $f"
t_ok "reload: the child serves /metrics" t_until 10 up $p
kill -HUP $f
twice() { [ "$(grep -c "metrics on http://127.0.0.1:$p/metrics" "$dir/hup.log")" -ge 2 ]; }
t_ok "reload: the new child listens once the old one is gone" t_until 15 twice
t_ok "reload: /metrics answers again" t_until 10 up $p
kill -TERM $f
wait $f 2>/dev/null

# --- a worker without metrics counts from its beat
export AU_QUEUE=$AU_TEST_REDIS
Q=n$RANDOM$RANDOM
"$au" worker --queue "$Q" 2>"$dir/plain.log" &
w=$!
pids="$pids $w"
for i in 1 2 3; do "$au" enqueue au.noop --queue "$Q" >/dev/null; done
plain() { "$au" stats --json | grep -F "\"task\":\"(all tasks)\",\"queue\":\"$Q\"" | grep -q '"metrics":false,"completed":3,'; }
t_ok "a worker without --metrics-addr is in au stats from its beat's totals" t_until 10 plain
kill -TERM $w
wait $w 2>/dev/null

t_match "au stats --help" "$("$au" stats --help)" "^usage: au stats \\[--json\\]"
t_match "au help stats" "$("$au" help stats)" "^usage: au stats"
t_match "au help lists stats" "$("$au" help)" "  stats  +the fleet's figures"
out=$("$au" stats extra 2>&1)
t_eq "au stats takes no arguments (exit 2)" "$?" 2
t_done
