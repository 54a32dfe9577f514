package ipfrag

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
)

// Test helpers that build packets and check fragments, written apart from
// the package's own parsing so that they check it.

var (
	testSrc4 = [4]byte{192, 0, 2, 1}
	testDst4 = [4]byte{198, 51, 100, 2}
)

// sum16 is the ones' complement sum of b's 16-bit words, written plainly.
func sum16(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// fixChecksum4 sets the checksum of the IPv4 header at the start of p.
func fixChecksum4(p []byte) {
	hl := int(p[0]&15) * 4
	p[10], p[11] = 0, 0
	binary.BigEndian.PutUint16(p[10:], ^sum16(p[:hl]))
}

// opt is an IPv4 option: End of Option List and No Operation (types 0
// and 1) are one byte, the others type, length and body.
type opt struct {
	typ  byte
	body []byte
}

func (o opt) encode() []byte {
	if o.typ <= 1 {
		return []byte{o.typ}
	}
	return append([]byte{o.typ, byte(2 + len(o.body))}, o.body...)
}

// encodeOpts lays out opts (only the copied ones if copiedOnly), padded
// with zeros to a multiple of 4 bytes.
func encodeOpts(opts []opt, copiedOnly bool) []byte {
	var b []byte
	for _, o := range opts {
		if !copiedOnly || o.typ&0x80 != 0 {
			b = append(b, o.encode()...)
		}
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// Some IPv4 options: Router Alert and Security are copied into every
// fragment, Record Route and Timestamp only into the first.
var (
	optRA  = opt{148, []byte{0, 0}}
	optSec = opt{130, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0}}
	optRR  = opt{7, []byte{4, 0, 0, 0, 0, 0, 0, 0, 0}}
	optTS  = opt{68, []byte{5, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	nop    = opt{1, nil}
)

// pattern returns n bytes that differ from one offset to the next and with
// the seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ byte(i>>8) ^ seed
	}
	return b
}

// ipv4Packet builds an IPv4 packet with the given options, protocol,
// identification and payload; DF clear, offset 0.
func ipv4Packet(opts []opt, proto byte, id uint16, payload []byte) []byte {
	o := encodeOpts(opts, false)
	hl := 20 + len(o)
	p := make([]byte, hl+len(payload))
	p[0] = 0x40 | byte(hl/4)
	p[1] = 0x28
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	p[8] = 64
	p[9] = proto
	copy(p[12:], testSrc4[:])
	copy(p[16:], testDst4[:])
	copy(p[20:], o)
	copy(p[hl:], payload)
	fixChecksum4(p)
	return p
}

// setFrag4 sets the offset (in bytes) and MF of the IPv4 packet p, and its
// checksum.
func setFrag4(p []byte, off int, more bool) {
	v := uint16(off / 8)
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(p[6:], v)
	fixChecksum4(p)
}

// refCopied returns the options of the options field o whose copied flag
// is set, padded with zeros to a multiple of 4 bytes.
func refCopied(o []byte) []byte {
	var b []byte
	for i := 0; i < len(o); {
		t := o[i]
		if t == 0 {
			break
		}
		if t == 1 {
			i++
			continue
		}
		l := int(o[i+1])
		if t&0x80 != 0 {
			b = append(b, o[i:i+l]...)
		}
		i += l
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// checkFragments4 checks frags, the fragments of the IPv4 packet pkt at
// mtu, against RFC 791 and against pkt: headers, options, offsets, flags,
// sizes and, put together, pkt's data.
func checkFragments4(pkt []byte, mtu int, frags [][]byte) error {
	hl := int(pkt[0]&15) * 4
	field := binary.BigEndian.Uint16(pkt[6:])
	pos := int(field&0x1fff) * 8
	later := refCopied(pkt[20:hl])
	var data []byte
	for i, f := range frags {
		last := i == len(frags)-1
		if len(f) > mtu {
			return fmt.Errorf("fragment %d: %d bytes, mtu %d", i, len(f), mtu)
		}
		if len(f) < 20 || f[0]>>4 != 4 {
			return fmt.Errorf("fragment %d: not IPv4", i)
		}
		fhl := int(f[0]&15) * 4
		if fhl < 20 || fhl > len(f) || int(binary.BigEndian.Uint16(f[2:])) != len(f) {
			return fmt.Errorf("fragment %d: header length %d, total length %d, %d bytes", i, fhl, binary.BigEndian.Uint16(f[2:]), len(f))
		}
		if sum16(f[:fhl]) != 0xffff {
			return fmt.Errorf("fragment %d: bad header checksum", i)
		}
		if f[1] != pkt[1] || !bytes.Equal(f[4:6], pkt[4:6]) || !bytes.Equal(f[8:10], pkt[8:10]) || !bytes.Equal(f[12:20], pkt[12:20]) {
			return fmt.Errorf("fragment %d: header fields differ from the packet's", i)
		}
		wantOpts := pkt[20:hl]
		if i > 0 {
			wantOpts = later
		}
		if !bytes.Equal(f[20:fhl], wantOpts) {
			return fmt.Errorf("fragment %d: options % x, want % x", i, f[20:fhl], wantOpts)
		}
		ff := binary.BigEndian.Uint16(f[6:])
		if ff&0x8000 != field&0x8000 || ff&0x4000 != 0 {
			return fmt.Errorf("fragment %d: flags %#x (packet's %#x)", i, ff, field)
		}
		if int(ff&0x1fff)*8 != pos {
			return fmt.Errorf("fragment %d: offset %d, want %d", i, int(ff&0x1fff)*8, pos)
		}
		wantMF := !last || field&0x2000 != 0
		if (ff&0x2000 != 0) != wantMF {
			return fmt.Errorf("fragment %d: MF %v, want %v", i, ff&0x2000 != 0, wantMF)
		}
		d := f[fhl:]
		if !last && len(d) != (mtu-fhl)&^7 {
			return fmt.Errorf("fragment %d: %d bytes of data, want %d (as many multiples of 8 as fit)", i, len(d), (mtu-fhl)&^7)
		}
		if last && len(d) == 0 {
			return fmt.Errorf("fragment %d: empty", i)
		}
		data = append(data, d...)
		pos += len(d)
	}
	if !bytes.Equal(data, pkt[hl:]) {
		return fmt.Errorf("the fragments' data (%d bytes) differ from the packet's (%d)", len(data), len(pkt)-hl)
	}
	return nil
}

// ext is an IPv6 extension header to build: its type and length in bytes
// (a multiple of 8, or of 4 for AH).
type ext struct {
	typ byte
	len int
}

// ipv6Packet builds an IPv6 packet with the given extension headers, then
// the upper-layer protocol proto and payload. Option headers are filled
// with options of unknown type 0x1e, to be skipped (Linux refuses PadN
// beyond 7 bytes), and at most one Pad1; others with a pattern.
func ipv6Packet(exts []ext, proto byte, payload []byte) []byte {
	p := make([]byte, 40, 40+len(payload)+64)
	p[0] = 0x60
	p[1] = 0x0a // a traffic class and flow label
	p[3] = 0x77
	p[7] = 64
	for i := range 32 {
		p[8+i] = byte(0x20 + i)
	}
	nextAt := 6
	for _, e := range exts {
		p[nextAt] = e.typ
		nextAt = len(p)
		h := make([]byte, e.len)
		switch e.typ {
		case 51:
			h[1] = byte(e.len/4 - 2)
		default:
			h[1] = byte(e.len/8 - 1)
		}
		if e.typ == 0 || e.typ == 60 {
			for i := 2; i < len(h)-1; i += 2 + int(h[i+1]) {
				h[i], h[i+1] = 0x1e, byte(min(len(h)-i-2, 255))
			}
		} else {
			for i := 2; i < len(h); i++ {
				h[i] = byte(i)
			}
			if e.typ == 43 {
				h[2], h[3] = 0, 0 // routing type 0, segments left 0
			}
		}
		p = append(p, h...)
	}
	p[nextAt] = proto
	p = append(p, payload...)
	binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	return p
}

// unfragLen returns the length of an IPv6 header and exts.
func unfragLen(exts []ext) int {
	n := 40
	for _, e := range exts {
		n += e.len
	}
	return n
}

// frag6 builds an IPv6 fragment: the header and the extension headers
// exts, a Fragment header with next header next, identification id,
// offset off (in bytes) and the M flag if more, then data. Its payload
// length is only right if it is at most 65535.
func frag6(exts []ext, next byte, id uint32, data []byte, off int, more bool) []byte {
	p := ipv6Packet(append(slices.Clone(exts), ext{44, 8}), next, data)
	at := unfragLen(exts)
	p[at+1] = 0
	v := uint16(off)
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(p[at+2:], v)
	binary.BigEndian.PutUint32(p[at+4:], id)
	return p
}

// refUnfrag returns the length of the unfragmentable part of the IPv6
// packet p (RFC 8200 §4.5) and the offset of the next header field to
// change to 44, walking its extension headers the simplest way: the
// unfragmentable part ends after the last Hop-by-Hop Options or Routing
// header of the leading run of those and Destination Options headers.
func refUnfrag(p []byte) (unfrag, nextAt int, ok bool) {
	unfrag, nextAt = 40, 6
	next, off := p[6], 40
	for next == 0 || next == 43 || next == 60 {
		if off+8 > len(p) {
			return 0, 0, false
		}
		l := 8 * (int(p[off+1]) + 1)
		if off+l > len(p) {
			return 0, 0, false
		}
		if next != 60 {
			unfrag, nextAt = off+l, off
		}
		next = p[off]
		off += l
	}
	return unfrag, nextAt, true
}

// checkFragments6 checks frags, the fragments with identification id of
// the IPv6 packet pkt at mtu, whose unfragmentable part is unfrag bytes
// with the next header field to change at nextAt, by reassembling them.
func checkFragments6(pkt []byte, mtu int, id uint32, unfrag, nextAt int, frags [][]byte) error {
	pos := 0
	var data []byte
	for i, f := range frags {
		last := i == len(frags)-1
		if len(f) > mtu {
			return fmt.Errorf("fragment %d: %d bytes, mtu %d", i, len(f), mtu)
		}
		if len(f) < unfrag+8 || f[0]>>4 != 6 || int(binary.BigEndian.Uint16(f[4:])) != len(f)-40 {
			return fmt.Errorf("fragment %d: %d bytes, payload length %d", i, len(f), binary.BigEndian.Uint16(f[4:]))
		}
		if f[nextAt] != 44 {
			return fmt.Errorf("fragment %d: next header %d before the Fragment header, want 44", i, f[nextAt])
		}
		g := append([]byte(nil), f[:unfrag]...)
		g[nextAt] = pkt[nextAt]
		g[4], g[5] = pkt[4], pkt[5]
		if !bytes.Equal(g, pkt[:unfrag]) {
			return fmt.Errorf("fragment %d: unfragmentable part differs from the packet's", i)
		}
		fh := f[unfrag : unfrag+8]
		if fh[0] != pkt[nextAt] || fh[1] != 0 || fh[3]&6 != 0 {
			return fmt.Errorf("fragment %d: Fragment header % x: next header or reserved fields wrong", i, fh)
		}
		if got := binary.BigEndian.Uint32(fh[4:]); got != id {
			return fmt.Errorf("fragment %d: identification %#x, want %#x", i, got, id)
		}
		off := int(binary.BigEndian.Uint16(fh[2:]) &^ 7)
		if off != pos {
			return fmt.Errorf("fragment %d: offset %d, want %d", i, off, pos)
		}
		if (fh[3]&1 == 1) != !last {
			return fmt.Errorf("fragment %d: M flag %d", i, fh[3]&1)
		}
		d := f[unfrag+8:]
		if !last && len(d) != (mtu-unfrag-8)&^7 {
			return fmt.Errorf("fragment %d: %d bytes of data, want %d (as many multiples of 8 as fit)", i, len(d), (mtu-unfrag-8)&^7)
		}
		if last && len(d) == 0 {
			return fmt.Errorf("fragment %d: empty", i)
		}
		data = append(data, d...)
		pos += len(d)
	}
	if !bytes.Equal(data, pkt[unfrag:]) {
		return fmt.Errorf("the fragments' data (%d bytes) differ from the packet's fragmentable part (%d)", len(data), len(pkt)-unfrag)
	}
	return nil
}
