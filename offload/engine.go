package offload

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"vnic/event"
	"vnic/grace"
	"vnic/ipfrag"
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
	// SendBatch sends pkts, sets failed[i] (len(failed) >= len(pkts))
	// to whether pkts[i] failed to go, and returns how many went and the
	// first error.
	SendBatch(pkts [][]byte, failed []bool) (sent int, err error)
}

// Options tune an Engine.
type Options struct {
	// PassUnknownSPI passes ESP packets for which no inbound SA exists up
	// to the device unprocessed, as NDIS does, instead of dropping them.
	PassUnknownSPI bool
	// CryptoEventInterval is the least time between two CryptoError
	// events for one SA and counter (1 s when zero).
	CryptoEventInterval time.Duration
	// CryptoWorkers is how many goroutines RunCrypto starts to seal and
	// open packets in parallel with the loops (none when zero: each loop
	// does its own cryptography).
	CryptoWorkers int
}

// maxPacket is the largest packet a device read returns: vnic0's MTU can
// be raised at any time up to the IP limit, and a buffer too small for a
// read is an error (or, for a segmented one, a panic) in the TUN layer.
const maxPacket = 65535

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

	drops  [sadb.NumReasons]atomic.Uint64
	crypto [ndis.CryptoInvalidProtocol + 1]atomic.Uint64
	counts [numCounts]atomic.Uint64

	errMu   sync.Mutex
	errSeen map[errKey]*errState

	// keepalives is the NAT keepalive state of outbound ESP-in-UDP SAs;
	// only RunTimers uses it.
	keepalives map[sadb.Handle]*keepalive

	// work carries ranges of packets to the crypto workers.
	work chan cryptoRange
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
	cntReadErrors
	cntOutKeepalives
	numCounts
)

var countNames = [numCounts]string{
	"InPackets", "InBytes", "OutPackets", "OutBytes",
	"VnicInNatKeepalive", "VnicInIkeDropped", "VnicInPassedUp", "VnicOutSendError",
	"VnicOutReadError", "VnicOutNatKeepalive",
}

type errKey struct {
	h sadb.Handle
	r sadb.Reason
}

// errState is the rate limit of one SA and counter's CryptoError events.
// Its fields are guarded by Engine.errMu.
type errState struct {
	last    time.Time // when the last event went
	pending uint64    // packets that failed since, not yet reported
	// flush reports pending once the interval after last is over, so
	// that the count of a burst is sent even when no error follows it;
	// armed says it is set to fire.
	flush *time.Timer
	armed bool
	// The SA's and the latest error's fields of the event (the SA itself
	// is not kept: a deleted one must be let go).
	dir string
	spi uint32
	oe  *Error
}

// NewEngine returns an engine over table that publishes on bus.
func NewEngine(table *sadb.Table, bus *event.Bus, log *slog.Logger, opts Options) *Engine {
	if opts.CryptoEventInterval == 0 {
		opts.CryptoEventInterval = time.Second
	}
	e := &Engine{table: table, bus: bus, log: log, opts: opts, errSeen: map[errKey]*errState{},
		keepalives: map[sadb.Handle]*keepalive{},
		work:       make(chan cryptoRange, 4*opts.CryptoWorkers)}
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
	b := &outBatch{jobs: make([]sealJob, 0, n), bufs: make([][]byte, 0, n), sizes: make([]int, 0, n)}
	failed := make([]bool, n)
	out := make([][]byte, 0, n)
	for i := range bufs {
		bufs[i] = make([]byte, Headroom+maxPacket+Tailroom)
	}
	// IP fragments (IPv4 and IPv6) that transport-mode SAs would carry
	// are reassembled first: ESP protects whole datagrams there (RFC
	// 4303 §3.3.4).
	b.reasm = ipfrag.NewReassembler(ipfrag.Config{Headroom: Headroom, Tailroom: Tailroom})
	// Each batch is a grace section: an SA deleted meanwhile keeps its
	// keys until the batch is sent.
	reader := e.table.NewReader()
	defer reader.Close()
	for {
		count, err := dev.Read(bufs, sizes, Headroom)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// A super-packet with more segments than a batch holds:
			// the first count came through, the rest is lost (TCP
			// sends it again). Anything else means the device is gone.
			if !errors.Is(err, wgtun.ErrTooManySegments) {
				return err
			}
			e.counts[cntReadErrors].Add(1)
		}
		b.jobs, b.bufs, b.sizes, out = b.jobs[:0], b.bufs[:0], b.sizes[:0], out[:0]
		reader.Enter()
		if b.reasm.Len() > 0 {
			b.now = time.Now()
			if _, n := b.reasm.Expire(b.now); n > 0 {
				e.dropN(ErrFragTimeout, uint64(n))
			}
		} else {
			b.now = time.Time{}
		}
		for i := range count {
			e.outbound(b, bufs[i], Headroom, Headroom+sizes[i])
		}
		e.cryptAll(b, len(b.jobs), &b.done)
		for i, j := range b.jobs {
			out = append(out, b.bufs[i][j.Start:j.End])
		}
		if len(out) > 0 {
			// Each packet counts as sent or as a send error; failed
			// says which, so the error itself is not needed. (The
			// SA's counters took the packet when it was numbered.)
			_, err := wire.SendBatch(out, failed)
			var sent, bytes uint64
			for i, f := range failed[:len(out)] {
				if !f {
					sent++
					bytes += uint64(b.sizes[i])
				}
			}
			e.counts[cntOutPackets].Add(sent)
			e.counts[cntOutBytes].Add(bytes)
			if n := uint64(len(out)) - sent; n > 0 {
				e.counts[cntSendErrors].Add(n)
				e.logSendErrors(b, failed[:len(out)], err)
			}
		}
		reader.Exit()
		for _, d := range b.whole {
			b.reasm.Release(d)
		}
		clear(b.jobs) // let deleted SAs go
		b.whole = b.whole[:0]
	}
}

// logSendErrors logs, at debug, the packets of a batch that the underlay
// did not send, with their SAs.
func (e *Engine) logSendErrors(b *outBatch, failed []bool, err error) {
	if !e.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for i, f := range failed {
		if f {
			sa := b.jobs[i].sa
			e.log.Debug("outbound packet not sent", "counter", countNames[cntSendErrors], "sa", sa.Handle,
				"spi", sa.Config.SPI, "dst", sa.Config.Dst, "bytes", b.jobs[i].Len(), "err", err)
		}
	}
}

// outBatch holds the packets of one device read between encapBegin and
// the send: jobs[i] is a packet in bufs[i], sizes[i] bytes long before
// encapsulation.
type outBatch struct {
	jobs  []sealJob
	bufs  [][]byte
	sizes []int
	done  sync.WaitGroup
	// reasm reassembles the IP fragments of transport-mode SAs; whole
	// holds the datagrams it completed in this batch (in its buffers,
	// given back after the send); now is the batch's time once a
	// fragment needed it.
	reasm *ipfrag.Reassembler
	whole []ipfrag.Datagram
	now   time.Time
}

func (b *outBatch) crypt(lo, hi int) {
	for i := lo; i < hi; i++ {
		b.jobs[i].seal(b.bufs[i])
	}
}

// outbound numbers one plaintext packet and writes its headers for its
// outbound SA, adding it to the batch; the cryptography is left to the
// batch. An IP fragment for a transport-mode SA waits for the rest of
// its datagram, which goes once whole.
func (e *Engine) outbound(b *outBatch, buf []byte, start, end int) {
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
	if sa.Config.Mode == sadb.Transport && ipfrag.IsFragment(buf[start:end]) {
		d, ok := e.reassemble(b, sa, buf[start:end])
		if !ok {
			return
		}
		// The whole datagram, its ports known now, may belong to
		// another SA than its fragment did.
		buf, start, end = d.Buf, d.Start, d.End
		if f, ok = FlowOf(buf[start:end]); !ok {
			e.drop(sa, ErrBadPlaintext)
			return
		}
		if sa = e.table.LookupOutbound(f); sa == nil {
			e.drop(nil, ErrNoOutSA)
			return
		}
	}
	j, ev, err := encapBegin(sa, buf, start, end)
	if _, ok := e.settle(sa, j.Span, ev, err); ok {
		b.jobs = append(b.jobs, j)
		b.bufs = append(b.bufs, buf)
		b.sizes = append(b.sizes, end-start)
	}
}

// reassemble gives an IP fragment for the transport-mode SA sa to the
// batch's Reassembler, and returns the datagram it completed, if it did.
// Fragments it drops are counted on sa, and with them those of their
// datagram held until then.
func (e *Engine) reassemble(b *outBatch, sa *sadb.SA, frag []byte) (ipfrag.Datagram, bool) {
	if b.now.IsZero() {
		b.now = time.Now()
	}
	d, res, held := b.reasm.Add(frag, b.now)
	switch res {
	case ipfrag.Complete:
		b.whole = append(b.whole, d)
		return d, true
	case ipfrag.Invalid:
		e.dropOnSA(sa, ErrFragInvalid, uint64(held)+1)
	case ipfrag.Full:
		e.dropOnSA(sa, ErrFragFull, uint64(held)+1)
	}
	return ipfrag.Datagram{}, false
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
// a batch, then Flush, which opens the batch's packets (in parallel when
// the engine has crypto workers) and writes the plaintext packets to the
// device in one batched write, in the order they were added (so that the
// device can coalesce them). Not safe for concurrent use: give each reader
// its own.
type Receiver struct {
	e      *Engine
	dev    TUN
	pkts   []inPacket
	out    [][]byte
	done   sync.WaitGroup
	reader *grace.Reader // a batch, from its first Add to Flush, is a section
}

// inPacket is a received packet between Add and Flush.
type inPacket struct {
	sa    *sadb.SA // nil: an unknown SPI passed up unprocessed
	h     Header
	buf   []byte
	start int
	seq   uint64
	err   error // from decapOpen
}

// NewReceiver returns a Receiver that writes to dev.
func (e *Engine) NewReceiver(dev TUN) *Receiver {
	return &Receiver{e: e, dev: dev, reader: e.table.NewReader()}
}

// Close unregisters the Receiver from the SA table's grace periods; it
// must not be used after.
func (r *Receiver) Close() { r.reader.Close() }

// Add checks one underlay packet, buf[start:end], up to its cryptography
// and queues it for Flush. buf must stay untouched until Flush.
func (r *Receiver) Add(buf []byte, start, end int) {
	if !r.reader.InSection() {
		r.reader.Enter()
	}
	e := r.e
	h, kind, err := Parse(buf, start, end)
	if err != nil {
		e.drop(nil, err)
		return
	}
	switch kind {
	case KindKeepalive:
		e.counts[cntKeepalives].Add(1)
		return
	case KindIKE:
		e.counts[cntIKE].Add(1)
		return
	}
	sa := e.table.LookupInbound(h.SPI, h.Dst)
	if sa == nil {
		if !e.opts.PassUnknownSPI {
			e.drop(nil, ErrNoSA)
			return
		}
		if start < tunOffset {
			e.drop(nil, ErrNoRoomIn)
			return
		}
		e.counts[cntPassedUp].Add(1)
		fixChecksums(buf[start:h.End], &h)
		r.pkts = append(r.pkts, inPacket{h: h, buf: buf, start: start})
		return
	}
	seq, err := decapBegin(sa, &h, buf)
	if err != nil {
		e.settle(sa, Span{}, 0, err)
		return
	}
	r.pkts = append(r.pkts, inPacket{sa: sa, h: h, buf: buf, start: start, seq: seq})
}

// fixChecksums makes the checksums of an underlay packet passed up to the
// device valid: the underlay rebuilds the outer headers of ESP-in-UDP
// without them (the kernel checked them on receipt), and the kernel would
// drop such a packet.
func fixChecksums(pkt []byte, h *Header) {
	if pkt[0]>>4 == 4 {
		ipv4(pkt).setChecksum()
		return
	}
	if h.UDP {
		setUDP6Checksum(ipv6(pkt), pkt[h.ipHdr:])
	}
}

func (r *Receiver) crypt(lo, hi int) {
	for i := lo; i < hi; i++ {
		if p := &r.pkts[i]; p.sa != nil {
			p.err = decapOpen(p.sa, &p.h, p.buf, p.seq)
		}
	}
}

// Flush opens the queued packets, finishes them in order and writes the
// plaintext packets to the device.
func (r *Receiver) Flush() {
	e := r.e
	e.cryptAll(r, len(r.pkts), &r.done)
	var bytes uint64
	for i := range r.pkts {
		p := &r.pkts[i]
		sp := Span{p.start, p.h.End}
		if p.sa != nil {
			var ev Event
			err := p.err
			if err == nil {
				sp, ev, err = decapEnd(p.sa, &p.h, p.buf, p.start, p.seq)
			}
			if _, ok := e.settle(p.sa, sp, ev, err); !ok {
				continue
			}
			if sp.Start < tunOffset {
				e.drop(nil, ErrNoRoomIn)
				continue
			}
		}
		r.out = append(r.out, p.buf[sp.Start-tunOffset:sp.End])
		bytes += uint64(sp.Len())
	}
	if len(r.out) > 0 {
		if _, err := r.dev.Write(r.out, tunOffset); err != nil {
			e.dropN(ErrDeviceWrite, uint64(len(r.out)))
		} else {
			e.counts[cntInPackets].Add(uint64(len(r.out)))
			e.counts[cntInBytes].Add(bytes)
		}
	}
	clear(r.out)
	clear(r.pkts)
	r.out, r.pkts = r.out[:0], r.pkts[:0]
	if r.reader.InSection() {
		r.reader.Exit()
	}
}

// dropN counts n packets dropped for a reason that is not an SA's.
func (e *Engine) dropN(oe *Error, n uint64) {
	e.drops[oe.Reason].Add(n)
}

// dropOnSA counts n outbound packets of sa dropped for oe, globally and on
// sa, and logs them at debug.
func (e *Engine) dropOnSA(sa *sadb.SA, oe *Error, n uint64) {
	e.drops[oe.Reason].Add(n)
	sa.Counters.Drops[oe.Reason].Add(n)
	e.logDrop(sa, oe, n)
}

// logDrop logs, at debug, outbound packets of sa dropped because they
// could not be sent as they are: too large, or fragments that never made
// a datagram.
func (e *Engine) logDrop(sa *sadb.SA, oe *Error, n uint64) {
	if !e.log.Enabled(context.Background(), slog.LevelDebug) {
		return // no arguments built for nothing
	}
	e.log.Debug("outbound packets dropped", "counter", oe.Reason.String(), "reason", oe.msg, "packets", n,
		"sa", sa.Handle, "spi", sa.Config.SPI, "dst", sa.Config.Dst)
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
		if oe == ErrTooBig {
			e.logDrop(sa, oe, 1)
		}
	}
}

// cryptoEvent publishes a CryptoError event, at most one per SA and
// counter per interval, carrying how many packets it stands for. The
// errors that come within the interval after an event are reported
// together when it is over: by the next error, or by the state's timer if
// none comes.
func (e *Engine) cryptoEvent(sa *sadb.SA, oe *Error) {
	now := time.Now()
	k := errKey{sa.Handle, oe.Reason}
	e.errMu.Lock()
	st := e.errSeen[k]
	if st == nil {
		st = &errState{dir: sa.Config.Direction.String(), spi: sa.Config.SPI}
		e.errSeen[k] = st
	}
	st.pending++
	st.oe = oe
	if wait := e.opts.CryptoEventInterval - now.Sub(st.last); wait > 0 {
		if !st.armed {
			st.armed = true
			if st.flush == nil {
				st.flush = time.AfterFunc(wait, func() { e.flushCryptoEvent(k, st) })
			} else {
				st.flush.Reset(wait)
			}
		}
		e.errMu.Unlock()
		return
	}
	ev := st.take(k.h, now)
	e.errMu.Unlock()
	e.bus.Publish(ev)
}

// flushCryptoEvent is st's timer: it reports the errors still pending once
// the interval after the last event is over. A state forgotten because its
// SA was deleted still reports them: those packets did fail.
func (e *Engine) flushCryptoEvent(k errKey, st *errState) {
	now := time.Now()
	e.errMu.Lock()
	st.armed = false
	if st.pending == 0 { // a later error reported them
		e.errMu.Unlock()
		return
	}
	if wait := e.opts.CryptoEventInterval - now.Sub(st.last); wait > 0 {
		st.armed = true
		st.flush.Reset(wait)
		e.errMu.Unlock()
		return
	}
	ev := st.take(k.h, now)
	e.errMu.Unlock()
	e.bus.Publish(ev)
}

// take returns the event reporting st's pending errors, sent at now, and
// starts a new interval. Engine.errMu must be held.
func (st *errState) take(h sadb.Handle, now time.Time) event.Event {
	ev := event.Event{Type: event.CryptoError, Time: now, Handle: h, Direction: st.dir, SPI: st.spi,
		Reason: st.oe.msg, CryptoStatus: st.oe.Crypto.String(), Counter: st.oe.Reason.String(), Count: st.pending}
	st.pending, st.last = 0, now
	return ev
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
		reason := "outbound sequence numbers near exhaustion"
		if sa.Config.Direction == sadb.Inbound {
			reason = "the peer's sequence numbers near exhaustion"
		}
		e.RequestDeleteSA(sa, reason)
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

// RunTimers enforces time lifetimes and sends NAT keepalives on wire once
// a second until ctx ends.
func (e *Engine) RunTimers(ctx context.Context, wire Wire) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.checkLifetimes(now)
			e.natKeepalives(now, wire)
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
	// Forget rate-limit state of SAs that are gone (an armed timer still
	// reports what is pending).
	e.errMu.Lock()
	for k := range e.errSeen {
		if e.table.Get(k.h) == nil {
			delete(e.errSeen, k)
		}
	}
	e.errMu.Unlock()
}
