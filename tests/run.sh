#!/usr/bin/env bash
# run.sh - the whole test suite: starts Redis, PostgreSQL and ClickHouse,
# checks the layers (scripts/check-layers.sh), runs every test binary and
# every tests/t_*.sh script against the servers, and ends with one line
# "N passed, N failed".
# Usage: tests/run.sh [name-filter]      (BUILD picks the build directory)
#        tests/run.sh --unit TEST...     (those binaries only, no servers)
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
unit=
if [ "${1:-}" = --unit ]; then
	shift
	unit="$*"
	filter=
else
	filter=${1:-}
fi
export AU_PORT_BASE=${AU_PORT_BASE:-17300}
if [ -n "$unit" ]; then
	AU_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/au-unit.XXXXXX")
	export AU_TEST_TMP
	trap 'rm -rf "$AU_TEST_TMP"' EXIT
else
	. tests/servers.sh
	servers_start redis pg ch || { echo "0 passed, 1 failed"; exit 1; }
fi
export AU_BIN="$PWD/$BUILD/au" AU_BUILD="$PWD/$BUILD"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

passed=0 failed=0
log="$AU_TEST_TMP/test.log"
run_one() { # name, command...
	local name=$1; shift
	local start=$SECONDS out p f
	out=$("$@" 2>&1)
	local rc=$?
	p=$(printf '%s\n' "$out" | sed -n 's/^# \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' | tail -1)
	f=$(printf '%s\n' "$out" | sed -n 's/^# \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' | tail -1)
	if [ -z "$p" ]; then
		p=0 f=1   # no summary: it crashed
	elif [ $rc -ne 0 ] && [ "$f" = 0 ]; then
		f=1       # clean counts but a bad exit (sanitizer report, leak)
	fi
	passed=$((passed + p)); failed=$((failed + f))
	printf '%-32s %4d passed, %d failed (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
	if [ "$f" != 0 ]; then
		printf '%s\n' "$out" | grep -v '^ok ' | tail -40 | sed 's/^/    /'
	fi
	printf '== %s\n%s\n' "$name" "$out" >>"$log"
}

if [ -z "$filter" ] || [[ layers == *"$filter"* ]]; then
	run_one layers env BUILD="$BUILD" scripts/check-layers.sh
fi
if [ -n "$unit" ]; then
	for name in $unit; do
		run_one "$name" "$BUILD/tests/$name"
	done
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
fi
for t in "$BUILD"/tests/test_*; do
	name=$(basename "$t")
	case "$name" in *.o) continue ;; esac
	[ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
	run_one "$name" "$t"
done
for t in tests/t_*.sh; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)
	[ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
	run_one "$name" bash "$t"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
