#!/usr/bin/env bash
# t_fuzz.sh - a short run of each libFuzzer target of tests/fuzz/ (the
# computation and record decoders, JSON to msgpack), AU_FUZZ_SECONDS each
# (default 10): it must find no crash and no broken round trip, and run a
# fair number of inputs. `make fuzz` runs them longer. The targets are
# built by clang in build/fuzz/, with ASan and UBSan whatever BUILD is.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
# The targets are built with the sanitizers whatever BUILD is: the second
# pass of CI (BUILD=build/san) runs them briefly, the first as long as asked.
case ${AU_BUILD:-} in
*/build/san) secs=${AU_FUZZ_SECONDS:-3} ;;
*) secs=${AU_FUZZ_SECONDS:-10} ;;
esac
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null; then
	echo "# skip: $cc is not installed (scripts/deps.sh installs it): no fuzzing"
	t_done
	exit
fi
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_fuzz.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# the make that runs the suite may pass SANITIZE and its jobserver: the
# fuzz build takes neither
out=$(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -j2 --no-print-directory fuzz-targets 2>&1); rc=$?
t_eq "make fuzz-targets builds them" "$rc" 0
[ "$rc" = 0 ] || printf '%s\n' "$out" | tail -20

for name in computation record json; do
	bin=build/fuzz/fuzz_$name seeds=tests/fuzz/corpus/$name
	t_ok "$name: has a seed corpus" test -n "$(ls "$seeds" 2>/dev/null)"
	[ -x "$bin" ] || { t_ok "$name: built" false; continue; }
	before=$(ls "$seeds" | wc -l)
	mkdir -p "$dir/$name"
	"$bin" -max_total_time="$secs" -max_len=4096 -artifact_prefix="$dir/$name-" \
		"$dir/$name" "$seeds" >"$dir/$name.log" 2>&1
	rc=$?
	t_eq "$name: ${secs}s of fuzzing find no crash" "$rc" 0
	[ "$rc" = 0 ] || grep -E 'ERROR|round trip|SUMMARY|^#' "$dir/$name.log" | tail -15
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$dir/$name.log")
	t_ok "$name: ran more than 1000 inputs (${runs:-none})" test "${runs:-0}" -gt 1000
	t_eq "$name: the seed corpus is left as it is" "$(ls "$seeds" | wc -l)" "$before"
done
t_done
