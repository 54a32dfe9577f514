package underlay

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"vnic/header"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// BatchSize is how many packets one receive call reads at most
// (recvmmsg).
const BatchSize = 64

// Packet is one ESP packet on the underlay: Buf[Start:End] is the ESP
// header and what follows (for a NAT keepalive, its one byte), and Outer
// where it goes or came from. On send, raw ESP needs Outer.Size() bytes
// of Buf before Start for its IP header; on receive, there are Headroom
// bytes before Start.
type Packet struct {
	Buf        []byte
	Start, End int
	Outer      header.Outer
}

// inBuffer reports whether Buf[Start:End] lies in Buf with at least
// headroom bytes before it.
func (p *Packet) inBuffer(headroom int) bool {
	return p.Start >= headroom && p.Start <= p.End && p.End <= len(p.Buf)
}

// Deliver receives the packets of one read. The buffers belong to the
// callee only for the duration of the call.
type Deliver func(pkts []Packet)

// ReceiveFunc reads one batch from one socket (recvmmsg) and hands its
// packets to deliver, in more than one call when UDP GRO joined more
// datagrams than fit in one; it returns the read's error, net.ErrClosed
// once the Conn is closed. A ReceiveFunc must not be called from two
// goroutines at once.
type ReceiveFunc func(deliver Deliver) error

// reader is one socket's receive state: its buffers, messages and the
// function that reads a message's outer header.
type reader struct {
	name  string
	batch func([]ipv4.Message) (int, error)
	// outer returns the outer header of the n bytes that m received at
	// buf[Headroom:], whose control messages say anc, and where the ESP
	// (or UDP payload) lies in buf. A raw IPv4 socket hands over the IP
	// header, the other sockets only what follows it.
	outer func(buf []byte, m *ipv4.Message, anc *ancillary, n int) (o header.Outer, start, end int)
	msgs  []ipv4.Message
	bufs  [][]byte
	pkts  []Packet
	// segs are buffers for the datagrams a UDP GRO read coalesced, after
	// the first (which stays in place); nil without GRO.
	segs [][]byte
}

// groSegments is how many coalesced datagrams one reader can hold apart
// per batch; more are delivered in a further batch.
const groSegments = 256

// segSize is the largest coalesced datagram a segment buffer holds (a
// jumbo frame).
const segSize = 9216

func newReader(name string, batch func([]ipv4.Message) (int, error), outer func([]byte, *ipv4.Message, *ancillary, int) (header.Outer, int, int), oob bool) *reader {
	r := &reader{name: name, batch: batch, outer: outer,
		msgs: make([]ipv4.Message, BatchSize), bufs: make([][]byte, BatchSize), pkts: make([]Packet, 0, BatchSize)}
	for i := range r.msgs {
		r.bufs[i] = make([]byte, bufSize)
		r.msgs[i].Buffers = [][]byte{r.bufs[i][Headroom : bufSize-64]}
		if oob {
			r.msgs[i].OOB = make([]byte, 256)
		}
	}
	return r
}

// Receivers returns a ReceiveFunc for each open socket: the device runs
// each in a loop of its own.
func (c *Conn) Receivers() []ReceiveFunc {
	var rs []*reader
	if c.raw4 != nil {
		p := ipv4.NewPacketConn(c.raw4)
		rs = append(rs, newReader("raw4", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) }, rawOuter4, false))
	}
	if c.udp4 != nil {
		p := ipv4.NewPacketConn(c.udp4)
		rs = append(rs, c.groReader(newReader("udp4", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) }, c.socketOuter, true)))
	}
	if c.raw6 != nil {
		p := ipv6.NewPacketConn(c.raw6)
		rs = append(rs, newReader("raw6", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) }, c.socketOuter, true))
	}
	if c.udp6 != nil {
		p := ipv6.NewPacketConn(c.udp6)
		rs = append(rs, c.groReader(newReader("udp6", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) }, c.socketOuter, true)))
	}
	fs := make([]ReceiveFunc, len(rs))
	for i, r := range rs {
		fs[i] = r.receive
	}
	return fs
}

// receive reads one batch from r's socket and hands it to deliver.
func (r *reader) receive(deliver Deliver) error {
	n, err := r.batch(r.msgs)
	if err != nil {
		return fmt.Errorf("underlay %s: %w", r.name, err)
	}
	r.pkts = r.pkts[:0]
	seg := 0
	for i := range n {
		m := &r.msgs[i]
		anc := parseAncillary(m.OOB[:m.NN]) // once for all of a GRO read's datagrams
		size := m.N
		if g := anc.gro; r.segs != nil && g > 0 && g < m.N && g <= segSize {
			size = g
		}
		if more := (m.N - 1) / size; seg+more > len(r.segs) && len(r.pkts) > 0 {
			// Not enough segment buffers left: hand over what is
			// ready first. (A message is split only after that, so
			// no buffer is reused while its data waits.)
			deliver(r.pkts)
			r.pkts, seg = r.pkts[:0], 0
		}
		o, start, end := r.outer(r.bufs[i], m, &anc, size)
		r.pkts = append(r.pkts, Packet{Buf: r.bufs[i], Start: start, End: end, Outer: o})
		// The datagrams GRO joined behind the first: each to a buffer
		// of its own, with the first one's outer header.
		for off := size; off < m.N && seg < len(r.segs); off += size {
			b := r.segs[seg]
			seg++
			k := copy(b[Headroom:Headroom+size], r.bufs[i][Headroom+off:Headroom+m.N])
			r.pkts = append(r.pkts, Packet{Buf: b, Start: Headroom, End: Headroom + k, Outer: o})
		}
		m.OOB = m.OOB[:cap(m.OOB)]
	}
	if len(r.pkts) > 0 {
		deliver(r.pkts)
	}
	return nil
}

// groReader turns UDP GRO on for r's socket when the kernel allows it, so
// that one read returns many datagrams; r then splits them.
func (c *Conn) groReader(r *reader) *reader {
	conn := c.udp4
	if r.name == "udp6" {
		conn = c.udp6
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return r
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return r // no GRO: one datagram per message
	}
	r.segs = make([][]byte, groSegments)
	for i := range r.segs {
		r.segs[i] = make([]byte, Headroom+segSize+64)
	}
	return r
}

// ancillary is what the control messages of one received datagram say.
type ancillary struct {
	// dst is the destination address of the packet's IP header
	// (IP_PKTINFO, IPV6_PKTINFO); invalid when absent.
	dst netip.Addr
	// ttl and tos are the IPv4 TTL and TOS, or the IPv6 hop limit and
	// traffic class; -1 when absent.
	ttl, tos int
	// gro is the segment size of a UDP GRO read; 0 when absent.
	gro int
}

// parseAncillary reads the control messages the underlay sockets ask for
// (see recvOptions) without allocating. Malformed or truncated messages
// end the walk; what was read before them stands.
func parseAncillary(oob []byte) ancillary {
	a := ancillary{ttl: -1, tos: -1}
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			a.gro = int(binary.NativeEndian.Uint32(data))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, spec_dst, addr (the header's
			// destination).
			a.dst = netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4:
			a.ttl = int(binary.NativeEndian.Uint32(data)) & 0xff
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
			a.tos = int(data[0])
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			a.dst = netip.AddrFrom16([16]byte(data[:16]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
			a.ttl = int(binary.NativeEndian.Uint32(data)) & 0xff
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
			a.tos = int(binary.NativeEndian.Uint32(data)) & 0xff
		}
		next := (l + unix.SizeofPtr - 1) &^ (unix.SizeofPtr - 1)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return a
}

// rawOuter4 reads the IPv4 header that a raw IPv4 socket hands over with
// each packet. A header the kernel should not have passed on yields an
// empty packet, which the device counts as malformed.
func rawOuter4(buf []byte, _ *ipv4.Message, _ *ancillary, n int) (header.Outer, int, int) {
	o, payload, end, err := header.ParseOuter(buf[Headroom : Headroom+n])
	if err != nil {
		return header.Outer{}, Headroom, Headroom
	}
	return o, Headroom + payload, Headroom + end
}

// socketOuter returns the outer header of a packet from a socket that
// takes the IP header off (UDP, raw IPv6): the peer's address (and port)
// from the message, and from its control messages what the header said:
// the destination address (the local one when not reported), the TOS or
// traffic class (0) and the TTL or hop limit (64).
func (c *Conn) socketOuter(_ []byte, m *ipv4.Message, a *ancillary, n int) (header.Outer, int, int) {
	var o header.Outer
	switch addr := m.Addr.(type) {
	case *net.IPAddr:
		o.Src, _ = netip.AddrFromSlice(addr.IP)
	case *net.UDPAddr:
		ap := addr.AddrPort()
		o.Src, o.SrcPort = ap.Addr(), ap.Port()
		o.UDP, o.DstPort = true, c.port
	}
	o.Src = o.Src.Unmap()
	local := c.local6
	if o.Src.Is4() {
		local = c.local4
	}
	o.Dst, o.TOS, o.TTL = local, 0, header.DefaultTTL
	if a.dst.IsValid() && a.dst.Is4() == local.Is4() {
		o.Dst = a.dst
	}
	if a.tos >= 0 {
		o.TOS = uint8(a.tos)
	}
	if a.ttl >= 0 {
		o.TTL = uint8(a.ttl)
	}
	return o, Headroom, Headroom + n
}
