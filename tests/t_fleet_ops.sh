#!/usr/bin/env bash
# t_fleet_ops.sh - the supervised fleet as an operator drives it: a crash
# loop backs off and ends by itself once the server is back; --max-tasks
# recycles children without a back-off and does all the work once; SIGTERM
# drains two children and exits 0, nothing left leased; SIGHUP replaces
# them with the settings file's new concurrency and log level without
# losing or re-running a computation, and refuses a bad file.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets
# them); starts a Redis of its own on AU_PORT_BASE + 20.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/fleet_lib.sh"

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
fleet "$dir/crash.log" --processes 2 --restart-delay 100ms --quiet
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
t_eq "crash loop: and run computations" "$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" '{"back":1}'
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
pids=$(grep -o 'worker [^ ]* on queue' "$dir/recycle.log" | sort -u | wc -l)
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
fleet "$dir/term.log" --processes 2 --concurrency 6 --grace 5000ms --quiet
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

# --- the parent SIGKILLed: its children drain by themselves
newq
fleet "$dir/orphans.log" --processes 2 --quiet
t_ok "orphans: two children" t_until 10 is nchildren 2
kids=$(children)
kill -KILL "$fpid"; wait "$fpid" 2>/dev/null; fpid=
gone() { local k; for k in $kids; do kill -0 "$k" 2>/dev/null && return 1; done; return 0; }
t_ok "orphans: the children stop once their parent is gone" t_until 15 gone
t_match "orphans: gracefully" "$(cat "$dir/orphans.log")" "stopped: 0 completed"

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
for p in $new; do grep -Eq ":$p(:[0-9a-f]+)? on queue '$Q' \(concurrency 7," "$dir/hup.log" && c7=$((c7 + 1)); done
t_eq "sighup: the new children run with concurrency 7" "$c7" 2
printf 'AU_CONCURRENCY=7\nAU_LOG_LEVEL=error\n' >"$dir/worker.env"
kill -HUP "$fpid"
t_ok "sighup: replaced again" t_until 20 replaced "$new"
newer=$(children)
quiet=0
for p in $newer; do grep -Eq ":$p(:[0-9a-f]+)? on queue" "$dir/hup.log" || quiet=$((quiet + 1)); done
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
