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
	held                   map[key]*refDatagram
	order                  []*refDatagram // by creation
	bytes                  int
}

type refDatagram struct {
	key     key
	created time.Time
	frags   []refFrag
	size    int // of its buffer, as Reassembler.Bytes documents it
}

type refFrag struct {
	off, end     int
	more         bool
	header, data []byte
}

func newRefReassembler(cfg Config) *refReassembler {
	m := &refReassembler{
		maxDatagrams: cfg.MaxDatagrams, maxBytes: cfg.MaxBytes, timeout: cfg.Timeout,
		headroom: cfg.Headroom, tailroom: cfg.Tailroom,
		held: map[key]*refDatagram{},
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

// bufSize is the buffer for data ending at end: headroom, the largest
// header, the data rounded up to a power of two (2 KiB at least),
// tailroom.
func (m *refReassembler) bufSize(end int) int {
	c := 2048
	for c < end {
		c *= 2
	}
	return m.headroom + 60 + c + m.tailroom
}

func refParse(pkt []byte) (key, refFrag, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return key{}, refFrag{}, false
	}
	hl := int(pkt[0]&15) * 4
	tl := int(binary.BigEndian.Uint16(pkt[2:]))
	if hl < 20 || tl <= hl || tl > len(pkt) || sum16(pkt[:hl]) != 0xffff {
		return key{}, refFrag{}, false
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
		return key{}, refFrag{}, false
	}
	k := key{src: [4]byte(pkt[12:16]), dst: [4]byte(pkt[16:20]), id: binary.BigEndian.Uint16(pkt[4:]), proto: pkt[9]}
	return k, f, true
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
	if hl+end > 65535 {
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
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] &= 0xc0
	p[7] = 0
	fixChecksum4(p)
	m.drop(d)
	return Complete, 0, p
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
