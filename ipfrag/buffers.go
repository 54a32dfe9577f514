package ipfrag

import "math/bits"

// Datagram buffers come in size classes by the data they can hold: 2 KiB,
// 4 KiB, ... 64 KiB, enough for the largest datagram. Each has room before
// the data for the caller's headroom and the longest header (maxHeader:
// an IPv4 header or an IPv6 unfragmentable part), and after it for the
// caller's tailroom.
const (
	minClassShift = 11 // 2 KiB of data in the smallest class
	numClasses    = 6  // the largest holds 64 KiB
)

// classOf returns the smallest class whose buffers hold n bytes of data
// (n <= 65536).
func classOf(n int) int {
	return max(0, bits.Len(uint(n-1))-minClassShift)
}

// buffers is a free list of datagram buffers by class. It keeps at most
// limit bytes of them; the rest go to the garbage collector.
type buffers struct {
	headroom  int // Config.Headroom plus maxHeader
	tailroom  int
	limit     int
	freeBytes int
	free      [numClasses][][]byte
}

// dataAt is where a buffer's data starts.
func (p *buffers) dataAt() int { return p.headroom }

// size returns the length of a buffer of class c.
func (p *buffers) size(c int) int { return p.headroom + 1<<(c+minClassShift) + p.tailroom }

// get returns a buffer of class c, from the free list if it has one.
func (p *buffers) get(c int) []byte {
	if n := len(p.free[c]); n > 0 {
		b := p.free[c][n-1]
		p.free[c][n-1] = nil
		p.free[c] = p.free[c][:n-1]
		p.freeBytes -= len(b)
		return b
	}
	return make([]byte, p.size(c))
}

// put returns b to the free list. A buffer of no class (not one of ours)
// is ignored, and so is one that would take the free list over its limit.
func (p *buffers) put(b []byte) {
	b = b[:cap(b)]
	c := classOf(len(b) - p.headroom - p.tailroom)
	if c >= numClasses || len(b) != p.size(c) || p.freeBytes+len(b) > p.limit {
		return
	}
	p.free[c] = append(p.free[c], b)
	p.freeBytes += len(b)
}
