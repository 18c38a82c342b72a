#!/usr/bin/env bash
# demo.sh - `make demo`: au end to end on real servers. Starts Redis and
# ClickHouse, runs 2 workers, enqueues a few hundred ClickHouse computations
# (create a table, insert rows, aggregate), shows progress and statuses,
# prints some results, runs a small flow of ch.op operations and shows its
# tree and the lineage of its table, and stops everything.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
au="$PWD/$BUILD/au"
export AU_PORT_BASE=${AU_PORT_BASE:-17400}
. tests/servers.sh
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting Redis and ClickHouse on 127.0.0.1 (temporary directories)"
servers_start redis ch || exit 1
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$AU_TEST_TMP/results" AU_CLICKHOUSE=$AU_TEST_CH
echo "AU_QUEUE=$AU_QUEUE"
echo "AU_STORE=$AU_STORE"
echo "AU_CLICKHOUSE=$AU_CLICKHOUSE"

say "au's own ClickHouse tables (the operation log)"
"$au" migrate --clickhouse || exit 1

say "starting 2 workers"
"$au" worker --concurrency 16 2>"$AU_TEST_TMP/worker1.log" &
w1=$!
"$au" worker --concurrency 16 2>"$AU_TEST_TMP/worker2.log" &
w2=$!
stop_workers() { kill -TERM $w1 $w2 2>/dev/null; wait $w1 $w2 2>/dev/null; }
trap 'stop_workers; servers_stop' EXIT

say "1 computation: create the table (ch.exec)"
"$au" enqueue ch.exec --wait --args '{"sql":"CREATE TABLE IF NOT EXISTS demo_sales (day Date, shop UInt32, amount Float64) ENGINE = MergeTree ORDER BY (day, shop)"}' || exit 1

say "200 computations: insert 50 rows each (ch.insert)"
awk 'BEGIN { srand(42); for (b = 0; b < 200; b++) {
	printf "{\"table\":\"demo_sales\",\"rows\":["
	for (r = 0; r < 50; r++) {
		d = int(rand() * 28) + 1; s = int(rand() * 100); a = int(rand() * 100000) / 100
		printf "%s{\"day\":\"2026-02-%02d\",\"shop\":%d,\"amount\":%.2f}", (r ? "," : ""), d, s, a
	}
	print "]}" } }' >"$AU_TEST_TMP/inserts.jsonl"
"$au" enqueue ch.insert --args-file "$AU_TEST_TMP/inserts.jsonl" >"$AU_TEST_TMP/insert.ids"
echo "enqueued $(wc -l <"$AU_TEST_TMP/insert.ids") computations"

progress() { # waits until the queue is empty, printing its counters
	local line
	while :; do
		line=$("$au" queues | awk '$1 == "default" { print "ready " $2 ", scheduled " $3 ", running " $4 ", dead " $5 }')
		printf '  %s\n' "$line"
		case "$line" in "ready 0, scheduled 0, running 0"*) break ;; esac
		sleep 0.2
	done
}
progress
statuses() { # counts the statuses of the ids in a file
	while read -r id; do "$au" status "$id"; done <"$1" | sort | uniq -c | sed 's/^/  /'
}
echo "statuses:"
statuses "$AU_TEST_TMP/insert.ids"

say "100 computations: one aggregate per shop (ch.query with a typed parameter)"
for s in $(seq 0 99); do
	printf '{"sql":"SELECT shop, count() AS sales, round(sum(amount), 2) AS total FROM demo_sales WHERE shop = {shop:UInt32} GROUP BY shop","params":{"shop":%d}}\n' "$s"
done >"$AU_TEST_TMP/queries.jsonl"
"$au" enqueue ch.query --args-file "$AU_TEST_TMP/queries.jsonl" >"$AU_TEST_TMP/query.ids"
progress
echo "statuses:"
statuses "$AU_TEST_TMP/query.ids"
echo "first results (shop, sales, total):"
head -5 "$AU_TEST_TMP/query.ids" | while read -r id; do
	printf '  %s  ' "$id"; "$au" result "$id" | sed 's/.*"rows":\[\[\(.*\)\]\]}/\1/'
done

say "1 computation: sales per week, waited for (--wait)"
"$au" enqueue ch.query --wait --args '{"sql":"SELECT toMonday(day) AS week, count() AS sales, round(sum(amount), 2) AS total FROM demo_sales GROUP BY week ORDER BY week"}'

say "a computation that fails: unknown table"
id=$("$au" enqueue ch.query --args '{"sql":"SELECT count() FROM no_such_table"}')
"$au" wait "$id" --timeout 10000ms
"$au" status "$id"

say "a flow: big sales -> (total per shop, sales per shop) -> a report (ch.op)"
cat >"$AU_TEST_TMP/flow.json" <<'EOF'
{"name": "shop-report", "ttl": "1h", "nodes": [
  {"name": "big", "task": "ch.op",
   "args": {"op": "filter", "input": {"table": "demo_sales", "where": [["amount", ">=", 500]]}}},
  {"name": "total", "task": "ch.op",
   "args": {"op": "sum", "input": {"$table": "big"}, "column": "amount", "group_by": ["shop"]}},
  {"name": "sales", "task": "ch.op",
   "args": {"op": "count", "input": {"$table": "big"}, "group_by": ["shop"]}},
  {"name": "report", "task": "ch.op",
   "args": {"op": "join", "left": {"$table": "total"}, "right": {"$table": "sales"}, "on": "shop",
            "out": {"name": "demo_report", "scope": "persistent"}}}]}
EOF
sed 's/^/  /' "$AU_TEST_TMP/flow.json"
flow=$("$au" flow run "$AU_TEST_TMP/flow.json" --wait 60s) || echo "the flow did not complete"
"$au" flow show "$flow"
echo "the report's first rows (shop, total of big sales, their count):"
curl -sS "$AU_CLICKHOUSE" --data-binary "SELECT shop, round(value, 2), value_right FROM p_demo_report ORDER BY shop LIMIT 5" | sed 's/^/  /'
sleep 0.5   # the operation log is written within 200 ms
echo "its lineage:"
"$au" lineage p_demo_report | sed 's/^/  /'

say "workers' last log lines"
tail -n 3 "$AU_TEST_TMP/worker1.log" "$AU_TEST_TMP/worker2.log"

say "stopping workers and servers"
stop_workers
trap 'servers_stop' EXIT
echo "demo done"
