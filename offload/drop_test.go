package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"vnic/header"

	"vnic/sadb"
)

// craft builds a raw-ESP IPv4 packet from v4a to v4b for the outbound SA
// out, whose encrypted part is payload || pad || len(pad) || next: a valid
// ICV over whatever trailer a test wants. It returns the buffer and the
// packet's bounds.
func craft(t *testing.T, out *sadb.SA, payload, pad []byte, next byte) ([]byte, int, int) {
	return craftPad(t, out, payload, pad, byte(len(pad)), next)
}

// craftPad is craft with a pad-length byte that may lie.
func craftPad(t *testing.T, out *sadb.SA, payload, pad []byte, padLen, next byte) ([]byte, int, int) {
	t.Helper()
	c := out.Cipher
	seq, _, err := out.Out.Next()
	if err != nil {
		t.Fatal(err)
	}
	buf := newBuf()
	start := 64
	esp := start + 20
	p := esp + 8 + c.IVLen()
	n := copy(buf[p:], payload)
	n += copy(buf[p+n:], pad)
	buf[p+n], buf[p+n+1] = padLen, next
	end := p + n + 2 + c.ICVLen()
	h := header.IPv4(buf[start:])
	h[0] = 0x45
	h.SetTotalLen(end - start)
	h[8], h[9] = 64, header.ProtoESP
	a, b := v4a.As4(), v4b.As4()
	copy(h[12:], a[:])
	copy(h[16:], b[:])
	h.SetChecksum()
	binary.BigEndian.PutUint32(buf[esp:], out.Config.SPI)
	binary.BigEndian.PutUint32(buf[esp+4:], uint32(seq))
	c.Seal(buf[:end], esp, seq)
	return buf, start, end
}

func innerUDP(n int) []byte {
	buf := newBuf()
	end := udpPacket(buf, 0, in4a, in4b, 1000, 2000, n)
	return buf[:end]
}

// TestInboundDrops checks that each kind of bad packet is dropped under
// the right counter name, and that what is delivered is exactly the inner
// packet.
func TestInboundDrops(t *testing.T) {
	tunnel := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128()}
	sel := tunnel
	sel.Selectors = []sadb.Selector{{Proto: header.ProtoTCP}}
	cases := []struct {
		name    string
		cfg     sadb.Config
		payload []byte
		pad     []byte
		next    byte
		want    error
		reason  string
	}{
		{"good", tunnel, innerUDP(10), []byte{1, 2}, header.ProtoIPv4, nil, ""},
		{"TFC padding accepted", tunnel, append(innerUDP(10), make([]byte, 37)...), []byte{1}, header.ProtoIPv4, nil, ""},
		{"bad pad byte", tunnel, innerUDP(10), []byte{1, 3}, header.ProtoIPv4, ErrBadPadding, "XfrmInStateProtoError"},
		{"pad length too long", tunnel, []byte{0xaa, 0xbb}, nil, header.ProtoIPv4, ErrBadPadding, "XfrmInStateProtoError"},
		{"dummy packet", tunnel, innerUDP(10), []byte{1, 2}, header.ProtoNoNext, ErrDummy, "VnicInDummy"},
		{"next header not IP in tunnel mode", tunnel, innerUDP(10), []byte{1, 2}, header.ProtoUDP, ErrBadNextHeader, "XfrmInStateModeError"},
		{"next header IPv6 but IPv4 inside", tunnel, innerUDP(10), []byte{1, 2}, header.ProtoIPv6, ErrBadInner, "XfrmInStateModeError"},
		{"inner length beyond payload", tunnel, innerUDP(10)[:30], nil, header.ProtoIPv4, ErrBadInner, "XfrmInStateModeError"},
		{"selector mismatch", sel, innerUDP(10), []byte{1, 2}, header.ProtoIPv4, ErrSelector, "XfrmInTmplMismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, in := pair(t, tc.cfg)
			padLen := byte(len(tc.pad))
			if tc.name == "pad length too long" {
				padLen = 200 // with 2 bytes of plaintext before it
			}
			buf, start, end := craftPad(t, out, tc.payload, tc.pad, padLen, tc.next)
			h, kind, err := parseWire(buf, start, end)
			if err != nil || kind != KindESP {
				t.Fatalf("Parse: %v %v", kind, err)
			}
			sp, _, err := Decapsulate(in, &h, buf)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decapsulate = %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				want := innerUDP(10)
				if string(buf[sp.Start:sp.End]) != string(want) {
					t.Fatalf("delivered %x, want %x", buf[sp.Start:sp.End], want)
				}
				return
			}
			if r, _ := ReasonOf(err); r.String() != tc.reason {
				t.Errorf("counted as %v, want %s", r, tc.reason)
			}
		})
	}
}

func TestInboundHeaderErrors(t *testing.T) {
	out, in := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128()})
	buf, start, end := craft(t, out, innerUDP(10), nil, header.ProtoIPv4)
	wire := append([]byte(nil), buf[start:end]...)
	try := func(name string, mutate func(b []byte) []byte, want error) {
		t.Run(name, func(t *testing.T) {
			b := mutate(append([]byte(nil), wire...))
			buf := make([]byte, len(b)+64)
			copy(buf[32:], b)
			h, _, err := parseWire(buf, 32, 32+len(b))
			if err == nil {
				_, _, err = Decapsulate(in, &h, buf)
			}
			if !errors.Is(err, want) {
				t.Fatalf("got %v, want %v", err, want)
			}
		})
	}
	try("truncated IP header", func(b []byte) []byte { return b[:15] }, header.ErrMalformed)
	try("total length beyond packet", func(b []byte) []byte { return b[:len(b)-1] }, header.ErrMalformed)
	try("truncated ESP", func(b []byte) []byte {
		b = b[:20+12]
		header.IPv4(b).SetTotalLen(len(b))
		return b
	}, ErrMalformed)
	try("fragment", func(b []byte) []byte { b[6] |= 0x20; return b }, header.ErrFragment)
	try("not ESP", func(b []byte) []byte { b[9] = header.ProtoTCP; return b }, header.ErrNotESP)
	try("bad ICV", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrAuthTunnel)
	try("bad ciphertext", func(b []byte) []byte { b[40] ^= 1; return b }, ErrAuthTunnel)
	try("good", func(b []byte) []byte { return b }, nil)
	try("replayed", func(b []byte) []byte { return b }, ErrReplay)
}

func TestParseUDPKinds(t *testing.T) {
	mk := func(payload []byte) ([]byte, int) {
		buf := newBuf()
		p := buf[32:]
		h := header.IPv4(p)
		h[0] = 0x45
		h.SetTotalLen(28 + len(payload))
		h[8], h[9] = 64, header.ProtoUDP
		binary.BigEndian.PutUint16(p[20:], 4500)
		binary.BigEndian.PutUint16(p[22:], 4500)
		binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
		copy(p[28:], payload)
		return buf, 32 + 28 + len(payload)
	}
	cases := []struct {
		name    string
		payload []byte
		kind    Kind
		err     error
	}{
		{"keepalive", []byte{0xff}, KindKeepalive, nil},
		{"IKE non-ESP marker", []byte{0, 0, 0, 0, 1, 2, 3, 4}, KindIKE, nil},
		{"ESP", []byte{0, 0, 0x30, 0, 0, 0, 0, 1}, KindESP, nil},
		{"too short for ESP", []byte{1, 2, 3}, 0, ErrMalformed},
	}
	for _, tc := range cases {
		buf, end := mk(tc.payload)
		h, kind, err := parseWire(buf, 32, end)
		if !errors.Is(err, tc.err) || err == nil && kind != tc.kind {
			t.Errorf("%s: kind %v err %v", tc.name, kind, err)
		}
		if tc.kind == KindESP && err == nil && (h.SPI != 0x3000 || !h.UDP || h.DstPort != 4500) {
			t.Errorf("%s: header %+v", tc.name, h)
		}
	}
}

func TestEncapMismatch(t *testing.T) {
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128()}
	out, _ := pair(t, cfg)
	cfg.Encap.UDP = true
	_, in := pair(t, cfg)
	buf, start, end := craft(t, out, innerUDP(10), nil, header.ProtoIPv4)
	h, _, _ := parseWire(buf, start, end)
	if _, _, err := Decapsulate(in, &h, buf); !errors.Is(err, ErrEncapMismatch) {
		t.Fatalf("raw ESP to a UDP SA: %v", err)
	}
}

// TestOutboundLimits: exhaustion warns once and then refuses to send; hard
// lifetimes stop the SA; soft ones only warn.
func TestOutboundLimits(t *testing.T) {
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128(),
		InitialSeq: 1<<32 - 3}
	out, _ := pair(t, cfg)
	var events Event
	for i := range 3 {
		buf := newBuf()
		end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
		_, ev, err := encapWire(out, buf, Headroom, end)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		events |= ev
	}
	if events&EventSeqNearExhaustion == 0 {
		t.Error("no exhaustion warning before the last sequence number")
	}
	buf := newBuf()
	end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
	if _, _, err := encapWire(out, buf, Headroom, end); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("after 2^32-1: %v, want ErrSeqExhausted", err)
	}

	cfg = sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128(),
		Lifetime: sadb.Lifetime{SoftPackets: 2, HardPackets: 3}}
	out, _ = pair(t, cfg)
	want := []Event{0, EventSoftLifetime, EventHardLifetime}
	for i, w := range want {
		buf := newBuf()
		end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
		_, ev, err := encapWire(out, buf, Headroom, end)
		if err != nil || ev != w {
			t.Fatalf("packet %d: events %v err %v, want %v", i, ev, err, w)
		}
	}
	end = udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
	if _, _, err := encapWire(out, buf, Headroom, end); !errors.Is(err, ErrOutExpired) {
		t.Fatalf("after the hard limit: %v", err)
	}
}

func TestNoRoom(t *testing.T) {
	out, _ := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128()})
	buf := newBuf()
	end := udpPacket(buf, 10, in4a, in4b, 1, 2, 10)
	if _, _, err := encapWire(out, buf, 10, end); !errors.Is(err, ErrNoRoomOut) {
		t.Fatalf("no headroom: %v", err)
	}
	end = udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
	if _, _, err := encapWire(out, buf[:end:end+4], Headroom, end); !errors.Is(err, ErrNoRoomOut) {
		t.Fatalf("no tailroom: %v", err)
	}
	if out.Out.Last() != 0 {
		t.Fatalf("a refused packet used sequence number %d", out.Out.Last())
	}
}

// TestECN: CE in the inner packet becomes ECT(0) outside (RFC 4301), and
// CE outside marks an ECN-capable inner packet on the way in (RFC 6040).
func TestECN(t *testing.T) {
	out, in := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128()})
	buf := newBuf()
	end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
	buf[Headroom+1] = 0xb8 | header.ECNCE // DSCP EF, CE
	header.IPv4(buf[Headroom:]).SetChecksum()
	sp, _, err := encapWire(out, buf, Headroom, end)
	if err != nil {
		t.Fatal(err)
	}
	if tos := buf[sp.Start+1]; tos != 0xb8|header.ECNECT0 {
		t.Fatalf("outer TOS %#x, want DSCP copied and ECT(0)", tos)
	}
	// Mark CE on the outer header, as a congested router would.
	buf[sp.Start+1] |= header.ECNCE
	header.IPv4(buf[sp.Start:]).SetChecksum()
	h, _, _ := parseWire(buf, sp.Start, sp.End)
	got, _, err := Decapsulate(in, &h, buf)
	if err != nil {
		t.Fatal(err)
	}
	inner := header.IPv4(buf[got.Start:got.End])
	if inner.TOS()&header.ECNMask != header.ECNCE || header.Fold(header.Sum(inner[:20], 0)) != 0xffff {
		t.Fatalf("inner TOS %#x after CE outside (checksum ok=%v)", inner.TOS(), header.Fold(header.Sum(inner[:20], 0)) == 0xffff)
	}
}

// TestDeletedSA: a packet holding an SA that was deleted meanwhile is
// dropped, both ways.
func TestDeletedSA(t *testing.T) {
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x3000, Algo: gcm128(), Direction: sadb.Outbound}
	tab := sadb.New(sadb.TableConfig{Capacity: 2})
	res, _ := tab.Add([]sadb.Config{cfg})
	sa := tab.Get(res[0].Handle)
	tab.Delete([]sadb.Handle{res[0].Handle})
	buf := newBuf()
	end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
	if _, _, err := encapWire(sa, buf, Headroom, end); !errors.Is(err, ErrOutDead) {
		t.Fatalf("outbound on a deleted SA: %v", err)
	}
	if r, _ := ReasonOf(ErrOutDead); r != sadb.OutNoStates {
		t.Fatalf("counted as %v", r)
	}
}

// TestNATTransportChecksum: in transport mode over ESP-in-UDP, a NAT
// rewrites the outer source address, which becomes the delivered packet's
// source, while the TCP or UDP checksum inside was computed with the
// sender's own address. Decapsulate must deliver a checksum that is valid
// for the addresses delivered (RFC 3948 §3.1.2), and nothing else changed.
func TestNATTransportChecksum(t *testing.T) {
	for _, c := range []struct {
		name                 string
		private, public, dst netip.Addr
		proto                byte
	}{
		{"tcp4", netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("198.51.100.7"), v4b, header.ProtoTCP},
		{"udp4", netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("198.51.100.7"), v4b, header.ProtoUDP},
		{"tcp6", netip.MustParseAddr("fd00::1"), netip.MustParseAddr("2001:db8:99::1"), v6b, header.ProtoTCP},
		{"udp6", netip.MustParseAddr("fd00::1"), netip.MustParseAddr("2001:db8:99::1"), v6b, header.ProtoUDP},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := sadb.Config{Mode: sadb.Transport, Src: c.private, Dst: c.dst, SPI: 0x2000, Algo: gcm128(), Encap: sadb.Encap{UDP: true}}
			out, _ := pair(t, cfg)
			cfg.Src = c.public // the receiver knows the sender by its NAT address
			_, in := pair(t, cfg)

			// The sender's packet, its checksum made with its own address.
			buf := newBuf()
			hl := ipv4MinHeader
			if c.dst.Is6() {
				hl = ipv6Header
			}
			end := udpPacket(buf, Headroom, c.private, c.dst, 5000, 80, 100)
			pkt := buf[Headroom:end]
			seg := pkt[hl:]
			if c.proto == header.ProtoTCP { // the same bytes as a TCP segment
				if hl == ipv6Header {
					pkt[6] = header.ProtoTCP
				} else {
					pkt[9] = header.ProtoTCP
					header.IPv4(pkt).SetChecksum()
				}
				seg[12] = 5 << 4 // data offset: 20 bytes
				setRefChecksum(pkt[:hl], header.ProtoTCP, seg)
			}
			sent := bytes.Clone(pkt)
			sp, _, err := encapWire(out, buf, Headroom, end)
			if err != nil {
				t.Fatal(err)
			}

			// The NAT: new outer source (and port), header checksum fixed.
			wire := buf[sp.Start:sp.End]
			if c.dst.Is4() {
				a := c.public.As4()
				copy(wire[12:16], a[:])
				header.IPv4(wire).SetChecksum()
				binary.BigEndian.PutUint16(wire[ipv4MinHeader:], 31000)
			} else {
				a := c.public.As16()
				copy(wire[8:24], a[:])
				u := header.UDP(wire[ipv6Header:])
				u.SetChecksum(0)
				u.SetChecksum(header.TransportChecksum(wire, header.ProtoUDP, u))
			}
			h, kind, err := parseWire(buf, sp.Start, sp.End)
			if err != nil || kind != KindESP {
				t.Fatalf("Parse: %v, kind %d", err, kind)
			}
			got, _, err := Decapsulate(in, &h, buf)
			if err != nil {
				t.Fatalf("Decapsulate: %v", err)
			}
			d := buf[got.Start:got.End]
			if len(d) != len(sent) {
				t.Fatalf("delivered %d bytes, sent %d", len(d), len(sent))
			}
			var src netip.Addr
			if c.dst.Is4() {
				src = header.IPv4(d).Src()
			} else {
				src = header.IPv6(d).Src()
			}
			if src != c.public {
				t.Fatalf("delivered from %v, want the NAT address %v", src, c.public)
			}
			// Valid for the delivered addresses: the checksum that the
			// model computes is the one delivered.
			want := bytes.Clone(d)
			setRefChecksum(want[:hl], c.proto, want[hl:])
			if !bytes.Equal(d, want) {
				t.Errorf("delivered checksum is not valid for %v -> %v:\n got %x\nwant %x", src, c.dst, d[hl:hl+20], want[hl:hl+20])
			}
			// And nothing but the addresses and checksums changed.
			ck := map[byte]int{header.ProtoTCP: 16, header.ProtoUDP: 6}[c.proto]
			for i := range d[hl:] {
				if (i < ck || i > ck+1) && d[hl+i] != sent[hl+i] {
					t.Fatalf("delivered segment differs from the sent one at byte %d", i)
				}
			}
			if bytes.Equal(d[hl+ck:hl+ck+2], sent[hl+ck:hl+ck+2]) {
				t.Error("checksum unchanged although the source address changed")
			}
		})
	}
}

// TestPeerNearExhaustion: the first packet an inbound SA accepts within
// the warning margin of the last sequence number (the peer will soon have
// to stop) raises EventSeqNearExhaustion, once; a forged packet numbered
// there does not.
func TestPeerNearExhaustion(t *testing.T) {
	const last = 1<<32 - 1
	warnFrom := uint64(last - sadb.DefaultWarnAt)
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x5000, Algo: gcm128(), InitialSeq: warnFrom - 1}
	out, in := pair(t, cfg)
	for i, want := range []bool{false, true, false, false} {
		buf := newBuf()
		end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 10)
		sp, _, err := encapWire(out, buf, Headroom, end)
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := parseWire(buf, sp.Start, sp.End)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 { // a forged copy first: fails its ICV, raises nothing
			forged := bytes.Clone(buf)
			forged[sp.End-1] ^= 1
			if _, ev, err := Decapsulate(in, &h, forged); err == nil || ev&EventSeqNearExhaustion != 0 {
				t.Fatalf("forged packet: %v, events %#x", err, ev)
			}
		}
		_, ev, err := Decapsulate(in, &h, buf)
		if err != nil {
			t.Fatalf("packet %d (seq %d): %v", i, warnFrom-1+uint64(i), err)
		}
		if got := ev&EventSeqNearExhaustion != 0; got != want {
			t.Errorf("packet %d (seq %d, warning from %d): near exhaustion %v, want %v", i, warnFrom-1+uint64(i), warnFrom, got, want)
		}
	}
}

// TestTransportKeepsTTL: in transport mode the outer header is the host's
// own, hop limit 0 included (a packet never to be forwarded stays so), on
// the wire and once delivered; a tunnel's outer header has the device's
// TTL, 64. And Decapsulate refuses ESP that leaves the ciphers no
// scratch before it.
func TestTransportKeepsTTL(t *testing.T) {
	for _, fam := range []struct{ src, dst netip.Addr }{{v4a, v4b}, {v6a, v6b}} {
		out, in := pair(t, sadb.Config{Mode: sadb.Transport, Src: fam.src, Dst: fam.dst, SPI: 0x2100, Algo: gcm128()})
		buf := newBuf()
		end := udpPacket(buf, Headroom, fam.src, fam.dst, 1, 2, 30)
		ttlAt := 8
		if fam.dst.Is6() {
			ttlAt = 7
		}
		buf[Headroom+ttlAt] = 0
		if fam.dst.Is4() {
			header.IPv4(buf[Headroom:]).SetChecksum()
		}
		sent := bytes.Clone(buf[Headroom:end])
		sp, _, err := encapWire(out, buf, Headroom, end)
		if err != nil {
			t.Fatal(err)
		}
		if got := buf[sp.Start+ttlAt]; got != 0 {
			t.Errorf("%v: outer TTL %d, want the packet's 0", fam.dst, got)
		}
		h, _, err := parseWire(buf, sp.Start, sp.End)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := Decapsulate(in, &h, buf)
		if err != nil || !bytes.Equal(buf[got.Start:got.End], sent) {
			t.Errorf("%v: delivered %x, %v\nwant      %x", fam.dst, buf[got.Start:got.End], err, sent)
		}
	}
	out, in := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x2101, Algo: gcm128()})
	buf := newBuf()
	end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 30)
	j, _, err := Encapsulate(out, buf, Headroom, end)
	if err != nil || j.Outer.TTL != header.DefaultTTL {
		t.Fatalf("tunnel outer TTL %d, %v; want %d", j.Outer.TTL, err, header.DefaultTTL)
	}
	b2 := make([]byte, 8+j.Len()+64)
	copy(b2[8:], buf[j.Start:j.End])
	h, _, _ := Parse(b2, 8, 8+j.Len(), &j.Outer)
	if _, _, err := Decapsulate(in, &h, b2); !errors.Is(err, ErrMalformed) {
		t.Errorf("ESP 8 bytes into its buffer: %v, want %v", err, ErrMalformed)
	}
}
