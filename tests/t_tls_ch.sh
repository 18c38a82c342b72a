#!/usr/bin/env bash
# t_tls_ch.sh - ClickHouse over https, against a real 18.16 with only an
# https port and a certificate signed by a CA the test makes: with
# ?cafile= naming that CA the worker starts and runs ch.query and
# ch.insert; without it, with another CA, for another host name, or for an
# http port the worker refuses to start (exit 5) with a message that names
# the masked URL and says what to try; cafile= that cannot be read, on
# http://, or an unknown parameter are refused before anything is sent; a
# running worker that meets a bad certificate takes it as an outage
# (nothing fails, nothing is dead-lettered).
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them); starts
# a ClickHouse of its own at AU_PORT_BASE + 70..72.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_tls_ch.XXXXXX")
chmod 755 "$dir"
port=$((${AU_PORT_BASE:-17300} + 70))
wpid=
cleanup() { [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; tls_stop; rm -rf "$dir"; }
trap cleanup EXIT
tls_certs "$dir/certs" && tls_start_ch "$dir/ch" "$dir/certs" "$port" ||
	{ echo "# 0 passed, 1 failed"; exit 1; }
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$dir/store"
Q=tls$$
ca=$dir/certs/ca.pem
base="https://au:au-secret@127.0.0.1:$port/default"
masked="https://au:\*\*\*@127.0.0.1:$port/default"
good="$base?cafile=$ca"
no_secret() { ! printf '%s' "$1" | grep -q au-secret; }

# --- the right CA: the worker starts, says so, and runs statements
out=$("$au" worker --queue "$Q" --idle-exit 300ms --clickhouse "$good" 2>&1); rc=$?
t_eq "with cafile: the checks pass" "$rc" 0
t_match "with cafile: the block names the masked url and the version" "$out" \
	"clickhouse +$masked\?cafile=$ca \(version 18\.16\.[0-9.]+\)"
t_ok "with cafile: the password is not printed" no_secret "$out"
AU_CLICKHOUSE=$good "$au" worker --queue "$Q" --quiet 2>"$dir/w.log" &
wpid=$!
id=$("$au" enqueue ch.query --queue "$Q" --args '{"sql":"SELECT 40 + {n:UInt8} AS x","params":{"n":2}}')
t_eq "over https: ch.query" "$("$au" wait "$id" --queue "$Q" --timeout 20s)" \
	'{"columns":["x"],"types":["UInt16"],"rows":[[42]]}'
id=$("$au" enqueue ch.exec --queue "$Q" --args '{"sql":"CREATE TABLE IF NOT EXISTS t (n UInt32) ENGINE = Memory"}')
t_eq "over https: ch.exec" "$("$au" wait "$id" --queue "$Q" --timeout 20s)" '{"ok":true}'
id=$("$au" enqueue ch.insert --queue "$Q" --args '{"table":"t","rows":[{"n":1},{"n":2}]}')
t_eq "over https: ch.insert" "$("$au" wait "$id" --queue "$Q" --timeout 20s)" '{"inserted":2}'
t_eq "the rows are in the server" \
	"$(curl -s --cacert "$ca" "https://127.0.0.1:$port/" -d 'SELECT sum(n) FROM t')" 3
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "the worker stops with 0" "$rc" 0
t_ok "its log has no password" sh -c "! grep -q au-secret '$dir/w.log'"

# --- certificates that are not accepted: refused at start, at once
refused() { # name, expected message (regex), clickhouse url
	local t0 ms
	t0=$(date +%s%N)
	out=$(timeout 30 "$au" worker --queue "$Q" --clickhouse "$3" 2>&1); rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	t_eq "$1: exit 5" "$rc" 5
	t_match "$1: the message" "$out" "^au: unable to start the worker: clickhouse: $2"
	t_ok "$1: the password is not printed" no_secret "$out"
	t_ok "$1: at once ($ms ms)" test "$ms" -lt 5000
}
refused "no cafile (the system's CAs)" \
	"unable to connect to '$masked': tls: SSL certificate problem: unable to get local issuer certificate \(a private or self-signed CA\? trust it with \?cafile=/path/to/ca\.pem\)$" \
	"$base"
refused "another CA" \
	"unable to connect to '$masked\?cafile=$dir/certs/other-ca.pem': tls: SSL certificate problem: unable to get local issuer certificate \(is cafile the CA that signed the server's certificate\?\)$" \
	"$base?cafile=$dir/certs/other-ca.pem"
refused "another host name" \
	"unable to connect to 'https://au:\*\*\*@localhost:$port/default\?cafile=$ca': tls: SSL: no alternative certificate subject name matches target host name 'localhost' \(the certificate is for another host name: use the name it was made for\)$" \
	"https://au:au-secret@localhost:$port/default?cafile=$ca"
# an http port: one that answers in plain HTTP at once (ClickHouse's own
# http port waits for a request line a TLS hello lacks, for longer when busy)
chport=$((AU_PORT_BASE + 79))
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"); c.close()
' "$chport" &
hpid=$!
t_until 5 sh -c "curl -s http://127.0.0.1:$chport/ >/dev/null; [ \$? -ne 7 ]"
refused "https to an http port" \
	"unable to connect to 'https://au:\*\*\*@127.0.0.1:$chport/default': tls: .*wrong version number \(is it an http port\? use http://\)$" \
	"https://au:au-secret@127.0.0.1:$chport/default"
kill "$hpid" 2>/dev/null
wait "$hpid" 2>/dev/null

# --- bad URLs: refused before anything is sent (usage error, exit 2)
bad_url() { # name, expected message (regex), clickhouse url
	out=$("$au" worker --queue "$Q" --clickhouse "$3" 2>&1); rc=$?
	t_eq "$1: exit 2" "$rc" 2
	t_match "$1: the message" "$out" "^au: unable to start the worker: clickhouse: invalid clickhouse url $2"
	t_ok "$1: the password is not printed" no_secret "$out"
}
bad_url "cafile that does not exist" \
	"'$masked\?cafile=$dir/none.pem': cannot read cafile '$dir/none.pem': no such file or directory$" \
	"$base?cafile=$dir/none.pem"
bad_url "cafile on http" "'http://au:\*\*\*@127.0.0.1:$chport/default\?cafile=$ca': cafile= is for https://$" \
	"http://au:au-secret@127.0.0.1:$chport/default?cafile=$ca"
bad_url "an unknown parameter" "'$masked\?cafile=$ca&capath=/etc': unknown parameter 'capath' \(the only one is cafile=\)$" \
	"$good&capath=/etc"

# --- a running worker that meets a bad certificate: an outage, not the
# computation's fault (the start-up checks, skipped here, would refuse it)
for i in 0 1 2; do
	echo "$i $("$au" enqueue ch.query --queue "$Q" --args "{\"sql\":\"SELECT $i\"}")"
done >"$dir/ids"
AU_CLICKHOUSE="$base?cafile=$dir/certs/other-ca.pem" "$au" worker --queue "$Q" --skip-check clickhouse \
	>/dev/null 2>"$dir/bad.log" &
wpid=$!
t_ok "bad certificate while running: the worker pauses and says why" t_until 15 grep -q \
	"unavailable, leasing paused until it is back: .*unable to connect to '$masked?cafile=$dir/certs/other-ca.pem': tls: SSL certificate problem" \
	"$dir/bad.log"
sleep 1
pending_all() {
	local i id
	while read -r i id; do
		case $("$au" status "$id" --queue "$Q" 2>/dev/null) in
		pending|running) ;;
		*) return 1 ;;
		esac
	done <"$dir/ids"
}
t_ok "bad certificate while running: no computation has an outcome" pending_all
t_eq "bad certificate while running: none failed" "$(grep -c "attempt=[0-9/]* failed" "$dir/bad.log")" 0
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "bad certificate while running: the worker still stops cleanly" "$rc" 0
t_ok "bad certificate while running: no password in the log" sh -c "! grep -q au-secret '$dir/bad.log'"
AU_CLICKHOUSE=$good "$au" worker --queue "$Q" --idle-exit 1000ms >/dev/null 2>"$dir/good.log" &
wpid=$!
wait "$wpid"; wpid=
all_done() {
	local i id bad=0
	while read -r i id; do
		"$au" result "$id" --queue "$Q" --json 2>/dev/null |
			grep -q "\"attempts\":1,.*\"rows\":\[\[$i\]\]" || bad=$((bad + 1))
	done <"$dir/ids"
	[ "$bad" = 0 ]
}
t_ok "with the right CA they complete, on their first counted attempt" all_done

t_done
