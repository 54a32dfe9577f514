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

// Wire is the underlay side: it sends a whole outer packet.
type Wire interface {
	Send(pkt []byte) error
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
		e.inflight.Lock()
		e.inflight.Unlock()
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
// with its outbound SA and sends it on wire, until ctx ends or dev fails.
func (e *Engine) RunOutbound(ctx context.Context, dev TUN, wire Wire) error {
	n := dev.BatchSize()
	bufs := make([][]byte, n)
	sizes := make([]int, n)
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
		e.inflight.RLock()
		for i := range count {
			e.outbound(bufs[i], Headroom, Headroom+sizes[i], wire)
		}
		e.inflight.RUnlock()
	}
}

func (e *Engine) outbound(buf []byte, start, end int, wire Wire) {
	f, ok := FlowOf(buf[start:end])
	if !ok {
		e.drop(nil, ErrBadPlaintext)
		return
	}
	sa := e.table.LookupOutbound(f)
	if sa == nil {
		e.drop(nil, ErrNoOutSA)
		return
	}
	sp, ev, err := Encapsulate(sa, buf, start, end)
	if ev != 0 {
		e.publish(sa, ev)
	}
	if err != nil {
		e.drop(sa, err)
		return
	}
	if err := wire.Send(buf[sp.Start:sp.End]); err != nil {
		e.counts[cntSendErrors].Add(1)
		return
	}
	e.counts[cntOutPackets].Add(1)
	e.counts[cntOutBytes].Add(uint64(end - start))
}

// Receiver returns the function that handles packets from the underlay
// for one reading goroutine: it decrypts each and writes it to dev.
func (e *Engine) Receiver(dev TUN) func(buf []byte, start, end int) {
	out := make([][]byte, 1)
	return func(buf []byte, start, end int) {
		e.inflight.RLock()
		defer e.inflight.RUnlock()
		sp, ok := e.inbound(buf, start, end)
		if !ok {
			return
		}
		if sp.Start < tunOffset {
			e.drop(nil, ErrNoRoomIn)
			return
		}
		out[0] = buf[sp.Start-tunOffset : sp.End]
		if _, err := dev.Write(out, tunOffset); err != nil {
			e.drop(nil, ErrDeviceWrite)
			return
		}
		e.counts[cntInPackets].Add(1)
		e.counts[cntInBytes].Add(uint64(sp.Len()))
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
	if ev != 0 {
		e.publish(sa, ev)
	}
	if err != nil {
		e.drop(sa, err)
		return Span{}, false
	}
	return sp, true
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
