package ipfrag

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"vnic/internal/testutil"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKernelReassembles checks the fragmenters against Linux: in a
// network namespace of its own, it sends the fragments of UDP datagrams
// made by FragmentIPv4 and FragmentIPv6 over loopback through raw sockets
// (IP_HDRINCL, IPV6_HDRINCL), and a UDP socket must receive each datagram
// whole, the kernel having reassembled it and found its checksum right.
func TestKernelReassembles(t *testing.T) {
	testutil.EnterNetns(t)
	raw4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IP_HDRINCL implied
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw4)
	raw6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW) // IPV6_HDRINCL implied
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw6)

	cases := []struct {
		v6       bool
		opts     []opt
		exts     []ext
		size     int // UDP payload
		mtu      int
		reversed bool
	}{
		{size: 8000, mtu: 1500},
		{size: 8000, mtu: 1500, reversed: true},
		{opts: []opt{nop, optRR, optRA, optTS, optSec}, size: 3000, mtu: 576},
		{opts: []opt{optRA}, size: 1000, mtu: 68},
		{size: 65507, mtu: 9000},
		{v6: true, size: 8000, mtu: 1280},
		{v6: true, size: 8000, mtu: 1280, reversed: true},
		{v6: true, exts: []ext{{0, 8}}, size: 5000, mtu: 1500},
		{v6: true, exts: []ext{{0, 8}, {60, 16}}, size: 3000, mtu: 1280},
		{v6: true, exts: []ext{{0, 8}, {43, 24}}, size: 3000, mtu: 1280},
		{v6: true, size: 65527, mtu: 9000},
	}
	for i, c := range cases {
		name := fmt.Sprintf("IPv4 %d bytes, options %v, mtu %d", c.size, c.opts, c.mtu)
		network, local := "udp4", net.IPv4(127, 0, 0, 1)
		if c.v6 {
			name = fmt.Sprintf("IPv6 %d bytes, headers %v, mtu %d", c.size, c.exts, c.mtu)
			network, local = "udp6", net.IPv6loopback
		}
		if c.reversed {
			name += ", reversed"
		}
		conn, err := net.ListenUDP(network, &net.UDPAddr{IP: local})
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		payload := pattern(c.size, byte(i))
		var frags [][]byte
		if c.v6 {
			pkt := ipv6Packet(c.exts, 17, udpSegment(local, 40000, port, payload))
			copy(pkt[8:24], net.IPv6loopback)
			copy(pkt[24:40], net.IPv6loopback)
			u, _, _ := refUnfrag(pkt)
			frags, err = FragmentIPv6(pkt, c.mtu, 0x1000+uint32(i), make([]byte, ScratchSizeIPv6(len(pkt), c.mtu, u)), nil)
		} else {
			pkt := ipv4Packet(c.opts, 17, 0x1000+uint16(i), udpSegment(local, 40000, port, payload))
			copy(pkt[12:16], local.To4())
			copy(pkt[16:20], local.To4())
			fixChecksum4(pkt)
			frags, err = FragmentIPv4(pkt, c.mtu, make([]byte, ScratchSizeIPv4(len(pkt), c.mtu, 60)), nil)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(frags) < 2 {
			t.Fatalf("%s: %d fragments", name, len(frags))
		}
		if c.reversed {
			slices.Reverse(frags)
		}
		for _, f := range frags {
			if c.v6 {
				err = unix.Sendto(raw6, f, 0, &unix.SockaddrInet6{Addr: [16]byte(local.To16())})
			} else {
				err = unix.Sendto(raw4, f, 0, &unix.SockaddrInet4{Addr: [4]byte(local.To4())})
			}
			if err != nil {
				t.Fatalf("%s: sending a %d-byte fragment: %v", name, len(f), err)
			}
		}
		buf := make([]byte, 65536)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s: %d fragments sent, no datagram received: %v", name, len(frags), err)
		}
		if !bytes.Equal(buf[:n], payload) || from.Port != 40000 {
			t.Errorf("%s: received %d bytes from port %d, want %d from 40000", name, n, from.Port, len(payload))
		}
		conn.Close()
	}
}

// TestReassembleKernelFragments checks the Reassembler against Linux: in
// a network namespace of its own, it sends UDP datagrams over loopback,
// IPv4 ones (some with IP options) larger than its MTU of 1500, and IPv6
// ones larger than an MTU of 1500 or 1280 (some with extension headers:
// Hop-by-Hop Options, a Segment Routing header and the Destination Options
// before it, all unfragmentable, and Destination Options, which Linux
// puts into the unfragmentable part too unless a Routing header comes
// first), which the kernel fragments; it captures the fragments with
// packet sockets as they arrive (before the kernel reassembles them), and
// reassembles them: the datagram must be the one sent, its UDP checksum
// right.
func TestReassembleKernelFragments(t *testing.T) {
	lo := testutil.EnterNetns(t)
	const ethPIP, ethPIPv6 = 0x0008, 0xdd86 // ETH_P_IP and ETH_P_IPV6 in network byte order
	capture := func(proto uint16) int {
		ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(ps) })
		if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: lo.Attrs().Index}); err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptTimeval(ps, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
			t.Fatal(err)
		}
		return ps
	}
	ps4, ps6 := capture(ethPIP), capture(ethPIPv6)
	peers := map[bool]*net.UDPConn{}
	for _, v6 := range []bool{false, true} {
		network, local := "udp4", net.IPv4(127, 0, 0, 1)
		if v6 {
			network, local = "udp6", net.IPv6loopback
		}
		peer, err := net.ListenUDP(network, &net.UDPAddr{IP: local})
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		peers[v6] = peer
	}
	r := NewReassembler(Config{Headroom: 16, Tailroom: 16})
	buf := make([]byte, 65536)
	for i, c := range []struct {
		v6   bool
		opts []opt // IPv4 options
		// IPv6 Hop-by-Hop Options and Destination Options headers'
		// lengths, before a Segment Routing header (only with srh) and
		// after it; and a Segment Routing header to ::1.
		hbh, rtDst, dst int
		srh             bool
		size            int
		mtu             int
	}{
		{size: 3000, mtu: 1500},
		{size: 65507, mtu: 1500},
		{opts: []opt{optRR}, size: 5000, mtu: 1500},
		{opts: []opt{optRA, optRR}, size: 20000, mtu: 1500},
		{v6: true, size: 3000, mtu: 1500},
		{v6: true, size: 65527, mtu: 1500},
		{v6: true, size: 10000, mtu: 1280},
		{v6: true, hbh: 8, size: 5000, mtu: 1280},
		{v6: true, hbh: 256, size: 20000, mtu: 1500},
		{v6: true, dst: 16, size: 5000, mtu: 1500},
		{v6: true, hbh: 16, dst: 48, size: 30000, mtu: 1280},
		{v6: true, srh: true, dst: 16, size: 4000, mtu: 1500},
		{v6: true, hbh: 8, rtDst: 8, srh: true, dst: 24, size: 9000, mtu: 1280},
	} {
		name := fmt.Sprintf("IPv4 %d bytes, options %v, mtu %d", c.size, c.opts, c.mtu)
		var exts []ext // the IPv6 extension headers expected
		if c.v6 {
			name = fmt.Sprintf("IPv6 %d bytes, hop-by-hop %d, destination %d, routing %v, destination %d, mtu %d", c.size, c.hbh, c.rtDst, c.srh, c.dst, c.mtu)
			for _, e := range []ext{{0, c.hbh}, {60, c.rtDst}, {43, 24 * btoi(c.srh)}, {60, c.dst}} {
				if e.len > 0 {
					exts = append(exts, e)
				}
			}
		}
		if err := netlink.LinkSetMTU(lo, c.mtu); err != nil {
			t.Fatal(err)
		}
		network, ps := "udp4", ps4
		if c.v6 {
			network, ps = "udp6", ps6
		}
		conn, err := net.DialUDP(network, nil, peers[c.v6].LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		sc, _ := conn.SyscallConn()
		sc.Control(func(fd uintptr) {
			if c.opts != nil {
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(encodeOpts(c.opts, false)))
			}
			if c.hbh > 0 && err == nil {
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, string(optionsHeader(c.hbh)))
			}
			if c.dst > 0 && err == nil {
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(optionsHeader(c.dst)))
			}
			if c.rtDst > 0 && err == nil {
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RTHDRDSTOPTS, string(optionsHeader(c.rtDst)))
			}
			if c.srh && err == nil {
				// RFC 8754: 1 segment, ::1, the last; none left.
				srh := append([]byte{0, 2, 4, 0, 0, 0, 0, 0}, net.IPv6loopback...)
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RTHDR, string(srh))
			}
		})
		if err != nil {
			t.Fatalf("%s: setting the options: %v", name, err)
		}
		payload := pattern(c.size, byte(i))
		if _, err := conn.Write(payload); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		conn.Close()
		fragments := 0
		var first []byte // the headers of the first fragment, before its data
		for {
			n, from, err := unix.Recvfrom(ps, buf, 0)
			if err != nil {
				t.Fatalf("%s: %d fragments captured, then %v", name, fragments, err)
			}
			if from.(*unix.SockaddrLinklayer).Pkttype == unix.PACKET_OUTGOING {
				continue // only ETH_P_ALL sockets see them, but to be sure: each fragment once
			}
			if !IsFragment(buf[:n]) {
				t.Fatalf("%s: a %d-byte packet is not a fragment", name, n)
			}
			fragments++
			if off, hl := kernelFragment(buf[:n]); off == 0 {
				first = bytes.Clone(buf[:hl])
			}
			d, res, _ := r.Add(buf[:n], time.Now())
			if res == Held {
				continue
			}
			if res != Complete {
				t.Fatalf("%s: fragment %d: %v", name, fragments, res)
			}
			if fragments < 2 {
				t.Fatalf("%s: one fragment", name)
			}
			if c.v6 {
				checkKernelDatagram6(t, name, d.Packet(), first, exts, payload)
			} else {
				checkKernelDatagram4(t, name, d.Packet(), first, payload)
			}
			r.Release(d)
			break
		}
		if r.Len() != 0 {
			t.Errorf("%d datagrams left", r.Len())
		}
	}
}

// optionsHeader returns a Hop-by-Hop or Destination Options header of n
// bytes (a multiple of 8, at most 2048) for IPV6_HOPOPTS or IPV6_DSTOPTS,
// filled with options of type 0x1e (to be skipped if unknown).
func optionsHeader(n int) []byte {
	h := make([]byte, n)
	h[1] = byte(n/8 - 1)
	for i := 2; i < n; {
		l := min(n-i-2, 255)
		h[i], h[i+1] = 0x1e, byte(l)
		i += 2 + l
	}
	return h
}

// kernelFragment returns the offset of the IPv4 or IPv6 fragment p and the
// length of its headers before its data: IPv4's header; IPv6's headers
// through the Fragment header, found after Hop-by-Hop Options, Routing
// and Destination Options headers.
func kernelFragment(p []byte) (off, hl int) {
	if p[0]>>4 == 4 {
		return int(binary.BigEndian.Uint16(p[6:])&0x1fff) * 8, int(p[0]&15) * 4
	}
	next, at := p[6], 40
	for next != 44 {
		next, at = p[at], at+8*(int(p[at+1])+1)
	}
	return int(binary.BigEndian.Uint16(p[at+2:]) &^ 7), at + 8
}

// checkKernelDatagram4 checks the IPv4 datagram p reassembled from the
// kernel's fragments of a UDP datagram whose payload is payload: its UDP
// payload and checksum, and its header, the first fragment's but for total
// length, flags and checksum.
func checkKernelDatagram4(t *testing.T, name string, p, first, payload []byte) {
	t.Helper()
	hl := int(p[0]&15) * 4
	checkHeader(t, p, binary.BigEndian.Uint16(p[4:]))
	udp := p[hl:]
	pseudo := append(append(bytes.Clone(p[12:20]), 0, 17), udp[4:6]...)
	if !bytes.Equal(udp[8:], payload) || sum16(append(pseudo, udp...)) != 0xffff {
		t.Errorf("%s: reassembled %d bytes of UDP payload, or a wrong checksum", name, len(udp)-8)
	}
	if len(first) != hl || !bytes.Equal(p[:2], first[:2]) || !bytes.Equal(p[4:6], first[4:6]) || !bytes.Equal(p[8:10], first[8:10]) || !bytes.Equal(p[12:hl], first[12:]) {
		t.Errorf("%s: header\n% x\nwant that of the first fragment\n% x", name, p[:hl], first)
	}
}

// checkKernelDatagram6 checks the IPv6 datagram p reassembled from the
// kernel's fragments of a UDP datagram whose payload is payload, sent with
// the extension headers exts: its payload length; its unfragmentable
// part, the first fragment's but for the payload length and the next
// header that named the Fragment header, which says what the Fragment
// header's did; its extension headers; its UDP payload and checksum.
func checkKernelDatagram6(t *testing.T, name string, p, first []byte, exts []ext, payload []byte) {
	t.Helper()
	if p[0]>>4 != 6 || int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
		t.Fatalf("%s: version %d, payload length %d, %d bytes", name, p[0]>>4, binary.BigEndian.Uint16(p[4:]), len(p))
	}
	unfrag := len(first) - 8
	nextAt := 6
	for at := 40; at < unfrag; at += 8 * (int(first[at+1]) + 1) {
		nextAt = at
	}
	want := bytes.Clone(first[:unfrag])
	want[nextAt] = first[unfrag]
	want[4], want[5] = p[4], p[5]
	if !bytes.Equal(p[:unfrag], want) {
		t.Fatalf("%s: headers\n% x\nwant those of the first fragment (% x) without its Fragment header\n% x", name, p[:unfrag], first, want)
	}
	var got []ext
	next, at := p[6], 40
	for next == 0 || next == 43 || next == 60 {
		l := 8 * (int(p[at+1]) + 1)
		got = append(got, ext{next, l})
		next, at = p[at], at+l
	}
	if next != 17 || !slices.Equal(got, exts) {
		t.Fatalf("%s: extension headers %v then %d, want %v then UDP", name, got, next, exts)
	}
	udp := p[at:]
	pseudo := append(bytes.Clone(p[8:40]), 0, 0, udp[4], udp[5], 0, 0, 0, 17)
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) || !bytes.Equal(udp[8:], payload) || sum16(append(pseudo, udp...)) != 0xffff {
		t.Errorf("%s: reassembled %d bytes of UDP payload, or a wrong checksum", name, len(udp)-8)
	}
	t.Logf("%s: %d-byte unfragmentable part", name, unfrag)
}

// udpSegment returns a UDP header and payload from port sport to port
// dport, both at addr, with its checksum (RFC 768, RFC 8200 §8.1).
func udpSegment(addr net.IP, sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	var pseudo []byte
	if a := addr.To4(); a != nil {
		pseudo = append(append(append(pseudo, a...), a...), 0, 17)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(u)))
	} else {
		pseudo = append(append(pseudo, addr...), addr...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(u)))
		pseudo = append(pseudo, 0, 0, 0, 17)
	}
	sum := ^sum16(append(pseudo, u...)) // pseudo's length is even
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], sum)
	return u
}
