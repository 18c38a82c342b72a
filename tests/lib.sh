# lib.sh - assertions for the shell tests (tests/t_*.sh). Each check prints
# "ok - name" or "not ok - name"; t_done prints "# N passed, N failed".
_t_pass=0 _t_fail=0
t_ok() { # name, command...
	local name=$1; shift
	if "$@"; then echo "ok - $name"; _t_pass=$((_t_pass + 1))
	else echo "not ok - $name"; _t_fail=$((_t_fail + 1)); fi
}
t_eq() { # name, got, want
	if [ "$2" = "$3" ]; then echo "ok - $1"; _t_pass=$((_t_pass + 1))
	else echo "not ok - $1: got '$2', want '$3'"; _t_fail=$((_t_fail + 1)); fi
}
t_match() { # name, text, regex
	if printf '%s' "$2" | grep -Eq -- "$3"; then echo "ok - $1"; _t_pass=$((_t_pass + 1))
	else echo "not ok - $1: '$2' does not match /$3/"; _t_fail=$((_t_fail + 1)); fi
}
t_done() { echo "# $_t_pass passed, $_t_fail failed"; [ "$_t_fail" -eq 0 ]; }
# Waits until a command succeeds (up to $1 seconds).
t_until() { local s=$1; shift; local i; for i in $(seq 1 $((s * 20))); do "$@" && return 0; sleep 0.05; done; return 1; }
