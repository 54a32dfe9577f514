package main

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
)

// TestParseUp: the daemon's flags, their defaults, and a clear refusal
// for each bad value.
func TestParseUp(t *testing.T) {
	c, err := parseUp([]string{"-underlay", "192.0.2.1,2001:db8::1", "-addr", "10.0.0.1/24"})
	if err != nil {
		t.Fatal(err)
	}
	if c.name != "vnic0" || c.socket != "/run/vnic/vnic0.sock" || c.udpPort != 4500 || c.capacity != 1024 ||
		c.replayWindow != 64 || c.workers != max(0, runtime.GOMAXPROCS(0)-2) || c.mtu != 0 || c.keyHistory != "/run/vnic/vnic0.keys" {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.underlay) != 2 || c.underlay[1] != netip.MustParseAddr("2001:db8::1") || c.addrs[0] != netip.MustParsePrefix("10.0.0.1/24") {
		t.Errorf("addresses: %v %v", c.underlay, c.addrs)
	}
	if c, err := parseUp([]string{"-underlay", "192.0.2.1", "-name", "vnic3", "-crypto-workers", "0"}); err != nil ||
		c.socket != "/run/vnic/vnic3.sock" || c.keyHistory != "/run/vnic/vnic3.keys" || c.workers != 0 {
		t.Errorf("-name vnic3 -crypto-workers 0: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-underlay"},
		{[]string{"-underlay", "nope"}, "expected an IP address"},
		{[]string{"-underlay", "192.0.2.1", "-addr", "10.0.0.1"}, "prefix length"},
		{[]string{"-underlay", "192.0.2.1", "-udp-port", "70000"}, "not a port"},
		{[]string{"-underlay", "192.0.2.1", "-capacity", "0"}, "-capacity"},
		{[]string{"-underlay", "192.0.2.1", "-replay-window", "8"}, "-replay-window"},
		{[]string{"-underlay", "192.0.2.1", "-crypto-workers", "-1"}, "-crypto-workers"},
		{[]string{"-underlay", "192.0.2.1", "extra"}, "unexpected argument"},
	} {
		if _, err := parseUp(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one that mentions %q", tc.args, err, tc.want)
		}
	}
}

// TestNewTable: -udp-port, -replay-window and -capacity reach the SA
// table, so an ESP-in-UDP SA's local port is the port the socket uses.
func TestNewTable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		port uint16
	}{
		{[]string{"-underlay", "192.0.2.1"}, 4500},
		{[]string{"-underlay", "192.0.2.1", "-udp-port", "4501", "-replay-window", "128", "-capacity", "8"}, 4501},
	} {
		c, err := parseUp(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		tab := newTable(c, nil)
		tc2 := tab.Config()
		if tc2.UDPPort != tc.port || tc2.DefaultReplayWindow != c.replayWindow || tab.Capacity() != c.capacity {
			t.Errorf("%v: UDPPort %d, DefaultReplayWindow %d, Capacity %d; want %d, %d, %d", tc.args,
				tc2.UDPPort, tc2.DefaultReplayWindow, tab.Capacity(), tc.port, c.replayWindow, c.capacity)
		}
	}
}
