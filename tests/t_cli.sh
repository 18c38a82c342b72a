#!/usr/bin/env bash
# t_cli.sh - the command line as a newcomer meets it: help for every
# command (au COMMAND --help, au help COMMAND, au --help, --version),
# unknown and inapplicable options refused (exit 2, with the reason),
# values out of range and single options given twice refused, durations
# with units (a bare number is seconds) in every command, the exit codes
# of docs/cli.md, the settings file (--config, AU_CONFIG; flags, then the
# environment, then the file), au wait's progress on a terminal and
# au queues --watch.
# Needs AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh).
set -u
. "$(dirname "$0")/lib.sh"
au=$AU_BIN
export AU_QUEUE=$AU_TEST_REDIS AU_STORE=$AU_TEST_REDIS AU_CLICKHOUSE=$AU_TEST_CH
unset AU_CONFIG
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_cli.XXXXXX")
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null; rm -rf "$dir"' EXIT
refused() { # name, regex of the message, command...
	local name=$1 re=$2 out rc
	shift 2
	out=$("$@" 2>&1); rc=$?
	t_match "$name: exit 2 and the reason" "$rc/$out" "^2/au: $re"
}
ID=0123456789abcdef0123456789abcdef

# --- help
for c in enqueue status wait result cancel worker migrate version help; do
	out=$("$au" "$c" --help); rc=$?
	t_match "$c --help: exit 0, its usage first" "$rc/$out" "^0/usage: au $c"
	t_eq "au help $c says the same" "$("$au" help "$c")" "$out"
done
for c in enqueue worker; do
	out=$("$au" "$c" --help)
	t_match "$c --help: an example" "$out" "example: au $c "
	t_match "$c --help: every option with its default" "$out" "--concurrency N +.*\(default: 16\)|--priority P +.*\(default: 0\)"
done
t_match "worker --help names --queues" "$("$au" worker --help)" "  --queues LIST "
t_match "enqueue --help: what a bare duration means" "$("$au" enqueue --help)" "a bare number is seconds"
for c in dlq queue queues workers; do
	out=$("$au" "$c" --help); rc=$?
	t_match "$c --help: exit 0, its usage" "$rc/$out" "^0/usage: au $c"
	t_eq "au help $c says the same" "$("$au" help "$c")" "$out"
done
out=$("$au" --help)
t_match "au --help: its usage" "$out" "^usage: au "
t_match "au --help: the commands" "$out" "^  enqueue TASK "
t_match "au --help: ... all of them" "$out" "^  worker stop ID "
t_match "au -h too" "$("$au" -h)" "^usage: au "
t_match "au with nothing: usage on stderr, exit 2" "$("$au" 2>&1 >/dev/null; echo "rc=$?")" "^rc=2$"
t_match "... the usage" "$("$au" 2>&1 >/dev/null)" "^usage: au "
v=$("$au" version)
t_match "au version" "$v" "^au [0-9]+\.[0-9]+\.[0-9]+ \(wire format v1\)$"
t_eq "au --version" "$("$au" --version)" "$v"
t_eq "au -V" "$("$au" -V)" "$v"
refused "help of an unknown command" "unknown command 'nope'" "$au" help nope

# --- unknown and inapplicable options, pairs, ranges, twice
refused "an unknown command" "unknown command 'bogus'" "$au" bogus
refused "an unknown option" "unknown option '--bogus'" "$au" status "$ID" --bogus
refused "an option without its value" "option '--priority' takes a value" "$au" enqueue t --priority
refused "cancel --json" "option '--json' does not apply to 'cancel'" "$au" cancel "$ID" --json
refused "status --wait" "option '--wait' does not apply to 'status'" "$au" status "$ID" --wait
refused "enqueue --concurrency" "option '--concurrency' does not apply to 'enqueue'" "$au" enqueue t --concurrency 2
refused "worker --json" "option '--json' does not apply to 'worker'" "$au" worker --json
refused "migrate --json" "option '--json' does not apply to 'migrate'" "$au" migrate --json
refused "a command's option before it" "option '--json' goes after the command" "$au" --json status "$ID"
refused "queues --force" "option '--force' does not apply to 'queues'" "$au" queues --force
refused "--wait-timeout without --wait" "option '--wait-timeout' applies only with --wait" "$au" enqueue t --wait-timeout 5s
refused "--on-timeout without --timeout" "option '--on-timeout' applies only with --timeout" "$au" enqueue t --on-timeout fail
refused "--restart-delay without --processes" "option '--restart-delay' applies only with --processes" "$au" worker --restart-delay 1s
refused "--interval without --watch" "option '--interval' applies only with --watch" "$au" queues --interval 1s
refused "--concurrency 0" "invalid value '0' for --concurrency \(expected 1\.\.100000\)" "$au" worker --concurrency 0
refused "--max-attempts 0" "invalid value '0' for --max-attempts" "$au" enqueue t --max-attempts 0
refused "--priority 101" "invalid value '101' for --priority \(expected -100\.\.100\)" "$au" enqueue t --priority 101
refused "--batch 0" "invalid value '0' for --batch" "$au" worker --batch 0
refused "--processes 1025" "invalid value '1025' for --processes \(expected 1\.\.1024\)" "$au" worker --processes 1025
refused "--max-tasks 0" "invalid value '0' for --max-tasks" "$au" worker --max-tasks 0
refused "--priority twice" "option '--priority' given twice" "$au" enqueue t --priority 1 --priority 2
refused "--queue twice on enqueue" "option '--queue' given twice" "$au" enqueue t --queue a --queue b
refused "--max-tasks and its old name" "option '--max-tasks' given twice" "$au" worker --max-tasks 5 --max-jobs 6
refused "--args and --args-file" "--args and --args-file exclude each other" "$au" enqueue t --args 1 --args-file x

# --- durations
refused "a duration with a bad unit" "invalid value '5x' for --delay: expected a duration \(500ms, 30s, 10m, 2h, 1d; a bare number is seconds\)" "$au" enqueue t --delay 5x
refused "a timeout of 0" "invalid value '0' for --timeout: must be more than 0" "$au" enqueue t --timeout 0
refused "a lease under 1 s" "invalid value '200ms' for --lease: too short" "$au" worker --lease 200ms
Q=c$RANDOM$RANDOM
id=$("$au" enqueue au.echo --queue "$Q" --delay 1m)
t_eq "--delay 1m: scheduled" "$("$au" status "$id")" scheduled
id=$("$au" enqueue au.echo --queue "$Q" --args '[1]' --ttl 1500ms)
id3=$("$au" enqueue au.echo --queue "$Q" --args '[3]' --ttl 3)
"$au" worker --queue "$Q" --idle-exit 500ms >/dev/null 2>"$dir/w.log" &
wpid=$!; wait "$wpid"; wpid=
t_match "--ttl 1500ms: whole seconds, rounded up" "$("$au" result "$id" --json)" '"ttl_s":2,'
t_match "--ttl 3: a bare number is seconds" "$("$au" result "$id3" --json)" '"ttl_s":3,'
t_match "--idle-exit 500ms: the worker left by itself" "$(cat "$dir/w.log")" "stopped: 2 completed"
pend=$("$au" enqueue au.echo --queue "$Q-idle")
t0=$(date +%s%N)
"$au" wait "$pend" --timeout 300ms >/dev/null 2>&1; rc=$?
t1=$(date +%s%N)
t_eq "wait --timeout 300ms on one nobody runs: exit 4" "$rc" 4
t_ok "after about 300 ms ($(((t1 - t0) / 1000000)) ms)" [ $(((t1 - t0) / 1000000)) -lt 1500 ]
t0=$(date +%s%N)
"$au" wait "$pend" --timeout 1 >/dev/null 2>&1; rc=$?
t1=$(date +%s%N)
t_ok "wait --timeout 1 is one second, not one ms ($(((t1 - t0) / 1000000)) ms)" \
	[ "$rc" = 4 -a $(((t1 - t0) / 1000000)) -ge 900 ]

# --- exit codes (docs/cli.md)
t_eq "unknown id: exit 3" "$("$au" status "$ID" >/dev/null 2>&1; echo $?)" 3
t_eq "server unreachable: exit 5" "$("$au" --queue-url redis://127.0.0.1:1 status "$ID" >/dev/null 2>&1; echo $?)" 5
fid=$("$au" enqueue au.fail --queue "$Q" --args '{"message":"no"}')
ok=$("$au" enqueue au.echo --queue "$Q" --args '[5]')
"$au" worker --queues "$Q" --queue "$Q-b" --idle-exit 500ms >/dev/null 2>"$dir/w2.log" &
wpid=$!; wait "$wpid"; wpid=
t_eq "a failed computation: wait exits 1" "$("$au" wait "$fid" >/dev/null 2>&1; echo $?)" 1
t_eq "a completed one: 0 and its result" "$("$au" wait "$ok"; echo $?)" "[5]
0"
t_match "--queues and --queue together: both served, in order" "$(cat "$dir/w2.log")" \
	"queues +$Q,$Q-b \(in this order\)"

# --- the settings file: flags, then the environment, then the file
printf '# au settings\nexport AU_QUEUE="%s"\nAU_STORE=%s\nAU_CONCURRENCY=4\n' \
	"$AU_TEST_REDIS" "$AU_TEST_REDIS" >"$dir/au.env"
out=$(env -u AU_QUEUE -u AU_STORE "$au" --config "$dir/au.env" status "$ok"); rc=$?
t_eq "--config FILE gives the URLs (the worker's keys are left alone)" "$rc/$out" "0/completed"
out=$(env -u AU_QUEUE -u AU_STORE AU_CONFIG="$dir/au.env" "$au" status "$ok"); rc=$?
t_eq "AU_CONFIG=FILE too" "$rc/$out" "0/completed"
out=$(env -u AU_QUEUE -u AU_STORE "$au" status "$ok" --config "$dir/au.env"); rc=$?
t_eq "--config after the command too" "$rc/$out" "0/completed"
out=$(AU_QUEUE=redis://127.0.0.1:1 AU_STORE=redis://127.0.0.1:1 "$au" --config "$dir/au.env" status "$ok" 2>&1); rc=$?
t_match "the environment wins over the file" "$rc/$out" "^5/.*127\.0\.0\.1:1"
out=$(AU_CONFIG="$dir/au.env" AU_QUEUE=redis://127.0.0.1:1 AU_STORE=redis://127.0.0.1:1 \
	"$au" --queue-url "$AU_TEST_REDIS" --store-url "$AU_TEST_REDIS" status "$ok"); rc=$?
t_eq "a flag wins over the environment" "$rc/$out" "0/completed"
echo "AU_NOPE=1" >>"$dir/au.env"
refused "an unknown key in the file" "'$dir/au.env' line 5: unknown setting 'AU_NOPE'" "$au" --config "$dir/au.env" status "$ok"
refused "a file that is not there" "unable to open '$dir/none'" "$au" --config "$dir/none" status "$ok"

# --- au queues --watch
"$au" queues --watch --interval 200ms >"$dir/watch" 2>&1 &
wpid=$!
sleep 1.3
kill -INT "$wpid"; wait "$wpid"; rc=$?; wpid=
t_eq "queues --watch: Ctrl-C ends it, exit 0" "$rc" 0
n=$(grep -c "^au queues, every 0.2 s (Ctrl-C stops)" "$dir/watch")
t_ok "queues --watch: the table again every 200 ms ($n times in 1.3 s)" [ "$n" -ge 4 ]
t_match "queues --watch: with the queue's counts" "$(cat "$dir/watch")" "$Q +0 +1 +0 +0 +no +[0-9]+"
refused "queues --watch --json" "--watch prints the table: it takes no --json" "$au" queues --watch --json

# --- au wait on a terminal shows the status and the time waited
if command -v script >/dev/null; then
	script -qec "'$au' wait $pend --timeout 1500ms" /dev/null >"$dir/tty" 2>&1
	t_match "wait on a terminal: the status and the time waited" "$(tr '\r' '\n' <"$dir/tty")" \
		"au: waiting for $pend: pending, [0-9.]+ s"
	"$au" wait "$pend" --timeout 700ms >"$dir/notty" 2>&1
	t_ok "wait not on a terminal: no progress line" bash -c "! grep -q 'au: waiting for .*: pending' '$dir/notty'"
else
	echo "# script(1) is not installed: au wait's terminal line not tested"
fi
t_done
