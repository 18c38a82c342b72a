#!/usr/bin/env bash
# run.sh - `make bench`: starts throwaway servers and prints au's figures.
# BENCH_N (default 20000) sets the number of computations; BENCH_WORKERS
# (2), BENCH_BATCH_REDIS (1000) and BENCH_BATCH_PG (500) the workers. With
# BENCH_SOAK_ROUNDS (4) rounds of 50,000 for the soak at the end. With
# PEERS=1 it also runs ../shared/bench/peers (BullMQ, graphile-worker) for a
# same-run comparison.
set -u
cd "$(dirname "$0")/.."
# each worker process the bench starts warns alike (a throwaway Redis keeps
# nothing across a restart): each distinct line once
exec 2> >(awk '!seen[$0]++' >&2)
BUILD=${BUILD:-build/rel}
export AU_PORT_BASE=${AU_PORT_BASE:-17800}
export AU_PG_DURABLE=1   # fsync and synchronous_commit on, as the peers ran
. tests/servers.sh
servers_start redis pg ch || exit 1
N=${BENCH_N:-20000}
echo "== au on Redis ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"
BENCH_BATCH=${BENCH_BATCH_REDIS:-1000} "$BUILD/bench/bench" "$AU_TEST_REDIS" "$AU_TEST_REDIS" "$AU_TEST_CH" "$N"
echo
echo "== au on Redis, ${BENCH_N_LONG_REDIS:-300000} computations (latency after a long run)"
BENCH_NO_FLEET=1 BENCH_NO_FLOWS=1 BENCH_BATCH=${BENCH_BATCH_REDIS:-1000} "$BUILD/bench/bench" "$AU_TEST_REDIS" "$AU_TEST_REDIS" - "${BENCH_N_LONG_REDIS:-300000}"
echo
echo "== au on PostgreSQL (queue and store; synchronous_commit on)"
BENCH_BATCH=${BENCH_BATCH_PG:-500} "$BUILD/bench/bench" "$AU_TEST_PG" "$AU_TEST_PG" - "$N"
echo
echo "== au on PostgreSQL, ${BENCH_N_LONG:-200000} computations (does leasing hold up as the table churns?)"
BENCH_NO_FLEET=1 BENCH_NO_FLOWS=1 BENCH_BATCH=${BENCH_BATCH_PG:-500} "$BUILD/bench/bench" "$AU_TEST_PG" "$AU_TEST_PG" - "${BENCH_N_LONG:-200000}"
echo
echo "== soak: ${BENCH_SOAK_ROUNDS:-4} x 50,000 computations through one worker (Redis)"
ROUNDS=${BENCH_SOAK_ROUNDS:-4} AU_PORT_BASE=$((AU_PORT_BASE + 60)) BUILD=$BUILD bench/soak.sh
if [ "${PEERS:-0}" = 1 ] && [ -d ../shared/bench/peers ]; then
	# ../shared is read-only: the peers run from a copy with their npm packages.
	peers=${PEERS_DIR:-/tmp/au-peers}
	mkdir -p "$peers" && cp -r ../shared/bench/peers/. "$peers/"
	echo "== peers ($peers, ONLY=${PEERS_ONLY:-bullmq graphile})"
	servers_stop   # the peers start their own servers
	(cd "$peers" && { [ -d node_modules ] || npm install --no-audit --no-fund >/dev/null; } &&
		ONLY="${PEERS_ONLY:-bullmq graphile}" ./run-all.sh)
fi
