package offload

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"vnic/algo"
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

func gcm128() algo.Spec {
	k := make([]byte, 20)
	for i := range k {
		k[i] = byte(i + 1)
	}
	return algo.Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: k}
}

var (
	v4a, v4b = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	v6a, v6b = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	in4a     = netip.MustParseAddr("10.1.0.1")
	in4b     = netip.MustParseAddr("10.2.0.1")
	in6a     = netip.MustParseAddr("fd00:1::1")
	in6b     = netip.MustParseAddr("fd00:2::1")
)

// udpPacket builds an IPv4 or IPv6 UDP packet with n payload bytes and a
// valid checksum at buf[off:], and returns its end.
func udpPacket(buf []byte, off int, src, dst netip.Addr, sport, dport uint16, n int) int {
	p := buf[off:]
	var l4 int
	if src.Is4() {
		l4 = 20
		total := l4 + 8 + n
		p[0], p[1] = 0x45, 0
		binary.BigEndian.PutUint16(p[2:], uint16(total))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		binary.BigEndian.PutUint16(p[6:], 0x4000)
		p[8], p[9] = 64, protoUDP
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		ipv4(p).setChecksum()
	} else {
		l4 = 40
		binary.BigEndian.PutUint32(p[0:], 6<<28)
		binary.BigEndian.PutUint16(p[4:], uint16(8+n))
		p[6], p[7] = protoUDP, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	}
	u := p[l4:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+n))
	binary.BigEndian.PutUint16(u[6:], 0)
	for i := range n {
		u[8+i] = byte(i*13 + 7)
	}
	binary.BigEndian.PutUint16(u[6:], l4Checksum(p, protoUDP, u[:8+n]))
	return off + l4 + 8 + n
}

func newBuf() []byte { return make([]byte, 2048) }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
