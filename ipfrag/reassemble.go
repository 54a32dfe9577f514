package ipfrag

import (
	"bytes"
	"time"
)

// A Reassembler reassembles IPv4 datagrams (RFC 791) and IPv6 datagrams
// (RFC 8200 §4.5) from their fragments, within bounded memory: IPv4
// fragments are keyed by source, destination, protocol and
// identification, IPv6 fragments by source, destination and
// identification, and the two families never mix. Each fragment's data is
// copied at its offset into a buffer for its datagram as it arrives, so
// the caller may reuse the fragment's buffer as soon as Add returns;
// received data is tracked in 8-byte blocks, RFC 815's holes being the
// blocks not received.
//
// Overlaps: like Linux since 2018 for IPv4, and as RFC 5722 requires of
// IPv6, a fragment that overlaps one held for its datagram drops the whole
// datagram, unless it is an exact duplicate of it (same offset, length,
// More Fragments bit and data), which is ignored.
//
// Limits, shared by the two families: a fragment that would start a
// datagram beyond MaxDatagrams or MaxBytes is dropped (Full), while the
// datagrams held keep going; a datagram whose buffer would have to grow
// beyond MaxBytes is dropped (Full too), at once rather than left to time
// out. Call Expire regularly to drop the datagrams older than Timeout.
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
	hash         uint64 // the table's hash of key
	created      time.Time
	older, newer *entry
	buf          []byte
	class        int
	hl           int // length of the first fragment's header (IPv6: unfragmentable part), 0 until it arrived
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
			headroom: cfg.Headroom + maxHeader,
			tailroom: cfg.Tailroom,
			limit:    cfg.MaxBytes,
		},
	}
}

// Len returns how many incomplete datagrams are held.
func (r *Reassembler) Len() int { return r.count }

// Bytes returns the memory held for incomplete datagrams: the length of
// their buffers, each of which holds Config.Headroom, 296 bytes of room
// for the header (the largest IPv4 header is 60 bytes, the longest IPv6
// unfragmentable part Add takes 296), the datagram's data up to its
// furthest byte received rounded up to a power of two (2 KiB at least),
// and Config.Tailroom. It never exceeds MaxBytes.
func (r *Reassembler) Bytes() int { return r.bytes }

// fragment is a parsed fragment, of either family.
type fragment struct {
	key      key
	header   []byte // the IPv4 header, or the IPv6 unfragmentable part
	data     []byte
	off, end int // of its data in the datagram's
	more     bool
	nextAt   int  // IPv6: the offset in header of the Next Header field that names the Fragment header
	next     byte // IPv6: the Fragment header's Next Header
}

// parseFragment parses pkt into f, which must be the zero fragment, as a
// fragment of the family its version says. It checks its family's headers
// (see parseFragment4 and parseFragment6), and then what the families
// have in common: that it is a fragment (More Fragments or M set, or a
// non-zero offset), that it has some data, a multiple of 8 bytes of it
// unless it is the last fragment, and none beyond the largest datagram of
// its family.
func parseFragment(pkt []byte, f *fragment) bool {
	ok := false
	if len(pkt) > 0 {
		switch pkt[0] >> 4 {
		case 4:
			ok = parseFragment4(pkt, f)
		case 6:
			ok = parseFragment6(pkt, f)
		}
	}
	f.end = f.off + len(f.data)
	return ok && len(f.data) > 0 && (f.more || f.off > 0) && (!f.more || len(f.data)%8 == 0) && f.end <= f.key.maxData()
}

// Add takes one fragment, pkt, received at now: an IPv4 packet with More
// Fragments set or a non-zero offset, or an IPv6 packet with a Fragment
// header with the M flag set or a non-zero offset (see IsFragment). It
// returns the datagram if the fragment completed it, what it did with the
// fragment, and, when the fragment made it drop a datagram it held
// (Invalid or Full), how many fragments that datagram had. The caller
// counts those as dropped, and pkt too when the result is Invalid or
// Full; a Duplicate is ignored, neither dropped nor used.
//
// A fragment is Invalid by itself if its headers are malformed: for IPv4,
// version, header length, total length or checksum; for IPv6, version,
// payload length (zero, as in a jumbogram, or beyond the packet), or
// Hop-by-Hop Options, Destination Options and Routing headers that do not
// lead to a Fragment header within the payload. An IPv6 fragment is
// Invalid too if its unfragmentable part (the IPv6 header and the
// extension headers before the Fragment header) is longer than 296 bytes,
// and, if it is the first fragment (offset 0), unless its data holds the
// whole header chain through the upper-layer header (RFC 7112): the
// extension headers after the Fragment header (Hop-by-Hop Options,
// Routing, Destination Options, AH; a Fragment header there is Invalid)
// and the upper-layer header's fixed part (20 bytes for TCP, 8 for UDP,
// ICMPv6 and ESP, none for others). Either family's fragment is Invalid
// by itself if it is not a fragment, has no data, has More Fragments set
// and data that is not a multiple of 8 bytes long, or has data that would
// end beyond the largest datagram (65515 bytes of IPv4 data, 65535 of
// IPv6).
//
// A fragment drops its datagram if it overlaps a fragment held (and is not
// an exact duplicate of it), if it is a last fragment (More Fragments
// clear) that disagrees with another on the datagram's length or leaves
// data held beyond its end, if it has data beyond the end of a last
// fragment held, or if the datagram would be too long with the first
// fragment's header: IPv4's total length, or IPv6's payload length (the
// unfragmentable part's extension headers and the data), beyond 65535.
//
// A completed IPv4 datagram has the first fragment's header, with its
// offset and More Fragments cleared, its total length and its checksum
// recomputed. A completed IPv6 datagram has the first fragment's
// unfragmentable part, whatever the others' were, with the Next Header
// field that named the Fragment header set to the Fragment header's Next
// Header, and its payload length recomputed; the fragmentable parts
// follow, in order. Its buffer is the caller's until it gives it back
// with Release.
func (r *Reassembler) Add(pkt []byte, now time.Time) (Datagram, Result, int) {
	var f fragment
	if !parseFragment(pkt, &f) {
		return Datagram{}, Invalid, 0
	}
	h := r.table.hash(&f.key)
	e := r.table.find(&f.key, h)
	if e == nil {
		c := classOf(f.end)
		if r.count >= r.cfg.MaxDatagrams || r.bytes+r.bufs.size(c) > r.cfg.MaxBytes {
			return Datagram{}, Full, 0
		}
		e = r.newEntry(&f.key, h, now, c)
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
	if hl+end > e.key.maxLen() {
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
	return e.key.maxData()
}

// store copies fragment f into e's buffer and notes what it covers.
func (r *Reassembler) store(e *entry, f *fragment) {
	at := r.bufs.dataAt()
	copy(e.buf[at+f.off:], f.data)
	if f.off == 0 {
		e.hl = len(f.header)
		h := e.buf[at-e.hl : at]
		copy(h, f.header)
		if f.key.v6 {
			h[f.nextAt] = f.next // the Fragment header is gone
		}
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
	if e.key.v6 {
		finishHeader6(e.buf[d.Start:at], e.total)
	} else {
		finishHeader4(e.buf[d.Start:at], e.total)
	}
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

// newEntry starts the datagram of key k, whose hash is h, with a buffer
// of class c.
func (r *Reassembler) newEntry(k *key, h uint64, now time.Time, c int) *entry {
	var e *entry
	if n := len(r.spare); n > 0 {
		e = r.spare[n-1]
		r.spare[n-1] = nil
		r.spare = r.spare[:n-1]
	} else {
		e = new(entry)
	}
	e.key, e.hash, e.created = *k, h, now
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
	copy(b[at-e.hl:at+e.end], e.buf[at-e.hl:at+e.end])
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
