#!/usr/bin/env bash
# t_flow.sh - flows end to end through `au flow` and running workers, on
# Redis and on PostgreSQL: a diamond whose last node gets both results (its
# first node run once); a failing middle node that fails what waits for it
# and not its sibling; a running flow cancelled; a fan-out of 100 children
# and their join; 10,000 nodes drained with Redis's command count linear in
# them; a ClickHouse flow (ingest, two ch.op, a join) checked against SQL,
# its final table's lineage, and its temporary tables gone after the flow's
# ttl and not before.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_flow.XXXXXX")
export AU_CLICKHOUSE=$AU_TEST_CH
wpid=
trap '[ -n "$wpid" ] && kill -KILL $wpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
ch() { curl -sS "$AU_TEST_CH" --data-binary "$1"; }
drain() { # queue [idle]: a worker until the queue is idle
	"$au" worker --queue "$1" --concurrency 32 --idle-exit "${2:-1500ms}" --quiet 2>>"$dir/worker.log"
}
node_id() { # flow, name
	"$au" flow show "$1" --json | jq -r ".nodes[] | select(.name == \"$2\") | .id"
}

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl AU_STORE=$qurl
	Q=fl$RANDOM$RANDOM

	# a diamond: a -> (b, c) -> d, d gets both results
	cat >"$dir/diamond.json" <<-EOF
	{"name": "diamond", "nodes": [
	  {"name": "a", "task": "au.echo", "queue": "$Q", "args": {"v": 7}},
	  {"name": "b", "task": "au.echo", "queue": "$Q", "args": {"from": "b", "a": {"\$ref": "a"}}},
	  {"name": "c", "task": "au.echo", "queue": "$Q", "args": {"from": "c", "a": {"\$ref": "a"}}},
	  {"name": "d", "task": "au.echo", "queue": "$Q", "args": [{"\$ref": "b"}, {"\$ref": "c"}], "deps": ["b", "c"]}]}
	EOF
	f=$("$au" flow run "$dir/diamond.json")
	t_match "$b: flow run prints the flow's id" "$f" '^[0-9a-f]{32}$'
	t_eq "$b: before a worker, d waits" "$("$au" status "$(node_id "$f" d)")" waiting
	drain "$Q"
	t_eq "$b: the diamond completed" "$("$au" flow show "$f" --json | jq -r .status)" completed
	t_eq "$b: d got both results, each with a's" "$("$au" result "$(node_id "$f" d)")" \
		'[{"from":"b","a":{"v":7}},{"from":"c","a":{"v":7}}]'
	t_eq "$b: a ran once" "$("$au" result "$(node_id "$f" a)" --json | jq .attempts)" 1
	out=$("$au" flow show "$f")
	t_match "$b: show draws the tree from the root" "$out" "^flow diamond  $f  completed"
	t_match "$b: d under b, then under c as seen" "$out" "      d  completed.*
    c  completed.*
      d  completed  .*\\(see above\\)"
	t_match "$b: flow list names it" "$("$au" flow list)" "$f  completed +4 "

	# a failing middle node: its dependent fails unrun, its sibling completes
	cat >"$dir/fail.json" <<-EOF
	{"name": "fail", "nodes": [
	  {"name": "a", "task": "au.echo", "queue": "$Q", "args": 1},
	  {"name": "b", "task": "au.fail", "queue": "$Q", "args": {"message": "b broke"}, "deps": ["a"], "max_attempts": 1},
	  {"name": "c", "task": "au.echo", "queue": "$Q", "args": 2, "deps": ["a"]},
	  {"name": "d", "task": "au.echo", "queue": "$Q", "args": 3, "deps": ["b"]}]}
	EOF
	f=$("$au" flow run "$dir/fail.json")
	drain "$Q"
	t_eq "$b: failing middle: the flow failed" "$("$au" flow show "$f" --json | jq -r .status)" failed
	t_eq "$b: its sibling completed" "$("$au" status "$(node_id "$f" c)")" completed
	t_match "$b: its dependent failed, unrun, naming it" \
		"$("$au" result "$(node_id "$f" d)" --json | jq -r .error)" "^dependency '[0-9a-f]{32}' failed: b broke$"

	# a running flow cancelled: the running node stopped, the waiting one never runs
	cat >"$dir/cancel.json" <<-EOF
	{"name": "cancel", "nodes": [
	  {"name": "slow", "task": "ch.query", "queue": "$Q", "args": {"sql": "SELECT sleep(3)"}},
	  {"name": "after", "task": "au.echo", "queue": "$Q", "args": 1, "deps": ["slow"]}]}
	EOF
	f=$("$au" flow run "$dir/cancel.json")
	"$au" worker --queue "$Q" --idle-exit 2s --quiet 2>>"$dir/worker.log" &
	wpid=$!
	t_until 10 sh -c "[ \"\$('$au' status $(node_id "$f" slow))\" = running ]"
	t_match "$b: cancel of a running flow" "$("$au" flow cancel "$f")" "^cancelled 2 of the flow's 2 nodes"
	wait $wpid; wpid=
	t_eq "$b: the running node is cancelled" "$("$au" status "$(node_id "$f" slow)")" cancelled
	t_eq "$b: the waiting one never ran" "$("$au" status "$(node_id "$f" after)")" cancelled
	t_eq "$b: the flow is cancelled" "$("$au" flow show "$f" --json | jq -r .status)" cancelled

	# a fan-out of 100 children ($spawn) and the join that gets their results
	spawn=$(seq 0 99 | awk -v q="$Q" '{printf "%s{\"task\":\"au.echo\",\"queue\":\"%s\",\"args\":%d}", (NR > 1 ? "," : ""), q, $1}')
	cat >"$dir/fan.json" <<-EOF
	{"name": "fan", "nodes": [
	  {"name": "p", "task": "au.echo", "queue": "$Q", "args": {"\$spawn": [$spawn]}},
	  {"name": "join", "task": "au.echo", "queue": "$Q", "args": {"all": {"\$ref": "p"}}}]}
	EOF
	f=$("$au" flow run "$dir/fan.json")
	drain "$Q"
	t_eq "$b: fan-out: the join got the 100 results in order" \
		"$("$au" result "$(node_id "$f" join)" | jq -c '.all == [range(100)]')" true
	t_match "$b: show lists the children under p" "$("$au" flow show "$f")" "\\(child\\)  completed"
	# au enqueue --depends-on: one computation waiting for two existing ones
	a=$("$au" enqueue au.echo --queue "$Q" --args 1)
	c=$("$au" enqueue au.echo --queue "$Q" --args 2)
	d=$("$au" enqueue au.echo --queue "$Q" --depends-on "$a,$c" --args "[{\"\$ref\":\"$a\"},{\"\$ref\":\"$c\"}]")
	t_eq "$b: --depends-on: it waits" "$("$au" status "$d")" waiting
	drain "$Q"
	t_eq "$b: --depends-on: then runs with both results" "$("$au" result "$d")" "[1,2]"
	out=$("$au" enqueue au.echo --queue "$Q" --depends-on nope 2>&1)
	t_eq "$b: --depends-on a bad id: exit 2" "$?" 2
	t_match "$b: naming it" "$out" "invalid id 'nope' for --depends-on"
done

# 10,000 nodes (a root, 9,998 waiting for it, a join waiting for them all):
# no poller, so Redis's commands grow with the nodes, not with time waited
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS
Q=big$RANDOM
{
	printf '{"name":"big","nodes":[{"name":"r","task":"au.noop","queue":"%s"}' "$Q"
	seq 1 9998 | awk -v q="$Q" '{printf ",{\"name\":\"n%d\",\"task\":\"au.noop\",\"queue\":\"%s\",\"deps\":[\"r\"]}", $1, q}'
	printf ',{"name":"j","task":"au.noop","queue":"%s","deps":[' "$Q"
	seq 1 9998 | awk '{printf "%s\"n%d\"", (NR > 1 ? "," : ""), $1}'
	printf ']}]}\n'
} >"$dir/big.json"
calls() { redis-cli -p "$AU_TEST_REDIS_PORT" INFO commandstats | awk -F'[=,]' '/^cmdstat_/ {n += $2} END {print n}'; }
c0=$(calls)
f=$("$au" flow run "$dir/big.json")
drain "$Q" 3s
c1=$(calls)
t_eq "10,000 nodes: the flow completed" "$("$au" status "$(node_id "$f" j)")" completed
per=$(( (c1 - c0) / 10000 ))
t_ok "10,000 nodes: $per Redis commands a node (under 40: no polling)" test "$per" -lt 40

# ClickHouse: ingest, two operations, a join; lineage; the tables' end
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS
ch "DROP TABLE IF EXISTS au_operation_log"
ch "DROP TABLE IF EXISTS au_schema_version"
"$au" migrate --clickhouse >/dev/null
Q=chf$RANDOM
cat >"$dir/ch.json" <<EOF
{"name": "sales", "ttl": "4s", "nodes": [
  {"name": "ingest", "task": "ch.op", "queue": "$Q", "args": {"op": "values", "columns": {"k": "String", "x": "Int64"},
    "rows": [["a", 1], ["b", 2], ["a", 3], ["b", 4], ["c", 5], ["a", 10]]}},
  {"name": "sums", "task": "ch.op", "queue": "$Q", "args": {"op": "sum", "input": {"\$table": "ingest"}, "column": "x", "group_by": ["k"]}},
  {"name": "counts", "task": "ch.op", "queue": "$Q", "args": {"op": "count", "input": {"\$table": "ingest"}, "group_by": ["k"]}},
  {"name": "report", "task": "ch.op", "queue": "$Q", "args": {"op": "join", "left": {"\$table": "sums"}, "right": {"\$table": "counts"}, "on": "k"}}]}
EOF
f=$("$au" flow run "$dir/ch.json")
export AU_FLOW_GC_MS=200
"$au" worker --queue "$Q" --idle-exit 12s --quiet 2>>"$dir/worker.log" &
wpid=$!
t_until 20 sh -c "[ \"\$('$au' status $(node_id "$f" report))\" = completed ]"
table=$("$au" result "$(node_id "$f" report)" | jq -r .table)
t_eq "ch flow: the join holds what SQL computes directly" \
	"$(ch "SELECT k, value, value_right FROM $table ORDER BY k")" \
	"$(ch "SELECT k, sum(x), count() FROM (SELECT arrayJoin([('a',1),('b',2),('a',3),('b',4),('c',5),('a',10)]) AS t, t.1 AS k, t.2 AS x) GROUP BY k ORDER BY k")"
sleep 1.5   # the operation log is written within 200 ms of each operation
out=$("$au" lineage "$table" --json)
t_eq "ch flow: lineage lists every operation" "$(echo "$out" | jq -r '[.[].operation] | sort | join(",")')" "count,join,sum,values"
t_eq "ch flow: with the flow's id" "$(echo "$out" | jq -r '[.[].flow] | unique | join(",")')" "$f"
t_eq "ch flow: within its ttl the flow's tables stay" \
	"$(ch "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 't\\_${f}\\_%'")" 4
t_until 15 sh -c "[ \"\$(curl -sS '$AU_TEST_CH' --data-binary \"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 't\\\\_${f}\\\\_%'\")\" = 0 ]"
t_eq "ch flow: past its ttl they are gone" \
	"$(ch "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 't\\_${f}\\_%'")" 0
out=$("$au" flow show "$f" 2>&1)
t_eq "ch flow: and so is the flow: show says so (exit 3)" "$?" 3
kill -TERM $wpid 2>/dev/null; wait $wpid; wpid=
t_done
