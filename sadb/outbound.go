package sadb

// The outbound index has two parts.
//
// Host selectors, whose destination is one address (/32 or /128: every
// transport-mode SA without explicit selectors, host-to-host tunnels), sit
// in a hash index: numShards immutable maps from the address to its
// entries, cloned copy-on-write like the inbound shards. A destination
// prefix cannot be longer, so a matching host entry is always the answer
// and a lookup tries it first, with one map access.
//
// Other selectors sit in one persistent (path-copying) binary trie per
// address family, keyed by destination prefix, in the shape of
// wireguard-go's allowedips. A node is a prefix; its entries are the
// selectors with exactly that destination prefix. A lookup walks from the
// root along the packet's destination and keeps the first matching entry of
// the deepest node that has one, so the longest destination prefix wins.
//
// Entries of one prefix are sorted from most to least specific (longer
// source prefix, protocol set, more ports set, lower handle), so the first
// live match in a prefix's entries is its best.
//
// Nodes reachable from a published snapshot are never modified. A write
// copies the nodes on the path it changes (O(depth) nodes, at most 33 or
// 129); nodes created by the current write carry its generation and are
// changed in place, so a batch copies each node at most once.
//
// Limitation: entries of one prefix are a sorted slice scanned linearly, so
// many selectors sharing one destination prefix but differing in source,
// protocol or ports make lookups of that prefix linear in their number.

import (
	"encoding/binary"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
)

// key is an address as a 128-bit big-endian number; an IPv4 address sits
// in the top 32 bits.
type key struct{ hi, lo uint64 }

// addrKey returns a's key.
func addrKey(a netip.Addr) key {
	if a.Is4() {
		b := a.As4()
		return key{hi: uint64(binary.BigEndian.Uint32(b[:])) << 32}
	}
	b := a.As16()
	return key{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// mask keeps the first n bits of k.
func (k key) mask(n uint8) key {
	switch {
	case n == 0:
		return key{}
	case n <= 64:
		return key{hi: k.hi &^ (^uint64(0) >> n)}
	default:
		return key{hi: k.hi, lo: k.lo &^ (^uint64(0) >> (n - 64))}
	}
}

// bit returns bit i of k, counting from the most significant (i < 128).
func (k key) bit(i uint8) uint8 {
	if i < 64 {
		return uint8(k.hi >> (63 - i) & 1)
	}
	return uint8(k.lo >> (127 - i) & 1)
}

// commonBits returns how many leading bits a and b share.
func commonBits(a, b key) uint8 {
	if x := a.hi ^ b.hi; x != 0 {
		return uint8(bits.LeadingZeros64(x))
	}
	return 64 + uint8(bits.LeadingZeros64(a.lo^b.lo))
}

// family indexes snapshot.out: 0 for IPv4, 1 for IPv6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// entry is one selector of one outbound SA, minus the destination prefix
// that its node stands for.
type entry struct {
	src     key // masked
	srcBits uint8
	proto   uint8
	sport   uint16
	dport   uint16
	sa      *SA
}

// match reports whether the flow (source key fk, protocol and ports in f)
// matches e.
func (e *entry) match(fk key, f *Flow) bool {
	if e.srcBits != 0 && fk.mask(e.srcBits) != e.src {
		return false
	}
	return matchL4(e.proto, e.sport, e.dport, f)
}

// cmpEntries orders entries from most to least specific (cmpSpecific),
// then newest (higher handle) first.
func cmpEntries(a, b entry) int {
	if c := cmpSpecific(a, b); c != 0 {
		return c
	}
	switch {
	case a.sa.Handle > b.sa.Handle:
		return -1
	case a.sa.Handle < b.sa.Handle:
		return 1
	}
	return 0
}

// cmpSpecific orders entries of one destination prefix from most to least
// specific: longer source prefix, then protocol set, then more ports set.
func cmpSpecific(a, b entry) int {
	if a.srcBits != b.srcBits {
		return int(b.srcBits) - int(a.srcBits)
	}
	ap, bp := a.proto != 0, b.proto != 0
	if ap != bp {
		if ap {
			return -1
		}
		return 1
	}
	if an, bn := nports(a), nports(b); an != bn {
		return bn - an
	}
	return 0
}

func nports(e entry) int {
	n := 0
	if e.sport != 0 {
		n++
	}
	if e.dport != 0 {
		n++
	}
	return n
}

// node is a trie node: the destination prefix (k, bits), its entries and
// the children whose prefixes extend it by a 0 or a 1 bit at position bits.
type node struct {
	k     key
	bits  uint8
	child [2]*node
	ents  []entry
	gen   uint64 // the write that created or copied this node
}

// outEntries yields, per selector of sa, its family, destination key and
// prefix length, and entry; a selector with both prefixes zero
// yields one entry in each family.
func outEntries(sa *SA, yield func(fam int, k key, bits uint8, e entry)) {
	for i := range sa.sels {
		s := &sa.sels[i]
		e := entry{proto: s.Proto, sport: s.SrcPort, dport: s.DstPort, sa: sa}
		if s.Src.IsValid() {
			e.srcBits = uint8(s.Src.Bits())
			e.src = addrKey(s.Src.Addr())
		}
		switch {
		case s.Dst.IsValid():
			yield(family(s.Dst.Addr()), addrKey(s.Dst.Addr()), uint8(s.Dst.Bits()), e)
		case s.Src.IsValid():
			yield(family(s.Src.Addr()), key{}, 0, e)
		default:
			yield(0, key{}, 0, e)
			yield(1, key{}, 0, e)
		}
	}
}

// own returns n itself if the current write created or copied it, else a
// copy (with its own entries slice) stamped with the write's generation.
func (x *txn) own(n *node) *node {
	if n.gen == x.gen {
		return n
	}
	c := *n
	c.gen = x.gen
	c.ents = slices.Clone(n.ents)
	return &c
}

// trieInsert returns the trie n with e added under the prefix (k, b).
func (x *txn) trieInsert(n *node, k key, b uint8, e entry) *node {
	if n == nil {
		return &node{k: k, bits: b, ents: []entry{e}, gen: x.gen}
	}
	c := min(commonBits(n.k, k), n.bits, b)
	switch {
	case c == n.bits && c == b:
		n = x.own(n)
		i, _ := slices.BinarySearchFunc(n.ents, e, cmpEntries)
		n.ents = slices.Insert(n.ents, i, e)
		return n
	case c == n.bits:
		n = x.own(n)
		d := k.bit(n.bits)
		n.child[d] = x.trieInsert(n.child[d], k, b, e)
		return n
	case c == b:
		nn := &node{k: k, bits: b, ents: []entry{e}, gen: x.gen}
		nn.child[n.k.bit(b)] = n
		return nn
	default:
		br := &node{k: k.mask(c), bits: c, gen: x.gen}
		br.child[k.bit(c)] = &node{k: k, bits: b, ents: []entry{e}, gen: x.gen}
		br.child[n.k.bit(c)] = n
		return br
	}
}

// trieRemove returns the trie n without sa's entries under the prefix
// (k, b); nodes left without entries and with fewer than two children
// disappear.
func (x *txn) trieRemove(n *node, k key, b uint8, sa *SA) *node {
	if n == nil || n.bits > b || k.mask(n.bits) != n.k {
		return n
	}
	if n.bits == b {
		if !slices.ContainsFunc(n.ents, func(e entry) bool { return e.sa == sa }) {
			return n
		}
		n = x.own(n)
		n.ents = slices.DeleteFunc(n.ents, func(e entry) bool { return e.sa == sa })
		return compact(n)
	}
	d := k.bit(n.bits)
	c := x.trieRemove(n.child[d], k, b, sa)
	if c == n.child[d] {
		return n
	}
	n = x.own(n)
	n.child[d] = c
	return compact(n)
}

// compact drops a node that holds no entries and joins fewer than two
// subtries.
func compact(n *node) *node {
	if len(n.ents) > 0 || (n.child[0] != nil && n.child[1] != nil) {
		return n
	}
	if n.child[0] != nil {
		return n.child[0]
	}
	return n.child[1]
}

// pick returns the SA that carries flow f (source key sk) among ents,
// entries of one destination prefix in cmpEntries order, or nil: of the
// most specific entries that match and are not deleted, the one in the
// best state (see state), the newest of those. Several SAs with the same
// selectors are a rekey in progress: like the kernel, which prefers a
// valid, not dying, newest state, vnic sends on the new SA while the old
// one is still installed, and never on an SA that cannot send while
// another can. It does not allocate.
func pick(ents []entry, sk key, f *Flow) *SA {
	var first *entry
	var best *SA
	bestState := stateCannotSend + 1
	for i := range ents {
		e := &ents[i]
		if first != nil && cmpSpecific(*e, *first) != 0 {
			break
		}
		if !e.match(sk, f) || e.sa.dead.Load() {
			continue
		}
		if first == nil {
			first = e
		}
		if st := e.sa.state(); st < bestState {
			best, bestState = e.sa, st
			if st == stateGood {
				break
			}
		}
	}
	return best
}

// Outbound SA states, best first, as pick ranks them.
const (
	stateGood       = iota
	stateDying      // soft lifetime reached or deletion requested
	stateCannotSend // hard lifetime reached or sequence numbers exhausted
)

// state returns the outbound SA's state for pick.
func (sa *SA) state() int {
	switch {
	case sa.HardExpired.Load() || sa.Out != nil && sa.Out.Remaining() == 0:
		return stateCannotSend
	case sa.SoftExpired.Load() || sa.DeleteRequested.Load():
		return stateDying
	}
	return stateGood
}

// trieLookup returns the SA that pick chooses at the longest destination
// prefix in the trie n (f's family) that has one; dk is f.Dst's key. It
// does not allocate.
func trieLookup(n *node, dk key, f *Flow) *SA {
	sk := addrKey(f.Src)
	var best *SA
	for n != nil && dk.mask(n.bits) == n.k {
		if sa := pick(n.ents, sk, f); sa != nil {
			best = sa
		}
		if n.bits >= 128 {
			break
		}
		n = n.child[dk.bit(n.bits)]
	}
	return best
}

// hostShardOf returns the host-index shard of the destination key k.
func hostShardOf(k key) uint32 {
	return uint32((k.hi ^ k.lo) * 0x9E3779B97F4A7C15 >> (64 - shardBits))
}

// hostShard returns the host-index shard of family fam that holds k, in the
// snapshot being built, cloned for this write if it was not yet.
func (x *txn) hostShard(fam int, k key) map[key][]entry {
	i := hostShardOf(k)
	m := x.s.host[fam][i]
	if !x.hostOwned[fam][i] {
		if m == nil {
			m = make(map[key][]entry)
		} else {
			m = maps.Clone(m)
		}
		x.s.host[fam][i] = m
		x.hostOwned[fam][i] = true
	}
	return m
}

// outAdd indexes the outbound SA sa under each of its selectors.
func (x *txn) outAdd(sa *SA) {
	outEntries(sa, func(fam int, k key, b uint8, e entry) {
		if b != fullBits[fam] {
			x.s.out[fam] = x.trieInsert(x.s.out[fam], k, b, e)
			return
		}
		m := x.hostShard(fam, k)
		old := m[k]
		i, _ := slices.BinarySearchFunc(old, e, cmpEntries)
		n := make([]entry, 0, len(old)+1)
		n = append(append(append(n, old[:i]...), e), old[i:]...)
		m[k] = n
	})
}

// outRemove removes the outbound SA sa from the index.
func (x *txn) outRemove(sa *SA) {
	outEntries(sa, func(fam int, k key, b uint8, _ entry) {
		if b != fullBits[fam] {
			x.s.out[fam] = x.trieRemove(x.s.out[fam], k, b, sa)
			return
		}
		if !slices.ContainsFunc(x.s.host[fam][hostShardOf(k)][k], func(e entry) bool { return e.sa == sa }) {
			return // a second selector with the same destination
		}
		m := x.hostShard(fam, k)
		n := slices.DeleteFunc(slices.Clone(m[k]), func(e entry) bool { return e.sa == sa })
		if len(n) == 0 {
			delete(m, k)
		} else {
			m[k] = n
		}
	})
}

// fullBits is the address length of each family.
var fullBits = [2]uint8{32, 128}

// outLookup returns the outbound SA for f, whose addresses are valid and
// of one family: the one pick chooses among the most specific that match.
// It does not allocate.
func (s *snapshot) outLookup(f *Flow) *SA {
	fam := family(f.Dst)
	dk := addrKey(f.Dst)
	if ents := s.host[fam][hostShardOf(dk)][dk]; len(ents) > 0 {
		if sa := pick(ents, addrKey(f.Src), f); sa != nil {
			return sa
		}
	}
	return trieLookup(s.out[fam], dk, f)
}
