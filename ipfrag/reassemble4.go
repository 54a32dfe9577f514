package ipfrag

// What a Reassembler does only for IPv4 fragments.

// parseFragment4 parses the IPv4 fragment pkt into f, checking its header:
// version, header length, total length (bytes after it are ignored) and
// header checksum. parseFragment checks the rest.
func parseFragment4(pkt []byte, f *fragment) bool {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return false
	}
	hl := int(pkt[0]&0x0f) * 4
	tl := int(be.Uint16(pkt[2:]))
	if hl < ipv4MinHeader || tl < hl || tl > len(pkt) || checksum(pkt[:hl]) != 0 {
		return false
	}
	field := be.Uint16(pkt[6:])
	copy(f.key.src[:], pkt[12:16])
	copy(f.key.dst[:], pkt[16:20])
	f.key.id = uint32(be.Uint16(pkt[4:]))
	f.key.proto = pkt[9]
	f.header = pkt[:hl]
	f.data = pkt[hl:tl]
	f.off = int(field&offsetMask) * 8
	f.more = field&flagMF != 0
	return true
}

// finishHeader4 makes h, the first fragment's IPv4 header, that of the
// datagram with total bytes of data: offset and More Fragments cleared,
// total length and checksum recomputed.
func finishHeader4(h []byte, total int) {
	be.PutUint16(h[2:], uint16(len(h)+total))
	be.PutUint16(h[6:], be.Uint16(h[6:])&(flagReserved|flagDF))
	setIPv4Checksum(h)
}
