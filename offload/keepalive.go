package offload

import (
	"time"

	"vnic/sadb"
)

// keepalive is the NAT keepalive state of one outbound ESP-in-UDP SA:
// when it was last seen sending, and when its next keepalive is due.
type keepalive struct {
	packets uint64    // the SA's packet counter when last looked at
	due     time.Time // the next keepalive, if the SA stays idle
}

// natKeepalives sends a NAT keepalive (RFC 3948 §2.3) for every outbound
// ESP-in-UDP SA with a keepalive interval that has sent nothing for that
// long, and again every interval while it stays idle, as the kernel does
// for nat-keepalive-interval. RunTimers calls it once a second; now is the
// time of the tick. An SA counts as sending when its packet counter moved
// since the last tick.
func (e *Engine) natKeepalives(now time.Time, wire Wire) {
	for _, sa := range e.table.List() {
		c := &sa.Config
		k := c.Encap.KeepaliveInterval
		if k <= 0 || c.Direction != sadb.Outbound || !c.Encap.UDP || !sa.Alive() {
			continue
		}
		p := sa.Counters.Packets.Load()
		st := e.keepalives[sa.Handle]
		if st == nil || st.packets != p {
			e.keepalives[sa.Handle] = &keepalive{packets: p, due: now.Add(k)}
			continue
		}
		if now.Before(st.due) {
			continue
		}
		st.due = now.Add(k)
		var buf [ipv6Header + udpHeader + 1]byte
		var failed [1]bool // the Wire contract: one per packet
		if _, err := wire.SendBatch([][]byte{keepalivePacket(buf[:], c)}, failed[:]); err != nil {
			e.counts[cntSendErrors].Add(1)
			continue
		}
		e.counts[cntOutKeepalives].Add(1)
	}
	for h := range e.keepalives {
		if e.table.Get(h) == nil {
			delete(e.keepalives, h)
		}
	}
}

// keepalivePacket writes into buf the NAT keepalive of the SA c: one 0xFF
// byte in UDP from the SA's source port to its destination's, in an outer
// IPv4 or IPv6 header, and returns it.
func keepalivePacket(buf []byte, c *sadb.Config) []byte {
	hl := ipv4MinHeader
	if c.Dst.Is6() {
		hl = ipv6Header
	}
	pkt := buf[:hl+udpHeader+1]
	putOuterHeader(pkt, c, protoUDP, 0, len(pkt), 0, false, 0)
	u := pkt[hl:]
	putUDPHeader(u, c)
	u[udpHeader] = 0xFF
	if hl == ipv6Header {
		setUDP6Checksum(ipv6(pkt), u)
	}
	return pkt
}
