package ipfrag

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKernelReassembles checks the fragmenters against Linux: in a
// network namespace of its own, it sends the fragments of UDP datagrams
// made by FragmentIPv4 and FragmentIPv6 over loopback through raw sockets
// (IP_HDRINCL, IPV6_HDRINCL), and a UDP socket must receive each datagram
// whole, the kernel having reassembled it and found its checksum right.
func TestKernelReassembles(t *testing.T) {
	enterNamespace(t)
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

// enterNamespace moves the test's goroutine, locked to its thread, into
// a new network namespace with its loopback up; the thread dies with the
// goroutine, and the namespace with it, leaving nothing behind. Without
// root it skips the test (or fails it, with VNIC_REQUIRE_ROOT_TESTS=1).
func enterNamespace(t *testing.T) netlink.Link {
	if os.Geteuid() != 0 {
		if os.Getenv("VNIC_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal("needs root (a network namespace of its own), and VNIC_REQUIRE_ROOT_TESTS=1 forbids skipping")
		}
		t.Skip("needs root: a network namespace of its own (set VNIC_REQUIRE_ROOT_TESTS=1 to fail instead)")
	}
	runtime.LockOSThread() // never unlocked: see above
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return lo
}

// TestReassembleKernelFragments checks the Reassembler against Linux: in
// a network namespace of its own whose loopback has an MTU of 1500, it
// sends UDP datagrams larger than that (some with IP options), which the
// kernel fragments, captures the fragments with a packet socket as they
// arrive (before the kernel reassembles them), and reassembles them: the datagram must be the one sent, its UDP
// checksum right.
func TestReassembleKernelFragments(t *testing.T) {
	lo := enterNamespace(t)
	if err := netlink.LinkSetMTU(lo, 1500); err != nil {
		t.Fatal(err)
	}
	const ethPIP = 0x0008 // ETH_P_IP in network byte order
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, ethPIP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ps)
	if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: ethPIP, Ifindex: lo.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(ps, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	local := net.IPv4(127, 0, 0, 1)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	r := NewReassembler(Config{Headroom: 16, Tailroom: 16})
	buf := make([]byte, 65536)
	for i, c := range []struct {
		opts []opt
		size int
	}{
		{nil, 3000},
		{nil, 65507},
		{[]opt{optRR}, 5000},
		{[]opt{optRA, optRR}, 20000},
	} {
		conn, err := net.DialUDP("udp4", nil, peer.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		if c.opts != nil {
			sc, _ := conn.SyscallConn()
			sc.Control(func(fd uintptr) {
				err = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(encodeOpts(c.opts, false)))
			})
			if err != nil {
				t.Fatalf("IP_OPTIONS: %v", err)
			}
		}
		payload := pattern(c.size, byte(i))
		if _, err := conn.Write(payload); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		fragments := 0
		var first []byte // the header of the first fragment
		for {
			n, from, err := unix.Recvfrom(ps, buf, 0)
			if err != nil {
				t.Fatalf("%d bytes, options %v: %d fragments captured, then %v", c.size, c.opts, fragments, err)
			}
			if from.(*unix.SockaddrLinklayer).Pkttype == unix.PACKET_OUTGOING {
				continue // only ETH_P_ALL sockets see them, but to be sure: each fragment once
			}
			if !IsFragment(buf[:n]) {
				t.Fatalf("%d bytes, options %v: a %d-byte packet is not a fragment", c.size, c.opts, n)
			}
			fragments++
			if binary.BigEndian.Uint16(buf[6:])&0x1fff == 0 {
				first = bytes.Clone(buf[:int(buf[0]&15)*4])
			}
			d, res, _ := r.Add(buf[:n], time.Now())
			if res == Held {
				continue
			}
			if res != Complete {
				t.Fatalf("%d bytes, options %v: fragment %d: %v", c.size, c.opts, fragments, res)
			}
			p := d.Packet()
			hl := int(p[0]&15) * 4
			checkHeader(t, p, binary.BigEndian.Uint16(p[4:]))
			udp := p[hl:]
			pseudo := append(append(bytes.Clone(p[12:20]), 0, 17), udp[4:6]...)
			if !bytes.Equal(udp[8:], payload) || sum16(append(pseudo, udp...)) != 0xffff {
				t.Errorf("%d bytes, options %v: reassembled %d bytes of UDP payload, or a wrong checksum", c.size, c.opts, len(udp)-8)
			}
			// The first fragment's header, but for total length, flags
			// and checksum.
			if len(first) != hl || !bytes.Equal(p[:2], first[:2]) || !bytes.Equal(p[4:6], first[4:6]) || !bytes.Equal(p[8:10], first[8:10]) || !bytes.Equal(p[12:hl], first[12:]) {
				t.Errorf("%d bytes, options %v: header\n% x\nwant that of the first fragment\n% x", c.size, c.opts, p[:hl], first)
			}
			r.Release(d)
			break
		}
		if r.Len() != 0 {
			t.Errorf("%d datagrams left", r.Len())
		}
	}
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
