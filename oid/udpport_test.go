package oid

import (
	"context"
	"strings"
	"testing"
	"time"

	"vnic/ndis"
	"vnic/sadb"
)

// TestQuerySAReportsUDPPort: the query reports the local ESP-in-UDP port
// the device really uses, the table's UDPPort (vnic up -udp-port), when the
// SA gives none; an SA that names another local port is refused.
func TestQuerySAReportsUDPPort(t *testing.T) {
	ts := startServerTable(t, sadb.TableConfig{Capacity: 16, DefaultReplayWindow: 64, UDPPort: 4501})
	c := ts.client(t)
	ctx := context.Background()

	out := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 1))
	out.UdpEspEncapsulation = 2
	in := gcmSA("in", 0x2000, "192.0.2.1", keyBytes(20, 2))
	in.UdpEspEncapsulation = 2
	in.Vnic = &SAExtensions{UDP: &UDPPorts{SPort: 31000}}
	res, err := c.AddSA(ctx, out, in)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.QuerySA(ctx, 0)
	if err != nil || len(all) != 2 {
		t.Fatalf("QuerySA(0) = %v, %v", all, err)
	}
	if o := all[0]; o.Handle != res[0].Handle || o.UDP == nil || o.UDP.SPort != 4501 || o.UDP.DPort != 4500 {
		t.Errorf("outbound SA: udp %+v, want sport 4501 dport 4500", o.UDP)
	}
	if i := all[1]; i.Handle != res[1].Handle || i.UDP == nil || i.UDP.SPort != 31000 || i.UDP.DPort != 4501 {
		t.Errorf("inbound SA: udp %+v, want sport 31000 dport 4501", i.UDP)
	}

	bad := gcmSA("out", 0x1001, "192.0.2.2", keyBytes(20, 3))
	bad.UdpEspEncapsulation = 2
	bad.Vnic = &SAExtensions{UDP: &UDPPorts{SPort: 4500, DPort: 4500}}
	_, err = c.AddSA(ctx, bad)
	const want = "encap source port 4500 is not the port this vnic sends ESP-in-UDP from (4501): start vnic up -udp-port 4500, or use 4501"
	if ndis.StatusOf(err) != ndis.StatusInvalidParameter || err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("AddSA with sport 4500: %v; want NDIS_STATUS_INVALID_PARAMETER and %q", err, want)
	}
}

// TestKeepaliveIntervalRoundTrip: vnic.udp.nat_keepalive_interval reaches
// the SA in seconds and the query reports it back; on an inbound SA it is
// refused.
func TestKeepaliveIntervalRoundTrip(t *testing.T) {
	ts := startServer(t, 16)
	c := ts.client(t)
	ctx := context.Background()
	out := gcmSA("out", 0x1000, "192.0.2.2", keyBytes(20, 4))
	out.UdpEspEncapsulation = 2
	out.Vnic = &SAExtensions{UDP: &UDPPorts{KeepaliveInterval: 20}}
	res, err := c.AddSA(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if got := ts.dev.table.Get(sadb.Handle(res[0].Handle)).Config.Encap.KeepaliveInterval; got != 20*time.Second {
		t.Errorf("SA's interval %v, want 20s", got)
	}
	all, err := c.QuerySA(ctx, res[0].Handle)
	if err != nil || len(all) != 1 || all[0].UDP == nil || all[0].UDP.KeepaliveInterval != 20 {
		t.Fatalf("QuerySA = %+v, %v; want udp.nat_keepalive_interval 20", all, err)
	}

	in := gcmSA("in", 0x2000, "192.0.2.1", keyBytes(20, 5))
	in.UdpEspEncapsulation = 2
	in.Vnic = &SAExtensions{UDP: &UDPPorts{KeepaliveInterval: 20}}
	if _, err := c.AddSA(ctx, in); ndis.StatusOf(err) != ndis.StatusInvalidParameter || !strings.Contains(err.Error(), "outbound ESP-in-UDP SAs only") {
		t.Errorf("inbound SA with a keepalive interval: %v", err)
	}
}
