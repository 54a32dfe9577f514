package underlay

import (
	"encoding/binary"
	"net"
	"testing"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// udp4Packet builds an IPv4/UDP packet to dst:dport with n payload bytes.
func udp4Packet(dst [4]byte, dport uint16, n int) []byte {
	p := make([]byte, 28+n)
	p[0], p[9] = 0x45, unix.IPPROTO_UDP
	copy(p[16:], dst[:])
	binary.BigEndian.PutUint16(p[22:], dport)
	for i := range n {
		p[28+i] = byte(i)
	}
	return p
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
			if err := c.queue(raw4Packet(a, 100)); err != nil {
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
	for _, p := range pkts {
		if err := c.queue(p); err != nil {
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
		if got := groSize(c.oob); got != c.want {
			t.Errorf("%s: groSize = %d, want %d", c.name, got, c.want)
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
		gsoOff bool
	}{{8000, false}, {1000, true}} {
		c := &Conn{udp4: &net.UDPConn{}}
		var sent []int // datagram sizes, in order
		c.batch[kindUDP4] = func(ms []ipv4.Message, _ int) (int, error) {
			if len(ms[0].OOB) > 0 {
				return 0, unix.EINVAL
			}
			sent = append(sent, len(ms[0].Buffers[0]))
			return 1, nil
		}
		dst := [4]byte{192, 0, 2, 1}
		if err := c.SendBatch([][]byte{udp4Packet(dst, 4500, tc.size), udp4Packet(dst, 4500, tc.size)}); err != nil {
			t.Fatalf("%d bytes: %v", tc.size, err)
		}
		if len(sent) != 2 || sent[0] != tc.size || sent[1] != tc.size {
			t.Errorf("%d bytes: sent %v, want two datagrams", tc.size, sent)
		}
		if c.send.gsoOff != tc.gsoOff {
			t.Errorf("%d-byte segments refused: GSO off %v, want %v", tc.size, c.send.gsoOff, tc.gsoOff)
		}
	}
}
