package device

import (
	"time"

	"vnic/event"
	"vnic/offload"
	"vnic/sadb"
)

type errKey struct {
	h sadb.Handle
	r sadb.Reason
}

// errState is the rate limit of one SA and counter's CryptoError events.
// Its fields are guarded by Device.errMu.
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
	oe  *offload.Error
}

// cryptoEvent publishes a CryptoError event, at most one per SA and
// counter per interval, carrying how many packets it stands for. The
// errors that come within the interval after an event are reported
// together when it is over: by the next error, or by the state's timer if
// none comes.
func (d *Device) cryptoEvent(sa *sadb.SA, oe *offload.Error) {
	now := time.Now()
	k := errKey{sa.Handle, oe.Reason}
	d.errMu.Lock()
	st := d.errSeen[k]
	if st == nil {
		st = &errState{dir: sa.Config.Direction.String(), spi: sa.Config.SPI}
		d.errSeen[k] = st
	}
	st.pending++
	st.oe = oe
	ev, ok := d.dueCryptoEvent(k, st, now)
	d.errMu.Unlock()
	if ok {
		d.bus.Publish(ev)
	}
}

// dueCryptoEvent returns the event reporting st's pending errors if the
// interval after its last event is over; otherwise it arms st's timer for
// when it is. Device.errMu must be held.
func (d *Device) dueCryptoEvent(k errKey, st *errState, now time.Time) (event.Event, bool) {
	if wait := d.cfg.CryptoEventInterval - now.Sub(st.last); wait > 0 {
		if !st.armed {
			st.armed = true
			if st.flush == nil {
				st.flush = time.AfterFunc(wait, func() { d.flushCryptoEvent(k, st) })
			} else {
				st.flush.Reset(wait)
			}
		}
		return event.Event{}, false
	}
	return st.take(k.h, now), true
}

// flushCryptoEvent is st's timer: it reports the errors still pending once
// the interval after the last event is over. A state forgotten because its
// SA was deleted still reports them: those packets did fail.
func (d *Device) flushCryptoEvent(k errKey, st *errState) {
	now := time.Now()
	d.errMu.Lock()
	st.armed = false
	if st.pending == 0 { // a later error reported them
		d.errMu.Unlock()
		return
	}
	ev, ok := d.dueCryptoEvent(k, st, now)
	d.errMu.Unlock()
	if ok {
		d.bus.Publish(ev)
	}
}

// take returns the event reporting st's pending errors, sent at now, and
// starts a new interval. Device.errMu must be held.
func (st *errState) take(h sadb.Handle, now time.Time) event.Event {
	ev := event.Event{Type: event.CryptoError, Time: now, Handle: h, Direction: st.dir, SPI: st.spi,
		Reason: st.oe.Error(), CryptoStatus: st.oe.Crypto.String(), Counter: st.oe.Reason.String(), Count: st.pending}
	st.pending, st.last = 0, now
	return ev
}

// publish turns a packet's events into OID-channel events.
func (d *Device) publish(sa *sadb.SA, ev offload.Event) {
	base := event.Event{Handle: sa.Handle, Direction: sa.Config.Direction.String(), SPI: sa.Config.SPI}
	if ev&offload.EventSoftLifetime != 0 {
		x := base
		x.Type, x.Reason = event.SoftLifetime, "soft lifetime reached: rekey now"
		d.bus.Publish(x)
	}
	if ev&offload.EventHardLifetime != 0 {
		x := base
		x.Type, x.Reason = event.HardLifetime, "hard lifetime reached: the SA processes no more packets"
		d.bus.Publish(x)
		d.requestDeleteSA(sa, "hard lifetime reached")
	}
	if ev&offload.EventSeqNearExhaustion != 0 {
		reason := "outbound sequence numbers near exhaustion"
		if sa.Config.Direction == sadb.Inbound {
			reason = "the peer's sequence numbers near exhaustion"
		}
		d.requestDeleteSA(sa, reason)
	}
	if ev&offload.EventESNAdvanced != 0 && sa.In != nil {
		x := base
		x.Type, x.SeqHigh = event.ESNAdvanced, uint32(sa.In.Top()>>32)
		d.bus.Publish(x)
	}
}

// requestDeleteSA raises SaDeleteReq for sa and its twin, as the NDIS
// receive flag does: the event names the inbound SA (the one a received
// packet would carry the flag for) and its paired outbound SA. Both keep
// working until the host deletes them.
func (d *Device) requestDeleteSA(sa *sadb.SA, reason string) {
	in, out := sa, d.table.Paired(sa)
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
	d.bus.Publish(x)
}
