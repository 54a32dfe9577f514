package ipfrag

import "math/rand/v2"

// key identifies the datagram a fragment belongs to (RFC 791): source,
// destination, protocol and identification.
type key struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
}

// table finds the datagrams being reassembled by key: open addressing
// with linear probing and, on removal, backward shifting, so that it
// never fills up with tombstones and never allocates after NewReassembler.
type table struct {
	slots        []*entry // a power of two of them, at least twice the entries
	seed1, seed2 uint64   // against keys chosen to collide
}

func newTable(entries int) table {
	n := 8
	for n < 2*entries {
		n *= 2
	}
	return table{slots: make([]*entry, n), seed1: rand.Uint64(), seed2: rand.Uint64()}
}

// home returns the slot where k's search starts.
func (t *table) home(k key) int {
	a := uint64(be.Uint32(k.src[:]))<<32 | uint64(be.Uint32(k.dst[:]))
	b := uint64(k.id)<<8 | uint64(k.proto)
	h := (a ^ t.seed1) * 0x9e3779b97f4a7c15
	h = (h ^ h>>32 ^ b ^ t.seed2) * 0xbf58476d1ce4e5b9
	h ^= h >> 31
	return int(h & uint64(len(t.slots)-1))
}

// find returns the entry of key k, or nil.
func (t *table) find(k key) *entry {
	mask := len(t.slots) - 1
	for i := t.home(k); t.slots[i] != nil; i = (i + 1) & mask {
		if t.slots[i].key == k {
			return t.slots[i]
		}
	}
	return nil
}

// insert adds e, whose key is not in the table yet. The table must have a
// free slot, which holds while it has no more entries than NewReassembler
// sized it for.
func (t *table) insert(e *entry) {
	mask := len(t.slots) - 1
	i := t.home(e.key)
	for t.slots[i] != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = e
}

// remove takes e, which is in the table, out of it.
func (t *table) remove(e *entry) {
	mask := len(t.slots) - 1
	i := t.home(e.key)
	for t.slots[i] != e {
		i = (i + 1) & mask
	}
	// Move back every later entry of the run that may start its search at
	// or before the hole, so that searches never stop at the hole too soon.
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		h := t.home(t.slots[j].key)
		// The entry stays if its home is cyclically in (i, j].
		if (i < j && i < h && h <= j) || (j < i && (i < h || h <= j)) {
			continue
		}
		t.slots[i] = t.slots[j]
		i = j
	}
	t.slots[i] = nil
}
