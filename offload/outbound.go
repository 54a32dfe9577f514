package offload

import (
	"encoding/binary"

	"vnic/sadb"
)

// Encapsulate protects the plaintext IP packet buf[start:end] with the
// outbound SA sa and returns where the outer packet lies in buf: an IPv4 or
// IPv6 header, a UDP header for ESP-in-UDP, then ESP. The packet must have
// Headroom bytes before start and Tailroom bytes of capacity after end.
//
// In tunnel mode the outer addresses are the SA's endpoints (an unset
// source is written as the unspecified address, for the underlay to fill
// in); in transport mode the packet keeps its own IP header.
func Encapsulate(sa *sadb.SA, buf []byte, start, end int) (Span, Event, error) {
	p, ev, err := EncapBegin(sa, buf, start, end)
	if err != nil {
		return Span{}, ev, err
	}
	p.Seal(buf)
	return p.Span, ev, nil
}

// EncapJob is an outbound packet between EncapBegin, which numbered it and
// wrote its headers, and Seal, which encrypts it: the part of the work
// that the device's crypto workers can do in parallel. Span is where the
// outer packet lies.
type EncapJob struct {
	Span
	sa  *sadb.SA
	esp int    // offset of the ESP header
	seq uint64 // the packet's full (extended) sequence number
}

// SA returns the outbound SA the packet is protected with.
func (p *EncapJob) SA() *sadb.SA { return p.sa }

// Seal encrypts and authenticates the packet in place and completes the
// one header field that covers the ciphertext: the IPv6 UDP checksum.
func (p *EncapJob) Seal(buf []byte) {
	buf = buf[:p.End]
	p.sa.Cipher.Seal(buf, p.esp, p.seq)
	if p.sa.Config.Encap.UDP && p.sa.Config.Dst.Is6() {
		setUDP6Checksum(ipv6(buf[p.Start:]), buf[p.esp-udpHeader:])
	}
}

// EncapBegin does everything Encapsulate does except the cryptography: it
// checks the packet, takes the next sequence number, and writes the ESP
// header and trailer and the outer headers. Sequence numbers are taken in
// the order packets arrive here; Seal may then run on any core.
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
	version := pkt[0] >> 4
	if version != 4 && version != 6 || version == 6 && len(pkt) < ipv6Header {
		return EncapJob{}, 0, ErrBadPlaintext
	}
	c := sa.Cipher
	cfg := &sa.Config
	outer6 := cfg.Dst.Is6()
	udp := 0
	if cfg.Encap.UDP {
		udp = udpHeader
	}

	// What ESP protects: the whole packet (tunnel) or what follows the
	// IP header (transport), and the next header that names it.
	var hdrLen, nextOff int // transport: IP header length, offset of its next-header byte
	var next uint8
	if cfg.Mode == sadb.Tunnel {
		next = protoIPv4
		if version == 6 {
			next = protoIPv6
		}
	} else {
		if (version == 6) != outer6 {
			return EncapJob{}, 0, ErrFamilyMismatch
		}
		var ok bool
		hdrLen, nextOff, next, ok = transportHeader(pkt)
		if !ok {
			return EncapJob{}, 0, ErrBadPlaintext
		}
	}
	payload := end - (start + hdrLen)
	align := c.Align()
	padLen := (align - (payload+espTrailer)%align) % align
	ivLen, icvLen := c.IVLen(), c.ICVLen()
	tail := padLen + espTrailer + icvLen
	outerHdr := hdrLen // transport: the moved IP header
	if cfg.Mode == sadb.Tunnel {
		outerHdr = ipv4MinHeader
		if outer6 {
			outerHdr = ipv6Header
		}
	}
	head := espHeader + ivLen + udp
	if cfg.Mode == sadb.Tunnel {
		head += outerHdr
	}
	if start < head || cap(buf)-end < tail+tagSlack {
		return EncapJob{}, 0, ErrNoRoomOut
	}
	// The outer length field must hold the result (the IPv6 payload
	// length does not count the fixed header).
	maxLen := 0xFFFF
	if outer6 {
		maxLen += ipv6Header
	}
	if head+end-start+tail > maxLen {
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

	// Transport mode: slide the IP header down to make room for ESP.
	ps := start + hdrLen // first protected byte
	esp := ps - ivLen - espHeader
	newStart := esp - udp - outerHdr
	var tos uint8
	var df bool
	var flow uint32
	if version == 4 {
		h := ipv4(pkt)
		tos, df = h.tos(), h.dontFragment()
	} else {
		h := ipv6(pkt)
		tos, flow = h.trafficClass(), h.flowLabel()
	}
	if cfg.Mode == sadb.Transport {
		copy(buf[newStart:], buf[start:start+hdrLen])
	}

	// ESP header and trailer.
	binary.BigEndian.PutUint32(buf[esp:], cfg.SPI)
	binary.BigEndian.PutUint32(buf[esp+4:], uint32(seq))
	newEnd := end + tail
	buf = buf[:newEnd]
	t := buf[end:]
	for i := range padLen {
		t[i] = byte(i + 1) // RFC 4303 §2.4 default padding
	}
	t[padLen] = byte(padLen)
	t[padLen+1] = next

	// Outer headers.
	total := newEnd - newStart
	hdr := buf[newStart:esp]
	switch {
	case cfg.Mode == sadb.Transport && version == 4:
		h := ipv4(hdr)
		h.setTotalLen(total)
		h.setProtocol(outerProto(udp))
		h.setChecksum()
	case cfg.Mode == sadb.Transport:
		h := ipv6(hdr)
		h.setPayloadLen(total - ipv6Header)
		hdr[nextOff] = outerProto(udp)
	default:
		// The identification only has to tell apart the fragments of
		// packets in flight between the endpoints (RFC 6864): the
		// sequence number's low bits do, at no cost. An inner IPv6
		// packet is never fragmented on the way: DF.
		putOuterHeader(hdr, cfg, outerProto(udp), encapTOS(tos), total, uint16(seq), df || version == 6, flow)
	}
	if udp != 0 {
		// IPv4: no checksum (RFC 3948 §2.1); IPv6: seal fills it in.
		putUDPHeader(buf[esp-udpHeader:newEnd], cfg)
	}
	ev |= account(sa, payload)
	return EncapJob{Span{newStart, newEnd}, sa, esp, seq}, ev, nil
}

// putOuterHeader writes the tunnel-mode outer IPv4 or IPv6 header (the
// family of the SA's destination) of a packet of total bytes carrying
// proto, from the SA's source (or the unspecified address, which the
// underlay fills in, when it has none of that family) to its destination.
// id and df are IPv4's identification and don't-fragment bit, flow the
// IPv6 flow label.
func putOuterHeader(hdr []byte, cfg *sadb.Config, proto, tos uint8, total int, id uint16, df bool, flow uint32) {
	if !cfg.Dst.Is6() {
		h := ipv4(hdr)
		h[0] = 0x45
		h[1] = tos
		h.setTotalLen(total)
		binary.BigEndian.PutUint16(h[4:], id)
		binary.BigEndian.PutUint16(h[6:], 0)
		if df {
			h[6] = 0x40
		}
		h[8] = defaultTTL
		h.setProtocol(proto)
		src := cfg.Src.Unmap().As4()
		if !cfg.Src.Is4() && !cfg.Src.Is4In6() {
			src = [4]byte{}
		}
		copy(h[12:16], src[:])
		dst := cfg.Dst.As4()
		copy(h[16:20], dst[:])
		h.setChecksum()
		return
	}
	h := ipv6(hdr)
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(tos)<<20|flow)
	h.setPayloadLen(total - ipv6Header)
	h[6] = proto
	h[7] = defaultTTL
	var src [16]byte
	if cfg.Src.Is6() {
		src = cfg.Src.As16()
	}
	copy(h[8:24], src[:])
	dst := cfg.Dst.As16()
	copy(h[24:40], dst[:])
}

// putUDPHeader writes the UDP header of the datagram u (header and
// payload) from the SA's source port to its destination port, with a zero
// checksum.
func putUDPHeader(u []byte, cfg *sadb.Config) {
	binary.BigEndian.PutUint16(u[0:], cfg.Encap.SrcPort)
	binary.BigEndian.PutUint16(u[2:], cfg.Encap.DstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	binary.BigEndian.PutUint16(u[6:], 0)
}

// tagSlack is spare capacity after the ICV that ciphers with a truncated
// tag write their full tag into.
const tagSlack = 8

func outerProto(udp int) uint8 {
	if udp != 0 {
		return protoUDP
	}
	return protoESP
}

// transportHeader finds where ESP goes in a transport-mode packet: after
// the IPv4 header (with options), or after the IPv6 header and any
// hop-by-hop and routing headers (RFC 4303 §3.1.1). It returns that length,
// the offset of the next-header byte to rewrite, and its current value.
func transportHeader(pkt []byte) (hdrLen, nextOff int, next uint8, ok bool) {
	if pkt[0]>>4 == 4 {
		h := ipv4(pkt)
		hl := h.headerLen()
		if hl < ipv4MinHeader || hl > len(pkt) || h.totalLen() != len(pkt) || h.fragment() {
			return 0, 0, 0, false
		}
		return hl, 9, h.protocol(), true
	}
	if ipv6(pkt).payloadLen()+ipv6Header != len(pkt) {
		return 0, 0, 0, false
	}
	off, nextOff := ipv6Header, 6
	for {
		next = pkt[nextOff]
		if next != protoHopByHop && next != protoRouting {
			return off, nextOff, next, true
		}
		if off+8 > len(pkt) {
			return 0, 0, 0, false
		}
		n := int(pkt[off+1])*8 + 8
		if off+n > len(pkt) {
			return 0, 0, 0, false
		}
		nextOff, off = off, off+n
	}
}
