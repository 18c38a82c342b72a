#!/usr/bin/env bash
# t_secrets.sh - no secret ever reaches an output or a log. Every URL has a
# password of its own (a Redis with --requirepass and a PostgreSQL with
# scram passwords, started here; ClickHouse's user au), AU_SIGNING_KEY is
# set, and a small but full workload runs, with the queue on Redis and the
# store on PostgreSQL, then the other way round: a fleet from a --config
# file (text logs, then JSON, with tracing), reloaded with SIGHUP; enqueue
# with middleware, wait, result, status --json; a
# computation that fails, one dead-lettered, dlq list and show; servers
# down or refusing the password at start, with and without
# --wait-for-servers; a wrong ClickHouse password while running (an
# outage); au workers, au queues (--json too); bad URLs and unknown ids.
# Then every output, every log, the store's tables and the queue's keys
# are searched for each secret: none may appear. (The URLs do appear,
# masked: checked too, so the search is known to look at real output.)
# Needs AU_BIN, AU_TEST_CH (tests/run.sh sets them); starts a Redis and a
# PostgreSQL of its own at AU_PORT_BASE + 77 and + 78.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_secrets.XXXXXX")
chmod 755 "$dir"
out=$dir/out    # everything au prints goes here, one file per command
mkdir -p "$out"
base=${AU_PORT_BASE:-17300}
rport=$((base + 77)) pport=$((base + 78))
rpw=rds-Pw-8817q pgpw=pg-secret-77 chpw=au-secret signing=sk-signing-Zq81x0fe
export AU_SIGNING_KEY=$signing
secrets="$rpw $pgpw $chpw $signing"
wpid= fpid=
cleanup() {
	[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null
	[ -n "$fpid" ] && kill -KILL "$fpid" 2>/dev/null
	tls_stop
	[ "$_t_fail" = 0 ] && rm -rf "$dir"
}
trap cleanup EXIT

# --- servers that want passwords
mkdir -p "$dir/redis"
_tls_own "$dir/redis" nobody:nogroup
$_tls_run_as redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/redis" \
	--logfile "$dir/redis/redis.log" --requirepass "$rpw" &
tls_track $!
t_until 15 sh -c "redis-cli -p $rport ping 2>&1 | grep -q NOAUTH" &&
tls_certs "$dir/certs" && tls_start_pg "$dir/pg" "$dir/certs" "$pport" scram-sha-256 ||
	{ echo "not ok - servers"; t_done; exit 1; }
chport=${AU_TEST_CH_PORT:-${AU_TEST_CH##*:}}
chport=${chport%%/*}
R="redis://:$rpw@127.0.0.1:$rport"
P="postgres://postgres:$pgpw@127.0.0.1:$pport/postgres"
C="http://au:$chpw@127.0.0.1:$chport/default"
Rm="redis://:\*\*\*@127.0.0.1:$rport"
Cm="http://au:\*\*\*@127.0.0.1:$chport/default"

n=0
run() { # name, command...: runs it, its output and stderr into $out/<n>-name
	local name=$1; shift
	n=$((n + 1))
	"$@" >"$out/$n-$name.out" 2>"$out/$n-$name.err"
}
runs_to() { # file: the output of the last run
	cat "$out/$n-"*.out "$out/$n-"*.err
}

round() { # label, queue url, store url, log format
	local b=$1 Q=s$RANDOM$RANDOM id id2 id3 dead
	export AU_QUEUE=$2 AU_STORE=$3 AU_CLICKHOUSE=$C

	# a fleet from a config file, reloaded with SIGHUP
	printf 'AU_QUEUE=%s\nAU_STORE=%s\nAU_CLICKHOUSE=%s\n' "$2" "$3" "$C" >"$dir/au.conf"
	env -u AU_QUEUE -u AU_STORE -u AU_CLICKHOUSE AU_CONFIG="$dir/au.conf" \
		"$au" worker --queue "$Q" --processes 2 --retry-base 50ms --log-level debug \
		--log-format "$4" --middleware tracing >"$out/$b-fleet.out" 2>"$out/$b-fleet.err" &
	fpid=$!
	id=$("$au" enqueue ch.query --queue "$Q" --middleware tracing,logging --header team=x \
		--args '{"sql":"SELECT 6 * 7 AS x"}' 2>>"$out/$b-enqueue.err")
	run "$b-wait" "$au" wait "$id" --queue "$Q" --timeout 30s
	t_eq "$b: the workload runs (wait)" "$(cat "$out/$n-$b-wait.out")" \
		'{"columns":["x"],"types":["UInt16"],"rows":[[42]]}'
	run "$b-result" "$au" result "$id" --json
	run "$b-status" "$au" status "$id" --json
	t_match "$b: status --json" "$(runs_to)" '"status":"completed"'
	# a statement that fails, and a task that fails until dead-lettered
	id2=$("$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT nope("}' 2>>"$out/$b-enqueue.err")
	run "$b-wait-failed" "$au" wait "$id2" --queue "$Q" --timeout 30s
	t_match "$b: a failed computation says why" "$(runs_to)" "clickhouse error 62 at '$Cm'"
	run "$b-result-failed" "$au" result "$id2" --json
	run "$b-status-failed" "$au" status "$id2" --json
	id3=$("$au" enqueue au.fail --queue "$Q" --max-attempts 2 --args '{"message":"boom","retryable":true}' 2>>"$out/$b-enqueue.err")
	run "$b-wait-dead" "$au" wait "$id3" --queue "$Q" --timeout 30s
	run "$b-dlq-list" "$au" dlq list --queue "$Q"
	run "$b-dlq-list-json" "$au" dlq list --queue "$Q" --json
	run "$b-dlq-show" "$au" dlq show "$id3" --queue "$Q"
	run "$b-workers" "$au" workers
	t_match "$b: au workers lists the fleet" "$(runs_to)" "$Q"
	run "$b-workers-json" "$au" workers --json
	run "$b-queues" "$au" queues
	t_match "$b: au queues" "$(runs_to)" "^$Q "
	run "$b-queues-json" "$au" queues --json
	# the file changes: ClickHouse with a password the server refuses
	printf 'AU_QUEUE=%s\nAU_STORE=%s\nAU_CLICKHOUSE=%s\n' "$2" "$3" \
		"http://au:$chpw-but-wrong@127.0.0.1:$chport/default" >"$dir/au.conf"
	kill -HUP "$fpid"
	sleep 2
	id=$("$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT 1"}' 2>>"$out/$b-enqueue.err")
	sleep 2
	kill -TERM "$fpid"; wait "$fpid"; fpid=
	t_match "$b: the fleet logged, with the urls masked" "$(cat "$out/$b-fleet.err")" \
		"clickhouse +$Cm |\"clickhouse\":\"$Cm\""
	run "$b-status-json-pending" "$au" status "$id" --json

	# a wrong ClickHouse password while running: an outage, logged
	"$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT 2"}' >/dev/null 2>>"$out/$b-enqueue.err"
	AU_CLICKHOUSE="http://au:$chpw-but-wrong@127.0.0.1:$chport/default" \
		"$au" worker --queue "$Q" --skip-check clickhouse --log-level debug \
		>"$out/$b-outage.out" 2>"$out/$b-outage.err" &
	wpid=$!
	t_ok "$b: a wrong password while running is logged as an outage" t_until 15 \
		grep -q "unavailable, leasing paused until it is back: .*'http://au:\*\*\*@" "$out/$b-outage.err"
	kill -TERM "$wpid"; wait "$wpid"; wpid=

	# servers down or refusing at start
	run "$b-ch-down" "$au" worker --queue "$Q" --clickhouse "http://au:$chpw@127.0.0.1:1/default"
	t_match "$b: clickhouse down at start" "$(runs_to)" "unable to connect to 'http://au:\*\*\*@127.0.0.1:1/default'"
	run "$b-ch-wrong" "$au" worker --queue "$Q" --clickhouse "http://au:$chpw-but-wrong@127.0.0.1:$chport/default"
	run "$b-queue-down" "$au" worker --queue "$Q" --queue-url "redis://:$rpw@127.0.0.1:1"
	run "$b-queue-wrong" "$au" worker --queue "$Q" --queue-url "redis://:$rpw-but-wrong@127.0.0.1:$rport"
	run "$b-store-wrong" "$au" worker --queue "$Q" \
		--store-url "postgres://postgres:$pgpw-but-wrong@127.0.0.1:$pport/postgres"
	run "$b-bad-port" "$au" worker --queue "$Q" --clickhouse "http://au:$chpw@127.0.0.1:99999/default"
	run "$b-bad-port-queue" "$au" enqueue au.echo --queue "$Q" --queue-url "redis://:$rpw@127.0.0.1:0"
	run "$b-wait-for" timeout -s INT 3 "$au" worker --queue "$Q" --wait-for-servers \
		--queue-url "redis://:$rpw@127.0.0.1:1"
	t_match "$b: --wait-for-servers logs what it waits for, masked" "$(runs_to)" \
		"waiting for queue: unable to connect to 'redis://:\*\*\*@127.0.0.1:1'"
	run "$b-enqueue-down" "$au" enqueue au.echo --queue "$Q" --queue-url "redis://:$rpw@127.0.0.1:1"
	run "$b-status-unknown" "$au" status 0123456789abcdef0123456789abcdef
	run "$b-result-unknown" "$au" result 0123456789abcdef0123456789abcdef --queue "$Q"
	run "$b-unknown-task" "$au" enqueue no.such.task --queue "$Q" --args '{}'
	run "$b-help" "$au" worker --help
	run "$b-rediss" "$au" queues --queue-url "rediss://:$rpw@127.0.0.1:$rport"
	dead=$(grep -c . "$out/$b-fleet.err")
	t_ok "$b: the fleet wrote a log ($dead lines)" test "$dead" -gt 5
}
round redis-pg "$R" "$P" text
round pg-redis "$P" "$R" json

# --- what the servers keep: the store's tables, the queue's keys
pg_dump -h "$dir/pg" -p "$pport" -U postgres -d postgres --data-only >"$out/pg.dump" 2>&1
t_match "the store's tables were dumped" "$(cat "$out/pg.dump")" "COPY "
redis-cli -p "$rport" -a "$rpw" --no-auth-warning --scan >"$dir/keys" 2>/dev/null
while read -r k; do
	case $(redis-cli -p "$rport" -a "$rpw" --no-auth-warning TYPE "$k") in
	string) redis-cli -p "$rport" -a "$rpw" --no-auth-warning GET "$k" ;;
	hash) redis-cli -p "$rport" -a "$rpw" --no-auth-warning HGETALL "$k" ;;
	list) redis-cli -p "$rport" -a "$rpw" --no-auth-warning LRANGE "$k" 0 -1 ;;
	zset) redis-cli -p "$rport" -a "$rpw" --no-auth-warning ZRANGE "$k" 0 -1 ;;
	set) redis-cli -p "$rport" -a "$rpw" --no-auth-warning SMEMBERS "$k" ;;
	stream) redis-cli -p "$rport" -a "$rpw" --no-auth-warning XRANGE "$k" - + ;;
	esac
done <"$dir/keys" >"$out/redis.dump" 2>&1
t_ok "the queue's keys were dumped" test "$(wc -l <"$dir/keys")" -gt 3

# --- the search
t_ok "the outputs name the servers (masked)" grep -rqa "$Rm" "$out"
for s in $secrets; do
	hits=$(grep -rla -- "$s" "$out" | sed "s#^$out/##" | tr '\n' ' ')
	t_eq "no output, log or stored record holds '$s'" "$hits" ""
done
t_done
