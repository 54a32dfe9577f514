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

// TestDeviceConfig: -udp-port, -replay-window, -capacity,
// -pass-unknown-spi and -crypto-workers reach the device and its SA table,
// so an ESP-in-UDP SA's local port is the port the socket uses.
func TestDeviceConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		port uint16
	}{
		{[]string{"-underlay", "192.0.2.1"}, 4500},
		{[]string{"-underlay", "192.0.2.1", "-udp-port", "4501", "-replay-window", "128", "-capacity", "8",
			"-pass-unknown-spi", "-crypto-workers", "3"}, 4501},
	} {
		c, err := parseUp(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		dc := deviceConfig(c, nil)
		if tc2 := dc.Table; tc2.UDPPort != tc.port || tc2.DefaultReplayWindow != c.replayWindow || tc2.Capacity != c.capacity ||
			tc2.Keys != nil {
			t.Errorf("%v: UDPPort %d, DefaultReplayWindow %d, Capacity %d, Keys %v; want %d, %d, %d, nil", tc.args,
				tc2.UDPPort, tc2.DefaultReplayWindow, tc2.Capacity, tc2.Keys, tc.port, c.replayWindow, c.capacity)
		}
		if dc.PassUnknownSPI != c.passUnknown || dc.CryptoWorkers != c.workers {
			t.Errorf("%v: PassUnknownSPI %v, CryptoWorkers %d; want %v, %d", tc.args, dc.PassUnknownSPI, dc.CryptoWorkers,
				c.passUnknown, c.workers)
		}
	}
}
