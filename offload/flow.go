package offload

import (
	"encoding/binary"
	"net/netip"

	"vnic/header"
	"vnic/sadb"
)

// FlowOf returns what SA selection looks at in a plaintext IP packet:
// addresses, protocol and, for TCP, UDP, SCTP and UDP-Lite, the ports
// (zero when the packet is a non-first fragment, RFC 4301 §4.4.1.3). It
// reports false for a packet too short to say.
func FlowOf(pkt []byte) (sadb.Flow, bool) {
	var f sadb.Flow
	if len(pkt) < ipv4MinHeader {
		return f, false
	}
	var l4 int
	switch header.Version(pkt) {
	case 4:
		h := header.IPv4(pkt)
		hl := h.HeaderLen()
		if hl < ipv4MinHeader || hl > len(pkt) {
			return f, false
		}
		f.Src, f.Dst, f.Proto = h.Src(), h.Dst(), h.Protocol()
		if h.FragmentOffset() != 0 {
			return f, true // later fragment: no ports
		}
		l4 = hl
	case 6:
		if len(pkt) < ipv6Header {
			return f, false
		}
		h := header.IPv6(pkt)
		f.Src, f.Dst = h.Src(), h.Dst()
		c := h.Chain()
		for c.Next == header.ProtoHopByHop || c.Next == header.ProtoRouting ||
			c.Next == header.ProtoDstOpts || c.Next == header.ProtoFragment {
			if c.Next == header.ProtoFragment && c.Off+header.IPv6FragmentSize <= len(pkt) &&
				header.IPv6Fragment(pkt[c.Off:]).Offset() != 0 {
				f.Proto = pkt[c.Off]
				return f, true // later fragment: no ports
			}
			if !c.Step() {
				return f, false
			}
		}
		f.Proto, l4 = c.Next, c.Off
	default:
		return f, false
	}
	switch f.Proto {
	case header.ProtoTCP, header.ProtoUDP, header.ProtoSCTP, header.ProtoUDPLite:
		if l4+4 <= len(pkt) {
			f.SrcPort = binary.BigEndian.Uint16(pkt[l4:])
			f.DstPort = binary.BigEndian.Uint16(pkt[l4+2:])
		}
	}
	return f, true
}

// LinkScoped reports whether a packet to dst never leaves its link: IPv6
// link-local unicast and link-scoped multicast (router solicitations,
// MLD reports, neighbour discovery), IPv4 link-local unicast and the
// local network control block 224.0.0.0/24 (RFC 4291 §2.5.6 and §2.7,
// RFC 3927, RFC 5771). vnic0's own stack sends such packets; with no SA
// for them they are counted apart from XfrmOutNoStates, which then counts
// only traffic that wanted a tunnel.
func LinkScoped(dst netip.Addr) bool {
	if dst.Is4() {
		return dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast()
	}
	return dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() || dst.IsInterfaceLocalMulticast()
}
