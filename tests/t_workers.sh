#!/usr/bin/env bash
# t_workers.sh - the worker registry on each queue backend with a server
# (Redis, PostgreSQL): two workers are listed by `au workers --json` with
# their pids and queue, a running computation under the one that runs it;
# `au worker stop ID` drains that one (exit 0, its computation completes)
# while the other keeps working; a SIGKILLed worker's entry vanishes
# within the TTL (6 s); a child of a fleet asked to stop is not replaced,
# and the parent exits 0 once its last child was stopped.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_workers.XXXXXX")
export AU_STORE="file://$dir/store" AU_CLICKHOUSE=${AU_TEST_CH:-http://127.0.0.1:1}
p1= p2=
trap 'for p in $p1 $p2; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$dir"' EXIT
entry() { "$au" workers --json 2>/dev/null | grep "\"pid\":$1,"; }   # the line of pid $1
listed() { entry "$1" >/dev/null; }
gone() { ! listed "$1"; }
id_of() { entry "$1" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p'; }
runs() { entry "$1" | grep -q "\"running_ids\":\[[^]]*\"$2\""; }
# sets busy and idle: which of the two workers lists computation $cid
which_runs() {
	local all
	all=$("$au" workers --json 2>/dev/null)
	if printf '%s\n' "$all" | grep "\"pid\":$p1," | grep -q "\"$cid\""; then busy=$p1 idle=$p2
	elif printf '%s\n' "$all" | grep "\"pid\":$p2," | grep -q "\"$cid\""; then busy=$p2 idle=$p1
	else return 1; fi
}
draining() { entry "$1" | grep -q '"state":"draining"'; }

for qurl in $AU_TEST_REDIS $AU_TEST_PG; do
	case $qurl in redis*) b=redis ;; *) b=pg ;; esac
	export AU_QUEUE=$qurl
	Q=w$RANDOM$RANDOM
	"$au" worker --queue "$Q" --concurrency 4 2>"$dir/$b-1.log" &
	p1=$!
	"$au" worker --queue "$Q" --concurrency 4 2>"$dir/$b-2.log" &
	p2=$!
	t_ok "$b: both workers are listed" t_until 10 sh -c "'$au' workers --json | grep -q '\"pid\":$p1,' && '$au' workers --json | grep -q '\"pid\":$p2,'"
	e1=$(entry $p1)
	t_match "$b: the entry names its queue, version, concurrency, state" "$e1" \
		"\"queues\":\"$Q\",\"version\":\"[0-9.]+\",\"state\":\"running\",\"concurrency\":4"
	w1=$(id_of $p1)
	t_match "$b: its id is host:pid:nonce" "$w1" "^[^:]+:$p1:[0-9a-f]{8}$"
	t_match "$b: the table lists it" "$("$au" workers)" "^$w1 +[^ ]+ +$p1 +$Q +running +0 +0 +0 +[0-9]+(ms|s) +[0-9]+(ms|s)"

	cid=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":8000}')
	t_ok "$b: the computation starts" t_until 5 sh -c "[ \"\$('$au' status $cid --queue $Q 2>/dev/null)\" = running ]"
	busy= idle=
	t_ok "$b: a running computation is listed under the worker that runs it" t_until 5 which_runs
	[ -n "$busy" ] || { busy=$p1 idle=$p2; }
	t_match "$b: with a running count of 1" "$(entry $busy)" '"running":1,'
	wb=$(id_of $busy)
	out=$("$au" worker stop "$wb" 2>&1)
	t_eq "$b: au worker stop ID succeeds" "$?" 0
	t_eq "$b: and says so" "$out" "asked worker '$wb' to stop"
	t_ok "$b: the worker shows it drains" t_until 3 draining $busy
	wait $busy
	t_eq "$b: the stopped worker exits 0" "$?" 0
	t_eq "$b: its computation completed" "$("$au" status "$cid" --queue "$Q")" completed
	n=$(cat "$dir/$b-1.log" "$dir/$b-2.log" | grep -c "worker '$wb' asked to stop (au worker stop): draining")
	t_eq "$b: its log says why it stopped" "$n" 1
	t_ok "$b: its entry is gone at once" gone $busy
	t_ok "$b: the other keeps running" kill -0 $idle
	id=$("$au" enqueue au.echo --queue "$Q" --args '[7]')
	t_eq "$b: ... and working" "$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" '[7]'
	t_ok "$b: ... and listed" listed $idle
	if [ $busy = $p1 ]; then p1=; else p2=; fi

	out=$("$au" worker stop "nohost:1:00000000" 2>&1); rc=$?
	t_eq "$b: stop of an unknown worker: exit 3" "$rc" 3
	t_match "$b: ... named in the message" "$out" "no live worker 'nohost:1:00000000'"

	kill -KILL $idle; wait $idle 2>/dev/null
	t_ok "$b: a SIGKILLed worker is listed for a while" listed $idle
	t_ok "$b: ... and vanishes within the ttl" t_until 8 gone $idle
	p1= p2=

	# a child of a fleet that is asked to stop is not replaced
	"$au" worker --queue "$Q" --processes 2 2>"$dir/$b-fleet.log" &
	p1=$!
	kids() { "$au" workers --json 2>/dev/null | grep -c "\"queues\":\"$Q\""; }
	t_ok "$b: a fleet of 2 is listed" t_until 10 sh -c "[ \$('$au' workers --json | grep -c '\"queues\":\"$Q\"') = 2 ]"
	k1=$("$au" workers --json | grep "\"queues\":\"$Q\"" | head -1 | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
	"$au" worker stop "$k1" >/dev/null
	t_ok "$b: the child asked to stop leaves" t_until 8 sh -c "[ \$('$au' workers --json | grep -c '\"queues\":\"$Q\"') = 1 ]"
	sleep 2.5   # a replacement would be listed by now
	t_eq "$b: and is not replaced" "$(kids)" 1
	t_match "$b: the parent says so" "$(cat "$dir/$b-fleet.log")" "stopped by 'au worker stop'; not replaced \(1 left\)"
	k2=$("$au" workers --json | grep "\"queues\":\"$Q\"" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
	"$au" worker stop "$k2" >/dev/null
	wait "$p1"
	t_eq "$b: once the last one is stopped the parent exits 0" "$?" 0
	p1=
done
t_done
