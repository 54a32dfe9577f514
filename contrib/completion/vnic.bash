# bash completion for vnic(8): its commands, the sa commands, the global
# options and the flags of vnic up. make install puts it where
# bash-completion loads it on demand
# ($PREFIX/share/bash-completion/completions/vnic); to try it in a shell:
#   source contrib/completion/vnic.bash
#
# cmd/vnic/manpage_test.go fails when a command of vnic's usage text or a
# flag of vnic up is missing here.

# _vnic_daemons lists the devices whose daemon has a socket in /run/vnic.
_vnic_daemons() {
	local s
	for s in /run/vnic/*.sock; do
		[[ -S $s ]] || continue
		s=${s##*/}
		printf '%s\n' "${s%.sock}"
	done
}

_vnic_up() {
	local cur=$1 prev=$2
	local flags='-name -mtu -addr -route -underlay -underlay-dev -udp-port
		-socket -key-history -capacity -replay-window -pass-unknown-spi
		-crypto-workers -log-level -cpuprofile -metrics -metrics-per-sa -h'
	local flag=${prev#-}
	flag=${flag#-} # -flag and --flag are the same
	case $flag in
	underlay-dev)
		COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur"))
		return
		;;
	socket | key-history | cpuprofile)
		COMPREPLY=($(compgen -f -- "$cur"))
		compopt -o filenames 2>/dev/null
		return
		;;
	log-level)
		COMPREPLY=($(compgen -W 'debug info warn error' -- "$cur"))
		return
		;;
	name | mtu | addr | route | underlay | udp-port | capacity | replay-window | crypto-workers | metrics)
		return # a value of the user's own
		;;
	esac
	COMPREPLY=($(compgen -W "$flags" -- "$cur"))
}

_vnic() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	local options='--socket --dev --json --all --timeout --esp-sa-file --version --help'
	COMPREPLY=()

	# The words before the cursor, less the global options (which stand
	# anywhere up to the word up) and their values.
	local words=() i w
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if ((${#words[@]} > 0)) && [[ ${words[0]} == up ]]; then
			words+=("$w")
			continue
		fi
		case $w in
		--socket | -socket | --dev | -dev | --timeout | -timeout) ((i++)) ;;
		--esp-sa-file | -esp-sa-file)
			((i++))
			[[ ${COMP_WORDS[i]} == = ]] && ((i++)) # --esp-sa-file=PATH
			;;
		-*) ;;
		*) words+=("$w") ;;
		esac
	done

	if [[ ${words[0]} == up ]]; then
		_vnic_up "$cur" "$prev"
		return
	fi

	# --esp-sa-file=PATH (which bash splits at the =, so that the word at
	# the cursor is "=" or what follows it) or --esp-sa-file PATH: a file.
	local opt=$prev path=$cur
	if [[ $cur == = ]]; then
		path=
	elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
		opt=${COMP_WORDS[COMP_CWORD - 2]}
	fi
	if [[ $opt == --esp-sa-file || $opt == -esp-sa-file ]]; then
		COMPREPLY=($(compgen -f -- "$path"))
		compopt -o filenames 2>/dev/null
		return
	fi

	case $prev in
	--socket | -socket)
		COMPREPLY=($(compgen -f -- "$cur"))
		compopt -o filenames 2>/dev/null
		return
		;;
	--dev | -dev)
		COMPREPLY=($(compgen -W "$(_vnic_daemons)" -- "$cur"))
		return
		;;
	--timeout | -timeout) return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$options" -- "$cur"))
		return
	fi

	case ${#words[@]} in
	0)
		COMPREPLY=($(compgen -W 'up caps sa stats events genkey wait version help' -- "$cur"))
		;;
	1)
		[[ ${words[0]} == sa ]] &&
			COMPREPLY=($(compgen -W 'add del flush update list show request-delete' -- "$cur"))
		[[ ${words[0]} == genkey ]] &&
			COMPREPLY=($(compgen -W 'rfc4106(gcm(aes)) rfc4543(gcm(aes)) rfc7539esp(chacha20,poly1305) cbc(aes) hmac(sha1) hmac(sha256) hmac(sha384) hmac(sha512)' -- "$cur"))
		;;
	*)
		# sa update HANDLE seq-hi N [spi SPI]
		if [[ ${words[0]} == sa && ${words[1]} == update ]] && ((${#words[@]} % 2 == 1)); then
			COMPREPLY=($(compgen -W 'seq-hi spi' -- "$cur"))
		fi
		;;
	esac
}

complete -F _vnic vnic
