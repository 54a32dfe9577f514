package device

import (
	"net/netip"
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
	// The SA's fields of the event (the SA itself is not kept: a deleted
	// one must be let go) and the latest error.
	sa event.Event
	oe *offload.Error
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
		st = &errState{sa: d.saEvent(event.CryptoError, sa)}
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
	return st.take(now), true
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
func (st *errState) take(now time.Time) event.Event {
	ev := st.sa
	ev.Time, ev.Reason, ev.CryptoStatus, ev.Counter, ev.Count = now, st.oe.Error(), st.oe.Crypto.String(), st.oe.Reason.String(), st.pending
	st.pending, st.last = 0, now
	return ev
}

// saEvent returns an event of type t about sa: its handle, pair,
// direction, SPI, endpoints and mode.
func (d *Device) saEvent(t event.Type, sa *sadb.SA) event.Event {
	c := &sa.Config
	e := event.Event{Type: t, Handle: sa.Handle, Direction: c.Direction.String(), SPI: c.SPI,
		Src: addrWord(c.Src), Dst: addrWord(c.Dst), Mode: c.Mode.String()}
	if tw := d.table.Paired(sa); tw != nil {
		e.Pair = tw.Handle
	}
	return e
}

// addrWord is an SA endpoint in an event: "any" for the wildcard.
func addrWord(a netip.Addr) string {
	if !a.IsValid() || a.IsUnspecified() {
		return "any"
	}
	return a.String()
}

// saAdded, saDeleted and saUpdated are the table's hooks: the SA's life
// as events (and the timers' part, for new SAs).
func (d *Device) saAdded(sas []*sadb.SA) {
	d.timersAdded(sas)
	for _, sa := range sas {
		d.bus.Publish(d.saEvent(event.SaAdded, sa))
	}
}

func (d *Device) saDeleted(sas []*sadb.SA) {
	for _, sa := range sas {
		e := d.saEvent(event.SaDeleted, sa)
		e.Reason = "deleted by the host (DELETE_SA)"
		d.bus.Publish(e)
	}
}

func (d *Device) saUpdated(sa *sadb.SA) {
	e := d.saEvent(event.SaUpdated, sa)
	if sa.Out != nil {
		e.SeqHigh = uint32(sa.Out.Last() >> 32)
	} else if sa.In != nil {
		e.SeqHigh = uint32(sa.In.Top() >> 32)
	}
	e.Reason = "ESN high-order bits set by the host (UPDATE_SA)"
	d.bus.Publish(e)
}

// publish turns a packet's events into OID-channel events.
func (d *Device) publish(sa *sadb.SA, ev offload.Event) {
	base := d.saEvent("", sa)
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
	named := in // the event names the inbound SA, with its pair
	if named == nil {
		named = out
	}
	for _, x := range []*sadb.SA{in, out} {
		if x != nil {
			x.DeleteRequested.Store(true)
		}
	}
	x := d.saEvent(event.SaDeleteReq, named)
	x.Reason = reason
	d.bus.Publish(x)
}
