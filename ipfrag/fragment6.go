package ipfrag

import "vnic/header"

// ScratchSizeIPv6 returns a scratch size with which FragmentIPv6 can
// always split an IPv6 packet of pktLen bytes, whose unfragmentable part
// (see FragmentIPv6) is at most unfragLen bytes long, into fragments of at
// most mtu bytes; unfragLen is 40 for a packet without Hop-by-Hop Options
// or Routing header. It is 0 when no scratch is needed (the packet fits)
// or none would do (mtu cannot hold unfragLen, a Fragment header and 8
// bytes: FragmentIPv6 returns ErrMTU).
func ScratchSizeIPv6(pktLen, mtu, unfragLen int) int {
	if pktLen <= mtu || unfragLen < ipv6Header || mtu < unfragLen+ipv6FragHeader+8 {
		return 0
	}
	// At most pktLen-40 bytes to fragment, at least this many in each
	// fragment but the last, and at most unfragLen+8 bytes of headers in
	// each.
	data := pktLen - ipv6Header
	per := (mtu - unfragLen - ipv6FragHeader) &^ 7
	n := (data + per - 1) / per
	return data + n*(unfragLen+ipv6FragHeader)
}

// ScratchSizeIPv6Packet is ScratchSizeIPv6 for the packet pkt itself, its
// unfragmentable part measured: 0 when it fits, cannot be split at mtu, or
// is malformed (FragmentIPv6 says which).
func ScratchSizeIPv6Packet(pkt []byte, mtu int) int {
	unfrag, _, _, err := ipv6Chain(pkt)
	if err != nil {
		return 0
	}
	return ScratchSizeIPv6(len(pkt), mtu, unfrag)
}

// FragmentIPv6 splits the IPv6 packet pkt into fragments of at most mtu
// bytes each (RFC 8200 §4.5). It writes them one after the other into
// scratch and returns them appended to out, as subslices of scratch. If
// pkt fits in mtu it is returned unchanged as the only fragment, and
// scratch is not used.
//
// The unfragmentable part of pkt, copied into every fragment, is its IPv6
// header and the extension headers that nodes on the way process: the
// Hop-by-Hop Options header, the Routing header, and a Destination Options
// header that precedes a Routing header. A Fragment header follows it in
// each fragment, with identification id, pkt's first fragmentable header
// as next header, the fragment's offset and the M flag on all fragments
// but the last; the Next Header field before it says 44, and each
// fragment's payload length is its own. Every fragment but the last
// carries a multiple of 8 bytes of the fragmentable part, as much as mtu
// allows; the first carries the whole header chain through the
// upper-layer header.
//
// pkt must be a well-formed IPv6 packet whose payload length is
// len(pkt)-40 (else ErrMalformed; jumbograms are refused) without a
// Fragment header (else ErrFragmented). mtu must hold the unfragmentable
// part, the Fragment header and 8 bytes, and the first fragment the header
// chain (else ErrMTU); links carry at least 1280 bytes, but a smaller mtu
// is accepted. scratch must hold the fragments (else ErrScratch):
// ScratchSizeIPv6 tells how big is enough. On an error, out is returned as
// it was.
func FragmentIPv6(pkt []byte, mtu int, id uint32, scratch []byte, out [][]byte) ([][]byte, error) {
	if len(pkt) < ipv6Header || pkt[0]>>4 != 6 || ipv6Header+int(be.Uint16(pkt[4:])) != len(pkt) {
		return out, ErrMalformed
	}
	if len(pkt) <= mtu {
		return append(out, pkt), nil
	}
	unfrag, nextAt, chain, err := ipv6Chain(pkt)
	if err != nil {
		return out, err
	}
	hdr := unfrag + ipv6FragHeader
	if mtu < hdr+8 {
		return out, ErrMTU
	}
	per := (mtu - hdr) &^ 7
	if chain-unfrag > per {
		return out, ErrMTU
	}
	data := len(pkt) - unfrag
	n := (data + per - 1) / per
	if len(scratch) < data+n*hdr {
		return out, ErrScratch
	}

	next := pkt[nextAt]
	w := 0
	for pos := 0; pos < data; pos += per {
		size := min(per, data-pos)
		f := scratch[w : w+hdr+size : w+hdr+size]
		copy(f, pkt[:unfrag])
		f[nextAt] = nhFragment
		be.PutUint16(f[4:], uint16(len(f)-ipv6Header))
		fh := f[unfrag:hdr]
		fh[0] = next
		fh[1] = 0
		more := uint16(0)
		if pos+size < data {
			more = 1
		}
		be.PutUint16(fh[2:], uint16(pos)|more) // the offset, in 8-byte units, shifted left by 3
		be.PutUint32(fh[4:], id)
		copy(f[hdr:], pkt[unfrag+pos:unfrag+pos+size])
		out = append(out, f)
		w += hdr + size
	}
	return out, nil
}

// ipv6Chain walks the extension headers of the IPv6 packet pkt. It returns
// the length of the unfragmentable part, the offset of the Next Header
// field that names the first header of the fragmentable part, and the
// length of the header chain through the upper-layer header (RFC 7112;
// the upper-layer header counts for its fixed part when it is TCP, UDP,
// ICMPv6 or ESP, and for nothing otherwise).
func ipv6Chain(pkt []byte) (unfrag, nextAt, chain int, err error) {
	unfrag, nextAt = ipv6Header, 6
	c := header.IPv6(pkt).Chain()
	// The unfragmentable part ends after the last Hop-by-Hop Options or
	// Routing header of the leading run of those and Destination Options
	// headers.
	for c.Next == nhHopByHop || c.Next == nhRouting || c.Next == nhDstOpts {
		dst := c.Next == nhDstOpts
		if !c.Step() {
			return 0, 0, 0, ErrMalformed
		}
		if !dst {
			unfrag, nextAt = c.Off, c.NextAt
		}
	}
	if chain, err = chainEnd(c); err != nil {
		return 0, 0, 0, err
	}
	return unfrag, nextAt, min(chain, len(pkt)), nil
}
