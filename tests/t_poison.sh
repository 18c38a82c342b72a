#!/usr/bin/env bash
# t_poison.sh - one bad row or entry never stops a queue: rows written by
# a buggy plain-SQL producer (PostgreSQL) and entries pushed by hand onto a
# Redis ready list are dead-lettered with a reason by the lease that finds
# them (or, with no id to file them under, removed), good computations
# enqueued around them all complete, and `au queues` counts the dead ones.
# Then the messages: a Redis that wants a password says NOAUTH, an empty
# AU_QUEUE is refused (tests/test_redis.c checks the rest: the cut of a
# long id, the persistence warning).
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them); starts
# a Redis with a password of its own on AU_PORT_BASE + 12.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_poison.XXXXXX")
pport=$((${AU_PORT_BASE:-17300} + 12))
ppid_=
wpid=
db=
cleanup() {
	[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
	[ -n "$ppid_" ] && kill -KILL "$ppid_" 2>/dev/null
	wait 2>/dev/null
	[ -n "$db" ] && psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT
export AU_CLICKHOUSE=$AU_TEST_CH AU_STORE="file://$dir/store"
rport=${AU_TEST_REDIS##*:}
rcli() { redis-cli -p "$rport" "$@"; }
worker() { # queue, log: sets $wpid
	"$au" worker --queue "$1" --retry-base 50ms >/dev/null 2>>"$2" &
	wpid=$!
}
stop_worker() { kill -TERM "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; wpid=; }
count() { # queue, column of `au queues --json`
	"$au" queues --json | grep -o "\"queue\":\"$1\"[^}]*" | grep -o "\"$2\":[0-9]*" | grep -o '[0-9]*$'
}
au_id_ok() { [[ "$1" =~ ^[0-9a-f]{32}$ ]]; }

# ---- PostgreSQL: rows a plain-SQL producer got wrong
db="au_poison_$RANDOM$RANDOM"
psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" || exit 1
export AU_QUEUE="${AU_TEST_PG%/*}/$db"
sql() { psql -tAq "$AU_QUEUE" -c "$1"; }
"$au" migrate >/dev/null 2>&1
Q=p$RANDOM
good=()
for i in 1 2 3; do good+=("$("$au" enqueue au.echo --queue "$Q" --args '{"n":1}')"); done
# a good body copied under other ids: the rows are what is wrong
body="(SELECT body FROM au_jobs WHERE id = '${good[0]}')"
big=11111111111111111111111111111111 neg=22222222222222222222222222222222
junk=33333333333333333333333333333333 inf=44444444444444444444444444444444
sql "INSERT INTO au_jobs (id, queue, attempts, max_attempts, body)
     VALUES ('$big', '$Q', 2147483647, 3, $body), ('$neg', '$Q', -5, 3, $body),
            ('$junk', '$Q', 0, 3, '\\x00ff')" >/dev/null
# rows that are odd but not wrong run: a run_at of -infinity, a priority
# out of range, a leased row with no deadline nor token (rescued)
sql "UPDATE au_jobs SET run_at = '-infinity', priority = 32767 WHERE id = '${good[1]}'" >/dev/null
sql "UPDATE au_jobs SET state = 1, attempts = 1, lease_until = NULL, token = NULL
     WHERE id = '${good[2]}'" >/dev/null
# and one that never falls due
later=$("$au" enqueue au.echo --queue "$Q" --args '{"n":2}')
sql "UPDATE au_jobs SET run_at = 'infinity' WHERE id = '$later'" >/dev/null
for i in 4 5 6; do good+=("$("$au" enqueue au.echo --queue "$Q" --args '{"n":1}')"); done
log="$dir/pg.log"
worker "$Q" "$log"
ok=1
for id in "${good[@]}"; do
	[ "$("$au" wait "$id" --queue "$Q" --timeout 20000ms 2>/dev/null)" = '{"n":1}' ] || ok=0
done
t_ok "postgres: every good computation around the bad rows completes" [ "$ok" = 1 ]
t_eq "postgres: attempts 2147483647 is dead-lettered with the reason" \
	"$(sql "SELECT state, error FROM au_jobs WHERE id = '$big'")" \
	"2|malformed computation: attempts 2147483647 out of range"
t_eq "postgres: a negative attempts too" \
	"$(sql "SELECT state, error FROM au_jobs WHERE id = '$neg'")" \
	"2|malformed computation: attempts -5 out of range"
t_match "postgres: a body that is not msgpack is dead-lettered by the worker, with why" \
	"$(sql "SELECT state, error FROM au_jobs WHERE id = '$junk'")" "^2\|.*malformed computation"
t_eq "postgres: au queues counts the three dead" "$(count "$Q" dead)" 3
t_eq "postgres: the row never due stays scheduled" "$(count "$Q" scheduled)" 1
t_match "postgres: the worker says what it dead-lettered" "$(cat "$log")" \
	"computation '$big' dead-lettered: malformed computation: attempts 2147483647 out of range"
t_ok "postgres: no statement failed (integer out of range, infinite timestamps)" \
	bash -c "! grep -Eq 'out of range\"|postgres error|infinite' '$log'"
t_eq "postgres: au status calls the dead one failed" "$("$au" status "$big" --queue "$Q")" failed
stop_worker
psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1
db=

# ---- Redis: entries pushed by hand onto a ready list
export AU_QUEUE=$AU_TEST_REDIS
Q=r$RANDOM$RANDOM
good=()
for i in 1 2 3; do good+=("$("$au" enqueue au.echo --queue "$Q" --args '{"n":1}')"); done
ghost=55555555555555555555555555555555 badn=66666666666666666666666666666666
huge=77777777777777777777777777777777 upper=ABCDEF0123456789ABCDEF0123456789
# an id with no body; "<id> <a>" with a count that is no number, one too
# big; an id in capitals with a body; garbage with no id at all (twice)
rcli RPUSH "au:{$Q}:ready:0" "$ghost" "$badn x" "$huge 99999999999" "$upper" \
	"not an id" "$(printf 'z%.0s' $(seq 1 300))" >/dev/null
rcli HSET "au:{$Q}:body" "$upper" xx >/dev/null
# a seq counter overwritten by hand, and attempts no count
rcli SET "au:{$Q}:seq" "not a number" >/dev/null
for i in 4 5 6; do good+=("$("$au" enqueue au.echo --queue "$Q" --args '{"n":1}')"); done
delayed=$("$au" enqueue au.echo --queue "$Q" --delay 200ms --args '{"n":1}' 2>&1)
t_ok "redis: a delayed push with a broken seq counter works ($delayed)" au_id_ok "$delayed"
good+=("$delayed")
log="$dir/redis.log"
worker "$Q" "$log"
ok=1
for id in "${good[@]}"; do
	[ "$("$au" wait "$id" --queue "$Q" --timeout 20000ms 2>/dev/null)" = '{"n":1}' ] || ok=0
done
t_ok "redis: every good computation around the bad entries completes" [ "$ok" = 1 ]
t_eq "redis: au queues counts the four dead" "$(count "$Q" dead)" 4
t_eq "redis: nothing is left ready" "$(count "$Q" ready)" 0
for id in "$ghost" "$badn" "$huge" "$upper"; do
	t_ok "redis: '$id' is in the dead letter set" [ -n "$(rcli ZSCORE "au:{$Q}:dead" "$id")" ]
done
t_match "redis: an id without a body, with the reason" "$(rcli HGET "au:{$Q}:err" "$ghost")" \
	"^malformed ready entry: no body"
t_eq "redis: a count that is no number, with the reason" "$(rcli HGET "au:{$Q}:err" "$badn")" \
	"malformed ready entry '$badn x': attempts not a number"
t_eq "redis: a count out of range, with the reason" "$(rcli HGET "au:{$Q}:err" "$huge")" \
	"malformed ready entry '$huge 99999999999': attempts out of range"
t_match "redis: an id in capitals, with the reason" "$(rcli HGET "au:{$Q}:err" "$upper")" \
	"not an id"
t_match "redis: the garbage with no id is removed and counted in the log" "$(cat "$log")" \
	"[12] removed \(no id to file them under\)"
t_match "redis: each dead-lettered entry is logged" "$(cat "$log")" \
	"'$ghost' dead-lettered: malformed ready entry: no body"
t_eq "redis: au status calls a dead entry failed, not pending" "$("$au" status "$ghost" --queue "$Q")" failed
stop_worker

# ---- messages
redis-server --port "$pport" --bind 127.0.0.1 --save '' --appendonly no --requirepass sesame \
	--dir "$dir" --maxmemory-policy noeviction --logfile "$dir/auth.log" &
ppid_=$!
t_until 10 bash -c "redis-cli -p $pport ping 2>&1 | grep -q NOAUTH"
out=$(AU_QUEUE="redis://127.0.0.1:$pport" "$au" enqueue au.echo 2>&1); rc=$?
t_eq "noauth: the queue says the server wants a password" "$out" \
	"au: unable to use 'redis://127.0.0.1:$pport': the server requires a password (NOAUTH)"
t_ok "noauth: and fails" [ "$rc" -ne 0 ]
out=$(AU_STORE="redis://127.0.0.1:$pport" "$au" status 0123456789abcdef0123456789abcdef 2>&1)
t_match "noauth: so does the store" "$out" \
	"unable to use 'redis://127.0.0.1:$pport': the server requires a password \(NOAUTH\)"
id=$(AU_QUEUE="redis://:sesame@127.0.0.1:$pport" "$au" enqueue au.echo 2>&1)
t_ok "noauth: with the password it works ($id)" au_id_ok "$id"

out=$(AU_QUEUE= "$au" enqueue au.echo 2>&1); rc=$?
t_match "empty AU_QUEUE: refused, not the default" "$out" "the queue url is empty"
t_ok "empty AU_QUEUE: a failure exit" [ "$rc" -ne 0 ]
out=$(AU_QUEUE= "$au" queues 2>&1); rc=$?
t_ok "empty AU_QUEUE: au queues refuses it too ($out)" [ "$rc" -ne 0 ]

t_done
