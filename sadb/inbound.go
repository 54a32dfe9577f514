package sadb

// The inbound index: SPI to SAs, split into numShards shards by a hash of
// the SPI. Each shard is an immutable map from SPI to the inbound SAs with
// that SPI (normally one; more when they differ by destination). A write
// clones only the shards it touches, each at most once per batch, so a
// single ADD_SA or DELETE_SA copies about 1/numShards of the index.

import (
	"maps"
	"net/netip"
)

const (
	shardBits = 10
	numShards = 1 << shardBits
)

// shardOf returns the shard of spi (a multiplicative hash, so that
// sequential and random SPIs both spread).
func shardOf(spi uint32) uint32 { return (spi * 0x9E3779B1) >> (32 - shardBits) }

// inShard returns shard i of the snapshot being built, cloned for this
// write if it was not yet.
func (x *txn) inShard(i uint32) map[uint32][]*SA {
	m := x.s.in[i]
	if !x.inOwned[i] {
		if m == nil {
			m = make(map[uint32][]*SA)
		} else {
			m = maps.Clone(m)
		}
		x.s.in[i] = m
		x.inOwned[i] = true
	}
	return m
}

// inAdd indexes the inbound SA sa.
func (x *txn) inAdd(sa *SA) {
	spi := sa.Config.SPI
	m := x.inShard(shardOf(spi))
	old := m[spi]
	n := make([]*SA, len(old), len(old)+1)
	copy(n, old)
	m[spi] = append(n, sa)
}

// inRemove removes the inbound SA sa from the index.
func (x *txn) inRemove(sa *SA) {
	spi := sa.Config.SPI
	m := x.inShard(shardOf(spi))
	old := m[spi]
	n := make([]*SA, 0, len(old))
	for _, o := range old {
		if o != sa {
			n = append(n, o)
		}
	}
	if len(n) == 0 {
		delete(m, spi)
	} else {
		m[spi] = n
	}
}

// inLookup returns the live inbound SA for (spi, dst) in s: the one whose
// destination is dst, else one with the wildcard destination.
func (s *snapshot) inLookup(spi uint32, dst netip.Addr) *SA {
	var wild *SA
	for _, sa := range s.in[shardOf(spi)][spi] {
		if sa.dead.Load() {
			continue
		}
		if sa.Config.Dst == dst {
			return sa
		}
		if wild == nil && !sa.Config.Dst.IsValid() {
			wild = sa
		}
	}
	return wild
}
