#!/usr/bin/env bash
# t_tls_pg.sh - PostgreSQL over TLS: au hands sslmode= and sslrootcert= of
# the URL to libpq. Against a PostgreSQL with ssl=on and a certificate
# signed by a CA the test makes (password auth): sslmode=verify-full with
# that CA runs a worker, enqueue and wait (queue and store on it, every
# connection of au encrypted), another CA or another host name is refused
# at once with a message naming the masked URL, sslmode=require works, and
# sslmode=require on a server without TLS is refused; a password given as
# ?password= is masked like one in the authority.
# Needs AU_BIN, AU_TEST_PG, AU_TEST_CH (tests/run.sh sets them); starts a
# PostgreSQL of its own at AU_PORT_BASE + 73.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_tls_pg.XXXXXX")
chmod 755 "$dir"
port=$((${AU_PORT_BASE:-17300} + 73))
wpid=
cleanup() { [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; tls_stop; rm -rf "$dir"; }
trap cleanup EXIT
tls_certs "$dir/certs" && tls_start_pg "$dir/pg" "$dir/certs" "$port" scram-sha-256 ||
	{ echo "# 0 passed, 1 failed"; exit 1; }
export AU_CLICKHOUSE=$AU_TEST_CH
ca=$dir/certs/ca.pem
pw=pg-secret-77
hostport="127.0.0.1:$port"
vf="postgres://postgres:$pw@$hostport/postgres?sslmode=verify-full&sslrootcert=$ca"
vf_masked="postgres://postgres:\*\*\*@$hostport/postgres\?sslmode=verify-full&sslrootcert=$ca"
no_secret() { ! printf '%s' "$1" | grep -q "$pw"; }
psql_tls() { # sql: as the server sees it, over a socket
	psql -X -A -t -h "$dir/pg" -p "$port" -U postgres -d postgres -c "$1" 2>&1
}

# --- verify-full with the right CA: queue and store on it
Q=tls$$
export AU_QUEUE=$vf AU_STORE=$vf
"$au" worker --queue "$Q" --quiet 2>"$dir/w.log" &
wpid=$!
id=$("$au" enqueue au.echo --queue "$Q" --args '{"over":"tls"}'); rc=$?
t_eq "verify-full: enqueue" "$rc" 0
t_eq "verify-full: the worker runs it and the result comes back" \
	"$("$au" wait "$id" --queue "$Q" --timeout 20s 2>&1)" '{"over":"tls"}'
t_eq "verify-full: the record is in the store" "$("$au" status "$id")" completed
au_conns() { [ "$(psql_tls "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'au'")" -ge 1 ]; }
t_ok "verify-full: the worker's connections are there" t_until 10 au_conns
t_eq "verify-full: every connection of au is encrypted" \
	"$(psql_tls "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'au' AND NOT s.ssl")" 0
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "verify-full: the worker stops with 0" "$rc" 0
t_ok "verify-full: no password in the worker's log" sh -c "! grep -q '$pw' '$dir/w.log'"

# --- refused: another CA, another host name, no TLS on the server
refused() { # name, url, expected message (regex): enqueue, then a worker's start
	local name=$1 url=$2 want=$3 t0 ms
	out=$(AU_QUEUE=$url "$au" enqueue au.echo --queue "$Q" --args '[1]' 2>&1); rc=$?
	t_eq "$name: enqueue fails (exit 5, a server problem)" "$rc" 5
	t_match "$name: enqueue says why" "$out" "^au: $want"
	t_ok "$name: enqueue: no password" no_secret "$out"
	t0=$(date +%s%N)
	out=$(AU_QUEUE=$url AU_STORE="file://$dir/store" timeout 20 "$au" worker --queue "$Q" 2>&1); rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	t_eq "$name: the worker refuses to start (exit 5)" "$rc" 5
	t_match "$name: and says why" "$out" "^au: unable to start the worker: queue: $want"
	t_ok "$name: at once ($ms ms)" test "$ms" -lt 5000
	t_ok "$name: worker: no password" no_secret "$out"
}
other="postgres://postgres:$pw@$hostport/postgres?sslmode=verify-full&sslrootcert=$dir/certs/other-ca.pem"
refused "another CA" "$other" \
	"unable to connect to 'postgres://postgres:\*\*\*@$hostport/postgres\?sslmode=verify-full&sslrootcert=$dir/certs/other-ca.pem': SSL error: certificate verify failed \(is sslrootcert the CA that signed the server's certificate\?\)$"
refused "another host name" "postgres://postgres:$pw@localhost:$port/postgres?sslmode=verify-full&sslrootcert=$ca" \
	"unable to connect to 'postgres://postgres:\*\*\*@localhost:$port/postgres\?sslmode=verify-full&sslrootcert=$ca': server certificate for \"127.0.0.1\".* does not match host name \"localhost\"$"
refused "verify-full with a root cert that is not there" \
	"postgres://postgres:$pw@$hostport/postgres?sslmode=verify-full&sslrootcert=$dir/none.pem" \
	"unable to connect to 'postgres://postgres:\*\*\*@$hostport/postgres\?sslmode=verify-full&sslrootcert=$dir/none.pem': root certificate file \"$dir/none.pem\" does not exist$"
plain=${AU_TEST_PG%%\?*}
refused "sslmode=require on a server without TLS" "$plain?sslmode=require" \
	"unable to connect to '$plain\?sslmode=require': server does not support SSL, but SSL was required$"

# --- sslmode=require: encrypted, the certificate not checked; the
# password given as ?password= this time
req="postgres://postgres@$hostport/postgres?sslmode=require&password=$pw"
Q=tlsr$$
export AU_QUEUE=$req AU_STORE=$req
"$au" worker --queue "$Q" --quiet 2>"$dir/w2.log" &
wpid=$!
id=$("$au" enqueue au.echo --queue "$Q" --args '[2]')
t_eq "require: the result comes back" "$("$au" wait "$id" --queue "$Q" --timeout 20s 2>&1)" '[2]'
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "require: the worker stops with 0" "$rc" 0
out=$("$au" worker --queue "$Q" --idle-exit 200ms 2>&1)
t_match "require: the start-up block masks ?password=" "$out" \
	"queue +postgres://postgres@$hostport/postgres\?sslmode=require&password=\*\*\*$"
t_ok "require: no password in the block" no_secret "$out"
out=$(AU_QUEUE="postgres://postgres@$hostport/no_such_db?sslmode=require&password=$pw" \
	"$au" enqueue au.echo --queue "$Q" 2>&1)
t_match "require: a failure masks ?password= too" "$out" \
	"^au: unable to connect to 'postgres://postgres@$hostport/no_such_db\?sslmode=require&password=\*\*\*': database \"no_such_db\" does not exist$"
t_ok "require: no password in it" no_secret "$out"
out=$(AU_QUEUE="postgres://postgres:wrong-77@$hostport/postgres?sslmode=require" \
	"$au" enqueue au.echo --queue "$Q" 2>&1)
t_match "require: the password is checked (it is not trust)" "$out" \
	"password authentication failed for user \"postgres\""

t_done
