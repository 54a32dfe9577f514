package device

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"vnic/grace"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// receiver handles the packets of one underlay reader: add each packet of
// a batch, then flush, which opens the batch's packets (in parallel when
// the device has crypto workers) and writes the plaintext packets to the
// device in one batched write, in the order they were added (so that the
// device can coalesce them). Not safe for concurrent use: give each reader
// its own.
type receiver struct {
	d      *Device
	dev    TUN
	pkts   []inPacket
	out    [][]byte
	done   sync.WaitGroup
	reader *grace.Reader // a batch, from its first add to flush, is a section
}

// inPacket is a received packet between add and flush.
type inPacket struct {
	sa  *sadb.SA // nil: an unknown SPI passed up unprocessed
	h   offload.Header
	buf []byte
	up  int // sa == nil: where the whole packet passed up starts
	seq uint64
	err error // from offload.DecapOpen
}

// newReceiver returns a receiver that writes to dev.
func (d *Device) newReceiver(dev TUN) *receiver {
	return &receiver{d: d, dev: dev, reader: d.table.NewReader()}
}

// close unregisters the receiver from the SA table's grace periods; it
// must not be used after.
func (r *receiver) close() { r.reader.Close() }

// add checks one underlay packet up to its cryptography and queues it
// for flush. Its buffer must stay untouched until flush.
func (r *receiver) add(p *underlay.Packet) {
	if !r.reader.InSection() {
		r.reader.Enter()
	}
	d := r.d
	buf := p.Buf
	h, kind, err := offload.Parse(buf, p.Start, p.End, &p.Outer)
	if err != nil {
		d.drop(nil, err, inPacketOf(&p.Outer, 0))
		return
	}
	switch kind {
	case offload.KindKeepalive:
		d.counts[cntKeepalives].Add(1)
		return
	case offload.KindIKE:
		d.counts[cntIKE].Add(1)
		return
	}
	sa := d.table.LookupInbound(h.SPI, h.Dst)
	if sa == nil {
		if !d.cfg.PassUnknownSPI {
			d.drop(nil, offload.ErrNoSA, inPacketOf(&h.Outer, h.SPI))
			return
		}
		// The host gets the packet as it came: its outer headers
		// written back in front of it, with valid checksums (the
		// kernel drops a packet without).
		if h.ESP < h.Size()+tunOffset {
			d.drop(nil, offload.ErrNoRoomIn, inPacketOf(&h.Outer, h.SPI))
			return
		}
		d.counts[cntPassedUp].Add(1)
		up := h.Encode(buf, h.ESP, h.End)
		r.pkts = append(r.pkts, inPacket{h: h, buf: buf, up: up})
		return
	}
	seq, err := offload.DecapBegin(sa, &h, buf)
	if err != nil {
		d.settle(sa, offload.Span{}, 0, err, inPacketOf(&h.Outer, h.SPI))
		return
	}
	r.pkts = append(r.pkts, inPacket{sa: sa, h: h, buf: buf, seq: seq})
}

func (r *receiver) crypt(lo, hi int) {
	for i := lo; i < hi; i++ {
		if p := &r.pkts[i]; p.sa != nil {
			p.err = offload.DecapOpen(p.sa, &p.h, p.buf, p.seq)
		}
	}
}

// flush opens the queued packets, finishes them in order and writes the
// plaintext packets to the device.
func (r *receiver) flush() {
	d := r.d
	d.cryptAll(r, len(r.pkts), &r.done)
	var bytes uint64
	for i := range r.pkts {
		p := &r.pkts[i]
		sp := offload.Span{Start: p.up, End: p.h.End}
		if p.sa != nil {
			var ev offload.Event
			err := p.err
			if err == nil {
				sp, ev, err = offload.DecapEnd(p.sa, &p.h, p.buf, p.seq)
			}
			if _, ok := d.settle(p.sa, sp, ev, err, inPacketOf(&p.h.Outer, p.h.SPI)); !ok {
				continue
			}
			if sp.Start < tunOffset {
				d.drop(nil, offload.ErrNoRoomIn, inPacketOf(&p.h.Outer, p.h.SPI))
				continue
			}
		}
		r.out = append(r.out, p.buf[sp.Start-tunOffset:sp.End])
		bytes += uint64(sp.Len())
	}
	if n := uint64(len(r.out)); n > 0 {
		var failed uint64
		if _, err := r.dev.Write(r.out, tunOffset); err != nil {
			failed = writeFailures(err, n)
			d.dropN(offload.ErrDeviceWrite, failed)
			d.log.Debug("device write failed", "counter", offload.ErrDeviceWrite.Reason.String(),
				"packets", failed, "of", n, "err", err)
			// Which packets failed is not known: their bytes are
			// taken to be the batch's average.
			bytes = bytes * (n - failed) / n
		}
		d.counts[cntInPackets].Add(n - failed)
		d.counts[cntInBytes].Add(bytes)
	}
	clear(r.out)
	clear(r.pkts)
	r.out, r.pkts = r.out[:0], r.pkts[:0]
	if r.reader.InSection() {
		r.reader.Exit()
	}
}

// Read errors: the first is retried at once, each one after waits twice
// as long as the one before, up to maxReadBackoff, until a read succeeds.
const (
	minReadBackoff = time.Millisecond
	maxReadBackoff = time.Second
)

// runInbound is the inbound loop of one underlay socket: it receives
// batches with recv and hands each to its receiver, until ctx ends or the
// socket closes. A failed read is counted (VnicInReadError) and logged at
// debug; a socket that keeps failing is retried less and less often
// rather than in a busy loop.
func (d *Device) runInbound(ctx context.Context, recv underlay.ReceiveFunc) {
	rx := d.newReceiver(d.tun)
	defer rx.close()
	deliver := func(pkts []underlay.Packet) {
		for i := range pkts {
			rx.add(&pkts[i])
		}
		rx.flush()
	}
	var backoff time.Duration
	for {
		err := recv(deliver)
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return
		}
		d.counts[cntInReadErrors].Add(1)
		d.log.Debug("underlay read failed", "counter", countNames[cntInReadErrors], "err", err, "retry_in", backoff)
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		backoff = min(max(2*backoff, minReadBackoff), maxReadBackoff)
	}
}

// writeFailures is how many of a batch of n packets a TUN write that
// returned err did not deliver. The TUN layer (wireguard's tun) writes
// every packet and joins the error of each failed write into err, one
// errors.Join at a time, so the leaves of that tree are the failed writes;
// an error that is not a join (the batch could not be prepared) or a
// closed device failed them all. A failed write of packets the TUN layer
// coalesced (GRO) is one leaf, so then the count is a lower bound.
func writeFailures(err error, n uint64) uint64 {
	if errors.Is(err, os.ErrClosed) {
		return n
	}
	if _, ok := err.(interface{ Unwrap() []error }); !ok {
		return n
	}
	return min(max(joinedLeaves(err), 1), n)
}

// joinedLeaves counts the errors in a tree of errors.Join that are not
// joins themselves.
func joinedLeaves(err error) uint64 {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return 1
	}
	var n uint64
	for _, e := range j.Unwrap() {
		n += joinedLeaves(e)
	}
	return n
}
