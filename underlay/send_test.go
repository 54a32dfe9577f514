package underlay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"vnic/internal/testutil"
)

// udpPacket builds an IPv4 or IPv6 UDP packet to dst:dport with n
// payload bytes.
func udpPacket(dst netip.Addr, dport uint16, n int) []byte {
	hl := 20
	if dst.Is6() {
		hl = 40
	}
	p := make([]byte, hl+8+n)
	if dst.Is4() {
		p[0], p[9] = 0x45, unix.IPPROTO_UDP
	} else {
		p[0], p[6] = 0x60, unix.IPPROTO_UDP
	}
	copy(p[hl-len(dst.AsSlice()):hl], dst.AsSlice())
	binary.BigEndian.PutUint16(p[hl+2:], dport)
	for i := range n {
		p[hl+8+i] = byte(i)
	}
	return p
}

// udp4Packet is udpPacket to an IPv4 address given as bytes.
func udp4Packet(dst [4]byte, dport uint16, n int) []byte {
	return udpPacket(netip.AddrFrom4(dst), dport, n)
}

func raw4Packet(dst [4]byte, n int) []byte {
	p := make([]byte, 20+n)
	p[0], p[9] = 0x45, unix.IPPROTO_ESP
	copy(p[16:], dst[:])
	return p
}

// TestQueueCoalesces checks how a batch becomes messages: raw packets one
// each, UDP datagrams to one peer of one size joined into GSO messages,
// a short datagram ending its message, and a batch larger than any before
// reusing and growing the state (the regression that crashed the daemon).
func TestQueueCoalesces(t *testing.T) {
	c := &Conn{udp4: &net.UDPConn{}, raw4: &net.IPConn{}}
	a, b := [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}
	for round, n := range []int{3, 5, 200} {
		for k := range c.send.queue {
			c.send.queue[k] = c.send.queue[k][:0]
		}
		for range n {
			if err := c.queue(0, raw4Packet(a, 100)); err != nil {
				t.Fatal(err)
			}
		}
		if got := len(c.send.queue[kindRaw4]); got != n {
			t.Fatalf("round %d: %d raw messages, want %d", round, got, n)
		}
	}
	for k := range c.send.queue {
		c.send.queue[k] = c.send.queue[k][:0]
	}
	pkts := [][]byte{
		udp4Packet(a, 4500, 1000), udp4Packet(a, 4500, 1000), udp4Packet(a, 4500, 600), // one GSO message, short last
		udp4Packet(a, 4500, 1000), // after a short segment: a new message
		udp4Packet(b, 4500, 1000), // other peer: new message
		udp4Packet(b, 4501, 1000), // other port: new message
	}
	for i, p := range pkts {
		if err := c.queue(i, p); err != nil {
			t.Fatal(err)
		}
	}
	q := c.send.queue[kindUDP4]
	if len(q) != 4 {
		t.Fatalf("%d UDP messages, want 4", len(q))
	}
	if got := len(q[0].Buffers[0]); got != 2600 {
		t.Errorf("GSO message holds %d bytes, want 2600", got)
	}
	if len(q[0].OOB) == 0 {
		t.Fatal("GSO message has no UDP_SEGMENT control message")
	}
	hdr := (*unix.Cmsghdr)(unsafePointer(q[0].OOB))
	if hdr.Level != unix.SOL_UDP || hdr.Type != unix.UDP_SEGMENT || binary.NativeEndian.Uint16(q[0].OOB[unix.CmsgLen(0):]) != 1000 {
		t.Errorf("bad UDP_SEGMENT cmsg %x", q[0].OOB)
	}
	for i, m := range q[1:] {
		if len(m.OOB) != 0 || len(m.Buffers[0]) != 1000 {
			t.Errorf("message %d: %d bytes, oob %x", i+1, len(m.Buffers[0]), m.OOB)
		}
	}
	if got := q[2].Addr.(*net.UDPAddr); !got.IP.Equal(net.IP(b[:])) || got.Port != 4500 {
		t.Errorf("message 2 to %v", got)
	}
	// Payloads arrive in order in the GSO buffer.
	if q[0].Buffers[0][1000] != 0 || q[0].Buffers[0][2599] != byte(599%256) {
		t.Error("GSO buffer does not hold the datagrams in order")
	}
}

func TestGROSize(t *testing.T) {
	b := make([]byte, 64)
	// An IP_PKTINFO-like message first, then UDP_GRO with 1400.
	h := (*unix.Cmsghdr)(unsafePointer(b))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(12))
	next := unix.CmsgSpace(12)
	h2 := (*unix.Cmsghdr)(unsafePointer(b[next:]))
	h2.Level, h2.Type = unix.SOL_UDP, unix.UDP_GRO
	h2.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[next+unix.CmsgLen(0):], 1400)
	cases := []struct {
		name string
		oob  []byte
		want int
	}{
		{"pktinfo then gro", b[:next+unix.CmsgSpace(4)], 1400},
		{"pktinfo only", b[:next], 0},
		{"empty", nil, 0},
		{"truncated header", b[:5], 0},
		{"length beyond buffer", b[:next+8], 0},
	}
	for _, c := range cases {
		if got := parseAncillary(c.oob).gro; got != c.want {
			t.Errorf("%s: GRO size %d, want %d", c.name, got, c.want)
		}
	}
}

// TestGSORefusal: a GSO message the kernel refuses is sent as separate
// datagrams. Refused large segments (larger than the path's MTU, after
// vnic0's MTU was raised) do not turn GSO off for later batches; refused
// small ones mean the kernel cannot segment, and turn it off.
func TestGSORefusal(t *testing.T) {
	for _, tc := range []struct {
		size   int
		err    error
		gsoOff bool
	}{
		{8000, unix.EINVAL, false},   // older kernels: larger than the path MTU
		{1000, unix.EINVAL, true},    // older kernels: cannot segment
		{8000, unix.EMSGSIZE, false}, // recent kernels: larger than the path MTU
		{1000, unix.EMSGSIZE, false}, // ... even when the path MTU is small
		{1000, unix.EIO, true},       // cannot segment (an xfrm route)
	} {
		c := &Conn{udp4: &net.UDPConn{}}
		var sent []int // datagram sizes, in order
		c.batch[kindUDP4] = func(ms []ipv4.Message, _ int) (int, error) {
			if len(ms[0].OOB) > 0 {
				return 0, tc.err
			}
			sent = append(sent, len(ms[0].Buffers[0]))
			return 1, nil
		}
		dst := [4]byte{192, 0, 2, 1}
		if n, err := c.SendBatch([][]byte{udp4Packet(dst, 4500, tc.size), udp4Packet(dst, 4500, tc.size)}, nil); n != 2 || err != nil {
			t.Fatalf("%d bytes: %d sent, %v", tc.size, n, err)
		}
		if len(sent) != 2 || sent[0] != tc.size || sent[1] != tc.size {
			t.Errorf("%d bytes: sent %v, want two datagrams", tc.size, sent)
		}
		if c.send.gsoOff != tc.gsoOff {
			t.Errorf("%d-byte segments refused with %v: GSO off %v, want %v", tc.size, tc.err, c.send.gsoOff, tc.gsoOff)
		}
	}
}

// TestGSORefusalNoAllocs: sending a refused GSO message datagram by
// datagram (as after vnic0's MTU was raised, on every batch) allocates
// nothing.
func TestGSORefusalNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector makes sync.Pool allocate")
	}
	c := &Conn{udp4: &net.UDPConn{}}
	var datagrams int
	c.batch[kindUDP4] = func(ms []ipv4.Message, _ int) (int, error) {
		if len(ms[0].OOB) > 0 {
			return 0, unix.EINVAL
		}
		datagrams++
		return 1, nil
	}
	dst := [4]byte{192, 0, 2, 1}
	pkts := [][]byte{udp4Packet(dst, 4500, 8000), udp4Packet(dst, 4500, 8000), udp4Packet(dst, 4500, 8000)}
	failed := make([]bool, len(pkts))
	send := func() {
		if n, err := c.SendBatch(pkts, failed); n != 3 || err != nil {
			t.Fatalf("%d sent, %v", n, err)
		}
	}
	send() // grow the state
	if a := testing.AllocsPerRun(100, send); a != 0 {
		t.Errorf("%.1f allocations per batch sent split", a)
	}
	if datagrams != 3*102 || c.send.gsoOff { // AllocsPerRun runs it once more to warm up
		t.Errorf("%d datagrams sent one by one, GSO off %v: want %d, GSO still on", datagrams, c.send.gsoOff, 3*102)
	}
}

// loopbackSender returns a Conn with only a UDP socket, on an ephemeral
// port of local (127.0.0.1 or ::1), and a socket on local that receives
// what it sends. It skips the test when local cannot be bound (no IPv6).
func loopbackSender(t *testing.T, local netip.Addr) (*Conn, *net.UDPConn) {
	t.Helper()
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	c := &Conn{}
	conn, err := c.listenUDP(context.Background(), network, local)
	if err != nil {
		if local.Is6() {
			t.Skipf("no IPv6 loopback here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if local.Is4() {
		c.udp4, c.local4 = conn, local
		c.batch[kindUDP4] = ipv4.NewPacketConn(conn).WriteBatch
	} else {
		c.udp6, c.local6 = conn, local
		c.batch[kindUDP6] = ipv6.NewPacketConn(conn).WriteBatch
	}
	peer, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	return c, peer
}

// TestSendBatchPartialFailure sends, over loopback only, a batch some of
// whose packets fail: a datagram to port 0 (the kernel refuses it with
// EINVAL, and sendmmsg stops there after sending the messages before it),
// a GSO message to port 0 (refused, then refused again split), packets
// with no socket and a packet too short. SendBatch must count every
// datagram of a GSO message, mark exactly the failed packets, and still
// send the packets after a failure, in order.
func TestSendBatchPartialFailure(t *testing.T) {
	for _, local := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		t.Run(local.String(), func(t *testing.T) {
			c, peer := loopbackSender(t, local)
			port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
			udp := func(dport uint16, n int) []byte { return udpPacket(local, dport, n) }
			pkts := [][]byte{
				udp(port, 1000), udp(port, 1000), udp(port, 1000), // 0-2: one GSO message
				udp(0, 1000),                           // 3: refused, after 0-2 went in the same sendmmsg
				raw4Packet([4]byte{127, 0, 0, 1}, 100), // 4: no raw socket
				udp(port, 1000), udp(port, 500),        // 5-6: a GSO message, short last
				{0x45},                     // 7: too short
				udp(0, 1400), udp(0, 1400), // 8-9: a GSO message, refused whole and split
				udp(port, 1400), // 10: the last one still goes
			}
			wantFailed := map[int]bool{3: true, 4: true, 7: true, 8: true, 9: true}
			for i, p := range pkts {
				if len(p) > 100 {
					p[len(p)-1] = byte(i) // the receiver tells them apart by this
				}
			}
			failed := make([]bool, len(pkts))
			for i := range failed {
				failed[i] = i%2 == 0 // SendBatch sets every entry
			}
			sent, err := c.SendBatch(pkts, failed)
			if want := len(pkts) - len(wantFailed); sent != want {
				t.Errorf("%d packets sent, want %d", sent, want)
			}
			if !errors.Is(err, ErrNoSocket) {
				t.Errorf("error %v, want the first one, %v", err, ErrNoSocket)
			}
			for i, f := range failed {
				if f != wantFailed[i] {
					t.Errorf("packet %d: failed %v, want %v", i, f, wantFailed[i])
				}
			}
			// The batch became the messages the test means (GSO on).
			k := kindUDP4
			if local.Is6() {
				k = kindUDP6
			}
			var segs []int
			for _, g := range c.send.segs[k][:len(c.send.queue[k])] {
				segs = append(segs, g.n)
			}
			if want := []int{3, 1, 2, 2, 1}; !slices.Equal(segs, want) || c.send.gsoOff {
				t.Errorf("messages of %v datagrams (GSO off %v), want %v", segs, c.send.gsoOff, want)
			}

			var got []int // the index each received datagram carries
			buf := make([]byte, 65536)
			for len(got) < sent {
				peer.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := peer.Read(buf)
				if err != nil {
					t.Fatalf("received %v, then: %v", got, err)
				}
				got = append(got, int(buf[n-1]))
				if i := got[len(got)-1]; i >= len(pkts) || n != payloadLen(pkts[i]) {
					t.Errorf("datagram %d: %d bytes, not packet %d's payload", len(got)-1, n, i)
				}
			}
			if want := []int{0, 1, 2, 5, 6, 10}; !slices.Equal(got, want) {
				t.Errorf("received packets %v, want %v", got, want)
			}
		})
	}
}

// payloadLen is the UDP payload length of a packet udpPacket built.
func payloadLen(p []byte) int {
	if p[0]>>4 == 4 {
		return len(p) - 28
	}
	return len(p) - 48
}

// TestSendBatchNoAllocs: once its state has grown, sending a batch of GSO
// messages over loopback allocates nothing.
func TestSendBatchNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	c, peer := loopbackSender(t, netip.MustParseAddr("127.0.0.1"))
	port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
	var pkts [][]byte
	for i := range 32 {
		pkts = append(pkts, udp4Packet([4]byte{127, 0, 0, 1}, port, 1000+i/8))
	}
	failed := make([]bool, len(pkts))
	n := testing.AllocsPerRun(100, func() {
		if sent, err := c.SendBatch(pkts, failed); sent != len(pkts) || err != nil {
			t.Fatalf("%d of %d sent: %v", sent, len(pkts), err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per batch, want 0", n)
	}
}

// TestGSOBeyondPathMTU, in a network namespace of its own whose loopback
// has an MTU of 1300, sends a GSO message of 1400-byte datagrams: the
// kernel refuses it as one (EMSGSIZE on recent kernels), and the
// datagrams must still go, split, for the kernel to fragment, with GSO
// left on for the next batch.
func TestGSOBeyondPathMTU(t *testing.T) {
	testutil.NeedRoot(t, "a network namespace of its own")
	// This goroutine's thread moves to a new namespace and dies with it
	// (the thread stays locked), so no other test runs there.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetMTU(lo, 1300); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	for _, local := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		c, peer := loopbackSender(t, local)
		port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
		pkts := [][]byte{udpPacket(local, port, 1400), udpPacket(local, port, 1400), udpPacket(local, port, 1400)}
		failed := make([]bool, len(pkts))
		n, err := c.SendBatch(pkts, failed)
		if n != 3 || err != nil || slices.Contains(failed, true) {
			t.Errorf("%v: %d of 3 sent, %v, failed %v", local, n, err, failed)
		}
		if c.send.gsoOff {
			t.Errorf("%v: GSO turned off by a path MTU", local)
		}
		buf := make([]byte, 2048)
		for i := range 3 {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := peer.ReadFromUDP(buf)
			if err != nil || m != 1400 {
				t.Fatalf("%v: datagram %d: %d bytes, %v; want 1400", local, i, m, err)
			}
		}
	}
}

// TestRawFragments sends raw ESP packets larger than the link's MTU, over
// loopback in a namespace of the test's own with an MTU of 1300: they go
// out in fragments (an IPv4 packet's Don't Fragment bit cleared), which
// the kernel reassembles, between smaller packets, in order. When the
// link's MTU goes down after Open, the first packet above it fails
// (EMSGSIZE) and the next ones go in fragments.
func TestRawFragments(t *testing.T) {
	testutil.NeedRoot(t, "a network namespace of its own")
	runtime.LockOSThread() // the thread dies with the namespace
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(netlink.LinkSetMTU(lo, 1300), netlink.LinkSetUp(lo)); err != nil {
		t.Fatal(err)
	}
	l4, l6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	c, err := Open(context.Background(), Config{Local4: l4, Local6: l6, Device: "lo", NoUDP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.mtu.Load() != 1300 {
		t.Fatalf("MTU read at Open: %d, want 1300", c.mtu.Load())
	}
	for _, local := range []netip.Addr{l4, l6} {
		network := "ip4:50"
		if local.Is6() {
			network = "ip6:50"
		}
		peer, err := net.ListenIP(network, &net.IPAddr{IP: local.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		sizes := []int{100, 4000, 1300, 1301, 65000, 200}
		pkts := make([][]byte, len(sizes))
		for i, n := range sizes {
			pkts[i] = espPacket(local, n, byte(i))
		}
		failed := make([]bool, len(pkts))
		if n, err := c.SendBatch(pkts, failed); n != len(pkts) || err != nil || slices.Contains(failed, true) {
			t.Fatalf("%v: %d of %d sent, %v, failed %v", local, n, len(pkts), err, failed)
		}
		buf := make([]byte, 70000)
		for i, n := range sizes {
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := peer.ReadFrom(buf) // the payload after the IP header
			hl := 20
			if local.Is6() {
				hl = 40
			}
			want := pkts[i][hl:]
			if err != nil || m != len(want) || string(buf[:m]) != string(want) {
				t.Fatalf("%v: packet %d (%d bytes): got %d bytes (%v), want its %d-byte payload intact", local, i, n, m, err, len(want))
			}
		}
	}

	// A large packet first, on a Conn that has sent nothing yet (this
	// crashed the next small packet's queueing), and an IPv6 packet from
	// the unspecified address, as a tunnel SA without a source makes it:
	// every fragment leaves from the local address.
	c2, err := Open(context.Background(), Config{Local4: l4, Local6: l6, Device: "lo", NoUDP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	tap, err := net.ListenPacket("ip6:ipv6-frag", "::1") // sees every fragment as it came
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	anon := espPacket(l6, 3000, 9)
	clear(anon[8:24])
	first := [][]byte{espPacket(l4, 4000, 7), espPacket(l4, 100, 8), anon, espPacket(l6, 100, 10)}
	if n, err := c2.SendBatch(first, make([]bool, len(first))); n != len(first) || err != nil {
		t.Fatalf("large packets first: %d of %d sent, %v", n, len(first), err)
	}
	buf := make([]byte, 2048)
	for range 3 {
		tap.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, from, err := tap.ReadFrom(buf); err != nil {
			t.Fatalf("IPv6 fragments: %v", err)
		} else if from.(*net.IPAddr).IP.IsUnspecified() {
			t.Errorf("an IPv6 fragment left from the unspecified address")
		}
	}

	// Packets that are fragmented get identifications of the underlay's
	// own, one each, never 0: the engine's (a tunnel SA's sequence
	// number) repeat across SAs to one peer.
	same := [][]byte{espPacket(l4, 3000, 1), espPacket(l4, 3000, 2)}
	for _, p := range same {
		binary.BigEndian.PutUint16(p[4:], 0x1234)
	}
	if n, err := c2.SendBatch(same, make([]bool, 2)); n != 2 || err != nil {
		t.Fatalf("%d of 2 sent, %v", n, err)
	}
	id0, id1 := binary.BigEndian.Uint16(same[0][4:]), binary.BigEndian.Uint16(same[1][4:])
	if id0 == 0x1234 || id0 == 0 || id1 == 0 || id0 == id1 {
		t.Errorf("fragmented packets with identification 0x1234 went as %#x and %#x: want two of the underlay's own, not 0", id0, id1)
	}

	// The link's MTU goes down under the Conn.
	if err := netlink.LinkSetMTU(lo, 1280); err != nil {
		t.Fatal(err)
	}
	pkts := [][]byte{espPacket(l4, 1290, 1), espPacket(l4, 1290, 2)}
	failed := make([]bool, 2)
	n, err := c.SendBatch(pkts[:1], failed)
	if n != 0 || !errors.Is(err, unix.EMSGSIZE) || !failed[0] {
		t.Errorf("a packet above an MTU lowered since: %d sent, %v, failed %v; want EMSGSIZE", n, err, failed[:1])
	}
	if n, err := c.SendBatch(pkts[1:], failed); n != 1 || err != nil {
		t.Errorf("the next one: %d sent, %v; want it sent in fragments", n, err)
	}
}

// espPacket is a raw ESP packet of n bytes from and to local, with Don't
// Fragment set (IPv4), its payload filled from seed.
func espPacket(local netip.Addr, n int, seed byte) []byte {
	p := make([]byte, n)
	a := local.AsSlice()
	if local.Is4() {
		p[0], p[8], p[9] = 0x45, 64, unix.IPPROTO_ESP
		binary.BigEndian.PutUint16(p[2:], uint16(n))
		binary.BigEndian.PutUint16(p[6:], 0x4000)
		copy(p[12:], a)
		copy(p[16:], a)
		fillFrom(p[20:], seed)
	} else {
		p[0], p[6], p[7] = 0x60, unix.IPPROTO_ESP, 64
		binary.BigEndian.PutUint16(p[4:], uint16(n-40))
		copy(p[8:], a)
		copy(p[24:], a)
		fillFrom(p[40:], seed)
	}
	return p
}

func fillFrom(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i*7)
	}
}
