package header

import (
	"encoding/binary"
	"net/netip"

	"vnic/internal/packettest"
)

// The packets of these tests are built byte by byte here, and their
// checksums checked with packettest, independently of the code under test.

// v4Flags is an IPv4 flags and fragment offset field.
type v4Flags uint16

const (
	flagDF v4Flags = 0x4000
	flagMF v4Flags = 0x2000
)

// ipv4Pkt builds an IPv4 packet from 192.0.2.1 to 192.0.2.2 with the
// options opts, the protocol proto, the flags and offset field flags, the
// payload payload and a valid header checksum.
func ipv4Pkt(opts []byte, proto uint8, flags v4Flags, payload []byte) []byte {
	hl := 20 + len(opts)
	p := make([]byte, hl+len(payload))
	p[0] = 0x40 | byte(hl/4)
	p[1] = 0x2e
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], 0x0102)
	binary.BigEndian.PutUint16(p[6:], uint16(flags))
	p[8], p[9] = 33, proto
	s, d := packettest.V4A.As4(), packettest.V4B.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	copy(p[20:], opts)
	copy(p[hl:], payload)
	packettest.SetIPv4Checksum(p)
	return p
}

// ipv6Pkt builds an IPv6 packet from 2001:db8::1 to 2001:db8::2 whose
// first header after the fixed one is next, followed by the bytes of ext
// (extension headers) and payload; the payload length covers both.
func ipv6Pkt(next uint8, ext, payload []byte) []byte {
	p := make([]byte, 40+len(ext)+len(payload))
	binary.BigEndian.PutUint32(p[0:], 6<<28|0xa5<<20|0x12345)
	binary.BigEndian.PutUint16(p[4:], uint16(len(ext)+len(payload)))
	p[6], p[7] = next, 44
	s, d := packettest.V6A.As16(), packettest.V6B.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	copy(p[40:], ext)
	copy(p[40+len(ext):], payload)
	return p
}

// ext describes an IPv6 extension header: its type and its size in bytes.
type ext struct {
	proto uint8
	size  int
}

// extChain builds the extension headers hdrs, each naming the next one,
// the last naming last, with each length byte in its type's units: AH in
// 4-byte units less 2, the others in 8-byte units less 1. A Fragment
// header's reserved second byte is set to 0xff, which must not count as
// a length. The option bytes are PadN-like filler.
func extChain(last uint8, hdrs ...ext) []byte {
	var b []byte
	for i, h := range hdrs {
		e := make([]byte, h.size)
		for j := 2; j < len(e); j++ {
			e[j] = byte(0x30 + j)
		}
		if i+1 < len(hdrs) {
			e[0] = hdrs[i+1].proto
		} else {
			e[0] = last
		}
		switch h.proto {
		case ProtoFragment:
			e[1] = 0xff
		case ProtoAH:
			e[1] = byte(h.size/4 - 2)
		default:
			e[1] = byte(h.size/8 - 1)
		}
		b = append(b, e...)
	}
	return b
}

// udpSeg builds a UDP header from sport to dport, with the right length
// and a zero checksum, followed by payload.
func udpSeg(sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	return u
}

// pattern returns n bytes of a recognizable, non-constant filler.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// espPayload returns n bytes that start with an ESP header (SPI 0x1001,
// sequence number 7) followed by filler.
func espPayload(n int) []byte {
	b := pattern(n, 0x11)
	if n >= 8 {
		binary.BigEndian.PutUint32(b[0:], 0x1001)
		binary.BigEndian.PutUint32(b[4:], 7)
	}
	return b
}

// mapped returns a's IPv4-mapped IPv6 form.
func mapped(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }
