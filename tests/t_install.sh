#!/usr/bin/env bash
# t_install.sh - a newcomer's first hour, on real servers: the examples
# `make` built run; `make install PREFIX=...` after a plain `make` writes
# an au.pc of that prefix (and DESTDIR stages it); libau.so is versioned
# with soname libau.so.0; examples/client.c and examples/worker.c build
# from the installed files with pkg-config alone and run against Redis and
# ClickHouse (example.add, au.echo, ch.query, a failure); `pkg-config
# --static` links libau.a; the man page is found and renders without a
# warning; the bash completion completes commands, sub-commands, options
# and queue names.
# Needs AU_BUILD, AU_BIN, AU_TEST_REDIS, AU_TEST_CH (tests/run.sh sets them).
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
dir=$(mktemp -d "${AU_TEST_TMP:-/tmp}/t_install.XXXXXX")
prefix=$dir/prefix
# a Redis database of its own: the examples use the queue 'default'
export AU_QUEUE=$AU_TEST_REDIS/9 AU_STORE="file://$dir/results" AU_CLICKHOUSE=$AU_TEST_CH
version=$(sed -n 's/^#define AU_VERSION "\([^"]*\)"/\1/p' include/au.h)
major=${version%%.*}
wpid=
trap '[ -n "$wpid" ] && kill -KILL "$wpid" 2>/dev/null' EXIT

# The build under test: a sanitizer build installs as one, and what is
# compiled against it links the sanitizer runtime.
make_args=() san=()
case $AU_BUILD in
*/build/san) make_args=(SANITIZE=address,undefined)
	san=(-fsanitize=address,undefined -fno-omit-frame-pointer) ;;
esac
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory "${make_args[@]}" "$@"; }

start_worker() { # binary, log: runs it in the background until it says ready
	"$1" 2>"$2" &
	wpid=$!
	t_until 20 grep -q ' ready$' "$2"
}
stop_worker() { # sets $wrc
	kill -TERM "$wpid"
	wait "$wpid"
	wrc=$?
	wpid=
}
adds() { # client binary: example.add of three pairs
	"$1" example.add '{"a":2,"b":3}' '{"a":-7,"b":4}' '{"a":40,"b":2}'
}
added='{"a":2,"b":3} -> 5
{"a":-7,"b":4} -> -3
{"a":40,"b":2} -> 42'

# --- the examples `make` built, from the build in use
ex=$AU_BUILD/examples
t_ok "make built examples/client.c and examples/worker.c" [ -x "$ex/client" -a -x "$ex/worker" ]
t_ok "the built worker starts and says it is ready" start_worker "$ex/worker" "$dir/built.log"
t_eq "the built client: example.add of the embedded worker" "$(adds "$ex/client" 2>&1)" "$added"
out=$("$ex/client" 2>&1)
t_match "the built client, no arguments: three ch.query results from ClickHouse" "$out" \
	'^\{"sql":"SELECT \{x:UInt8\} \* 2 AS y","params":\{"x":1\}\} -> \{"columns":\["y"\],"types":\["[A-Za-z0-9]+"\],"rows":\[\[2\]\]\}
.* -> .*"rows":\[\[4\]\]\}
.* -> .*"rows":\[\[6\]\]\}$'
stop_worker
t_eq "the built worker stops on SIGTERM, exit 0" "$wrc" 0
t_match "it said so" "$(cat "$dir/built.log")" 'worker: SIGTERM: stopping'

# --- make install after a plain make: au.pc carries the PREFIX of install
mk -s >"$dir/make.log" 2>&1
t_eq "a plain make (PREFIX left at its default)" "$?" 0
mk -s install PREFIX="$prefix" >"$dir/install.log" 2>&1
t_eq "make install PREFIX=$prefix" "$?" 0
pc=$prefix/lib/pkgconfig/au.pc
t_eq "au.pc says that prefix" "$(sed -n 's/^prefix=//p' "$pc")" "$prefix"
t_eq "au.pc has the version of au.h" "$(sed -n 's/^Version: //p' "$pc")" "$version"
missing=
for f in bin/au include/au.h lib/libau.a "lib/libau.so.$version" share/man/man1/au.1 \
	share/bash-completion/completions/au; do
	[ -f "$prefix/$f" ] || missing="$missing $f"
done
t_eq "installed: binary, header, libraries, man page, completion" "$missing" ""
t_eq "lib/libau.so.$major links to libau.so.$version" \
	"$(readlink "$prefix/lib/libau.so.$major")" "libau.so.$version"
t_eq "lib/libau.so links to libau.so.$major" "$(readlink "$prefix/lib/libau.so")" "libau.so.$major"
t_match "the library's soname is libau.so.$major" \
	"$(readelf -d "$prefix/lib/libau.so.$version")" "\(SONAME\) +Library soname: \[libau\.so\.$major\]"
t_eq "the installed au runs" "$("$prefix/bin/au" version)" "au $version (wire format v1)"

mk -s install PREFIX=/opt/au DESTDIR="$dir/stage" >"$dir/stage.log" 2>&1
t_eq "make install DESTDIR=... PREFIX=/opt/au" "$?" 0
t_eq "DESTDIR: au.pc under it says the prefix without it" \
	"$(sed -n 's/^prefix=//p' "$dir/stage/opt/au/lib/pkgconfig/au.pc" 2>&1)" /opt/au
t_ok "DESTDIR: the library under it" [ -f "$dir/stage/opt/au/lib/libau.so.$version" ]

# --- pkg-config finds it there
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs au 2>&1)
t_match "pkg-config --cflags --libs au names the prefix" "$flags" \
	"^-I$prefix/include .*-L$prefix/lib +-lau *$"
t_eq "pkg-config --modversion au" "$(pkg-config --modversion au 2>&1)" "$version"

# --- the examples, built from the installed files alone
cc -o "$dir/client" examples/client.c $(pkg-config --cflags --libs au) \
	-Wl,-rpath,"$prefix/lib" "${san[@]}" >"$dir/cc.log" 2>&1
t_eq "client.c builds with \$(pkg-config --cflags --libs au)" "$? $(cat "$dir/cc.log")" "0 "
cc -o "$dir/worker" examples/worker.c $(pkg-config --cflags --libs au libevent msgpack) \
	-Wl,-rpath,"$prefix/lib" "${san[@]}" >"$dir/cc.log" 2>&1
t_eq "worker.c builds with \$(pkg-config --cflags --libs au libevent msgpack)" \
	"$? $(cat "$dir/cc.log")" "0 "
t_match "the client needs libau.so.$major" "$(readelf -d "$dir/client")" \
	"\(NEEDED\) +Shared library: \[libau\.so\.$major\]"
t_match "and loads it from the prefix (rpath)" "$(ldd "$dir/client")" \
	"libau\.so\.$major => $prefix/lib/libau\.so\.$major "

t_ok "the installed worker starts" start_worker "$dir/worker" "$dir/worker.log"
t_eq "client: example.add, served by the worker" "$(adds "$dir/client" 2>&1)" "$added"
t_eq "client: au.echo, a built-in" "$("$dir/client" au.echo '{"x":[1,"two"]}' 2>&1)" \
	'{"x":[1,"two"]} -> {"x":[1,"two"]}'
out=$("$dir/client" 2>&1)
t_match "client: ch.query on ClickHouse" "$out" '"rows":\[\[2\]\]\}.*
.*"rows":\[\[4\]\]\}.*
.*"rows":\[\[6\]\]\}$'
out=$("$dir/client" example.add '{"a":1,"b":2}' '{"a":"x","b":1}' 2>&1); rc=$?
t_eq "client: a failed computation exits 1" "$rc" 1
t_match "after the results before it, with the reason" "$out" \
	"^\{\"a\":1,\"b\":2\} -> 3
client: computation '[0-9a-f]{32}' failed: example.add takes \{\"a\": integer, \"b\": integer\}$"
out=$("$dir/client" example.add 'not json' 2>&1); rc=$?
t_match "client: bad JSON exits 1 with a message" "$rc $out" "^1 client: invalid arguments 'not json': "
out=$("$dir/client" au.echo 2>&1); rc=$?
t_eq "client: TASK without arguments is a usage error" "$rc $out" "2 usage: client [TASK JSON...]"
out=$(AU_QUEUE=redis://127.0.0.1:1 "$dir/client" 2>&1); rc=$?
t_match "client: no queue server: exit 1, the reason" "$rc $out" \
	"^1 client: .*'redis://127\.0\.0\.1:1'.*refused"

# --- a static build: libau.a and the private libraries pkg-config --static names
slibs=$(pkg-config --static --libs au 2>&1)
t_match "pkg-config --static --libs au adds the libraries libau links" "$slibs" \
	"-lau .*-lpq .*-lcurl .*-lhiredis .*-lmsgpackc .*-levent .*-ljansson .*-lcrypto"
alibs=$(printf '%s' "$slibs" | sed 's/\(^\| \)-lau\( \|$\)/\1-l:libau.a\2/')
cc -o "$dir/client-static" examples/client.c $(pkg-config --cflags au) $alibs "${san[@]}" \
	>"$dir/cc.log" 2>&1
t_eq "client.c links libau.a with pkg-config --static" "$? $(tail -3 "$dir/cc.log")" "0 "
t_ok "it does not need libau.so" bash -c "! readelf -d '$dir/client-static' | grep -q 'libau\.so'"
t_eq "and runs" "$("$dir/client-static" au.echo '[7]' 2>&1)" '[7] -> [7]'
alibs=$(pkg-config --libs au | sed 's/\(^\| \)-lau\( \|$\)/\1-l:libau.a\2/')
cc -o "$dir/client-nostatic" examples/client.c $(pkg-config --cflags au) $alibs "${san[@]}" \
	>"$dir/cc.log" 2>&1
t_ok "without --static, libau.a does not link (the private libraries are needed)" [ $? -ne 0 ]

stop_worker
t_eq "the installed worker stops on SIGTERM, exit 0" "$wrc" 0
log=$(cat "$dir/worker.log")
t_match "its log: a line per computation (the logging middleware)" "$log" \
	"au: [0-9a-f]{32} example\.add queue=default attempt=1/3 completed"
t_match "and the failure, with its reason" "$log" \
	"example\.add queue=default attempt=1/3 failed .*: example\.add takes"
t_match "and that it stopped" "$log" 'worker: stopped$'

# --- the man page
if command -v man >/dev/null; then
	t_eq "man -M PREFIX/share/man finds au(1)" "$(man -M "$prefix/share/man" -w au 2>&1)" \
		"$prefix/share/man/man1/au.1"
	out=$(MANWIDTH=80 man --warnings -l docs/au.1 2>&1 >/dev/null)
	t_eq "man --warnings renders docs/au.1 without a warning" "$out" ""
	t_match "it renders the page" "$(MANWIDTH=80 man -l docs/au.1 2>/dev/null | sed 's/.\x08//g')" \
		"au worker stop ID"
else
	echo "# skip: man is not installed: no check that man finds au(1)"
fi
if command -v groff >/dev/null; then
	t_eq "groff -man -ww -z docs/au.1: no warning" "$(groff -man -ww -z docs/au.1 2>&1)" ""
else
	echo "# skip: groff is not installed: no check of the page's roff"
fi
t_match "the page's header has the version of au.h" "$(grep '^\.TH ' docs/au.1)" \
	"^\.TH AU 1 \"[0-9-]+\" \"au $version\" "
# every option of `au --help` and every command is in the page
missing=
for o in $("$AU_BIN" --help | grep -o -- '--[a-z][a-z-]*' | sort -u) --version --help; do
	grep -qF -- "$(printf '%s' "$o" | sed 's/-/\\-/g')" docs/au.1 || missing="$missing $o"
done
t_eq "the man page has every option of au --help" "$missing" ""
missing=
for c in enqueue status wait result cancel worker "worker stop" workers stats queues queue dlq migrate \
	version help; do
	grep -q "^\.SS \"au $c[ \"]" docs/au.1 || missing="$missing '$c'"
done
t_eq "the man page has a section for every command" "$missing" ""

# --- bash completion, from the installed script, asking the installed au
Q=compq$RANDOM
"$prefix/bin/au" enqueue au.noop --queue "$Q" >/dev/null
t_eq "a queue to complete ($Q)" "$?" 0
comp() { # au binary, words...: COMPREPLY of the last word, sorted
	bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _au
		for w in "${COMPREPLY[@]}"; do echo "$w"; done | LC_ALL=C sort | tr "\n" " "' \
		- "$prefix/share/bash-completion/completions/au" "$@"
}
au=$prefix/bin/au
t_eq "completion: every command" "$(comp "$au" '')" \
	"cancel dlq enqueue help migrate queue queues result stats status version wait worker workers "
t_eq "completion: qu" "$(comp "$au" qu)" "queue queues "
t_eq "completion: queue's sub-commands" "$(comp "$au" queue '')" "delete empty pause resume "
t_eq "completion: dlq r" "$(comp "$au" dlq r)" "requeue "
t_eq "completion: worker s" "$(comp "$au" worker s)" "stop "
t_eq "completion: enqueue --pri" "$(comp "$au" enqueue --pri)" "--priority "
t_match "completion: enqueue -- has au help's options" "$(comp "$au" enqueue --)" \
	"--args --args-file .*--key .*--priority .*--wait .*--wait-timeout "
t_eq "completion: --log-level w" "$(comp "$au" worker --log-level w)" "warn "
t_eq "completion: queue pause, a queue name of the server" \
	"$(comp "$au" queue pause "${Q:0:8}")" "$Q "
t_eq "completion: enqueue --queue" "$(comp "$au" enqueue au.noop --queue "${Q:0:8}")" "$Q "
t_eq "completion: worker --queues a,<TAB>" \
	"$(comp "$au" worker --concurrency 4 --queues "a,${Q:0:8}")" "a,$Q "
t_eq "completion: the --queue-url on the line is the server asked" \
	"$(AU_QUEUE=redis://127.0.0.1:1 comp "$au" --queue-url "$AU_TEST_REDIS/9" queue resume \
	"${Q:0:8}")" "$Q "
t_eq "completion: no queue after the name" "$(comp "$au" queue pause "$Q" '')" ""
t_eq "completion: an au whose help prints nothing: the static list" \
	"$(comp /bin/false enqueue --pri)" "--priority "
"$au" queue empty "$Q" >/dev/null && "$au" queue delete "$Q" >/dev/null

# --- a machine without a library: make names the package and what installs it
out=$(mk -n PKGS="hiredis nosuchlib" DEB_nosuchlib=libnosuch-dev 2>&1); rc=$?
t_ok "make stops when a library is missing" [ "$rc" -ne 0 ]
t_match "and names its Debian package and make deps" "$out" \
	"missing the Debian packages libnosuch-dev: .make deps. installs them"

# --- make servers: servers to try au by hand, and the line that points au at them
sport=$((AU_PORT_BASE + 40))
AU_PORT_BASE=$sport setsid scripts/servers.sh >"$dir/servers.out" 2>&1 &
spid=$!
t_ok "scripts/servers.sh (make servers) says what to export" \
	t_until 60 grep -q '^ *export AU_QUEUE=redis://' "$dir/servers.out"
line=$(sed -n 's/^ *export \(AU_QUEUE=redis:.*\)/\1/p' "$dir/servers.out")
t_match "Redis, Redis, ClickHouse at its ports" "$line" \
	"^AU_QUEUE=redis://127\.0\.0\.1:$sport/0 AU_STORE=redis://127\.0\.0\.1:$sport/1 AU_CLICKHOUSE=http://127\.0\.0\.1:$((sport + 2))/default$"
sdir=$(sed -n 's/^servers: data in \(.*\), deleted.*/\1/p' "$dir/servers.out")
envf=$(sed -n 's/^The same three lines are in \(.*\), for au.*/\1/p' "$dir/servers.out")
out=$(env -u AU_QUEUE -u AU_STORE -u AU_CLICKHOUSE AU_CONFIG="$envf" \
	"$AU_BIN" worker --concurrency 2 --max-tasks 1 2>"$dir/sworker.log" &
	env -u AU_QUEUE -u AU_STORE -u AU_CLICKHOUSE AU_CONFIG="$envf" "$AU_BIN" enqueue ch.query \
		--wait --wait-timeout 30s --args '{"sql":"SELECT 6 * 7 AS x"}' 2>&1; wait)
t_eq "a worker and a client on its file run a ch.query there" "$out" \
	'{"columns":["x"],"types":["UInt16"],"rows":[[42]]}'
pgline=$(sed -n 's/^ *export \(AU_QUEUE=postgres:.*\)/\1/p' "$dir/servers.out")
t_match "and it names its PostgreSQL" "$pgline" \
	"^AU_QUEUE=postgres://postgres@127\.0\.0\.1:$((sport + 1))/postgres AU_STORE=postgres://"
kill -TERM "$spid"   # (a background job ignores SIGINT; Ctrl-C reaches the trap too)
t_ok "SIGTERM stops it" t_until 20 bash -c "! kill -0 $spid 2>/dev/null"
t_ok "and deletes its directory" [ -n "$sdir" ] && [ ! -e "$sdir" ]
t_ok "its Redis is gone" bash -c "! redis-cli -p $sport ping >/dev/null 2>&1"

rm -rf "$dir"
t_done
