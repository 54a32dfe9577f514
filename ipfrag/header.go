package ipfrag

import "encoding/binary"

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

// IsFragment reports whether pkt is an IPv4 fragment: an IPv4 packet with
// More Fragments set or a non-zero fragment offset. Those are what a
// Reassembler takes.
func IsFragment(pkt []byte) bool {
	return len(pkt) >= ipv4MinHeader && pkt[0]>>4 == 4 &&
		be.Uint16(pkt[6:])&(flagMF|offsetMask) != 0
}
