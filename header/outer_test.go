package header

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"vnic/internal/packettest"
)

// v4Opts returns n bytes of IPv4 options: NOPs and a closing EOL.
func v4Opts(n int) []byte {
	b := bytes.Repeat([]byte{1}, n)
	b[n-1] = 0
	return b
}

// roundTrip is a case of TestOuterRoundTrip: o encoded in front of espLen
// bytes of ESP, with opts (IPv4 options or IPv6 extension headers) placed
// right before them, must parse back as want.
type roundTrip struct {
	name   string
	o      Outer
	opts   []byte
	espLen int
	want   Outer
}

func roundTrips() []roundTrip {
	v4, v4b, v6, v6b := packettest.V4A, packettest.V4B, packettest.V6A, packettest.V6B
	hbh := extChain(ProtoESP, ext{ProtoHopByHop, 8})
	rt := extChain(ProtoESP, ext{ProtoRouting, 24})
	chain := extChain(ProtoESP, ext{ProtoHopByHop, 16}, ext{ProtoDstOpts, 8}, ext{ProtoRouting, 24}, ext{ProtoDstOpts, 8})
	return []roundTrip{
		{name: "v4 raw",
			o:      Outer{Src: v4, Dst: v4b, TOS: 0xb8 | ECNECT0, TTL: 17, DF: true, ID: 0x1234},
			espLen: 100,
			want:   Outer{Src: v4, Dst: v4b, TOS: 0xb8 | ECNECT0, TTL: 17, DF: true, ID: 0x1234}},
		{name: "v4 raw TTL 0 is kept",
			o:      Outer{Src: v4, Dst: v4b, ID: 0xffff},
			espLen: 1400,
			want:   Outer{Src: v4, Dst: v4b, ID: 0xffff}},
		{name: "v4 raw TTL 255 and ECN CE",
			o:      Outer{Src: v4b, Dst: v4, TOS: ECNCE, TTL: 255},
			espLen: 8,
			want:   Outer{Src: v4b, Dst: v4, TOS: ECNCE, TTL: 255}},
		{name: "v4 raw invalid source is 0.0.0.0",
			o:      Outer{Dst: v4b, TTL: 3},
			espLen: 33,
			want:   Outer{Src: netip.IPv4Unspecified(), Dst: v4b, TTL: 3}},
		{name: "v4 raw mapped addresses",
			o:      Outer{Src: mapped(v4), Dst: mapped(v4b), TTL: 9},
			espLen: 40,
			want:   Outer{Src: v4, Dst: v4b, TTL: 9}},
		{name: "v4 raw flow label not encoded",
			o:      Outer{Src: v4, Dst: v4b, TTL: 9, FlowLabel: 0x12345},
			espLen: 40,
			want:   Outer{Src: v4, Dst: v4b, TTL: 9}},
		{name: "v4 raw 4 bytes of options",
			o:      Outer{Src: v4, Dst: v4b, TTL: 5, DF: true, Opts: 4},
			opts:   v4Opts(4),
			espLen: 64,
			want:   Outer{Src: v4, Dst: v4b, TTL: 5, DF: true, Opts: 4}},
		{name: "v4 raw 40 bytes of options",
			o:      Outer{Src: v4, Dst: v4b, TOS: 0x20, TTL: 5, ID: 7, Opts: 40},
			opts:   v4Opts(40),
			espLen: 64,
			want:   Outer{Src: v4, Dst: v4b, TOS: 0x20, TTL: 5, ID: 7, Opts: 40}},
		{name: "v4 UDP",
			o:      Outer{Src: v4, Dst: v4b, UDP: true, SrcPort: 4500, DstPort: 4500, TOS: 0x48, TTL: 100, DF: true, ID: 0xabcd},
			espLen: 1400,
			want:   Outer{Src: v4, Dst: v4b, UDP: true, SrcPort: 4500, DstPort: 4500, TOS: 0x48, TTL: 100, DF: true, ID: 0xabcd}},
		{name: "v4 UDP ignores Opts",
			o:      Outer{Src: v4, Dst: v4b, UDP: true, SrcPort: 50000, DstPort: 4500, Opts: 8, OptsNext: 3},
			espLen: 1,
			want:   Outer{Src: v4, Dst: v4b, UDP: true, SrcPort: 50000, DstPort: 4500}},
		{name: "v6 raw",
			o:      Outer{Src: v6, Dst: v6b, TOS: 0xfe, TTL: 255, FlowLabel: 0xabcde},
			espLen: 1400,
			want:   Outer{Src: v6, Dst: v6b, TOS: 0xfe, TTL: 255, FlowLabel: 0xabcde}},
		{name: "v6 raw TTL 0, DF and ID not encoded, flow label masked",
			o:      Outer{Src: v6, Dst: v6b, DF: true, ID: 99, FlowLabel: 0xfff00001},
			espLen: 9,
			want:   Outer{Src: v6, Dst: v6b, FlowLabel: 1}},
		{name: "v6 raw invalid source is ::",
			o:      Outer{Dst: v6b, TTL: 1},
			espLen: 16,
			want:   Outer{Src: netip.IPv6Unspecified(), Dst: v6b, TTL: 1}},
		{name: "v6 raw hop-by-hop",
			o:      Outer{Src: v6, Dst: v6b, TTL: 2, Opts: len(hbh), OptsNext: ProtoHopByHop},
			opts:   hbh,
			espLen: 50,
			want:   Outer{Src: v6, Dst: v6b, TTL: 2, Opts: len(hbh), OptsNext: ProtoHopByHop}},
		{name: "v6 raw routing",
			o:      Outer{Src: v6, Dst: v6b, TTL: 2, TOS: 1, Opts: len(rt), OptsNext: ProtoRouting},
			opts:   rt,
			espLen: 50,
			want:   Outer{Src: v6, Dst: v6b, TTL: 2, TOS: 1, Opts: len(rt), OptsNext: ProtoRouting}},
		{name: "v6 raw four extension headers",
			o:      Outer{Src: v6, Dst: v6b, TTL: 2, FlowLabel: 0xfffff, Opts: len(chain), OptsNext: ProtoHopByHop},
			opts:   chain,
			espLen: 1400,
			want:   Outer{Src: v6, Dst: v6b, TTL: 2, FlowLabel: 0xfffff, Opts: len(chain), OptsNext: ProtoHopByHop}},
		{name: "v6 UDP",
			o:      Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 4500, DstPort: 4501, TOS: 0xb9, TTL: 7, FlowLabel: 0x54321},
			espLen: 1400,
			want:   Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 4500, DstPort: 4501, TOS: 0xb9, TTL: 7, FlowLabel: 0x54321}},
		{name: "v6 UDP odd length ignores Opts",
			o:      Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 1, DstPort: 65535, Opts: 8, OptsNext: ProtoHopByHop},
			espLen: 37,
			want:   Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 1, DstPort: 65535}},
		{name: "v6 UDP empty",
			o:      Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 4500, DstPort: 4500, TTL: 1},
			espLen: 0,
			want:   Outer{Src: v6, Dst: v6b, UDP: true, SrcPort: 4500, DstPort: 4500, TTL: 1}},
	}
}

func TestOuterRoundTrip(t *testing.T) {
	const headroom, pad = 128, 13
	for _, tt := range roundTrips() {
		t.Run(tt.name, func(t *testing.T) {
			buf := bytes.Repeat([]byte{0xa5}, headroom+tt.espLen+pad)
			esp, end := headroom, headroom+tt.espLen
			copy(buf[esp:], espPayload(tt.espLen))
			copy(buf[esp-len(tt.opts):], tt.opts)
			orig := bytes.Clone(buf)
			o := tt.o
			start := o.Encode(buf, esp, end)
			if o != tt.o {
				t.Errorf("Encode changed its Outer to %+v", o)
			}
			if start != esp-o.Size() {
				t.Fatalf("Encode = %d, want esp - Size() = %d - %d", start, esp, o.Size())
			}
			hdrEnd := esp - len(tt.opts)
			if !bytes.Equal(buf[:start], orig[:start]) {
				t.Errorf("Encode wrote before the start it returned")
			}
			if !bytes.Equal(buf[hdrEnd:], orig[hdrEnd:]) {
				t.Errorf("Encode wrote over the options, the ESP bytes or past the end")
			}
			checkWire(t, buf[start:end], tt.want, len(tt.opts))

			// Link padding after the packet is left out of end.
			got, payload, gotEnd, err := ParseOuter(buf[start:])
			if err != nil {
				t.Fatalf("ParseOuter: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseOuter = %+v\nwant          %+v", got, tt.want)
			}
			if payload != esp-start {
				t.Errorf("payload at %d, want the ESP header at %d", payload, esp-start)
			}
			if gotEnd != end-start {
				t.Errorf("end = %d, want %d", gotEnd, end-start)
			}
			if got.Size() != payload {
				t.Errorf("parsed Size() = %d, want the payload offset %d", got.Size(), payload)
			}
		})
	}
}

// checkWire checks the headers of pkt, an Encode output with optLen bytes
// of options or extension headers, byte by byte against the fields of
// want, and their checksums with packettest.
func checkWire(t *testing.T, pkt []byte, want Outer, optLen int) {
	t.Helper()
	var next uint8 = ProtoESP
	if want.UDP {
		next = ProtoUDP
	}
	var hl int
	if want.Is6() {
		hl = 40
		if got, w := binary.BigEndian.Uint32(pkt), 6<<28|uint32(want.TOS)<<20|want.FlowLabel; got != w {
			t.Errorf("IPv6 first word = %#08x, want %#08x", got, w)
		}
		if got := int(binary.BigEndian.Uint16(pkt[4:])); got != len(pkt)-40 {
			t.Errorf("IPv6 payload length = %d, want %d", got, len(pkt)-40)
		}
		wantNext := next
		if !want.UDP && optLen > 0 {
			wantNext = want.OptsNext
		}
		if pkt[6] != wantNext || pkt[7] != want.TTL {
			t.Errorf("IPv6 next header, hop limit = %d, %d, want %d, %d", pkt[6], pkt[7], wantNext, want.TTL)
		}
		s, d := want.Src.As16(), want.Dst.As16()
		if !bytes.Equal(pkt[8:24], s[:]) || !bytes.Equal(pkt[24:40], d[:]) {
			t.Errorf("IPv6 addresses = %x %x, want %x %x", pkt[8:24], pkt[24:40], s, d)
		}
	} else {
		hl = 20
		if !want.UDP {
			hl += optLen
		}
		if want := byte(0x40 | hl/4); pkt[0] != want {
			t.Errorf("IPv4 byte 0 = %#x, want %#x", pkt[0], want)
		}
		if pkt[1] != want.TOS {
			t.Errorf("IPv4 TOS = %#x, want %#x", pkt[1], want.TOS)
		}
		if got := int(binary.BigEndian.Uint16(pkt[2:])); got != len(pkt) {
			t.Errorf("IPv4 total length = %d, want %d", got, len(pkt))
		}
		if got := binary.BigEndian.Uint16(pkt[4:]); got != want.ID {
			t.Errorf("IPv4 ID = %#x, want %#x", got, want.ID)
		}
		var flags uint16
		if want.DF {
			flags = 0x4000
		}
		if got := binary.BigEndian.Uint16(pkt[6:]); got != flags {
			t.Errorf("IPv4 flags and offset = %#x, want %#x", got, flags)
		}
		if pkt[8] != want.TTL || pkt[9] != next {
			t.Errorf("IPv4 TTL, protocol = %d, %d, want %d, %d", pkt[8], pkt[9], want.TTL, next)
		}
		s, d := want.Src.As4(), want.Dst.As4()
		if !bytes.Equal(pkt[12:16], s[:]) || !bytes.Equal(pkt[16:20], d[:]) {
			t.Errorf("IPv4 addresses = %v %v, want %v %v", pkt[12:16], pkt[16:20], s, d)
		}
		if c := packettest.Checksum(pkt[:hl], 0); c != 0 {
			t.Errorf("IPv4 header checksum does not verify: %#x", c)
		}
	}
	if !want.UDP {
		return
	}
	u := pkt[hl:]
	if got := binary.BigEndian.Uint16(u[0:]); got != want.SrcPort {
		t.Errorf("UDP source port = %d, want %d", got, want.SrcPort)
	}
	if got := binary.BigEndian.Uint16(u[2:]); got != want.DstPort {
		t.Errorf("UDP destination port = %d, want %d", got, want.DstPort)
	}
	if got := int(binary.BigEndian.Uint16(u[4:])); got != len(u) {
		t.Errorf("UDP length = %d, want %d", got, len(u))
	}
	sum := binary.BigEndian.Uint16(u[6:])
	if !want.Is6() {
		if sum != 0 {
			t.Errorf("UDP checksum over IPv4 = %#x, want 0 (RFC 3948 §2.1)", sum)
		}
		return
	}
	if sum == 0 {
		t.Errorf("UDP checksum over IPv6 is 0")
	}
	if c := packettest.Checksum(u, packettest.PseudoHeader(pkt, ProtoUDP, len(u))); c != 0 {
		t.Errorf("UDP checksum over IPv6 %#x does not verify: %#x", sum, c)
	}
}

func TestOuterEncodeIPv6UDPChecksumNotZero(t *testing.T) {
	// ESP bytes chosen so that the UDP checksum comes to 0: it is sent as
	// 0xffff, since 0 over IPv6 is not allowed (RFC 8200 §8.1).
	o := Outer{Src: packettest.V6A, Dst: packettest.V6B, UDP: true, SrcPort: 4500, DstPort: 4500}
	const esp, n = 48, 64
	buf := make([]byte, esp+n)
	copy(buf[esp:], espPayload(n))
	start := o.Encode(buf, esp, esp+n)
	pkt := buf[start:]
	u := pkt[40:]
	// Add the checksum into an ESP word: the sum becomes 0xffff.
	w := binary.BigEndian.Uint16(u[20:])
	c := binary.BigEndian.Uint16(u[6:])
	s := uint32(w) + uint32(c)
	binary.BigEndian.PutUint16(u[20:], uint16(s&0xffff+s>>16))
	binary.BigEndian.PutUint16(u[6:], 0)
	if c := packettest.Checksum(u, packettest.PseudoHeader(pkt, ProtoUDP, len(u))); c != 0 {
		t.Fatalf("test setup: the checksum comes to %#x, not 0", c)
	}
	if o.Encode(buf, esp, esp+n) != start {
		t.Fatal("Encode moved")
	}
	if got := binary.BigEndian.Uint16(u[6:]); got != 0xffff {
		t.Errorf("UDP checksum = %#x, want 0xffff", got)
	}
	if c := packettest.Checksum(u, packettest.PseudoHeader(pkt, ProtoUDP, len(u))); c != 0 {
		t.Errorf("UDP checksum does not verify: %#x", c)
	}
}

func TestOuterSize(t *testing.T) {
	for _, tt := range []struct {
		o    Outer
		want int
	}{
		{Outer{Dst: packettest.V4B}, 20},
		{Outer{Dst: packettest.V4B, Opts: 12}, 32},
		{Outer{Dst: packettest.V4B, UDP: true, Opts: 12}, 28},
		{Outer{Dst: mapped(packettest.V4B)}, 20},
		{Outer{}, 20},
		{Outer{Dst: packettest.V6B}, 40},
		{Outer{Dst: packettest.V6B, Opts: 16}, 56},
		{Outer{Dst: packettest.V6B, UDP: true, Opts: 16}, 48},
		{Outer{Src: packettest.V6A, Dst: packettest.V4B}, 20},
	} {
		if got := tt.o.Size(); got != tt.want {
			t.Errorf("%+v: Size = %d, want %d", tt.o, got, tt.want)
		}
	}
}

// parseCase is a packet and what ParseOuter must make of it.
type parseCase struct {
	name    string
	pkt     []byte
	err     error
	payload int // on success
	end     int
	want    Outer
}

func TestParseOuterErrors(t *testing.T) {
	esp := espPayload(32)
	v4 := ipv4Pkt(nil, ProtoESP, 0, esp)
	v6 := ipv6Pkt(ProtoESP, nil, esp)
	with := func(p []byte, f func(p []byte)) []byte {
		p = bytes.Clone(p)
		f(p)
		return p
	}
	v4Sum := func(f func(p []byte)) []byte {
		return with(v4, func(p []byte) { f(p); packettest.SetIPv4Checksum(p) })
	}
	for _, tt := range []parseCase{
		{name: "empty", pkt: nil, err: ErrMalformed},
		{name: "19 bytes", pkt: v4[:19], err: ErrMalformed},
		{name: "version 5", pkt: with(v4, func(p []byte) { p[0] = 0x55 }), err: ErrMalformed},
		{name: "version 0", pkt: with(v4, func(p []byte) { p[0] = 0x05 }), err: ErrMalformed},
		{name: "version 6 in 39 bytes", pkt: v6[:39], err: ErrMalformed},
		{name: "version 6 in 20 bytes", pkt: v6[:20], err: ErrMalformed},
		{name: "IPv4 header length 16", pkt: v4Sum(func(p []byte) { p[0] = 0x44 }), err: ErrMalformed},
		{name: "IPv4 header length 0", pkt: v4Sum(func(p []byte) { p[0] = 0x40 }), err: ErrMalformed},
		{name: "IPv4 header length beyond total length", pkt: v4Sum(func(p []byte) {
			p[0] = 0x4f
			binary.BigEndian.PutUint16(p[2:], 56)
		}), err: ErrMalformed},
		{name: "IPv4 total length 0", pkt: v4Sum(func(p []byte) { binary.BigEndian.PutUint16(p[2:], 0) }), err: ErrMalformed},
		{name: "IPv4 total length beyond the slice", pkt: v4Sum(func(p []byte) {
			binary.BigEndian.PutUint16(p[2:], uint16(len(p)+1))
		}), err: ErrMalformed},
		{name: "IPv4 truncated", pkt: v4[:len(v4)-1], err: ErrMalformed},
		{name: "IPv4 MF", pkt: ipv4Pkt(nil, ProtoESP, flagMF, esp), err: ErrFragment},
		{name: "IPv4 MF and DF", pkt: ipv4Pkt(nil, ProtoESP, flagMF|flagDF, esp), err: ErrFragment},
		{name: "IPv4 last fragment", pkt: ipv4Pkt(nil, ProtoESP, 185, esp), err: ErrFragment},
		{name: "IPv4 UDP first fragment", pkt: ipv4Pkt(nil, ProtoUDP, flagMF, udpSeg(4500, 4500, esp)), err: ErrFragment},
		{name: "IPv4 TCP", pkt: ipv4Pkt(nil, ProtoTCP, 0, esp), err: ErrNotESP},
		{name: "IPv4 AH", pkt: ipv4Pkt(nil, ProtoAH, 0, esp), err: ErrNotESP},
		{name: "IPv4 IP-in-IP", pkt: ipv4Pkt(nil, ProtoIPv4, 0, esp), err: ErrNotESP},
		{name: "IPv4 UDP length beyond the packet", pkt: ipv4Pkt(nil, ProtoUDP, 0, with(udpSeg(4500, 4500, esp), func(p []byte) {
			binary.BigEndian.PutUint16(p[4:], uint16(len(p)+1))
		})), err: ErrMalformed},
		{name: "IPv4 UDP length short of the packet", pkt: ipv4Pkt(nil, ProtoUDP, 0, with(udpSeg(4500, 4500, esp), func(p []byte) {
			binary.BigEndian.PutUint16(p[4:], uint16(len(p)-1))
		})), err: ErrMalformed},
		{name: "IPv4 UDP length 0", pkt: ipv4Pkt(nil, ProtoUDP, 0, with(udpSeg(4500, 4500, esp), func(p []byte) {
			binary.BigEndian.PutUint16(p[4:], 0)
		})), err: ErrMalformed},
		{name: "IPv4 UDP truncated header", pkt: ipv4Pkt(nil, ProtoUDP, 0, udpSeg(4500, 4500, nil)[:7]), err: ErrMalformed},
		{name: "IPv4 UDP header cut by the total length", pkt: v4Sum(func(p []byte) {
			p[9] = ProtoUDP
			copy(p[20:], udpSeg(4500, 4500, nil))
			binary.BigEndian.PutUint16(p[2:], 27)
		}), err: ErrMalformed},
		{name: "IPv6 payload beyond the slice", pkt: v6[:len(v6)-1], err: ErrMalformed},
		{name: "IPv6 payload length 0xffff", pkt: with(v6, func(p []byte) { binary.BigEndian.PutUint16(p[4:], 0xffff) }), err: ErrMalformed},
		{name: "IPv6 fragment", pkt: ipv6Pkt(ProtoFragment, extChain(ProtoESP, ext{ProtoFragment, 8}), esp), err: ErrFragment},
		{name: "IPv6 atomic fragment", pkt: ipv6Pkt(ProtoFragment, with(extChain(ProtoESP, ext{ProtoFragment, 8}), func(p []byte) {
			p[1], p[2], p[3] = 0, 0, 0
		}), esp), err: ErrFragment},
		{name: "IPv6 fragment after hop-by-hop and routing", pkt: ipv6Pkt(ProtoHopByHop, extChain(ProtoESP,
			ext{ProtoHopByHop, 8}, ext{ProtoRouting, 24}, ext{ProtoFragment, 8}), esp), err: ErrFragment},
		{name: "IPv6 fragment of UDP", pkt: ipv6Pkt(ProtoFragment, extChain(ProtoUDP, ext{ProtoFragment, 8}),
			udpSeg(4500, 4500, esp)), err: ErrFragment},
		{name: "IPv6 hop-by-hop in 7 bytes", pkt: ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8})[:7], nil),
			err: ErrMalformed},
		{name: "IPv6 hop-by-hop longer than the payload", pkt: ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 16})[:8], nil),
			err: ErrMalformed},
		{name: "IPv6 hop-by-hop cut by the payload length", pkt: with(ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 16}), esp),
			func(p []byte) { binary.BigEndian.PutUint16(p[4:], 12) }), err: ErrMalformed},
		{name: "IPv6 routing truncated after hop-by-hop", pkt: with(ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8}, ext{ProtoRouting, 24}), nil),
			func(p []byte) { binary.BigEndian.PutUint16(p[4:], 8+16) }), err: ErrMalformed},
		{name: "IPv6 destination options with no room", pkt: ipv6Pkt(ProtoDstOpts, nil, nil), err: ErrMalformed},
		{name: "IPv6 TCP", pkt: ipv6Pkt(ProtoTCP, nil, esp), err: ErrNotESP},
		{name: "IPv6 no next header", pkt: ipv6Pkt(ProtoNoNext, nil, esp), err: ErrNotESP},
		{name: "IPv6 AH", pkt: ipv6Pkt(ProtoAH, extChain(ProtoESP, ext{ProtoAH, 24}), esp), err: ErrNotESP},
		{name: "IPv6 TCP after destination options", pkt: ipv6Pkt(ProtoDstOpts, extChain(ProtoTCP, ext{ProtoDstOpts, 8}), esp), err: ErrNotESP},
		{name: "IPv6 UDP length mismatch", pkt: ipv6Pkt(ProtoUDP, nil, with(udpSeg(4500, 4500, esp), func(p []byte) {
			binary.BigEndian.PutUint16(p[4:], uint16(len(p)+2))
		})), err: ErrMalformed},
		{name: "IPv6 UDP truncated header", pkt: ipv6Pkt(ProtoUDP, nil, udpSeg(4500, 4500, nil)[:4]), err: ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, payload, end, err := ParseOuter(tt.pkt)
			if !errors.Is(err, tt.err) {
				t.Fatalf("ParseOuter err = %v, want %v", err, tt.err)
			}
			if payload != 0 || end != 0 {
				t.Errorf("ParseOuter failed with payload %d, end %d; want 0, 0", payload, end)
			}
		})
	}
}

func TestParseOuter(t *testing.T) {
	esp := espPayload(32)
	v4, v4b, v6, v6b := packettest.V4A, packettest.V4B, packettest.V6A, packettest.V6B
	pad := func(p []byte, n int) []byte { return append(p, bytes.Repeat([]byte{0xee}, n)...) }
	// What ipv4Pkt and ipv6Pkt write.
	out4 := Outer{Src: v4, Dst: v4b, TOS: 0x2e, TTL: 33, ID: 0x0102}
	out6 := Outer{Src: v6, Dst: v6b, TOS: 0xa5, TTL: 44, FlowLabel: 0x12345}
	withUDP := func(o Outer, sport, dport uint16) Outer {
		o.UDP, o.SrcPort, o.DstPort = true, sport, dport
		return o
	}
	withOpts := func(o Outer, n int, next uint8) Outer {
		o.Opts, o.OptsNext = n, next
		return o
	}
	withDF := func(o Outer) Outer { o.DF = true; return o }
	for _, tt := range []parseCase{
		{name: "IPv4 ESP", pkt: ipv4Pkt(nil, ProtoESP, 0, esp), payload: 20, end: 52, want: out4},
		{name: "IPv4 ESP DF", pkt: ipv4Pkt(nil, ProtoESP, flagDF, esp), payload: 20, end: 52, want: withDF(out4)},
		{name: "IPv4 ESP reserved flag", pkt: ipv4Pkt(nil, ProtoESP, 0x8000, esp), payload: 20, end: 52, want: out4},
		{name: "IPv4 ESP link padding", pkt: pad(ipv4Pkt(nil, ProtoESP, 0, esp), 14), payload: 20, end: 52, want: out4},
		{name: "IPv4 ESP no bytes", pkt: ipv4Pkt(nil, ProtoESP, 0, nil), payload: 20, end: 20, want: out4},
		{name: "IPv4 ESP options", pkt: ipv4Pkt(v4Opts(12), ProtoESP, 0, esp), payload: 32, end: 64, want: withOpts(out4, 12, 0)},
		{name: "IPv4 ESP 40 bytes of options", pkt: pad(ipv4Pkt(v4Opts(40), ProtoESP, 0, esp), 3), payload: 60, end: 92,
			want: withOpts(out4, 40, 0)},
		{name: "IPv4 UDP", pkt: ipv4Pkt(nil, ProtoUDP, flagDF, udpSeg(4500, 4501, esp)), payload: 28, end: 60,
			want: withDF(withUDP(out4, 4500, 4501))},
		{name: "IPv4 UDP no payload", pkt: ipv4Pkt(nil, ProtoUDP, 0, udpSeg(4500, 4501, nil)), payload: 28, end: 28,
			want: withUDP(out4, 4500, 4501)},
		{name: "IPv4 UDP link padding", pkt: pad(ipv4Pkt(nil, ProtoUDP, 0, udpSeg(1, 2, esp)), 20), payload: 28, end: 60,
			want: withUDP(out4, 1, 2)},
		{name: "IPv4 UDP options left out", pkt: ipv4Pkt(v4Opts(8), ProtoUDP, 0, udpSeg(4500, 4500, esp)), payload: 36, end: 68,
			want: withUDP(out4, 4500, 4500)},
		{name: "IPv4 UDP checksum not checked", pkt: ipv4Pkt(nil, ProtoUDP, 0, with16(udpSeg(4500, 4500, esp), 6, 0x1234)),
			payload: 28, end: 60, want: withUDP(out4, 4500, 4500)},
		{name: "IPv6 ESP", pkt: ipv6Pkt(ProtoESP, nil, esp), payload: 40, end: 72, want: out6},
		{name: "IPv6 ESP link padding", pkt: pad(ipv6Pkt(ProtoESP, nil, esp), 7), payload: 40, end: 72, want: out6},
		{name: "IPv6 ESP no bytes", pkt: ipv6Pkt(ProtoESP, nil, nil), payload: 40, end: 40, want: out6},
		{name: "IPv6 ESP hop-by-hop", pkt: ipv6Pkt(ProtoHopByHop, extChain(ProtoESP, ext{ProtoHopByHop, 8}), esp),
			payload: 48, end: 80, want: withOpts(out6, 8, ProtoHopByHop)},
		{name: "IPv6 ESP routing", pkt: ipv6Pkt(ProtoRouting, extChain(ProtoESP, ext{ProtoRouting, 24}), esp),
			payload: 64, end: 96, want: withOpts(out6, 24, ProtoRouting)},
		{name: "IPv6 ESP destination options", pkt: pad(ipv6Pkt(ProtoDstOpts, extChain(ProtoESP, ext{ProtoDstOpts, 16}), esp), 5),
			payload: 56, end: 88, want: withOpts(out6, 16, ProtoDstOpts)},
		{name: "IPv6 ESP three extension headers", pkt: ipv6Pkt(ProtoHopByHop, extChain(ProtoESP,
			ext{ProtoHopByHop, 8}, ext{ProtoDstOpts, 8}, ext{ProtoRouting, 40}), esp),
			payload: 96, end: 128, want: withOpts(out6, 56, ProtoHopByHop)},
		{name: "IPv6 UDP", pkt: ipv6Pkt(ProtoUDP, nil, udpSeg(4500, 4500, esp)), payload: 48, end: 80, want: withUDP(out6, 4500, 4500)},
		{name: "IPv6 UDP link padding", pkt: pad(ipv6Pkt(ProtoUDP, nil, udpSeg(4500, 9, esp)), 11), payload: 48, end: 80,
			want: withUDP(out6, 4500, 9)},
		{name: "IPv6 UDP after destination options", pkt: ipv6Pkt(ProtoDstOpts, extChain(ProtoUDP, ext{ProtoDstOpts, 8}),
			udpSeg(4500, 4500, esp)), payload: 56, end: 88, want: withUDP(out6, 4500, 4500)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, payload, end, err := ParseOuter(tt.pkt)
			if err != nil {
				t.Fatalf("ParseOuter: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseOuter = %+v\nwant          %+v", got, tt.want)
			}
			if payload != tt.payload || end != tt.end {
				t.Errorf("payload, end = %d, %d, want %d, %d", payload, end, tt.payload, tt.end)
			}
		})
	}
}

// with16 returns b with the big-endian v written at b[at:].
func with16(b []byte, at int, v uint16) []byte {
	binary.BigEndian.PutUint16(b[at:], v)
	return b
}

// TestParseOuterIPv6MappedDst: an IPv6 packet whose destination is
// IPv4-mapped (::ffff:a.b.c.d) must not parse into an Outer that reads as
// IPv4 (Size 20 bytes short of the payload, Encode writing IPv4): it is
// refused as malformed.
func TestParseOuterIPv6MappedDst(t *testing.T) {
	for _, udp := range []bool{false, true} {
		esp := espPayload(24)
		p := ipv6Pkt(ProtoESP, nil, esp)
		if udp {
			p = ipv6Pkt(ProtoUDP, nil, udpSeg(4500, 4500, esp))
		}
		d := mapped(packettest.V4B).As16()
		copy(p[24:40], d[:])
		o, payload, _, err := ParseOuter(p)
		if err != ErrMalformed {
			t.Errorf("UDP %v: IPv6 packet to an IPv4-mapped address: ParseOuter = %+v, payload at %d, %v; want ErrMalformed",
				udp, o, payload, err)
		}
	}
}
