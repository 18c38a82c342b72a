#!/usr/bin/env bash
# servers.sh - `make servers`: throwaway Redis, PostgreSQL and ClickHouse on
# 127.0.0.1 for trying au by hand, in a temporary directory, until Ctrl-C.
# Prints the AU_QUEUE, AU_STORE and AU_CLICKHOUSE to export, and writes
# them to a file every `au` command reads with --config (or AU_CONFIG).
# AU_PORT_BASE (default 16300) picks the ports: Redis +0, PostgreSQL +1,
# ClickHouse HTTP +2.
set -u
cd "$(dirname "$0")/.."
export AU_PORT_BASE=${AU_PORT_BASE:-16300}
. tests/servers.sh

servers_start redis pg ch || exit 1
env="$AU_TEST_TMP/au.env"
cat >"$env" <<ENV
# written by make servers; gone when it stops
AU_QUEUE=$AU_TEST_REDIS/0
AU_STORE=$AU_TEST_REDIS/1
AU_CLICKHOUSE=$AU_TEST_CH
ENV
chmod 644 "$env"
cat <<TXT
servers: Redis       $AU_TEST_REDIS
servers: PostgreSQL  $AU_TEST_PG
servers: ClickHouse  $AU_TEST_CH
servers: data in $AU_TEST_TMP, deleted when this stops (Ctrl-C)

In another terminal (the au commands and programs built on libau read these):
    export AU_QUEUE=$AU_TEST_REDIS/0 AU_STORE=$AU_TEST_REDIS/1 AU_CLICKHOUSE=$AU_TEST_CH
    au worker &
    au enqueue ch.query --wait --args '{"sql":"SELECT 1 AS one"}'

The same three lines are in $env, for au --config FILE or AU_CONFIG=FILE.
On PostgreSQL instead of Redis:
    export AU_QUEUE=$AU_TEST_PG AU_STORE=$AU_TEST_PG
TXT
while :; do sleep 3600 & wait $!; done   # (wait, so that Ctrl-C stops it at once)
