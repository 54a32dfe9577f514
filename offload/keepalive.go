package offload

import (
	"vnic/sadb"
)

// keepalivePacket writes into buf the NAT keepalive of the SA c: one 0xFF
// byte in UDP from the SA's source port to its destination's, in an outer
// IPv4 or IPv6 header, and returns it.
func KeepalivePacket(buf []byte, c *sadb.Config) []byte {
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

// KeepaliveMaxLen is the length of the largest NAT keepalive packet
// (IPv6): the buffer KeepalivePacket needs.
const KeepaliveMaxLen = ipv6Header + udpHeader + 1
