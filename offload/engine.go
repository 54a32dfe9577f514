package offload

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"vnic/event"
	"vnic/ndis"
	"vnic/sadb"
)

// TUN is the device side of the engine: golang.zx2c4.com/wireguard/tun's
// Device, or an in-memory one in tests.
type TUN interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
}

// Wire is the underlay side: it sends whole outer packets, in batches.
type Wire interface {
	SendBatch(pkts [][]byte) error
}

// Options tune an Engine.
type Options struct {
	// MTU is the largest plaintext packet the device hands over.
	MTU int
	// PassUnknownSPI passes ESP packets for which no inbound SA exists up
	// to the device unprocessed, as NDIS does, instead of dropping them.
	PassUnknownSPI bool
	// CryptoEventInterval is the least time between two CryptoError
	// events for one SA and counter (1 s when zero).
	CryptoEventInterval time.Duration
}

// tunOffset is where a decrypted packet must start in the buffer handed
// to TUN.Write: room for the virtio-net header.
const tunOffset = 16

// Engine runs vnic's packet loops: vnic0 to the underlay through the
// outbound SAs, and the underlay to vnic0 through the inbound SAs.
type Engine struct {
	table *sadb.Table
	bus   *event.Bus
	log   *slog.Logger
	opts  Options

	// inflight is held for reading while a batch of packets is processed;
	// sadb's Delete takes it for writing (Quiesce) before it wipes keys.
	inflight sync.RWMutex

	drops  [sadb.NumReasons]atomic.Uint64
	crypto [ndis.CryptoInvalidProtocol + 1]atomic.Uint64
	counts [numCounts]atomic.Uint64

	errMu   sync.Mutex
	errSeen map[errKey]*errState
}

// Engine-wide counters that are not drops.
const (
	cntInPackets = iota
	cntInBytes
	cntOutPackets
	cntOutBytes
	cntKeepalives
	cntIKE
	cntPassedUp
	cntSendErrors
	numCounts
)

var countNames = [numCounts]string{
	"InPackets", "InBytes", "OutPackets", "OutBytes",
	"VnicInNatKeepalive", "VnicInIkeDropped", "VnicInPassedUp", "VnicOutSendError",
}

type errKey struct {
	h sadb.Handle
	r sadb.Reason
}

type errState struct {
	last    time.Time
	pending uint64
}

// NewEngine returns an engine over table that publishes on bus.
func NewEngine(table *sadb.Table, bus *event.Bus, log *slog.Logger, opts Options) *Engine {
	if opts.CryptoEventInterval == 0 {
		opts.CryptoEventInterval = time.Second
	}
	e := &Engine{table: table, bus: bus, log: log, opts: opts, errSeen: map[errKey]*errState{}}
	table.Quiesce = func() {
		// Taking the write lock waits for every batch in flight; nothing
		// needs doing while it is held.
		e.inflight.Lock()
		e.inflight.Unlock() //lint:ignore SA2001 the lock is the grace period
	}
	return e
}

// Stats returns the engine's counters by name: the xfrm_stat drop names,
// the NDIS CryptoStatus names and the packet totals.
func (e *Engine) Stats() map[string]uint64 {
	m := make(map[string]uint64, int(sadb.NumReasons)+len(e.crypto)+numCounts)
	for r := range sadb.NumReasons {
		m[r.String()] = e.drops[r].Load()
	}
	for c := range e.crypto {
		if c != int(ndis.CryptoSuccess) {
			m[ndis.CryptoStatus(c).String()] = e.crypto[c].Load()
		}
	}
	for i, n := range countNames {
		m[n] = e.counts[i].Load()
	}
	return m
}

// RunOutbound reads plaintext packets from dev in batches, protects each
// with its outbound SA and sends the batch on wire, until ctx ends or dev
// fails.
func (e *Engine) RunOutbound(ctx context.Context, dev TUN, wire Wire) error {
	n := dev.BatchSize()
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	out := make([][]byte, 0, n)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+e.opts.MTU+Tailroom)
	}
	for {
		count, err := dev.Read(bufs, sizes, Headroom)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		out = out[:0]
		var bytes uint64
		e.inflight.RLock()
		for i := range count {
			if sp, ok := e.outbound(bufs[i], Headroom, Headroom+sizes[i]); ok {
				out = append(out, bufs[i][sp.Start:sp.End])
				bytes += uint64(sizes[i])
			}
		}
		if len(out) > 0 {
			if err := wire.SendBatch(out); err != nil {
				e.counts[cntSendErrors].Add(1)
			}
		}
		e.inflight.RUnlock()
		e.counts[cntOutPackets].Add(uint64(len(out)))
		e.counts[cntOutBytes].Add(bytes)
	}
}

// outbound protects one plaintext packet and returns where the outer packet
// lies in buf.
func (e *Engine) outbound(buf []byte, start, end int) (Span, bool) {
	f, ok := FlowOf(buf[start:end])
	if !ok {
		e.drop(nil, ErrBadPlaintext)
		return Span{}, false
	}
	sa := e.table.LookupOutbound(f)
	if sa == nil {
		e.drop(nil, ErrNoOutSA)
		return Span{}, false
	}
	sp, ev, err := Encapsulate(sa, buf, start, end)
	return e.settle(sa, sp, ev, err)
}

// settle publishes what processing a packet with sa made happen and counts
// the packet if it was dropped.
func (e *Engine) settle(sa *sadb.SA, sp Span, ev Event, err error) (Span, bool) {
	if ev != 0 {
		e.publish(sa, ev)
	}
	if err != nil {
		e.drop(sa, err)
		return Span{}, false
	}
	return sp, true
}

// Receiver handles the packets of one underlay reader: Add each packet of
// a batch, then Flush, which writes the plaintext packets to the device in
// one batched write (so that the device can coalesce them). Not safe for
// concurrent use: give each reader its own.
type Receiver struct {
	e      *Engine
	dev    TUN
	out    [][]byte
	bytes  uint64
	locked bool
}

// NewReceiver returns a Receiver that writes to dev.
func (e *Engine) NewReceiver(dev TUN) *Receiver {
	return &Receiver{e: e, dev: dev}
}

// Add verifies and decrypts one underlay packet, buf[start:end], and
// queues the plaintext for Flush. buf must stay untouched until Flush.
func (r *Receiver) Add(buf []byte, start, end int) {
	if !r.locked {
		r.e.inflight.RLock()
		r.locked = true
	}
	sp, ok := r.e.inbound(buf, start, end)
	if !ok {
		return
	}
	if sp.Start < tunOffset {
		r.e.drop(nil, ErrNoRoomIn)
		return
	}
	r.out = append(r.out, buf[sp.Start-tunOffset:sp.End])
	r.bytes += uint64(sp.Len())
}

// Flush writes the queued packets to the device.
func (r *Receiver) Flush() {
	if len(r.out) > 0 {
		if _, err := r.dev.Write(r.out, tunOffset); err != nil {
			r.e.drop(nil, ErrDeviceWrite)
		} else {
			r.e.counts[cntInPackets].Add(uint64(len(r.out)))
			r.e.counts[cntInBytes].Add(r.bytes)
		}
	}
	clear(r.out)
	r.out, r.bytes = r.out[:0], 0
	if r.locked {
		r.e.inflight.RUnlock()
		r.locked = false
	}
}

// inbound parses and decapsulates one underlay packet and returns the
// plaintext packet to deliver, if any.
func (e *Engine) inbound(buf []byte, start, end int) (Span, bool) {
	h, kind, err := Parse(buf, start, end)
	if err != nil {
		e.drop(nil, err)
		return Span{}, false
	}
	switch kind {
	case KindKeepalive:
		e.counts[cntKeepalives].Add(1)
		return Span{}, false
	case KindIKE:
		e.counts[cntIKE].Add(1)
		return Span{}, false
	}
	sa := e.table.LookupInbound(h.SPI, h.Dst)
	if sa == nil {
		if e.opts.PassUnknownSPI {
			e.counts[cntPassedUp].Add(1)
			return Span{start, h.End}, true
		}
		e.drop(nil, ErrNoSA)
		return Span{}, false
	}
	sp, ev, err := Decapsulate(sa, &h, buf, start)
	return e.settle(sa, sp, ev, err)
}

// drop counts a dropped packet under its reason, globally and on its SA.
func (e *Engine) drop(sa *sadb.SA, err error) {
	var oe *Error
	if !errors.As(err, &oe) {
		oe = ErrMalformed
	}
	e.drops[oe.Reason].Add(1)
	if oe.Reason < sadb.OutError && oe.Crypto != ndis.CryptoSuccess {
		e.crypto[oe.Crypto].Add(1)
	}
	if sa != nil {
		sa.Counters.Drops[oe.Reason].Add(1)
		if oe.Reason < sadb.OutError && oe != ErrDummy {
			e.cryptoEvent(sa, oe)
		}
	}
}

// cryptoEvent publishes a CryptoError event, at most one per SA and
// counter per interval, carrying how many packets it stands for.
func (e *Engine) cryptoEvent(sa *sadb.SA, oe *Error) {
	now := time.Now()
	k := errKey{sa.Handle, oe.Reason}
	e.errMu.Lock()
	st := e.errSeen[k]
	if st == nil {
		st = &errState{}
		e.errSeen[k] = st
	}
	st.pending++
	if now.Sub(st.last) < e.opts.CryptoEventInterval {
		e.errMu.Unlock()
		return
	}
	n := st.pending
	st.pending, st.last = 0, now
	e.errMu.Unlock()
	e.bus.Publish(event.Event{Type: event.CryptoError, Time: now, Handle: sa.Handle,
		Direction: sa.Config.Direction.String(), SPI: sa.Config.SPI, Reason: oe.msg,
		CryptoStatus: oe.Crypto.String(), Counter: oe.Reason.String(), Count: n})
}

// publish turns a packet's events into OID-channel events.
func (e *Engine) publish(sa *sadb.SA, ev Event) {
	base := event.Event{Handle: sa.Handle, Direction: sa.Config.Direction.String(), SPI: sa.Config.SPI}
	if ev&EventSoftLifetime != 0 {
		x := base
		x.Type, x.Reason = event.SoftLifetime, "soft lifetime reached: rekey now"
		e.bus.Publish(x)
	}
	if ev&EventHardLifetime != 0 {
		x := base
		x.Type, x.Reason = event.HardLifetime, "hard lifetime reached: the SA processes no more packets"
		e.bus.Publish(x)
		e.RequestDeleteSA(sa, "hard lifetime reached")
	}
	if ev&EventSeqNearExhaustion != 0 {
		e.RequestDeleteSA(sa, "outbound sequence numbers near exhaustion")
	}
	if ev&EventESNAdvanced != 0 && sa.In != nil {
		x := base
		x.Type, x.SeqHigh = event.ESNAdvanced, uint32(sa.In.Top()>>32)
		e.bus.Publish(x)
	}
}

// RequestDeleteSA raises SaDeleteReq for sa and its twin, as the NDIS
// receive flag does: the event names the inbound SA (the one a received
// packet would carry the flag for) and its paired outbound SA. Both keep
// working until the host deletes them.
func (e *Engine) RequestDeleteSA(sa *sadb.SA, reason string) {
	in, out := sa, e.table.Paired(sa)
	if sa.Config.Direction == sadb.Outbound {
		in, out = out, sa
	}
	x := event.Event{Type: event.SaDeleteReq, Reason: reason}
	if in != nil {
		in.DeleteRequested.Store(true)
		x.Handle, x.Direction, x.SPI = in.Handle, in.Config.Direction.String(), in.Config.SPI
	}
	if out != nil {
		out.DeleteRequested.Store(true)
		if in == nil {
			x.Handle, x.Direction, x.SPI = out.Handle, out.Config.Direction.String(), out.Config.SPI
		} else {
			x.Pair = out.Handle
		}
	}
	e.bus.Publish(x)
}

// RunTimers enforces time lifetimes once a second until ctx ends.
func (e *Engine) RunTimers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.checkLifetimes(now)
		}
	}
}

func (e *Engine) checkLifetimes(now time.Time) {
	for _, sa := range e.table.List() {
		lt := &sa.Config.Lifetime
		age := now.Sub(sa.Added)
		var ev Event
		if lt.SoftAdd > 0 && age >= lt.SoftAdd && sa.SoftExpired.CompareAndSwap(false, true) {
			ev |= EventSoftLifetime
		}
		if lt.HardAdd > 0 && age >= lt.HardAdd && sa.HardExpired.CompareAndSwap(false, true) {
			ev |= EventHardLifetime
		}
		if ev != 0 {
			e.publish(sa, ev)
		}
	}
	// Forget rate-limit state of SAs that are gone.
	e.errMu.Lock()
	for k := range e.errSeen {
		if e.table.Get(k.h) == nil {
			delete(e.errSeen, k)
		}
	}
	e.errMu.Unlock()
}
