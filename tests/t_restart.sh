#!/usr/bin/env bash
# t_restart.sh - a fleet of two worker processes rides out a crash of its
# queue's server: kill -9 of redis-server (appendonly yes, appendfsync
# everysec, as docs recommend) restarted on the same port and directory,
# and `pg_ctl stop -m immediate` of PostgreSQL (queue and store) started
# again. The workers reconnect by themselves (the same processes, none
# restarted), the run completes, and every computation has its record.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH, AU_TEST_TMP (tests/
# run.sh sets them; the PostgreSQL restarted is tests/servers.sh's own);
# starts a Redis of its own on AU_PORT_BASE + 21.
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_restart.XXXXXX")
chmod 777 "$dir"
rport=$((${AU_PORT_BASE:-17300} + 21))
pgdata="$AU_TEST_TMP/pg/data"
pgbin=/usr/lib/postgresql/15/bin
pguser=
[ "$(id -u)" = 0 ] && pguser="runuser -u postgres --"
export AU_CLICKHOUSE=$AU_TEST_CH
fpid= rpid= dbs=
cleanup() {
	[ -n "$fpid" ] && kill -KILL "$fpid" 2>/dev/null
	[ -n "$rpid" ] && kill -KILL "$rpid" 2>/dev/null
	pkill -KILL -f "au worker --queue r$$" 2>/dev/null
	wait 2>/dev/null
	# PostgreSQL is the suite's: make sure it is up again for what follows
	$pguser $pgbin/pg_ctl -D "$pgdata" status >/dev/null 2>&1 || pg_start
	for db in $dbs; do psql -q "$AU_TEST_PG" -c "DROP DATABASE $db WITH (FORCE)" >/dev/null 2>&1; done
}
trap cleanup EXIT
# pg_ctl start with the options the server was started with (postmaster.opts)
pg_start() {
	local opts
	opts=$(cut -d' ' -f2- "$pgdata/postmaster.opts" | sed 's/"-D" "[^"]*" *//')
	$pguser $pgbin/pg_ctl -D "$pgdata" -l "$AU_TEST_TMP/pg/server.log" -w -o "$opts" start >/dev/null
}
newdb() { # sets $db, $dburl
	db="au_restart_$$_$1"
	psql -q "$AU_TEST_PG" -c "CREATE DATABASE $db" >/dev/null || exit 1
	dbs="$dbs $db"
	dburl="${AU_TEST_PG%/*}/$db"
	"$au" migrate --queue-url "$dburl" --store-url "$dburl" >/dev/null || exit 1
}
sql() { psql -tAq "$dburl" -c "$1" 2>/dev/null; }
nrecords() { sql "SELECT count(*) FROM au_results" || echo 0; }
at_least() { [ "$($1)" -ge "$2" ]; }
H_DONE=$(printf '\xa6status\xa9completed' | od -An -tx1 | tr -d ' \n')
completed() { sql "SELECT count(*) FROM au_results WHERE encode(record, 'hex') LIKE '%$H_DONE%'"; }
children() { pgrep -P "$fpid" | sort; }
qstats() { "$au" queues --json | grep "\"queue\":\"$Q\"" | sed 's/.*"ready":\([0-9]*\).*"running":\([0-9]*\).*"dead":\([0-9]*\).*/ready \1 running \2 dead \3/'; }
empty() { [ "$(qstats)" = "ready 0 running 0 dead 0" ]; }
run() { # name, log: enqueue 3000, start the fleet, wait for 500 records
	seq 1 3000 | sed 's/.*/{"ms":5,"i":&}/' >"$dir/args.jsonl"
	"$au" enqueue au.sleep --queue "$Q" --args-file "$dir/args.jsonl" >/dev/null || exit 1
	"$au" worker --queue "$Q" --processes 2 --concurrency 8 --lease 3000ms --quiet 2>>"$2" &
	fpid=$!
	t_ok "$1: the run is under way" t_until 30 at_least nrecords 500
	before=$(children)
}
finish() { # name, log
	t_ok "$1: all 3000 complete" t_until 60 at_least nrecords 3000
	t_eq "$1: each with its record, completed" "$(nrecords) $(completed)" "3000 3000"
	# (a lease whose ack the crash lost is rescued once it runs out, and its
	# second result refused: first write wins)
	echo "# $1: $(qstats) when the last record was written"
	t_ok "$1: the queue empties" t_until 20 empty
	t_eq "$1: nothing left on it" "$(qstats)" "ready 0 running 0 dead 0"
	t_eq "$1: still one completed record each" "$(nrecords) $(completed)" "3000 3000"
	t_eq "$1: the same worker processes reconnected (none restarted)" "$(children)" "$before"
	t_match "$1: they say they recovered" "$(cat "$2")" \
		"info: (recovered after: |the (queue|result store) is back after |watching queue .* again)"
	kill -TERM "$fpid"; wait "$fpid"; rc=$?; fpid=
	t_eq "$1: the fleet stops with 0" "$rc" 0
}

# --- kill -9 of the queue's redis-server, restarted from its append-only file
redis_up() {
	redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly yes \
		--appendfsync everysec --dir "$dir" --maxmemory-policy noeviction \
		--logfile "$dir/redis.log" &
	rpid=$!
	t_until 10 redis-cli -p "$rport" ping >/dev/null 2>&1
}
Q=r$$a
newdb redis
export AU_QUEUE="redis://127.0.0.1:$rport" AU_STORE=$dburl
redis_up
run redis "$dir/redis-fleet.log"
kill -KILL "$rpid"; wait "$rpid" 2>/dev/null; rpid=
down=$(nrecords)
sleep 1.5
t_ok "redis: nothing completes while it is down" test "$(nrecords)" -le $((down + 40))
redis_up
t_ok "redis: back on the same port" sh -c "redis-cli -p $rport ping >/dev/null"
finish redis "$dir/redis-fleet.log"
kill -TERM "$rpid"; wait "$rpid" 2>/dev/null; rpid=

# --- pg_ctl stop -m immediate of PostgreSQL (queue and store), started again
Q=r$$b
newdb pg
export AU_QUEUE=$dburl AU_STORE=$dburl
run postgres "$dir/pg-fleet.log"
$pguser $pgbin/pg_ctl -D "$pgdata" -m immediate -w stop >/dev/null
t_ok "postgres: stopped" sh -c "! psql -tAq '$AU_TEST_PG' -c 'SELECT 1' >/dev/null 2>&1"
sleep 1.5
pg_start
pg_up() { psql -tAq "$AU_TEST_PG" -c "SELECT 1" >/dev/null 2>&1; }
t_ok "postgres: started again" t_until 20 pg_up
finish postgres "$dir/pg-fleet.log"

[ "$_t_fail" = 0 ] && rm -rf "$dir"
t_done
