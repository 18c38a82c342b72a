#!/usr/bin/env bash
# proc_lib.sh - what the scripts that start servers share (servers.sh,
# tls_lib.sh): waiting for one to come up, stopping the processes started.

# what, command...: 0 once the command succeeds (15 s at most)
proc_wait() {
	local what=$1; shift
	for _ in $(seq 1 300); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	printf 'servers: %s did not come up\n' "$what" >&2
	return 1
}

# pid...: SIGTERM to each, then SIGKILL to any still there after 5 s
proc_stop() {
	local pid
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "$@"; do
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill -KILL "$pid" 2>/dev/null
	done
}
