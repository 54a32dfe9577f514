package algo

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
)

// scratch is per-call working memory. It lives on the heap (in a pool) so
// that slices of it can be handed to crypto interfaces without allocating.
type scratch struct {
	buf [64]byte // IV input, ESN high bits, HMAC sums
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch  { return scratchPool.Get().(*scratch) }
func putScratch(s *scratch) { scratchPool.Put(s) }

// bigBuf is a spare packet-sized buffer for the rare path where a packet
// buffer has no spare capacity for a full-length tag.
var bigPool = sync.Pool{New: func() any { b := make([]byte, 65536+64); return &b }}

// randomMask returns a random 64-bit value. IVs are the sequence number
// XOR this per-SA mask (as Linux's seqiv does), so that two SAs that
// happen to share a key still never share a nonce.
func randomMask() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand.Read never fails on Linux (Go 1.24+ panics
		// itself rather than return an error).
		panic(err)
	}
	return binary.BigEndian.Uint64(b[:])
}

// espAAD prepares the AEAD associated data of the ESP header at pkt[esp:]
// and returns where it starts: SPI||seq is pkt[esp:esp+8] as it stands;
// with ESN the associated data is SPI||seqHi||seqLo (RFC 4106 §5,
// RFC 4543 §3.3, RFC 7634 §2.1), built in pkt[esp-4:esp+8] by moving the
// SPI four bytes back and writing the high bits in its place, as Linux
// does. saved holds the overwritten bytes for undoAAD.
func espAAD(pkt []byte, esp int, seq uint64, esn bool) (start int, saved uint64) {
	if !esn {
		return esp, 0
	}
	saved = binary.BigEndian.Uint64(pkt[esp-4:])
	copy(pkt[esp-4:esp], pkt[esp:esp+4])
	binary.BigEndian.PutUint32(pkt[esp:], uint32(seq>>32))
	return esp - 4, saved
}

// undoAAD restores what espAAD changed.
func undoAAD(pkt []byte, esp int, esn bool, saved uint64) {
	if esn {
		binary.BigEndian.PutUint64(pkt[esp-4:], saved)
	}
}

func wipe(b []byte) { clear(b) }
