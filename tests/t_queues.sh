#!/usr/bin/env bash
# t_queues.sh - one worker serving several queues, on each queue backend:
# strict order (a queue is leased from only while those before it have
# nothing), weights (a:3,b:1 shares the leases about 3 to 1 while both have
# work), a queue further down the list wakes the worker and has its leases
# extended like the first, `au workers` names them all, and bad lists and
# names are refused with the reason.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_queues.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
ready() { # queue: its ready count
	"$au" queues --json | grep -o "\"queue\":\"$1\",\"ready\":[0-9]*" | grep -o '[0-9]*$'
}
enqueue() { # queue, n
	local i
	for i in $(seq 1 "$2"); do echo "[$i]"; done >"$dir/args"
	"$au" enqueue au.echo --queue "$1" --args-file "$dir/args" >/dev/null
}

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=q$RANDOM$RANDOM

	# strict order: everything of hi before anything of lo
	enqueue "$Q-lo" 20
	enqueue "$Q-hi" 20
	"$au" worker --queues "$Q-hi,$Q-lo" --concurrency 1 --batch 1 --idle-exit 500ms \
		>/dev/null 2>"$dir/$b.strict" &
	wpid=$!
	wait "$wpid"; wpid=
	grep -o "queue=$Q-[a-z]*" "$dir/$b.strict" | sed "s/queue=$Q-//" >"$dir/$b.order"
	t_eq "$b: strict: all 40 ran" "$(wc -l <"$dir/$b.order")" 40
	t_eq "$b: strict: the 20 of the first queue first" "$(head -20 "$dir/$b.order" | sort -u)" hi
	t_eq "$b: strict: then the 20 of the second" "$(tail -20 "$dir/$b.order" | sort -u)" lo
	t_match "$b: the start line names both queues, in order" "$(cat "$dir/$b.strict")" \
		"queues +$Q-hi,$Q-lo \\(in this order\\)"

	# weights: 200 leases of 600 waiting, about 3 to 1
	enqueue "$Q-a" 300
	enqueue "$Q-b" 300
	"$au" worker --queues "$Q-a:3,$Q-b:1" --concurrency 1 --batch 1 --max-tasks 200 \
		>/dev/null 2>"$dir/$b.weighted" &
	wpid=$!
	wait "$wpid"; wpid=
	na=$((300 - $(ready "$Q-a"))); nb=$((300 - $(ready "$Q-b")))
	t_eq "$b: weighted: 200 ran" "$((na + nb))" 200
	# binomial(200, 3/4): mean 150, sd 6.1; 120..180 is five sd either way
	t_ok "$b: weighted: a got about 3 in 4 ($na of 200)" [ "$na" -ge 120 -a "$na" -le 180 ]
	t_ok "$b: weighted: b got some too ($nb)" [ "$nb" -ge 20 ]
	t_match "$b: the start line shows the weights" "$(cat "$dir/$b.weighted")" \
		"queues +$Q-a:3,$Q-b:1 \\(weighted\\)"
	"$au" queue empty "$Q-a" >/dev/null; "$au" queue empty "$Q-b" >/dev/null

	# the third queue of an idle worker wakes it, and its leases are kept
	# alive past --lease while its computation runs
	"$au" worker --queues "$Q-x,$Q-y,$Q-z" --lease 1000ms --idle-exit 6000ms \
		>/dev/null 2>"$dir/$b.wake" &
	wpid=$!
	t_until 5 sh -c "'$au' workers --json | grep -q '\"queues\":\"$Q-x,$Q-y,$Q-z\"'"
	t_ok "$b: au workers names the queues it serves" \
		sh -c "'$au' workers --json | grep -q '\"queues\":\"$Q-x,$Q-y,$Q-z\"'"
	sleep 0.3
	t0=$(date +%s%N)
	id=$("$au" enqueue au.echo --queue "$Q-z" --args '["z"]')
	out=$("$au" wait "$id" --timeout 3000ms); rc=$?
	t1=$(date +%s%N)
	t_eq "$b: a computation on the third queue completes" "$rc/$out" '0/["z"]'
	# from its record: begun soon after it was made, not at the next 1 s poll
	# (the times of the au commands themselves do not count)
	js=$("$au" status "$id" --json)
	c0=$(printf '%s' "$js" | sed -n 's/.*"created_at":\([0-9]*\).*/\1/p')
	s0=$(printf '%s' "$js" | sed -n 's/.*"started_at":\([0-9]*\).*/\1/p')
	t_ok "$b: begun within 500 ms of its enqueue (woken, not polled): $((s0 - c0)) ms" \
		[ -n "$c0" ] && [ -n "$s0" ] && [ $((s0 - c0)) -lt 500 ]
	id=$("$au" enqueue au.sleep --queue "$Q-y" --args '{"ms":2500}')
	"$au" wait "$id" --timeout 8000ms --json >"$dir/$b.long"; rc=$?
	t_eq "$b: a 2.5 s computation on the second queue, lease 1 s: completes" "$rc" 0
	t_match "$b: on its first attempt (the lease was extended)" "$(cat "$dir/$b.long")" \
		'"attempts":1[,}]'
	kill -TERM "$wpid"; wait "$wpid"; wpid=
	t_eq "$b: no lease lost" "$(grep -c 'was lost\|rescued' "$dir/$b.wake")" 0
done

# refused before anything starts, with the reason (exit 2)
out=$("$au" worker --queues "a,,b" 2>&1); rc=$?
t_eq "an empty name in --queues: exit 2" "$rc" 2
t_match "and says so" "$out" "invalid queues 'a,,b': an empty queue name"
out=$("$au" worker --queues "a:0,b" 2>&1); rc=$?
t_eq "a weight of 0: exit 2" "$rc" 2
t_match "and says what a weight is" "$out" "a weight is ':' and 1 to 1000"
out=$("$au" worker --queues "a,b,a" 2>&1); rc=$?
t_match "a queue named twice is refused" "$rc/$out" "^2/.*'a' is named twice"
out=$("$au" enqueue au.echo --queues a 2>&1); rc=$?
t_match "--queues on enqueue is refused" "$rc/$out" "^2/au: option '--queues' does not apply to 'enqueue'"
out=$("$au" enqueue au.echo --queue "a,b" 2>&1); rc=$?
t_match "a queue name with ',' is refused" "$rc/$out" "^2/.*invalid queue name 'a,b': it cannot hold ','"
out=$("$au" enqueue au.echo --queue "a:5" 2>&1); rc=$?
t_match "a queue name ending in a weight is refused" "$rc/$out" "^2/.*invalid queue name 'a:5'"
t_done
