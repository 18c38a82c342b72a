#!/usr/bin/env bash
# t_ratelimit.sh - `au worker --middleware ratelimit:SPEC`: two worker
# processes share one token bucket on the queue's server, on Redis and on
# PostgreSQL. 150 computations of a task limited to 50/s, enqueued at once,
# finish at 50/s (within 10%, after the first second), all completed at
# their first attempt: delayed, not failed. A task the spec does not name
# is not held back; a bucket per value of an argument; a bad spec is
# refused at start. Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_ratelimit.XXXXXX")
export AU_CLICKHOUSE=${AU_TEST_CH:-http://127.0.0.1:1/default}
rport=${AU_TEST_REDIS##*:}
wpid= dbs=
cleanup() {
	[ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null
	for db in $dbs; do psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1; done
	rm -rf "$dir"
}
trap cleanup EXIT

# A worker fleet in the background on queue $Q: sets $wpid
fleet() { # log, args...
	local log=$1; shift
	"$au" worker --queue "$Q" --processes 2 --quiet "$@" 2>>"$log" &
	wpid=$!
	t_until 10 sh -c "test \$(pgrep -P $wpid | wc -l) = 2"
}
stop() { kill -TERM "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; frc=$?; wpid=; }
# "status attempts finished_at" of each id of file $1, sorted by finish
outcomes() {
	xargs -P 4 -n 1 "$au" status --queue "$Q" --json <"$1" 2>/dev/null |
		jq -r '"\(.status) \(.attempts) \(.finished_at // 0)"' | sort -k3,3n
}
is_completed() { [ "$("$au" status --queue "$Q" "$1" 2>/dev/null)" = completed ]; }
all_done() { # ids file: every id has a completed record (the last one first); the
	# outcomes in FILE.out
	is_completed "$(tail -1 "$1")" && outcomes "$1" >"$1.out" &&
		[ "$(grep -c '^completed ' "$1.out")" = "$(wc -l <"$1")" ]
}
last_finish() { tail -1 "$1.out" | cut -d' ' -f3; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

run() { # name, queue and store url
	local name=$1 url=$2 out n t0 t1 rate
	Q="rl$$$name"
	export AU_QUEUE=$url AU_STORE=$url
	log="$dir/$name.log"
	t_ok "$name: two worker processes start" \
		fleet "$log" --middleware "ratelimit:au.noop=50/s,au.echo[table]=5/s"

	# not in the spec: no round trip, no delay (a 50/s limit would need 4 s)
	seq 1 100 | sed 's/.*/{"i":&}/' >"$dir/free.jsonl"
	t0=$(now_ms)
	"$au" enqueue au.sleep --queue "$Q" --args-file "$dir/free.jsonl" >"$dir/free"
	t_ok "$name: 100 of a task not in the spec complete" t_until 20 all_done "$dir/free"
	t1=$(last_finish "$dir/free")
	t_ok "$name: ... at once, within 2 s of their enqueue ($((t1 - t0)) ms)" [ $((t1 - t0)) -lt 2000 ]

	# 150 at once, limited to 50/s across both processes
	seq 1 150 | sed 's/.*/{"i":&}/' >"$dir/args.jsonl"
	"$au" enqueue au.noop --queue "$Q" --args-file "$dir/args.jsonl" >"$dir/ids"
	t_eq "$name: 150 enqueued" "$(wc -l <"$dir/ids")" 150
	if [ "$name" = redis ]; then
		sleep 0.5
		t_eq "redis: the bucket is au:rate:<task>" \
			"$(redis-cli -p "$rport" -n 3 --scan --pattern 'au:rate:au.n*')" au:rate:au.noop
		t_ok "redis: ... with a ttl" [ "$(redis-cli -p "$rport" -n 3 pttl au:rate:au.noop)" -gt 0 ]
	else
		sleep 0.5
		t_eq "pg: the bucket is a row of au_rate" \
			"$(psql -tAq "$url" -c "SELECT key FROM au_rate WHERE key LIKE 'au.n%'")" au.noop
	fi
	t_ok "$name: all 150 complete" t_until 30 all_done "$dir/ids"
	out=$(cat "$dir/ids.out")
	t_eq "$name: none failed, each at its first attempt" \
		"$(printf '%s\n' "$out" | grep -c '^completed 1 ')" 150
	# the steady part: from the 51st finish (past the first second) to the last
	n=$(printf '%s\n' "$out" | wc -l)
	t0=$(printf '%s\n' "$out" | sed -n 51p | cut -d' ' -f3)
	t1=$(printf '%s\n' "$out" | sed -n "${n}p" | cut -d' ' -f3)
	rate=$(awk -v n=$((n - 51)) -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", ms ? n * 1000 / ms : 0 }')
	echo "# $name: $((n - 51)) finished in $((t1 - t0)) ms after the first second: $rate/s"
	t_ok "$name: the fleet is held to 50/s within 10% ($rate/s)" \
		awk -v r="$rate" 'BEGIN { exit !(r >= 45 && r <= 55) }'
	t_eq "$name: no dead letter" "$("$au" dlq list --queue "$Q" 2>/dev/null | grep -c '[0-9a-f]\{32\}')" 0

	# a bucket per value of the argument: two tables at 5/s each
	for t in a b; do seq 1 10 | sed "s/.*/{\"table\":\"$t\",\"i\":&}/"; done >"$dir/tables.jsonl"
	t0=$(now_ms)
	"$au" enqueue au.echo --queue "$Q" --args-file "$dir/tables.jsonl" >"$dir/tables"
	sleep 0.5
	if [ "$name" = redis ]; then
		t_eq "redis: a bucket per table" \
			"$(redis-cli -p "$rport" -n 3 --scan --pattern 'au:rate:au.e*' | sort | tr '\n' ' ')" \
			"au:rate:au.echo[table=a] au:rate:au.echo[table=b] "
	else
		t_eq "pg: one row of au_rate per table" \
			"$(psql -tAq "$url" -c "SELECT string_agg(key, ' ' ORDER BY key) FROM au_rate
				WHERE key LIKE 'au.e%'")" "au.echo[table=a] au.echo[table=b]"
	fi
	t_ok "$name: per table: 20 complete" t_until 20 all_done "$dir/tables"
	t1=$(last_finish "$dir/tables")
	out=$(head -10 "$dir/tables" >"$dir/table-a"; outcomes "$dir/table-a")
	t0a=$(printf '%s\n' "$out" | head -1 | cut -d' ' -f3)
	t1a=$(printf '%s\n' "$out" | tail -1 | cut -d' ' -f3)
	t_ok "$name: per table: the 10 of one table span 9 tokens at 5/s ($((t1a - t0a)) ms)" \
		[ $((t1a - t0a)) -ge 1600 ]
	t_ok "$name: per table: the tables do not share a bucket ($((t1 - t0)) ms for 20)" \
		[ $((t1 - t0)) -lt 3400 ]
	stop
	t_eq "$name: the fleet stops cleanly" "$frc" 0
	t_ok "$name: the workers saw no outage of the rate limit" sh -c "! grep 'rate limit' '$log'"
	t_ok "$name: and no sanitizer report" sh -c "! grep -E 'Sanitizer|runtime error' '$log'"
}

redis-cli -p "$rport" -n 3 flushdb >/dev/null
run redis "$AU_TEST_REDIS/3"
t_ok "redis: idle buckets go once full again" \
	t_until 5 sh -c "[ -z \"\$(redis-cli -p $rport -n 3 --scan --pattern 'au:rate:*')\" ]"

db="au_rl_$$"
psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" >/dev/null && dbs=$db
pgurl="${AU_TEST_PG%/*}/$db"
"$au" migrate --queue-url "$pgurl" --store-url "$pgurl" >/dev/null
run pg "$pgurl"

# refused at start, before anything runs
out=$("$au" worker --queue-url "$AU_TEST_REDIS/3" --middleware "ratelimit:ch.query=fast" 2>&1); rc=$?
t_eq "a bad spec: exit 2" "$rc" 2
t_match "... and why" "$out" "^au: bad rate limit 'ch.query=fast': expected TASK=N/s"
out=$("$au" worker --middleware "ratelimit:a=1/s,b=2/x:burst=3" 2>&1)
t_match "the rule at fault is named" "$out" "bad rate limit 'b=2/x:burst=3': expected TASK=N/s"
out=$("$au" worker --middleware "ratelimit:a=1/s:burst=0.5" 2>&1)
t_match "a burst under 1" "$out" "bad rate limit 'a=1/s:burst=0.5': burst must be at least 1"
out=$("$au" worker --middleware "a=1/s" 2>&1); rc=$?
t_eq "an unknown middleware: exit 2" "$rc" 2
t_match "... and what is known" "$out" "unknown middleware 'a=1/s' \(built in: logging, tracing, ratelimit, timeout\)"
t_done
