// Package packettest builds the packets and SAs that the data-path tests
// of several packages share: addresses, an AES-GCM key, and UDP packets
// with valid checksums computed here independently of the code under test.
package packettest

import (
	"encoding/binary"
	"net/netip"

	"vnic/algo"
	"vnic/ndis"
)

// Underlay (V4A, V4B, V6A, V6B) and inner (In4A ... In6B) addresses of two
// peers A and B.
var (
	V4A, V4B = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	V6A, V6B = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	In4A     = netip.MustParseAddr("10.1.0.1")
	In4B     = netip.MustParseAddr("10.2.0.1")
	In6A     = netip.MustParseAddr("fd00:1::1")
	In6B     = netip.MustParseAddr("fd00:2::1")
)

// GCM128 is an AES-GCM-128 algorithm with a fixed 16-byte key and 4-byte
// salt.
func GCM128() algo.Spec {
	k := make([]byte, 20)
	for i := range k {
		k[i] = byte(i + 1)
	}
	return algo.Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: k}
}

// Specs is one algorithm of each kind, by a short name, with fixed keys:
// AES-GCM with each ICV length, GMAC, ChaCha20-Poly1305, AES-CBC with
// HMAC and NULL with HMAC.
func Specs() map[string]algo.Spec {
	k := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(3*i + n)
		}
		return b
	}
	return map[string]algo.Spec{
		"gcm128":        {Encryption: ndis.EncryptionAESGCM128, EncryptionKey: k(20)},
		"gcm192-icv12":  {Encryption: ndis.EncryptionAESGCM192, EncryptionKey: k(28), ICVLen: 12},
		"gcm256-icv8":   {Encryption: ndis.EncryptionAESGCM256, EncryptionKey: k(36), ICVLen: 8},
		"gmac128":       {Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationAESGMAC128, AuthenticationKey: k(20)},
		"chacha":        {Encryption: ndis.EncryptionChaCha20Poly1305, EncryptionKey: k(36)},
		"cbc128-sha1":   {Encryption: ndis.EncryptionAESCBC128, EncryptionKey: k(16), Authentication: ndis.AuthenticationSHA1, AuthenticationKey: k(20)},
		"cbc256-sha512": {Encryption: ndis.EncryptionAESCBC256, EncryptionKey: k(32), Authentication: ndis.AuthenticationSHA512, AuthenticationKey: k(64)},
		"null-sha256":   {Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationSHA256, AuthenticationKey: k(32)},
	}
}

// Checksum is the Internet checksum (RFC 1071) of b, starting from the
// partial sum acc; a packet whose checksummed bytes are all included
// verifies when it is 0.
func Checksum(b []byte, acc uint32) uint16 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// SetIPv4Checksum sets the header checksum of the IPv4 packet p.
func SetIPv4Checksum(p []byte) {
	hl := int(p[0]&0x0f) * 4
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], Checksum(p[:hl], 0))
}

// PseudoHeader is the partial sum of the IPv4 or IPv6 pseudo-header of an
// upper-layer segment of n bytes and protocol proto in the IP packet pkt.
func PseudoHeader(pkt []byte, proto uint8, n int) uint32 {
	var addrs []byte
	if pkt[0]>>4 == 4 {
		addrs = pkt[12:20]
	} else {
		addrs = pkt[8:40]
	}
	acc := uint32(proto) + uint32(n)
	for i := 0; i < len(addrs); i += 2 {
		acc += uint32(addrs[i])<<8 | uint32(addrs[i+1])
	}
	return acc
}

// UDPPacket builds an IPv4 or IPv6 UDP packet with n payload bytes and
// valid checksums at buf[off:], and returns its end.
func UDPPacket(buf []byte, off int, src, dst netip.Addr, sport, dport uint16, n int) int {
	const protoUDP = 17
	p := buf[off:]
	var l4 int
	if src.Is4() {
		l4 = 20
		total := l4 + 8 + n
		p[0], p[1] = 0x45, 0
		binary.BigEndian.PutUint16(p[2:], uint16(total))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		binary.BigEndian.PutUint16(p[6:], 0x4000)
		p[8], p[9] = 64, protoUDP
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		SetIPv4Checksum(p)
	} else {
		l4 = 40
		binary.BigEndian.PutUint32(p[0:], 6<<28)
		binary.BigEndian.PutUint16(p[4:], uint16(8+n))
		p[6], p[7] = protoUDP, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	}
	u := p[l4 : l4+8+n]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+n))
	binary.BigEndian.PutUint16(u[6:], 0)
	for i := range n {
		u[8+i] = byte(i*13 + 7)
	}
	c := Checksum(u, PseudoHeader(p, protoUDP, len(u)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return off + l4 + 8 + n
}
