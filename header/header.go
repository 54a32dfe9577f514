// Package header holds vnic's typed views of the headers on its data path
// (IPv4, IPv6 and its extension headers, UDP, ESP), the Internet checksum,
// and Outer: an ESP packet's outer IP and UDP headers as fields, which is
// what the engine (package offload) and the wire (package underlay)
// exchange instead of header bytes.
//
// A view is a byte slice that starts at its header; its methods read and
// write the fields in place and allocate nothing. A view trusts its
// length: callers check that the slice holds the header (the Size
// constants, HeaderLen) before reading it.
package header

// IP protocol numbers (IANA) used on the data path.
const (
	ProtoHopByHop = 0
	ProtoIPv4     = 4 // IP-in-IP: the ESP next header of tunnelled IPv4
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoIPv6     = 41 // the ESP next header of tunnelled IPv6
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoNoNext   = 59 // no next header: an ESP dummy packet (RFC 4303 §2.6)
	ProtoDstOpts  = 60
	ProtoSCTP     = 132
	ProtoUDPLite  = 136
)

// Header sizes.
const (
	IPv4MinSize       = 20 // an IPv4 header without options
	IPv4MaxSize       = 60 // an IPv4 header with 40 bytes of options
	IPv6Size          = 40 // the IPv6 fixed header
	IPv6FragmentSize  = 8  // an IPv6 Fragment header
	UDPSize           = 8
	ESPSize           = 8 // SPI and sequence number
	ESPTrailerSize    = 2 // pad length and next header
	DefaultTTL        = 64
	MaxIPv4TotalLen   = 0xFFFF
	MaxIPv6PayloadLen = 0xFFFF
)

// ECN codepoints (RFC 3168) in the low two bits of a TOS or traffic class.
const (
	ECNMask = 0x03
	ECNECT0 = 0x02
	ECNCE   = 0x03
)
