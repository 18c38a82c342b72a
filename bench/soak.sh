#!/usr/bin/env bash
# soak.sh - does a worker stay flat? One worker with 64 computations in
# flight on a Redis queue and store runs ROUNDS x 50,000 computations
# (default 6); it prints the worker's RSS and open descriptors at start and
# after each round, which should not grow, and at the end how many
# computations have no record (lost, which must be 0).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
au="$PWD/$BUILD/au"
export AU_PORT_BASE=${AU_PORT_BASE:-17860}
. tests/servers.sh
servers_start redis >/dev/null || exit 1
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS
seq 1 1000 | sed 's/.*/[&]/' >"$AU_TEST_TMP/args.jsonl"
"$au" worker --queue soak --quiet --concurrency 64 --batch 64 2>/dev/null &
wpid=$!
sleep 0.3
rss_start=$(awk '/VmRSS/{print $2}' /proc/$wpid/status)
echo "at start: worker RSS $rss_start kB, $(ls /proc/$wpid/fd | wc -l) descriptors"
for round in $(seq 1 "${ROUNDS:-6}"); do
	for _ in $(seq 1 50); do
		"$au" enqueue au.echo --queue soak --ttl 3600 --args-file "$AU_TEST_TMP/args.jsonl" >/dev/null || exit 1
	done
	until "$au" queues --json | grep -q '"queue":"soak","ready":0,"scheduled":0,"running":0'; do
		sleep 0.2
	done
	echo "after $((round * 50000)) computations: worker RSS $(awk '/VmRSS/{print $2}' /proc/$wpid/status) kB, $(ls /proc/$wpid/fd | wc -l) descriptors"
done
rss_end=$(awk '/VmRSS/{print $2}' /proc/$wpid/status)
kill -TERM $wpid
wait $wpid
total=$((${ROUNDS:-6} * 50000))
records=$(redis-cli -p "$AU_TEST_REDIS_PORT" --scan --pattern 'au:r:*' | wc -l)
echo "soak of $total computations: worker RSS $rss_start kB at start, $rss_end kB at the end; lost $((total - records)) (records $records)"
