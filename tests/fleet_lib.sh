# fleet_lib.sh - what tests/t_fleet.sh and tests/t_fleet_ops.sh share: a
# database of its own per part, a supervised worker in the background, the
# records counted by their msgpack bytes, the ids leased right now. Sourced
# after lib.sh; needs AU_BIN, AU_TEST_REDIS, AU_TEST_PG, AU_TEST_CH.
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_fleet.XXXXXX")
rport=${AU_TEST_REDIS##*:}
cport=$((${AU_PORT_BASE:-17300} + 20))
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
