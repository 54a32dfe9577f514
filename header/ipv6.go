package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 is a view of an IPv6 fixed header (RFC 8200) at the start of the
// slice.
type IPv6 []byte

// PayloadLen returns the payload length: what follows the fixed header.
func (h IPv6) PayloadLen() int { return int(binary.BigEndian.Uint16(h[4:])) }

// NextHeader returns the type of the header after the fixed header.
func (h IPv6) NextHeader() uint8 { return h[6] }

// TrafficClass returns the traffic class (DSCP and ECN).
func (h IPv6) TrafficClass() uint8 { return uint8(binary.BigEndian.Uint16(h[0:]) >> 4) }

// FlowLabel returns the flow label.
func (h IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(h[0:]) & 0xfffff }

// HopLimit returns the hop limit.
func (h IPv6) HopLimit() uint8 { return h[7] }

// Src returns the source address.
func (h IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(h[8:24])) }

// Dst returns the destination address.
func (h IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(h[24:40])) }

// Valid reports whether the slice holds an IPv6 fixed header and the
// payload its length gives.
func (h IPv6) Valid() bool {
	return len(h) >= IPv6Size && Version(h) == 6 && IPv6Size+h.PayloadLen() <= len(h)
}

// SetPayloadLen sets the payload length.
func (h IPv6) SetPayloadLen(n int) { binary.BigEndian.PutUint16(h[4:], uint16(n)) }

// SetNextHeader sets the type of the header after the fixed header.
func (h IPv6) SetNextHeader(p uint8) { h[6] = p }

// SetTrafficClass sets the traffic class.
func (h IPv6) SetTrafficClass(tc uint8) {
	v := binary.BigEndian.Uint32(h[0:])
	binary.BigEndian.PutUint32(h[0:], v&^(0xff<<20)|uint32(tc)<<20)
}

// IPv6Fields are the fields Encode writes.
type IPv6Fields struct {
	TrafficClass uint8
	FlowLabel    uint32
	PayloadLen   int
	NextHeader   uint8
	HopLimit     uint8
	Src, Dst     netip.Addr
}

// Encode writes an IPv6 fixed header with f's fields. An invalid address
// is written as ::.
func (h IPv6) Encode(f *IPv6Fields) {
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(f.TrafficClass)<<20|f.FlowLabel&0xfffff)
	h.SetPayloadLen(f.PayloadLen)
	h[6] = f.NextHeader
	h[7] = f.HopLimit
	src, dst := as16(f.Src), as16(f.Dst)
	copy(h[8:24], src[:])
	copy(h[24:40], dst[:])
}

func as16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16()
}

// IsIPv6Extension reports whether an IPv6 next header value names an
// extension header that IPv6Chain.Step can step over: Hop-by-Hop Options,
// Routing, Fragment, Destination Options or AH.
func IsIPv6Extension(next uint8) bool {
	switch next {
	case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDstOpts, ProtoAH:
		return true
	}
	return false
}

// IPv6Chain walks the header chain of an IPv6 packet, one extension
// header at a time: the one walker of the data path. Next is the type of
// the header at Off, and NextAt the offset of the Next Header field that
// names it (6, in the fixed header, or in the extension header before).
type IPv6Chain struct {
	pkt    []byte
	Next   uint8
	Off    int
	NextAt int
}

// Chain starts a walk of the header chain at the first header after the
// fixed header. The walk stays within the slice: pass the packet cut to
// its payload length.
func (h IPv6) Chain() IPv6Chain {
	return IPv6Chain{pkt: h, Next: h.NextHeader(), Off: IPv6Size, NextAt: 6}
}

// Step moves past the extension header at Off (IsIPv6Extension(Next)
// must hold). It reports false, and stays where it is, when the packet
// does not hold that header whole. A Fragment header is 8 bytes; an AH's
// length is in 4-byte units (RFC 4302), every other's in 8-byte units.
func (c *IPv6Chain) Step() bool {
	if c.Off+8 > len(c.pkt) {
		return false
	}
	var n int
	switch c.Next {
	case ProtoFragment:
		n = IPv6FragmentSize
	case ProtoAH:
		n = (int(c.pkt[c.Off+1]) + 2) * 4
	default:
		n = (int(c.pkt[c.Off+1]) + 1) * 8
	}
	if c.Off+n > len(c.pkt) {
		return false
	}
	c.Next, c.NextAt, c.Off = c.pkt[c.Off], c.Off, c.Off+n
	return true
}

// IPv6Fragment is a view of an IPv6 Fragment header.
type IPv6Fragment []byte

// Offset returns the fragment offset in bytes.
func (f IPv6Fragment) Offset() int { return int(binary.BigEndian.Uint16(f[2:]) & 0xfff8) }

// More reports whether the M (more fragments) flag is set.
func (f IPv6Fragment) More() bool { return f[3]&1 != 0 }
