package sadb

// Design. Writers (ADD_SA, DELETE_SA, UPDATE_SA) serialise on Table.mu.
// Readers (the data path, Get, List) load one *snapshot with an atomic load
// and take no lock. A snapshot is immutable once published; a write builds
// the next one in a txn and publishes it with one atomic store per call (a
// whole ADD_SA batch becomes visible at once). To keep writes cheap with a
// million SAs, a snapshot is made of persistent parts that a write copies
// only where it changes them:
//
//   - in:     the inbound index, SPI -> SAs, in numShards immutable maps
//     (inbound.go);
//   - host, out: the outbound index: selectors whose destination is one
//     address in numShards immutable maps, the others in one path-copying
//     binary trie per address family keyed by destination prefix
//     (outbound.go);
//   - chunks: the handle index, chunks of consecutive handles (handles.go).
//
// The snapshot header itself (the shard arrays, 24 KiB) is copied once
// per write. Parts that the current write already copied (or created) are
// updated in place, so a batch copies each part at most once.
//
// Deletion: an SA's dead flag is set before the snapshot without it is
// published, and lookups skip dead SAs, so once Delete returns no lookup
// returns it, whichever snapshot it loaded. A packet that looked the SA up
// earlier can still hold it: the device must check Alive() before using the
// SA and drop the packet if it is false. Delete then waits for the packet
// loops that were in a batch (each a grace.Reader from NewReader) to finish
// it (an RCU grace period), and only then wipes the keys. The loops never
// wait for Delete.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"vnic/algo"
	"vnic/esn"
	"vnic/grace"
	"vnic/keyhist"
	"vnic/ndis"
)

// DefaultWarnAt is the default TableConfig.WarnAt: how many sequence numbers
// before the last usable one an outbound SA asks to be replaced
// (SaDeleteReq). 2^20 numbers last about a second at a million packets per
// second, time for an IKE daemon to rekey.
const DefaultWarnAt = 1 << 20

// newCipher builds an SA's cipher; tests substitute a cheap fake.
var newCipher = algo.New

// AddResult is the outcome of one element of an ADD_SA batch.
type AddResult struct {
	// Handle is the new SA's handle, 0 (the NDIS null handle) on failure.
	Handle Handle
	// Err is nil on success, else an *ndis.Error whose Status is the NDIS
	// status for this element and whose Element is its index in the
	// batch.
	Err error
}

// TableConfig is what a Table is built with; New takes it once and the
// table never changes it.
type TableConfig struct {
	// Capacity is SaOffloadCapacity: how many SAs the table holds at
	// most (below 0 counts as 0).
	Capacity int

	// WarnAt is how many sequence numbers before the last usable one an
	// outbound SA starts asking to be replaced (see esn.NewOutbound), and
	// an inbound SA's received numbers say its peer nears its end (see
	// SA.PeerNearExhaustion). 0 means DefaultWarnAt.
	WarnAt uint64

	// DefaultReplayWindow is the window of an inbound SA whose Config
	// gives none (ReplayWindow 0).
	DefaultReplayWindow int

	// UDPPort is the device's local ESP-in-UDP port (vnic up -udp-port);
	// 0 means DefaultUDPPort. The device has one ESP-in-UDP socket, bound
	// to it: every ESP-in-UDP packet leaves from this port and only
	// packets sent to it arrive. An ESP-in-UDP SA's local port (an
	// outbound SA's Encap.SrcPort, an inbound SA's Encap.DstPort)
	// defaults to it, and Add refuses an SA that gives another one.
	UDPPort uint16

	// Keys, when set, is asked before an outbound SA is added: Use
	// records the SA's keys, or refuses keys an outbound SA used before
	// (keyhist.History; nonces would repeat).
	Keys interface {
		Use(encKey, authKey []byte) error
	}

	// OnAdd, when set, is called after each ADD_SA that added SAs, with
	// them, once lookups find them: the device schedules their timers
	// from it. It runs under the table's write lock, so it must return
	// quickly and not call the table's writers; sas is the callee's.
	OnAdd func(sas []*SA)
	// OnDelete, when set, is called after each DELETE_SA that deleted
	// SAs, with them, once lookups no longer find them and while they
	// are still paired; OnUpdate after each UPDATE_SA that changed an
	// SA. Both run under the table's write lock, as OnAdd does.
	OnDelete func(sas []*SA)
	OnUpdate func(sa *SA)
}

// Table is the SA database of one device; create it with New. Its methods
// are safe for concurrent use; the lookups, Get, List, Len and Paired take
// no lock.
type Table struct {
	cfg TableConfig

	// readers are the packet loops: Delete waits out their sections
	// before it wipes keys.
	readers grace.Domain

	snap atomic.Pointer[snapshot]

	mu   sync.Mutex     // serialises writers; guards the fields below
	last Handle         // the last handle issued
	gen  uint64         // the last write's generation
	keys map[dupKey]*SA // (direction, SPI, destination) of every SA
}

// dupKey is what must be unique among SAs (NDIS: SPI, destination and
// direction).
type dupKey struct {
	dir Direction
	spi uint32
	dst netip.Addr
}

// snapshot is one immutable state of the table.
type snapshot struct {
	in     [numShards]map[uint32][]*SA   // inbound SAs by SPI, sharded
	host   [2][numShards]map[key][]entry // outbound host selectors by family, sharded
	out    [2]*node                      // outbound tries: IPv4, IPv6
	chunks []*chunk                      // SAs by handle
	base   uint64                        // chunk number of chunks[0]
	n      int                           // number of SAs
}

// txn is one write: the snapshot it builds and which of its parts it
// owns (copied or created by this write, hence changeable in place).
type txn struct {
	s           *snapshot
	gen         uint64
	inOwned     [numShards]bool
	hostOwned   [2][numShards]bool
	chunksOwned bool
	links       []*SA        // new SAs whose twin must point back at them
	pending     map[*SA]bool // twins that this write pairs
}

// New returns an empty table built with cfg.
func New(cfg TableConfig) *Table {
	cfg.Capacity = max(cfg.Capacity, 0)
	if cfg.WarnAt == 0 {
		cfg.WarnAt = DefaultWarnAt
	}
	t := &Table{cfg: cfg, keys: make(map[dupKey]*SA)}
	t.snap.Store(new(snapshot))
	return t
}

// begin starts a write. t.mu must be held.
func (t *Table) begin() *txn {
	t.gen++
	s := new(snapshot)
	*s = *t.snap.Load()
	return &txn{s: s, gen: t.gen}
}

// commit publishes the write's snapshot. t.mu must be held.
func (t *Table) commit(x *txn) {
	x.trimChunks()
	t.snap.Store(x.s)
	for _, sa := range x.links {
		if tw := sa.pair.Load(); tw != nil {
			tw.pair.Store(sa)
		}
	}
}

// NewReader registers a packet loop that looks SAs up: an SA it finds
// between the reader's Enter and Exit keeps its keys until that Exit, even
// if it is deleted meanwhile. Close the reader when the loop ends.
func (t *Table) NewReader() *grace.Reader { return t.readers.NewReader() }

// Config returns the configuration the table was built with (WarnAt
// filled in).
func (t *Table) Config() TableConfig { return t.cfg }

// Capacity returns SaOffloadCapacity.
func (t *Table) Capacity() int { return t.cfg.Capacity }

// Len returns the number of SAs held.
func (t *Table) Len() int { return t.snap.Load().n }

// Add offloads a batch of SAs (ADD_SA): one result per element, in order.
// The batch's status follows NDIS: success if any element was added, else
// the status of the first element's failure (NDIS_STATUS_INVALID_PARAMETER
// for an empty batch). A failed element gets the null handle and an
// *ndis.Error about it (its Element is the 0-based index in the batch); a
// full table fails the element with
// NDIS_STATUS_RESOURCES and does not stop the others. Add copies the
// configurations, keys and selectors included: the caller may reuse them.
// The elements added become visible to lookups together, when Add returns.
func (t *Table) Add(cfgs []Config) ([]AddResult, ndis.Status) {
	res := make([]AddResult, len(cfgs))
	if len(cfgs) == 0 {
		return res, ndis.StatusInvalidParameter
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.begin()
	now := time.Now()
	status := ndis.StatusSuccess
	var added []*SA
	for i := range cfgs {
		sa, err := t.addOne(x, &cfgs[i], now)
		if err != nil {
			e := ndis.AsError(err).At(i)
			res[i].Err = e
			if status == ndis.StatusSuccess {
				status = e.Status
			}
			continue
		}
		res[i].Handle = sa.Handle
		added = append(added, sa)
	}
	if len(added) == 0 {
		return res, status
	}
	t.commit(x)
	if t.cfg.OnAdd != nil {
		t.cfg.OnAdd(added)
	}
	return res, ndis.StatusSuccess
}

func invalid(format string, args ...any) error {
	return ndis.Errorf(ndis.StatusInvalidParameter, format, args...)
}

// addOne validates c and adds it to x; errors carry their NDIS status and
// do not name the element yet.
func (t *Table) addOne(x *txn, in *Config, now time.Time) (*SA, error) {
	c, err := checkConfig(in, t.cfg.DefaultReplayWindow, t.cfg.UDPPort)
	if err != nil {
		return nil, err
	}
	k := dupKey{c.Direction, c.SPI, c.Dst}
	if old := t.keys[k]; old != nil {
		return nil, invalid("an %s SA with SPI %d (0x%08x) and destination %s already exists (handle %d)",
			c.Direction, c.SPI, c.SPI, addrString(c.Dst), old.Handle)
	}
	var twin *SA
	if c.Pair != 0 {
		twin = x.s.get(c.Pair)
		switch {
		case twin == nil:
			return nil, invalid("pair handle %d is unknown", c.Pair)
		case twin.Config.Direction == c.Direction:
			return nil, invalid("pair handle %d is also an %s SA: a pair needs the opposite direction", c.Pair, c.Direction)
		case twin.pair.Load() != nil || x.pending[twin]:
			return nil, invalid("SA %d is already paired", c.Pair)
		}
	}

	sa := &SA{Config: c, added: now.Sub(epoch), sels: effectiveSelectors(&c)}
	sa.all = slices.Contains(sa.sels, Selector{})
	if c.Direction == Outbound {
		low := c.InitialSeq
		if low == 0 {
			low = 1
		}
		sa.Out = esn.NewOutbound(c.Algo.ESN, uint64(c.SeqHigh)<<32|low, t.cfg.WarnAt)
	} else {
		w, err := esn.NewWindow(c.ReplayWindow, c.Algo.ESN, uint64(c.SeqHigh)<<32|c.InitialSeq)
		if err != nil {
			return nil, invalid("%v", err)
		}
		sa.In = w
		sa.peerWarnFrom = max(esn.WarnFrom(c.Algo.ESN, t.cfg.WarnAt), 1) // 0 would mean none
	}

	sa.Config.Algo.EncryptionKey = bytes.Clone(c.Algo.EncryptionKey)
	sa.Config.Algo.AuthenticationKey = bytes.Clone(c.Algo.AuthenticationKey)
	ciph, err := newCipher(sa.Config.Algo)
	if err == nil && ciph == nil {
		err = ndis.Errorf(ndis.StatusFailure, "the algorithm catalogue returned no cipher")
	}
	if err != nil {
		wipeKeys(sa)
		return nil, err
	}
	sa.Cipher = ciph

	if x.s.n >= t.cfg.Capacity {
		ciph.Wipe()
		wipeKeys(sa)
		return nil, ndis.Errorf(ndis.StatusResources, "device full: SaOffloadCapacity %d reached", t.cfg.Capacity)
	}
	if c.Direction == Outbound && t.cfg.Keys != nil {
		if err := t.cfg.Keys.Use(sa.Config.Algo.EncryptionKey, sa.Config.Algo.AuthenticationKey); err != nil {
			ciph.Wipe()
			wipeKeys(sa)
			st := ndis.StatusFailure
			if errors.Is(err, keyhist.ErrReused) {
				st = ndis.StatusInvalidParameter
			}
			return nil, ndis.Errorf(st, "%v", err)
		}
	}

	t.last++
	sa.Handle = t.last
	x.putHandle(sa)
	if c.Direction == Inbound {
		x.inAdd(sa)
	} else {
		x.outAdd(sa)
	}
	x.s.n++
	t.keys[k] = sa
	if twin != nil {
		sa.pair.Store(twin)
		x.links = append(x.links, sa)
		if x.pending == nil {
			x.pending = make(map[*SA]bool)
		}
		x.pending[twin] = true
	}
	return sa, nil
}

// remove takes sa out of every index of x and of the duplicate set.
func (t *Table) remove(x *txn, sa *SA) {
	x.dropHandle(sa)
	if sa.Config.Direction == Inbound {
		x.inRemove(sa)
	} else {
		x.outRemove(sa)
	}
	x.s.n--
	delete(t.keys, dupKey{sa.Config.Direction, sa.Config.SPI, sa.Config.Dst})
}

// wipeKeys zeroes the SA's copies of its keys.
func wipeKeys(sa *SA) {
	clear(sa.Config.Algo.EncryptionKey)
	clear(sa.Config.Algo.AuthenticationKey)
}

// Delete removes SAs by handle (DELETE_SA). When it returns no lookup
// returns them, they are marked dead (Alive is false for packets that
// already hold them), their pairing is undone (the twin stays, unpaired),
// and their keys are wiped: the Cipher's and the copies in Config.Algo.
// The result has one entry per handle: nil, or an *ndis.Error with
// NDIS_STATUS_INVALID_PARAMETER for an unknown handle (or one listed
// twice); the other handles are deleted regardless.
func (t *Table) Delete(handles []Handle) []error {
	errs := make([]error, len(handles))
	var gone []*SA
	t.mu.Lock()
	x := t.begin()
	for i, h := range handles {
		sa := x.s.get(h)
		if sa == nil {
			errs[i] = invalid("unknown handle %d", h)
			continue
		}
		// Dead before the new snapshot is published: a reader still
		// on the old one skips the SA from now on.
		sa.dead.Store(true)
		t.remove(x, sa)
		gone = append(gone, sa)
	}
	if len(gone) > 0 {
		t.commit(x)
		if t.cfg.OnDelete != nil {
			t.cfg.OnDelete(gone)
		}
	}
	for _, sa := range gone {
		if tw := sa.pair.Swap(nil); tw != nil {
			tw.pair.CompareAndSwap(sa, nil)
		}
	}
	t.mu.Unlock()
	// Unreachable and dead now: wait out packets in flight, then wipe.
	if len(gone) > 0 {
		t.readers.Wait()
	}
	for _, sa := range gone {
		if sa.Cipher != nil {
			sa.Cipher.Wipe()
		}
		wipeKeys(sa)
	}
	return errs
}

// UpdateESN sets the high-order 32 bits of an ESN SA (UPDATE_SA). An
// outbound SA continues from seqHigh<<32 (never backwards); an inbound SA's
// replay window moves its high bits forward to seqHigh. An unknown handle,
// an SPI that is not the SA's or an SA without ESN is an *ndis.Error with
// NDIS_STATUS_INVALID_PARAMETER, as NDIS specifies; so is a request to move
// either direction backwards.
func (t *Table) UpdateESN(h Handle, spi uint32, seqHigh uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sa := t.snap.Load().get(h)
	switch {
	case sa == nil:
		return invalid("unknown handle %d", h)
	case sa.Config.SPI != spi:
		return invalid("SA %d has SPI %d (0x%08x), not %d (0x%08x)", h, sa.Config.SPI, sa.Config.SPI, spi, spi)
	case !sa.Config.Algo.ESN:
		return invalid("SA %d does not use extended sequence numbers: it has no high-order bits to update", h)
	}
	if sa.Out != nil {
		err := sa.Out.SetHigh(seqHigh)
		switch {
		case err == nil:
			t.updated(sa)
			return nil
		case errors.Is(err, esn.ErrBackwards):
			// The next number is LastSeq(true)-Remaining()+1, which
			// is -Remaining() modulo 2^64.
			next := -sa.Out.Remaining()
			return invalid("outbound sequence numbers never go backwards: high bits are %d, asked for %d", uint32(next>>32), seqHigh)
		default:
			return invalid("SA %d: %v", h, err)
		}
	}
	if sa.In != nil {
		err := sa.In.SetHigh(seqHigh)
		switch {
		case errors.Is(err, esn.ErrWindowBackwards):
			return invalid("the replay window never moves back (numbers already received would be accepted again): high bits are %d, asked for %d", uint32(sa.In.Top()>>32), seqHigh)
		case err != nil:
			return invalid("SA %d: %v", h, err)
		}
	}
	t.updated(sa)
	return nil
}

// updated calls OnUpdate, if set, for sa.
func (t *Table) updated(sa *SA) {
	if t.cfg.OnUpdate != nil {
		t.cfg.OnUpdate(sa)
	}
}

// Get returns the SA with handle h, or nil. Lock-free.
func (t *Table) Get(h Handle) *SA { return t.snap.Load().get(h) }

// List returns all SAs ordered by handle. Lock-free; the slice is the
// caller's.
func (t *Table) List() []*SA { return t.snap.Load().list() }

// LookupInbound returns the inbound SA for an ESP packet with this SPI sent
// to dst, or nil: the SA with exactly this destination, else one whose
// destination is the wildcard. Deleted SAs are never returned. Lock-free;
// it does not allocate.
func (t *Table) LookupInbound(spi uint32, dst netip.Addr) *SA {
	return t.snap.Load().inLookup(spi, dst)
}

// LookupOutbound returns the outbound SA whose selector matches f most
// specifically, or nil: the longest destination prefix, then the longest
// source prefix, then a selector naming the protocol, then one naming more
// ports; among equally specific SAs (a rekey in progress) one that can
// send before one that cannot, one not dying before one dying, then the
// newest (see pick). f's addresses must be valid and of one family.
// Deleted SAs are never returned. Lock-free; it does not allocate.
func (t *Table) LookupOutbound(f Flow) *SA {
	if !f.Dst.IsValid() || !f.Src.IsValid() || f.Src.Is4() != f.Dst.Is4() {
		return nil
	}
	return t.snap.Load().outLookup(&f)
}

// Paired returns the SA paired with sa (its opposite-direction twin), or
// nil. Lock-free.
func (t *Table) Paired(sa *SA) *SA {
	if sa == nil {
		return nil
	}
	return sa.pair.Load()
}

// String returns "outbound" or "inbound".
func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// String returns "tunnel" or "transport".
func (m Mode) String() string {
	switch m {
	case Tunnel:
		return "tunnel"
	case Transport:
		return "transport"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// addrString prints an SA endpoint, the wildcard as "any".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "any"
	}
	return a.String()
}
