#!/usr/bin/env bash
# The vnic demo: two network namespaces joined by a veth, a vnic daemon in
# each, a matched pair of AES-GCM-128 SAs installed through the OID
# channel with the vnic CLI, then ping and a short iperf3 through vnic0,
# the counters, and a clean-up that runs even when interrupted.
#
#   scripts/demo.sh                 # as root: ESP-in-UDP (default)
#   ENCAP=raw scripts/demo.sh       # raw ESP
#   SECONDS_IPERF=5 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "demo.sh needs root (namespaces, TUN devices): run it as root" >&2
	exit 1
fi
export PATH=/usr/local/go/bin:$PATH
ENCAP=${ENCAP:-udp}
SECONDS_IPERF=${SECONDS_IPERF:-5}
[ "$SECONDS_IPERF" -le 10 ] || SECONDS_IPERF=10

need=()
for tool in ip ping iperf3; do
	command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing iproute2 iputils-ping iperf3"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 iputils-ping iperf3 >/dev/null
fi

work=$(mktemp -d)
bin=$work/vnic
echo "== building vnic"
go build -o "$bin" ./cmd/vnic

id=$$
A=vnicdemoA-$id
B=vnicdemoB-$id
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	ip netns del "$A" 2>/dev/null
	ip netns del "$B" 2>/dev/null
	rm -rf "$work" "/run/vnic-demo-$id"
}
trap cleanup EXIT INT TERM

echo "== namespaces $A and $B, joined by a veth (underlay 192.168.77.1 <-> .2)"
ip netns add "$A"
ip netns add "$B"
ip link add ula netns "$A" type veth peer name ulb netns "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip -n "$A" addr add 192.168.77.1/24 dev ula
ip -n "$B" addr add 192.168.77.2/24 dev ulb
ip -n "$A" link set ula up
ip -n "$B" link set ulb up

sockA=/run/vnic-demo-$id/A.sock
sockB=/run/vnic-demo-$id/B.sock
echo "== starting a vnic daemon in each namespace (vnic0 10.7.0.1/24 and 10.7.0.2/24)"
ip netns exec "$A" "$bin" up -underlay 192.168.77.1 -addr 10.7.0.1/24 -socket "$sockA" 2>"$work/A.log" &
pids+=($!)
ip netns exec "$B" "$bin" up -underlay 192.168.77.2 -addr 10.7.0.2/24 -socket "$sockB" 2>"$work/B.log" &
pids+=($!)
for s in "$sockA" "$sockB"; do
	for _ in $(seq 100); do
		"$bin" --socket "$s" caps >/dev/null 2>&1 && break
		sleep 0.1
	done
done
"$bin" --socket "$sockA" caps

key() { echo "0x$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"; }
kAB=$(key)
kBA=$(key)
encap=()
[ "$ENCAP" = udp ] && encap=(encap espinudp 4500 4500 0.0.0.0)

echo "== installing SAs through the OID channel (keys are random and never printed)"
sa() { "$bin" --socket "$1" sa add "${@:2}" proto esp mode tunnel "${encap[@]}"; }
sa "$sockA" dir out src 192.168.77.1 dst 192.168.77.2 spi 0x1001 aead 'rfc4106(gcm(aes))' "$kAB" 128
sa "$sockB" dir in  src 192.168.77.1 dst 192.168.77.2 spi 0x1001 aead 'rfc4106(gcm(aes))' "$kAB" 128 replay-window 128
sa "$sockB" dir out src 192.168.77.2 dst 192.168.77.1 spi 0x2002 aead 'rfc4106(gcm(aes))' "$kBA" 128
sa "$sockA" dir in  src 192.168.77.2 dst 192.168.77.1 spi 0x2002 aead 'rfc4106(gcm(aes))' "$kBA" 128 replay-window 128
"$bin" --socket "$sockA" sa list

echo "== ping 10.7.0.2 from $A through vnic0"
ip netns exec "$A" ping -c 5 -i 0.2 10.7.0.2

echo "== iperf3 for ${SECONDS_IPERF}s from $A to $B through vnic0"
ip netns exec "$B" iperf3 -s -1 >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
ip netns exec "$A" iperf3 -c 10.7.0.2 -t "$SECONDS_IPERF" | tail -n 4

echo "== counters in $A"
"$bin" --socket "$sockA" stats
echo "== SAs in $A"
"$bin" --socket "$sockA" sa list
echo "== done; cleaning up"
