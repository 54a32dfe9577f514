package header

import (
	"errors"
	"net/netip"
)

// Outer is an ESP packet's outer IP header, and its UDP header under
// ESP-in-UDP (RFC 3948), as fields. The engine and the underlay exchange
// ESP bytes with an Outer, not header bytes: the kernel's UDP sockets
// build and take off those headers themselves, and the raw sockets'
// headers are written (Encode) and read (ParseOuter) here, once. A UDP
// socket sends with its own address, port, TOS, TTL and don't-fragment
// setting: of an Outer it takes only Dst and DstPort.
type Outer struct {
	// Src and Dst are the outer addresses: on send this end and the peer
	// (an invalid or unspecified Src stands for the underlay's local
	// address), on receive the peer and this end.
	Src, Dst netip.Addr
	// UDP is true for ESP-in-UDP, from SrcPort to DstPort.
	UDP              bool
	SrcPort, DstPort uint16
	// TOS is the IPv4 TOS or IPv6 traffic class (DSCP and ECN); TTL the
	// IPv4 TTL or IPv6 hop limit, written as given (a transport-mode
	// packet keeps its own, 0 included).
	TOS, TTL uint8
	// DF and ID are IPv4's don't-fragment flag and identification,
	// FlowLabel IPv6's flow label.
	DF        bool
	ID        uint16
	FlowLabel uint32
	// Opts is how many bytes of IPv4 options or IPv6 extension headers
	// of the outer header lie in the buffer right before the ESP header
	// of a raw ESP packet; OptsNext names the first of those IPv6
	// extension headers. ESP-in-UDP has none: the UDP sockets neither
	// send nor return them, and Encode and ParseOuter leave them out.
	Opts     int
	OptsNext uint8
}

// Is6 reports whether the outer header is IPv6.
func (o *Outer) Is6() bool { return o.Dst.Is6() && !o.Dst.Is4In6() }

// Size returns the length of the headers Encode writes: the fixed IP
// header, its options, and UDP for ESP-in-UDP.
func (o *Outer) Size() int {
	n := IPv4MinSize
	if o.Is6() {
		n = IPv6Size
	}
	if o.UDP {
		return n + UDPSize
	}
	return n + o.Opts
}

// Encode writes the outer headers in front of the ESP bytes buf[esp:end]
// (and the Opts bytes before them) and returns where the whole packet
// starts: the UDP header for ESP-in-UDP (with its checksum over IPv6,
// none over IPv4, RFC 3948 §2.1), then the fixed IPv4 or IPv6 header. The
// caller checks that esp >= Size().
func (o *Outer) Encode(buf []byte, esp, end int) int {
	start, opts, proto := esp-o.Opts, o.Opts, uint8(ProtoESP)
	if o.UDP {
		start, opts, proto = esp-UDPSize, 0, ProtoUDP
		UDP(buf[start:]).Encode(o.SrcPort, o.DstPort, end-start)
	}
	ttl := o.TTL
	if !o.Is6() {
		start -= IPv4MinSize
		IPv4(buf[start:]).Encode(&IPv4Fields{HeaderLen: IPv4MinSize + opts, TOS: o.TOS, TotalLen: end - start,
			ID: o.ID, DF: o.DF, TTL: ttl, Protocol: proto, Src: o.Src, Dst: o.Dst})
		return start
	}
	udp := start // when o.UDP
	start -= IPv6Size
	next := proto
	if opts > 0 {
		next = o.OptsNext
	}
	ip := IPv6(buf[start:end])
	ip.Encode(&IPv6Fields{TrafficClass: o.TOS, FlowLabel: o.FlowLabel, PayloadLen: end - start - IPv6Size,
		NextHeader: next, HopLimit: ttl, Src: o.Src, Dst: o.Dst})
	if o.UDP {
		UDP(buf[udp:]).SetChecksum(TransportChecksum(ip, ProtoUDP, buf[udp:end]))
	}
	return start
}

// Why ParseOuter refused a packet.
var (
	ErrMalformed = errors.New("malformed outer IP or UDP header")
	ErrFragment  = errors.New("fragmented outer packet")
	ErrNotESP    = errors.New("neither ESP nor UDP")
)

// ParseOuter reads the outer IPv4 or IPv6 header of a whole packet, and
// the UDP header of ESP-in-UDP, and returns them as an Outer with the
// offset of what they carry (the ESP header, or a UDP payload) and the
// end of the packet as its length fields give it (link padding after it
// is not part of it). IPv4 options and IPv6 Hop-by-Hop, Routing and
// Destination Options headers before ESP are counted in Opts; a fragment
// is refused (the kernel reassembles what its sockets receive).
func ParseOuter(pkt []byte) (o Outer, payload, end int, err error) {
	if len(pkt) < IPv4MinSize {
		return o, 0, 0, ErrMalformed
	}
	var proto uint8
	var ipHdr int
	switch Version(pkt) {
	case 4:
		ip := IPv4(pkt)
		if !ip.Valid() {
			return o, 0, 0, ErrMalformed
		}
		if ip.Fragmented() {
			return o, 0, 0, ErrFragment
		}
		o = Outer{Src: ip.Src(), Dst: ip.Dst(), TOS: ip.TOS(), TTL: ip.TTL(), DF: ip.DontFragment(), ID: ip.ID()}
		ipHdr, end, proto = ip.HeaderLen(), ip.TotalLen(), ip.Protocol()
		o.Opts = ipHdr - IPv4MinSize
	case 6:
		ip := IPv6(pkt)
		if !ip.Valid() {
			return o, 0, 0, ErrMalformed
		}
		end = IPv6Size + ip.PayloadLen()
		if ip.Dst().Is4In6() {
			// Not an address on the wire (RFC 4291 §2.5.5.2), and one
			// Outer reads as IPv4.
			return o, 0, 0, ErrMalformed
		}
		o = Outer{Src: ip.Src(), Dst: ip.Dst(), TOS: ip.TrafficClass(), TTL: ip.HopLimit(), FlowLabel: ip.FlowLabel()}
		c := IPv6(pkt[:end]).Chain()
		for c.Next == ProtoHopByHop || c.Next == ProtoRouting || c.Next == ProtoDstOpts {
			if !c.Step() {
				return o, 0, 0, ErrMalformed
			}
		}
		if c.Next == ProtoFragment {
			return o, 0, 0, ErrFragment
		}
		ipHdr, proto = c.Off, c.Next
		if o.Opts = ipHdr - IPv6Size; o.Opts > 0 {
			o.OptsNext = ip.NextHeader()
		}
	default:
		return o, 0, 0, ErrMalformed
	}
	switch proto {
	case ProtoESP:
		return o, ipHdr, end, nil
	case ProtoUDP:
		if ipHdr+UDPSize > end {
			return o, 0, 0, ErrMalformed
		}
		u := UDP(pkt[ipHdr:])
		if u.Length() != end-ipHdr {
			return o, 0, 0, ErrMalformed
		}
		o.UDP, o.SrcPort, o.DstPort = true, u.SrcPort(), u.DstPort()
		o.Opts, o.OptsNext = 0, 0
		return o, ipHdr + UDPSize, end, nil
	}
	return o, 0, 0, ErrNotESP
}
