package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"vnic/header"
	"vnic/ndis"
	"vnic/offload"
	"vnic/sadb"
)

// Device-wide counters that are not drops.
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
	cntInReadErrors
	numCounts
)

var countNames = [numCounts]string{
	"InPackets", "InBytes", "OutPackets", "OutBytes",
	"VnicInNatKeepalive", "VnicInIkeDropped", "VnicInPassedUp", "VnicOutSendError",
	"VnicOutReadError", "VnicOutNatKeepalive", "VnicInReadError",
}

// Stats returns the device's counters by name: the xfrm_stat drop names,
// the NDIS CryptoStatus names and the packet totals.
func (d *Device) Stats() map[string]uint64 {
	m := make(map[string]uint64, int(sadb.NumReasons)+len(d.crypto)+numCounts)
	for r := range sadb.NumReasons {
		m[r.String()] = d.drops[r].Load()
	}
	for c := range d.crypto {
		if c != int(ndis.CryptoSuccess) {
			m[ndis.CryptoStatus(c).String()] = d.crypto[c].Load()
		}
	}
	for i, n := range countNames {
		m[n] = d.counts[i].Load()
	}
	return m
}

// settle publishes what processing the packet pk with sa made happen and
// counts the packet if it was dropped.
func (d *Device) settle(sa *sadb.SA, sp offload.Span, ev offload.Event, err error, pk dropped) (offload.Span, bool) {
	if ev != 0 {
		d.publish(sa, ev)
	}
	if err != nil {
		d.drop(sa, err, pk)
		return offload.Span{}, false
	}
	return sp, true
}

// dropped says which packet a drop was, for the debug log: an outbound
// packet by its plaintext flow, an inbound one by its outer addresses,
// protocol (ESP, or UDP and its ports) and SPI. A value, not a pointer
// into the packet, so that naming a packet makes nothing escape.
type dropped struct {
	out  bool
	flow sadb.Flow
	spi  uint32
}

// outPacket names a dropped outbound packet.
func outPacket(f sadb.Flow) dropped { return dropped{out: true, flow: f} }

// inPacketOf names a dropped inbound packet by what the underlay and
// Parse found.
func inPacketOf(o *header.Outer, spi uint32) dropped {
	f := sadb.Flow{Src: o.Src, Dst: o.Dst, Proto: header.ProtoESP}
	if o.UDP {
		f.Proto, f.SrcPort, f.DstPort = header.ProtoUDP, o.SrcPort, o.DstPort
	}
	return dropped{flow: f, spi: spi}
}

// dropLogEvery is the least time between two debug lines about drops of
// one counter; the drops in between are counted in the next line.
const dropLogEvery = time.Second

// dropLog is the rate limit of one counter's debug lines.
type dropLog struct {
	last    atomic.Int64 // when the last line went, in Unix nanoseconds
	skipped atomic.Uint64
}

// allow reports whether a line may go at now, at most one every every;
// when not, the n events it was for are counted as unlogged.
func (l *dropLog) allow(now time.Time, every time.Duration, n uint64) bool {
	t := now.UnixNano()
	last := l.last.Load()
	if t-last < int64(every) || !l.last.CompareAndSwap(last, t) {
		l.skipped.Add(n)
		return false
	}
	return true
}

// logDropped logs, at debug, a dropped packet with its flow and why, at
// most one line per counter per d.dropLogEvery; a line says how many
// drops of its counter went unlogged since the one before.
func (d *Device) logDropped(sa *sadb.SA, oe *offload.Error, pk dropped) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	l := &d.dropLogs[oe.Reason]
	if !l.allow(time.Now(), d.dropLogEvery, 1) {
		return
	}
	args := []any{"counter", oe.Reason.String(), "reason", oe.Error(), "unlogged_since_last", l.skipped.Swap(0)}
	f := pk.flow
	if pk.out {
		args = append(args, "dir", "out", "src", f.Src, "dst", f.Dst, "proto", f.Proto, "sport", f.SrcPort, "dport", f.DstPort)
	} else {
		args = append(args, "dir", "in", "src", f.Src, "dst", f.Dst, "spi", fmt.Sprintf("0x%08x", pk.spi))
		if f.Proto == header.ProtoUDP {
			args = append(args, "sport", f.SrcPort, "dport", f.DstPort)
		}
	}
	if sa != nil {
		args = append(args, "sa", sa.Handle)
	}
	d.log.Debug("packet dropped", args...)
}

// dropN counts n packets dropped for a reason that is not an SA's.
func (d *Device) dropN(oe *offload.Error, n uint64) {
	d.drops[oe.Reason].Add(n)
}

// dropOnSA counts n outbound packets of sa dropped for oe, globally and on
// sa, and logs them at debug.
func (d *Device) dropOnSA(sa *sadb.SA, oe *offload.Error, n uint64) {
	d.drops[oe.Reason].Add(n)
	sa.Counters.Drop(oe.Reason, n)
	d.logDrop(sa, oe, n)
}

// logDrop logs, at debug, outbound packets of sa dropped by reassembly
// (fragments that never made a datagram), with the other lines about
// drops of their counter: at most one per d.dropLogEvery, counting those
// left unlogged.
func (d *Device) logDrop(sa *sadb.SA, oe *offload.Error, n uint64) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return // no arguments built for nothing
	}
	l := &d.dropLogs[oe.Reason]
	if !l.allow(time.Now(), d.dropLogEvery, n) {
		return
	}
	d.log.Debug("outbound packets dropped", "counter", oe.Reason.String(), "reason", oe.Error(), "packets", n,
		"unlogged_since_last", l.skipped.Swap(0), "sa", sa.Handle, "spi", sa.Config.SPI, "dst", sa.Config.Dst)
}

// drop counts the dropped packet pk under its reason, globally and on its
// SA, and logs it at debug (rate-limited).
func (d *Device) drop(sa *sadb.SA, err error, pk dropped) {
	var oe *offload.Error
	if !errors.As(err, &oe) {
		oe = offload.ErrMalformed
	}
	d.drops[oe.Reason].Add(1)
	if oe.Reason < sadb.OutError && oe.Crypto != ndis.CryptoSuccess {
		d.crypto[oe.Crypto].Add(1)
	}
	if sa != nil {
		sa.Counters.Drop(oe.Reason, 1)
		if oe.Reason < sadb.OutError && oe != offload.ErrDummy {
			d.cryptoEvent(sa, oe)
		}
	}
	d.logDropped(sa, oe, pk)
}
