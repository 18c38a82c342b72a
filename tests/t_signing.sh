#!/usr/bin/env bash
# t_signing.sh - signed computations end to end on Redis (wire-format.md,
# "Signing"): a worker with AU_SIGNING_KEY runs what `au enqueue` signed
# with its key and dead-letters, unrun, what is unsigned, forged in Redis
# (args or signature changed), or signed with another key; key rotation;
# the settings file's AU_SIGNING_KEY (a fleet reloads it on SIGHUP); a bad
# key list refused at start; the Python of the docs signs a computation a
# worker runs; and no key ever appears in an output, a log or the store.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
docs=$(cd "$(dirname "$0")/.." && pwd)/docs/wire-format.md
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_signing.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$dir/store" AU_CLICKHOUSE=$AU_TEST_CH
unset AU_SIGNING_KEY AU_CONFIG
rport=${AU_TEST_REDIS##*:}
rcli() { redis-cli -p "$rport" "$@"; }
out=$dir/out.log   # every output of au, for the last check
K1="t-signing-one-$RANDOM$RANDOM-secret"
K0="t-signing-zero-$RANDOM$RANDOM-secret"
KX="t-signing-other-$RANDOM$RANDOM-secret"
kid() { printf '%s' "$1" | sha256sum | cut -c1-8; }
Q=sg$RANDOM$RANDOM
wpid=
worker() { # keys, extra args...: a worker on $Q in the background, sets $wpid
	local keys=$1; shift
	AU_SIGNING_KEY=$keys "$au" worker --queue "$Q" --retry-base 50ms "$@" >>"$dir/worker.log" 2>&1 &
	wpid=$!
}
stop() { [ -n "$wpid" ] && kill -TERM "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null; wpid=; }
trap 'stop; rm -rf "$dir"' EXIT
enq() { # keys ("" = unset), args json, extra...: prints the id
	local keys=$1 args=$2; shift 2
	if [ -n "$keys" ]; then
		AU_SIGNING_KEY=$keys "$au" enqueue au.echo --queue "$Q" --args "$args" "$@" 2>>"$out" | tee -a "$out"
	else
		"$au" enqueue au.echo --queue "$Q" --args "$args" "$@" 2>>"$out" | tee -a "$out"
	fi
}
dead_listed() { "$au" dlq list --queue "$Q" --json 2>/dev/null | grep -q "\"id\":\"$1\""; }
reason() { "$au" dlq show "$1" 2>>"$out" | tee -a "$out" | sed -n 's/^reason: *//p'; }
result_json() { "$au" result "$1" --json 2>>"$out" | tee -a "$out"; }
refused() { # name, id, reason: dead-lettered with it, its record failed, no result
	t_ok "$1: dead-lettered" t_until 15 dead_listed "$2"
	t_eq "$1: the reason" "$(reason "$2")" "$3"
	local r
	r=$(result_json "$2")
	t_match "$1: its record failed with the reason" "$r" "\"status\":\"failed\".*\"error\":\"$3\""
	t_ok "$1: never run (no result)" bash -c "! printf '%s' '$r' | grep -q '\"result\"'"
}
# the body of id in Redis, as a file
body_get() { rcli --raw HGET "au:{$Q}:body" "$1" | head -c -1 >"$dir/body"; }
body_put() { rcli -x HSET "au:{$Q}:body" "$1" <"$dir/body" >/dev/null; }

# --- a bad key list is refused at start, never shown
r=$(AU_SIGNING_KEY="0123456789abcde" "$au" enqueue au.echo --queue "$Q" 2>&1)
rc=$?
t_ok "enqueue with a bad key list fails: exit $rc" test "$rc" -ne 0
printf '%s\n' "$r" >>"$out"
t_eq "... with the reason" "$r" "au: AU_SIGNING_KEY: key 1 is shorter than 16 bytes"
r=$(AU_SIGNING_KEY="$K1,tiny" "$au" enqueue au.echo --queue "$Q" 2>&1)
t_eq "the second key too short" "$r" "au: AU_SIGNING_KEY: key 2 is shorter than 16 bytes"
printf '%s\n' "$r" >>"$out"
r=$(AU_SIGNING_KEY="tiny-key" timeout 10 "$au" worker --queue "$Q" 2>&1)
rc=$?
t_ok "a worker with a bad key list does not start: exit $rc" test "$rc" -ne 0 -a "$rc" -ne 124
printf '%s\n' "$r" >>"$out"
t_eq "... with the reason" "$r" "au: unable to start the worker: AU_SIGNING_KEY: key 1 is shorter than 16 bytes"
r=$(AU_SIGNING_KEY="tiny-key" timeout 10 "$au" worker --queue "$Q" --processes 2 2>&1)
rc=$?
t_eq "a fleet with a bad key list does not start either: exit 2" "$rc" 2
printf '%s\n' "$r" >>"$out"
t_eq "... once, with the reason" "$r" "au: unable to start the worker: AU_SIGNING_KEY: key 1 is shorter than 16 bytes"
t_eq "nothing was enqueued" "$(rcli HLEN "au:{$Q}:body")" 0

# --- before a worker runs: forged ones waiting in the queue
forged=$(enq "$K1" '{"n":3}')
body_get "$forged"
t_ok "the signed body carries the header" grep -q "v1:$(kid "$K1"):" "$dir/body"
python3 -c 'import sys; p=sys.argv[1]; b=open(p,"rb").read(); n=b.replace(b"\x81\xa1n\x03", b"\x81\xa1n\x04"); assert n != b; open(p,"wb").write(n)' "$dir/body"
body_put "$forged"
tampered=$(enq "$K1" '{"n":5}')
body_get "$tampered"
python3 -c 'import sys, re; p=sys.argv[1]; b=open(p,"rb").read(); n=re.sub(rb"(v1:[0-9a-f]{8}:)([0-9a-f])", lambda m: m.group(1) + (b"1" if m.group(2) != b"1" else b"2"), b); assert n != b; open(p,"wb").write(n)' "$dir/body"
body_put "$tampered"
other=$(enq "$KX" '{"n":6}')

# --- a worker with the key
worker "$K1"
r=$(AU_SIGNING_KEY=$K1 "$au" enqueue au.echo --queue "$Q" --args '{"n":1}' --wait 2>>"$out")
printf '%s\n' "$r" >>"$out"
t_eq "signed with the worker's key: enqueue --wait completes" "$r" '{"n":1}'
plain=$(enq "" '{"n":2}')
refused "unsigned" "$plain" "bad signature: unsigned"
refused "args forged in Redis" "$forged" "bad signature: does not match any key"
refused "signature tampered in Redis" "$tampered" "bad signature: does not match any key"
refused "another key" "$other" "bad signature: unknown key $(kid "$KX")"
t_ok "the worker logged the dead ones with their reason" \
	grep -q "$plain .*failed dead.*: bad signature: unsigned" "$dir/worker.log"

# --- rotation: workers K0,K1; clients move to K0; then K1 is retired
stop
worker "$K0,$K1"
r=$(AU_SIGNING_KEY="$K0,$K1" "$au" enqueue au.echo --queue "$Q" --args '{"n":7}' --wait 2>>"$out")
t_eq "rotation: signed with the new key, accepted" "$r" '{"n":7}'
r=$(AU_SIGNING_KEY="$K1" "$au" enqueue au.echo --queue "$Q" --args '{"n":8}' --wait 2>>"$out")
t_eq "rotation: signed with the old key, still accepted" "$r" '{"n":8}'
old=$(enq "$K1" '{"n":9}' --delay 2s)
stop
worker "$K0"
refused "rotation done: the old key's" "$old" "bad signature: unknown key $(kid "$K1")"
r=$(AU_SIGNING_KEY="$K0" "$au" enqueue au.echo --queue "$Q" --args '{"n":10}' --wait 2>>"$out")
t_eq "rotation done: the new key's runs" "$r" '{"n":10}'
stop

# --- the settings file
printf 'AU_SIGNING_KEY=%s\n' "$K0" >"$dir/au.conf"
"$au" worker --queue "$Q" --retry-base 50ms --config "$dir/au.conf" >>"$dir/worker.log" 2>&1 &
wpid=$!
r=$("$au" enqueue au.echo --queue "$Q" --args '{"n":11}' --wait --config "$dir/au.conf" 2>>"$out")
t_eq "--config's AU_SIGNING_KEY: signed and checked" "$r" '{"n":11}'
refused "--config's worker checks" "$(enq "" '{"n":12}')" "bad signature: unsigned"
r=$(AU_SIGNING_KEY=$K1 "$au" enqueue au.echo --queue "$Q" --args '{"n":13}' --config "$dir/au.conf" 2>>"$out")
refused "the environment wins over the file" "$r" "bad signature: unknown key $(kid "$K1")"

# --- a fleet reloads the file's keys on SIGHUP: its new children check with them
stop
printf 'AU_SIGNING_KEY=%s\n' "$K1" >"$dir/au.conf"
"$au" worker --queue "$Q" --retry-base 50ms --processes 1 --config "$dir/au.conf" \
	>>"$dir/worker.log" 2>&1 &
wpid=$!
child() { pgrep -P "$wpid" | head -1; }
r=$(AU_SIGNING_KEY=$K1 "$au" enqueue au.echo --queue "$Q" --args '{"n":14}' --wait --wait-timeout 15s 2>>"$out")
t_eq "fleet: signed with the file's key" "$r" '{"n":14}'
first=$(child)
printf 'AU_SIGNING_KEY=%s\n' "$K0" >"$dir/au.conf"
kill -HUP "$wpid"
replaced() { local c; c=$(child); [ -n "$c" ] && [ "$c" != "$first" ] && ! kill -0 "$first" 2>/dev/null; }
t_ok "fleet: SIGHUP replaces the child" t_until 20 replaced
r=$(AU_SIGNING_KEY=$K0 "$au" enqueue au.echo --queue "$Q" --args '{"n":15}' --wait --wait-timeout 15s 2>>"$out")
t_eq "fleet: after SIGHUP the new key's runs" "$r" '{"n":15}'
refused "fleet: after SIGHUP the old key's" "$(enq "$K1" '{"n":16}')" "bad signature: unknown key $(kid "$K1")"
stop
printf 'AU_SIGNING_KEY=%s\n' "$K0" >"$dir/au.conf"
"$au" worker --queue "$Q" --retry-base 50ms --config "$dir/au.conf" >>"$dir/worker.log" 2>&1 &
wpid=$!

# --- the Python of the docs
sed -n '/^### Signing in Python/,/^```$/p' "$docs" | sed -n '/^```python$/,/^```$/p' | sed '1d;$d' >"$dir/sign.py"
r=$(python3 "$dir/sign.py" | tail -1)
t_eq "the docs' Python signs the worked example as documented" "$r" \
	"v1:ba3dbdc4:23fe8801105d260f0597331d0d22d2bf9a06ed34eab00b0804cbfe27bbf3e81d"
t_ok "... the header the docs show" grep -q "^au-signature: $r\$" "$docs"
hid=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
PYTHONPATH=$dir python3 -c '
import sys, time, sign
c = {"id": sys.argv[1], "task": "au.echo", "queue": sys.argv[2], "ttl_s": 86400,
     "created_at": int(time.time() * 1000), "headers": [("traceparent", "00-by-python-01")]}
sys.stdout.buffer.write(sign.signed(c, sys.argv[3].encode(), args=b"\x81\xa2py\x01"))' \
	"$hid" "$Q" "$K0" >"$dir/body"
body_put "$hid"
rcli RPUSH "au:{$Q}:ready:0" "$hid" >/dev/null
rcli ZADD "au:{$Q}:prios" 0 0 >/dev/null
rcli LPUSH "au:{$Q}:wakelist" 1 >/dev/null
r=$("$au" wait "$hid" --timeout 15s 2>>"$out")
t_eq "a computation the docs' Python signed runs" "$r" '{"py":1}'
stop

# --- no key anywhere
n=0
for k in "$K1" "$K0" "$KX"; do
	n=$((n + 1))
	t_ok "key $n in no output" bash -c "! grep -rqF -- '$k' '$out'"
	t_ok "... in no worker log" bash -c "! grep -qF -- '$k' '$dir/worker.log'"
	t_ok "... in no record" bash -c "! grep -rqF -- '$k' '$dir/store'"
done
t_ok "the worker logs were written" test -s "$dir/worker.log"
t_done
