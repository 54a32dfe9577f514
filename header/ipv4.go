package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 is a view of an IPv4 header (RFC 791) at the start of the slice.
type IPv4 []byte

// IPv4 flags, in the flags and fragment offset field.
const (
	ipv4DF         = 0x4000
	ipv4MF         = 0x2000
	ipv4OffsetMask = 0x1fff
)

// Version returns the version nibble that every IP header starts with.
func Version(pkt []byte) uint8 { return pkt[0] >> 4 }

// HeaderLen returns the header length, options included.
func (h IPv4) HeaderLen() int { return int(h[0]&0x0f) * 4 }

// TotalLen returns the total length field: header and payload.
func (h IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(h[2:])) }

// TOS returns the type of service byte (DSCP and ECN).
func (h IPv4) TOS() uint8 { return h[1] }

// ID returns the identification.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[4:]) }

// DontFragment reports whether the DF flag is set.
func (h IPv4) DontFragment() bool { return binary.BigEndian.Uint16(h[6:])&ipv4DF != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (h IPv4) FragmentOffset() int { return int(binary.BigEndian.Uint16(h[6:])&ipv4OffsetMask) * 8 }

// Fragmented reports whether the packet is a fragment: More Fragments
// set or a non-zero offset.
func (h IPv4) Fragmented() bool { return binary.BigEndian.Uint16(h[6:])&(ipv4MF|ipv4OffsetMask) != 0 }

// TTL returns the time to live.
func (h IPv4) TTL() uint8 { return h[8] }

// Protocol returns the protocol of the payload.
func (h IPv4) Protocol() uint8 { return h[9] }

// Src returns the source address.
func (h IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(h[12:16])) }

// Dst returns the destination address.
func (h IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(h[16:20])) }

// Valid reports whether the header is well formed in a packet of n bytes
// (the slice's length): version 4, a header length of at least 20 bytes
// that the total length holds, and a total length that n holds.
func (h IPv4) Valid() bool {
	if len(h) < IPv4MinSize || Version(h) != 4 {
		return false
	}
	hl, tl := h.HeaderLen(), h.TotalLen()
	return hl >= IPv4MinSize && tl >= hl && tl <= len(h)
}

// SetTOS sets the type of service byte.
func (h IPv4) SetTOS(v uint8) { h[1] = v }

// SetTotalLen sets the total length.
func (h IPv4) SetTotalLen(n int) { binary.BigEndian.PutUint16(h[2:], uint16(n)) }

// SetProtocol sets the protocol of the payload.
func (h IPv4) SetProtocol(p uint8) { h[9] = p }

// SetChecksum recomputes the header checksum over the header and its
// options.
func (h IPv4) SetChecksum() {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^Fold(Sum(h[:h.HeaderLen()], 0)))
}

// IPv4Fields are the fields Encode writes.
type IPv4Fields struct {
	// HeaderLen is the header's length, 20 plus the options that are
	// already in place after the fixed part.
	HeaderLen int
	TOS       uint8
	TotalLen  int
	ID        uint16
	DF        bool
	TTL       uint8
	Protocol  uint8
	Src, Dst  netip.Addr
}

// Encode writes an unfragmented IPv4 header with f's fields and its
// checksum. An address that is not IPv4 is written as 0.0.0.0.
func (h IPv4) Encode(f *IPv4Fields) {
	h[0] = 0x40 | uint8(f.HeaderLen/4)
	h[1] = f.TOS
	h.SetTotalLen(f.TotalLen)
	binary.BigEndian.PutUint16(h[4:], f.ID)
	var flags uint16
	if f.DF {
		flags = ipv4DF
	}
	binary.BigEndian.PutUint16(h[6:], flags)
	h[8] = f.TTL
	h[9] = f.Protocol
	src, dst := as4(f.Src), as4(f.Dst)
	copy(h[12:16], src[:])
	copy(h[16:20], dst[:])
	h.SetChecksum()
}

// as4 returns an IPv4 (or IPv4-mapped) address's four bytes, and zeros
// for anything else.
func as4(a netip.Addr) [4]byte {
	if a.Is4() || a.Is4In6() {
		return a.Unmap().As4()
	}
	return [4]byte{}
}
