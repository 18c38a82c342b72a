#!/usr/bin/env bash
# t_plugin.sh - plugins (include/au.h, "Plugins") against real Redis and
# ClickHouse: the example plugin (examples/plugin.c, built by make) loaded
# by `au worker --plugin`, by every child of `--processes 2` and through
# AU_PLUGINS in a settings file; its two-query ClickHouse task gives the
# combined result, its middleware refuses what has no 'tenant' header, its
# offloaded task sleeps on a pool thread while 50 au.echo complete on the
# same worker, an offloaded task that times out (and one still running at
# shutdown) does no harm when its work ends later; a plugin built for
# another ABI, one without the ABI marker, one whose init fails and a
# missing file are refused before any server is asked, exit 2.
# Needs AU_BIN, AU_BUILD, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
au=$AU_BIN
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_plugin.XXXXXX")
export AU_QUEUE=$AU_TEST_REDIS AU_STORE="file://$dir/store" AU_CLICKHOUSE=$AU_TEST_CH
so=$AU_BUILD/examples/libauexample.so
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT
# a sanitizer build's plugins are built with the sanitizer too
san=()
case $AU_BUILD in */build/san) san=(-fsanitize=address,undefined -fno-omit-frame-pointer) ;; esac
q() { echo "tp$RANDOM$RANDOM"; }
status_is() { [ "$("$au" status "$1" 2>/dev/null)" = "$2" ]; }
started() { grep -q "worker .* on queue" "$1"; }
started2() { [ "$(grep -c "worker .* on queue" "$1")" = 2 ]; }
stop_worker() { # sets $wrc
	kill -TERM "$wpid"
	wait "$wpid"
	wrc=$?
	wpid=
}
ms() { echo $(($(date +%s%N) / 1000000)); }

t_ok "make built the example plugin" [ -f "$so" ]

# --- au worker --plugin: the start-up block, the tasks end to end
Q=$(q)
"$au" worker --queue "$Q" --plugin "$so" --concurrency 8 --retry-base 50ms 2>"$dir/w1.log" &
wpid=$!
t_ok "a worker with --plugin starts" t_until 20 started "$dir/w1.log"
log=$(cat "$dir/w1.log")
t_match "the start-up block names the plugin, its tasks and its middleware" "$log" \
	"plugin +'$so': tasks example.stats example.slow; middleware example.tenant"
version=$(sed -n 's/.*clickhouse .*(version \(.*\))$/\1/p' "$dir/w1.log" | head -1)
out=$("$au" enqueue example.stats --queue "$Q" --args '{"n":1000}' --header tenant=acme --wait \
	--wait-timeout 20s 2>&1)
t_eq "example.stats: two ClickHouse queries, one result" "$out" \
	"{\"tenant\":\"acme\",\"count\":1000,\"sum\":499500,\"clickhouse\":\"$version\"}"
out=$("$au" enqueue example.stats --queue "$Q" --args '{"n":100000}' --header tenant=b --wait \
	--wait-timeout 20s 2>&1)
t_match "and with other arguments" "$out" '"tenant":"b","count":100000,"sum":4999950000,'
out=$("$au" enqueue example.stats --queue "$Q" --wait --wait-timeout 20s 2>&1); rc=$?
t_eq "without a 'tenant' header the middleware refuses it: exit 1" "$rc" 1
t_match "with its reason" "$out" "failed: example.tenant: task 'example.stats' needs a 'tenant' header"
out=$("$au" enqueue example.stats --queue "$Q" --args '{"n":-1}' --header tenant=a --wait \
	--wait-timeout 20s 2>&1)
t_match "bad arguments fail for good" "$out" 'failed: example.stats takes'
t_eq "tasks that are not example.* need no header" \
	"$("$au" enqueue au.echo --queue "$Q" --args '{"x":1}' --wait --wait-timeout 20s)" '{"x":1}'

# --- blocking work off the loop: 50 au.echo while example.slow sleeps 2 s
slow=$("$au" enqueue example.slow --queue "$Q" --args '{"ms":2000}' --header tenant=acme)
t_ok "example.slow runs" t_until 10 status_is "$slow" running
t0=$(ms)
seq 1 50 | sed 's/.*/{"i":&}/' >"$dir/echo.args"
out=$("$au" enqueue au.echo --queue "$Q" --args-file "$dir/echo.args" --wait --wait-timeout 20s)
t1=$(ms)
slow_state=$("$au" status "$slow")
t_eq "50 au.echo completed on the same worker" "$(printf '%s\n' "$out" | grep -c '^{"i":[0-9]*}$')" 50
t_eq "while example.slow still slept" "$slow_state" running
t_ok "well within its 2 s ($((t1 - t0)) ms)" [ $((t1 - t0)) -lt 1800 ]
t_eq "then example.slow completes, off the loop" \
	"$("$au" wait "$slow" --timeout 20s)" '{"slept_ms":2000,"off_loop":true}'

# --- an offloaded task that times out: decided at once, its late work harmless
id=$("$au" enqueue example.slow --queue "$Q" --args '{"ms":1500}' --header tenant=acme \
	--timeout 300ms --max-attempts 1)
out=$("$au" wait "$id" --timeout 20s 2>&1)
t_match "a timed-out offloaded task fails at its timeout" "$out" 'failed: .*timed out after 300 ms'
sleep 1.5
t_ok "the worker is alive after the work ended late" kill -0 "$wpid"
t_eq "and runs the next one" \
	"$("$au" enqueue au.echo --queue "$Q" --args '{"after":"timeout"}' --wait --wait-timeout 20s)" \
	'{"after":"timeout"}'
# at shutdown: the grace period ends while the work runs
"$au" enqueue example.slow --queue "$Q" --args '{"ms":2500}' --header tenant=acme >/dev/null
sleep 0.5
kill -TERM "$wpid"
wait "$wpid"
wrc=$?
wpid=
t_eq "SIGTERM while offloaded work runs: exit 0" "$wrc" 0
t_match "the middleware's context is freed with the worker" "$(cat "$dir/w1.log")" \
	'example.tenant: [0-9]+ admitted, 1 refused'

# --- --processes 2: every child loads it (two slow ones at once on concurrency 1)
Q=$(q)
"$au" worker --queue "$Q" --plugin "$so" --processes 2 --concurrency 1 2>"$dir/w2.log" &
wpid=$!
t_ok "a fleet with --plugin starts" t_until 20 started2 "$dir/w2.log"
a=$("$au" enqueue example.slow --queue "$Q" --args '{"ms":1500}' --header tenant=x)
b=$("$au" enqueue example.slow --queue "$Q" --args '{"ms":1500}' --header tenant=x)
t0=$(ms)
ra=$("$au" wait "$a" --timeout 20s)
rb=$("$au" wait "$b" --timeout 20s)
t1=$(ms)
t_eq "both children serve the plugin's task" "$ra $rb" \
	'{"slept_ms":1500,"off_loop":true} {"slept_ms":1500,"off_loop":true}'
t_ok "at once ($((t1 - t0)) ms for two of 1.5 s)" [ $((t1 - t0)) -lt 2900 ]
out=$("$au" enqueue example.stats --queue "$Q" --args '{"n":10}' --header tenant=f --wait \
	--wait-timeout 20s 2>&1)
t_match "example.stats in a child" "$out" '^\{"tenant":"f","count":10,"sum":45,'
stop_worker
t_eq "the fleet stops, exit 0" "$wrc" 0

# --- AU_PLUGINS in a settings file
Q=$(q)
printf 'AU_PLUGINS=%s\nAU_POOL_THREADS=2\n' "$so" >"$dir/worker.env"
"$au" worker --queue "$Q" --config "$dir/worker.env" 2>"$dir/w3.log" &
wpid=$!
t_ok "a worker with AU_PLUGINS starts" t_until 20 started "$dir/w3.log"
t_match "and lists the plugin" "$(cat "$dir/w3.log")" "plugin +'$so': tasks example.stats"
t_eq "its tasks run" "$("$au" enqueue example.slow --queue "$Q" --args '{"ms":10}' --header tenant=y \
	--wait --wait-timeout 20s)" '{"slept_ms":10,"off_loop":true}'
stop_worker

# --- refused: exit 2, before any server is asked (the queue URL is dead)
dead=(--queue-url redis://127.0.0.1:1 --queue x)
cat >"$dir/bad.c" <<'EOF'
const unsigned au_plugin_abi = 999;
int au_plugin_init(void *p);
int au_plugin_init(void *p) { (void)p; return 0; }
EOF
cat >"$dir/noabi.c" <<'EOF'
int au_plugin_init(void *p);
int au_plugin_init(void *p) { (void)p; return 0; }
EOF
cat >"$dir/fails.c" <<'EOF'
#include <au.h>
AU_PLUGIN_DECLARE;
int au_plugin_init(struct au_plugin *p)
{
	au_plugin_add_task(p, "fails.never", NULL, NULL);
	return au_plugin_error(p, "needs FAILS_CONFIG");
}
EOF
for n in bad noabi fails; do
	cc -Iinclude -shared -fPIC "${san[@]}" -o "$dir/lib$n.so" "$dir/$n.c" || echo "cannot build $n"
done
out=$("$au" worker "${dead[@]}" --plugin "$dir/libbad.so" 2>&1); rc=$?
t_eq "a plugin built for another ABI: exit 2" "$rc" 2
t_eq "with the message" "$out" \
	"au: unable to load plugin '$dir/libbad.so': built for plugin ABI 999, this au has 1"
out=$("$au" worker "${dead[@]}" --plugin "$so" --plugin "$dir/libnoabi.so" 2>&1); rc=$?
t_eq "a library without the ABI marker: exit 2" "$rc" 2
t_match "not an au plugin, as dlerror says" "$out" \
	"^au: unable to load plugin '$dir/libnoabi.so': not an au plugin .*undefined symbol: au_plugin_abi"
out=$("$au" worker "${dead[@]}" --plugin "$dir/libfails.so" 2>&1); rc=$?
t_eq "a plugin whose init fails: exit 2" "$rc" 2
t_eq "with its message" "$out" \
	"au: unable to load plugin '$dir/libfails.so': au_plugin_init failed: needs FAILS_CONFIG"
out=$("$au" worker "${dead[@]}" --plugin "$dir/nope.so" 2>&1); rc=$?
t_eq "a missing file: exit 2" "$rc" 2
t_match "named with dlerror's reason" "$out" \
	"^au: unable to load plugin '$dir/nope.so': .*No such file or directory$"
out=$(AU_PLUGINS="$dir/nope.so" "$au" worker "${dead[@]}" 2>&1); rc=$?
t_eq "AU_PLUGINS is checked likewise" "$rc:$out" \
	"2:au: unable to load plugin '$dir/nope.so': $dir/nope.so: cannot open shared object file: No such file or directory"
out=$("$au" enqueue au.echo --plugin "$so" 2>&1); rc=$?
t_eq "--plugin is the worker's only: exit 2" "$rc" 2
t_match "said so" "$out" "option '--plugin' does not apply to 'enqueue'"
t_match "au worker --help shows it" "$("$au" worker --help)" '--plugin PATH +load tasks and middleware'

t_done
