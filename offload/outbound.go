package offload

import (
	"vnic/header"
	"vnic/sadb"
)

// Encapsulate protects the plaintext IP packet buf[start:end] with the
// outbound SA sa. The job's Span is the ESP packet (ESP header to ICV)
// in buf, its Outer the outer header for the underlay to send it with.
// The packet must have Headroom bytes before start and Tailroom bytes of
// capacity after end.
func Encapsulate(sa *sadb.SA, buf []byte, start, end int) (EncapJob, Event, error) {
	p, ev, err := EncapBegin(sa, buf, start, end)
	if err != nil {
		return EncapJob{}, ev, err
	}
	p.Seal(buf)
	return p, ev, nil
}

// EncapJob is an outbound packet between EncapBegin, which numbered it and
// wrote its ESP header and trailer, and Seal, which encrypts it: the part
// of the work that the device's crypto workers can do in parallel.
type EncapJob struct {
	// Span is where the ESP packet lies in the buffer, from the ESP
	// header to the ICV.
	Span
	// Outer is the outer IP (and UDP) header to send it with. In tunnel
	// mode it comes from the SA (an unset source is left for the
	// underlay to fill in); in transport mode from the packet's own IP
	// header, whose options or extension headers (Outer.Opts) stay in
	// the buffer right before the ESP header.
	Outer header.Outer
	sa    *sadb.SA
	seq   uint64 // the packet's full (extended) sequence number
}

// SA returns the outbound SA the packet is protected with.
func (p *EncapJob) SA() *sadb.SA { return p.sa }

// Seal encrypts and authenticates the packet in place.
func (p *EncapJob) Seal(buf []byte) {
	p.sa.Cipher.Seal(buf[:p.End], p.Start, p.seq)
}

// EncapBegin does everything Encapsulate does except the cryptography: it
// checks the packet, takes the next sequence number, and writes the ESP
// header and trailer. Sequence numbers are taken in the order packets
// arrive here; Seal may then run on any core.
func EncapBegin(sa *sadb.SA, buf []byte, start, end int) (EncapJob, Event, error) {
	if !sa.Alive() {
		if sa.HardExpired.Load() {
			return EncapJob{}, 0, ErrOutExpired
		}
		return EncapJob{}, 0, ErrOutDead
	}
	if start < 0 || end > len(buf) || end-start < ipv4MinHeader {
		return EncapJob{}, 0, ErrBadPlaintext
	}
	pkt := buf[start:end]
	version := header.Version(pkt)
	if version != 4 && version != 6 || version == 6 && len(pkt) < ipv6Header {
		return EncapJob{}, 0, ErrBadPlaintext
	}
	c := sa.Cipher
	cfg := &sa.Config

	// What ESP protects: the whole packet (tunnel) or what follows the
	// IP header (transport), the next header that names it, and the
	// outer header.
	var o header.Outer
	var hdrLen, nextAt int // transport: IP header length, offset of the next-header byte that names the payload
	var next uint8
	if cfg.Mode == sadb.Tunnel {
		next = header.ProtoIPv4
		if version == 6 {
			next = header.ProtoIPv6
		}
		o = tunnelOuter(cfg, pkt)
	} else {
		if (version == 6) != cfg.Dst.Is6() {
			return EncapJob{}, 0, ErrFamilyMismatch
		}
		var ok bool
		hdrLen, nextAt, next, ok = transportHeader(pkt)
		if !ok {
			return EncapJob{}, 0, ErrBadPlaintext
		}
		o = transportOuter(cfg, pkt, hdrLen)
	}
	payload := end - (start + hdrLen)
	align := c.Align()
	padLen := (align - (payload+espTrailer)%align) % align
	ivLen, icvLen := c.IVLen(), c.ICVLen()
	tail := padLen + espTrailer + icvLen
	ps := start + hdrLen // first protected byte
	esp := ps - ivLen - espHeader
	if esp < o.Size() || cap(buf)-end < tail+tagSlack {
		return EncapJob{}, 0, ErrNoRoomOut
	}
	// The outer length field must hold the result (the IPv6 payload
	// length does not count the fixed header).
	maxLen := header.MaxIPv4TotalLen
	if o.Is6() {
		maxLen = header.IPv6Size + header.MaxIPv6PayloadLen
	}
	if o.Size()+end+tail-esp > maxLen {
		return EncapJob{}, 0, ErrTooBig
	}

	seq, warn, err := sa.Out.Next()
	if err != nil {
		return EncapJob{}, 0, ErrSeqExhausted
	}
	var ev Event
	if warn {
		ev |= EventSeqNearExhaustion
	}
	if cfg.Mode == sadb.Tunnel && !o.Is6() {
		// The identification only has to tell apart the fragments of
		// packets in flight between the endpoints (RFC 6864): the
		// sequence number's low bits do, at no cost.
		o.ID = uint16(seq)
	}
	if o.Opts > 0 {
		// Transport mode: the IP options or extension headers slide
		// down to sit before ESP, and the last extension header names
		// ESP.
		fixed := hdrLen - o.Opts
		copy(buf[esp-o.Opts:esp], buf[start+fixed:ps])
		if nextAt >= fixed {
			buf[esp-o.Opts+nextAt-fixed] = header.ProtoESP
		}
	}

	// ESP header and trailer.
	header.ESP(buf[esp:]).Encode(cfg.SPI, uint32(seq))
	newEnd := end + tail
	t := buf[end:newEnd]
	for i := range padLen {
		t[i] = byte(i + 1) // RFC 4303 §2.4 default padding
	}
	t[padLen] = byte(padLen)
	t[padLen+1] = next
	ev |= account(sa, payload)
	return EncapJob{Span: Span{esp, newEnd}, Outer: o, sa: sa, seq: seq}, ev, nil
}

// saOuter returns the outer header an SA's packets carry, from its
// endpoints: the source (or none, for the underlay to fill in), the
// destination and, for ESP-in-UDP, the ports; and the device's TTL.
func saOuter(cfg *sadb.Config) header.Outer {
	o := header.Outer{Src: cfg.Src, Dst: cfg.Dst, UDP: cfg.Encap.UDP, TTL: header.DefaultTTL}
	if o.UDP {
		o.SrcPort, o.DstPort = cfg.Encap.SrcPort, cfg.Encap.DstPort
	}
	return o
}

// tunnelOuter returns the outer header of a tunnel-mode packet around
// the inner packet pkt: the SA's endpoints, the inner DSCP and ECN (see
// encapTOS), IPv4's don't-fragment flag copied from an inner IPv4 packet
// and set for an inner IPv6 one (which is never fragmented on the way),
// and an inner IPv6 packet's flow label.
func tunnelOuter(cfg *sadb.Config, pkt []byte) header.Outer {
	o := saOuter(cfg)
	if header.Version(pkt) == 4 {
		h := header.IPv4(pkt)
		o.TOS, o.DF = encapTOS(h.TOS()), h.DontFragment()
	} else {
		h := header.IPv6(pkt)
		o.TOS, o.DF, o.FlowLabel = encapTOS(h.TrafficClass()), true, h.FlowLabel()
	}
	return o
}

// transportOuter returns the outer header of a transport-mode packet: the
// packet's own IP header, whose hdrLen bytes hold options or extension
// headers after the fixed part (kept for raw ESP only: the UDP sockets
// build their own header).
func transportOuter(cfg *sadb.Config, pkt []byte, hdrLen int) header.Outer {
	o := saOuter(cfg)
	if header.Version(pkt) == 4 {
		h := header.IPv4(pkt)
		o.Src, o.Dst, o.TOS, o.TTL, o.DF, o.ID = h.Src(), h.Dst(), h.TOS(), h.TTL(), h.DontFragment(), h.ID()
		if !o.UDP {
			o.Opts = hdrLen - ipv4MinHeader
		}
	} else {
		h := header.IPv6(pkt)
		o.Src, o.Dst, o.TOS, o.TTL, o.FlowLabel = h.Src(), h.Dst(), h.TrafficClass(), h.HopLimit(), h.FlowLabel()
		if !o.UDP && hdrLen > ipv6Header {
			o.Opts, o.OptsNext = hdrLen-ipv6Header, h.NextHeader()
		}
	}
	return o
}

// tagSlack is spare capacity after the ICV that ciphers with a truncated
// tag write their full tag into.
const tagSlack = 8

// transportHeader finds where ESP goes in a transport-mode packet: after
// the IPv4 header (with options), or after the IPv6 header and any
// hop-by-hop and routing headers (RFC 4303 §3.1.1). It returns that length,
// the offset of the next-header byte that names what follows, and its
// value.
func transportHeader(pkt []byte) (hdrLen, nextAt int, next uint8, ok bool) {
	if header.Version(pkt) == 4 {
		h := header.IPv4(pkt)
		hl := h.HeaderLen()
		if hl < ipv4MinHeader || hl > len(pkt) || h.TotalLen() != len(pkt) || h.Fragmented() {
			return 0, 0, 0, false
		}
		return hl, 9, h.Protocol(), true
	}
	h := header.IPv6(pkt)
	if h.PayloadLen()+ipv6Header != len(pkt) {
		return 0, 0, 0, false
	}
	c := h.Chain()
	for c.Next == header.ProtoHopByHop || c.Next == header.ProtoRouting {
		if !c.Step() {
			return 0, 0, 0, false
		}
	}
	return c.Off, c.NextAt, c.Next, true
}
