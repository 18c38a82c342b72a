#!/usr/bin/env bash
# t_chop.sh - ch.op through a running worker and the real ClickHouse: each
# operation against the same figures computed in SQL by the test; bad
# names, columns and types refused with their message and no table made;
# injection attempts refused or bound; an attempt killed in the middle of
# its CREATE and retried by another worker leaves one table with the right
# rows; the operation log's rows (within a second); `au lineage` of a
# three-step chain, --depth, --forward, --json; au_ch_drop_flow_tables's
# pattern through a flow's tables.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_chop.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
Q=chop$RANDOM$RANDOM
ch() { curl -sS "$AU_TEST_CH" --data-binary "$1"; }
"$au" worker --queue "$Q" --quiet 2>>"$dir/worker.log" &
wpid=$!
trap '[ -n "$wpid" ] && kill -TERM $wpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
run() { "$au" enqueue ch.op --queue "$Q" --args "$1" --wait --wait-timeout 30s 2>&1; }
tab() { printf '%s' "$1" | jq -r .table; }

ch "DROP TABLE IF EXISTS au_operation_log"
ch "CREATE TABLE au_operation_log (day Date, at_ms UInt64, operation String, inputs Array(String), output String, computation String, flow String, attempt UInt32, sql String, rows UInt64) ENGINE = MergeTree(day, (output, at_ms), 8192)"
for t in ca cb cc; do ch "DROP TABLE IF EXISTS $t"; done
ch "CREATE TABLE ca (x Int64, k String, f Float64) ENGINE = MergeTree ORDER BY tuple()"
ch "INSERT INTO ca VALUES (5,'a',0.5), (2,'b',1.5), (9,'a',2.5), (4,'c',3.5)"
ch "CREATE TABLE cb (y Int64) ENGINE = MergeTree ORDER BY tuple()"
ch "INSERT INTO cb VALUES (10), (20), (30), (40)"
ch "CREATE TABLE cc (k String, z Int64) ENGINE = MergeTree ORDER BY tuple()"
ch "INSERT INTO cc VALUES ('a',100), ('d',400)"

# ---- each operation, against SQL ----
same() { # name, output table, SQL of the same rows (both sorted)
	t_eq "$1" "$(ch "SELECT * FROM $2 ORDER BY tuple(*)")" "$(ch "SELECT * FROM ($3) ORDER BY tuple(*)")"
}
pair="SELECT a.x AS x, b.y AS y FROM (SELECT x, rowNumberInAllBlocks() AS n FROM (SELECT x FROM ca ORDER BY x)) a ALL INNER JOIN (SELECT y, rowNumberInAllBlocks() AS n FROM (SELECT y FROM cb ORDER BY y DESC)) b USING n"
for o in add:plus sub:minus mul:multiply div:divide intdiv:intDiv mod:modulo pow:pow eq:equals ne:notEquals lt:less le:lessOrEquals gt:greater ge:greaterOrEquals; do
	op=${o%%:*} fn=${o#*:}
	r=$(run '{"op":"'$op'","left":{"table":"ca","column":"x","order":[["x","asc"]]},"right":{"table":"cb","column":"y","order":[["y","desc"]]}}')
	same "$op of two tables paired by their order" "$(tab "$r")" "SELECT $fn(x, y) AS value FROM ($pair)"
done
r=$(run '{"op":"mul","left":{"table":"ca","column":"x"},"right":3}')
same "mul by a scalar" "$(tab "$r")" "SELECT x * 3 FROM ca"
t_eq "result rows and columns" "$(printf '%s' "$r" | jq -c '[.rows, .columns]')" '[4,{"value":"Int64"}]'
r=$(run '{"op":"sub","left":100,"right":{"table":"ca","column":"f"}}')
same "a scalar on the left" "$(tab "$r")" "SELECT 100 - f FROM ca"
r=$(run '{"op":"gt","left":{"table":"ca","column":"k"},"right":{"value":"a"}}')
same "a string scalar compared" "$(tab "$r")" "SELECT k > 'a' FROM ca"
r=$(run '{"op":"add","left":"ca","right":"cb"}')
t_match "a table of several columns needs one named" "$r" "ch.op: 'left': name the column"
r=$(run '{"op":"add","left":{"table":"ca","column":"x"},"right":{"table":"cb","limit":2}}')
t_match "different lengths: refused" "$r" "ch.op: add: 'left' and 'right' have different numbers of rows"
fid=$(printf '%s' "$r" | sed -n "s/.*computation '\\([0-9a-f]*\\)'.*/\\1/p")
no_left() { test "$(ch "SELECT count() FROM system.tables WHERE name LIKE 't\\\\_${fid}\\\\_%'")" = 0; }
t_ok "no table left by the failed create ($fid)" t_until 2 no_left
for a in sum:sum mean:avg min:min max:max uniq:uniqExact; do
	op=${a%%:*} fn=${a#*:}
	r=$(run '{"op":"'$op'","input":"ca","column":"x","group_by":["k"]}')
	same "$op by group" "$(tab "$r")" "SELECT k, $fn(x) FROM ca GROUP BY k"
	r=$(run '{"op":"'$op'","input":{"table":"ca","where":[["x",">",2]]},"column":"f"}')
	same "$op of a view" "$(tab "$r")" "SELECT $fn(f) FROM ca WHERE x > 2"
done
r=$(run '{"op":"count","input":"ca","group_by":["k"]}')
same "count by group" "$(tab "$r")" "SELECT k, count() FROM ca GROUP BY k"
r=$(run '{"op":"quantile","input":"ca","column":"x","q":0.25}')
same "quantile q" "$(tab "$r")" "SELECT quantile(0.25)(x) FROM ca"
r=$(run '{"op":"filter","input":{"table":"ca","columns":["x","k"],"where":[["k","in",["a","c"]],["x","<=",5]],"order":[["x","desc"]],"limit":1,"offset":1}}')
same "filter: where, in, order, limit, offset" "$(tab "$r")" "SELECT x, k FROM ca WHERE k IN ('a','c') AND x <= 5 ORDER BY x DESC LIMIT 1, 1"
for h in inner left full; do
	r=$(run '{"op":"join","how":"'$h'","left":"ca","right":"cc","on":["k"]}')
	case $h in
	inner) want="SELECT k, x, f, z FROM ca ALL INNER JOIN cc USING k" ;;
	left) want="SELECT k, x, f, z FROM ca ALL LEFT JOIN cc USING k" ;;
	full) want="SELECT k, x, f, z FROM ca ALL INNER JOIN cc USING k UNION ALL SELECT k, x, f, 0 FROM ca WHERE k NOT IN (SELECT k FROM cc) UNION ALL SELECT k, 0, 0, z FROM cc WHERE k NOT IN (SELECT k FROM ca)" ;;
	esac
	same "$h join" "$(tab "$r")" "$want"
done
r=$(run '{"op":"concat","inputs":["ca",{"table":"ca","where":[["k","=","a"]]}]}')
same "concat" "$(tab "$r")" "SELECT * FROM ca UNION ALL SELECT * FROM ca WHERE k = 'a'"
r=$(run '{"op":"concat","inputs":["ca","cb"]}')
t_match "concat of different columns refused" "$r" "concat needs the same columns"
r=$(run '{"op":"distinct","input":{"table":"ca","columns":["k"]}}')
same "distinct" "$(tab "$r")" "SELECT DISTINCT k FROM ca"
r=$(run '{"op":"values","columns":{"n":"Int32","s":"String","d":"Date"},"rows":[[1,"it'"'"'s","2024-02-29"],[-2,"\\\\","2024-03-01"]]}')
same "values" "$(tab "$r")" "SELECT toInt32(1), 'it\\'s', toDate('2024-02-29') UNION ALL SELECT toInt32(-2), '\\\\\\\\', toDate('2024-03-01')"
t_eq "values: the types" "$(printf '%s' "$r" | jq -c .columns)" '{"n":"Int32","s":"String","d":"Date"}'
r=$(run '{"op":"query","sql":"SELECT number * {m:UInt64} AS n FROM system.numbers LIMIT 5","params":{"m":3}}')
same "query" "$(tab "$r")" "SELECT number * 3 FROM system.numbers LIMIT 5"

# ---- refused: a message, and no statement built from the input ----
refused() { # name, args, message regex
	local r; r=$(run "$2"); t_match "$1" "$r" "$3"
}
refused "unknown op" '{"op":"nope","input":"ca"}' "ch.op: unknown operation 'nope'"
refused "a bad table name" '{"op":"filter","input":"ca; DROP TABLE ca"}' "ch.op: 'input': 'ca; DROP TABLE ca' is not a valid table name"
refused "a table name with a backquote" '{"op":"filter","input":"ca`"}' "is not a valid table name"
refused "a missing table" '{"op":"filter","input":"nosuch_tbl"}' "ch.op: 'input': no table 'nosuch_tbl'"
refused "a bad column name" '{"op":"sum","input":"ca","column":"x`) FROM ca; --"}' "ch.op: 'column' must be a column name"
refused "a missing column" '{"op":"filter","input":{"table":"ca","where":[["nosuch","=",1]]}}' "ch.op: 'input': table 'ca' has no column 'nosuch'"
refused "a where column that is sql" '{"op":"filter","input":{"table":"ca","where":[["1=1 OR x","=",1]]}}' "is not a valid column name"
refused "a bad comparison" '{"op":"filter","input":{"table":"ca","where":[["x","LIKE",1]]}}' "unknown comparison 'LIKE'"
refused "a string against a number column" '{"op":"filter","input":{"table":"ca","where":[["x","=","1 OR 1=1"]]}}' "column 'x' is a number"
refused "arithmetic on strings" '{"op":"add","left":{"table":"ca","column":"k"},"right":1}' "add needs numbers"
refused "sum of strings" '{"op":"sum","input":"ca","column":"k"}' "sum needs numbers: column 'k' is String"
refused "a bad output name" '{"op":"filter","input":"ca","out":{"name":"x;y","scope":"flow"}}' "'out.name' 'x;y' is not a valid name"
refused "a bad scope" '{"op":"filter","input":"ca","out":{"name":"x","scope":"global"}}' "'out.scope' must be temp, flow or persistent"
refused "a values type off the whitelist" '{"op":"values","columns":{"n":"Int64) ENGINE = Log; DROP TABLE ca; --"},"rows":[]}' "values takes"
refused "a values value out of range" '{"op":"values","columns":{"n":"UInt8"},"rows":[[256]]}' "ch.op: 'rows': row 0, column 'n': 256 is out of range for UInt8"
refused "two statements in query" '{"op":"query","sql":"SELECT 1; DROP TABLE ca"}' "query takes one statement"
refused "a query that is not a SELECT" '{"op":"query","sql":"DROP TABLE ca"}' "query takes a SELECT statement"
v=$(run '{"op":"filter","input":{"table":"ca","where":[["k","=","a'"'"' OR '"'"'1'"'"'='"'"'1"]]}}')
t_eq "an injection in a where value is bound: it matches nothing" "$(printf '%s' "$v" | jq .rows)" 0
v=$(run '{"op":"filter","input":{"table":"ca","where":[["k","in",["a","\\'"'"') OR 1=1 --"]]]}}')
t_eq "an injection in an 'in' list is bound" "$(printf '%s' "$v" | jq .rows)" 2
t_eq "the inputs are untouched" "$(ch "SELECT count() FROM ca"):$(ch "SELECT count() FROM cb")" "4:4"
ch "SYSTEM FLUSH LOGS"
t_eq "no CREATE reached the server with a refused name" \
	"$(ch "SELECT count() FROM system.query_log WHERE query LIKE 'CREATE TABLE%' AND (query LIKE '%DROP TABLE ca%' OR query LIKE '%1=1 OR x%' OR query LIKE '%nosuch%')")" 0

# ---- named outputs, and a retried attempt ----
ch "DROP TABLE IF EXISTS p_chop_named"
ch "CREATE TABLE p_chop_named (junk UInt8) ENGINE = Memory"
ch "INSERT INTO p_chop_named VALUES (1), (2), (3), (4), (5), (6), (7)"
r=$(run '{"op":"filter","input":"cb","out":{"name":"chop_named","scope":"persistent"}}')
t_eq "a persistent output is p_<name>" "$(tab "$r")" p_chop_named
same "what an earlier attempt left is replaced" p_chop_named "SELECT y FROM cb"
ch "DROP TABLE IF EXISTS p_chop_slow"
kill -TERM $wpid; wait $wpid
"$au" worker --queue "$Q" --quiet --lease 1s 2>>"$dir/worker.log" &
w1=$!
sleep 0.3
id=$("$au" enqueue ch.op --queue "$Q" --args '{"op":"query","sql":"SELECT number AS n FROM system.numbers WHERE sleep(0.8) = 0 LIMIT 2000","out":{"name":"chop_slow","scope":"persistent"}}')
t_until 5 sh -c "curl -sS '$AU_TEST_CH' --data-binary \"SELECT count() FROM system.tables WHERE name = 'p_chop_slow'\" | grep -q 1"
t_ok "the first attempt began its table" test "$(ch "SELECT count() FROM system.tables WHERE name = 'p_chop_slow'")" = 1
kill -KILL $w1; wait $w1 2>/dev/null
ch "KILL QUERY WHERE query LIKE '%chop_slow%' AND query NOT LIKE '%KILL%' SYNC" >/dev/null
"$au" worker --queue "$Q" --quiet --lease 1s 2>>"$dir/worker.log" &
wpid=$!
"$au" wait "$id" --timeout 30s >"$dir/retry.out" 2>&1
t_eq "the retried attempt completed" "$(jq -r .table "$dir/retry.out")" p_chop_slow
t_eq "one table with the right rows" "$(ch "SELECT count(), uniqExact(n) FROM p_chop_slow")" "$(printf '2000\t2000')"
t_eq "it was attempt 2" "$("$au" status "$id" --json | jq .attempts)" 2

# ---- the operation log ----
r=$(run '{"op":"add","left":{"table":"ca","column":"x"},"right":{"table":"cb","column":"y"}}')
t=$(tab "$r")
logged() { test "$(ch "SELECT count() FROM au_operation_log WHERE output = '$t'")" = 1; }
t_ok "its oplog row is there within a second" t_until 1 logged
t_eq "with operation, inputs, rows, attempt" "$(ch "SELECT operation, inputs, rows, attempt, flow = computation, sql LIKE 'CREATE TABLE%' FROM au_operation_log WHERE output = '$t'")" \
	"$(printf "add\t['ca','cb']\t4\t1\t1\t1")"
t_eq "the retried op is logged once, by attempt 2" "$(ch "SELECT count(), max(attempt) FROM au_operation_log WHERE output = 'p_chop_slow'")" "$(printf '1\t2')"

# ---- a log table that is away keeps the rows ----
ch "RENAME TABLE au_operation_log TO au_operation_log_away"
t1=$(tab "$(run '{"op":"filter","input":"cb"}')")
t2=$(tab "$(run '{"op":"filter","input":"ca"}')")
sleep 1.5
t_eq "a write that fails is logged once" "$(grep -c 'operation log: unable to write' "$dir/worker.log")" 1
t_match "naming the table and the error" "$(grep 'operation log: unable to write' "$dir/worker.log")" "au_operation_log.*(doesn't exist|Code: 60)"
ch "RENAME TABLE au_operation_log_away TO au_operation_log"
back() { test "$(ch "SELECT count() FROM au_operation_log WHERE output IN ('$t1', '$t2')")" = 2; }
t_ok "the kept rows are written once the table is back" t_until 3 back

# ---- lineage of a chain: values -> (mul, with ca) -> sum ----
F=$(printf '%032x' $RANDOM$RANDOM)
step() { "$au" enqueue ch.op --queue "$Q" --args "$1" --wait --wait-timeout 30s 2>&1; }
a=$(tab "$(step '{"op":"values","columns":{"v":"Int64"},"rows":[[1],[2],[3],[4]],"out":{"name":"src","scope":"persistent"}}')")
b=$(tab "$(step '{"op":"mul","left":{"table":"'$a'","column":"v"},"right":{"table":"ca","column":"x"},"out":{"name":"prod","scope":"persistent"}}')")
c=$(tab "$(step '{"op":"sum","input":"'$b'","column":"value","out":{"name":"total","scope":"persistent"}}')")
t_eq "the chain ran" "$a $b $c" "p_src p_prod p_total"
t_ok "its log rows are in" t_until 2 sh -c "test \"\$(curl -sS '$AU_TEST_CH' --data-binary \"SELECT count() FROM au_operation_log WHERE output IN ('p_src','p_prod','p_total')\")\" -ge 3"
out=$("$au" lineage p_total)
t_match "lineage: the last step at the top" "$(printf '%s' "$out" | head -1)" '^p_total <- sum\(p_prod\)  computation [0-9a-f]{32}  at 20[0-9-]+ [0-9:.]+$'
t_match "lineage: then what made its input" "$(printf '%s' "$out" | sed -n 2p)" '^  p_prod <- mul\(p_src, ca\)'
t_match "lineage: every operation" "$out" 'p_src <- values\(\)'
t_match "lineage: a source table as a leaf" "$out" '    ca \(no operation recorded\)'
t_eq "lineage --depth 1: one operation" "$("$au" lineage p_total --depth 1 | wc -l)" 1
t_eq "lineage --json parses, one per operation" "$("$au" lineage p_total --json | jq -c '[.[] | [.operation, .output, .inputs, .depth, .attempt]]')" \
	'[["sum","p_total",["p_prod"],1,1],["mul","p_prod",["p_src","ca"],2,1],["values","p_src",[],3,1]]'
t_eq "lineage --json has the fields" "$("$au" lineage p_total --json | jq -c '.[0] | keys')" '["at_ms","attempt","computation","depth","flow","inputs","operation","output"]'
t_eq "lineage --json --depth 2" "$("$au" lineage p_total --json --depth 2 | jq length)" 2
fw=$("$au" lineage p_src --forward)
t_match "lineage --forward: what was made from it" "$fw" '^p_src
  p_prod <- mul\(p_src, ca\).*
    p_total <- sum\(p_prod\)'
t_eq "lineage --forward --json" "$("$au" lineage p_src --forward --json | jq -c '[.[] | .output]')" '["p_prod","p_total"]'
"$au" lineage nosuch_table >/dev/null 2>"$dir/err"; rc=$?
t_eq "lineage of an unknown table: exit 3" "$rc:$(cat "$dir/err")" "3:au: no operation in au_operation_log made 'nosuch_table'"
"$au" lineage 'x; DROP' >/dev/null 2>&1; t_eq "lineage of a bad name: exit 2" $? 2

kill -TERM $wpid; wait $wpid; t_eq "the worker stopped cleanly" $? 0
wpid=
t_eq "no sanitizer report from the workers" "$(grep -c 'runtime error\|Sanitizer' "$dir/worker.log")" 0
t_done
