package ipfrag

import (
	"encoding/binary"

	"vnic/header"
)

// IPv4 header layout (RFC 791).
const (
	ipv4MinHeader = 20
	ipv4MaxHeader = 60
	ipv4MaxLen    = 65535 // the largest total length

	flagReserved = 0x8000 // in the flags and fragment offset field
	flagDF       = 0x4000
	flagMF       = 0x2000
	offsetMask   = 0x1fff // the fragment offset, in units of 8 bytes

	optEnd    = 0    // End of Option List
	optNOP    = 1    // No Operation
	optCopied = 0x80 // the copied flag of an option type
)

// IPv6 header layout (RFC 8200).
const (
	ipv6Header     = 40
	ipv6FragHeader = 8
	ipv6MaxPayload = 65535 // the largest payload length but for jumbograms

	fragOffset6 = 0xfff8 // in a Fragment header's third and fourth bytes: the offset, in bytes
	fragM6      = 0x0001 // the M (more fragments) flag

	// ipv6MaxUnfrag is the longest unfragmentable part (the IPv6 header
	// and the extension headers before the Fragment header) of a fragment
	// that a Reassembler takes: 40 bytes and 256 of extension headers.
	ipv6MaxUnfrag = ipv6Header + 256

	nhHopByHop = 0
	nhTCP      = 6
	nhUDP      = 17
	nhRouting  = 43
	nhFragment = 44
	nhESP      = 50
	nhAH       = 51
	nhICMPv6   = 58
	nhDstOpts  = 60
)

var be = binary.BigEndian

// checksum returns the Internet checksum of the IPv4 header b (RFC
// 1071): the ones' complement of the ones' complement sum of its 16-bit
// words. b's length is a multiple of 4, as a header's is. Over a header
// whose checksum field is right, it is 0.
func checksum(b []byte) uint16 {
	var sum uint64
	for ; len(b) >= 4; b = b[4:] {
		sum += uint64(be.Uint32(b))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// setIPv4Checksum recomputes the header checksum of the IPv4 header h
// (exactly the header, options included).
func setIPv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	be.PutUint16(h[10:], checksum(h))
}

// ipv4Header checks that pkt starts with a well-formed IPv4 header whose
// total length is exactly len(pkt), and returns the header's length.
func ipv4Header(pkt []byte) (int, bool) {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return 0, false
	}
	hl := int(pkt[0]&0x0f) * 4
	if hl < ipv4MinHeader || hl > len(pkt) || int(be.Uint16(pkt[2:])) != len(pkt) {
		return 0, false
	}
	return hl, true
}

// maxHeader is the room for a header before a datagram's data in a
// Reassembler's buffers: the largest IPv4 header, or the longest IPv6
// unfragmentable part it takes, whichever is longer.
const maxHeader = max(ipv4MaxHeader, ipv6MaxUnfrag)

// IsFragment reports whether pkt is an IPv4 fragment, an IPv4 packet with
// More Fragments set or a non-zero fragment offset, or an IPv6 fragment:
// an IPv6 packet whose Hop-by-Hop Options, Destination Options and Routing
// headers, if any, lead to a Fragment header (within the packet and its
// payload length) with the M flag set or a non-zero offset. An IPv6
// atomic fragment, whose Fragment header has offset 0 and M clear (RFC
// 6946), is not one: it is a whole packet. Fragments are what a
// Reassembler takes; it may still find them malformed (see Add).
func IsFragment(pkt []byte) bool {
	if len(pkt) == 0 {
		return false
	}
	switch pkt[0] >> 4 {
	case 4:
		return len(pkt) >= ipv4MinHeader && be.Uint16(pkt[6:])&(flagMF|offsetMask) != 0
	case 6:
		if len(pkt) < ipv6Header {
			return false
		}
		pkt = pkt[:min(len(pkt), ipv6Header+int(be.Uint16(pkt[4:])))]
		c, ok := ipv6FragmentHeader(pkt)
		return ok && be.Uint16(pkt[c.Off+2:])&(fragOffset6|fragM6) != 0
	}
	return false
}

// ipv6FragmentHeader returns the walk of the IPv6 packet pkt's header
// chain (header.IPv6Chain, the one walker of the data path) stopped at its
// Fragment header, if a run of Hop-by-Hop Options, Destination Options and
// Routing headers after the IPv6 header, or none, leads to one that pkt
// holds whole; false otherwise.
func ipv6FragmentHeader(pkt []byte) (header.IPv6Chain, bool) {
	if len(pkt) < ipv6Header {
		return header.IPv6Chain{}, false
	}
	c := header.IPv6(pkt).Chain()
	for c.Next == nhHopByHop || c.Next == nhRouting || c.Next == nhDstOpts {
		if !c.Step() {
			return c, false
		}
	}
	return c, c.Next == nhFragment && c.Off+ipv6FragHeader <= len(pkt)
}

// chainEnd walks on from where c stands through Hop-by-Hop Options,
// Routing, Destination Options and AH headers to the upper-layer header,
// and returns where the chain ends: after the upper-layer header's fixed
// part (see upperHeader), which may be beyond the packet. It fails with
// ErrMalformed if an extension header is not whole in the packet,
// ErrFragmented at a Fragment header.
func chainEnd(c header.IPv6Chain) (int, error) {
	for {
		switch c.Next {
		case nhHopByHop, nhRouting, nhDstOpts, nhAH:
			if !c.Step() {
				return 0, ErrMalformed
			}
		case nhFragment:
			return 0, ErrFragmented
		default:
			return c.Off + upperHeader(c.Next), nil
		}
	}
}

// upperHeader returns the length of the fixed part of an upper-layer
// header that the first fragment must hold, as Linux checks it.
func upperHeader(proto byte) int {
	switch proto {
	case nhTCP:
		return 20
	case nhUDP, nhICMPv6, nhESP:
		return 8
	}
	return 0
}
