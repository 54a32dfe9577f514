package device

import (
	"context"
	"errors"
	"log/slog"

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

// settle publishes what processing a packet with sa made happen and counts
// the packet if it was dropped.
func (d *Device) settle(sa *sadb.SA, sp offload.Span, ev offload.Event, err error) (offload.Span, bool) {
	if ev != 0 {
		d.publish(sa, ev)
	}
	if err != nil {
		d.drop(sa, err)
		return offload.Span{}, false
	}
	return sp, true
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

// logDrop logs, at debug, outbound packets of sa dropped because they
// could not be sent as they are: too large, or fragments that never made
// a datagram.
func (d *Device) logDrop(sa *sadb.SA, oe *offload.Error, n uint64) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return // no arguments built for nothing
	}
	d.log.Debug("outbound packets dropped", "counter", oe.Reason.String(), "reason", oe.Error(), "packets", n,
		"sa", sa.Handle, "spi", sa.Config.SPI, "dst", sa.Config.Dst)
}

// drop counts a dropped packet under its reason, globally and on its SA.
func (d *Device) drop(sa *sadb.SA, err error) {
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
		if oe == offload.ErrTooBig {
			d.logDrop(sa, oe, 1)
		}
	}
}
