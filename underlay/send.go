package underlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"vnic/header"
	"vnic/ipfrag"
)

// ErrNoSocket: no socket is open for the packet's family and framing.
var ErrNoSocket = errors.New("underlay: no socket for this address family and encapsulation")

// maxGSOSegments is the most datagrams one UDP_SEGMENT send carries (the
// kernel's UDP_MAX_SEGMENTS is 128; 64 KiB bounds it first for MTU-sized
// packets).
const maxGSOSegments = 64

// sock kinds, the order SendBatch flushes them in.
const (
	kindRaw4 = iota
	kindRaw6
	kindUDP4
	kindUDP6
	numKinds
)

// sender is the send state: per socket kind, the messages of the batch
// being built and reusable addresses and GSO buffers. One batch is sent
// at a time.
type sender struct {
	mu    sync.Mutex
	queue [numKinds][]ipv4.Message
	ip    [numKinds][]net.IPAddr
	udp   [numKinds][]net.UDPAddr
	segs  [numKinds][]gsoState
	gso   [numKinds][][]byte
	oob   [numKinds][][]byte
	// from[k] holds the index in the batch of each packet queued on kind
	// k, in queue order: message i holds the next segs[k][i].n of them.
	from [numKinds][]int
	// one and oneBuf are the message sendSplit sends each datagram in.
	one    [1]ipv4.Message
	oneBuf [1][]byte
	// gsoOff is set once the kernel refused UDP GSO.
	gsoOff bool
	// frags, fragMsgs, fragBufs and scratch are sendFragments' reusable
	// state: a packet's fragments (in scratch) and their messages.
	frags    [][]byte
	fragMsgs []ipv4.Message
	fragBufs [][]byte
	fragAddr net.IPAddr
	scratch  []byte
}

// gsoState is what a message holds: how many packets (one for a raw
// message, the datagrams of a UDP one), and for UDP the length of the
// first datagram (the segment size), of the last, and the total.
type gsoState struct {
	n, size, last, bytes int
}

// SendBatch transmits ESP packets. ESP-in-UDP goes out on the UDP
// sockets, which build the IP and UDP headers, and consecutive datagrams
// to one peer of one size as one UDP GSO super-datagram. Raw ESP gets its
// IP header written in front of it here, from its Outer (an unset source
// becomes the local address), and goes out on the HDRINCL sockets, in
// fragments when it is larger than the link (see sendFragments).
//
// Every packet is either handed to the kernel or fails: it has no socket
// or no room for its header, or the kernel refuses its message (a GSO
// message fails as a whole, or, when it goes out split, from the first
// datagram refused on). A failure does not stop the packets after it.
// SendBatch returns how many packets went and the first error, and, when
// failed is not nil (it must hold len(pkts)), sets failed[i] to whether
// pkts[i] failed.
func (c *Conn) SendBatch(pkts []Packet, failed []bool) (sent int, err error) {
	s := &c.send
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.queue {
		s.queue[k], s.from[k] = s.queue[k][:0], s.from[k][:0]
	}
	if failed != nil {
		clear(failed[:len(pkts)])
	}
	note := func(e error) {
		if e != nil && err == nil {
			err = e
		}
	}
	fail := func(i int, e error) {
		note(e)
		if failed != nil {
			failed[i] = true
		}
	}
	for i := range pkts {
		p := &pkts[i]
		if p.Outer.UDP {
			if e := c.queueUDP(i, p); e != nil {
				fail(i, e)
			}
			continue
		}
		k, pkt, e := c.rawPacket(p)
		if e != nil {
			fail(i, e)
			continue
		}
		if mtu := int(c.mtu.Load()); mtu != 0 && len(pkt) > mtu {
			// Fragments go out in their place in the packets of
			// their socket: those queued before them first.
			n, e := c.flush(k, failed)
			sent += n
			note(e)
			s.queue[k], s.from[k] = s.queue[k][:0], s.from[k][:0]
			if e := c.sendFragments(k, pkt); e != nil {
				fail(i, e)
			} else {
				sent++
			}
			continue
		}
		c.queueRaw(k, i, pkt)
	}
	for k := range numKinds {
		n, e := c.flush(k, failed)
		sent += n
		note(e)
	}
	return sent, err
}

// Send transmits one packet (see SendBatch).
func (c *Conn) Send(p Packet) error {
	_, err := c.SendBatch([]Packet{p}, nil)
	return err
}

// Why SendBatch refuses a packet it cannot send.
var (
	errNoRoom  = errors.New("underlay: no room before the ESP packet for its IP header")
	errOutside = errors.New("underlay: packet outside its buffer")
	errNoDst   = errors.New("underlay: the packet has no destination address")
	errOpts    = errors.New("underlay: IP options or extension headers of an impossible length")
)

// rawPacket writes the IP header of the raw ESP packet p in front of it
// and returns its socket kind and the whole packet.
func (c *Conn) rawPacket(p *Packet) (int, []byte, error) {
	o := p.Outer
	if !o.Dst.IsValid() {
		return 0, nil, errNoDst
	}
	if o.Opts < 0 || !o.Is6() && (o.Opts > header.IPv4MaxSize-header.IPv4MinSize || o.Opts%4 != 0) ||
		o.Is6() && o.Opts%8 != 0 {
		return 0, nil, errOpts
	}
	k, local := kindRaw4, c.local4
	if o.Is6() {
		k, local = kindRaw6, c.local6
	}
	if c.batch[k] == nil {
		return 0, nil, ErrNoSocket
	}
	if !p.inBuffer(o.Size()) {
		return 0, nil, errNoRoom
	}
	if !o.Src.IsValid() || o.Src.IsUnspecified() {
		// An IPv6 HDRINCL socket sends the header as it is; IPv4's
		// would fill in a zero source, but the local address is the
		// one it would choose.
		o.Src = local
	}
	start := o.Encode(p.Buf, p.Start, p.End)
	return k, p.Buf[start:p.End], nil
}

// sendFragments sends a raw packet that is larger than the link's MTU as
// fragments that fit it (RFC 791, RFC 8200 §4.5), as the kernel does for
// ESP it sends itself and for vnic's ESP-in-UDP: the kernel refuses to
// fragment what a HDRINCL socket sends (EMSGSIZE). It writes into pkt: an
// IPv4 packet's Don't Fragment bit, copied from the inner packet, is
// cleared (the inner packet still goes whole, inside an outer packet that
// is fragmented and reassembled by the peer) and it gets an identification
// of the underlay's own. It returns nil once every fragment went.
func (c *Conn) sendFragments(k int, pkt []byte) error {
	s := &c.send
	mtu := c.readMTU()
	if len(pkt) <= mtu {
		s.fragBufs = append(s.fragBufs[:0], pkt)
		return c.sendAll(k, s.fragBufs, pkt)
	}
	var err error
	if k == kindRaw4 {
		binary.BigEndian.PutUint16(pkt[6:], binary.BigEndian.Uint16(pkt[6:])&^0x4000)
		// The identification tells the peer which fragments belong
		// together. The engine's (a tunnel SA's sequence number, or the
		// host's in transport mode) is not unique across SAs to one
		// peer: the underlay, which fragments, numbers the packets it
		// fragments itself (RFC 6864), never 0 (the kernel would give
		// each fragment an identification of its own).
		id := uint16(c.fragID.Add(1))
		for id == 0 {
			id = uint16(c.fragID.Add(1))
		}
		binary.BigEndian.PutUint16(pkt[4:], id)
		if need := ipfrag.ScratchSizeIPv4(len(pkt), mtu, 60); cap(s.scratch) < need {
			s.scratch = make([]byte, need)
		}
		s.frags, err = ipfrag.FragmentIPv4(pkt, mtu, s.scratch[:cap(s.scratch)], s.frags[:0])
	} else {
		if need := ipfrag.ScratchSizeIPv6Packet(pkt, mtu); cap(s.scratch) < need {
			s.scratch = make([]byte, need)
		}
		s.frags, err = ipfrag.FragmentIPv6(pkt, mtu, c.fragID.Add(1), s.scratch[:cap(s.scratch)], s.frags[:0])
	}
	if err != nil {
		return fmt.Errorf("underlay: fragment a %d-byte packet for a %d-byte MTU: %w", len(pkt), mtu, err)
	}
	return c.sendAll(k, s.frags, pkt)
}

// sendAll sends each of bufs, whole IP packets to pkt's destination, on
// the raw socket of kind k.
func (c *Conn) sendAll(k int, bufs [][]byte, pkt []byte) error {
	s := &c.send
	addr := &s.fragAddr
	if k == kindRaw4 {
		addr.IP = append(addr.IP[:0], pkt[16:20]...)
	} else {
		addr.IP = append(addr.IP[:0], pkt[24:40]...)
	}
	for len(s.fragMsgs) < len(bufs) {
		s.fragMsgs = append(s.fragMsgs, ipv4.Message{Buffers: make([][]byte, 1)})
	}
	msgs := s.fragMsgs[:len(bufs)]
	for i, b := range bufs {
		msgs[i].Buffers[0], msgs[i].Addr, msgs[i].OOB = b, addr, nil
	}
	for i := 0; i < len(msgs); {
		n, err := c.batch[k](msgs[i:], 0)
		if err != nil {
			if errors.Is(err, unix.EMSGSIZE) {
				c.readMTU()
			}
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		i += n
	}
	return nil
}

// slot returns the next message of kind k, growing the reusable state.
func (s *sender) slot(k int) (*ipv4.Message, int) {
	i := len(s.queue[k])
	if i == len(s.ip[k]) {
		s.ip[k] = append(s.ip[k], net.IPAddr{IP: make(net.IP, 0, 16)})
		s.udp[k] = append(s.udp[k], net.UDPAddr{IP: make(net.IP, 0, 16)})
		s.segs[k] = append(s.segs[k], gsoState{})
		s.gso[k] = append(s.gso[k], nil)
		s.oob[k] = append(s.oob[k], make([]byte, unix.CmsgSpace(2)))
	}
	if i < cap(s.queue[k]) {
		s.queue[k] = s.queue[k][:i+1]
	} else {
		s.queue[k] = append(s.queue[k], ipv4.Message{})
	}
	m := &s.queue[k][i]
	m.Buffers, m.OOB, m.Addr = m.Buffers[:0], nil, nil
	return m, i
}

// queueRaw queues packet j of the batch, a whole IP packet, as a message.
func (c *Conn) queueRaw(k, j int, pkt []byte) {
	s := &c.send
	m, i := s.slot(k)
	a := &s.ip[k][i]
	if k == kindRaw4 {
		a.IP = append(a.IP[:0], pkt[16:20]...)
	} else {
		a.IP = append(a.IP[:0], pkt[24:40]...)
	}
	m.Addr = a
	m.Buffers = append(m.Buffers, pkt)
	s.segs[k][i] = gsoState{n: 1}
	s.from[k] = append(s.from[k], j)
}

// queueUDP queues packet j of the batch, ESP-in-UDP, as a datagram. It
// joins the previous message as a GSO segment when it goes to the same
// peer, is no larger than the segment size, and the previous message's
// last segment was full size (the kernel allows only the last to be
// short).
func (c *Conn) queueUDP(j int, p *Packet) error {
	if !p.Outer.Dst.IsValid() {
		return errNoDst
	}
	k := kindUDP4
	if p.Outer.Is6() {
		k = kindUDP6
	}
	if c.batch[k] == nil {
		return ErrNoSocket
	}
	if !p.inBuffer(0) {
		return errOutside
	}
	s := &c.send
	s.from[k] = append(s.from[k], j)
	dport := p.Outer.DstPort
	payload := p.Buf[p.Start:p.End]
	var dst []byte
	if k == kindUDP4 {
		d := p.Outer.Dst.Unmap().As4()
		dst = d[:]
	} else {
		d := p.Outer.Dst.As16()
		dst = d[:]
	}
	if n := len(s.queue[k]); n > 0 && !s.gsoOff {
		a, g := &s.udp[k][n-1], &s.segs[k][n-1]
		if a.Port == int(dport) && string(a.IP) == string(dst) && len(payload) <= g.size &&
			g.last == g.size && g.n < maxGSOSegments && g.bytes+len(payload) <= 65000 {
			s.appendGSO(k, n-1, payload)
			return nil
		}
	}
	m, i := s.slot(k)
	a := &s.udp[k][i]
	a.IP, a.Port = append(a.IP[:0], dst...), int(dport)
	m.Addr = a
	m.Buffers = append(m.Buffers, payload)
	s.segs[k][i] = gsoState{n: 1, size: len(payload), last: len(payload), bytes: len(payload)}
	return nil
}

// appendGSO adds payload to message i as one more segment. The first join
// copies the first datagram into the message's contiguous buffer and adds
// the UDP_SEGMENT control message.
func (s *sender) appendGSO(k, i int, payload []byte) {
	m, g := &s.queue[k][i], &s.segs[k][i]
	if g.n == 1 {
		if cap(s.gso[k][i]) < 65536 {
			s.gso[k][i] = make([]byte, 0, 65536)
		}
		s.gso[k][i] = append(s.gso[k][i][:0], m.Buffers[0]...)
		m.OOB = putSegmentCmsg(s.oob[k][i], g.size)
	}
	s.gso[k][i] = append(s.gso[k][i], payload...)
	m.Buffers[0] = s.gso[k][i]
	g.n++
	g.last = len(payload)
	g.bytes += len(payload)
}

// putSegmentCmsg writes a UDP_SEGMENT control message with the segment
// size into b and returns it.
func putSegmentCmsg(b []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b[:unix.CmsgSpace(2)]
}

// flush sends the queued messages of kind k, in as few sendmmsg calls as
// it can. sendmmsg stops at the first message the kernel refuses: with an
// error if that is the first, otherwise with the count of messages sent
// (the error is lost; sending the rest again returns it). flush skips the
// refused message and goes on with the next. It returns how many packets
// went (every datagram of a GSO message counts) and the first error, and
// marks in failed, if not nil, the packets that did not go.
func (c *Conn) flush(k int, failed []bool) (sent int, first error) {
	s := &c.send
	ms, segs, from := s.queue[k], s.segs[k], s.from[k]
	send := c.batch[k]
	write := func(m []ipv4.Message) (int, error) { return send(m, 0) }
	next := 0 // from[next] is the first packet of ms[i]
	for i := 0; i < len(ms); {
		n, err := write(ms[i:])
		if err == nil && n > 0 {
			for _, g := range segs[i : i+n] {
				sent += g.n
				next += g.n
			}
			i += n
			continue
		}
		if err == nil {
			err = io.ErrShortWrite // not from the kernel, which sends one or fails
		}
		m, count := &ms[i], segs[i].n
		went := 0
		if (k == kindUDP4 || k == kindUDP6) && len(m.OOB) > 0 && !s.gsoOff && gsoRefused(err) {
			// Segments larger than the path's MTU are refused (EMSGSIZE
			// on recent kernels, EINVAL on older ones) and go out split,
			// which lets the kernel fragment them; the next batch tries
			// GSO again. Any other refusal of small segments means the
			// kernel or device cannot segment at all: split from now on.
			if segmentSize(m.OOB) <= minLinkPayload && !errors.Is(err, unix.EMSGSIZE) {
				s.gsoOff = true
			}
			went, err = c.sendSplit(write, m)
		}
		sent += went
		if err != nil {
			if (k == kindRaw4 || k == kindRaw6) && errors.Is(err, unix.EMSGSIZE) {
				// The link's MTU went down: the next large
				// packets go out in fragments.
				c.readMTU()
			}
			if first == nil {
				first = err
			}
			if failed != nil {
				for _, j := range from[next+went : next+count] {
					failed[j] = true
				}
			}
		}
		next += count
		i++
	}
	return sent, first
}

// gsoRefused reports whether err says the kernel would not send a UDP
// GSO message as one: it cannot segment (EIO, ENOPROTOOPT, EINVAL on
// older kernels), or the segments exceed the path's MTU (EMSGSIZE, or
// EINVAL on older kernels).
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT) ||
		errors.Is(err, unix.EMSGSIZE)
}

// minLinkPayload is the largest UDP payload that fits every link IPv6 runs
// on (1280 bytes, less 40 of IPv6 and 8 of UDP headers).
const minLinkPayload = 1280 - 48

// segmentSize returns the segment size a UDP_SEGMENT control message holds.
func segmentSize(oob []byte) int {
	return int(binary.NativeEndian.Uint16(oob[unix.CmsgLen(0):]))
}

// sendSplit sends a GSO message as separate datagrams, until one fails
// (the rest go to the same peer and are as large). It returns how many
// went.
func (c *Conn) sendSplit(write func([]ipv4.Message) (int, error), m *ipv4.Message) (int, error) {
	size := segmentSize(m.OOB)
	data := m.Buffers[0]
	went := 0
	s := &c.send
	one := s.one[:]
	for off := 0; off < len(data); off += size {
		s.oneBuf[0] = data[off:min(off+size, len(data))]
		one[0] = ipv4.Message{Buffers: s.oneBuf[:], Addr: m.Addr}
		if _, err := write(one); err != nil {
			return went, err
		}
		went++
	}
	return went, nil
}
