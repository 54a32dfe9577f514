package header

import "encoding/binary"

// Sum adds b to the ones' complement sum acc (RFC 1071), unfolded.
func Sum(b []byte, acc uint64) uint64 {
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

// Fold folds a sum to 16 bits.
func Fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = (acc >> 16) + (acc & 0xffff)
	}
	return uint16(acc)
}

// TransportChecksum returns the TCP or UDP checksum of seg (its header,
// with a zero checksum field, and payload) under the pseudo-header of the
// IPv4 or IPv6 header ip (RFC 793, RFC 768, RFC 8200 §8.1). A UDP checksum
// that comes to 0 is sent as 0xffff: 0 means none.
func TransportChecksum(ip []byte, proto uint8, seg []byte) uint16 {
	var acc uint64
	if Version(ip) == 4 {
		acc = Sum(ip[12:20], 0)
	} else {
		acc = Sum(ip[8:40], 0)
	}
	acc += uint64(len(seg)) + uint64(proto)
	c := ^Fold(Sum(seg, acc))
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	return c
}
