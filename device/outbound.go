package device

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"vnic/ipfrag"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// runOutbound reads plaintext packets from dev in batches, protects each
// with its outbound SA and sends the batch on wire, until ctx ends or dev
// fails.
func (d *Device) runOutbound(ctx context.Context, dev TUN, wire Wire) error {
	n := dev.BatchSize()
	bufs := make([][]byte, n)
	sizes := make([]int, n)
	b := &outBatch{jobs: make([]offload.EncapJob, 0, n), bufs: make([][]byte, 0, n), sizes: make([]int, 0, n)}
	failed := make([]bool, n)
	out := make([]underlay.Packet, 0, n)
	for i := range bufs {
		bufs[i] = make([]byte, offload.Headroom+maxPacket+offload.Tailroom)
	}
	// IP fragments (IPv4 and IPv6) that transport-mode SAs would carry
	// are reassembled first: ESP protects whole datagrams there (RFC
	// 4303 §3.3.4).
	b.reasm = ipfrag.NewReassembler(ipfrag.Config{Headroom: offload.Headroom, Tailroom: offload.Tailroom})
	// Each batch is a grace section: an SA deleted meanwhile keeps its
	// keys until the batch is sent.
	reader := d.table.NewReader()
	defer reader.Close()
	for {
		count, err := dev.Read(bufs, sizes, offload.Headroom)
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
			d.counts[cntReadErrors].Add(1)
		}
		b.jobs, b.bufs, b.sizes, out = b.jobs[:0], b.bufs[:0], b.sizes[:0], out[:0]
		reader.Enter()
		if b.reasm.Len() > 0 {
			b.now = time.Now()
			if _, n := b.reasm.Expire(b.now); n > 0 {
				d.dropN(offload.ErrFragTimeout, uint64(n))
			}
		} else {
			b.now = time.Time{}
		}
		for i := range count {
			d.outbound(b, bufs[i], offload.Headroom, offload.Headroom+sizes[i])
		}
		d.cryptAll(b, len(b.jobs), &b.done)
		for i := range b.jobs {
			j := &b.jobs[i]
			out = append(out, underlay.Packet{Buf: b.bufs[i], Start: j.Start, End: j.End, Outer: j.Outer})
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
			d.counts[cntOutPackets].Add(sent)
			d.counts[cntOutBytes].Add(bytes)
			if n := uint64(len(out)) - sent; n > 0 {
				d.counts[cntSendErrors].Add(n)
				d.logSendErrors(b, failed[:len(out)], err)
			}
		}
		reader.Exit()
		for _, dg := range b.whole {
			b.reasm.Release(dg)
		}
		clear(b.jobs) // let deleted SAs go
		clear(out)
		b.whole = b.whole[:0]
	}
}

// logSendErrors logs, at debug, the first packet of a batch that the
// underlay did not send, with its SA, at most one line per
// d.dropLogEvery (a full socket buffer fails packets by the thousand); a
// line says how many failed unlogged since the one before.
func (d *Device) logSendErrors(b *outBatch, failed []bool, err error) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	first, n := -1, uint64(0)
	for i, f := range failed {
		if f {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if first < 0 || !d.sendLog.allow(time.Now(), d.dropLogEvery, n) {
		return
	}
	sa := b.jobs[first].SA()
	d.log.Debug("outbound packets not sent", "counter", countNames[cntSendErrors], "packets", n,
		"unlogged_since_last", d.sendLog.skipped.Swap(0), "sa", sa.Handle, "spi", sa.Config.SPI,
		"dst", sa.Config.Dst, "bytes", b.jobs[first].Len(), "err", err)
}

// outBatch holds the packets of one device read between encapBegin and
// the send: jobs[i] is a packet in bufs[i], sizes[i] bytes long before
// encapsulation.
type outBatch struct {
	jobs  []offload.EncapJob
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
		b.jobs[i].Seal(b.bufs[i])
	}
}

// outbound numbers one plaintext packet and writes its headers for its
// outbound SA, adding it to the batch; the cryptography is left to the
// batch. An IP fragment for a transport-mode SA waits for the rest of
// its datagram, which goes once whole.
func (d *Device) outbound(b *outBatch, buf []byte, start, end int) {
	f, ok := offload.FlowOf(buf[start:end])
	if !ok {
		d.drop(nil, offload.ErrBadPlaintext, outPacket(f))
		return
	}
	sa := d.table.LookupOutbound(f)
	if sa == nil {
		if offload.LinkScoped(f.Dst) {
			d.drop(nil, offload.ErrLinkLocal, outPacket(f))
			return
		}
		d.drop(nil, offload.ErrNoOutSA, outPacket(f))
		return
	}
	if sa.Config.Mode == sadb.Transport && ipfrag.IsFragment(buf[start:end]) {
		dg, ok := d.reassemble(b, sa, buf[start:end])
		if !ok {
			return
		}
		// The whole datagram, its ports known now, may belong to
		// another SA than its fragment did.
		buf, start, end = dg.Buf, dg.Start, dg.End
		if f, ok = offload.FlowOf(buf[start:end]); !ok {
			d.drop(sa, offload.ErrBadPlaintext, outPacket(f))
			return
		}
		if sa = d.table.LookupOutbound(f); sa == nil {
			d.drop(nil, offload.ErrNoOutSA, outPacket(f))
			return
		}
	}
	j, ev, err := offload.EncapBegin(sa, buf, start, end)
	if _, ok := d.settle(sa, j.Span, ev, err, outPacket(f)); ok {
		b.jobs = append(b.jobs, j)
		b.bufs = append(b.bufs, buf)
		b.sizes = append(b.sizes, end-start)
	}
}

// reassemble gives an IP fragment for the transport-mode SA sa to the
// batch's Reassembler, and returns the datagram it completed, if it did.
// Fragments it drops are counted on sa, and with them those of their
// datagram held until then.
func (d *Device) reassemble(b *outBatch, sa *sadb.SA, frag []byte) (ipfrag.Datagram, bool) {
	if b.now.IsZero() {
		b.now = time.Now()
	}
	dg, res, held := b.reasm.Add(frag, b.now)
	switch res {
	case ipfrag.Complete:
		b.whole = append(b.whole, dg)
		return dg, true
	case ipfrag.Invalid:
		d.dropOnSA(sa, offload.ErrFragInvalid, uint64(held)+1)
	case ipfrag.Full:
		d.dropOnSA(sa, offload.ErrFragFull, uint64(held)+1)
	}
	return ipfrag.Datagram{}, false
}
