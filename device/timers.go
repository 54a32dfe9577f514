package device

import (
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"

	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// The timers' work is proportional to what is due, not to how many SAs
// the device holds (a NIC holds a million): an SA is looked at when one of
// its time lifetimes runs out, from a heap of deadlines, and, if it sends
// NAT keepalives, once a tick. SAs reach the timers through the table's
// OnAdd, and deleted ones are let go when their turn comes.

// tickInterval is how often the timers run.
const tickInterval = time.Second

// timers is the timer loop's state. Only the loop touches it, except
// added, which the table's OnAdd fills under mu.
type timers struct {
	mu    sync.Mutex
	added []*sadb.SA // added since the last tick, not yet scheduled

	epoch      time.Time // what deadlines count from
	deadlines  deadlineHeap
	keepalives map[sadb.Handle]*keepalive
}

// deadline is when an SA's soft or hard time lifetime runs out: 16 bytes.
// An SA has one on the heap at a time: its soft lifetime's, then its hard
// one's.
type deadline struct {
	at time.Duration // since the timers' epoch, on the monotonic clock
	// sa is the SA's handle, shifted left by one, with the low bit set
	// for the hard lifetime.
	sa uint64
}

func (tm *timers) newDeadline(at time.Time, h sadb.Handle, hard bool) deadline {
	d := deadline{at: at.Sub(tm.epoch), sa: uint64(h) << 1}
	if hard {
		d.sa |= 1
	}
	return d
}

func (d deadline) handle() sadb.Handle { return sadb.Handle(d.sa >> 1) }
func (d deadline) hard() bool          { return d.sa&1 == 1 }

// deadlineHeap orders deadlines soonest first (container/heap).
type deadlineHeap []deadline

func (q deadlineHeap) Len() int           { return len(q) }
func (q deadlineHeap) Less(i, j int) bool { return q[i].at < q[j].at }
func (q deadlineHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *deadlineHeap) Push(x any)        { *q = append(*q, x.(deadline)) }
func (q *deadlineHeap) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// timersAdded hands new SAs to the next tick (the table's OnAdd calls it).
func (d *Device) timersAdded(sas []*sadb.SA) {
	d.timers.mu.Lock()
	d.timers.added = append(d.timers.added, sas...)
	d.timers.mu.Unlock()
}

// runTimers runs tick once a second until ctx ends, sending keepalives on
// wire.
func (d *Device) runTimers(ctx context.Context, wire Wire) {
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.tick(now, wire)
		}
	}
}

// tick schedules the SAs added since the last one, enforces the time
// lifetimes that ran out by now, and sends the NAT keepalives due.
func (d *Device) tick(now time.Time, wire Wire) {
	tm := &d.timers
	tm.mu.Lock()
	added := tm.added
	tm.added = nil
	tm.mu.Unlock()
	for _, sa := range added {
		d.schedule(sa)
	}
	d.dropStaleDeadlines()
	d.checkLifetimes(now)
	d.natKeepalives(now, wire)
	// Forget rate-limit state of SAs that are gone (an armed timer still
	// reports what is pending). Only SAs that had errors have any.
	d.errMu.Lock()
	for k := range d.errSeen {
		if d.table.Get(k.h) == nil {
			delete(d.errSeen, k)
		}
	}
	d.errMu.Unlock()
}

// schedule puts a new SA's time lifetimes on the heap and, if it sends
// NAT keepalives, among the SAs each tick looks at.
func (d *Device) schedule(sa *sadb.SA) {
	tm := &d.timers
	lt := &sa.Config.Lifetime
	switch {
	case lt.SoftAdd > 0: // the hard one follows when it is reached
		heap.Push(&tm.deadlines, tm.newDeadline(sa.Added().Add(lt.SoftAdd), sa.Handle, false))
	case lt.HardAdd > 0:
		heap.Push(&tm.deadlines, tm.newDeadline(sa.Added().Add(lt.HardAdd), sa.Handle, true))
	}
	c := &sa.Config
	if c.Encap.KeepaliveInterval > 0 && c.Direction == sadb.Outbound && c.Encap.UDP {
		if tm.keepalives == nil {
			tm.keepalives = map[sadb.Handle]*keepalive{}
		}
		tm.keepalives[sa.Handle] = &keepalive{new: true}
	}
}

// dropStaleDeadlines rebuilds the heap without the deadlines of deleted
// SAs once they outnumber the SAs the table holds, so that adding and
// deleting SAs with long lifetimes does not grow it without bound. The
// work is paid for by the deletions that made the entries stale.
func (d *Device) dropStaleDeadlines() {
	q := &d.timers.deadlines
	if q.Len() <= 2*d.table.Len()+64 {
		return
	}
	*q = slices.DeleteFunc(*q, func(dl deadline) bool { return d.table.Get(dl.handle()) == nil })
	heap.Init(q)
}

// checkLifetimes raises the soft and hard lifetime events of the
// deadlines that passed by now; deadlines of deleted SAs are dropped.
func (d *Device) checkLifetimes(now time.Time) {
	tm := &d.timers
	q := &tm.deadlines
	for end := now.Sub(tm.epoch); q.Len() > 0 && (*q)[0].at <= end; {
		dl := heap.Pop(q).(deadline)
		sa := d.table.Get(dl.handle())
		if sa == nil {
			continue
		}
		if hard := sa.Config.Lifetime.HardAdd; !dl.hard() && hard > 0 {
			heap.Push(q, tm.newDeadline(sa.Added().Add(hard), sa.Handle, true))
		}
		switch {
		case !dl.hard() && sa.SoftExpired.CompareAndSwap(false, true):
			d.publish(sa, offload.EventSoftLifetime)
		case dl.hard() && sa.HardExpired.CompareAndSwap(false, true):
			d.publish(sa, offload.EventHardLifetime)
		}
	}
}

// keepalive is the NAT keepalive state of one outbound ESP-in-UDP SA:
// when it was last seen sending, and when its next keepalive is due.
type keepalive struct {
	new     bool      // not looked at yet
	packets uint64    // the SA's packet counter when last looked at
	due     time.Time // the next keepalive, if the SA stays idle
}

// natKeepalives sends a NAT keepalive (RFC 3948 §2.3) for every outbound
// ESP-in-UDP SA with a keepalive interval that has sent nothing for that
// long, and again every interval while it stays idle, as the kernel does
// for nat-keepalive-interval. tick calls it once a second; now is the time
// of the tick. An SA counts as sending when its packet counter moved since
// the last tick.
func (d *Device) natKeepalives(now time.Time, wire Wire) {
	for h, st := range d.timers.keepalives {
		sa := d.table.Get(h)
		if sa == nil {
			delete(d.timers.keepalives, h)
			continue
		}
		if !sa.Alive() {
			continue
		}
		p := sa.Counters.Packets.Load()
		if st.new || st.packets != p {
			*st = keepalive{packets: p, due: now.Add(sa.Config.Encap.KeepaliveInterval)}
			continue
		}
		if now.Before(st.due) {
			continue
		}
		st.due = now.Add(sa.Config.Encap.KeepaliveInterval)
		buf := [1]byte{offload.KeepaliveByte}
		var failed [1]bool // the Wire contract: one per packet
		pkt := [1]underlay.Packet{{Buf: buf[:], Start: 0, End: 1, Outer: offload.KeepaliveOuter(&sa.Config)}}
		if _, err := wire.SendBatch(pkt[:], failed[:]); err != nil {
			d.counts[cntSendErrors].Add(1)
			continue
		}
		d.counts[cntOutKeepalives].Add(1)
	}
}
