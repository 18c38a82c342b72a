# bash completion for au(1). `make install` puts it in
# $(PREFIX)/share/bash-completion/completions/au, where bash-completion
# finds it; or source it from ~/.bashrc.
#
# Commands, the sub-commands of queue, dlq and worker, the values of
# --log-level, --on-timeout and --skip-check, files for --args-file and
# --config, and queue names (from `au queues --json`) after --queue and
# --queues and for `queue pause|resume|empty|delete`. A command's options
# are read from its own help (`au help COMMAND`, else `au COMMAND --help`)
# each time, so they follow the au that is installed; a static list stands
# in when that prints nothing.

_au_commands="enqueue status wait result cancel worker workers stats queues queue dlq migrate version help"

# Options that take a value: the word after one is that value.
_au_valued=" --queue-url --store-url --clickhouse --args --args-file --queue --queues --priority
 --delay --ttl --timeout --on-timeout --max-attempts --header --key --wait-timeout --concurrency
 --batch --processes --lease --grace --retry-base --max-tasks --max-jobs --idle-exit --log-level
 --config --restart-delay --skip-check --limit --older-than --middleware "

# The options of a command when its help says nothing.
_au_static_options() { # command
	local common="--queue-url --store-url --clickhouse --help"
	case $1 in
	enqueue) echo "$common --args --args-file --queue --priority --delay --ttl --timeout" \
		"--on-timeout --max-attempts --header --key --wait --wait-timeout --json" ;;
	status|result) echo "$common --queue --json" ;;
	wait) echo "$common --queue --timeout --json" ;;
	cancel) echo "$common --queue" ;;
	worker) echo "$common --queues --queue --concurrency --batch --processes --lease --grace" \
		"--retry-base --max-tasks --idle-exit --log-level --quiet --config" \
		"--wait-for-servers --skip-check --restart-delay --middleware --log-format --plugin" \
		"--metrics-addr" ;;
	workers|queues|stats) echo "$common --json" ;;
	queue) echo "$common --json --force" ;;
	dlq) echo "$common --queue --limit --json --all --older-than" ;;
	migrate) echo "$common --dry-run" ;;
	*) echo "$common --version" ;;
	esac
}

# Every --option the help of a command prints (au, command, sub-command).
_au_options() {
	local au=$1 cmd=$2 sub=$3 out
	shift 3
	out=$("$au" "$@" help "$cmd" 2>/dev/null </dev/null)
	[ -n "$out" ] || out=$("$au" "$@" "$cmd" ${sub:+"$sub"} --help 2>/dev/null </dev/null)
	out=$(printf '%s\n' "$out" | grep -o -- '--[a-z][a-z-]*' | sort -u)
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
	else
		_au_static_options "$cmd"
	fi
}

# The names of the queues the queue's server knows (au, URL options...).
_au_queue_names() {
	local au=$1
	shift
	"$au" "$@" queues --json 2>/dev/null </dev/null |
		sed -n 's/.*"queue":"\([^"]*\)".*/\1/p'
}

_au_reply() { # words, current word
	local IFS=$'\n'
	COMPREPLY=($(IFS=$' \t\n'; compgen -W "$1" -- "$2"))
}

_au() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev= au=${COMP_WORDS[0]}
	local i w cmd= sub= npos=0 urls=()
	COMPREPLY=()
	au=${au/#\~/$HOME}
	[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}

	# The command, its sub-command, how many plain words so far, and the
	# URLs given on the line (passed on to the au that is asked).
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--queue-url|--store-url|--clickhouse)
			urls+=("$w" "${COMP_WORDS[i+1]}")
			i=$((i + 1))
			continue ;;
		--*=*|-?) continue ;;
		--*)
			[[ $_au_valued == *" $w "* ]] && i=$((i + 1))
			continue ;;
		esac
		npos=$((npos + 1))
		if [ -z "$cmd" ]; then cmd=$w
		elif [ -z "$sub" ]; then sub=$w
		fi
	done

	# the value of an option
	case $prev in
	--queue|--queues)
		if [[ $prev == --queues && $cur == *,* ]]; then   # a,b,<TAB>
			local head=${cur%,*} q words=
			for q in $(_au_queue_names "$au" "${urls[@]}"); do words+=" $head,$q"; done
			_au_reply "$words" "$cur"
		else
			_au_reply "$(_au_queue_names "$au" "${urls[@]}")" "$cur"
		fi
		return ;;
	--args-file|--config)
		local IFS=$'\n'
		COMPREPLY=($(compgen -f -- "$cur"))
		return ;;
	--log-level) _au_reply "debug info warn error" "$cur"; return ;;
	--on-timeout) _au_reply "retry fail" "$cur"; return ;;
	--skip-check) _au_reply "queue store clickhouse" "$cur"; return ;;
	esac
	[[ $_au_valued == *" $prev "* ]] && return   # a number, a URL, JSON: nothing to offer

	if [[ $cur == -* ]]; then
		if [ -z "$cmd" ]; then
			_au_reply "--queue-url --store-url --clickhouse --help --version" "$cur"
		else
			_au_reply "$(_au_options "$au" "$cmd" "$sub" "${urls[@]}")" "$cur"
		fi
		return
	fi
	case $cmd in
	'') _au_reply "$_au_commands" "$cur" ;;
	help) [ "$npos" = 1 ] && _au_reply "$_au_commands" "$cur" ;;
	queue)
		if [ "$npos" = 1 ]; then
			_au_reply "pause resume empty delete" "$cur"
		elif [ "$npos" = 2 ]; then
			case $sub in pause|resume|empty|delete)
				_au_reply "$(_au_queue_names "$au" "${urls[@]}")" "$cur" ;;
			esac
		fi ;;
	dlq) [ "$npos" = 1 ] && _au_reply "list show requeue purge" "$cur" ;;
	worker) [ "$npos" = 1 ] && _au_reply "stop" "$cur" ;;
	esac
	return 0
}
complete -F _au au
