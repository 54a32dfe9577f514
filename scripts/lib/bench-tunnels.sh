# shellcheck shell=bash
# shellcheck disable=SC2034 # TARGET, TUNNEL_LOGS, FAIL_* are read by bench.sh
# The paths scripts/bench.sh measures. Each setup_* function runs after
# ns_pair, brings its tunnel up between NS_A and NS_B, sets TARGET (the
# address NS_A sends to) and returns non-zero with FAIL_REASON set when it
# cannot. Sourced, not run.
#
# Expects from the caller: PATH_DIR (scratch for this path and round), RUN_ID, VNIC_BIN, WG_BIN and the helpers of
# bench-common.sh.

INNER_A=10.7.0.1
INNER_B=10.7.0.2

# fail REASON [LOGFILE...]: set FAIL_REASON (one line) and FAIL_DETAIL (the
# logs' telling lines); always returns 1.
fail() {
	FAIL_REASON=$1
	shift
	FAIL_DETAIL=$(excerpt "$@")
	return 1
}

randhex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# ------------------------------------------------------------ (a) plain veth

setup_veth() {
	TARGET=$UL_B
}

# ------------------------------------------------------------ vnic

# setup_vnic udp|raw gcm|chacha [FLAG...]: extra flags go to both daemons.
setup_vnic() {
	local encap=$1 alg=$2 d=$PATH_DIR/vnic-$RUN_ID-$1-$2
	local extra=("${@:3}")
	VNIC_DIR=$d
	[ -x "${VNIC_BIN:-}" ] || fail "vnic was not built (see the build step)" || return 1
	mkdir -p "$d"
	local sa=$d/a.sock sb=$d/b.sock prof_a=("${extra[@]}") prof_b=("${extra[@]}")
	# PROFILE_DIR set: both daemons write CPU profiles there as they exit.
	if [ -n "${PROFILE_DIR:-}" ]; then
		prof_a+=(-cpuprofile "$PROFILE_DIR/a.prof") prof_b+=(-cpuprofile "$PROFILE_DIR/b.prof")
	fi
	bg "vnic daemon in $NS_A" "$d/a.log" ip netns exec "$NS_A" "$VNIC_BIN" up -underlay "$UL_A" -addr "$INNER_A/24" -socket "$sa" "${prof_a[@]}"
	bg "vnic daemon in $NS_B" "$d/b.log" ip netns exec "$NS_B" "$VNIC_BIN" up -underlay "$UL_B" -addr "$INNER_B/24" -socket "$sb" "${prof_b[@]}"
	wait_for 15 "$VNIC_BIN" --socket "$sa" caps || fail "vnic daemon in $NS_A did not answer on $sa" "$d/a.log" || return 1
	wait_for 15 "$VNIC_BIN" --socket "$sb" caps || fail "vnic daemon in $NS_B did not answer on $sb" "$d/b.log" || return 1

	local name klen
	case $alg in
	gcm) name='rfc4106(gcm(aes))' klen=20 ;;
	chacha) name='rfc7539esp(chacha20,poly1305)' klen=36 ;;
	*) fail "unknown algorithm $alg" || return 1 ;;
	esac
	local kab kba
	kab=0x$(randhex "$klen")
	kba=0x$(randhex "$klen")
	local enc=()
	[ "$encap" = udp ] && enc=(encap espinudp 4500 4500 0.0.0.0)
	local out=$d/sa.log
	{
		"$VNIC_BIN" --socket "$sa" sa add dir out src "$UL_A" dst "$UL_B" proto esp spi 0x1001 mode tunnel aead "$name" "$kab" 128 "${enc[@]}" &&
			"$VNIC_BIN" --socket "$sb" sa add dir in src "$UL_A" dst "$UL_B" proto esp spi 0x1001 mode tunnel aead "$name" "$kab" 128 "${enc[@]}" replay-window 1024 &&
			"$VNIC_BIN" --socket "$sb" sa add dir out src "$UL_B" dst "$UL_A" proto esp spi 0x2002 mode tunnel aead "$name" "$kba" 128 "${enc[@]}" &&
			"$VNIC_BIN" --socket "$sa" sa add dir in src "$UL_B" dst "$UL_A" proto esp spi 0x2002 mode tunnel aead "$name" "$kba" 128 "${enc[@]}" replay-window 1024
	} >"$out" 2>&1 || fail "vnic sa add failed" "$out" || return 1
	"$VNIC_BIN" --socket "$sa" sa list >>"$out" 2>&1
	TARGET=$INNER_B
	TUNNEL_LOGS=("$d/a.log" "$d/b.log")
}

# ------------------------------------------------------------ wireguard-go

setup_wireguard() {
	local d=$PATH_DIR/wg-$RUN_ID
	local ia=wgb${RUN_ID}a ib=wgb${RUN_ID}b
	[ -x "${WG_BIN:-}" ] || fail "wireguard-go was not built: ${WG_BUILD_ERR:-see the build step}" || return 1
	command -v wg >/dev/null || fail "wg (wireguard-tools) is not installed" || return 1
	mkdir -p "$d"
	(umask 077 && wg genkey >"$d/a.key" && wg genkey >"$d/b.key") || fail "wg genkey failed" || return 1
	wg pubkey <"$d/a.key" >"$d/a.pub" && wg pubkey <"$d/b.key" >"$d/b.pub" || fail "wg pubkey failed" || return 1
	bg "wireguard-go in $NS_A" "$d/a.log" ip netns exec "$NS_A" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$WG_BIN" "$ia"
	bg "wireguard-go in $NS_B" "$d/b.log" ip netns exec "$NS_B" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$WG_BIN" "$ib"
	wait_for 15 test -S "/var/run/wireguard/$ia.sock" || fail "wireguard-go $ia did not create its socket" "$d/a.log" || return 1
	wait_for 15 test -S "/var/run/wireguard/$ib.sock" || fail "wireguard-go $ib did not create its socket" "$d/b.log" || return 1
	ip netns exec "$NS_A" wg set "$ia" private-key "$d/a.key" listen-port 51820 \
		peer "$(cat "$d/b.pub")" endpoint "$UL_B:51820" allowed-ips "$INNER_B/32" >"$d/wg.log" 2>&1 &&
		ip netns exec "$NS_B" wg set "$ib" private-key "$d/b.key" listen-port 51820 \
			peer "$(cat "$d/a.pub")" endpoint "$UL_A:51820" allowed-ips "$INNER_A/32" >>"$d/wg.log" 2>&1 ||
		fail "wg set failed" "$d/wg.log" || return 1
	ip -n "$NS_A" addr add "$INNER_A/24" dev "$ia" && ip -n "$NS_A" link set "$ia" up &&
		ip -n "$NS_B" addr add "$INNER_B/24" dev "$ib" && ip -n "$NS_B" link set "$ib" up ||
		fail "addressing the wireguard interfaces failed" || return 1
	TARGET=$INNER_B
	TUNNEL_LOGS=("$d/a.log" "$d/b.log")
}

teardown_wireguard() {
	rm -f "/var/run/wireguard/wgb${RUN_ID}a.sock" "/var/run/wireguard/wgb${RUN_ID}b.sock"
}

# ------------------------------------------------------------ strongSwan

# sw_conf DIR LOCAL REMOTE LOCAL_INNER REMOTE_INNER ID PEER_ID PSK
sw_conf() {
	local d=$1
	mkdir -p "$d/run"
	cat >"$d/strongswan.conf" <<EOF
charon {
	# Only what this comparison needs; kernel-libipsec must come before
	# kernel-netlink: the first kernel-ipsec backend loaded wins.
	load_modular = no
	load = random nonce openssl aes gcm sha1 sha2 hmac kdf curve25519 kernel-libipsec kernel-netlink socket-default vici
	install_routes = yes
	retransmit_tries = 3
	plugins {
		vici {
			socket = unix://$d/charon.vici
		}
	}
	filelog {
		main {
			path = $d/charon.log
			default = 1
			ike = 1
			flush_line = yes
			time_format = %H:%M:%S
		}
	}
	syslog {
		daemon {
			default = -1
		}
	}
}
EOF
	cat >"$d/swanctl.conf" <<EOF
connections {
	bench {
		version = 2
		local_addrs = $2
		remote_addrs = $3
		proposals = aes128gcm16-prfsha256-x25519
		local {
			auth = psk
			id = $6
		}
		remote {
			auth = psk
			id = $7
		}
		children {
			bench {
				mode = tunnel
				local_ts = $4/32
				remote_ts = $5/32
				esp_proposals = aes128gcm16
				start_action = none
			}
		}
	}
}
secrets {
	ike-bench {
		id-a = $6
		id-b = $7
		secret = "$8"
	}
}
EOF
}

setup_strongswan() {
	local charon=/usr/lib/ipsec/charon
	[ -x "$charon" ] || fail "$charon is missing (strongswan-charon not installed)" || return 1
	command -v swanctl >/dev/null || fail "swanctl is missing (strongswan-swanctl not installed)" || return 1
	[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] ||
		fail "the kernel-libipsec plugin is missing (libcharon-extra-plugins not installed)" || return 1
	local d=$PATH_DIR/sw-$RUN_ID psk
	psk=$(randhex 24)
	sw_conf "$d/a" "$UL_A" "$UL_B" "$INNER_A" "$INNER_B" a.bench b.bench "$psk"
	sw_conf "$d/b" "$UL_B" "$UL_A" "$INNER_B" "$INNER_A" b.bench a.bench "$psk"
	# The inner addresses live on lo; charon routes the peer's through
	# kernel-libipsec's TUN (ipsec0) in table 220.
	ip -n "$NS_A" addr add "$INNER_A/32" dev lo && ip -n "$NS_B" addr add "$INNER_B/32" dev lo ||
		fail "adding the inner addresses failed" || return 1
	# Two charons on one machine clash on the compiled-in pid file under
	# /run: each gets a private /run (ip netns exec gives a private mount
	# namespace).
	local x ns
	for x in a b; do
		ns=$NS_A
		[ "$x" = b ] && ns=$NS_B
		# shellcheck disable=SC2016 # expanded by sh -c, not here
		bg "charon in $ns" "$d/$x/stdout.log" ip netns exec "$ns" sh -c 'mount --bind "$1" /run && STRONGSWAN_CONF="$2" exec "$3"' \
			sh "$d/$x/run" "$d/$x/strongswan.conf" "$charon"
	done
	TUNNEL_LOGS=("$d/a/charon.log" "$d/b/charon.log")
	for x in a b; do
		wait_for 20 test -S "$d/$x/charon.vici" ||
			fail "charon ($x) did not open its vici socket" "$d/$x/charon.log" "$d/$x/stdout.log" || return 1
	done
	for x in a b; do
		timeout 20 swanctl --load-all --noprompt --file "$d/$x/swanctl.conf" --uri "unix://$d/$x/charon.vici" >"$d/$x/load.log" 2>&1 ||
			fail "swanctl --load-all ($x) failed" "$d/$x/load.log" || return 1
	done
	timeout 30 swanctl --initiate --child bench --timeout 20 --uri "unix://$d/a/charon.vici" >"$d/initiate.log" 2>&1 ||
		fail "swanctl --initiate failed" "$d/initiate.log" "$d/a/charon.log" || return 1
	# What was negotiated, for the report. kernel-libipsec makes charon
	# believe the peer is behind a NAT so that ESP goes in UDP.
	SW_NEGOTIATED=$(grep -h -o 'selected proposal: ESP:[^ ]*' "$d/a/charon.log" | head -n 1 | sed 's/selected proposal: //')
	if grep -q 'behind NAT' "$d/a/charon.log"; then
		SW_NEGOTIATED+=", UDP-encapsulated (charon: \"remote host is behind NAT\")"
	fi
	TARGET=$INNER_B
}
