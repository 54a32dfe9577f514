package ipfrag

import (
	"bytes"
	"time"
)

// A Reassembler reassembles IPv4 datagrams from their fragments (RFC 791),
// keyed by source, destination, protocol and identification, within
// bounded memory. Each fragment's data is copied at its offset into a
// buffer for its datagram as it arrives, so the caller may reuse the
// fragment's buffer as soon as Add returns; received data is tracked in
// 8-byte blocks, RFC 815's holes being the blocks not received.
//
// Overlaps: like Linux since 2018, and as RFC 5722 requires of IPv6, a
// fragment that overlaps one held for its datagram drops the whole
// datagram, unless it is an exact duplicate of it (same offset, length,
// More Fragments bit and data), which is ignored.
//
// Limits: a fragment that would start a datagram beyond MaxDatagrams or
// MaxBytes is dropped (Full), while the datagrams held keep going; a
// datagram whose buffer would have to grow beyond MaxBytes is dropped
// (Full too), at once rather than left to time out. Call Expire regularly
// to drop the datagrams older than Timeout.
//
// A Reassembler is not safe for concurrent use: vnic's outbound loop owns
// it. It allocates no memory once its free lists hold enough buffers.
type Reassembler struct {
	cfg    Config
	table  table
	bufs   buffers
	spare  []*entry // entries to reuse
	oldest *entry   // the list of entries by age: oldest first
	newest *entry
	count  int
	bytes  int // of the buffers of the entries
}

// entry is an incomplete datagram.
type entry struct {
	key          key
	created      time.Time
	older, newer *entry
	buf          []byte
	class        int
	hl           int // header length of the first fragment, 0 until it arrived
	total        int // data length, -1 until the last fragment arrived
	end          int // the end of the data received furthest
	received     int // bytes of data received
	fragments    int
	covered      blockSet // the blocks received
	starts       blockSet // the first block of each fragment received
}

// NewReassembler returns a Reassembler with the limits of cfg.
func NewReassembler(cfg Config) *Reassembler {
	if cfg.MaxDatagrams <= 0 {
		cfg.MaxDatagrams = DefaultMaxDatagrams
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.Headroom = max(cfg.Headroom, 0)
	cfg.Tailroom = max(cfg.Tailroom, 0)
	return &Reassembler{
		cfg:   cfg,
		table: newTable(cfg.MaxDatagrams),
		bufs: buffers{
			headroom: cfg.Headroom + ipv4MaxHeader,
			tailroom: cfg.Tailroom,
			limit:    cfg.MaxBytes,
		},
	}
}

// Len returns how many incomplete datagrams are held.
func (r *Reassembler) Len() int { return r.count }

// Bytes returns the memory held for incomplete datagrams: the length of
// their buffers, each of which holds Config.Headroom, the largest IPv4
// header (60 bytes), the datagram's data up to its furthest byte received
// rounded up to a power of two (2 KiB at least), and Config.Tailroom. It
// never exceeds MaxBytes.
func (r *Reassembler) Bytes() int { return r.bytes }

// fragment is a parsed IPv4 fragment.
type fragment struct {
	key      key
	header   []byte
	data     []byte
	off, end int // of its data in the datagram's
	more     bool
}

// parseFragment checks that pkt is a well-formed IPv4 fragment: header
// length, total length (bytes after it are ignored), header checksum, some
// data, a multiple of 8 bytes of it unless it is the last fragment, and
// none beyond the largest datagram.
func parseFragment(pkt []byte) (fragment, bool) {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return fragment{}, false
	}
	hl := int(pkt[0]&0x0f) * 4
	tl := int(be.Uint16(pkt[2:]))
	if hl < ipv4MinHeader || tl <= hl || tl > len(pkt) || checksum(pkt[:hl]) != 0 {
		return fragment{}, false
	}
	field := be.Uint16(pkt[6:])
	f := fragment{
		key: key{
			src:   [4]byte(pkt[12:16]),
			dst:   [4]byte(pkt[16:20]),
			id:    be.Uint16(pkt[4:]),
			proto: pkt[9],
		},
		header: pkt[:hl],
		data:   pkt[hl:tl],
		off:    int(field&offsetMask) * 8,
		more:   field&flagMF != 0,
	}
	f.end = f.off + len(f.data)
	if (!f.more && f.off == 0) || (f.more && len(f.data)%8 != 0) || f.end > ipv4MaxLen-ipv4MinHeader {
		return fragment{}, false
	}
	return f, true
}

// Add takes one IPv4 fragment, pkt, received at now: a whole IPv4 packet
// with More Fragments set or a non-zero offset (see IsFragment). It
// returns the datagram if the fragment completed it, what it did with the
// fragment, and, when the fragment made it drop a datagram it held
// (Invalid or Full), how many fragments that datagram had. The caller
// counts those as dropped, and pkt too when the result is Invalid or
// Full; a Duplicate is ignored, neither dropped nor used.
//
// A fragment is Invalid by itself if its header is malformed (version,
// header length, total length, checksum), if it is not a fragment, has no
// data, has More Fragments set and data that is not a multiple of 8 bytes
// long, or data that would end beyond the largest datagram. It drops its
// datagram if it overlaps a fragment held (and is not an exact duplicate
// of it), if it is a last fragment (More Fragments clear) that disagrees
// with another on the datagram's length or leaves data held beyond its
// end, if it has data beyond the end of a last fragment held, or if the
// datagram would be longer than 65535 bytes with the first fragment's
// header.
//
// A completed datagram has the first fragment's header, with its offset
// and More Fragments cleared, its total length and its checksum
// recomputed. Its buffer is the caller's until it gives it back with
// Release.
func (r *Reassembler) Add(pkt []byte, now time.Time) (Datagram, Result, int) {
	f, ok := parseFragment(pkt)
	if !ok {
		return Datagram{}, Invalid, 0
	}
	e := r.table.find(f.key)
	if e == nil {
		c := classOf(f.end)
		if r.count >= r.cfg.MaxDatagrams || r.bytes+r.bufs.size(c) > r.cfg.MaxBytes {
			return Datagram{}, Full, 0
		}
		e = r.newEntry(f.key, now, c)
	} else {
		if res := r.admit(e, &f); res != Held {
			if res == Duplicate {
				return Datagram{}, Duplicate, 0
			}
			return Datagram{}, res, r.drop(e)
		}
	}
	r.store(e, &f)
	if e.total < 0 || e.received != e.total {
		return Datagram{}, Held, 0
	}
	return r.complete(e), Complete, 0
}

// admit returns Held if fragment f may join those of e, having grown e's
// buffer for it if need be; Duplicate if it is an exact duplicate of one;
// or else the result of dropping e: Invalid for an inconsistent fragment,
// Full for want of room to hold it.
func (r *Reassembler) admit(e *entry, f *fragment) Result {
	if !f.more {
		if (e.total >= 0 && f.end != e.total) || e.end > f.end {
			return Invalid
		}
	} else if e.total >= 0 && f.end > e.total {
		return Invalid
	}
	lo, hi := f.off/8, (f.end+7)/8
	if e.covered.anyIn(lo, hi) {
		// Only the last fragment ends where a block does not, at the
		// datagram's end.
		if e.starts.has(lo) && min(fragmentEnd(&e.starts, &e.covered, lo)*8, e.limit()) == f.end &&
			f.more == (e.total < 0 || f.end != e.total) &&
			bytes.Equal(e.buf[r.bufs.dataAt()+f.off:][:len(f.data)], f.data) {
			return Duplicate
		}
		return Invalid
	}
	hl := e.hl
	if f.off == 0 {
		hl = len(f.header)
	}
	end := max(e.end, f.end)
	if hl+end > ipv4MaxLen {
		return Invalid
	}
	if c := classOf(end); c > e.class {
		if r.bytes-len(e.buf)+r.bufs.size(c) > r.cfg.MaxBytes {
			return Full
		}
		r.grow(e, c)
	}
	return Held
}

// limit returns where e's data ends, as far as is known.
func (e *entry) limit() int {
	if e.total >= 0 {
		return e.total
	}
	return ipv4MaxLen
}

// store copies fragment f into e's buffer and notes what it covers.
func (r *Reassembler) store(e *entry, f *fragment) {
	at := r.bufs.dataAt()
	copy(e.buf[at+f.off:], f.data)
	if f.off == 0 {
		e.hl = len(f.header)
		copy(e.buf[at-e.hl:], f.header)
	}
	if !f.more {
		e.total = f.end
	}
	e.covered.addRange(f.off/8, (f.end+7)/8)
	e.starts.add(f.off / 8)
	e.end = max(e.end, f.end)
	e.received += len(f.data)
	e.fragments++
}

// complete takes the complete datagram e out of the table and returns it,
// with its header fixed.
func (r *Reassembler) complete(e *entry) Datagram {
	at := r.bufs.dataAt()
	d := Datagram{Buf: e.buf, Start: at - e.hl, End: at + e.total}
	h := e.buf[d.Start:at]
	be.PutUint16(h[2:], uint16(e.hl+e.total))
	be.PutUint16(h[6:], be.Uint16(h[6:])&(flagReserved|flagDF))
	setIPv4Checksum(h)
	e.buf = nil
	r.remove(e)
	return d
}

// Release gives back the buffer of a datagram that Add completed, for
// reuse: the caller must not use it afterwards, nor release it twice.
// Releasing the zero Datagram does nothing.
func (r *Reassembler) Release(d Datagram) {
	if d.Buf != nil {
		r.bufs.put(d.Buf)
	}
}

// Expire drops the datagrams that arrived Timeout or longer before now,
// and returns how many it dropped and how many fragments they held: the
// caller counts those as dropped for a timeout. The times given to Add and
// Expire must not go backwards. Expire costs next to nothing when no
// datagram has expired, so it may be called before every Add.
func (r *Reassembler) Expire(now time.Time) (datagrams, fragments int) {
	for r.oldest != nil && now.Sub(r.oldest.created) >= r.cfg.Timeout {
		datagrams++
		fragments += r.drop(r.oldest)
	}
	return datagrams, fragments
}

// newEntry starts a datagram, with a buffer of class c.
func (r *Reassembler) newEntry(k key, now time.Time, c int) *entry {
	var e *entry
	if n := len(r.spare); n > 0 {
		e = r.spare[n-1]
		r.spare[n-1] = nil
		r.spare = r.spare[:n-1]
	} else {
		e = new(entry)
	}
	e.key, e.created = k, now
	e.buf, e.class = r.bufs.get(c), c
	e.hl, e.total, e.end, e.received, e.fragments = 0, -1, 0, 0, 0
	r.bytes += len(e.buf)
	r.count++
	r.table.insert(e)
	e.older, e.newer = r.newest, nil
	if r.newest != nil {
		r.newest.newer = e
	} else {
		r.oldest = e
	}
	r.newest = e
	return e
}

// grow moves e's data into a buffer of class c.
func (r *Reassembler) grow(e *entry, c int) {
	b := r.bufs.get(c)
	at := r.bufs.dataAt()
	copy(b[at-ipv4MaxHeader:at+e.end], e.buf[at-ipv4MaxHeader:at+e.end])
	r.bytes += len(b) - len(e.buf)
	r.bufs.put(e.buf)
	e.buf, e.class = b, c
}

// drop discards the incomplete datagram e and returns how many fragments
// it held.
func (r *Reassembler) drop(e *entry) int {
	n := e.fragments
	r.bufs.put(e.buf)
	e.buf = nil
	r.remove(e)
	return n
}

// remove takes e out of the table and the age list, and keeps it for
// reuse; its buffer is no longer counted.
func (r *Reassembler) remove(e *entry) {
	r.table.remove(e)
	if e.older != nil {
		e.older.newer = e.newer
	} else {
		r.oldest = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else {
		r.newest = e.older
	}
	e.older, e.newer = nil, nil
	r.bytes -= r.bufs.size(e.class)
	r.count--
	blocks := (e.end + 7) / 8
	e.covered.clearBelow(blocks)
	e.starts.clearBelow(blocks)
	r.spare = append(r.spare, e)
}
