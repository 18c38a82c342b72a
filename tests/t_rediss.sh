#!/usr/bin/env bash
# t_rediss.sh - Redis over TLS. rediss:// is refused, for the queue and the
# store, by enqueue, a worker (even with --wait-for-servers) and au queues,
# with a message that says why (hiredis 0.14 has no TLS) and what to do,
# the password masked. What it says to do works: the stunnel client
# configuration of the README, run as it is (with the test's host, ports
# and CA), takes a worker, enqueue and wait to a Redis that listens only
# with TLS and wants a password; the same tunnel with another CA carries
# nothing.
# Needs AU_BIN, AU_TEST_CH (tests/run.sh sets them) and stunnel (Debian's
# stunnel4); starts a Redis and stunnels of its own at AU_PORT_BASE + 74..76.
set -u
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tls_lib.sh"
au=$AU_BIN
readme=$(dirname "$0")/../README.md
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_rediss.XXXXXX")
chmod 755 "$dir"
base=${AU_PORT_BASE:-17300}
tls_port=$((base + 74)) tunnel=$((base + 75)) bad_tunnel=$((base + 76))
pw=rds-secret-74
wpid=
cleanup() { [ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; tls_stop; rm -rf "$dir"; }
trap cleanup EXIT
export AU_CLICKHOUSE=$AU_TEST_CH AU_STORE="file://$dir/store"
no_secret() { ! printf '%s' "$1" | grep -q "$pw"; }
Q=rs$$

# --- rediss:// refused, wherever it is given
url="rediss://:$pw@127.0.0.1:$tls_port"
why="this build's hiredis \(0\.14\) has no TLS; reach Redis through a TLS tunnel \(stunnel, spiped\) on 127\.0\.0\.1 and use redis://$"
want="unsupported scheme 'rediss://:\*\*\*@127\.0\.0\.1:$tls_port': $why"
out=$(AU_QUEUE=$url "$au" enqueue au.echo --queue "$Q" --args '[1]' 2>&1); rc=$?
t_eq "enqueue on rediss: usage error (exit 2)" "$rc" 2
t_match "enqueue on rediss: why, and what to do" "$out" "^au: $want"
t_ok "enqueue on rediss: no password" no_secret "$out"
out=$(AU_QUEUE=$url timeout 20 "$au" worker --queue "$Q" --wait-for-servers 2>&1); rc=$?
t_eq "worker on a rediss queue: refused even with --wait-for-servers (exit 2)" "$rc" 2
t_match "worker on a rediss queue: the message" "$out" "^au: unable to start the worker: queue: $want"
t_ok "worker on a rediss queue: no password" no_secret "$out"
out=$(AU_QUEUE="redis://127.0.0.1:1" AU_STORE=$url "$au" worker --queue "$Q" 2>&1); rc=$?
t_eq "worker with a rediss store (checked first: the queue is down)" "$rc" 5
out=$(AU_QUEUE=memory:// AU_STORE=$url "$au" worker --queue "$Q" 2>&1); rc=$?
t_eq "worker with a rediss store: exit 2" "$rc" 2
t_match "worker with a rediss store: the message" "$out" "^au: unable to start the worker: store: $want"
out=$(AU_QUEUE=memory:// AU_STORE=$url "$au" status 0123456789abcdef0123456789abcdef 2>&1); rc=$?
t_match "status from a rediss store: the message" "$out" "^au: $want"
t_ok "status from a rediss store: no password" no_secret "$out"
out=$("$au" queues --queue-url "REDISS://h" 2>&1); rc=$?
t_eq "au queues on rediss: exit 2" "$rc" 2
t_match "au queues on rediss: the message" "$out" "^au: unsupported scheme 'REDISS://h': $why"

# --- the way out: the README's stunnel client, to a TLS-only Redis
command -v stunnel >/dev/null || { echo "not ok - stunnel is not installed (scripts/deps.sh)"; t_done; exit 1; }
tls_certs "$dir/certs" && tls_start_redis "$dir/redis" "$dir/certs" "$tls_port" --requirepass "$pw" ||
	{ echo "not ok - a redis with tls"; t_done; exit 1; }
# the block of the README, with this test's host, ports and CA
conf=$(sed -n '/^  ```ini$/,/^  ```$/p' "$readme" | sed '1d;$d; s/^  //')
t_match "the README has the stunnel configuration" "$conf" "^client = yes$"
tunnel_start() { # name, accept port, CA file
	{
		printf 'foreground = yes\npid =\noutput = %s\n' "$dir/$1.log"
		printf '%s\n' "$conf" | sed -e "s#127.0.0.1:6390#127.0.0.1:$2#" \
			-e "s#redis.example.com:6380#127.0.0.1:$tls_port#" -e "s#/etc/au/redis-ca.pem#$3#" \
			-e "s#^checkHost = redis.example.com#checkIP = 127.0.0.1#"
	} >"$dir/$1.conf"
	stunnel "$dir/$1.conf" >/dev/null 2>&1 &
	tls_track $!
	t_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null
}
t_ok "stunnel with the README's configuration starts" tunnel_start good "$tunnel" "$dir/certs/ca.pem"
export AU_QUEUE="redis://:$pw@127.0.0.1:$tunnel"
"$au" worker --queue "$Q" --quiet 2>"$dir/w.log" &
wpid=$!
id=$("$au" enqueue au.echo --queue "$Q" --args '{"via":"stunnel"}'); rc=$?
t_eq "through the tunnel: enqueue" "$rc" 0
t_eq "through the tunnel: the worker runs it" "$("$au" wait "$id" --queue "$Q" --timeout 20s 2>&1)" '{"via":"stunnel"}'
t_match "through the tunnel: au queues" "$("$au" queues 2>&1)" "^$Q +0 "
kill -TERM "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "through the tunnel: the worker stops with 0" "$rc" 0
t_ok "through the tunnel: no password in the worker's log" sh -c "! grep -q '$pw' '$dir/w.log'"
t_ok "the tunnel did verify the certificate" grep -q "Certificate accepted" "$dir/good.log"

t_ok "a tunnel that trusts another CA starts" tunnel_start bad "$bad_tunnel" "$dir/certs/other-ca.pem"
out=$(AU_QUEUE="redis://:$pw@127.0.0.1:$bad_tunnel" "$au" enqueue au.echo --queue "$Q" 2>&1); rc=$?
t_eq "through it: enqueue fails (exit 5)" "$rc" 5
t_match "through it: a connection error naming the masked url" "$out" \
	"^au: (lost connection to|unable to connect to) 'redis://:\*\*\*@127\.0\.0\.1:$bad_tunnel': (connection reset by peer|server closed the connection)"
t_ok "through it: no password" no_secret "$out"
t_ok "the tunnel refused the certificate" grep -qi "certificate verify failed" "$dir/bad.log"

t_done
