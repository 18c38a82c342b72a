#!/usr/bin/env bash
# t_injection.sh - values that try to leave their SQL literal, sent to the
# real ClickHouse through `au enqueue --wait` and a running worker: each
# comes back exactly as it went, from `SELECT {v:String} AS v` (ch.query
# with "params") and from a canary table it was inserted into (ch.insert,
# ch.exec); numbers out of their declared type's range and table names that
# are not identifiers fail with a message that names the parameter; and at
# the end the canary table still exists with every row. tests/test_sql.c
# has the same values without a server.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_injection.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
Q=inj$RANDOM$RANDOM
T=au_canary_$RANDOM$RANDOM
ch() { curl -sS "$AU_TEST_CH" --data-binary "$1"; }
"$au" worker --queue "$Q" --quiet 2>>"$dir/worker.log" &
wpid=$!
trap 'kill -TERM $wpid 2>/dev/null; wait $wpid 2>/dev/null; ch "DROP TABLE IF EXISTS $T" >/dev/null 2>&1; rm -rf "$dir"' EXIT
run() { # task, args: the outcome as `au enqueue --wait` prints it, and its exit status
	"$au" enqueue "$1" --queue "$Q" --args "$2" --wait --wait-timeout 30s 2>&1
}

ch "CREATE TABLE $T (n UInt32, v String) ENGINE = Memory"
ch "INSERT INTO $T VALUES (0, 'first'), (0, 'second'), (0, 'third')"
t_eq "the canary table has its three rows" "$(ch "SELECT count() FROM $T")" 3

# Each value as the JSON string literal au prints it back as (jansson's
# escapes: \" \\ \n \r \t \u00XX; other UTF-8 as it is).
values=(
	'"it'\''s"'
	'"'\'''\''"'
	'"\\"'
	'"\\'\''"'
	'"a\u0000b"'
	'"'\''; DROP TABLE canary; --"'
	'"\\'\''; DROP TABLE '"$T"'; --"'
	'"x'\'' OR '\''1'\''='\''1"'
	'"{other:String}"'
	'"*/ DROP /*"'
	'"-- x"'
	'"l1\nl2\r\n\tend"'
	'"\u0001\u001F"'
	'"h\u00e9 \u2603 \ud83d\ude00"'
	'"`x` \"y\" $(id)"'
	'""'
)
n=0
for lit in "${values[@]}"; do
	n=$((n + 1))
	want=$(printf '%s' "$lit" | sed 's/\\u00e9/é/; s/\\u2603/☃/; s/\\ud83d\\ude00/😀/')
	out=$(run ch.query '{"sql":"SELECT {v:String} AS v","params":{"v":'"$lit"',"other":"'\''"}}'); rc=$?
	t_eq "ch.query returns $lit as it is" "$rc $out" \
		"0 {\"columns\":[\"v\"],\"types\":[\"String\"],\"rows\":[[$want]]}"
	out=$(run ch.insert '{"table":"'"$T"'","rows":[{"n":'$n',"v":'"$lit"'}]}'); rc=$?
	t_eq "ch.insert of $lit" "$rc $out" '0 {"inserted":1}'
	out=$(run ch.exec '{"sql":"INSERT INTO {t:Identifier} VALUES ({n:UInt32}, {v:String})","params":{"t":"'"$T"'","n":'$n',"v":'"$lit"'}}'); rc=$?
	t_eq "ch.exec insert of $lit" "$rc $out" '0 {"ok":true}'
	out=$(run ch.query '{"sql":"SELECT count() AS c FROM {t:Identifier} WHERE n = {n:UInt32} AND v = {v:String}","params":{"t":"'"$T"'","n":'$n',"v":'"$lit"'}}'); rc=$?
	t_eq "both rows hold $lit exactly" "$rc $out" \
		'0 {"columns":["c"],"types":["UInt64"],"rows":[[2]]}'
done

# numbers that do not fit the declared type are refused, not wrapped
bad=(
	'UInt8 300 300'
	'UInt8 -1 -1'
	'Int8 -129 -129'
	'Int8 128 128'
	'UInt32 4294967296 4294967296'
	'UInt64 "18446744073709551616" 18446744073709551616'
	'Int64 "-9223372036854775809" -9223372036854775809'
)
for b in "${bad[@]}"; do
	set -- $b
	out=$(run ch.query '{"sql":"SELECT {v:'"$1"'} AS v","params":{"v":'"$2"'}}'); rc=$?
	t_eq "$1 = $2 fails" "$rc" 1
	t_match "$1 = $2: the message names the parameter and the type" "$out" \
		"ch\.query: parameter 'v': $3 is out of range for $1"
done
out=$(run ch.query '{"sql":"SELECT {v:UInt8} AS v","params":{"v":1.5}}'); rc=$?
t_match "a float for a UInt8 fails" "$rc $out" "^1 .*ch\.query: parameter 'v': expected UInt8, got real"
out=$(run ch.query '{"sql":"SELECT {v:UInt64} AS v","params":{"v":18446744073709551615}}'); rc=$?
t_eq "UInt64's largest value comes back" "$rc $out" \
	'0 {"columns":["v"],"types":["UInt64"],"rows":[["18446744073709551615"]]}'

# table names that are not identifiers
for t in "$T; DROP TABLE $T" "$T\`" "default.$T.x" "$T --" "$T'"; do
	out=$(run ch.insert '{"table":"'"$t"'","rows":[{"n":1,"v":"x"}]}'); rc=$?
	t_match "ch.insert refuses the table '$t'" "$rc $out" \
		"^1 .*ch\.insert: parameter 'table': '.*' is not a valid identifier"
done
out=$(run ch.insert '{"table":"default.'"$T"'","rows":[{"n":0,"v":"db.table"}]}'); rc=$?
t_eq "ch.insert into db.table" "$rc $out" '0 {"inserted":1}'

t_eq "the canary table is still there" "$(ch "EXISTS TABLE $T")" 1
t_eq "with every row" "$(ch "SELECT count() FROM $T")" $((3 + 2 * ${#values[@]} + 1))
t_eq "the first rows untouched" "$(ch "SELECT v FROM $T WHERE n = 0 AND v != 'db.table' ORDER BY v" | tr '\n' ' ')" \
	"first second third "
t_done
