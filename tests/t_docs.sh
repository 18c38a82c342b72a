#!/usr/bin/env bash
# t_docs.sh - what docs/ tells programs in other languages, checked against
# real Redis and PostgreSQL: `au result --json` is the record's JSON mirror,
# ttl_s 0 never expires, an expired Redis result is "unknown or expired",
# the queue position (not the body's run_at) decides when a computation
# runs, a wake token pushed by hand starts an idle worker at once, a
# delayed computation pushed by hand starts without a wake-up, and
# plain-SQL enqueue needs the schema first.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_docs.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
rport=${AU_TEST_REDIS##*:}
rcli() { redis-cli -p "$rport" "$@"; }
q() { echo "d$RANDOM$RANDOM"; }
newid() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
worker() { # queue, extra args...: runs a worker in the background, sets $wpid
	local queue=$1; shift
	"$au" worker --queue "$queue" --quiet --retry-base 50ms "$@" >>"$dir/worker.log" 2>&1 &
	wpid=$!
}
stop() { kill -TERM "$wpid"; wait "$wpid"; wpid=; }
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
redis_ms() { rcli TIME | { read -r s; read -r us; echo $((s * 1000 + us / 1000)); }; }
field() { # json, key: the value of a numeric key
	printf '%s' "$1" | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

# msgpack by hand, as a program without libau would write it (wire-format.md)
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
mp_str() { if [ ${#1} -lt 32 ]; then printf '%02x' $((0xa0 + ${#1})); else printf 'd9%02x' ${#1}; fi; hex "$1"; }
body_hex() { # id, queue, run_at ms (0: no run_at key): task au.echo, args {"by":"hand"}
	local n=5
	[ "$3" != 0 ] && n=6
	printf '8%x' $n
	mp_str v; printf '01'
	mp_str id; mp_str "$1"
	mp_str task; mp_str au.echo
	mp_str queue; mp_str "$2"
	mp_str args; printf '81'; mp_str by; mp_str hand
	if [ "$3" != 0 ]; then mp_str run_at; printf 'cf%016x' "$3"; fi
}
body_of() { rcli --raw HGET "au:{$1}:body" "$2" | od -An -tx1 | tr -d ' \n'; }

# --- au result --json: the whole record, keys in wire-format order
Q=$(q)
id0=$("$au" enqueue au.echo --queue "$Q" --ttl 0 --args '{"keep":true}')
idd=$("$au" enqueue au.echo --queue "$Q" --args '{"x":1}')
t_match "--ttl 0 writes ttl_s 0 into the body" "$(body_of "$Q" "$id0")" "$(hex ttl_s)00"
t_match "no --ttl writes ttl_s 86400 into the body" "$(body_of "$Q" "$idd")" "$(hex ttl_s)ce00015180"
worker "$Q"
"$au" wait "$idd" --queue "$Q" --timeout 10000ms >/dev/null
out=$("$au" result "$idd" --queue "$Q" --json)
t_match "result --json is the whole record, in order" "$out" \
	"^\{\"v\":1,\"id\":\"$idd\",\"status\":\"completed\",\"task\":\"au.echo\",\"queue\":\"$Q\",\"worker\":\"[^\"]+\",\"attempts\":1,\"ttl_s\":86400,\"created_at\":[0-9]+,\"started_at\":[0-9]+,\"finished_at\":[0-9]+,\"expires_at\":[0-9]+,\"history\":\[\{\"attempt\":1,\"worker\":\"[^\"]+:[0-9]+:[0-9a-f]{8}\",\"started_at\":[0-9]+,\"finished_at\":[0-9]+,\"outcome\":\"completed\"\}\],\"result\":\{\"x\":1\}\}$"
left=$(( $(field "$out" expires_at) - $(field "$out" finished_at) ))
t_ok "expires_at is ttl_s after the write ($left ms after finished_at)" \
	[ "$left" -ge 86400000 -a "$left" -le 86405000 ]
t_eq "wait --json prints the same record" "$("$au" wait "$idd" --queue "$Q" --json)" "$out"
id=$("$au" enqueue au.fail --queue "$Q" --args '{"message":"boom"}')
"$au" wait "$id" --queue "$Q" --timeout 10000ms >/dev/null 2>&1
out=$("$au" result "$id" --queue "$Q" --json); rc=$?
t_match "a failed record has its error and no result" "$out" \
	"^\{\"v\":1,\"id\":\"$id\",\"status\":\"failed\",\"task\":\"au.fail\",\"queue\":\"$Q\",\"worker\":\"[^\"]+\",\"attempts\":1,\"ttl_s\":86400,(\"[a-z_]+\":[0-9]+,){4}\"error\":\"boom\",\"history\":\[\{\"attempt\":1,[^]]*\"outcome\":\"failed\",\"error\":\"boom\"\}\]\}$"
t_eq "result --json of a failed computation exits 1" "$rc" 1

# --- ttl_s 0 on redis://: kept until deleted
out=$("$au" wait "$id0" --queue "$Q" --timeout 10000ms --json)
t_match "--ttl 0: the record says ttl_s 0 and expires_at 0" "$out" '"ttl_s":0,.*"expires_at":0,'
t_eq "--ttl 0: the Redis key has no expiry" "$(rcli TTL "au:r:$id0")" -1

# --- an expired Redis result cannot be told from an unknown one
id=$("$au" enqueue au.echo --queue "$Q" --ttl 1 --args '[1]')
t_eq "result readable before the ttl" "$("$au" wait "$id" --queue "$Q" --timeout 10000ms)" '[1]'
sleep 2.2
out=$("$au" result "$id" --queue "$Q" 2>&1); rc=$?
t_eq "expired on redis://: exit 3" "$rc" 3
hint="(a worker writing to another AU_STORE, or another queue server, would explain it)"
xhint="(an expired record, a worker writing to another AU_STORE, or another queue server, would explain it)"
t_eq "expired on redis://: the promised message" "$out" \
	"au: unknown computation '$id': not on queue '$Q' or any other of '$AU_QUEUE' and no record in store '$AU_STORE' $xhint"
out=$("$au" status "$id" --queue "$Q" 2>"$dir/err"); rc=$?
t_eq "expired on redis://: status says unknown, exit 3" "$rc $out $(cat "$dir/err")" \
	"3 unknown au: unknown computation '$id': not on queue '$Q' or any other of '$AU_QUEUE' and no record in store '$AU_STORE' $xhint"
nid=$(newid)
out=$("$au" result "$nid" 2>&1); rc=$?
t_eq "never enqueued, redis:// store: the same message and exit" "$rc $out" \
	"3 au: unknown computation '$nid': not on any queue of '$AU_QUEUE' and no record in store '$AU_STORE' $xhint"
out=$(AU_STORE="file://$dir/store" "$au" result "$nid" --queue "$Q" 2>&1); rc=$?
t_eq "never enqueued, file:// store (tells expired): unknown, no word of expiry" "$rc $out" \
	"3 au: unknown computation '$nid': not on queue '$Q' or any other of '$AU_QUEUE' and no record in store 'file://$dir/store' $hint"

# --- Redis: the position in the queue decides, not the body's run_at
id=$(newid)
later=$(( $(redis_ms) + 3600000 ))
body_hex "$id" "$Q" "$later" | xxd -r -p | rcli -x HSET "au:{$Q}:body" "$id" >/dev/null
rcli RPUSH "au:{$Q}:ready:0" "$id" >/dev/null
rcli ZADD "au:{$Q}:prios" 0 0 >/dev/null
rcli LPUSH "au:{$Q}:wakelist" 1 >/dev/null
rcli LTRIM "au:{$Q}:wakelist" 0 31 >/dev/null
t_eq "in a ready list, a body run_at an hour ahead runs now" \
	"$("$au" wait "$id" --queue "$Q" --timeout 5000ms 2>&1)" '{"by":"hand"}'

# --- Redis: pushed by hand with a wake token, an idle worker starts it at
# once (without the token, its poll would: up to 1 s later, each time)
worst=0
for _ in 1 2 3 4 5; do
	id=$(newid)
	body_hex "$id" "$Q" 0 | xxd -r -p | rcli -x HSET "au:{$Q}:body" "$id" >/dev/null
	t=$(redis_ms)
	printf '%s\n' "RPUSH au:{$Q}:ready:0 $id" "ZADD au:{$Q}:prios 0 0" \
		"LPUSH au:{$Q}:wakelist 1" "LTRIM au:{$Q}:wakelist 0 31" | rcli >/dev/null
	out=$("$au" wait "$id" --queue "$Q" --timeout 5000ms --json 2>&1)
	late=$(( $(field "$out" started_at) - t ))
	[ "$late" -gt "$worst" ] && worst=$late
done
t_ok "by hand with LPUSH au:{q}:wakelist 1: started at once (worst of 5: $worst ms)" \
	[ "$worst" -lt 300 ]
t_eq "the worker took the tokens" "$(rcli LLEN "au:{$Q}:wakelist")" 0
id=$(newid)
body_hex "$id" "$Q" 0 | xxd -r -p | rcli -x HSET "au:{$Q}:body" "$id" >/dev/null
rcli HSET "au:{$Q}:order" "$id" "0 $(rcli INCR "au:{$Q}:seq")" >/dev/null
rcli ZADD "au:{$Q}:sched" "$later" "$id" >/dev/null
sleep 1.5
t_eq "in sched, a body without run_at waits for the score" \
	"$("$au" status "$id" --queue "$Q")" scheduled

# --- a delayed computation pushed by hand, no wake token: starts at the next poll
id=$(newid)
at=$(( $(redis_ms) + 1500 ))
body_hex "$id" "$Q" "$at" | xxd -r -p | rcli -x HSET "au:{$Q}:body" "$id" >/dev/null
rcli HSET "au:{$Q}:order" "$id" "0 $(rcli INCR "au:{$Q}:seq")" >/dev/null
rcli ZADD "au:{$Q}:sched" "$at" "$id" >/dev/null
out=$("$au" wait "$id" --queue "$Q" --timeout 10000ms --json 2>&1)
t_match "delayed by hand without a wake token: it runs" "$out" '"status":"completed"'
late=$(( $(field "$out" started_at) - at ))
t_ok "not before its run_at ($late ms after)" [ "$late" -ge 0 ]
t_ok "at most a poll (1 s) after it, with slack ($late ms)" [ "$late" -le 2000 ]
stop

# --- PostgreSQL: plain-SQL enqueue needs the schema first
db="au_docs_$RANDOM$RANDOM"
psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" || exit 1
url="${AU_TEST_PG%/*}/$db"
export AU_QUEUE=$url AU_STORE=$url
Q=$(q)
insert() { # id, body hex, extra column, extra value
	psql -qtA -v ON_ERROR_STOP=1 "$url" -c "BEGIN;
INSERT INTO au_queues (name) VALUES ('$Q') ON CONFLICT DO NOTHING;
INSERT INTO au_jobs (id, queue, priority, max_attempts, body${3:-}) VALUES ('$1', '$Q', 0, 1, decode('$2', 'hex')${4:-});
SELECT pg_notify('au_queue', '$Q');
COMMIT;"
}
id=$(newid)
out=$(insert "$id" "$(body_hex "$id" "$Q" 0)" 2>&1); rc=$?
t_ok "plain-SQL insert into an empty database fails" [ "$rc" -ne 0 ]
t_match "because au_jobs does not exist yet" "$out" 'relation "au_(queues|jobs)" does not exist'
"$au" migrate >/dev/null 2>&1
t_eq "au migrate exits 0" "$?" 0
worker "$Q"
later=$(( $(date +%s%3N) + 3600000 ))
id=$(newid)
out=$(insert "$id" "$(body_hex "$id" "$Q" "$later")" 2>&1)
t_eq "after au migrate: the plain-SQL insert of docs/postgres.md succeeds" "$? $out" "0 "
t_eq "after au migrate: the plain-SQL insert runs, run_at column now, body's later" \
	"$("$au" wait "$id" --queue "$Q" --timeout 10000ms 2>&1)" '{"by":"hand"}'
t_eq "its record is readable with plain SQL" \
	"$(psql -qtA "$url" -c "SELECT count(*) FROM au_results WHERE id = '$id' AND expires_at > now()")" 1
id=$(newid)
insert "$id" "$(body_hex "$id" "$Q" 0)" ", run_at" ", now() + interval '1 hour'" >/dev/null 2>&1
t_eq "the run_at column decides: a body without run_at waits" \
	"$("$au" status "$id" --queue "$Q" 2>&1)" scheduled

# --- ttl_s 0 on postgres://
id=$("$au" enqueue au.echo --queue "$Q" --ttl 0 --args '[0]')
out=$("$au" wait "$id" --queue "$Q" --timeout 10000ms --json)
t_match "--ttl 0 on postgres://: ttl_s 0, expires_at 0" "$out" '"ttl_s":0,.*"expires_at":0,'
t_eq "--ttl 0 on postgres://: the row expires at infinity" \
	"$(psql -qtA "$url" -c "SELECT expires_at = 'infinity' FROM au_results WHERE id = '$id'")" t
stop

# --- the first client migrates an empty database
db2="au_docs_$RANDOM$RANDOM"
psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db2" || exit 1
url2="${AU_TEST_PG%/*}/$db2"
"$au" --queue-url "$url2" --store-url "$url2" status "$(newid)" >/dev/null 2>&1
t_eq "a first client creates the tables" \
	"$(psql -qtA "$url2" -c "SELECT to_regclass('au_jobs') IS NOT NULL")" t

psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1
psql -q "$AU_TEST_PG" -c "DROP DATABASE $db2 WITH (FORCE)" >/dev/null 2>&1
rm -rf "$dir"
t_done
