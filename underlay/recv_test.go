package underlay

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"vnic/header"
)

// cmsg builds one control message of the given level and type carrying
// data, padded to its full space.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafePointer(b))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// cmsgInt builds a control message carrying a native-endian int.
func cmsgInt(level, typ int32, v uint32) []byte {
	return cmsg(level, typ, binary.NativeEndian.AppendUint32(nil, v))
}

// groCmsg builds a UDP_GRO control message carrying size.
func groCmsg(level, typ int32, size uint32) []byte { return cmsgInt(level, typ, size) }

func pktinfo4(dst [4]byte) []byte {
	d := make([]byte, unix.SizeofInet4Pktinfo)
	copy(d[8:], dst[:])
	return cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, d)
}

func pktinfo6(dst [16]byte) []byte {
	d := make([]byte, unix.SizeofInet6Pktinfo)
	copy(d, dst[:])
	return cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, d)
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// TestParseAncillary reads the control messages the underlay sockets ask
// for, alone and together, and stops at malformed ones.
func TestParseAncillary(t *testing.T) {
	v4 := [4]byte{192, 0, 2, 7}
	v6 := netip.MustParseAddr("2001:db8::7").As16()
	all4 := concat(pktinfo4(v4), cmsgInt(unix.IPPROTO_IP, unix.IP_TTL, 33), cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0xbb}), groCmsg(unix.SOL_UDP, unix.UDP_GRO, 1400))
	all6 := concat(pktinfo6(v6), cmsgInt(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, 17), cmsgInt(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0x2b))
	// A message whose length runs past the buffer, after a good TTL.
	bad := concat(cmsgInt(unix.IPPROTO_IP, unix.IP_TTL, 9), cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{3}))
	binary.NativeEndian.PutUint64(bad[unix.CmsgSpace(4):], 200)
	for _, c := range []struct {
		name string
		oob  []byte
		want ancillary
	}{
		{"empty", nil, ancillary{ttl: -1, tos: -1}},
		{"IPv4: pktinfo, TTL, TOS, GRO", all4, ancillary{dst: netip.AddrFrom4(v4), ttl: 33, tos: 0xbb, gro: 1400}},
		{"IPv6: pktinfo, hop limit, traffic class", all6, ancillary{dst: netip.AddrFrom16(v6), ttl: 17, tos: 0x2b}},
		{"unknown message skipped", concat(cmsgInt(unix.SOL_SOCKET, unix.SO_MARK, 5), cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2})), ancillary{ttl: -1, tos: 2}},
		{"short pktinfo ignored", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, make([]byte, 8)), ancillary{ttl: -1, tos: -1}},
		{"truncated header", all4[:5], ancillary{ttl: -1, tos: -1}},
		{"length past the end", bad, ancillary{ttl: 9, tos: -1}},
		{"cut inside the second message", all4[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)+10], ancillary{dst: netip.AddrFrom4(v4), ttl: -1, tos: -1}},
	} {
		if got := parseAncillary(c.oob); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// FuzzParseAncillary reads arbitrary control-message bytes: no panic, and
// each value only when a whole message of its kind holds it.
func FuzzParseAncillary(f *testing.F) {
	f.Add(groCmsg(unix.SOL_UDP, unix.UDP_GRO, 1400))
	f.Add(concat(cmsgInt(unix.IPPROTO_IP, unix.IP_TTL, 64), groCmsg(unix.SOL_UDP, unix.UDP_GRO, 9000)))
	f.Add(concat(pktinfo4([4]byte{10, 0, 0, 1}), cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{3})))
	f.Add(concat(pktinfo6([16]byte{15: 1}), cmsgInt(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 3)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, oob []byte) {
		a := parseAncillary(oob)
		if a.gro != 0 && len(oob) < unix.CmsgLen(4) {
			t.Fatalf("GRO size %d from %d bytes, less than one UDP_GRO message", a.gro, len(oob))
		}
		if a.dst.IsValid() && len(oob) < unix.CmsgLen(unix.SizeofInet4Pktinfo) {
			t.Fatalf("destination %v from %d bytes, less than one pktinfo message", a.dst, len(oob))
		}
		if a.ttl < -1 || a.ttl > 255 || a.tos < -1 || a.tos > 255 {
			t.Fatalf("TTL %d or TOS %d out of range", a.ttl, a.tos)
		}
		if (a.ttl >= 0 || a.tos >= 0) && len(oob) < unix.CmsgLen(1) {
			t.Fatalf("TTL or TOS from %d bytes, less than one message", len(oob))
		}
	})
}

// TestUDPReceiveOuter sends a datagram with a chosen TOS (ECN CE) and
// TTL or hop limit over loopback to the underlay's UDP socket, and checks
// the Packet the reader delivers: its Outer (the peer's address and port,
// the local address and port, ESP-in-UDP, and the TOS or traffic class,
// whose CE mark the engine carries inward (RFC 6040), and TTL or hop
// limit from the control messages), and Buf[Start:End] exactly the
// payload sent, with Headroom before it.
func TestUDPReceiveOuter(t *testing.T) {
	for _, tc := range []struct {
		network string
		local   netip.Addr
	}{
		{"udp4", netip.MustParseAddr("127.0.0.1")},
		{"udp6", netip.MustParseAddr("::1")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			c, peer := loopbackSender(t, tc.local)
			if tc.local.Is4() {
				c.port = uint16(c.udp4.LocalAddr().(*net.UDPAddr).Port)
			} else {
				c.port = uint16(c.udp6.LocalAddr().(*net.UDPAddr).Port)
			}
			got := make(chan Packet, 1)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				deliver := func(pkts []Packet) {
					p := pkts[0]
					p.Buf = slices.Clone(p.Buf)
					select {
					case got <- p:
					default:
					}
				}
				for _, recv := range c.Receivers() {
					for recv(deliver) == nil && ctx.Err() == nil {
					}
				}
			}()
			defer func() { cancel(); c.Close(); <-done }()

			rc, _ := peer.SyscallConn()
			const tos, ttl = 0xb8 | 0x03, 33 // DSCP EF, ECN CE
			var serr error
			rc.Control(func(fd uintptr) {
				if tc.local.Is4() {
					if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, tos); serr == nil {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
					}
				} else if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos); serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
				}
			})
			if serr != nil {
				t.Fatal(serr)
			}
			payload := []byte{0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef}
			to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.local, c.port))
			var pkt Packet
			var ok bool
			for range 50 { // the reader may not be reading yet
				if _, err := peer.WriteToUDP(payload, to); err != nil {
					t.Fatal(err)
				}
				select {
				case pkt = <-got:
					ok = true
				case <-time.After(100 * time.Millisecond):
					continue
				}
				break
			}
			if !ok {
				t.Fatal("no datagram came through the reader")
			}
			sport := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
			want := header.Outer{Src: tc.local, Dst: tc.local, UDP: true, SrcPort: sport, DstPort: c.port, TOS: tos, TTL: ttl}
			if pkt.Outer != want {
				t.Errorf("received Outer %+v, want %+v", pkt.Outer, want)
			}
			if pkt.Start != Headroom || pkt.End > len(pkt.Buf) || string(pkt.Buf[pkt.Start:pkt.End]) != string(payload) {
				t.Errorf("received Buf[%d:%d] of %d bytes, want the payload %x at %d", pkt.Start, pkt.End, len(pkt.Buf), payload, Headroom)
			}
		})
	}
}

// fakeMsg is a message as a socket returns it.
type fakeMsg struct {
	data []byte
	addr net.Addr
	oob  []byte
}

// receiveFake runs r on one read that returns ms, and returns the packets
// of each call to deliver, their buffers copied.
func receiveFake(t *testing.T, r *reader, ms ...fakeMsg) [][]Packet {
	t.Helper()
	r.batch = func(m []ipv4.Message) (int, error) {
		for i, x := range ms {
			m[i].N = copy(m[i].Buffers[0], x.data)
			m[i].Addr = x.addr
			m[i].NN = copy(m[i].OOB, x.oob)
		}
		return len(ms), nil
	}
	var got [][]Packet
	err := r.receive(func(pkts []Packet) {
		var call []Packet
		for _, p := range pkts {
			p.Buf = slices.Clone(p.Buf)
			call = append(call, p)
		}
		got = append(got, call)
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// wantPkt is a delivered packet: its Outer, where its bytes start, and
// the bytes.
type wantPkt struct {
	outer header.Outer
	start int
	data  []byte
}

func checkPackets(t *testing.T, name string, got [][]Packet, want [][]wantPkt) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d calls to deliver, want %d", name, len(got), len(want))
		return
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Errorf("%s: call %d delivered %d packets, want %d", name, i, len(got[i]), len(want[i]))
			continue
		}
		for j, w := range want[i] {
			p := got[i][j]
			if p.Outer != w.outer {
				t.Errorf("%s: packet %d.%d: Outer %+v, want %+v", name, i, j, p.Outer, w.outer)
			}
			if p.Start != w.start || p.End < p.Start || p.End > len(p.Buf) || string(p.Buf[p.Start:p.End]) != string(w.data) {
				t.Errorf("%s: packet %d.%d: Buf[%d:%d], want %d bytes at %d", name, i, j, p.Start, p.End, len(w.data), w.start)
			}
		}
	}
}

// TestReceiveOuter runs the readers, without sockets, on messages as the
// sockets return them. UDP: the peer's address and port and the control
// messages' destination, TTL and TOS make the Outer (the local address,
// 64 and 0 without them; a destination of the other family ignored; an
// IPv4-mapped peer unmapped), and every datagram a GRO read joined gets
// a buffer of its own with Headroom and the first one's Outer, in a
// further call to deliver when the segment buffers run out. Raw IPv6:
// the peer's address and the control messages, no UDP. Raw IPv4: the
// header the socket hands over, options and link padding left out of
// Buf[Start:End]; a malformed one yields an empty packet.
func TestReceiveOuter(t *testing.T) {
	l4, l6 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")
	peer4, peer6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	c := &Conn{local4: l4, local6: l6, port: 4500}
	fill := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*3)
		}
		return b
	}
	withSegs := func(r *reader, n int) *reader {
		r.segs = make([][]byte, n)
		for i := range r.segs {
			r.segs[i] = make([]byte, Headroom+segSize+64)
		}
		return r
	}

	// UDP over IPv4, with GRO.
	other4 := netip.MustParseAddr("192.0.2.10")
	ctl4 := concat(pktinfo4(other4.As4()), cmsgInt(unix.IPPROTO_IP, unix.IP_TTL, 33), cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0xbb}))
	gro := fill(2500, 1)
	from := &net.UDPAddr{IP: peer4.AsSlice(), Port: 4501}
	o := header.Outer{Src: peer4, Dst: other4, UDP: true, SrcPort: 4501, DstPort: 4500, TOS: 0xbb, TTL: 33}
	mapped := &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 4502} // 16 bytes, as IPv4-mapped
	got := receiveFake(t, withSegs(newReader("udp4", nil, c.socketOuter, true), groSegments),
		fakeMsg{gro, from, concat(ctl4, cmsgInt(unix.SOL_UDP, unix.UDP_GRO, 1000))},
		fakeMsg{[]byte{0xff}, mapped, nil},
		fakeMsg{gro[:700], from, concat(pktinfo6(l6.As16()), cmsgInt(unix.SOL_UDP, unix.UDP_GRO, 1000))})
	checkPackets(t, "UDP over IPv4", got, [][]wantPkt{{
		{o, Headroom, gro[:1000]}, {o, Headroom, gro[1000:2000]}, {o, Headroom, gro[2000:]},
		{header.Outer{Src: netip.MustParseAddr("192.0.2.2"), Dst: l4, UDP: true, SrcPort: 4502, DstPort: 4500, TTL: 64}, Headroom, []byte{0xff}},
		{header.Outer{Src: peer4, Dst: l4, UDP: true, SrcPort: 4501, DstPort: 4500, TTL: 64}, Headroom, gro[:700]},
	}})

	// More joined datagrams than segment buffers: the packets so far
	// are delivered first.
	got = receiveFake(t, withSegs(newReader("udp4", nil, c.socketOuter, true), 2),
		fakeMsg{gro[:3000-500], from, concat(ctl4, cmsgInt(unix.SOL_UDP, unix.UDP_GRO, 1000))},
		fakeMsg{fill(2100, 7), from, concat(ctl4, cmsgInt(unix.SOL_UDP, unix.UDP_GRO, 1000))})
	second := fill(2100, 7)
	checkPackets(t, "GRO beyond the segment buffers", got, [][]wantPkt{
		{{o, Headroom, gro[:1000]}, {o, Headroom, gro[1000:2000]}, {o, Headroom, gro[2000:]}},
		{{o, Headroom, second[:1000]}, {o, Headroom, second[1000:2000]}, {o, Headroom, second[2000:]}},
	})

	// UDP over IPv6, and raw IPv6.
	other6 := netip.MustParseAddr("2001:db8::10")
	ctl6 := concat(pktinfo6(other6.As16()), cmsgInt(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, 17), cmsgInt(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 0x2b))
	esp := fill(300, 9)
	got = receiveFake(t, newReader("udp6", nil, c.socketOuter, true),
		fakeMsg{esp, &net.UDPAddr{IP: peer6.AsSlice(), Port: 1024}, ctl6},
		fakeMsg{esp[:9], &net.UDPAddr{IP: peer6.AsSlice(), Port: 1025}, pktinfo4(other4.As4())})
	checkPackets(t, "UDP over IPv6", got, [][]wantPkt{{
		{header.Outer{Src: peer6, Dst: other6, UDP: true, SrcPort: 1024, DstPort: 4500, TOS: 0x2b, TTL: 17}, Headroom, esp},
		{header.Outer{Src: peer6, Dst: l6, UDP: true, SrcPort: 1025, DstPort: 4500, TTL: 64}, Headroom, esp[:9]},
	}})
	got = receiveFake(t, newReader("raw6", nil, c.socketOuter, true),
		fakeMsg{esp, &net.IPAddr{IP: peer6.AsSlice()}, ctl6})
	checkPackets(t, "raw IPv6", got, [][]wantPkt{{
		{header.Outer{Src: peer6, Dst: other6, TOS: 0x2b, TTL: 17}, Headroom, esp},
	}})

	// Raw IPv4: the header as the socket hands it over, here with 4 bytes
	// of options and 3 of link padding after the packet.
	ip := []byte{0x46, 0xb9, 0, 0, 0x12, 0x34, 0x40, 0, 7, unix.IPPROTO_ESP, 0, 0}
	ip = append(ip, peer4.AsSlice()...)
	ip = append(ip, l4.AsSlice()...)
	ip = append(ip, 0x94, 0x04, 0, 0) // Router Alert
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(esp)))
	whole := concat(ip, esp, []byte{0, 0, 0})
	got = receiveFake(t, newReader("raw4", nil, rawOuter4, false),
		fakeMsg{whole, &net.IPAddr{IP: peer4.AsSlice()}, nil},
		fakeMsg{whole[:10], &net.IPAddr{IP: peer4.AsSlice()}, nil})
	checkPackets(t, "raw IPv4", got, [][]wantPkt{{
		{header.Outer{Src: peer4, Dst: l4, TOS: 0xb9, TTL: 7, DF: true, ID: 0x1234, Opts: 4}, Headroom + 24, esp},
		{header.Outer{}, Headroom, nil},
	}})
}
