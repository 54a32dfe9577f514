package offload

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers used on the data path.
const (
	protoHopByHop = 0
	protoIPv4     = 4 // IP-in-IP: the ESP next header of tunnelled IPv4
	protoTCP      = 6
	protoUDP      = 17
	protoIPv6     = 41 // the ESP next header of tunnelled IPv6
	protoRouting  = 43
	protoFragment = 44
	protoESP      = 50
	protoNoNext   = 59 // dummy packet (RFC 4303 §2.6)
	protoDstOpts  = 60
	protoSCTP     = 132
	protoUDPLite  = 136
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	udpHeader     = 8
	espHeader     = 8 // SPI and sequence number
	espTrailer    = 2 // pad length and next header
	defaultTTL    = 64
)

// ipv4 is a view of an IPv4 header at the start of the slice.
type ipv4 []byte

func (h ipv4) headerLen() int     { return int(h[0]&0x0f) * 4 }
func (h ipv4) totalLen() int      { return int(binary.BigEndian.Uint16(h[2:])) }
func (h ipv4) tos() uint8         { return h[1] }
func (h ipv4) dontFragment() bool { return h[6]&0x40 != 0 }
func (h ipv4) fragment() bool     { return binary.BigEndian.Uint16(h[6:])&0x3fff != 0 }
func (h ipv4) protocol() uint8    { return h[9] }
func (h ipv4) src() netip.Addr    { return netip.AddrFrom4([4]byte(h[12:16])) }
func (h ipv4) dst() netip.Addr    { return netip.AddrFrom4([4]byte(h[16:20])) }

func (h ipv4) setTotalLen(n int)  { binary.BigEndian.PutUint16(h[2:], uint16(n)) }
func (h ipv4) setProtocol(p byte) { h[9] = p }

// setChecksum recomputes the header checksum.
func (h ipv4) setChecksum() {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sum(h[:h.headerLen()], 0)))
}

// ipv6 is a view of an IPv6 fixed header at the start of the slice.
type ipv6 []byte

func (h ipv6) payloadLen() int     { return int(binary.BigEndian.Uint16(h[4:])) }
func (h ipv6) nextHeader() uint8   { return h[6] }
func (h ipv6) trafficClass() uint8 { return uint8(binary.BigEndian.Uint16(h[0:]) >> 4) }
func (h ipv6) flowLabel() uint32   { return binary.BigEndian.Uint32(h[0:]) & 0xfffff }
func (h ipv6) src() netip.Addr     { return netip.AddrFrom16([16]byte(h[8:24])) }
func (h ipv6) dst() netip.Addr     { return netip.AddrFrom16([16]byte(h[24:40])) }

func (h ipv6) setPayloadLen(n int) { binary.BigEndian.PutUint16(h[4:], uint16(n)) }

// sum adds b to the ones' complement sum acc (RFC 1071), unfolded.
func sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 32
		acc += v & 0xffffffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold folds a sum to 16 bits.
func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = (acc >> 16) + (acc & 0xffff)
	}
	return uint16(acc)
}

// l4Checksum returns the TCP or UDP checksum of seg (its header, with a
// zero checksum field, and payload) under the pseudo-header of the IPv4 or
// IPv6 header hdr.
func l4Checksum(hdr []byte, proto uint8, seg []byte) uint16 {
	var acc uint64
	if hdr[0]>>4 == 4 {
		acc = sum(hdr[12:20], 0)
	} else {
		acc = sum(hdr[8:40], 0)
	}
	acc += uint64(len(seg)) + uint64(proto)
	c := ^fold(sum(seg, acc))
	if c == 0 && proto == protoUDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	return c
}

// udp6Checksum returns the UDP checksum of seg (header with a zero checksum
// field, and payload) between the IPv6 addresses in hdr.
func udp6Checksum(hdr ipv6, seg []byte) uint16 { return l4Checksum(hdr, protoUDP, seg) }

// setUDP6Checksum fills in the checksum field of seg, a UDP header and its
// payload, between the IPv6 addresses in hdr.
func setUDP6Checksum(hdr ipv6, seg []byte) {
	binary.BigEndian.PutUint16(seg[6:], 0)
	binary.BigEndian.PutUint16(seg[6:], udp6Checksum(hdr, seg))
}

// setTransportChecksum recomputes the TCP or UDP checksum of seg under
// the addresses of hdr (RFC 3948 §3.1.2 step 4, for NAT-T transport mode:
// the sender computed it with addresses a NAT has since rewritten). A
// zero UDP checksum stays zero (over IPv4 it means none; over IPv6 the
// stack drops it, as the kernel's own NAT-T would); a segment too short
// to hold its checksum, or a UDP length that does not fit, is left alone.
func setTransportChecksum(hdr []byte, proto uint8, seg []byte) {
	off := 6 // UDP
	if proto == protoTCP {
		off = 16
	}
	if len(seg) < off+2 {
		return
	}
	if proto == protoUDP {
		// The datagram ends where its length says: TFC padding may follow.
		n := int(binary.BigEndian.Uint16(seg[4:]))
		if n < udpHeader || n > len(seg) || binary.BigEndian.Uint16(seg[6:]) == 0 {
			return
		}
		seg = seg[:n]
	}
	binary.BigEndian.PutUint16(seg[off:], 0)
	binary.BigEndian.PutUint16(seg[off:], l4Checksum(hdr, proto, seg))
}

// ECN codepoints (RFC 3168).
const (
	ecnMask = 0x03
	ecnECT0 = 0x02
	ecnCE   = 0x03
)

// encapTOS returns the outer DSCP/ECN byte for an inner one, as Linux does
// (RFC 4301 §5.1.2.1 and RFC 6040 compatibility mode): DSCP copied, ECN
// copied except that CE becomes ECT(0).
func encapTOS(inner uint8) uint8 {
	if inner&ecnMask == ecnCE {
		return inner&^ecnMask | ecnECT0
	}
	return inner
}
