package offload

import (
	"encoding/binary"

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
	switch pkt[0] >> 4 {
	case 4:
		h := ipv4(pkt)
		hl := h.headerLen()
		if hl < ipv4MinHeader || hl > len(pkt) {
			return f, false
		}
		f.Src, f.Dst, f.Proto = h.src(), h.dst(), h.protocol()
		if binary.BigEndian.Uint16(pkt[6:])&0x1fff != 0 {
			return f, true // later fragment: no ports
		}
		l4 = hl
	case 6:
		if len(pkt) < ipv6Header {
			return f, false
		}
		h := ipv6(pkt)
		f.Src, f.Dst = h.src(), h.dst()
		off, next := ipv6Header, h.nextHeader()
		for next == protoHopByHop || next == protoRouting || next == protoDstOpts || next == protoFragment {
			if off+8 > len(pkt) {
				return f, false
			}
			if next == protoFragment {
				if binary.BigEndian.Uint16(pkt[off+2:])&0xfff8 != 0 {
					f.Proto = pkt[off]
					return f, true // later fragment: no ports
				}
				next, off = pkt[off], off+8
				continue
			}
			next, off = pkt[off], off+int(pkt[off+1])*8+8
		}
		f.Proto, l4 = next, off
	default:
		return f, false
	}
	switch f.Proto {
	case protoTCP, protoUDP, protoSCTP, protoUDPLite:
		if l4+4 <= len(pkt) {
			f.SrcPort = binary.BigEndian.Uint16(pkt[l4:])
			f.DstPort = binary.BigEndian.Uint16(pkt[l4+2:])
		}
	}
	return f, true
}
