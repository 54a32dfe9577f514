package offload

import (
	"errors"

	"vnic/algo"
	"vnic/header"
	"vnic/sadb"
)

// Kind says what an underlay packet is.
type Kind uint8

// Kinds of underlay packet.
const (
	KindESP       Kind = iota // an ESP packet, raw or in UDP
	KindKeepalive             // a NAT keepalive (RFC 3948 §2.3): one 0xFF byte in UDP
	KindIKE                   // a UDP packet with the non-ESP marker (IKE on port 4500)
)

// Header is an underlay packet as Parse found it: its outer header and
// where its ESP lies in the buffer.
type Header struct {
	header.Outer
	SPI uint32
	// ESP is the offset of the ESP header in the buffer, End the end of
	// the packet.
	ESP, End int
}

// Parse says whether the underlay packet buf[start:end], which the
// underlay received with the outer header o (its UDP payload, or what
// follows the IP header of raw ESP), is ESP, a NAT keepalive or IKE, and
// reads the SPI of ESP.
func Parse(buf []byte, start, end int, o *header.Outer) (Header, Kind, error) {
	h := Header{Outer: *o, ESP: start, End: end}
	if start < 0 || end > len(buf) || start > end {
		return h, 0, ErrMalformed
	}
	if o.UDP {
		if end-start == 1 && buf[start] == KeepaliveByte {
			return h, KindKeepalive, nil
		}
		if end-start >= 4 && header.ESP(buf[start:]).SPI() == 0 {
			return h, KindIKE, nil
		}
	}
	if end-start < espHeader {
		return h, 0, ErrMalformed
	}
	h.SPI = header.ESP(buf[start:]).SPI()
	return h, KindESP, nil
}

// Decapsulate verifies and decrypts the ESP packet buf[h.ESP:h.End] that
// Parse described, with the inbound SA sa, and returns where the plaintext
// IP packet lies in buf. It runs the RFC 4303 order: replay pre-check,
// integrity check and decryption, replay window update, trailer checks,
// then the selector check on the inner packet (RFC 4301 §5.2).
func Decapsulate(sa *sadb.SA, h *Header, buf []byte) (Span, Event, error) {
	seq, err := DecapBegin(sa, h, buf)
	if err == nil {
		err = DecapOpen(sa, h, buf, seq)
	}
	if err != nil {
		return Span{}, 0, err
	}
	return DecapEnd(sa, h, buf, seq)
}

// DecapBegin makes the checks that come before the cryptography: the SA
// is alive and matches the packet's encapsulation, the packet is long
// enough, and its sequence number passes the replay pre-check. It returns
// the packet's full (extended) sequence number.
func DecapBegin(sa *sadb.SA, h *Header, buf []byte) (uint64, error) {
	if !sa.Alive() {
		if sa.HardExpired.Load() {
			return 0, ErrInExpired
		}
		return 0, ErrSADead
	}
	if h.UDP != sa.Config.Encap.UDP {
		return 0, ErrEncapMismatch
	}
	c := sa.Cipher
	esp, end := h.ESP, h.End
	// The ciphers use the 16 bytes before the ESP header as scratch.
	if end-esp < espHeader+c.IVLen()+espTrailer+c.ICVLen() || esp < 16 {
		return 0, ErrMalformed
	}
	seq, err := sa.In.Check(header.ESP(buf[esp:]).Seq())
	if err != nil {
		return 0, ErrReplay
	}
	return seq, nil
}

// DecapOpen verifies and decrypts the packet in place, after DecapBegin:
// the part of the work that the device's crypto workers can do in
// parallel.
func DecapOpen(sa *sadb.SA, h *Header, buf []byte, seq uint64) error {
	if err := sa.Cipher.Open(buf[:h.End], h.ESP, seq); err != nil {
		if errors.Is(err, algo.ErrLength) {
			return ErrBadLength
		}
		if sa.Config.Mode == sadb.Transport {
			return ErrAuthTransport
		}
		return ErrAuthTunnel
	}
	return nil
}

// DecapEnd finishes a packet that DecapOpen authenticated, in the order
// packets arrived: the replay window update, the trailer checks, and the
// selector check on the inner packet. In transport mode the plaintext
// gets its IP header back, built from h's outer header in front of it.
func DecapEnd(sa *sadb.SA, h *Header, buf []byte, seq uint64) (Span, Event, error) {
	cfg := &sa.Config
	esp, end := h.ESP, h.End
	ivLen, icvLen := sa.Cipher.IVLen(), sa.Cipher.ICVLen()
	var ev Event
	advanced, err := sa.In.Accept(seq)
	if err != nil {
		return Span{}, 0, ErrReplay
	}
	if advanced {
		ev |= EventESNAdvanced
	}
	if sa.PeerNearExhaustion(seq) {
		ev |= EventSeqNearExhaustion
	}

	// Trailer: pad length, next header, padding 1, 2, 3, ...
	ps := esp + espHeader + ivLen // first plaintext byte
	te := end - icvLen            // end of the trailer
	padLen := int(buf[te-2])
	next := buf[te-1]
	pe := te - espTrailer - padLen // end of the payload
	if pe < ps {
		return Span{}, ev, ErrBadPadding
	}
	for i, b := range buf[pe : te-espTrailer] {
		if b != byte(i+1) {
			return Span{}, ev, ErrBadPadding
		}
	}
	ev |= account(sa, pe-ps)
	if next == header.ProtoNoNext {
		return Span{}, ev, ErrDummy
	}

	var out Span
	if cfg.Mode == sadb.Tunnel {
		if next != header.ProtoIPv4 && next != header.ProtoIPv6 {
			return Span{}, ev, ErrBadNextHeader
		}
		n, ok := innerLen(buf[ps:pe], next)
		if !ok {
			return Span{}, ev, ErrBadInner
		}
		out = Span{ps, ps + n} // TFC padding after the inner packet is dropped
		propagateCE(buf[ps:ps+n], h.TOS)
	} else {
		var ok bool
		if out, ok = rebuildTransport(buf, h, ps, pe, next); !ok {
			return Span{}, ev, ErrNoRoomIn
		}
		if h.UDP && (next == header.ProtoTCP || next == header.ProtoUDP) {
			// NAT-T: a NAT may have rewritten the addresses the
			// sender's checksum covers; the ICV vouched for the data.
			setTransportChecksum(buf[out.Start:out.End], next, buf[ps:pe])
		}
	}
	if !matchInner(sa, buf[out.Start:out.End]) {
		return Span{}, ev, ErrSelector
	}
	return out, ev, nil
}

// innerLen checks the tunnelled IP header at the start of p against the
// next header and returns the inner packet's length (p may be longer:
// TFC padding, RFC 4303 §2.7).
func innerLen(p []byte, next uint8) (int, bool) {
	if len(p) < ipv4MinHeader {
		return 0, false
	}
	switch next {
	case header.ProtoIPv4:
		h := header.IPv4(p)
		if !h.Valid() {
			return 0, false
		}
		return h.TotalLen(), true
	default:
		h := header.IPv6(p)
		if !h.Valid() {
			return 0, false
		}
		return ipv6Header + h.PayloadLen(), true
	}
}

// rebuildTransport writes the IP header of a transport-mode packet in
// front of its decrypted payload buf[ps:pe], from the outer header it came
// with: raw ESP's IPv4 options or IPv6 extension headers move up from
// before the ESP header, and the header names the payload's protocol. It
// reports false when the buffer has no room before the payload.
func rebuildTransport(buf []byte, h *Header, ps, pe int, next uint8) (Span, bool) {
	o := &h.Outer
	opts := o.Opts
	if o.UDP {
		opts = 0
	}
	fixed := ipv4MinHeader
	if o.Is6() {
		fixed = ipv6Header
	}
	start := ps - opts - fixed
	if start < 0 || h.ESP < opts {
		return Span{}, false
	}
	copy(buf[ps-opts:ps], buf[h.ESP-opts:h.ESP])
	ttl := o.TTL
	pkt := buf[start:pe]
	if !o.Is6() {
		header.IPv4(pkt).Encode(&header.IPv4Fields{HeaderLen: fixed + opts, TOS: o.TOS, TotalLen: len(pkt),
			ID: o.ID, DF: o.DF, TTL: ttl, Protocol: next, Src: o.Src, Dst: o.Dst})
		return Span{start, pe}, true
	}
	first := next
	if opts > 0 {
		first = o.OptsNext
	}
	ip := header.IPv6(pkt)
	ip.Encode(&header.IPv6Fields{TrafficClass: o.TOS, FlowLabel: o.FlowLabel, PayloadLen: len(pkt) - ipv6Header,
		NextHeader: first, HopLimit: ttl, Src: o.Src, Dst: o.Dst})
	if opts > 0 {
		// The last extension header named ESP: it names the payload now.
		c := header.IPv6(pkt[:fixed+opts]).Chain()
		for c.Next == header.ProtoHopByHop || c.Next == header.ProtoRouting || c.Next == header.ProtoDstOpts {
			if !c.Step() {
				break
			}
		}
		pkt[c.NextAt] = next
	}
	return Span{start, pe}, true
}

// matchInner applies the SA's selectors to a decrypted inner packet.
func matchInner(sa *sadb.SA, pkt []byte) bool {
	if sa.MatchesAll() {
		return true
	}
	f, ok := FlowOf(pkt)
	return ok && sa.Match(f)
}
