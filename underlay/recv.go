package underlay

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// BatchSize is how many packets one receive call reads at most
// (recvmmsg).
const BatchSize = 64

// Packet is one received packet: Buf[Start:End] is the whole outer packet,
// with Headroom bytes of Buf before it.
type Packet struct {
	Buf        []byte
	Start, End int
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
// function that turns a message into a whole packet.
type reader struct {
	name  string
	batch func([]ipv4.Message) (int, error)
	// fix rebuilds the headers the socket took off a datagram of n bytes
	// from m, whose control messages say anc.
	fix  func(buf []byte, m *ipv4.Message, anc *ancillary, n int) (start int, ok bool)
	msgs []ipv4.Message
	bufs [][]byte
	pkts []Packet
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

func newReader(name string, batch func([]ipv4.Message) (int, error), fix func([]byte, *ipv4.Message, *ancillary, int) (int, bool), oob bool) *reader {
	r := &reader{name: name, batch: batch, fix: fix,
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
		rs = append(rs, newReader("raw4", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) },
			func([]byte, *ipv4.Message, *ancillary, int) (int, bool) { return Headroom, true }, false))
	}
	if c.udp4 != nil {
		p := ipv4.NewPacketConn(c.udp4)
		rs = append(rs, c.groReader(newReader("udp4", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) }, c.fixUDP4, true)))
	}
	if c.raw6 != nil {
		p := ipv6.NewPacketConn(c.raw6)
		rs = append(rs, newReader("raw6", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) },
			func(b []byte, m *ipv4.Message, a *ancillary, n int) (int, bool) { return c.fix6(b, m, a, n, false) }, true))
	}
	if c.udp6 != nil {
		p := ipv6.NewPacketConn(c.udp6)
		rs = append(rs, c.groReader(newReader("udp6", func(m []ipv4.Message) (int, error) { return p.ReadBatch(m, 0) },
			func(b []byte, m *ipv4.Message, a *ancillary, n int) (int, bool) { return c.fix6(b, m, a, n, true) }, true)))
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
		if start, ok := r.fix(r.bufs[i], m, &anc, size); ok {
			r.pkts = append(r.pkts, Packet{Buf: r.bufs[i], Start: start, End: Headroom + size})
			// The datagrams GRO joined behind the first: each to a
			// buffer of its own, with room for its headers.
			for off := size; off < m.N && seg < len(r.segs); off += size {
				b := r.segs[seg]
				seg++
				k := copy(b[Headroom:Headroom+size], r.bufs[i][Headroom+off:Headroom+m.N])
				if start, ok := r.fix(b, m, &anc, k); ok {
					r.pkts = append(r.pkts, Packet{Buf: b, Start: start, End: Headroom + k})
				}
			}
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

// headerFields returns what a datagram socket took off the IP header of a
// datagram, from its control messages a: the destination address (local
// when not reported), TOS or traffic class (0) and TTL or hop limit (64).
func headerFields(a *ancillary, local netip.Addr) (dst netip.Addr, tos, ttl int) {
	dst, tos, ttl = local, 0, 64
	if a.dst.IsValid() && a.dst.Is4() == local.Is4() {
		dst = a.dst
	}
	if a.tos >= 0 {
		tos = a.tos
	}
	if a.ttl >= 0 {
		ttl = a.ttl
	}
	return
}

// fix6 rebuilds the IPv6 header (and the UDP header) that an IPv6 socket
// takes off, in the headroom before the payload.
func (c *Conn) fix6(buf []byte, m *ipv4.Message, anc *ancillary, n int, udp bool) (int, bool) {
	dst, tclass, hops := headerFields(anc, c.local6)
	var src netip.Addr
	var sport uint16
	switch a := m.Addr.(type) {
	case *net.IPAddr:
		src, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ap := a.AddrPort()
		src, sport = ap.Addr(), ap.Port()
	default:
		return 0, false
	}
	start := Headroom
	if udp {
		start -= 8
		putUDP(buf[start:], sport, c.port, n)
	}
	start -= 40
	h := buf[start:]
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(tclass&0xff)<<20)
	binary.BigEndian.PutUint16(h[4:], uint16(Headroom+n-start-40))
	h[6] = unix.IPPROTO_ESP
	if udp {
		h[6] = unix.IPPROTO_UDP
	}
	h[7] = byte(hops)
	s, d := src.Unmap().As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return start, true
}

// fixUDP4 rebuilds the IPv4 and UDP headers of a datagram from the IPv4
// UDP socket.
func (c *Conn) fixUDP4(buf []byte, m *ipv4.Message, anc *ancillary, n int) (int, bool) {
	a, ok := m.Addr.(*net.UDPAddr)
	if !ok {
		return 0, false
	}
	dst, tos, ttl := headerFields(anc, c.local4)
	ap := a.AddrPort()
	start := Headroom - 8
	putUDP(buf[start:], ap.Port(), c.port, n)
	start -= 20
	h := buf[start:]
	h[0], h[1] = 0x45, byte(tos)
	binary.BigEndian.PutUint16(h[2:], uint16(20+8+n))
	binary.BigEndian.PutUint32(h[4:], 0)
	h[8], h[9] = byte(ttl), unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(h[10:], 0)
	s, d := ap.Addr().Unmap().As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return start, true
}

func putUDP(h []byte, sport, dport uint16, payload int) {
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+payload))
	binary.BigEndian.PutUint16(h[6:], 0)
}
