# shellcheck shell=bash
# Helpers for scripts/bench.sh: logging, statistics, namespace pairs,
# process bookkeeping and the measurements (iperf3, ping). Sourced, not run.
#
# Expects from the caller: WORK (a private scratch directory), RUN_ID (unique
# per run), BENCH_SECONDS, and the arrays PATH_PIDS (processes started for
# the current path).

BENCH_T0=$(date +%s)

log() {
	local t=$(($(date +%s) - BENCH_T0))
	printf '[%02d:%02d] %s\n' $((t / 60)) $((t % 60)) "$*" >&2
}

# ---------------------------------------------------------------- statistics

# stats FILE: one number per line in, "median min max count" out (empty
# output when FILE holds no number).
stats() {
	[ -s "$1" ] || return 0
	sort -g "$1" | awk '
		/^[-+0-9.eE]+$/ { v[n++] = $1 }
		END {
			if (n == 0) exit
			med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
			printf "%s %s %s %d\n", med, v[0], v[n - 1], n
		}'
}

# excerpt FILE...: the telling part of each log: from a Go panic or fatal
# error on if there is one, else the last lines.
excerpt() {
	local f n
	for f in "$@"; do
		[ -s "$f" ] || continue
		n=$(grep -n -m 1 -E '^(panic|fatal error|SIGSEGV)' "$f" | cut -d: -f1)
		if [ -n "$n" ]; then
			echo "${f##*/}, from line $n:"
			sed -n "${n},$((n + 14))p" "$f"
		else
			echo "last lines of ${f##*/}:"
			tail -n 8 "$f"
		fi
	done
}

# fmt_num VALUE DECIMALS
fmt_num() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }

# ------------------------------------------------------------ processes

PATH_PIDS=()
declare -A PATH_CMDS

# bg NAME LOGFILE CMD...: start CMD in the background, remember its pid
# (and NAME, for reports).
bg() {
	local name=$1 logf=$2
	shift 2
	"$@" >"$logf" 2>&1 &
	PATH_PIDS+=("$!")
	PATH_CMDS[$!]="$name (pid $!)"
}

# all_alive: every process the path started still runs; otherwise print
# the dead ones (pid and command) and fail.
all_alive() {
	local p dead=''
	for p in "${PATH_PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || dead+="${dead:+, }${PATH_CMDS[$p]:-pid $p}"
	done
	[ -z "$dead" ] || { echo "$dead"; return 1; }
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# ------------------------------------------------------------ namespaces

# ns_pair TAG: create namespaces NS_A and NS_B (names unique to this run and
# path) joined by a veth ula/ulb, underlay 192.168.77.1/24 <-> .2/24.
UL_A=192.168.77.1
UL_B=192.168.77.2
ns_pair() {
	NS_A=vbench-$RUN_ID-$1-a
	NS_B=vbench-$RUN_ID-$1-b
	ip netns add "$NS_A" || return 1
	ip netns add "$NS_B" || return 1
	ip link add ula netns "$NS_A" type veth peer name ulb netns "$NS_B" || return 1
	ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up || return 1
	ip -n "$NS_A" addr add "$UL_A/24" dev ula || return 1
	ip -n "$NS_B" addr add "$UL_B/24" dev ulb || return 1
	ip -n "$NS_A" link set ula up && ip -n "$NS_B" link set ulb up || return 1
	# IPv6 only adds DAD and router solicitations to the measurements.
	local ns
	for ns in "$NS_A" "$NS_B"; do
		ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
	done
}

# kill_pids PID...: TERM, a grace period, then KILL; reap them.
kill_pids() {
	local p left
	[ $# -gt 0 ] || return 0
	kill "$@" 2>/dev/null || true
	for _ in $(seq 30); do
		left=0
		for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
		[ "$left" = 1 ] || break
		sleep 0.1
	done
	kill -KILL "$@" 2>/dev/null || true
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# ns_teardown: stop what the current path started, then delete its
# namespaces (and whatever this run left running inside them).
ns_teardown() {
	local ns pids
	if [ ${#PATH_PIDS[@]} -gt 0 ]; then
		kill_pids "${PATH_PIDS[@]}"
	fi
	PATH_PIDS=()
	for ns in "${NS_A:-}" "${NS_B:-}"; do
		[ -n "$ns" ] || continue
		ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || continue
		# shellcheck disable=SC2207
		pids=($(ip netns pids "$ns" 2>/dev/null))
		if [ ${#pids[@]} -gt 0 ]; then kill_pids "${pids[@]}"; fi
		ip netns del "$ns" 2>/dev/null || true
	done
	NS_A=''
	NS_B=''
}

# reap_stale: namespaces (and wireguard-go sockets) named by an earlier run
# of this script whose process is gone (e.g. killed with SIGKILL).
reap_stale() {
	local ns pid pids s
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^vbench-[0-9]*-' || true); do
		pid=${ns#vbench-}
		pid=${pid%%-*}
		kill -0 "$pid" 2>/dev/null && continue
		log "removing stale namespace $ns (run $pid is gone)"
		# shellcheck disable=SC2207
		pids=($(ip netns pids "$ns" 2>/dev/null))
		if [ ${#pids[@]} -gt 0 ]; then kill_pids "${pids[@]}"; fi
		ip netns del "$ns" 2>/dev/null || true
	done
	for s in /var/run/wireguard/wgb[0-9]*.sock; do
		[ -e "$s" ] || continue
		pid=${s##*/wgb}
		pid=${pid%[ab].sock}
		kill -0 "$pid" 2>/dev/null || rm -f "$s"
	done
}

# ------------------------------------------------------------ measurements

# tunnel_ping TARGET SECONDS: does TARGET answer from NS_A within SECONDS?
tunnel_ping() {
	local deadline=$((SECONDS + $2))
	while [ "$SECONDS" -lt "$deadline" ]; do
		ip netns exec "$NS_A" ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

# iperf_client OUT.json ARGS...: run the iperf3 client in NS_A (bounded by
# timeout); a busy server (the previous test still closing) is retried.
iperf_client() {
	local out=$1 try
	shift
	for try in 1 2 3; do
		timeout --kill-after=5 $((BENCH_SECONDS + 15)) \
			ip netns exec "$NS_A" iperf3 -J -t "$BENCH_SECONDS" "$@" >"$out" 2>"$out.err"
		if jq -e 'has("error") | not' "$out" >/dev/null 2>&1; then
			return 0
		fi
		log "    iperf3 attempt $try failed: $(jq -r '.error // empty' "$out" 2>/dev/null)$(head -c 200 "$out.err")"
		all_alive >/dev/null || return 1
		sleep 2
	done
	return 1
}

# measure_tcp TARGET STREAMS: Gbit/s as the receiver saw it.
measure_tcp() {
	local out=$WORK/iperf.json
	iperf_client "$out" -c "$1" -P "$2" || return 1
	jq -er '.end.sum_received.bits_per_second / 1e9' "$out"
}

# measure_udp64 TARGET: 64-byte UDP payloads, unbounded rate; thousands of
# packets per second RECEIVED (sent minus what the receiver counted lost).
measure_udp64() {
	local out=$WORK/iperf.json
	iperf_client "$out" -c "$1" -u -l 64 -b 0 || return 1
	jq -er '.end.sum | select(.seconds > 0) | (.packets - .lost_packets) / .seconds / 1e3' "$out"
}

# measure_ping TARGET: average RTT in ms of 20 echoes 50 ms apart.
measure_ping() {
	local out
	out=$(timeout 20 ip netns exec "$NS_A" ping -q -c 20 -i 0.05 -W 1 "$1" 2>&1) || return 1
	awk -F'[/ ]+' '/^(rtt|round-trip)/ { print $8; found = 1 } END { exit !found }' <<<"$out"
}
