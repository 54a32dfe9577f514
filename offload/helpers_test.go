package offload

import (
	"testing"

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
