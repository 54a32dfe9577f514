package sadb

// The handle index: handles are issued in increasing order and never
// reused, so the index is an array of fixed-size chunks (chunkSize
// consecutive handles each) rather than a map. A write copies the chunk
// slice header array once and each chunk it touches once; List walks the
// chunks in order, so it needs no sort. Empty chunks are dropped, and the
// slice is trimmed at both ends, so its length follows the span of live
// handles, not how many handles were ever issued.

import "slices"

const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
)

// chunk holds the SAs of chunkSize consecutive handles.
type chunk struct {
	gen  uint64 // the write that created this copy
	live int    // non-nil entries in sas
	sas  [chunkSize]*SA
}

// get returns the SA with handle h in s, or nil.
func (s *snapshot) get(h Handle) *SA {
	ci := uint64(h) >> chunkBits
	if ci < s.base || ci-s.base >= uint64(len(s.chunks)) {
		return nil
	}
	c := s.chunks[ci-s.base]
	if c == nil {
		return nil
	}
	return c.sas[h&(chunkSize-1)]
}

// ownChunk returns the chunk for handle h in the snapshot being built,
// created or cloned for this write as needed.
func (x *txn) ownChunk(h Handle) *chunk {
	s := x.s
	ci := uint64(h) >> chunkBits
	if !x.chunksOwned {
		s.chunks = slices.Clone(s.chunks)
		x.chunksOwned = true
	}
	switch {
	case len(s.chunks) == 0:
		s.base = ci
	case ci < s.base: // not reached: handles only grow
		s.chunks = append(make([]*chunk, s.base-ci), s.chunks...)
		s.base = ci
	}
	for ci-s.base >= uint64(len(s.chunks)) {
		s.chunks = append(s.chunks, nil)
	}
	i := ci - s.base
	c := s.chunks[i]
	switch {
	case c == nil:
		c = &chunk{gen: x.gen}
	case c.gen != x.gen:
		cc := *c
		cc.gen = x.gen
		c = &cc
	}
	s.chunks[i] = c
	return c
}

// putHandle indexes sa by its handle, which must be higher than any in
// the snapshot.
func (x *txn) putHandle(sa *SA) {
	c := x.ownChunk(sa.Handle)
	c.sas[sa.Handle&(chunkSize-1)] = sa
	c.live++
}

// dropHandle removes sa, which the snapshot holds, from the handle index.
func (x *txn) dropHandle(sa *SA) {
	c := x.ownChunk(sa.Handle)
	c.sas[sa.Handle&(chunkSize-1)] = nil
	c.live--
	if c.live == 0 {
		x.s.chunks[uint64(sa.Handle)>>chunkBits-x.s.base] = nil
	}
}

// trimChunks drops empty chunks at both ends of the snapshot being built.
func (x *txn) trimChunks() {
	s := x.s
	for len(s.chunks) > 0 && s.chunks[0] == nil {
		s.chunks = s.chunks[1:]
		s.base++
	}
	for len(s.chunks) > 0 && s.chunks[len(s.chunks)-1] == nil {
		s.chunks = s.chunks[:len(s.chunks)-1]
	}
}

// list returns the SAs of s in handle order.
func (s *snapshot) list() []*SA {
	out := make([]*SA, 0, s.n)
	for _, c := range s.chunks {
		if c == nil {
			continue
		}
		for _, sa := range c.sas {
			if sa != nil {
				out = append(out, sa)
			}
		}
	}
	return out
}
