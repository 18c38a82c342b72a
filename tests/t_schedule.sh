#!/usr/bin/env bash
# t_schedule.sh - schedules across processes, on Redis, under a test clock
# (AU_TEST_CLOCK_MS, _AT, _RATE: worker/schedule.h): three workers fire
# each tick of a minute schedule exactly once (counted from their logs);
# five `au schedule add` at once leave one schedule; after the workers were
# stopped and the clock moved 3 h on, skip / latest / all fire 0, 1, 18;
# pause, resume, rm and their exit codes.
# Needs the kv space of the Redis queue (backends/queue.h kv_*): until the
# redisflow branch is merged, this test fails here.
# Needs AU_BIN, AU_TEST_REDIS (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=${AU_TEST_CH:-http://127.0.0.1:1/}
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_schedule.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT
T0=1796169600000   # 2026-12-01 00:00:00 UTC
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
workers() { # queue, log prefix: three workers
	local i
	for i in 1 2 3; do
		"$au" worker --queue "$1" >/dev/null 2>"$dir/$2.$i.log" &
		pids+=($!)
	done
}
stop_workers() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	pids=()
}

# 5 registrations at once: one schedule
export AU_TEST_CLOCK_MS=$T0 AU_TEST_CLOCK_AT=$(now_ms) AU_TEST_CLOCK_RATE=600
for i in 1 2 3 4 5; do
	"$au" schedule add every --cron '* * * * *' --queue s-every au.noop >"$dir/add.$i" 2>&1 &
done
wait
t_eq "5 adds at once: one created" "$(cat "$dir"/add.[1-5] | grep -c "^created every$")" 1
t_eq "the 4 others found it unchanged" "$(cat "$dir"/add.[1-5] | grep -c '^unchanged every$')" 4
t_eq "one schedule listed" "$("$au" schedule list --json | jq length)" 1

# three workers, 600x: ten minute ticks a second, for 20 s
workers s-every every
sleep 20
"$au" schedule pause every
sleep 2
stop_workers
ids=$(cat "$dir"/every.*.log | grep -o '[0-9a-f]\{32\} au.noop .*completed' | awk '{print $1}')
n=$(printf '%s\n' "$ids" | grep -c .)
u=$(printf '%s\n' "$ids" | sort -u | grep -c .)
last=$("$au" schedule show every --json | jq .last_fired_ms)
want=$(( (last - T0) / 60000 ))
t_ok "many ticks fired ($u)" [ "$u" -ge 100 ]
t_eq "each tick ran once" "$n" "$u"
t_eq "every tick from the start to the last fired" "$u" "$want"
t_ok "each worker fired some" [ "$(for f in "$dir"/every.*.log; do grep -c completed "$f"; done | grep -c '^0$')" = 0 ]

# missed ticks: stop, move the clock 3 h 5 min on, restart
export AU_TEST_CLOCK_MS=$((T0 + 86400000 + 60000)) AU_TEST_CLOCK_AT=$(now_ms) AU_TEST_CLOCK_RATE=1
for m in skip latest all; do
	"$au" schedule add "m-$m" --cron '*/10 * * * *' --queue "s-$m" --missed $m \
		--catchup-window 3h au.noop >/dev/null
done
AU_QUEUES_ALL=s-skip,s-latest,s-all
workers "$AU_QUEUES_ALL" before
sleep 2
stop_workers
export AU_TEST_CLOCK_MS=$((T0 + 86400000 + 3 * 3600000 + 360000)) AU_TEST_CLOCK_AT=$(now_ms)
workers "$AU_QUEUES_ALL" after
sleep 3
stop_workers
for m in skip:0 latest:1 all:18; do
	q=s-${m%:*}
	t_eq "missed ${m%:*}: ${m#*:} fired" "$(cat "$dir"/after.*.log | grep -c "queue=$q .*completed")" "${m#*:}"
done

# pause, resume, rm
"$au" schedule resume every; t_eq "resume: exit 0" $? 0
t_match "show says active" "$("$au" schedule show every)" "paused: +no"
"$au" schedule rm every; t_eq "rm: exit 0" $? 0
"$au" schedule rm every 2>"$dir/err"; t_eq "rm again: exit 1" $? 1
t_eq "and says why" "$(cat "$dir/err")" "au: no schedule 'every'"
"$au" schedule add x --cron '*/0 * * * *' au.noop 2>"$dir/err"; t_eq "bad cron: exit 2" $? 2
t_eq "and says why" "$(head -1 "$dir/err")" "au: invalid cron expression '*/0 * * * *': step 0 in field 'minute'"
"$au" schedule add x --cron '* * * * *' --tz Europe/Berln au.noop 2>"$dir/err"; t_eq "bad zone: exit 2" $? 2
t_eq "and says why" "$(head -1 "$dir/err")" "au: unknown time zone 'Europe/Berln'"
t_done
