#!/usr/bin/env bash
# t_fleet.sh - `au worker --processes P`, the supervised fleet: a SIGKILLed
# child is restarted and its leases rescued, on a Redis and on a PostgreSQL
# queue (each id then has one completed record, the killed ones two
# attempts); a crash loop backs off; --max-tasks recycles children; SIGTERM
# drains them all and exits 0; SIGHUP replaces them with the settings file's
# new concurrency and log level, without losing or re-running a computation.
# Results go to PostgreSQL, where one query counts them by their bytes.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets
# them); starts a Redis of its own on AU_PORT_BASE + 12.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_fleet.XXXXXX")
rport=${AU_TEST_REDIS##*:}
cport=$((${AU_PORT_BASE:-17300} + 12))
export AU_CLICKHOUSE=$AU_TEST_CH
fpid= cpid=
dbs=
cleanup() {
	[ -n "$fpid" ] && kill -KILL "$fpid" 2>/dev/null
	[ -n "$cpid" ] && kill -KILL "$cpid" 2>/dev/null
	pkill -KILL -f "au worker --queue f$$" 2>/dev/null
	wait 2>/dev/null
	for db in $dbs; do psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1; done
}
trap cleanup EXIT
n=0
newq() { n=$((n + 1)); Q="f$$x$n"; }
newdb() { # a database of its own for a part of the test: sets $db, $dburl
	db="au_fleet_$$_$n"
	psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" >/dev/null || exit 1
	dbs="$dbs $db"
	dburl="${AU_TEST_PG%/*}/$db"
	"$au" migrate --queue-url "$dburl" --store-url "$dburl" >/dev/null || exit 1
}
sql() { psql -tAq "$dburl" -c "$1"; }
fleet() { # log, args...: a supervised worker in the background, sets $fpid
	local log=$1; shift
	"$au" worker --queue "$Q" "$@" 2>>"$log" &
	fpid=$!
}
children() { pgrep -P "$fpid" | sort; }
nchildren() { children | wc -l; }
stop_fleet() { kill -TERM "$fpid" 2>/dev/null; wait "$fpid"; frc=$?; fpid=; }
enqueue_sleeps() { # count, ms: onto $Q, ids into $dir/ids
	seq 1 "$1" | sed "s/.*/{\"ms\":$2,\"i\":&}/" >"$dir/args.jsonl"
	"$au" enqueue au.sleep --queue "$Q" --args-file "$dir/args.jsonl" >"$dir/ids"
}
# The records, matched on their msgpack bytes (docs/wire-format.md): the
# status key and "completed", the attempts key and a value, the result key
# and nil last (au.sleep completes with nil).
H_DONE=$(printf '\xa6status\xa9completed' | od -An -tx1 | tr -d ' \n')
H_ATT=$(printf '\xa8attempts' | od -An -tx1 | tr -d ' \n')
H_NIL=$(printf '\xa6result\xc0' | od -An -tx1 | tr -d ' \n')
nrecords() { sql "SELECT count(*) FROM au_results"; }
# "<records of the ids enqueued> <completed with nil> <attempts 1> <attempts 2>"
tally() {
	psql -tAq "$dburl" -F ' ' <<SQL
CREATE TEMP TABLE want (id uuid);
\copy want FROM '$dir/ids'
SELECT count(*),
       count(*) FILTER (WHERE h LIKE '%$H_DONE%' AND h LIKE '%$H_NIL'),
       count(*) FILTER (WHERE h LIKE '%${H_ATT}01%'),
       count(*) FILTER (WHERE h LIKE '%${H_ATT}02%')
FROM (SELECT encode(record, 'hex') AS h FROM au_results r JOIN want USING (id)) x;
SQL
}
twice() { # the ids whose record says 2 attempts, one per line
	sql "SELECT replace(id::text, '-', '') FROM au_results WHERE encode(record, 'hex') LIKE '%${H_ATT}02%'" | sort
}
# The ids leased on queue $Q right now, one per line (docs/redis-layout.md,
# docs/postgres.md).
leased_redis() {
	{
		redis-cli -p "$rport" --scan --pattern "au:{$Q}:batch:*" |
			while read -r k; do redis-cli -p "$rport" SMEMBERS "$k"; done
		redis-cli -p "$rport" ZRANGE "au:{$Q}:leased" 0 -1
	} | grep -E '^[0-9a-f]{32}$' | sort -u
}
leased_pg() { sql "SELECT replace(id::text, '-', '') FROM au_jobs WHERE queue = '$Q' AND state = 1" | sort; }
# for t_until, which runs its command again each time
is() { [ "$($1)" = "$2" ]; }
at_least() { [ "$($1)" -ge "$2" ]; }
qstats() { "$au" queues --json | grep "\"queue\":\"$Q\"" | sed 's/.*"ready":\([0-9]*\).*"running":\([0-9]*\).*"dead":\([0-9]*\).*/ready \1 running \2 dead \3/'; }

# --- SIGKILL one of two children mid-run: restarted, its leases rescued
kill_run() { # name, queue url, leased-ids function
	local name=$1 url=$2 leased=$3 victim others t0 got
	newq
	newdb
	[ "$url" = pg ] && url=$dburl
	export AU_QUEUE=$url AU_STORE=$dburl
	enqueue_sleeps 5000 10
	fleet "$dir/kill-$name.log" --processes 2 --concurrency 8 --lease 1500 --quiet
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

# --- a child that cannot start: restarts back off, then resume by themselves
newq
newdb
export AU_QUEUE="redis://127.0.0.1:$cport" AU_STORE=$dburl
cache_up() {
	redis-server --port "$cport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
		--logfile "$dir/crash-redis.log" &
	cpid=$!
	t_until 10 redis-cli -p "$cport" ping >/dev/null
}
cache_up
fleet "$dir/crash.log" --processes 2 --restart-delay 100 --quiet
t_ok "crash loop: two worker processes" t_until 10 is nchildren 2
kill -KILL "$cpid"; wait "$cpid" 2>/dev/null; cpid=
kill -KILL $(children)
sleep 4
restarts=$(grep -c 'restarting in' "$dir/crash.log")
echo "# $restarts restarts in 4 s"
t_ok "crash loop: children that cannot connect are restarted ($restarts in 4 s)" test "$restarts" -ge 6
t_ok "crash loop: with a back-off, not in a spin" test "$restarts" -le 20
t_match "crash loop: each death logged with its cause" "$(cat "$dir/crash.log")" \
	"worker process [0-9]+ exited with status 5; restarting in 1.6 s"
t_match "crash loop: the child says why" "$(cat "$dir/crash.log")" \
	"unable to connect to 'redis://127.0.0.1:$cport': connection refused"
cache_up
t_ok "crash loop: once the server is back two children stay up" \
	t_until 15 sh -c "sleep 1; test \$(pgrep -P $fpid | wc -l) = 2"
id=$("$au" enqueue au.echo --queue "$Q" --args '{"back":1}')
t_eq "crash loop: and run computations" "$("$au" wait "$id" --queue "$Q" --timeout 10000)" '{"back":1}'
stop_fleet
t_eq "crash loop: the fleet stops with 0" "$frc" 0
kill -KILL "$cpid"; wait "$cpid" 2>/dev/null; cpid=

# --- --max-tasks: children are recycled, all the work is done once
newq
newdb
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$dburl
enqueue_sleeps 1000 1
fleet "$dir/recycle.log" --processes 2 --max-tasks 100 --concurrency 8
t_ok "max-tasks: all 1000 complete" t_until 60 at_least nrecords 1000
read -r total good one two <<<"$(tally)"
t_eq "max-tasks: each completed once" "$total $good $one" "1000 1000 1000"
pids=$(grep -o 'worker [^ ]*:[0-9]* on queue' "$dir/recycle.log" | sort -u | wc -l)
t_ok "max-tasks: at least 10 children did the work ($pids)" test "$pids" -ge 10
t_eq "max-tasks: a recycled child is replaced without back-off" \
	"$(grep -c 'restarting in' "$dir/recycle.log")" 0
t_match "max-tasks: a recycle is logged" "$(cat "$dir/recycle.log")" \
	"worker process [0-9]+ exited after its 100 tasks; starting a new one"
t_ok "max-tasks: two children afterwards" t_until 5 is nchildren 2
stop_fleet
t_eq "max-tasks: the fleet stops with 0" "$frc" 0

# --- SIGTERM with two children during a run: drain, nothing left leased
newq
newdb
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$dburl
enqueue_sleeps 200 500
fleet "$dir/term.log" --processes 2 --concurrency 6 --grace 5000 --quiet
running() { [ "$(qstats | awk '{ print $4 }')" -ge 8 ]; }
t_ok "sigterm: computations are running" t_until 15 running
sleep 0.2
t0=$(date +%s%N)
stop_fleet
ms=$((($(date +%s%N) - t0) / 1000000))
t_eq "sigterm: the fleet exits 0" "$frc" 0
t_ok "sigterm: within the grace period ($ms ms)" test "$ms" -lt 5000
read -r total good one two <<<"$(tally)"
t_ok "sigterm: the in-flight ones finished ($total)" test "$total" -ge 8
t_eq "sigterm: each once, completed" "$good $one" "$total $total"
read -r _ ready _ running _ dead <<<"$(qstats)"
t_eq "sigterm: nothing left leased" "$running" 0
t_eq "sigterm: the rest waits on the queue" "$((ready + total)) $dead" "200 0"
t_eq "sigterm: no worker process left" "$(pgrep -f "au worker --queue $Q" | wc -l)" 0

# --- SIGHUP: the settings file's concurrency and log level, no work lost
newq
newdb
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$dburl
printf '# au worker settings\nAU_CONCURRENCY=3\nAU_LOG_LEVEL=info\n' >"$dir/worker.env"
enqueue_sleeps 2000 15
fleet "$dir/hup.log" --processes 2 --quiet --config "$dir/worker.env"
conc3() { grep -c "on queue '$Q' (concurrency 3," "$dir/hup.log"; }
t_ok "sighup: two children with concurrency 3" t_until 10 is conc3 2
old=$(children)
t_ok "sighup: the run is under way" t_until 30 at_least nrecords 200
printf 'AU_CONCURRENCY=7\nexport AU_LOG_LEVEL="debug"\n' >"$dir/worker.env"
kill -HUP "$fpid"
replaced() { # the old pids: true once two children run and none of them is old
	[ "$(nchildren)" = 2 ] && [ "$(children | grep -cvxF "$1")" = 2 ]
}
t_ok "sighup: both children replaced" t_until 20 replaced "$old"
new=$(children)
t_match "sighup: the reload is logged" "$(cat "$dir/hup.log")" \
	"reloaded: concurrency 7, log level debug; replacing 2 worker processes one at a time"
t_match "sighup: the parent logs at the new level" "$(cat "$dir/hup.log")" "debug: started worker process"
c7=0
for p in $new; do grep -q ":$p on queue '$Q' (concurrency 7," "$dir/hup.log" && c7=$((c7 + 1)); done
t_eq "sighup: the new children run with concurrency 7" "$c7" 2
printf 'AU_CONCURRENCY=7\nAU_LOG_LEVEL=error\n' >"$dir/worker.env"
kill -HUP "$fpid"
t_ok "sighup: replaced again" t_until 20 replaced "$new"
newer=$(children)
quiet=0
for p in $newer; do grep -q ":$p on queue" "$dir/hup.log" || quiet=$((quiet + 1)); done
t_eq "sighup: at log level error the new children log no info line" "$quiet" 2
printf 'AU_CONCURRENCY=lots\n' >"$dir/worker.env"
kill -HUP "$fpid"
sleep 0.5
t_eq "sighup: a bad file is refused and the children kept" "$(children)" "$newer"
t_match "sighup: and says why" "$(cat "$dir/hup.log")" "invalid value 'lots' for AU_CONCURRENCY"
t_ok "sighup: all 2000 complete" t_until 60 at_least nrecords 2000
read -r total good one two <<<"$(tally)"
t_eq "sighup: none lost, none run twice" "$total $good $one" "2000 2000 2000"
t_eq "sighup: the queue is empty" "$(qstats)" "ready 0 running 0 dead 0"
stop_fleet
t_eq "sighup: the fleet stops with 0" "$frc" 0

[ "$_t_fail" = 0 ] && rm -rf "$dir"
t_done
