package header

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"vnic/internal/packettest"
)

func TestVersion(t *testing.T) {
	for _, tt := range []struct {
		b    byte
		want uint8
	}{{0x45, 4}, {0x4f, 4}, {0x60, 6}, {0x6f, 6}, {0x00, 0}, {0xf5, 15}} {
		if got := Version([]byte{tt.b}); got != tt.want {
			t.Errorf("Version(%#x) = %d, want %d", tt.b, got, tt.want)
		}
	}
}

func TestIPv4Getters(t *testing.T) {
	opts := []byte{1, 1, 1, 0}
	p := ipv4Pkt(opts, ProtoESP, flagDF, pattern(10, 0))
	h := IPv4(p)
	if got := h.HeaderLen(); got != 24 {
		t.Errorf("HeaderLen = %d, want 24", got)
	}
	if got := h.TotalLen(); got != 34 {
		t.Errorf("TotalLen = %d, want 34", got)
	}
	if got := h.TOS(); got != 0x2e {
		t.Errorf("TOS = %#x, want 0x2e", got)
	}
	if got := h.ID(); got != 0x0102 {
		t.Errorf("ID = %#x, want 0x0102", got)
	}
	if !h.DontFragment() || h.Fragmented() || h.FragmentOffset() != 0 {
		t.Errorf("DF, Fragmented, FragmentOffset = %v, %v, %d, want true, false, 0",
			h.DontFragment(), h.Fragmented(), h.FragmentOffset())
	}
	if got := h.TTL(); got != 33 {
		t.Errorf("TTL = %d, want 33", got)
	}
	if got := h.Protocol(); got != ProtoESP {
		t.Errorf("Protocol = %d, want %d", got, ProtoESP)
	}
	if got := h.Src(); got != packettest.V4A {
		t.Errorf("Src = %v, want %v", got, packettest.V4A)
	}
	if got := h.Dst(); got != packettest.V4B {
		t.Errorf("Dst = %v, want %v", got, packettest.V4B)
	}
	if !h.Valid() {
		t.Errorf("Valid = false for a well-formed header")
	}
}

func TestIPv4Fragment(t *testing.T) {
	for _, tt := range []struct {
		name       string
		field      v4Flags
		fragmented bool
		offset     int
		df         bool
	}{
		{"none", 0, false, 0, false},
		{"DF", flagDF, false, 0, true},
		{"reserved bit", 0x8000, false, 0, false},
		{"MF", flagMF, true, 0, false},
		{"MF and DF", flagMF | flagDF, true, 0, true},
		{"offset 1", 1, true, 8, false},
		{"last fragment", 185, true, 1480, false},
		{"max offset", 0x1fff, true, 0x1fff * 8, false},
		{"MF with offset and DF", flagMF | flagDF | 5, true, 40, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := IPv4(ipv4Pkt(nil, ProtoESP, tt.field, nil))
			if got := h.Fragmented(); got != tt.fragmented {
				t.Errorf("Fragmented = %v, want %v", got, tt.fragmented)
			}
			if got := h.FragmentOffset(); got != tt.offset {
				t.Errorf("FragmentOffset = %d, want %d", got, tt.offset)
			}
			if got := h.DontFragment(); got != tt.df {
				t.Errorf("DontFragment = %v, want %v", got, tt.df)
			}
		})
	}
}

func TestIPv4Valid(t *testing.T) {
	good := ipv4Pkt(nil, ProtoESP, 0, pattern(12, 0))
	for _, tt := range []struct {
		name string
		pkt  func() []byte
		want bool
	}{
		{"well formed", func() []byte { return good }, true},
		{"link padding after it", func() []byte { return append(bytes.Clone(good), 0, 0, 0) }, true},
		{"options, no payload", func() []byte { return ipv4Pkt(make([]byte, 40), ProtoESP, 0, nil) }, true},
		{"empty", func() []byte { return nil }, false},
		{"19 bytes", func() []byte { return good[:19] }, false},
		{"version 6", func() []byte { p := bytes.Clone(good); p[0] = 0x65; return p }, false},
		{"version 0", func() []byte { p := bytes.Clone(good); p[0] = 0x05; return p }, false},
		{"header length 16", func() []byte { p := bytes.Clone(good); p[0] = 0x44; return p }, false},
		{"header length 0", func() []byte { p := bytes.Clone(good); p[0] = 0x40; return p }, false},
		{"header length beyond total", func() []byte {
			p := bytes.Clone(good)
			binary.BigEndian.PutUint16(p[2:], 20)
			p[0] = 0x46
			return p
		}, false},
		{"total length below 20", func() []byte { p := bytes.Clone(good); binary.BigEndian.PutUint16(p[2:], 19); return p }, false},
		{"total length beyond the slice", func() []byte { return good[:len(good)-1] }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := IPv4(tt.pkt()).Valid(); got != tt.want {
				t.Errorf("Valid = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIPv4Setters(t *testing.T) {
	opts := []byte{0x94, 4, 0, 0, 1, 1, 1, 0} // Router Alert, NOPs, EOL
	p := ipv4Pkt(opts, ProtoUDP, 0, pattern(16, 3))
	h := IPv4(p)
	h.SetTOS(0xb9)
	h.SetTotalLen(40)
	h.SetProtocol(ProtoESP)
	binary.BigEndian.PutUint16(p[10:], 0xdead) // a stale checksum
	h.SetChecksum()
	if h.TOS() != 0xb9 || p[1] != 0xb9 {
		t.Errorf("TOS = %#x, byte 1 = %#x, want 0xb9", h.TOS(), p[1])
	}
	if h.TotalLen() != 40 || binary.BigEndian.Uint16(p[2:]) != 40 {
		t.Errorf("TotalLen = %d, want 40", h.TotalLen())
	}
	if h.Protocol() != ProtoESP || p[9] != ProtoESP {
		t.Errorf("Protocol = %d, want %d", h.Protocol(), ProtoESP)
	}
	if c := packettest.Checksum(p[:28], 0); c != 0 {
		t.Errorf("header checksum (options included) does not verify: %#x", c)
	}
	// The checksum covers the options: changing one must be caught.
	p[20] ^= 1
	if c := packettest.Checksum(p[:28], 0); c == 0 {
		t.Errorf("header checksum verifies after an option byte changed")
	}
	h.SetChecksum()
	if c := packettest.Checksum(p[:28], 0); c != 0 {
		t.Errorf("header checksum does not verify after SetChecksum: %#x", c)
	}
}

func TestIPv4Encode(t *testing.T) {
	for _, tt := range []struct {
		name     string
		f        IPv4Fields
		src, dst [4]byte
		flags    uint16
	}{
		{"plain", IPv4Fields{HeaderLen: 20, TOS: 0x10, TotalLen: 100, ID: 0xbeef, TTL: 1, Protocol: ProtoESP,
			Src: packettest.V4A, Dst: packettest.V4B}, [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, 0},
		{"DF and options", IPv4Fields{HeaderLen: 32, TOS: 0xff, TotalLen: 0xffff, ID: 0, DF: true, TTL: 255, Protocol: ProtoUDP,
			Src: packettest.V4B, Dst: packettest.V4A}, [4]byte{192, 0, 2, 2}, [4]byte{192, 0, 2, 1}, 0x4000},
		{"mapped addresses", IPv4Fields{HeaderLen: 20, TotalLen: 20, Protocol: ProtoESP,
			Src: mapped(packettest.V4A), Dst: mapped(packettest.V4B)}, [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}, 0},
		{"IPv6 and invalid addresses", IPv4Fields{HeaderLen: 20, TotalLen: 20, Protocol: ProtoESP,
			Src: packettest.V6A, Dst: netip.Addr{}}, [4]byte{}, [4]byte{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := bytes.Repeat([]byte{0xcc}, 64)
			opts := bytes.Clone(p[20:tt.f.HeaderLen])
			IPv4(p).Encode(&tt.f)
			if want := byte(0x40 | tt.f.HeaderLen/4); p[0] != want {
				t.Errorf("byte 0 = %#x, want %#x", p[0], want)
			}
			if p[1] != tt.f.TOS {
				t.Errorf("TOS = %#x, want %#x", p[1], tt.f.TOS)
			}
			if got := int(binary.BigEndian.Uint16(p[2:])); got != tt.f.TotalLen {
				t.Errorf("total length = %d, want %d", got, tt.f.TotalLen)
			}
			if got := binary.BigEndian.Uint16(p[4:]); got != tt.f.ID {
				t.Errorf("ID = %#x, want %#x", got, tt.f.ID)
			}
			if got := binary.BigEndian.Uint16(p[6:]); got != tt.flags {
				t.Errorf("flags and offset = %#x, want %#x", got, tt.flags)
			}
			if p[8] != tt.f.TTL || p[9] != tt.f.Protocol {
				t.Errorf("TTL, protocol = %d, %d, want %d, %d", p[8], p[9], tt.f.TTL, tt.f.Protocol)
			}
			if !bytes.Equal(p[12:16], tt.src[:]) || !bytes.Equal(p[16:20], tt.dst[:]) {
				t.Errorf("addresses = %v %v, want %v %v", p[12:16], p[16:20], tt.src, tt.dst)
			}
			if !bytes.Equal(p[20:tt.f.HeaderLen], opts) {
				t.Errorf("Encode wrote over the options")
			}
			if !bytes.Equal(p[tt.f.HeaderLen:], bytes.Repeat([]byte{0xcc}, 64-tt.f.HeaderLen)) {
				t.Errorf("Encode wrote past the header")
			}
			if c := packettest.Checksum(p[:tt.f.HeaderLen], 0); c != 0 {
				t.Errorf("header checksum does not verify: %#x", c)
			}
		})
	}
}

func TestIPv6Getters(t *testing.T) {
	p := ipv6Pkt(ProtoESP, nil, pattern(20, 0))
	h := IPv6(p)
	if got := h.PayloadLen(); got != 20 {
		t.Errorf("PayloadLen = %d, want 20", got)
	}
	if got := h.NextHeader(); got != ProtoESP {
		t.Errorf("NextHeader = %d, want %d", got, ProtoESP)
	}
	if got := h.TrafficClass(); got != 0xa5 {
		t.Errorf("TrafficClass = %#x, want 0xa5", got)
	}
	if got := h.FlowLabel(); got != 0x12345 {
		t.Errorf("FlowLabel = %#x, want 0x12345", got)
	}
	if got := h.HopLimit(); got != 44 {
		t.Errorf("HopLimit = %d, want 44", got)
	}
	if got := h.Src(); got != packettest.V6A {
		t.Errorf("Src = %v, want %v", got, packettest.V6A)
	}
	if got := h.Dst(); got != packettest.V6B {
		t.Errorf("Dst = %v, want %v", got, packettest.V6B)
	}
}

func TestIPv6Valid(t *testing.T) {
	good := ipv6Pkt(ProtoESP, nil, pattern(20, 0))
	for _, tt := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"well formed", good, true},
		{"link padding", append(bytes.Clone(good), 1, 2, 3), true},
		{"no payload", ipv6Pkt(ProtoNoNext, nil, nil), true},
		{"39 bytes", ipv6Pkt(ProtoNoNext, nil, nil)[:39], false},
		{"payload beyond the slice", good[:len(good)-1], false},
		{"version 4", append([]byte{0x45}, good[1:]...), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := IPv6(tt.pkt).Valid(); got != tt.want {
				t.Errorf("Valid = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIPv6Setters(t *testing.T) {
	for _, tc := range []uint8{0, 1, 0x5a, 0xb8 | ECNCE, 0xff} {
		p := ipv6Pkt(ProtoESP, nil, nil)
		h := IPv6(p)
		h.SetTrafficClass(tc)
		if got := h.TrafficClass(); got != tc {
			t.Errorf("SetTrafficClass(%#x): TrafficClass = %#x", tc, got)
		}
		if got := h.FlowLabel(); got != 0x12345 {
			t.Errorf("SetTrafficClass(%#x): FlowLabel = %#x, want 0x12345 kept", tc, got)
		}
		if got := Version(p); got != 6 {
			t.Errorf("SetTrafficClass(%#x): version = %d, want 6 kept", tc, got)
		}
		if got, want := binary.BigEndian.Uint32(p), uint32(6<<28|uint32(tc)<<20|0x12345); got != want {
			t.Errorf("SetTrafficClass(%#x): first word = %#08x, want %#08x", tc, got, want)
		}
	}
	p := ipv6Pkt(ProtoESP, nil, nil)
	h := IPv6(p)
	h.SetPayloadLen(0xfedc)
	h.SetNextHeader(ProtoUDP)
	if binary.BigEndian.Uint16(p[4:]) != 0xfedc || h.PayloadLen() != 0xfedc {
		t.Errorf("SetPayloadLen: field = %#x", binary.BigEndian.Uint16(p[4:]))
	}
	if p[6] != ProtoUDP || h.NextHeader() != ProtoUDP {
		t.Errorf("SetNextHeader: field = %d", p[6])
	}
	if h.HopLimit() != 44 || h.TrafficClass() != 0xa5 || h.FlowLabel() != 0x12345 {
		t.Errorf("setters changed other fields")
	}
}

func TestIPv6Encode(t *testing.T) {
	for _, tt := range []struct {
		name     string
		f        IPv6Fields
		word0    uint32
		src, dst netip.Addr
	}{
		{"plain", IPv6Fields{TrafficClass: 0xb9, FlowLabel: 0xfffff, PayloadLen: 1400, NextHeader: ProtoESP, HopLimit: 1,
			Src: packettest.V6A, Dst: packettest.V6B}, 6<<28 | 0xb9<<20 | 0xfffff, packettest.V6A, packettest.V6B},
		{"flow label over 20 bits", IPv6Fields{FlowLabel: 0xfff12345, PayloadLen: 0, NextHeader: ProtoNoNext, HopLimit: 255,
			Src: packettest.V6B, Dst: packettest.V6A}, 6<<28 | 0x12345, packettest.V6B, packettest.V6A},
		{"invalid addresses", IPv6Fields{PayloadLen: 0xffff, NextHeader: ProtoUDP, HopLimit: 64},
			6 << 28, netip.IPv6Unspecified(), netip.IPv6Unspecified()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := bytes.Repeat([]byte{0xcc}, 48)
			IPv6(p).Encode(&tt.f)
			if got := binary.BigEndian.Uint32(p); got != tt.word0 {
				t.Errorf("first word = %#08x, want %#08x", got, tt.word0)
			}
			if got := int(binary.BigEndian.Uint16(p[4:])); got != tt.f.PayloadLen {
				t.Errorf("payload length = %d, want %d", got, tt.f.PayloadLen)
			}
			if p[6] != tt.f.NextHeader || p[7] != tt.f.HopLimit {
				t.Errorf("next header, hop limit = %d, %d, want %d, %d", p[6], p[7], tt.f.NextHeader, tt.f.HopLimit)
			}
			s, d := tt.src.As16(), tt.dst.As16()
			if !bytes.Equal(p[8:24], s[:]) || !bytes.Equal(p[24:40], d[:]) {
				t.Errorf("addresses = %x %x, want %x %x", p[8:24], p[24:40], s, d)
			}
			if !bytes.Equal(p[40:], bytes.Repeat([]byte{0xcc}, 8)) {
				t.Errorf("Encode wrote past the header")
			}
		})
	}
}

func TestIsIPv6Extension(t *testing.T) {
	yes := map[uint8]bool{ProtoHopByHop: true, ProtoRouting: true, ProtoFragment: true, ProtoDstOpts: true, ProtoAH: true}
	for p := range 256 {
		if got := IsIPv6Extension(uint8(p)); got != yes[uint8(p)] {
			t.Errorf("IsIPv6Extension(%d) = %v, want %v", p, got, yes[uint8(p)])
		}
	}
}

func TestIPv6ChainStep(t *testing.T) {
	for _, tt := range []struct {
		name string
		hdrs []ext
		last uint8
	}{
		{"none", nil, ProtoESP},
		{"hop-by-hop 8", []ext{{ProtoHopByHop, 8}}, ProtoESP},
		{"hop-by-hop 16", []ext{{ProtoHopByHop, 16}}, ProtoUDP},
		{"hop-by-hop 2048", []ext{{ProtoHopByHop, 2048}}, ProtoESP},
		{"routing 24", []ext{{ProtoRouting, 24}}, ProtoESP},
		{"destination options 8", []ext{{ProtoDstOpts, 8}}, ProtoTCP},
		{"fragment", []ext{{ProtoFragment, 8}}, ProtoESP},
		{"AH 12", []ext{{ProtoAH, 12}}, ProtoESP},
		{"AH 24", []ext{{ProtoAH, 24}}, ProtoIPv6},
		{"AH 8 (length byte 0)", []ext{{ProtoAH, 8}}, ProtoESP},
		{"AH 1028 (length byte 255)", []ext{{ProtoAH, 1028}}, ProtoESP},
		{"every kind", []ext{{ProtoHopByHop, 16}, {ProtoRouting, 24}, {ProtoDstOpts, 8}, {ProtoFragment, 8},
			{ProtoAH, 24}, {ProtoDstOpts, 40}}, ProtoNoNext},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first := tt.last
			if len(tt.hdrs) > 0 {
				first = tt.hdrs[0].proto
			}
			p := ipv6Pkt(first, extChain(tt.last, tt.hdrs...), pattern(5, 9))
			c := IPv6(p).Chain()
			off, nextAt := 40, 6
			for i, h := range tt.hdrs {
				if c.Next != h.proto || c.Off != off || c.NextAt != nextAt {
					t.Fatalf("before header %d: Next, Off, NextAt = %d, %d, %d, want %d, %d, %d",
						i, c.Next, c.Off, c.NextAt, h.proto, off, nextAt)
				}
				if p[c.NextAt] != c.Next {
					t.Fatalf("before header %d: the byte at NextAt is %d, not Next %d", i, p[c.NextAt], c.Next)
				}
				if !IsIPv6Extension(c.Next) {
					t.Fatalf("header %d: %d is not an extension", i, c.Next)
				}
				if !c.Step() {
					t.Fatalf("Step over header %d (%d, %d bytes) = false", i, h.proto, h.size)
				}
				nextAt, off = off, off+h.size
			}
			if c.Next != tt.last || c.Off != off || c.NextAt != nextAt {
				t.Fatalf("at the end: Next, Off, NextAt = %d, %d, %d, want %d, %d, %d",
					c.Next, c.Off, c.NextAt, tt.last, off, nextAt)
			}
			if p[c.NextAt] != c.Next {
				t.Fatalf("at the end: the byte at NextAt is %d, not Next %d", p[c.NextAt], c.Next)
			}
			// Rewriting the field at NextAt is how a caller changes the
			// chain: it must be the field that names the header at Off.
			p[c.NextAt] = ProtoDstOpts
			if c2 := walk(IPv6(p)); c2.Off != off || c2.Next != ProtoDstOpts {
				t.Errorf("after rewriting NextAt, a new walk stops at %d (Next %d), want %d (Next %d)",
					c2.Off, c2.Next, off, ProtoDstOpts)
			}
		})
	}
}

// walk steps over every extension header it can, and returns where it
// stopped.
func walk(h IPv6) IPv6Chain {
	c := h.Chain()
	for IsIPv6Extension(c.Next) && c.Step() {
	}
	return c
}

func TestIPv6ChainStepTruncated(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first uint8
		ext   []byte
		cut   int // bytes of ext left in the walk's slice
	}{
		{"nothing left", ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8}), 0},
		{"7 bytes left", ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8}), 7},
		{"hop-by-hop 16 in 8", ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 16}), 8},
		{"hop-by-hop 16 in 15", ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 16}), 15},
		{"routing 24 in 16", ProtoRouting, extChain(ProtoESP, ext{ProtoRouting, 24}), 16},
		{"fragment in 7", ProtoFragment, extChain(ProtoESP, ext{ProtoFragment, 8}), 7},
		{"AH 12 in 8", ProtoAH, extChain(ProtoESP, ext{ProtoAH, 12}), 8},
		{"AH 12 in 11", ProtoAH, extChain(ProtoESP, ext{ProtoAH, 12}), 11},
		{"AH 1028 in 1024", ProtoAH, extChain(ProtoESP, ext{ProtoAH, 1028}), 1024},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := ipv6Pkt(tt.first, tt.ext, nil)
			c := IPv6(p[:40+tt.cut]).Chain()
			before := c
			if c.Step() {
				t.Fatalf("Step = true over a truncated header: now at %d (Next %d)", c.Off, c.Next)
			}
			if c.Next != before.Next || c.Off != before.Off || c.NextAt != before.NextAt || len(c.pkt) != len(before.pkt) {
				t.Errorf("a failed Step moved the walk: %+v, was %+v", c, before)
			}
			// The whole header does step.
			c = IPv6(p).Chain()
			if !c.Step() || c.Off != 40+len(tt.ext) || c.Next != ProtoESP {
				t.Errorf("Step over the whole header: Off %d, Next %d, want %d, %d", c.Off, c.Next, 40+len(tt.ext), ProtoESP)
			}
		})
	}
}

func TestIPv6ChainStepFromSecond(t *testing.T) {
	// A truncated second header: the first step succeeds, the second fails
	// and leaves the walk at the second header.
	e := extChain(ProtoESP, ext{ProtoDstOpts, 8}, ext{ProtoRouting, 32})
	p := ipv6Pkt(ProtoDstOpts, e, nil)[:40+8+24]
	c := IPv6(p).Chain()
	if !c.Step() {
		t.Fatal("first Step = false")
	}
	want := IPv6Chain{pkt: p, Next: ProtoRouting, Off: 48, NextAt: 40}
	if c.Next != want.Next || c.Off != want.Off || c.NextAt != want.NextAt {
		t.Fatalf("after the first Step: %+v, want Next %d Off %d NextAt %d", c, want.Next, want.Off, want.NextAt)
	}
	if c.Step() {
		t.Fatal("second Step = true over a truncated header")
	}
	if c.Next != want.Next || c.Off != want.Off || c.NextAt != want.NextAt {
		t.Errorf("a failed Step moved the walk: %+v", c)
	}
}

func TestIPv6Fragment(t *testing.T) {
	for _, tt := range []struct {
		field  uint16
		offset int
		more   bool
	}{
		{0x0000, 0, false},
		{0x0001, 0, true},
		{0x0006, 0, false}, // reserved bits
		{0x0008, 8, false},
		{0x05c9, 1480, true},
		{0xfff8, 0xfff8, false},
		{0xffff, 0xfff8, true},
	} {
		f := IPv6Fragment{ProtoESP, 0xff, 0, 0, 1, 2, 3, 4}
		binary.BigEndian.PutUint16(f[2:], tt.field)
		if got := f.Offset(); got != tt.offset {
			t.Errorf("field %#04x: Offset = %d, want %d", tt.field, got, tt.offset)
		}
		if got := f.More(); got != tt.more {
			t.Errorf("field %#04x: More = %v, want %v", tt.field, got, tt.more)
		}
	}
}

func TestUDP(t *testing.T) {
	u := UDP(bytes.Repeat([]byte{0xee}, 12))
	u.Encode(4500, 0xfffe, 1408)
	want := []byte{0x11, 0x94, 0xff, 0xfe, 0x05, 0x80, 0, 0, 0xee, 0xee, 0xee, 0xee}
	if !bytes.Equal(u, want) {
		t.Fatalf("Encode wrote %x, want %x", []byte(u), want)
	}
	if u.SrcPort() != 4500 || u.DstPort() != 0xfffe || u.Length() != 1408 || u.Checksum() != 0 {
		t.Errorf("getters = %d %d %d %#x", u.SrcPort(), u.DstPort(), u.Length(), u.Checksum())
	}
	u.SetChecksum(0xabcd)
	if u.Checksum() != 0xabcd || u[6] != 0xab || u[7] != 0xcd {
		t.Errorf("SetChecksum: Checksum = %#x, bytes %x", u.Checksum(), []byte(u[6:8]))
	}
	u.Encode(1, 2, 8)
	if u.Checksum() != 0 {
		t.Errorf("Encode left the old checksum %#x", u.Checksum())
	}
}

func TestESP(t *testing.T) {
	e := ESP(bytes.Repeat([]byte{0xee}, 10))
	e.Encode(0xdeadbeef, 0x01020304)
	want := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0xee, 0xee}
	if !bytes.Equal(e, want) {
		t.Fatalf("Encode wrote %x, want %x", []byte(e), want)
	}
	if e.SPI() != 0xdeadbeef || e.Seq() != 0x01020304 {
		t.Errorf("SPI, Seq = %#x, %#x", e.SPI(), e.Seq())
	}
}
