package ipfrag

import "math/bits"

// maxBlocks is the number of 8-byte blocks of data a datagram can have
// (IPv4's 65515 bytes, IPv6's 65535): fragment offsets count in them.
const maxBlocks = 65536 / 8

// blockSet is a set of 8-byte blocks of a datagram's data, one bit each.
type blockSet [maxBlocks / 64]uint64

// has reports whether block i is in the set.
func (s *blockSet) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }

// add puts block i in the set.
func (s *blockSet) add(i int) { s[i>>6] |= 1 << (i & 63) }

// addRange puts blocks lo to hi-1 in the set.
func (s *blockSet) addRange(lo, hi int) {
	for lo < hi {
		b := lo & 63
		n := min(hi-lo, 64-b)
		s[lo>>6] |= ^uint64(0) >> (64 - n) << b
		lo += n
	}
}

// anyIn reports whether any of blocks lo to hi-1 is in the set.
func (s *blockSet) anyIn(lo, hi int) bool {
	for lo < hi {
		b := lo & 63
		n := min(hi-lo, 64-b)
		if s[lo>>6]&(^uint64(0)>>(64-n)<<b) != 0 {
			return true
		}
		lo += n
	}
	return false
}

// clearBelow empties the set, knowing that it holds no block from hi on.
func (s *blockSet) clearBelow(hi int) {
	clear(s[:min((hi+63)>>6, len(s))])
}

// fragmentEnd returns, for the fragment received at block lo, the first
// block after it that starts another fragment or was not received: where
// that fragment ends, in blocks. starts holds the first block of every
// fragment received, covered every block received.
func fragmentEnd(starts, covered *blockSet, lo int) int {
	for i := lo + 1; i < maxBlocks; i = (i | 63) + 1 {
		w := (starts[i>>6] | ^covered[i>>6]) >> (i & 63)
		if w != 0 {
			return i + bits.TrailingZeros64(w)
		}
	}
	return maxBlocks
}
