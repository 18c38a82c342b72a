# tls_lib.sh - servers with TLS for the tests (t_tls_ch.sh, t_tls_pg.sh,
# t_rediss.sh, t_secrets.sh): a CA of the test's own and certificates made with the
# openssl command, a ClickHouse 18.16 with an https port, a PostgreSQL with
# ssl=on, a Redis with a TLS port. Each runs on 127.0.0.1 in a directory of
# the test, as nobody (ClickHouse, Redis) or postgres when we are root, as
# tests/servers.sh does; tls_stop stops them all.
_tls_pids=() _tls_pg_data= _tls_pg_user= _tls_run_as=
[ "$(id -u)" = 0 ] && _tls_run_as="runuser -u nobody --"

# Gives dir/<user> to the unprivileged user a server runs as.
_tls_own() { # dir, user
	[ "$(id -u)" = 0 ] && chown -R "$2" "$1"
	return 0
}

# tls_certs DIR: DIR/ca.pem (the CA that signs), DIR/server.pem and
# DIR/server.key (signed by it, for IP 127.0.0.1 only: "localhost" does not
# match), DIR/other-ca.pem (a CA that signed nothing here). Readable by all.
tls_certs() {
	local d=$1
	mkdir -p "$d" && chmod 755 "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=au test ca" \
		-keyout "$d/ca.key" -out "$d/ca.pem" >/dev/null 2>&1 &&
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=au other ca" \
		-keyout "$d/other-ca.key" -out "$d/other-ca.pem" >/dev/null 2>&1 &&
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 &&
	printf 'subjectAltName=IP:127.0.0.1\n' >"$d/san.cnf" &&
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
		-days 2 -extfile "$d/san.cnf" -out "$d/server.pem" >/dev/null 2>&1 ||
		{ echo "tls_lib: openssl failed" >&2; return 1; }
	chmod 644 "$d"/*.pem "$d/server.key"
}

. "$(dirname "${BASH_SOURCE[0]}")/proc_lib.sh"
_tls_wait() { proc_wait "$@"; }

# tls_start_ch DIR CERTS PORT: a ClickHouse with only an https port (PORT;
# its tcp and interserver ports are PORT+1, PORT+2), the certificate of
# CERTS, and the users of tests/servers.sh (default without a password,
# au with au-secret). 18.16 needs no <dhParamsFile>: without one it offers
# ECDHE only, which curl takes.
tls_start_ch() {
	local dir=$1 certs=$2 port=$3
	mkdir -p "$dir/log" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
	chmod 755 "$dir"
	cp "$certs/server.pem" "$certs/server.key" "$dir/"
	chmod 600 "$dir/server.key"
	cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log>
        <errorlog>$dir/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <https_port>$port</https_port>
    <tcp_port>$((port + 1))</tcp_port>
    <interserver_http_port>$((port + 2))</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <openSSL>
        <server>
            <certificateFile>$dir/server.pem</certificateFile>
            <privateKeyFile>$dir/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
	cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
    <users>
        <default><password></password><networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile><quota>default</quota></default>
        <au><password>au-secret</password><networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile><quota>default</quota></au>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
	_tls_own "$dir" nobody:nogroup
	(cd "$dir" && exec $_tls_run_as /usr/sbin/clickhouse-server --config-file="$dir/config.xml" \
		>"$dir/log/stdout.log" 2>&1) &
	_tls_pids+=($!)
	_tls_wait "clickhouse with https" sh -c \
		"curl -sf --cacert '$certs/ca.pem' https://127.0.0.1:$port/ping | grep -q Ok"
}

# tls_start_pg DIR CERTS PORT [AUTH]: a PostgreSQL 15 with ssl=on and the
# certificate of CERTS, user postgres; AUTH (pg_hba method, default trust)
# for TCP connections, the password of postgres then being pg-secret-77.
tls_start_pg() {
	local dir=$1 certs=$2 port=$3 auth=${4:-trust} bin=/usr/lib/postgresql/15/bin
	mkdir -p "$dir"
	chmod 755 "$dir"
	cp "$certs/server.pem" "$certs/server.key" "$dir/"
	chmod 600 "$dir/server.key"
	printf 'pg-secret-77\n' >"$dir/pwfile"
	_tls_pg_user=
	if [ "$(id -u)" = 0 ]; then
		chown -R postgres "$dir"
		_tls_pg_user="runuser -u postgres --"
	fi
	$_tls_pg_user $bin/initdb -D "$dir/data" -A trust -U postgres --pwfile="$dir/pwfile" -E UTF8 \
		--no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
		{ echo "tls_lib: initdb failed: $(tail -3 "$dir/initdb.log")" >&2; return 1; }
	if [ "$auth" != trust ]; then
		printf 'local all all trust\nhost all all 127.0.0.1/32 %s\n' "$auth" >"$dir/data/pg_hba.conf"
		_tls_own "$dir/data/pg_hba.conf" postgres
	fi
	$_tls_pg_user $bin/pg_ctl -D "$dir/data" -l "$dir/server.log" -w -o \
		"-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key" \
		start >/dev/null || { echo "tls_lib: postgres failed: $(tail -3 "$dir/server.log")" >&2; return 1; }
	_tls_pg_data="$dir/data"
}

# tls_start_redis DIR CERTS TLS_PORT [ARGS...]: a Redis that listens only
# with TLS, on TLS_PORT, with the certificate of CERTS (clients need no
# certificate of their own); ARGS go to redis-server.
tls_start_redis() {
	local dir=$1 certs=$2 port=$3
	shift 3
	mkdir -p "$dir"
	chmod 755 "$dir"
	cp "$certs/server.pem" "$certs/server.key" "$certs/ca.pem" "$dir/"
	chmod 600 "$dir/server.key"
	_tls_own "$dir" nobody:nogroup
	$_tls_run_as redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" --tls-cert-file "$dir/server.pem" \
		--tls-key-file "$dir/server.key" --tls-ca-cert-file "$dir/ca.pem" --tls-auth-clients no "$@" &
	_tls_pids+=($!)
	_tls_wait "redis with tls" sh -c "redis-cli --tls --cacert '$certs/ca.pem' -p $port ping 2>&1 | grep -Eq 'PONG|NOAUTH'"
}

# Runs a background process whose pid tls_stop ends too.
tls_track() { _tls_pids+=("$1"); }

tls_stop() {
	if [ -n "$_tls_pg_data" ]; then
		$_tls_pg_user /usr/lib/postgresql/15/bin/pg_ctl -D "$_tls_pg_data" -m immediate -w stop >/dev/null 2>&1
		_tls_pg_data=
	fi
	proc_stop "${_tls_pids[@]}"
	_tls_pids=()
}
