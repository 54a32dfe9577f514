package underlay

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestUDPHeaderRebuilt sends a datagram with a chosen TOS (ECN CE) and TTL
// or hop limit over loopback to the underlay's UDP socket, and checks the
// outer header the reader rebuilds: addresses, ports, and the TOS or
// traffic class whose CE mark the engine carries inward (RFC 6040).
func TestUDPHeaderRebuilt(t *testing.T) {
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
			got := make(chan []byte, 1)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				deliver := func(pkts []Packet) {
					p := pkts[0]
					select {
					case got <- append([]byte(nil), p.Buf[p.Start:p.End]...):
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
			var pkt []byte
			for range 50 { // the reader may not be reading yet
				if _, err := peer.WriteToUDP(payload, to); err != nil {
					t.Fatal(err)
				}
				select {
				case pkt = <-got:
				case <-time.After(100 * time.Millisecond):
					continue
				}
				break
			}
			if pkt == nil {
				t.Fatal("no datagram came through the reader")
			}
			sport := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
			var gotTOS, gotTTL, hl int
			var src, dst netip.Addr
			if tc.local.Is4() {
				hl = 20
				gotTOS, gotTTL = int(pkt[1]), int(pkt[8])
				src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
				if pkt[9] != unix.IPPROTO_UDP || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
					t.Errorf("IPv4 header %x: protocol or length wrong", pkt[:20])
				}
			} else {
				hl = 40
				gotTOS, gotTTL = int(binary.BigEndian.Uint16(pkt[0:])>>4&0xff), int(pkt[7])
				src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
				if pkt[6] != unix.IPPROTO_UDP || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
					t.Errorf("IPv6 header %x: next header or length wrong", pkt[:40])
				}
			}
			if gotTOS != tos || gotTTL != ttl {
				t.Errorf("rebuilt TOS %#x TTL %d, want %#x %d", gotTOS, gotTTL, tos, ttl)
			}
			if src != tc.local || dst != tc.local {
				t.Errorf("rebuilt addresses %v -> %v, want %v both", src, dst, tc.local)
			}
			udp := pkt[hl:]
			if binary.BigEndian.Uint16(udp[0:]) != sport || binary.BigEndian.Uint16(udp[2:]) != c.port || string(udp[8:]) != string(payload) {
				t.Errorf("rebuilt UDP %x, want ports %d -> %d and payload %x", udp, sport, c.port, payload)
			}
		})
	}
}
