#!/usr/bin/env bash
# servers.sh - throwaway Redis, PostgreSQL and ClickHouse on 127.0.0.1 at
# non-default ports, each in its own temporary directory. Source it, then:
#
#   servers_start redis pg ch     # any subset; exports the URLs below
#   ...                           # servers are stopped on EXIT, INT, TERM
#
# Exports AU_TEST_REDIS (redis://127.0.0.1:P), AU_TEST_PG (postgres://...),
# AU_TEST_CH (http://127.0.0.1:P/default), AU_TEST_TMP (scratch directory).
# AU_PORT_BASE (default 17300) picks the ports: redis +0, pg +1, ch +2..+4.
# AU_PG_DURABLE=1 starts PostgreSQL with fsync and synchronous_commit on.

AU_PORT_BASE=${AU_PORT_BASE:-17300}
AU_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/au-servers.XXXXXX")
chmod 755 "$AU_TEST_TMP"
export AU_TEST_TMP
_au_pids=()
_au_pg_data=
_au_run_as=

. "$(dirname "${BASH_SOURCE[0]}")/proc_lib.sh"

servers_log() { printf 'servers: %s\n' "$*" >&2; }

# Servers that refuse root run as an unprivileged user when we are root.
if [ "$(id -u)" = 0 ]; then
	_au_run_as="runuser -u nobody --"
fi

servers_stop() {
	if [ -n "$_au_pg_data" ]; then
		$_au_pg_user /usr/lib/postgresql/15/bin/pg_ctl -D "$_au_pg_data" -m immediate -w stop >/dev/null 2>&1
		_au_pg_data=
	fi
	proc_stop "${_au_pids[@]}"
	_au_pids=()
	[ -n "$AU_TEST_TMP" ] && rm -rf "$AU_TEST_TMP"
	AU_TEST_TMP=
}

_au_wait() { proc_wait "$@"; }

servers_start_redis() {
	local port=$((AU_PORT_BASE + 0)) dir="$AU_TEST_TMP/redis"
	mkdir -p "$dir"
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --maxmemory-policy noeviction --logfile "$dir/redis.log" &
	_au_pids+=($!)
	export AU_TEST_REDIS="redis://127.0.0.1:$port"
	export AU_TEST_REDIS_PORT=$port
	_au_wait redis redis-cli -p "$port" ping
}

servers_start_pg() {
	local port=$((AU_PORT_BASE + 1)) dir="$AU_TEST_TMP/pg" bin=/usr/lib/postgresql/15/bin
	mkdir -p "$dir"
	_au_pg_user=
	if [ "$(id -u)" = 0 ]; then
		chown postgres "$dir"
		_au_pg_user="runuser -u postgres --"
	fi
	$_au_pg_user $bin/initdb -D "$dir/data" -A trust -U postgres -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
		{ servers_log "initdb failed: $(tail -3 "$dir/initdb.log")"; return 1; }
	# Tests trade durability for speed; AU_PG_DURABLE=1 (benchmarks) keeps
	# fsync and synchronous_commit on, as the peers are measured.
	local opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	# (pg_stat_statements lets the bench count statements per computation.)
	[ "${AU_PG_DURABLE:-0}" = 1 ] && opts="-c shared_buffers=512MB -c autovacuum_naptime=10s -c shared_preload_libraries=pg_stat_statements"
	$_au_pg_user $bin/pg_ctl -D "$dir/data" -l "$dir/server.log" -w -o \
		"-p $port -k $dir -c listen_addresses=127.0.0.1 $opts -c max_connections=200" \
		start >/dev/null || { servers_log "postgres failed: $(tail -3 "$dir/server.log")"; return 1; }
	_au_pg_data="$dir/data"
	export AU_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
	export AU_TEST_PG_PORT=$port
}

servers_start_ch() {
	local http=$((AU_PORT_BASE + 2)) tcp=$((AU_PORT_BASE + 3)) inter=$((AU_PORT_BASE + 4))
	local dir="$AU_TEST_TMP/ch"
	mkdir -p "$dir/log" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
	cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log>
        <errorlog>$dir/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http</http_port>
    <tcp_port>$tcp</tcp_port>
    <interserver_http_port>$inter</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>256</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
	cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>1000000000</max_memory_usage><log_queries>1</log_queries></default></profiles>
    <users>
        <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile><quota>default</quota></default>
        <au><password>au-secret</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile><quota>default</quota></au>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
	[ -n "$_au_run_as" ] && chown -R nobody:nogroup "$dir"
	(cd "$dir" && exec $_au_run_as /usr/sbin/clickhouse-server --config-file="$dir/config.xml" \
		>"$dir/log/stdout.log" 2>&1) &
	_au_pids+=($!)
	export AU_TEST_CH="http://127.0.0.1:$http/default"
	export AU_TEST_CH_PORT=$http
	_au_wait clickhouse sh -c "curl -sf http://127.0.0.1:$http/ping | grep -q Ok"
}

servers_start() {
	trap 'servers_stop' EXIT
	trap 'servers_stop; exit 130' INT TERM
	local s
	for s in "$@"; do
		"servers_start_$s" || return 1
	done
}
