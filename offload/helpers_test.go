package offload

import (
	"testing"

	"vnic/header"
	"vnic/internal/packettest"
	"vnic/ndis"
	"vnic/sadb"
)

// pair installs an outbound SA in one table and its inbound twin in
// another, as two peers would hold them.
func pair(t testing.TB, cfg sadb.Config) (out, in *sadb.SA) {
	t.Helper()
	txTable, rxTable := sadb.New(sadb.TableConfig{Capacity: 4}), sadb.New(sadb.TableConfig{Capacity: 4})
	outCfg := cfg
	outCfg.Direction, outCfg.ReplayWindow = sadb.Outbound, 0
	res, st := txTable.Add([]sadb.Config{outCfg})
	if st != ndis.StatusSuccess {
		t.Fatalf("add outbound: %v", res[0].Err)
	}
	cfg.Direction = sadb.Inbound
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = 64
	}
	// The receiver's window starts just below the sender's first number
	// (ip xfrm's replay-seq), so that ESN inference follows a sender that
	// starts near 2^32.
	if cfg.InitialSeq > 0 {
		cfg.InitialSeq--
	}
	res2, st := rxTable.Add([]sadb.Config{cfg})
	if st != ndis.StatusSuccess {
		t.Fatalf("add inbound: %v", res2[0].Err)
	}
	return txTable.Get(res[0].Handle), rxTable.Get(res2[0].Handle)
}

// The shared addresses and packets (internal/packettest).
var (
	gcm128    = packettest.GCM128
	allSpecs  = packettest.Specs
	udpPacket = packettest.UDPPacket

	v4a, v4b = packettest.V4A, packettest.V4B
	v6a, v6b = packettest.V6A, packettest.V6B
	in4a     = packettest.In4A
	in4b     = packettest.In4B
	in6a     = packettest.In6A
	in6b     = packettest.In6B
)

func newBuf() []byte { return make([]byte, 2048) }

// encapWire encapsulates buf[start:end] with sa and writes the outer
// headers in front of the ESP bytes, as the raw underlay does: the result
// is the whole packet as it goes on the wire.
func encapWire(sa *sadb.SA, buf []byte, start, end int) (Span, Event, error) {
	j, ev, err := Encapsulate(sa, buf, start, end)
	if err != nil {
		return Span{}, ev, err
	}
	return Span{j.Outer.Encode(buf, j.Start, j.End), j.End}, ev, nil
}

// parseWire reads the whole underlay packet buf[start:end] as the
// underlay and Parse do together: the outer headers into an Outer, then
// the ESP (or keepalive or IKE) after them. A packet whose outer headers
// the kernel would not pass on fails with one of header's errors.
func parseWire(buf []byte, start, end int) (Header, Kind, error) {
	o, p, e, err := header.ParseOuter(buf[start:end])
	if err != nil {
		return Header{}, 0, err // one of header's: the kernel would not pass the packet on
	}
	return Parse(buf, start+p, start+e, &o)
}

// isOuterErr reports whether err is one of header's errors for outer
// headers that the kernel would refuse before vnic sees the packet.
func isOuterErr(err error) bool {
	return err == header.ErrMalformed || err == header.ErrFragment || err == header.ErrNotESP
}
