#!/usr/bin/env bash
# t_dlq.sh - dead letters and queue administration through the CLI, with a
# real worker, on the Redis and the PostgreSQL queue: a computation that
# fails for good is listed, shown, requeued (it runs again), purged; a
# paused queue is not leased from until resumed; empty and delete; ids
# found without --queue; the counts of `au queues`.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_dlq.XXXXXX")
export AU_STORE="file://$dir/store" AU_CLICKHOUSE=$AU_TEST_CH
wpid=
worker() { # queue: runs a worker in the background, sets $wpid
	"$au" worker --queue "$1" --quiet --retry-base 50ms 2>>"$dir/worker.log" &
	wpid=$!
}
stop() { [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null; wpid=; }
trap 'stop; rm -rf "$dir"' EXIT
status_is() { [ "$("$au" status "$1" 2>/dev/null)" = "$2" ]; }
dead_listed() { "$au" dlq list --queue "$1" --json 2>/dev/null | grep -q "\"id\":\"$2\""; }
died_at() { "$au" dlq show "$1" --json | sed -n 's/.*"died_at_ms":\([0-9]*\).*/\1/p'; }

for url in "$AU_TEST_REDIS" "$AU_TEST_PG"; do
	export AU_QUEUE=$url
	b=${url%%:*}
	Q=dlq$RANDOM$RANDOM
	worker "$Q"

	# --- a computation that fails for good becomes a dead letter
	id=$("$au" enqueue au.fail --queue "$Q" --max-attempts 1 \
		--args '{"message":"boom","retryable":true}')
	t_ok "$b: the failed computation is dead-lettered" t_until 15 dead_listed "$Q" "$id"
	out=$("$au" dlq list --queue "$Q" --json)
	t_match "$b: dlq list --json shows it" "$out" \
		"^\\{\"id\":\"$id\",\"queue\":\"$Q\",\"task\":\"au.fail\",\"attempts\":1,\"reason\":\"failed after 1 attempts: boom\",\"died_at\":\"[0-9T:Z-]+\",\"died_at_ms\":[0-9]+\\}$"
	t_match "$b: dlq list without --queue finds it" "$("$au" dlq list)" "$id +$Q .* au.fail +failed after 1"
	out=$("$au" dlq show "$id")
	t_match "$b: dlq show (no --queue): the queue" "$out" "queue: +$Q"
	t_match "$b: dlq show: the task" "$out" 'task: +au.fail'
	t_match "$b: dlq show: the args" "$out" 'args: +\{"message":"boom","retryable":true\}'
	t_match "$b: dlq show: the attempts" "$out" "attempts: +1 of 1"
	t_match "$b: dlq show: the reason" "$out" "reason: +failed after 1 attempts: boom"
	t_match "$b: dlq show: when it died" "$out" "died: +[0-9]{4}-[0-9]{2}-[0-9]{2}T"
	t_match "$b: dlq show --json: the whole computation" "$("$au" dlq show "$id" --json)" \
		"\"max_attempts\":1,.*\"computation\":\\{.*\"id\":\"$id\""
	t_ok "$b: dlq show: no history line without a history" bash -c "! \"$au\" dlq show $id | grep -q history:"
	# the history a worker's retry would have left, [{"a":1},{"a":2}] in
	# msgpack, written where the backend keeps it
	if [ "$b" = redis ]; then
		printf '\x92\x81\xa1a\x01\x81\xa1a\x02' |
			redis-cli -p "${url##*:}" -x HSET "au:{$Q}:story" "$id" >/dev/null
	else
		psql -q "$url" -c "UPDATE au_jobs SET story = '\\x9281a1610181a16102' WHERE id = '$id'"
	fi
	t_match "$b: dlq show: how many attempts its history tells" "$("$au" dlq show "$id")" \
		"history: +2 attempts"
	t_match "$b: dlq show --json: the history" "$("$au" dlq show "$id" --json)" \
		'"history":\[\{"a":1\},\{"a":2\}\]'
	t_eq "$b: status without --queue on queue '$Q'" "$("$au" status "$id")" failed

	# --- pause: a running worker leases nothing; requeue waits; resume runs it
	t_eq "$b: queue pause" "$("$au" queue pause "$Q")" "paused queue '$Q'"
	t_match "$b: queues says paused" "$("$au" queues --json)" "\"queue\":\"$Q\",.*\"paused\":true"
	before=$(died_at "$id")
	t_eq "$b: dlq requeue ID" "$("$au" dlq requeue "$id")" "requeued 1"
	t_eq "$b: requeued: pending (the queue is paused)" "$("$au" status "$id")" pending
	t_ok "$b: requeued: no longer dead" bash -c "! \"$au\" dlq show $id 2>/dev/null"
	eid=$("$au" enqueue au.echo --queue "$Q" --args '[7]')
	sleep 2
	t_eq "$b: paused: a new computation waits with a worker running" "$("$au" status "$eid")" pending
	t_eq "$b: queue resume" "$("$au" queue resume "$Q")" "resumed queue '$Q'"
	t_eq "$b: resumed: it runs (wait without --queue)" "$("$au" wait "$eid" --timeout 15000ms)" '[7]'
	t_ok "$b: the requeued one ran again and died again" t_until 15 dead_listed "$Q" "$id"
	after=$(died_at "$id")
	t_ok "$b: ... later than the first time ($before < $after)" test "${after:-0}" -gt "${before:-0}"
	t_ok "$b: the requeue took its history" bash -c "! \"$au\" dlq show $id | grep -q history:"

	# --- requeue --all, purge --older-than
	id2=$("$au" enqueue au.fail --queue "$Q" --max-attempts 1 --args '{"retryable":true}')
	t_ok "$b: a second dead letter" t_until 15 dead_listed "$Q" "$id2"
	"$au" queue pause "$Q" >/dev/null
	t_eq "$b: dlq requeue --all" "$("$au" dlq requeue --all --queue "$Q" --json)" '{"requeued":2}'
	"$au" queue resume "$Q" >/dev/null
	t_ok "$b: both die again" t_until 15 bash -c "\"$au\" dlq list --queue $Q --json | grep -c '\"id\"' | grep -qx 2"
	t_eq "$b: purge --older-than 1h keeps them" "$("$au" dlq purge --queue "$Q" --older-than 1h)" "purged 0"
	sleep 1.2
	t_eq "$b: purge --older-than 1s removes them" "$("$au" dlq purge --queue "$Q" --older-than 1s)" "purged 2"
	t_eq "$b: the dead letter list is empty" "$("$au" dlq list --queue "$Q" --json)" ""
	t_eq "$b: a purged one keeps its stored outcome" "$("$au" status "$id")" failed

	# --- ids found on any queue: status, wait, result, cancel without --queue
	sid=$("$au" enqueue au.sleep --queue "$Q" --args '{"ms":1500}')
	t_ok "$b: status without --queue: running" t_until 10 status_is "$sid" running
	t_match "$b: wait without --queue" "$("$au" wait "$sid" --timeout 15000ms --json)" '"status":"completed"'
	t_match "$b: result without --queue" "$("$au" result "$sid" --json)" '"status":"completed"'
	did=$("$au" enqueue au.echo --queue "$Q" --delay 600000ms)
	t_eq "$b: status without --queue: scheduled" "$("$au" status "$did")" scheduled
	t_eq "$b: cancel without --queue" "$("$au" cancel "$did")" cancelled
	t_eq "$b: cancelled" "$("$au" status "$did")" cancelled
	did=$("$au" enqueue au.echo --queue "$Q" --delay 600000ms)
	t_eq "$b: a wrong --queue is only a hint" "$("$au" status "$did" --queue default)" scheduled

	# --- queues: counts, totals, sorted by name
	out=$("$au" queues --json | grep "\"queue\":\"$Q\"")
	t_match "$b: queues --json: totals processed and failed" "$out" \
		'"paused":false,"processed":[1-9][0-9]*,"failed":[3-9],"per_minute":[0-9]+'
	"$au" queue pause "a$Q" >/dev/null
	"$au" queue pause "z$Q" >/dev/null
	names=$("$au" queues --json | sed -n 's/^{"queue":"\([^"]*\)".*/\1/p' | grep -E "^[az]?$Q\$" |
		tr '\n' ' ')
	t_match "$b: queues are sorted by name" "$names" "a$Q $Q z$Q"
	t_match "$b: queues: a table with every column" "$("$au" queues)" \
		"^queue +ready +scheduled +running +dead +paused +processed +failed +per_min"
	"$au" queue delete "a$Q" >/dev/null
	"$au" queue delete "z$Q" >/dev/null
	stop

	# --- empty and delete
	out=$("$au" queue delete "$Q" 2>&1); rc=$?
	t_eq "$b: delete of a queue with work: exit 1" "$rc" 1
	t_eq "$b: ... says what it holds" "$out" \
		"au: queue '$Q' holds computations: 0 ready, 1 scheduled, 0 running, 0 dead: use --force to delete them with it"
	t_eq "$b: queue empty" "$("$au" queue empty "$Q" --json)" "{\"queue\":\"$Q\",\"removed\":1}"
	out=$("$au" status "$did" 2>&1); rc=$?
	t_eq "$b: an emptied computation is unknown (exit 3)" "$rc" 3
	t_eq "$b: queue delete" "$("$au" queue delete "$Q")" "deleted queue '$Q'"
	t_ok "$b: deleted: not listed" bash -c "! \"$au\" queues --json | grep -q '\"queue\":\"$Q\"'"
	"$au" enqueue au.echo --queue "$Q" --delay 600000ms >/dev/null
	t_eq "$b: delete --force" "$("$au" queue delete "$Q" --force)" "deleted queue '$Q'"
done

# --- Redis: a dead letter that is no id (buried by a lease that found a
# malformed entry) is listed and purged, and does not stop requeue --all
export AU_QUEUE=$AU_TEST_REDIS
Q=dlq$RANDOM$RANDOM
rport=${AU_TEST_REDIS##*:}
redis-cli -p "$rport" ZADD "au:{$Q}:dead" 1000 "not an id" >/dev/null
redis-cli -p "$rport" HSET "au:{$Q}:err" "not an id" "invalid id" >/dev/null
redis-cli -p "$rport" SADD au:queues "$Q" >/dev/null
t_match "a malformed dead letter is listed" "$("$au" dlq list --queue "$Q")" "not an id .*invalid id"
out=$("$au" dlq requeue --all --queue "$Q" 2>&1); rc=$?
t_eq "requeue --all past it: exit 0" "$rc" 0
t_match "... says what it left" "$out" "left 1 dead letters that are no computation id"
t_eq "purge deletes it" "$("$au" dlq purge --queue "$Q")" "purged 1"
"$au" queue delete "$Q" >/dev/null

# --- usage and exit codes
out=$("$au" dlq show 0123456789abcdef0123456789abcdee 2>&1); rc=$?
t_eq "dlq show of an unknown id: exit 3" "$rc" 3
t_eq "... message" "$out" "au: no dead letter '0123456789abcdef0123456789abcdee' on any queue"
"$au" dlq show nope >/dev/null 2>&1
t_eq "dlq show of an invalid id: exit 2" "$?" 2
"$au" dlq requeue >/dev/null 2>&1
t_eq "dlq requeue without ids: exit 2" "$?" 2
out=$("$au" dlq purge --older-than soon 2>&1); rc=$?
t_eq "purge --older-than soon: exit 2" "$rc" 2
t_match "... message" "$out" "invalid duration 'soon'"
out=$("$au" dlq list --force 2>&1); rc=$?
t_eq "an option that does not apply: exit 2" "$rc" 2
t_match "... message" "$out" "option '--force' does not apply to 'dlq list'"
"$au" dlq list --limit 0 >/dev/null 2>&1
t_eq "dlq list --limit 0: exit 2" "$?" 2
"$au" queue pause >/dev/null 2>&1
t_eq "queue pause without a name: exit 2" "$?" 2
out=$("$au" queue empty "nosuch$RANDOM" 2>&1); rc=$?
t_eq "queue empty of an unknown queue: exit 3" "$rc" 3
t_match "dlq --help" "$("$au" dlq --help)" "^usage: au dlq list"
t_match "queue --help" "$("$au" queue --help)" "^usage: au queue pause NAME"
t_match "queues --help" "$("$au" queues --help)" "^usage: au queues"
out=$("$au" --queue-url redis://127.0.0.1:1 dlq list 2>&1); rc=$?
t_eq "unreachable queue: exit 5" "$rc" 5

t_done
