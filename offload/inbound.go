package offload

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"vnic/algo"
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

// Header is what Parse found in an underlay packet.
type Header struct {
	Src, Dst netip.Addr
	// UDP is true for ESP-in-UDP, with its ports.
	UDP              bool
	SrcPort, DstPort uint16
	SPI              uint32
	// ESP is the offset of the ESP header in the buffer; End the end of
	// the packet (trailing link padding removed).
	ESP, End int
	// ipHdr is the length of the outer IP header and its IPv4 options or
	// IPv6 extension headers; nextOff the offset of the next-header byte
	// that names ESP or UDP, relative to the packet start.
	ipHdr, nextOff int
	tos            uint8
}

// Parse reads the outer IPv4 or IPv6 header of the underlay packet
// buf[start:end], and the UDP header if there is one, and says whether it
// carries ESP, a NAT keepalive or IKE.
func Parse(buf []byte, start, end int) (Header, Kind, error) {
	var h Header
	if start < 0 || end > len(buf) || end-start < ipv4MinHeader {
		return h, 0, ErrMalformed
	}
	pkt := buf[start:end]
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		ip := ipv4(pkt)
		hl, tl := ip.headerLen(), ip.totalLen()
		if hl < ipv4MinHeader || tl < hl || tl > len(pkt) {
			return h, 0, ErrMalformed
		}
		if ip.fragment() {
			return h, 0, ErrFragment
		}
		h.Src, h.Dst, h.tos = ip.src(), ip.dst(), ip.tos()
		h.ipHdr, h.nextOff, proto = hl, 9, ip.protocol()
		h.End = start + tl
	case 6:
		if len(pkt) < ipv6Header {
			return h, 0, ErrMalformed
		}
		ip := ipv6(pkt)
		if ipv6Header+ip.payloadLen() > len(pkt) {
			return h, 0, ErrMalformed
		}
		h.Src, h.Dst, h.tos = ip.src(), ip.dst(), ip.trafficClass()
		h.End = start + ipv6Header + ip.payloadLen()
		off, nextOff := ipv6Header, 6
		for {
			proto = pkt[nextOff]
			if proto == protoFragment {
				return h, 0, ErrFragment
			}
			if proto != protoHopByHop && proto != protoRouting && proto != protoDstOpts {
				break
			}
			if off+8 > h.End-start {
				return h, 0, ErrMalformed
			}
			nextOff, off = off, off+int(pkt[off+1])*8+8
		}
		h.ipHdr, h.nextOff = off, nextOff
	default:
		return h, 0, ErrMalformed
	}
	p := start + h.ipHdr
	switch proto {
	case protoESP:
	case protoUDP:
		if p+udpHeader > h.End || int(binary.BigEndian.Uint16(buf[p+4:])) != h.End-p {
			return h, 0, ErrMalformed
		}
		h.UDP = true
		h.SrcPort = binary.BigEndian.Uint16(buf[p:])
		h.DstPort = binary.BigEndian.Uint16(buf[p+2:])
		p += udpHeader
		if h.End-p == 1 && buf[p] == 0xff {
			return h, KindKeepalive, nil
		}
		if h.End-p >= 4 && binary.BigEndian.Uint32(buf[p:]) == 0 {
			return h, KindIKE, nil
		}
	default:
		return h, 0, ErrNotESP
	}
	if h.End-p < espHeader {
		return h, 0, ErrMalformed
	}
	h.ESP = p
	h.SPI = binary.BigEndian.Uint32(buf[p:])
	return h, KindESP, nil
}

// Decapsulate verifies and decrypts the ESP packet buf[start:h.End] that
// Parse described, with the inbound SA sa, and returns where the plaintext
// IP packet lies in buf. It runs the RFC 4303 order: replay pre-check,
// integrity check and decryption, replay window update, trailer checks,
// then the selector check on the inner packet (RFC 4301 §5.2).
func Decapsulate(sa *sadb.SA, h *Header, buf []byte, start int) (Span, Event, error) {
	seq, err := DecapBegin(sa, h, buf)
	if err == nil {
		err = DecapOpen(sa, h, buf, seq)
	}
	if err != nil {
		return Span{}, 0, err
	}
	return DecapEnd(sa, h, buf, start, seq)
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
	if end-esp < espHeader+c.IVLen()+espTrailer+c.ICVLen() || esp < 16 {
		return 0, ErrMalformed
	}
	seq, err := sa.In.Check(binary.BigEndian.Uint32(buf[esp+4:]))
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
// selector check on the inner packet.
func DecapEnd(sa *sadb.SA, h *Header, buf []byte, start int, seq uint64) (Span, Event, error) {
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
	if next == protoNoNext {
		return Span{}, ev, ErrDummy
	}

	var out Span
	if cfg.Mode == sadb.Tunnel {
		if next != protoIPv4 && next != protoIPv6 {
			return Span{}, ev, ErrBadNextHeader
		}
		n, ok := innerLen(buf[ps:pe], next)
		if !ok {
			return Span{}, ev, ErrBadInner
		}
		out = Span{ps, ps + n} // TFC padding after the inner packet is dropped
		propagateCE(buf[ps:ps+n], h.tos)
	} else {
		out = rebuildTransport(buf, start, h, ps, pe, next)
		if h.UDP && (next == protoTCP || next == protoUDP) {
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

// FixOuterChecksums makes the checksums of an underlay packet passed up to the
// device valid: the underlay rebuilds the outer headers of ESP-in-UDP
// without them (the kernel checked them on receipt), and the kernel would
// drop such a packet.
func FixOuterChecksums(pkt []byte, h *Header) {
	if pkt[0]>>4 == 4 {
		ipv4(pkt).setChecksum()
		return
	}
	if h.UDP {
		setUDP6Checksum(ipv6(pkt), pkt[h.ipHdr:])
	}
}

// innerLen checks the tunnelled IP header at the start of p against the
// next header and returns the inner packet's length (p may be longer:
// TFC padding, RFC 4303 §2.7).
func innerLen(p []byte, next uint8) (int, bool) {
	if len(p) < ipv4MinHeader {
		return 0, false
	}
	switch next {
	case protoIPv4:
		h := ipv4(p)
		if p[0]>>4 != 4 || h.headerLen() < ipv4MinHeader || h.totalLen() < h.headerLen() || h.totalLen() > len(p) {
			return 0, false
		}
		return h.totalLen(), true
	default:
		if p[0]>>4 != 6 || len(p) < ipv6Header || ipv6Header+ipv6(p).payloadLen() > len(p) {
			return 0, false
		}
		return ipv6Header + ipv6(p).payloadLen(), true
	}
}

// propagateCE copies a Congestion Experienced mark from the outer header
// to an ECN-capable inner packet (RFC 6040 §4.2).
func propagateCE(inner []byte, outerTOS uint8) {
	if outerTOS&ecnMask != ecnCE {
		return
	}
	if inner[0]>>4 == 4 {
		h := ipv4(inner)
		if h.tos()&ecnMask != 0 && h.tos()&ecnMask != ecnCE {
			h[1] |= ecnCE
			h.setChecksum()
		}
		return
	}
	tc := ipv6(inner).trafficClass()
	if tc&ecnMask != 0 {
		inner[1] |= ecnCE << 4
	}
}

// rebuildTransport slides the outer IP header up to the decrypted payload
// buf[ps:pe] and makes it name the payload's protocol.
func rebuildTransport(buf []byte, start int, h *Header, ps, pe int, next uint8) Span {
	newStart := ps - h.ipHdr
	copy(buf[newStart:ps], buf[start:start+h.ipHdr])
	pkt := buf[newStart:pe]
	pkt[h.nextOff] = next
	if pkt[0]>>4 == 4 {
		ip := ipv4(pkt)
		ip.setTotalLen(len(pkt))
		ip.setChecksum()
	} else {
		ipv6(pkt).setPayloadLen(len(pkt) - ipv6Header)
	}
	return Span{newStart, pe}
}

// matchInner applies the SA's selectors to a decrypted inner packet.
func matchInner(sa *sadb.SA, pkt []byte) bool {
	if sa.MatchesAll() {
		return true
	}
	f, ok := FlowOf(pkt)
	return ok && sa.Match(f)
}
