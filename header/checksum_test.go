package header

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"vnic/internal/packettest"
)

func TestSumFold(t *testing.T) {
	var inputs [][]byte
	for n := range 40 {
		inputs = append(inputs, pattern(n, byte(n)), bytes.Repeat([]byte{0xff}, n), make([]byte, n))
	}
	inputs = append(inputs, pattern(1400, 1), pattern(1401, 2), bytes.Repeat([]byte{0xff}, 65535),
		bytes.Repeat([]byte{0xff}, 65536))
	for _, b := range inputs {
		for _, acc := range []uint32{0, 1, 0xffff, 0x12345678} {
			want := packettest.Checksum(b, acc)
			if got := ^Fold(Sum(b, uint64(acc))); got != want {
				t.Errorf("len %d, first byte %#x, acc %#x: ^Fold(Sum) = %#04x, want %#04x",
					len(b), append(b, 0)[0], acc, got, want)
			}
		}
	}
}

func TestSumChained(t *testing.T) {
	// Sums of even-length pieces chain: Sum(b, Sum(a, 0)) is Sum(a||b).
	b := pattern(301, 5)
	for cut := 0; cut <= len(b); cut += 2 {
		if got, want := Fold(Sum(b[cut:], Sum(b[:cut], 0))), Fold(Sum(b, 0)); got != want {
			t.Errorf("cut at %d: %#x, want %#x", cut, got, want)
		}
	}
}

func TestFold(t *testing.T) {
	for _, tt := range []struct {
		in   uint64
		want uint16
	}{
		{0, 0},
		{0xffff, 0xffff},
		{0x10000, 1},
		{0x1fffe, 0xffff},
		{0xffffffff, 0xffff},
		{0x12345678, 0x68ac},
		{0xffffffffffffffff, 0xffff},
		{0x0001000000000000, 1},
	} {
		if got := Fold(tt.in); got != tt.want {
			t.Errorf("Fold(%#x) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

// ipHeaderFor returns a bare IPv4 or IPv6 header (the fields the
// pseudo-header reads) from the packettest peers A to B.
func ipHeaderFor(v6 bool) []byte {
	if v6 {
		return ipv6Pkt(ProtoNoNext, nil, nil)
	}
	return ipv4Pkt(nil, ProtoNoNext, 0, nil)
}

// checksumAt is where the checksum field of a TCP or UDP header is.
func checksumAt(proto uint8) int {
	if proto == ProtoTCP {
		return 16
	}
	return 6
}

// forceZeroSum adjusts the word at seg[at:] so that seg sums, with the
// pseudo-header, to 0xffff: its checksum comes to 0.
func forceZeroSum(ip []byte, proto uint8, seg []byte, at int) {
	binary.BigEndian.PutUint16(seg[at:], 0)
	c := packettest.Checksum(seg, packettest.PseudoHeader(ip, proto, len(seg)))
	binary.BigEndian.PutUint16(seg[at:], c)
}

func TestTransportChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{ProtoTCP, ProtoUDP} {
			hdr := 8
			if proto == ProtoTCP {
				hdr = 20
			}
			for _, n := range []int{0, 1, 2, 7, 100, 1399, 1400, 9000} {
				name := fmt.Sprintf("v6=%v/proto=%d/payload=%d", v6, proto, n)
				t.Run(name, func(t *testing.T) {
					ip := ipHeaderFor(v6)
					seg := pattern(hdr+n, byte(n))
					at := checksumAt(proto)
					binary.BigEndian.PutUint16(seg[at:], 0)
					check(t, ip, proto, seg, at, false)
				})
			}
			t.Run(fmt.Sprintf("v6=%v/proto=%d/zero", v6, proto), func(t *testing.T) {
				ip := ipHeaderFor(v6)
				seg := pattern(hdr+30, 3)
				at := checksumAt(proto)
				binary.BigEndian.PutUint16(seg[at:], 0)
				forceZeroSum(ip, proto, seg, hdr+10)
				check(t, ip, proto, seg, at, true)
			})
		}
	}
	// A jumbo segment over IPv6: the pseudo-header length is 32 bits.
	t.Run("v6 segment over 64KiB", func(t *testing.T) {
		ip := ipHeaderFor(true)
		seg := pattern(70001, 1)
		binary.BigEndian.PutUint16(seg[16:], 0)
		check(t, ip, ProtoTCP, seg, 16, false)
	})
}

// check compares TransportChecksum of seg (its checksum field at at, 0)
// with packettest's, and checks the result verifies once written in;
// zero says the sum is known to come to a 0 checksum.
func check(t *testing.T, ip []byte, proto uint8, seg []byte, at int, zero bool) {
	t.Helper()
	want := packettest.Checksum(seg, packettest.PseudoHeader(ip, proto, len(seg)))
	if zero && want != 0 {
		t.Fatalf("test setup: the checksum is %#x, not 0", want)
	}
	if want == 0 && proto == ProtoUDP {
		want = 0xffff // RFC 768: a computed 0 is sent as all ones
	}
	got := TransportChecksum(ip, proto, seg)
	if got != want {
		t.Fatalf("TransportChecksum = %#04x, want %#04x", got, want)
	}
	if zero && proto == ProtoUDP && got != 0xffff {
		t.Errorf("UDP checksum of 0 sent as %#x, want 0xffff", got)
	}
	if zero && proto == ProtoTCP && got != 0 {
		t.Errorf("TCP checksum of 0 sent as %#x, want 0", got)
	}
	binary.BigEndian.PutUint16(seg[at:], got)
	if c := packettest.Checksum(seg, packettest.PseudoHeader(ip, proto, len(seg))); c != 0 {
		t.Errorf("segment with the checksum written in does not verify: %#x", c)
	}
}

func TestTransportChecksumUsesOnlyAddresses(t *testing.T) {
	// Fields of the IP header other than the addresses are not in the
	// pseudo-header: TTL, TOS, ID, lengths, options.
	seg := udpSeg(1, 2, pattern(50, 0))
	for _, v6 := range []bool{false, true} {
		ip := ipHeaderFor(v6)
		want := TransportChecksum(ip, ProtoUDP, seg)
		other := bytes.Clone(ip)
		if v6 {
			other[1], other[3], other[4], other[6], other[7] = 0xff, 0xff, 0xff, 0xff, 0xff
		} else {
			other[1], other[2], other[4], other[8], other[10] = 0xff, 0xff, 0xff, 0xff, 0xff
		}
		if got := TransportChecksum(other, ProtoUDP, seg); got != want {
			t.Errorf("v6=%v: checksum changed with non-address fields: %#x, want %#x", v6, got, want)
		}
	}
}
