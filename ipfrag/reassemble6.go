package ipfrag

// What a Reassembler does only for IPv6 fragments.

// parseFragment6 parses the IPv6 fragment pkt into f, checking its headers:
// version; payload length, neither 0 (a jumbogram, which has no Fragment
// header) nor beyond the packet (bytes after the payload are ignored); a
// run of Hop-by-Hop Options, Destination Options and Routing headers, or
// none, leading to a Fragment header; an unfragmentable part (the headers
// before the Fragment header) of at most ipv6MaxUnfrag bytes; and, in the
// first fragment, the whole header chain through the upper-layer header
// (RFC 7112, as chainEnd walks it: FragmentIPv6 makes no first fragment
// with less). parseFragment checks the rest.
func parseFragment6(pkt []byte, f *fragment) bool {
	if len(pkt) < ipv6Header || pkt[0]>>4 != 6 {
		return false
	}
	pl := int(be.Uint16(pkt[4:]))
	if pl == 0 || ipv6Header+pl > len(pkt) {
		return false
	}
	pkt = pkt[:ipv6Header+pl]
	c, ok := ipv6FragmentHeader(pkt)
	if !ok || c.Off > ipv6MaxUnfrag {
		return false
	}
	at, nextAt := c.Off, c.NextAt
	fh := pkt[at : at+ipv6FragHeader]
	field := be.Uint16(fh[2:])
	f.key.src = [16]byte(pkt[8:24])
	f.key.dst = [16]byte(pkt[24:40])
	f.key.id = be.Uint32(fh[4:])
	f.key.v6 = true
	f.header = pkt[:at]
	f.data = pkt[at+ipv6FragHeader:]
	f.off = int(field & fragOffset6)
	f.more = field&fragM6 != 0
	f.nextAt, f.next = nextAt, fh[0]
	if f.off == 0 {
		// RFC 7112: the whole header chain in the first fragment.
		if !c.Step() { // the Fragment header, held whole
			return false
		}
		if end, err := chainEnd(c); err != nil || end > len(pkt) {
			return false
		}
	}
	return true
}

// finishHeader6 makes h, the first fragment's unfragmentable part (its
// Next Header field already set to the Fragment header's), the headers of
// the datagram with total bytes of fragmentable part: payload length
// recomputed.
func finishHeader6(h []byte, total int) {
	be.PutUint16(h[4:], uint16(len(h)-ipv6Header+total))
}
