package ipfrag

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// key identifies the datagram a fragment belongs to: source,
// destination, protocol and identification for IPv4 (RFC 791); source,
// destination and identification for IPv6 (RFC 8200 §4.5). The family is
// part of it, so that datagrams of the two families never meet.
type key struct {
	src, dst [16]byte // an IPv4 address in the first 4 bytes, the rest zero
	id       uint32   // IPv4's 16 bits or IPv6's 32
	proto    uint8    // IPv4 only
	v6       bool
}

// maxData returns the most data a datagram of k's family may have: for
// IPv4, 65535 bytes less the smallest header; for IPv6, the largest
// payload length (the unfragmentable part's extension headers would take
// from it).
func (k *key) maxData() int {
	if k.v6 {
		return ipv6MaxPayload
	}
	return ipv4MaxLen - ipv4MinHeader
}

// maxLen returns the most a datagram of k's family may have of header
// (IPv4's, or IPv6's unfragmentable part) and data together.
func (k *key) maxLen() int {
	if k.v6 {
		return ipv6Header + ipv6MaxPayload
	}
	return ipv4MaxLen
}

// table finds the datagrams being reassembled by key: open addressing
// with linear probing and, on removal, backward shifting, so that it
// never fills up with tombstones and never allocates after NewReassembler.
// Each entry keeps its key's hash, so that a search compares keys only
// when the hashes agree, and a removal hashes no key.
type table struct {
	slots []*entry  // a power of two of them, at least twice the entries
	seeds [5]uint64 // against keys chosen to collide
}

func newTable(entries int) table {
	n := 8
	for n < 2*entries {
		n *= 2
	}
	t := table{slots: make([]*entry, n)}
	for i := range t.seeds {
		t.seeds[i] = rand.Uint64()
	}
	return t
}

// hash returns k's hash, which picks the slot where its search starts.
func (t *table) hash(k *key) uint64 {
	le := binary.LittleEndian // the fastest to load: the order is no matter
	b := uint64(k.id)<<16 | uint64(k.proto)<<8
	if k.v6 {
		b |= 1
	}
	h := mum(le.Uint64(k.src[:])^t.seeds[0], le.Uint64(k.src[8:])^t.seeds[1]) ^
		mum(le.Uint64(k.dst[:])^t.seeds[2], le.Uint64(k.dst[8:])^t.seeds[3])
	return mum(h^b, t.seeds[4]^0x9e3779b97f4a7c15)
}

// mum mixes a and b (as wyhash does): the two halves of their 128-bit
// product, xored.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// home returns the slot where the search for a key of hash h starts.
func (t *table) home(h uint64) int { return int(h & uint64(len(t.slots)-1)) }

// find returns the entry of key k, whose hash is h, or nil.
func (t *table) find(k *key, h uint64) *entry {
	mask := len(t.slots) - 1
	for i := t.home(h); t.slots[i] != nil; i = (i + 1) & mask {
		if e := t.slots[i]; e.hash == h && e.key == *k {
			return e
		}
	}
	return nil
}

// insert adds e, whose key is not in the table yet and whose hash is set.
// The table must have a free slot, which holds while it has no more
// entries than NewReassembler sized it for.
func (t *table) insert(e *entry) {
	mask := len(t.slots) - 1
	i := t.home(e.hash)
	for t.slots[i] != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = e
}

// remove takes e, which is in the table, out of it.
func (t *table) remove(e *entry) {
	mask := len(t.slots) - 1
	i := t.home(e.hash)
	for t.slots[i] != e {
		i = (i + 1) & mask
	}
	// Move back every later entry of the run that may start its search at
	// or before the hole, so that searches never stop at the hole too soon.
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		h := t.home(t.slots[j].hash)
		// The entry stays if its home is cyclically in (i, j].
		if (i < j && i < h && h <= j) || (j < i && (i < h || h <= j)) {
			continue
		}
		t.slots[i] = t.slots[j]
		i = j
	}
	t.slots[i] = nil
}
