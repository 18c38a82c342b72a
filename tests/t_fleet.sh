#!/usr/bin/env bash
# t_fleet.sh - `au worker --processes 2`, the supervised fleet, when a
# child is SIGKILLed mid-run with 5,000 computations queued or in flight,
# on a Redis and on a PostgreSQL queue: the child is restarted, its leases
# are rescued within the lease and a sweep, every id has one completed
# record with the task's value, and only those the child held ran twice.
# Results go to PostgreSQL, where one query counts them by their bytes.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fleet_lib.sh"

# --- SIGKILL one of two children mid-run: restarted, its leases rescued
kill_run() { # name, queue url, leased-ids function
	local name=$1 url=$2 leased=$3 victim others t0 got
	newq
	newdb
	[ "$url" = pg ] && url=$dburl
	export AU_QUEUE=$url AU_STORE=$dburl
	enqueue_sleeps 5000 10
	fleet "$dir/kill-$name.log" --processes 2 --concurrency 8 --lease 1500ms --quiet
	t_ok "$name: two worker processes" t_until 10 is nchildren 2
	t_ok "$name: the run is under way" t_until 30 at_least nrecords 800
	victim=$(children | head -1)
	kill -KILL "$victim"
	t0ns=$(date +%s%N)
	$leased >"$dir/leased-$name"
	others=$(children | grep -vx "$victim")
	t0=$SECONDS
	t_ok "$name: a new worker process replaces the killed one" \
		t_until 10 sh -c "test \$(pgrep -P $fpid | grep -cvx '$victim') = 2"
	t_match "$name: its death and restart are logged" "$(cat "$dir/kill-$name.log")" \
		"worker process $victim killed by signal 9 \(Killed\); restarting in 1 s"
	# rescued once their lease (1.5 s) ran out, by the next sweep (every second)
	local ms=0 want list
	want=$(wc -l <"$dir/leased-$name")
	list=$(sed "s/.*/'&'/" "$dir/leased-$name" | paste -sd,)
	while [ "$(sql "SELECT count(*) FROM au_results WHERE id IN ($list)")" != "$want" ]; do
		ms=$((($(date +%s%N) - t0ns) / 1000000))
		[ "$ms" -gt 6000 ] && break
		sleep 0.05
	done
	t_ok "$name: the $want leased when it died all completed within the lease + 4.5 s ($ms ms)" \
		test "$ms" -le 6000
	t_ok "$name: all 5000 complete" t_until 60 at_least nrecords 5000
	echo "# $name: done $((SECONDS - t0)) s after the kill"
	read -r total good one two <<<"$(tally)"
	t_eq "$name: each id has one record" "$total" 5000
	t_eq "$name: each completed with the task's value" "$good" 5000
	t_eq "$name: each ran once or twice" "$((one + two))" 5000
	t_ok "$name: the killed child's computations ran again ($two)" test "$two" -ge 1
	twice >"$dir/twice-$name"
	t_eq "$name: only computations leased when the child died ran twice" \
		"$(comm -23 "$dir/twice-$name" "$dir/leased-$name" | wc -l)" 0
	t_eq "$name: the queue is empty" "$(qstats)" "ready 0 running 0 dead 0"
	stop_fleet
	t_eq "$name: the fleet stops with 0" "$frc" 0
}
kill_run redis "$AU_TEST_REDIS" leased_redis
kill_run postgres pg leased_pg

[ "$_t_fail" = 0 ] && rm -rf "$dir"
t_done
