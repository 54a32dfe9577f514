package offload

import (
	"encoding/binary"

	"vnic/header"
)

// Shorthands for the header sizes and protocol numbers the transforms use.
const (
	ipv4MinHeader = header.IPv4MinSize
	ipv6Header    = header.IPv6Size
	udpHeader     = header.UDPSize
	espHeader     = header.ESPSize
	espTrailer    = header.ESPTrailerSize
)

// setTransportChecksum recomputes the TCP or UDP checksum of seg under
// the addresses of the IP header ip (RFC 3948 §3.1.2 step 4, for NAT-T
// transport mode: the sender computed it with addresses a NAT has since
// rewritten). A zero UDP checksum stays zero (over IPv4 it means none;
// over IPv6 the stack drops it, as the kernel's own NAT-T would); a
// segment too short to hold its checksum, or a UDP length that does not
// fit, is left alone.
func setTransportChecksum(ip []byte, proto uint8, seg []byte) {
	off := 6 // UDP
	if proto == header.ProtoTCP {
		off = 16
	}
	if len(seg) < off+2 {
		return
	}
	if proto == header.ProtoUDP {
		// The datagram ends where its length says: TFC padding may follow.
		u := header.UDP(seg)
		n := u.Length()
		if n < udpHeader || n > len(seg) || u.Checksum() == 0 {
			return
		}
		seg = seg[:n]
	}
	binary.BigEndian.PutUint16(seg[off:], 0)
	binary.BigEndian.PutUint16(seg[off:], header.TransportChecksum(ip, proto, seg))
}

// encapTOS returns the outer DSCP/ECN byte for an inner one, as Linux does
// (RFC 4301 §5.1.2.1 and RFC 6040 compatibility mode): DSCP copied, ECN
// copied except that CE becomes ECT(0).
func encapTOS(inner uint8) uint8 {
	if inner&header.ECNMask == header.ECNCE {
		return inner&^header.ECNMask | header.ECNECT0
	}
	return inner
}

// propagateCE copies a Congestion Experienced mark from the outer header
// to an ECN-capable inner packet (RFC 6040 §4.2).
func propagateCE(inner []byte, outerTOS uint8) {
	if outerTOS&header.ECNMask != header.ECNCE {
		return
	}
	if header.Version(inner) == 4 {
		h := header.IPv4(inner)
		if ecn := h.TOS() & header.ECNMask; ecn != 0 && ecn != header.ECNCE {
			h.SetTOS(h.TOS() | header.ECNCE)
			h.SetChecksum()
		}
		return
	}
	h := header.IPv6(inner)
	if h.TrafficClass()&header.ECNMask != 0 {
		h.SetTrafficClass(h.TrafficClass() | header.ECNCE)
	}
}
