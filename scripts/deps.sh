#!/usr/bin/env bash
# deps.sh - installs the Debian packages au needs that are missing: build
# libraries, clang and its libFuzzer for tests/fuzz/, and the servers the
# tests and the demo start. A quick no-op when everything is present.
set -eu

pkgs=(build-essential pkg-config curl procps
      libhiredis-dev libmsgpack-dev libpq-dev libevent-dev libcurl4-openssl-dev
      libjansson-dev libssl-dev lua5.1 clang libclang-rt-14-dev
      redis-server postgresql-15 clickhouse-server clickhouse-client
      openssl stunnel4    # the TLS tests: certificates, a tunnel to Redis
      jq python3          # tests that read JSON
      tzdata)             # the time zones of schedules (core/cron.c)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { echo "deps: missing packages (${missing[*]}) and not root: install them with apt-get" >&2; exit 1; }
	sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged servers are not needed as services: tests start their own.
for svc in redis-server postgresql clickhouse-server; do
	$sudo service "$svc" stop >/dev/null 2>&1 || true
done
