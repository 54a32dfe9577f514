package ipfrag

import "errors"

// Errors of the fragmenters. They are preallocated values: compare them
// with errors.Is or ==.
var (
	// ErrMalformed: the packet is not a well-formed IPv4 or IPv6 packet
	// (version, header length, total or payload length, IPv4 options or
	// IPv6 extension headers), or, for an IPv4 fragment, its data would
	// end beyond the largest datagram IPv4 allows.
	ErrMalformed = errors.New("ipfrag: malformed IP packet: bad version, header, length, options or extension headers")
	// ErrDontFragment: the IPv4 packet is larger than the MTU and has
	// Don't Fragment set.
	ErrDontFragment = errors.New("ipfrag: the IPv4 packet is larger than the MTU and has Don't Fragment set")
	// ErrMTU: the MTU cannot hold a fragment's headers and 8 bytes of data
	// (for IPv6, or the first fragment cannot hold the whole header chain
	// through the upper-layer header, as RFC 8200 §4.5 requires).
	ErrMTU = errors.New("ipfrag: the MTU is too small for the packet's headers and 8 bytes of data")
	// ErrScratch: the scratch buffer is too small for the fragments (see
	// ScratchSizeIPv4 and ScratchSizeIPv6).
	ErrScratch = errors.New("ipfrag: the scratch buffer is too small for the fragments")
	// ErrFragmented: the IPv6 packet already has a Fragment header; only
	// a source fragments IPv6 packets, whole ones (RFC 8200 §4.5).
	ErrFragmented = errors.New("ipfrag: the IPv6 packet already has a Fragment header")
)
