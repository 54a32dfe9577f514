package sadb

import (
	"testing"
	"time"

	"vnic/ndis"
)

// TestUDPPort: an ESP-in-UDP SA's local port (outbound: source, inbound:
// destination) is the table's UDPPort, the one port the device's socket
// uses: 0 fills it in (DefaultUDPPort when UDPPort is 0), the same value is
// accepted, another is refused with a reason that says how to fix it. The
// peer's port keeps its own default (4500) and may be anything. Raw ESP
// SAs are not concerned.
func TestUDPPort(t *testing.T) {
	udp := func(c Config, sport, dport uint16) Config {
		c.Encap = Encap{UDP: true, SrcPort: sport, DstPort: dport}
		return c
	}
	out := outCfg(1000, "192.0.2.2")
	in := inCfg(1000, "192.0.2.1")
	tests := []struct {
		name      string
		tablePort uint16 // Table.UDPPort
		cfg       Config
		// The stored ports on success; the whole reason (after
		// "element 1: ") on failure.
		sport, dport uint16
		reason       string
	}{
		// Defaults.
		{name: "outbound default, table port 0", tablePort: 0, cfg: udp(out, 0, 0), sport: 4500, dport: 4500},
		{name: "inbound default, table port 0", tablePort: 0, cfg: udp(in, 0, 0), sport: 4500, dport: 4500},
		{name: "outbound default from table", tablePort: 4501, cfg: udp(out, 0, 0), sport: 4501, dport: 4500},
		{name: "inbound default from table", tablePort: 4501, cfg: udp(in, 0, 0), sport: 4500, dport: 4501},

		// The local port given, and the table's.
		{name: "outbound explicit match", tablePort: 4501, cfg: udp(out, 4501, 0), sport: 4501, dport: 4500},
		{name: "inbound explicit match", tablePort: 4501, cfg: udp(in, 0, 4501), sport: 4500, dport: 4501},
		{name: "outbound explicit 4500, table port 0", tablePort: 0, cfg: udp(out, 4500, 4500), sport: 4500, dport: 4500},
		{name: "inbound explicit 4500, table port 0", tablePort: 0, cfg: udp(in, 4500, 4500), sport: 4500, dport: 4500},

		// The peer's port is the peer's business: any value, kept.
		{name: "outbound peer port kept", tablePort: 4501, cfg: udp(out, 0, 31000), sport: 4501, dport: 31000},
		{name: "inbound peer port kept", tablePort: 4501, cfg: udp(in, 31000, 4501), sport: 31000, dport: 4501},
		{name: "outbound peer port is the table's", tablePort: 4501, cfg: udp(out, 4501, 4501), sport: 4501, dport: 4501},

		// A local port the socket does not use.
		{name: "outbound mismatch", tablePort: 4500, cfg: udp(out, 4501, 4500),
			reason: "encap source port 4501 is not the port this vnic sends ESP-in-UDP from (4500): start vnic up -udp-port 4501, or use 4500"},
		{name: "outbound mismatch, table port 0", tablePort: 0, cfg: udp(out, 4501, 0),
			reason: "encap source port 4501 is not the port this vnic sends ESP-in-UDP from (4500): start vnic up -udp-port 4501, or use 4500"},
		{name: "outbound 4500 on a 4501 table", tablePort: 4501, cfg: udp(out, 4500, 4500),
			reason: "encap source port 4500 is not the port this vnic sends ESP-in-UDP from (4501): start vnic up -udp-port 4500, or use 4501"},
		{name: "inbound mismatch", tablePort: 4500, cfg: udp(in, 4500, 4501),
			reason: "encap destination port 4501 is not the port this vnic receives ESP-in-UDP on (4500): start vnic up -udp-port 4501, or use 4500"},
		{name: "inbound 4500 on a 4501 table", tablePort: 4501, cfg: udp(in, 4500, 4500),
			reason: "encap destination port 4500 is not the port this vnic receives ESP-in-UDP on (4501): start vnic up -udp-port 4500, or use 4501"},

		// Raw ESP: no ports whatever the table's, and ports are refused
		// as before.
		{name: "outbound raw ESP", tablePort: 4501, cfg: out},
		{name: "inbound raw ESP", tablePort: 4501, cfg: in},
		{name: "raw ESP with ports", tablePort: 4501, cfg: func() Config { c := out; c.Encap.SrcPort = 4501; return c }(),
			reason: "UDP ports 4501 and 0 are given but UDP encapsulation is off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(TableConfig{Capacity: 4, UDPPort: tc.tablePort})
			// A valid first element: a refusal fails its element only.
			res, st := tab.Add([]Config{outCfg(2000, "192.0.2.9"), tc.cfg})
			if st != ndis.StatusSuccess {
				t.Fatalf("batch status %v: the first element is valid", st)
			}
			r := res[1]
			if tc.reason != "" {
				if r.Handle != 0 {
					t.Errorf("handle %d, want 0", r.Handle)
				}
				wantErr(t, r.Err, ndis.StatusInvalidParameter)
				if got, want := r.Err.Error(), "element 1: "+tc.reason; got != want {
					t.Errorf("reason\n %q\nwant\n %q", got, want)
				}
				if tab.Len() != 1 {
					t.Errorf("Len %d, want 1", tab.Len())
				}
				return
			}
			if r.Err != nil || r.Handle == 0 {
				t.Fatalf("handle %d, err %v; want success", r.Handle, r.Err)
			}
			// What Get and List hold is what sa show, sa list and
			// the OID query report.
			want := Encap{UDP: tc.cfg.Encap.UDP, SrcPort: tc.sport, DstPort: tc.dport}
			if got := tab.Get(r.Handle).Config.Encap; got != want {
				t.Errorf("Get: Encap %+v, want %+v", got, want)
			}
			for _, sa := range tab.List() {
				if sa.Handle == r.Handle && sa.Config.Encap != want {
					t.Errorf("List: Encap %+v, want %+v", sa.Config.Encap, want)
				}
			}
		})
	}
}

// TestUDPPortLeavesCallerConfig: filling in the local port changes the
// stored copy, not the caller's Config.
func TestUDPPortLeavesCallerConfig(t *testing.T) {
	tab := New(TableConfig{Capacity: 4, UDPPort: 4501})
	c := outCfg(1000, "192.0.2.2")
	c.Encap = Encap{UDP: true}
	h := mustAdd(t, tab, c)[0]
	if c.Encap != (Encap{UDP: true}) {
		t.Errorf("caller's Encap changed to %+v", c.Encap)
	}
	if got := tab.Get(h).Config.Encap; got != (Encap{UDP: true, SrcPort: 4501, DstPort: 4500}) {
		t.Errorf("stored Encap %+v", got)
	}
}

// TestKeepaliveInterval: a NAT keepalive interval is taken on outbound
// ESP-in-UDP SAs, in whole seconds up to a day, and refused elsewhere.
func TestKeepaliveInterval(t *testing.T) {
	udp := func(c Config, k time.Duration) Config {
		c.Encap = Encap{UDP: true, KeepaliveInterval: k}
		return c
	}
	raw := outCfg(1000, "10.0.0.1")
	raw.Encap.KeepaliveInterval = 20 * time.Second
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"outbound UDP, 20 s", udp(outCfg(1000, "10.0.0.1"), 20*time.Second), ""},
		{"a day", udp(outCfg(1000, "10.0.0.1"), MaxKeepaliveInterval), ""},
		{"none", udp(outCfg(1000, "10.0.0.1"), 0), ""},
		{"inbound", udp(inCfg(1000, "10.0.0.1"), 20*time.Second), "applies to outbound ESP-in-UDP SAs only"},
		{"raw ESP", raw, "applies to outbound ESP-in-UDP SAs only"},
		{"not whole seconds", udp(outCfg(1000, "10.0.0.1"), 1500*time.Millisecond), "NAT keepalive interval 1.5s: give whole seconds from 1 to 86400"},
		{"beyond a day", udp(outCfg(1000, "10.0.0.1"), MaxKeepaliveInterval+time.Second), "give whole seconds from 1 to 86400"},
		{"negative", udp(outCfg(1000, "10.0.0.1"), -time.Second), "give whole seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(TableConfig{Capacity: 4})
			res, _ := tab.Add([]Config{tc.cfg})
			if tc.err == "" {
				if res[0].Err != nil {
					t.Fatalf("refused: %v", res[0].Err)
				}
				if got := tab.Get(res[0].Handle).Config.Encap.KeepaliveInterval; got != tc.cfg.Encap.KeepaliveInterval {
					t.Errorf("interval %v stored, want %v", got, tc.cfg.Encap.KeepaliveInterval)
				}
				return
			}
			wantErr(t, res[0].Err, ndis.StatusInvalidParameter, tc.err)
		})
	}
}
