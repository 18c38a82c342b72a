#!/usr/bin/env bash
# check-layers.sh - dependencies point down (docs/architecture.md), checked
# from what the code really does: every `#include "..."` of every folder, and
# every au_* function an object file calls, read with nm from the build.
# Prints one TAP line per check and "# N passed, N failed"; exits 1 on a
# violation. Run by `make check-layers` and by tests/run.sh.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}

# What each folder may use besides itself and include/au.h. The order is
# the order of the layers, lowest first.
declare -A may=(
	[core]=""
	[clickhouse]="core"
	[redis]="core"
	[postgres]="core"
	[backends]="core redis postgres"
	[store]="core redis postgres"
	[middleware]="core backends"   # the rate limit keeps its buckets on the queue's server
	[tasks]="core clickhouse"
	[producer]="core backends store middleware"
	[worker]="core clickhouse backends store middleware tasks"
	[cli]="core clickhouse redis postgres backends store middleware tasks producer worker"
)
folders="core clickhouse redis postgres backends store middleware tasks producer worker cli"

# Third-party headers and the only files that may include them (STYLE.md:
# each library is included by as few files as possible).
declare -A owners=(
	[hiredis.h]="redis/ backends/redis_queue.c store/redis_store.c"
	[async.h]="redis/ backends/redis_queue.c"
	[libpq-fe.h]="postgres/ backends/pg_queue.c store/pg_store.c"
	[curl/curl.h]="clickhouse/clickhouse.c"
	[msgpack.h]="core/codec.c core/json.c core/flow.c"   # flow.c: the wire format of references and children
)

passed=0 failed=0
check() { # cond-status, message
	if [ "$1" = 0 ]; then
		echo "ok - $2"; passed=$((passed + 1))
	else
		echo "not ok - $2"; failed=$((failed + 1))
	fi
}
allowed() { # from to
	[ "$1" = "$2" ] && return 0
	case " ${may[$1]} " in *" $2 "*) return 0 ;; esac
	return 1
}

# Which folder each of our headers lives in; a name used twice would make
# an include ambiguous, since every folder is on the include path.
declare -A home=()
dup=""
for d in $folders include; do
	for h in "$d"/*.h; do
		[ -e "$h" ] || continue
		n=$(basename "$h")
		[ -n "${home[$n]:-}" ] && dup="$dup $n"
		home[$n]=$d
	done
done
check "$([ -z "$dup" ]; echo $?)" "every header name is unique${dup:+ (twice:$dup)}"

# 1. includes
bad=0
for d in $folders; do
	for f in "$d"/*.[ch]; do
		[ -e "$f" ] || continue
		while read -r h; do
			to=${home[$h]:-}
			[ -z "$to" ] || [ "$to" = include ] && continue
			if ! allowed "$d" "$to"; then
				echo "# $f includes \"$h\" from $to/ (${d}/ may use: ${may[$d]:-nothing})"
				bad=$((bad + 1))
			fi
		done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
	done
done
check $((bad > 0)) "no file includes a header from a folder it may not use ($bad found)"

bad=0
for h in "${!owners[@]}"; do
	for f in $(grep -l "^[[:space:]]*#[[:space:]]*include[[:space:]]*<$h>" \
		$(for d in $folders; do ls "$d"/*.[ch] 2>/dev/null; done)); do
		ok=1
		for o in ${owners[$h]}; do
			case "$f" in "$o"*) ok=0 ;; esac
		done
		[ $ok = 0 ] || { echo "# $f includes <$h> (only ${owners[$h]} may)"; bad=$((bad + 1)); }
	done
done
check $((bad > 0)) "each third-party header is included only where it belongs ($bad found)"

# 2. link symbols: who defines each au_* function, who calls it
if ! command -v nm >/dev/null || [ ! -d "$BUILD/core" ]; then
	check 1 "objects to read in $BUILD (build first)"
else
	declare -A def=()
	objects() { # the objects of folder $1's sources (not stale ones of moved files)
		for c in "$1"/*.c; do
			[ -e "$c" ] && [ -e "$BUILD/${c%.c}.o" ] && echo "$BUILD/${c%.c}.o"
		done
	}
	for d in $folders; do
		for o in $(objects "$d"); do
			while read -r _ _ sym; do
				def[$sym]=$d
			done < <(nm --defined-only "$o" | awk '$2 ~ /^[TDBR]$/ && $3 ~ /^au_/')
		done
	done
	bad=0 seen=0
	for d in $folders; do
		for o in $(objects "$d"); do
			while read -r sym; do
				to=${def[$sym]:-}
				[ -z "$to" ] && continue
				# what a middleware answers and works with (include/au.h:
				# au_run_resume, au_run_base): the worker's, by design
				[ "$d" = middleware ] && [ "${sym#au_run_}" != "$sym" ] && continue
				seen=$((seen + 1))
				if ! allowed "$d" "$to"; then
					echo "# ${o#$BUILD/} calls $sym, defined in $to/ (${d}/ may use: ${may[$d]:-nothing})"
					bad=$((bad + 1))
				fi
			done < <(nm --undefined-only "$o" | awk '$2 ~ /^au_/ { print $2 }')
		done
	done
	check $((seen == 0)) "au_* calls between objects found ($seen)"
	check $((bad > 0)) "no object calls a function of a folder it may not use ($bad found)"
fi

# 3. plug points are reached through their wrappers (queue.h, store.h);
# core/task.c is the dispatcher of the task context's own table
bad=0
while IFS= read -r hit; do
	echo "# $hit (use the wrappers of queue.h / store.h)"
	bad=$((bad + 1))
done < <(for d in $folders; do
	case $d in backends|store) continue ;; esac
	for f in "$d"/*.c; do
		[ -e "$f" ] && [ "$f" != core/task.c ] && grep -Hn -- '->ops->' "$f"
	done
done)
check $((bad > 0)) "outside backends/ and store/, no call goes through ->ops-> ($bad found)"

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
