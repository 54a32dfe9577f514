package device

import (
	"context"
	"time"

	"vnic/offload"
	"vnic/sadb"
)

// runTimers enforces time lifetimes and sends NAT keepalives on wire once
// a second until ctx ends.
func (d *Device) runTimers(ctx context.Context, wire Wire) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.checkLifetimes(now)
			d.natKeepalives(now, wire)
		}
	}
}

func (d *Device) checkLifetimes(now time.Time) {
	for _, sa := range d.table.List() {
		lt := &sa.Config.Lifetime
		age := now.Sub(sa.Added)
		var ev offload.Event
		if lt.SoftAdd > 0 && age >= lt.SoftAdd && sa.SoftExpired.CompareAndSwap(false, true) {
			ev |= offload.EventSoftLifetime
		}
		if lt.HardAdd > 0 && age >= lt.HardAdd && sa.HardExpired.CompareAndSwap(false, true) {
			ev |= offload.EventHardLifetime
		}
		if ev != 0 {
			d.publish(sa, ev)
		}
	}
	// Forget rate-limit state of SAs that are gone (an armed timer still
	// reports what is pending).
	d.errMu.Lock()
	for k := range d.errSeen {
		if d.table.Get(k.h) == nil {
			delete(d.errSeen, k)
		}
	}
	d.errMu.Unlock()
}

// keepalive is the NAT keepalive state of one outbound ESP-in-UDP SA:
// when it was last seen sending, and when its next keepalive is due.
type keepalive struct {
	packets uint64    // the SA's packet counter when last looked at
	due     time.Time // the next keepalive, if the SA stays idle
}

// natKeepalives sends a NAT keepalive (RFC 3948 §2.3) for every outbound
// ESP-in-UDP SA with a keepalive interval that has sent nothing for that
// long, and again every interval while it stays idle, as the kernel does
// for nat-keepalive-interval. runTimers calls it once a second; now is the
// time of the tick. An SA counts as sending when its packet counter moved
// since the last tick.
func (d *Device) natKeepalives(now time.Time, wire Wire) {
	for _, sa := range d.table.List() {
		c := &sa.Config
		k := c.Encap.KeepaliveInterval
		if k <= 0 || c.Direction != sadb.Outbound || !c.Encap.UDP || !sa.Alive() {
			continue
		}
		p := sa.Counters.Packets.Load()
		st := d.keepalives[sa.Handle]
		if st == nil || st.packets != p {
			d.keepalives[sa.Handle] = &keepalive{packets: p, due: now.Add(k)}
			continue
		}
		if now.Before(st.due) {
			continue
		}
		st.due = now.Add(k)
		var buf [offload.KeepaliveMaxLen]byte
		var failed [1]bool // the Wire contract: one per packet
		if _, err := wire.SendBatch([][]byte{offload.KeepalivePacket(buf[:], c)}, failed[:]); err != nil {
			d.counts[cntSendErrors].Add(1)
			continue
		}
		d.counts[cntOutKeepalives].Add(1)
	}
	for h := range d.keepalives {
		if d.table.Get(h) == nil {
			delete(d.keepalives, h)
		}
	}
}
