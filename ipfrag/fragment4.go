package ipfrag

// ScratchSizeIPv4 returns a scratch size with which FragmentIPv4 can
// always split an IPv4 packet of pktLen bytes, whose header (options
// included) is at most headerLen bytes long, into fragments of at most mtu
// bytes. With headerLen 60 it holds for any IPv4 packet of pktLen bytes. It
// is 0 when no scratch is needed (the packet fits) or none would do (mtu
// cannot hold headerLen plus 8 bytes: FragmentIPv4 returns ErrMTU).
func ScratchSizeIPv4(pktLen, mtu, headerLen int) int {
	if pktLen <= mtu || headerLen < ipv4MinHeader || mtu < headerLen+8 {
		return 0
	}
	// At most pktLen-20 bytes of data, at least this many in each
	// fragment but the last, and at most headerLen bytes of header in each.
	data := pktLen - ipv4MinHeader
	per := (mtu - headerLen) &^ 7
	n := (data + per - 1) / per
	return data + n*headerLen
}

// FragmentIPv4 splits the IPv4 packet pkt into fragments of at most mtu
// bytes each (RFC 791). It writes them one after the other into scratch
// and returns them appended to out, as subslices of scratch. If pkt fits
// in mtu it is returned unchanged as the only fragment, and scratch is not
// used.
//
// pkt must be a well-formed IPv4 packet whose total length is len(pkt)
// (else ErrMalformed) with Don't Fragment clear (else ErrDontFragment). It
// may itself be a fragment: then the fragments' offsets continue from its
// own, and the last keeps its More Fragments bit. The first fragment
// carries all of pkt's IP options; the others only those whose copied
// flag is set, padded with End of Option List to a 4-byte boundary. Every
// fragment but the last carries a multiple of 8 bytes of data, as much as
// mtu allows, and each has its own total length and header checksum; the
// other header fields are pkt's.
//
// mtu must hold pkt's header and 8 bytes of data (else ErrMTU) and scratch
// must hold the fragments (else ErrScratch): ScratchSizeIPv4 tells how big
// is enough. On an error, out is returned as it was. pkt's header checksum
// is not checked: each fragment's is computed afresh.
func FragmentIPv4(pkt []byte, mtu int, scratch []byte, out [][]byte) ([][]byte, error) {
	hl, ok := ipv4Header(pkt)
	if !ok {
		return out, ErrMalformed
	}
	if len(pkt) <= mtu {
		return append(out, pkt), nil
	}
	field := be.Uint16(pkt[6:])
	if field&flagDF != 0 {
		return out, ErrDontFragment
	}
	if mtu < hl+8 {
		return out, ErrMTU
	}
	var opts [ipv4MaxHeader - ipv4MinHeader]byte
	nopts, ok := copiedOptions(pkt[ipv4MinHeader:hl], &opts)
	if !ok {
		return out, ErrMalformed
	}
	payload := pkt[hl:]
	base := int(field&offsetMask) * 8
	if base+len(payload) > ipv4MaxLen-ipv4MinHeader {
		return out, ErrMalformed
	}
	hl2 := ipv4MinHeader + (nopts+3)&^3 // the header of the other fragments
	first := (mtu - hl) &^ 7
	rest := len(payload) - first // > 0, since len(pkt) > mtu
	per := (mtu - hl2) &^ 7
	n := (rest + per - 1) / per
	if len(scratch) < hl+len(payload)+n*hl2 {
		return out, ErrScratch
	}

	w := 0
	for pos := 0; pos < len(payload); {
		h, size := hl, first
		if pos > 0 {
			h, size = hl2, per
		}
		last := pos+size >= len(payload)
		if last {
			size = len(payload) - pos
		}
		f := scratch[w : w+h+size : w+h+size]
		copy(f, pkt[:ipv4MinHeader])
		if pos == 0 {
			copy(f[ipv4MinHeader:], pkt[ipv4MinHeader:hl])
		} else {
			f[0] = 0x40 | byte(h/4)
			copy(f[ipv4MinHeader:], opts[:nopts])
			clear(f[ipv4MinHeader+nopts : h]) // End of Option List
		}
		copy(f[h:], payload[pos:pos+size])
		be.PutUint16(f[2:], uint16(h+size))
		frag := field&flagReserved | uint16((base+pos)/8)
		if !last || field&flagMF != 0 {
			frag |= flagMF
		}
		be.PutUint16(f[6:], frag)
		setIPv4Checksum(f[:h])
		out = append(out, f)
		pos += size
		w += h + size
	}
	return out, nil
}

// copiedOptions copies into dst the IPv4 options of opts whose copied flag
// is set (RFC 791: those go into every fragment), and returns their
// length. It reports false if opts is malformed.
func copiedOptions(opts []byte, dst *[ipv4MaxHeader - ipv4MinHeader]byte) (int, bool) {
	n := 0
	for i := 0; i < len(opts); {
		switch opts[i] {
		case optEnd:
			return n, true
		case optNOP:
			i++
			continue
		}
		if i+1 >= len(opts) {
			return 0, false
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return 0, false
		}
		if opts[i]&optCopied != 0 {
			n += copy(dst[n:], opts[i:i+l])
		}
		i += l
	}
	return n, true
}
