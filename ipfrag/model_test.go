package ipfrag

import (
	"bytes"
	"encoding/binary"
	"time"
)

// refReassembler is the Reassembler's policy written the plainest way,
// fragments kept whole in lists, for FuzzReassembler to compare with.
type refReassembler struct {
	maxDatagrams, maxBytes int
	headroom, tailroom     int
	timeout                time.Duration
	held                   map[refKey]*refDatagram
	order                  []*refDatagram // by creation
	bytes                  int
}

// refKey identifies a datagram: IPv4's by addresses, protocol and
// identification, IPv6's by addresses and identification.
type refKey struct {
	v6       bool
	src, dst string
	proto    byte
	id       uint32
}

type refDatagram struct {
	key     refKey
	created time.Time
	frags   []refFrag
	size    int // of its buffer, as Reassembler.Bytes documents it
}

type refFrag struct {
	off, end int
	more     bool
	header   []byte // IPv6: the unfragmentable part with the Fragment header's next header
	data     []byte
}

func newRefReassembler(cfg Config) *refReassembler {
	m := &refReassembler{
		maxDatagrams: cfg.MaxDatagrams, maxBytes: cfg.MaxBytes, timeout: cfg.Timeout,
		headroom: cfg.Headroom, tailroom: cfg.Tailroom,
		held: map[refKey]*refDatagram{},
	}
	if m.maxDatagrams <= 0 {
		m.maxDatagrams = 64
	}
	if m.maxBytes <= 0 {
		m.maxBytes = 4 << 20
	}
	if m.timeout <= 0 {
		m.timeout = 30 * time.Second
	}
	return m
}

// bufSize is the buffer for data ending at end: headroom, room for the
// longest header (an IPv6 unfragmentable part of 296 bytes), the data
// rounded up to a power of two (2 KiB at least), tailroom.
func (m *refReassembler) bufSize(end int) int {
	c := 2048
	for c < end {
		c *= 2
	}
	return m.headroom + 296 + c + m.tailroom
}

func refParse(pkt []byte) (refKey, refFrag, bool) {
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		return refParse6(pkt)
	}
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return refKey{}, refFrag{}, false
	}
	hl := int(pkt[0]&15) * 4
	tl := int(binary.BigEndian.Uint16(pkt[2:]))
	if hl < 20 || tl <= hl || tl > len(pkt) || sum16(pkt[:hl]) != 0xffff {
		return refKey{}, refFrag{}, false
	}
	field := binary.BigEndian.Uint16(pkt[6:])
	f := refFrag{
		off:    int(field&0x1fff) * 8,
		more:   field&0x2000 != 0,
		header: bytes.Clone(pkt[:hl]),
		data:   bytes.Clone(pkt[hl:tl]),
	}
	f.end = f.off + len(f.data)
	if !f.more && f.off == 0 || f.more && len(f.data)%8 != 0 || f.end > 65515 {
		return refKey{}, refFrag{}, false
	}
	k := refKey{src: string(pkt[12:16]), dst: string(pkt[16:20]), id: uint32(binary.BigEndian.Uint16(pkt[4:])), proto: pkt[9]}
	return k, f, true
}

// refParse6 parses an IPv6 fragment: a payload length within the packet,
// Hop-by-Hop, Routing and Destination Options headers up to a Fragment
// header, at most 296 bytes before it, data, a multiple of 8 bytes of it
// unless last, none beyond 65535, and in the first fragment the header
// chain through the upper-layer header.
func refParse6(pkt []byte) (refKey, refFrag, bool) {
	if len(pkt) < 40 {
		return refKey{}, refFrag{}, false
	}
	pl := int(binary.BigEndian.Uint16(pkt[4:]))
	if pl == 0 || 40+pl > len(pkt) {
		return refKey{}, refFrag{}, false
	}
	pkt = pkt[:40+pl]
	next, off, nextAt := pkt[6], 40, 6
	for next == 0 || next == 43 || next == 60 {
		if off+2 > len(pkt) || off+8*(int(pkt[off+1])+1) > len(pkt) {
			return refKey{}, refFrag{}, false
		}
		next, nextAt = pkt[off], off
		off += 8 * (int(pkt[off+1]) + 1)
	}
	if next != 44 || off+8 > len(pkt) || off > 296 {
		return refKey{}, refFrag{}, false
	}
	fh := pkt[off : off+8]
	f := refFrag{
		off:    int(binary.BigEndian.Uint16(fh[2:]) &^ 7),
		more:   fh[3]&1 != 0,
		header: bytes.Clone(pkt[:off]),
		data:   bytes.Clone(pkt[off+8:]),
	}
	f.header[nextAt] = fh[0]
	f.end = f.off + len(f.data)
	if len(f.data) == 0 || !f.more && f.off == 0 || f.more && len(f.data)%8 != 0 || f.end > 65535 {
		return refKey{}, refFrag{}, false
	}
	if f.off == 0 && !refChainOK(f.data, fh[0]) {
		return refKey{}, refFrag{}, false
	}
	k := refKey{v6: true, src: string(pkt[8:24]), dst: string(pkt[24:40]), id: binary.BigEndian.Uint32(fh[4:])}
	return k, f, true
}

// refChainOK reports whether b, the data of a first fragment whose
// Fragment header names next, holds the extension headers that follow and
// the fixed part of the upper-layer header (RFC 7112), with no other
// Fragment header.
func refChainOK(b []byte, next byte) bool {
	off := 0
	for {
		var l int
		switch next {
		case 0, 43, 60:
			if off+2 > len(b) {
				return false
			}
			l = 8 * (int(b[off+1]) + 1)
		case 51:
			if off+2 > len(b) {
				return false
			}
			l = 4 * (int(b[off+1]) + 2)
		case 44:
			return false
		default:
			fixed := map[byte]int{6: 20, 17: 8, 58: 8, 50: 8}[next]
			return off+fixed <= len(b)
		}
		if off+l > len(b) {
			return false
		}
		next = b[off]
		off += l
	}
}

// add does what Reassembler.Add should: it returns the result, the number
// of fragments dropped with the datagram, and the complete datagram.
func (m *refReassembler) add(pkt []byte, now time.Time) (Result, int, []byte) {
	k, f, ok := refParse(pkt)
	if !ok {
		return Invalid, 0, nil
	}
	d := m.held[k]
	if d == nil {
		size := m.bufSize(f.end)
		if len(m.held) >= m.maxDatagrams || m.bytes+size > m.maxBytes {
			return Full, 0, nil
		}
		d = &refDatagram{key: k, created: now, frags: []refFrag{f}, size: size}
		m.held[k] = d
		m.order = append(m.order, d)
		m.bytes += size
		return Held, 0, nil
	}
	total, end, hl := -1, 0, 0
	for _, g := range d.frags {
		if !g.more {
			total = g.end
		}
		end = max(end, g.end)
		if g.off == 0 {
			hl = len(g.header)
		}
	}
	if !f.more && (total >= 0 && f.end != total || end > f.end) || f.more && total >= 0 && f.end > total {
		return Invalid, m.drop(d), nil
	}
	for _, g := range d.frags {
		if g.off < f.end && f.off < g.end {
			if g.off == f.off && g.end == f.end && g.more == f.more && bytes.Equal(g.data, f.data) {
				return Duplicate, 0, nil
			}
			return Invalid, m.drop(d), nil
		}
	}
	if f.off == 0 {
		hl = len(f.header)
	}
	end = max(end, f.end)
	if maxLen := 65535 + 40*btoi(k.v6); hl+end > maxLen {
		return Invalid, m.drop(d), nil
	}
	if size := m.bufSize(end); size > d.size {
		if m.bytes-d.size+size > m.maxBytes {
			return Full, m.drop(d), nil
		}
		m.bytes += size - d.size
		d.size = size
	}
	d.frags = append(d.frags, f)
	if !f.more {
		total = f.end
	}
	got := 0
	var first refFrag
	for _, g := range d.frags {
		got += len(g.data)
		if g.off == 0 {
			first = g
		}
	}
	if total < 0 || got != total {
		return Held, 0, nil
	}
	p := make([]byte, len(first.header)+total)
	copy(p, first.header)
	for _, g := range d.frags {
		copy(p[len(first.header)+g.off:], g.data)
	}
	if k.v6 {
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
	} else {
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[6] &= 0xc0
		p[7] = 0
		fixChecksum4(p)
	}
	m.drop(d)
	return Complete, 0, p
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// drop forgets d and returns how many fragments it had.
func (m *refReassembler) drop(d *refDatagram) int {
	delete(m.held, d.key)
	for i, o := range m.order {
		if o == d {
			m.order = append(m.order[:i], m.order[i+1:]...)
			break
		}
	}
	m.bytes -= d.size
	return len(d.frags)
}

// expire drops the datagrams timeout old, and counts them and their
// fragments.
func (m *refReassembler) expire(now time.Time) (datagrams, fragments int) {
	for _, d := range append([]*refDatagram(nil), m.order...) {
		if now.Sub(d.created) >= m.timeout {
			datagrams++
			fragments += m.drop(d)
		}
	}
	return datagrams, fragments
}
