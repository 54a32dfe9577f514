package underlay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"vnic/header"
	"vnic/internal/testutil"
)

// testHeadroom and testTailroom are the room the test packets have
// before and after their ESP bytes. The tailroom holds tailByte, so that
// a send of more than Buf[Start:End] shows.
const (
	testHeadroom = 64
	testTailroom = 16
	tailByte     = 0xee
	headByte     = 0xaa
)

// espPkt returns a Packet with outer o carrying n bytes at testHeadroom
// of its buffer, the i-th of them byte(seed+i*step). The headroom holds
// headByte, the tailroom tailByte.
func espPkt(o header.Outer, n int, seed, step byte) Packet {
	buf := make([]byte, testHeadroom+n+testTailroom)
	for i := range testHeadroom {
		buf[i] = headByte
	}
	for i := range n {
		buf[testHeadroom+i] = seed + byte(i)*step
	}
	for i := testHeadroom + n; i < len(buf); i++ {
		buf[i] = tailByte
	}
	return Packet{Buf: buf, Start: testHeadroom, End: testHeadroom + n, Outer: o}
}

// udpPacket is ESP-in-UDP to dst:dport with n payload bytes, the i-th of
// them byte(i).
func udpPacket(dst netip.Addr, dport uint16, n int) Packet {
	return espPkt(header.Outer{Dst: dst, UDP: true, SrcPort: 4500, DstPort: dport}, n, 0, 1)
}

// udp4Packet is udpPacket to an IPv4 address given as bytes.
func udp4Packet(dst [4]byte, dport uint16, n int) Packet {
	return udpPacket(netip.AddrFrom4(dst), dport, n)
}

// raw4Packet is raw ESP of n bytes to dst, from the local address.
func raw4Packet(dst [4]byte, n int) Packet {
	return espPkt(header.Outer{Dst: netip.AddrFrom4(dst)}, n, 0, 1)
}

// payload returns the bytes a packet carries.
func payload(p *Packet) []byte { return p.Buf[p.Start:p.End] }

// fakeBatch is a socket's sendmmsg that sends every message, and records
// a copy of each with its address.
type fakeBatch struct {
	bufs  [][]byte
	addrs []net.Addr
}

func (f *fakeBatch) send(ms []ipv4.Message, _ int) (int, error) {
	for _, m := range ms {
		var b []byte
		for _, x := range m.Buffers {
			b = append(b, x...)
		}
		f.bufs = append(f.bufs, b)
		f.addrs = append(f.addrs, m.Addr)
	}
	return len(ms), nil
}

func unusedBatch(t *testing.T) func([]ipv4.Message, int) (int, error) {
	return func([]ipv4.Message, int) (int, error) {
		t.Error("the test queues messages; nothing should send them")
		return 0, unix.EIO
	}
}

// TestQueueCoalesces checks how a batch becomes messages: raw packets one
// each, as whole IP packets to their destination, UDP datagrams to one
// peer of one size joined into GSO messages, a short datagram ending its
// message, and a batch larger than any before reusing and growing the
// state (the regression that crashed the daemon).
func TestQueueCoalesces(t *testing.T) {
	c := &Conn{udp4: &net.UDPConn{}, raw4: &net.IPConn{}, local4: netip.MustParseAddr("192.0.2.9")}
	c.batch[kindUDP4], c.batch[kindRaw4] = unusedBatch(t), unusedBatch(t)
	a, b := [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}
	for round, n := range []int{3, 5, 200} {
		for k := range c.send.queue {
			c.send.queue[k], c.send.from[k] = c.send.queue[k][:0], c.send.from[k][:0]
		}
		ps := make([]Packet, n)
		for j := range ps {
			ps[j] = espPkt(header.Outer{Dst: netip.AddrFrom4(a)}, 100, byte(j), 3)
			k, pkt, err := c.rawPacket(&ps[j])
			if err != nil || k != kindRaw4 {
				t.Fatalf("round %d: socket kind %d, %v", round, k, err)
			}
			c.queueRaw(k, j, pkt)
		}
		q := c.send.queue[kindRaw4]
		if got := len(q); got != n {
			t.Fatalf("round %d: %d raw messages, want %d", round, got, n)
		}
		for i, m := range q {
			got := m.Buffers[0]
			if len(m.Buffers) != 1 || len(got) != 120 || got[0] != 0x45 || string(got[20:]) != string(payload(&ps[i])) ||
				!m.Addr.(*net.IPAddr).IP.Equal(net.IP(a[:])) || c.send.from[kindRaw4][i] != i {
				t.Fatalf("round %d: raw message %d: %d buffers, %x to %v (packet %d)", round, i, len(m.Buffers), got, m.Addr, c.send.from[kindRaw4][i])
			}
			if [4]byte(got[16:20]) != a || [4]byte(got[12:16]) != c.local4.As4() {
				t.Fatalf("round %d: raw message %d: header %x, want from %v to %v", round, i, got[:20], c.local4, a)
			}
		}
	}
	for k := range c.send.queue {
		c.send.queue[k], c.send.from[k] = c.send.queue[k][:0], c.send.from[k][:0]
	}
	pkts := []Packet{
		udp4Packet(a, 4500, 1000), udp4Packet(a, 4500, 1000), udp4Packet(a, 4500, 600), // one GSO message, short last
		udp4Packet(a, 4500, 1000), // after a short segment: a new message
		udp4Packet(b, 4500, 1000), // other peer: new message
		udp4Packet(b, 4501, 1000), // other port: new message
	}
	for i := range pkts {
		if err := c.queueUDP(i, &pkts[i]); err != nil {
			t.Fatal(err)
		}
	}
	q := c.send.queue[kindUDP4]
	if len(q) != 4 {
		t.Fatalf("%d UDP messages, want 4", len(q))
	}
	if got := c.send.from[kindUDP4]; !slices.Equal(got, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("packets queued in order %v", got)
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
		if len(m.OOB) != 0 || len(m.Buffers[0]) != 1000 || string(m.Buffers[0]) != string(payload(&pkts[i+3])) {
			t.Errorf("message %d: %d bytes, oob %x; want packet %d's payload alone", i+1, len(m.Buffers[0]), m.OOB, i+3)
		}
	}
	if got := q[0].Addr.(*net.UDPAddr); !got.IP.Equal(net.IP(a[:])) || got.Port != 4500 {
		t.Errorf("message 0 to %v", got)
	}
	if got := q[2].Addr.(*net.UDPAddr); !got.IP.Equal(net.IP(b[:])) || got.Port != 4500 {
		t.Errorf("message 2 to %v", got)
	}
	if got := q[3].Addr.(*net.UDPAddr); !got.IP.Equal(net.IP(b[:])) || got.Port != 4501 {
		t.Errorf("message 3 to %v", got)
	}
	// Payloads arrive in order in the GSO buffer, and nothing of the
	// packets' buffers outside Buf[Start:End].
	want := string(payload(&pkts[0])) + string(payload(&pkts[1])) + string(payload(&pkts[2]))
	if string(q[0].Buffers[0]) != want || q[0].Buffers[0][1000] != 0 || q[0].Buffers[0][2599] != byte(599%256) {
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
		if n, err := c.SendBatch([]Packet{udp4Packet(dst, 4500, tc.size), udp4Packet(dst, 4500, tc.size)}, nil); n != 2 || err != nil {
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
	pkts := []Packet{udp4Packet(dst, 4500, 8000), udp4Packet(dst, 4500, 8000), udp4Packet(dst, 4500, 8000)}
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
// with no socket and a packet whose bytes lie outside its buffer.
// SendBatch must count every datagram of a GSO message, mark exactly the
// failed packets, and still send the packets after a failure, in order,
// each datagram exactly the packet's Buf[Start:End].
func TestSendBatchPartialFailure(t *testing.T) {
	for _, local := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		t.Run(local.String(), func(t *testing.T) {
			c, peer := loopbackSender(t, local)
			port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
			udp := func(dport uint16, n int) Packet { return udpPacket(local, dport, n) }
			outside := udp(port, 1000)
			outside.End = len(outside.Buf) + 1
			pkts := []Packet{
				udp(port, 1000), udp(port, 1000), udp(port, 1000), // 0-2: one GSO message
				udp(0, 1000),                           // 3: refused, after 0-2 went in the same sendmmsg
				raw4Packet([4]byte{127, 0, 0, 1}, 100), // 4: no raw socket
				udp(port, 1000), udp(port, 500),        // 5-6: a GSO message, short last
				outside,                    // 7: End beyond its buffer
				udp(0, 1400), udp(0, 1400), // 8-9: a GSO message, refused whole and split
				udp(port, 1400), // 10: the last one still goes
			}
			wantFailed := map[int]bool{3: true, 4: true, 7: true, 8: true, 9: true}
			for i := range pkts {
				if p := &pkts[i]; p.End-p.Start > 100 && p.End <= len(p.Buf) {
					p.Buf[p.End-1] = byte(i) // the receiver tells them apart by this
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
				if i := got[len(got)-1]; i >= len(pkts) || string(buf[:n]) != string(payload(&pkts[i])) {
					t.Errorf("datagram %d: %d bytes, not packet %d's payload", len(got)-1, n, i)
				}
			}
			if want := []int{0, 1, 2, 5, 6, 10}; !slices.Equal(got, want) {
				t.Errorf("received packets %v, want %v", got, want)
			}
		})
	}
}

// TestSendBatchNoAllocs: once its state has grown, sending a batch of GSO
// messages over loopback allocates nothing.
func TestSendBatchNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	c, peer := loopbackSender(t, netip.MustParseAddr("127.0.0.1"))
	port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
	var pkts []Packet
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

// TestSendBatchNoDestination: a packet whose Outer has no destination, or
// options of a length no IP header can hold, fails, as a packet SendBatch
// cannot send, and takes neither the batch nor the daemon down with it
// (the zero netip.Addr panics when asked for its bytes).
func TestSendBatchNoDestination(t *testing.T) {
	c := &Conn{udp4: &net.UDPConn{}, local4: netip.MustParseAddr("192.0.2.9")}
	var f fakeBatch
	c.batch[kindUDP4] = f.send
	c.batch[kindRaw4] = f.send
	badOpts := raw4Packet([4]byte{192, 0, 2, 1}, 100)
	badOpts.Outer.Opts = 3
	pkts := []Packet{udpPacket(netip.Addr{}, 4500, 100), udp4Packet([4]byte{192, 0, 2, 1}, 4500, 100),
		espPkt(header.Outer{}, 100, 0, 1), badOpts}
	want := []bool{true, false, true, true}
	failed := make([]bool, len(pkts))
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("SendBatch panicked on a packet without a destination: %v", r)
			}
		}()
		if n, err := c.SendBatch(pkts, failed); n != 1 || err == nil || !slices.Equal(failed, want) {
			t.Errorf("%d sent, %v, failed %v: want failed %v, one sent", n, err, failed, want)
		}
	}()
}

// TestGSOBeyondPathMTU, in a network namespace of its own whose loopback
// has an MTU of 1300, sends a GSO message of 1400-byte datagrams: the
// kernel refuses it as one (EMSGSIZE on recent kernels), and the
// datagrams must still go, split, for the kernel to fragment, with GSO
// left on for the next batch.
func TestGSOBeyondPathMTU(t *testing.T) {
	lo := testutil.EnterNetns(t)
	if err := netlink.LinkSetMTU(lo, 1300); err != nil {
		t.Fatal(err)
	}
	for _, local := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
		c, peer := loopbackSender(t, local)
		port := uint16(peer.LocalAddr().(*net.UDPAddr).Port)
		pkts := []Packet{udpPacket(local, port, 1400), udpPacket(local, port, 1400), udpPacket(local, port, 1400)}
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
			if err != nil || m != 1400 || string(buf[:m]) != string(payload(&pkts[i])) {
				t.Fatalf("%v: datagram %d: %d bytes, %v; want packet %d's 1400-byte payload", local, i, m, err, i)
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
	lo := testutil.EnterNetns(t)
	if err := netlink.LinkSetMTU(lo, 1300); err != nil {
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
		sizes := []int{100, 4000, 1300, 1301, 65000, 200} // whole IP packets
		pkts := make([]Packet, len(sizes))
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
			want := payload(&pkts[i])
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
	anon.Outer.Src = netip.IPv6Unspecified()
	first := []Packet{espPacket(l4, 4000, 7), espPacket(l4, 100, 8), anon, espPacket(l6, 100, 10)}
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
	// number) repeat across SAs to one peer. Their Don't Fragment bit is
	// cleared. (Both are written into the header in the packet's buffer.)
	same := []Packet{espPacket(l4, 3000, 1), espPacket(l4, 3000, 2)}
	for i := range same {
		same[i].Outer.ID = 0x1234
	}
	if n, err := c2.SendBatch(same, make([]bool, 2)); n != 2 || err != nil {
		t.Fatalf("%d of 2 sent, %v", n, err)
	}
	ip0, ip1 := same[0].Buf[same[0].Start-20:], same[1].Buf[same[1].Start-20:]
	id0, id1 := binary.BigEndian.Uint16(ip0[4:]), binary.BigEndian.Uint16(ip1[4:])
	if id0 == 0x1234 || id0 == 0 || id1 == 0 || id0 == id1 {
		t.Errorf("fragmented packets with identification 0x1234 went as %#x and %#x: want two of the underlay's own, not 0", id0, id1)
	}
	if ip0[6]&0x40 != 0 || ip1[6]&0x40 != 0 {
		t.Errorf("fragmented packets kept Don't Fragment: flags %#x, %#x", ip0[6], ip1[6])
	}

	// The link's MTU goes down under the Conn.
	if err := netlink.LinkSetMTU(lo, 1280); err != nil {
		t.Fatal(err)
	}
	pkts := []Packet{espPacket(l4, 1290, 1), espPacket(l4, 1290, 2)}
	failed := make([]bool, 2)
	n, err := c.SendBatch(pkts[:1], failed)
	if n != 0 || !errors.Is(err, unix.EMSGSIZE) || !failed[0] {
		t.Errorf("a packet above an MTU lowered since: %d sent, %v, failed %v; want EMSGSIZE", n, err, failed[:1])
	}
	if n, err := c.SendBatch(pkts[1:], failed); n != 1 || err != nil {
		t.Errorf("the next one: %d sent, %v; want it sent in fragments", n, err)
	}
}

// espPacket is raw ESP from and to local that makes an IP packet of n
// bytes, with Don't Fragment set (IPv4), its i-th ESP byte seed+7i.
func espPacket(local netip.Addr, n int, seed byte) Packet {
	o := header.Outer{Src: local, Dst: local, TTL: 64, DF: local.Is4()}
	return espPkt(o, n-o.Size(), seed, 7)
}

// wantIP is the IP header a raw packet should go out with.
type wantIP struct {
	src, dst netip.Addr
	tos, ttl uint8
	df       bool
	id       uint16
	flow     uint32
	// opts are the IPv4 options or IPv6 extension headers in place
	// before the ESP bytes; next is IPv6's first next header.
	opts []byte
	next uint8
}

// checkIPHeader checks that b is a whole raw ESP packet: the IP header w
// says, then esp.
func checkIPHeader(t *testing.T, name string, b []byte, w *wantIP, esp []byte) {
	t.Helper()
	hl := 20
	if w.dst.Is6() {
		hl = 40
	}
	if len(b) != hl+len(w.opts)+len(esp) {
		t.Errorf("%s: %d bytes, want a %d-byte header, %d of options and %d of ESP", name, len(b), hl, len(w.opts), len(esp))
		return
	}
	if w.dst.Is4() {
		hl += len(w.opts)
		var flags uint16
		if w.df {
			flags = 0x4000
		}
		var sum uint32
		for i := 0; i < hl; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		if b[0] != 0x40|byte(hl/4) || b[1] != w.tos || int(binary.BigEndian.Uint16(b[2:])) != len(b) ||
			binary.BigEndian.Uint16(b[4:]) != w.id || binary.BigEndian.Uint16(b[6:]) != flags ||
			b[8] != w.ttl || b[9] != unix.IPPROTO_ESP || sum != 0xffff ||
			netip.AddrFrom4([4]byte(b[12:16])) != w.src || netip.AddrFrom4([4]byte(b[16:20])) != w.dst {
			t.Errorf("%s: IPv4 header %x, want %+v", name, b[:hl], *w)
		}
		hl -= len(w.opts)
	} else {
		if binary.BigEndian.Uint32(b[0:]) != 6<<28|uint32(w.tos)<<20|w.flow ||
			int(binary.BigEndian.Uint16(b[4:])) != len(b)-40 || b[6] != w.next || b[7] != w.ttl ||
			netip.AddrFrom16([16]byte(b[8:24])) != w.src || netip.AddrFrom16([16]byte(b[24:40])) != w.dst {
			t.Errorf("%s: IPv6 header %x, want %+v", name, b[:40], *w)
		}
	}
	if string(b[hl:hl+len(w.opts)]) != string(w.opts) {
		t.Errorf("%s: options %x, want %x as they were", name, b[hl:hl+len(w.opts)], w.opts)
	}
	if string(b[hl+len(w.opts):]) != string(esp) {
		t.Errorf("%s: the ESP bytes after the header changed", name)
	}
}

// TestRawPacketHeader checks the IP header SendBatch writes in front of
// raw ESP from its Outer, on sockets that only record what they are given:
// every field, an unset or unspecified source replaced by the local
// address, options or extension headers already in place kept, and the
// header written right before Start and nowhere else. A packet with less
// room before Start than Outer.Size() (or none, or a Start or End outside
// its buffer) fails, is marked failed, and leaves its buffer as it was;
// the packets after it still go.
func TestRawPacketHeader(t *testing.T) {
	l4, l6 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")
	p4, p6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	c := &Conn{local4: l4, local6: l6}
	var f4, f6 fakeBatch
	c.batch[kindRaw4], c.batch[kindRaw6] = f4.send, f6.send

	// room is a packet of n ESP bytes with start bytes before them.
	room := func(o header.Outer, start, n int) Packet {
		p := espPkt(o, n, byte(start), 5)
		cut := p.Start - start
		p.Buf, p.Start, p.End = p.Buf[cut:], start, p.End-cut
		return p
	}
	// withOpts is a packet with opts in place right before its ESP bytes.
	withOpts := func(o header.Outer, opts []byte, n int) Packet {
		p := espPkt(o, n, byte(n), 3)
		copy(p.Buf[p.Start-len(opts):], opts)
		return p
	}
	routerAlert := []byte{0x94, 0x04, 0, 0}
	dstOpts := []byte{unix.IPPROTO_ESP, 0, 1, 4, 0, 0, 0, 0} // next ESP, PadN
	src4, src6 := netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("2001:db8::77")
	cases := []struct {
		name string
		p    Packet
		want *wantIP // nil: the packet fails
	}{
		{"IPv4 without a source", espPkt(header.Outer{Dst: p4, TOS: 0xb9, DF: true, ID: 0x1234}, 100, 1, 1),
			&wantIP{src: l4, dst: p4, tos: 0xb9, ttl: 0, df: true, id: 0x1234}}, // the TTL as given
		{"IPv4, headroom one byte short", room(header.Outer{Dst: p4}, 19, 50), nil},
		{"IPv4 from 0.0.0.0", espPkt(header.Outer{Src: netip.IPv4Unspecified(), Dst: p4, TTL: 9}, 101, 2, 1),
			&wantIP{src: l4, dst: p4, ttl: 9}},
		{"IPv6, headroom one byte short", room(header.Outer{Dst: p6}, 39, 50), nil},
		{"IPv4 source kept", espPkt(header.Outer{Src: src4, Dst: p4, TTL: 255, ID: 7}, 102, 3, 1),
			&wantIP{src: src4, dst: p4, ttl: 255, id: 7}},
		{"IPv6 without headroom", room(header.Outer{Dst: p6}, 0, 50), nil},
		{"IPv6 without a source", espPkt(header.Outer{Dst: p6, TOS: 0x2b, TTL: 7, FlowLabel: 0xabcde}, 103, 4, 1),
			&wantIP{src: l6, dst: p6, tos: 0x2b, ttl: 7, flow: 0xabcde, next: unix.IPPROTO_ESP}},
		{"negative start", Packet{Buf: make([]byte, 100), Start: -1, End: 50, Outer: header.Outer{Dst: p4}}, nil},
		{"IPv6 from ::", espPkt(header.Outer{Src: netip.IPv6Unspecified(), Dst: p6}, 104, 5, 1),
			&wantIP{src: l6, dst: p6, ttl: 0, next: unix.IPPROTO_ESP}},
		{"end beyond the buffer", Packet{Buf: make([]byte, 100), Start: 64, End: 101, Outer: header.Outer{Dst: p4}}, nil},
		{"IPv6 source kept", espPkt(header.Outer{Src: src6, Dst: p6, TTL: 1}, 105, 6, 1),
			&wantIP{src: src6, dst: p6, ttl: 1, next: unix.IPPROTO_ESP}},
		{"start after end", Packet{Buf: make([]byte, 100), Start: 64, End: 63, Outer: header.Outer{Dst: p6}}, nil},
		{"no buffer", Packet{Outer: header.Outer{Dst: p4}}, nil},
		{"IPv4 options need room too", room(header.Outer{Dst: p4, Opts: 4}, 23, 50), nil},
		{"IPv4 with options in place", withOpts(header.Outer{Dst: p4, Opts: 4, TTL: 3}, routerAlert, 106),
			&wantIP{src: l4, dst: p4, ttl: 3, opts: routerAlert}},
		{"IPv6 with an extension header in place", withOpts(header.Outer{Dst: p6, Opts: 8, OptsNext: unix.IPPROTO_DSTOPTS}, dstOpts, 107),
			&wantIP{src: l6, dst: p6, ttl: 0, opts: dstOpts, next: unix.IPPROTO_DSTOPTS}},
		{"IPv4, exactly the room", room(header.Outer{Dst: p4}, 20, 108), &wantIP{src: l4, dst: p4, ttl: 0}},
		{"IPv6, exactly the room", room(header.Outer{Dst: p6}, 40, 109), &wantIP{src: l6, dst: p6, ttl: 0, next: unix.IPPROTO_ESP}},
	}
	pkts := make([]Packet, len(cases))
	before := make([][]byte, len(cases))
	wantSent := 0
	for i, tc := range cases {
		pkts[i] = tc.p
		before[i] = slices.Clone(tc.p.Buf)
		if tc.want != nil {
			wantSent++
		}
	}
	failed := make([]bool, len(pkts))
	sent, err := c.SendBatch(pkts, failed)
	if sent != wantSent || !errors.Is(err, errNoRoom) {
		t.Errorf("%d sent, %v; want %d, %v", sent, err, wantSent, errNoRoom)
	}
	var got4, got6 int // the next recorded message of each family
	for i, tc := range cases {
		p := &pkts[i]
		if failed[i] != (tc.want == nil) {
			t.Errorf("%s: failed %v, want %v", tc.name, failed[i], tc.want == nil)
		}
		if tc.want == nil {
			if string(p.Buf) != string(before[i]) {
				t.Errorf("%s: a packet that failed had its buffer written", tc.name)
			}
			continue
		}
		f, j := &f4, &got4
		if tc.want.dst.Is6() {
			f, j = &f6, &got6
		}
		if *j >= len(f.bufs) {
			t.Errorf("%s: not sent", tc.name)
			continue
		}
		b, addr := f.bufs[*j], f.addrs[*j]
		*j++
		checkIPHeader(t, tc.name, b, tc.want, payload(p))
		if a, ok := addr.(*net.IPAddr); !ok || !a.IP.Equal(tc.want.dst.AsSlice()) {
			t.Errorf("%s: sent to %v, want %v", tc.name, addr, tc.want.dst)
		}
		// The header is in the buffer, right before the options and
		// the ESP bytes; the rest of the buffer is as it was.
		start := p.Start - p.Outer.Size()
		if string(p.Buf[start:p.End]) != string(b) || string(p.Buf[:start]) != string(before[i][:start]) ||
			string(p.Buf[p.End:]) != string(before[i][p.End:]) {
			t.Errorf("%s: the header was not written in place right before the ESP bytes alone", tc.name)
		}
	}
	if got4 != len(f4.bufs) || got6 != len(f6.bufs) {
		t.Errorf("%d IPv4 and %d IPv6 messages sent, want %d and %d", len(f4.bufs), len(f6.bufs), got4, got6)
	}

	// No raw socket of the family: the packet fails, the next one goes.
	c4 := &Conn{local4: l4}
	var only4 fakeBatch
	c4.batch[kindRaw4] = only4.send
	pkts = []Packet{espPkt(header.Outer{Dst: p6}, 100, 0, 1), espPkt(header.Outer{Dst: p4}, 100, 0, 1)}
	if n, err := c4.SendBatch(pkts, failed[:2]); n != 1 || !errors.Is(err, ErrNoSocket) || !failed[0] || failed[1] || len(only4.bufs) != 1 {
		t.Errorf("IPv6 without its socket, then IPv4: %d sent, %v, failed %v; want 1, %v, [true false]", n, err, failed[:2], ErrNoSocket)
	}
}

// htons converts a short to network byte order, as AF_PACKET wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// TestRawOnLoopback sends raw ESP with a chosen TOS or traffic class, TTL
// or hop limit, and IPv4 DF and identification or IPv6 flow label, from
// an unset or unspecified source, over loopback in a network namespace of
// its own: a packet socket sees the IP header SendBatch wrote on the wire
// with every field as the Outer said and the local address as source, and
// the Conn's own raw sockets receive each packet back, its Outer as the
// header said (raw IPv4 parses the header the socket hands over; raw IPv6
// takes it from the control messages, which do not carry the flow label)
// and Buf[Start:End] exactly the ESP bytes sent.
func TestRawOnLoopback(t *testing.T) {
	lo := testutil.EnterNetns(t)
	l4, l6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	c, err := Open(context.Background(), Config{Local4: l4, Local6: l6, Device: "lo", NoUDP: true})
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan Packet, 16)
	var recvDone []chan struct{}
	for _, recv := range c.Receivers() {
		done := make(chan struct{})
		recvDone = append(recvDone, done)
		go func() {
			defer close(done)
			deliver := func(pkts []Packet) {
				for _, p := range pkts {
					p.Buf = slices.Clone(p.Buf)
					select {
					case received <- p:
					default: // not one the test waits for
					}
				}
			}
			for recv(deliver) == nil {
			}
		}()
	}
	defer func() {
		c.Close()
		for _, d := range recvDone {
			<-d
		}
	}()

	tap, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tap)
	if err := unix.Bind(tap, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(tap, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}

	pkts := []Packet{
		espPkt(header.Outer{Dst: l4, TOS: 0xb8 | 0x03, TTL: 33, DF: true, ID: 0x4242}, 300, 1, 3),
		espPkt(header.Outer{Src: netip.IPv6Unspecified(), Dst: l6, TOS: 0x2b, TTL: 17, FlowLabel: 0x12345}, 301, 2, 5),
	}
	wire := []*wantIP{
		{src: l4, dst: l4, tos: 0xbb, ttl: 33, df: true, id: 0x4242},
		{src: l6, dst: l6, tos: 0x2b, ttl: 17, flow: 0x12345, next: unix.IPPROTO_ESP},
	}
	back := []header.Outer{
		{Src: l4, Dst: l4, TOS: 0xbb, TTL: 33, DF: true, ID: 0x4242},
		{Src: l6, Dst: l6, TOS: 0x2b, TTL: 17},
	}
	esp := [][]byte{slices.Clone(payload(&pkts[0])), slices.Clone(payload(&pkts[1]))}
	failed := make([]bool, len(pkts))
	if n, err := c.SendBatch(pkts, failed); n != len(pkts) || err != nil || slices.Contains(failed, true) {
		t.Fatalf("%d of %d sent, %v, failed %v", n, len(pkts), err, failed)
	}

	// On the wire (each packet shows twice on loopback: going out and
	// coming in).
	seen := [2]bool{}
	buf := make([]byte, 70000)
	for !seen[0] || !seen[1] {
		n, _, err := unix.Recvfrom(tap, buf, 0)
		if err != nil {
			t.Fatalf("on the wire, seen IPv4 %v IPv6 %v, then: %v", seen[0], seen[1], err)
		}
		b := buf[:n]
		switch {
		case n >= 20 && b[0]>>4 == 4 && b[9] == unix.IPPROTO_ESP:
			checkIPHeader(t, "IPv4 on the wire", b, wire[0], esp[0])
			seen[0] = true
		case n >= 40 && b[0]>>4 == 6 && b[6] == unix.IPPROTO_ESP:
			checkIPHeader(t, "IPv6 on the wire", b, wire[1], esp[1])
			seen[1] = true
		}
	}

	// Back through the Conn's own receivers.
	got := [2]bool{}
	for !got[0] || !got[1] {
		var p Packet
		select {
		case p = <-received:
		case <-time.After(5 * time.Second):
			t.Fatalf("received back IPv4 %v IPv6 %v, then nothing", got[0], got[1])
		}
		i, start := 0, Headroom+20
		if p.Outer.Is6() {
			i, start = 1, Headroom
		}
		got[i] = true
		if p.Outer != back[i] {
			t.Errorf("received Outer %+v, want %+v", p.Outer, back[i])
		}
		if p.Start != start || string(payload(&p)) != string(esp[i]) {
			t.Errorf("received %d bytes at %d, want the %d ESP bytes sent at %d", p.End-p.Start, p.Start, len(esp[i]), start)
		}
	}
}
