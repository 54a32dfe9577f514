package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"vnic/internal/sdnotify"
	"vnic/internal/testutil"
	"vnic/offload"
	"vnic/tun"
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
	for _, args := range [][]string{
		{"-mtu", "68"}, {"-mtu", "65414"}, {"-mtu", "20000"}, {"-mtu", "1000", "-addr", "10.0.0.1/24"}, {"-mtu", "1280", "-addr", "fd00::1/64"},
		{"-log-level", "DEBUG"}, {"-log-level", "warn"}, {"-log-level", "error"}, {"-name", "vnic%d"},
	} {
		if _, err := parseUp(append([]string{"-underlay", "192.0.2.1"}, args...)); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	if c, err := parseUp([]string{"-underlay", "192.0.2.1", "-log-level", "warn"}); err != nil || c.level != slog.LevelWarn {
		t.Errorf("-log-level warn: level %v, %v", c.level, err)
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
		{[]string{"-underlay", "192.0.2.1", "-log-level", "verbose"}, `-log-level: expected debug, info, warn or error, got "verbose"`},
		{[]string{"-underlay", "192.0.2.1", "-mtu", "67"}, "-mtu must be 68 to 65414, got 67"},
		{[]string{"-underlay", "192.0.2.1", "-mtu", "-1"}, "-mtu must be 68 to 65414, got -1"},
		{[]string{"-underlay", "192.0.2.1", "-mtu", "65415"}, "-mtu must be 68 to 65414, got 65415"},
		{[]string{"-underlay", "192.0.2.1", "-mtu", "1279", "-addr", "10.0.0.1/24,fd00::1/64"}, "-mtu 1279 is below 1280, the least IPv6 takes, and fd00::1/64 is IPv6"},
		{[]string{"-underlay", "192.0.2.1", "-mtu", "1000", "-route", "fd00::/64"}, "fd00::/64 is IPv6"},
		{[]string{"-underlay", "192.0.2.1", "-name", "vnic-name-too-long"}, `-name: expected an interface name of 1 to 15 characters`},
		{[]string{"-underlay", "192.0.2.1", "-name", "a/b"}, `got "a/b"`},
		{[]string{"-underlay", "192.0.2.1", "-name", ""}, `-name: expected`},
	} {
		if _, err := parseUp(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one that mentions %q", tc.args, err, tc.want)
		}
	}
}

// TestParseUpMetrics: -metrics is off by default; a bare port listens on
// loopback, a host is taken as given, and a bad address is refused with
// an example; per-SA series are on unless -metrics-per-sa=false.
func TestParseUpMetrics(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		addr  string
		perSA bool
		err   string
	}{
		{args: nil, addr: "", perSA: true},
		{args: []string{"-metrics", "9477"}, addr: "127.0.0.1:9477", perSA: true},
		{args: []string{"--metrics=:9100", "-metrics-per-sa=false"}, addr: "127.0.0.1:9100"},
		{args: []string{"-metrics", "0.0.0.0:9477"}, addr: "0.0.0.0:9477", perSA: true},
		{args: []string{"-metrics", "[::1]:9477"}, addr: "[::1]:9477", perSA: true},
		{args: []string{"-metrics", "localhost"}, err: `vnic up: -metrics: expected a port like 9477, or a host and port like 127.0.0.1:9477`},
		{args: []string{"-metrics", "70000"}, err: `vnic up: -metrics: expected a port number from 1 to 65535, got "70000"`},
	} {
		c, err := parseUp(append([]string{"-underlay", "192.0.2.1"}, tc.args...))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one that says %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || c.metrics != tc.addr || c.metricsPerSA != tc.perSA {
			t.Errorf("%v: metrics %q, per SA %v, %v; want %q, %v", tc.args, c.metrics, c.metricsPerSA, err, tc.addr, tc.perSA)
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

// TestWarnMTU: an MTU above the underlay's minus the ESP overhead is taken,
// with a warning that larger packets travel in fragments.
func TestWarnMTU(t *testing.T) {
	for _, tc := range []struct {
		mtu, underlayMTU int
		warn             bool
	}{
		{20000, 1500, true},
		{1500 - offload.MaxOverhead + 1, 1500, true},
		{1500 - offload.MaxOverhead, 1500, false},
		{1280, 1500, false},
		{9000 - offload.MaxOverhead, 9000, false},
		{65414, 65536, false},
	} {
		var buf testutil.LockedBuffer
		warnMTU(slog.New(slog.NewTextHandler(&buf, nil)), tc.mtu, "eth0", tc.underlayMTU)
		got := buf.String()
		if tc.warn {
			for _, want := range []string{"level=WARN", "in fragments on the underlay", "works, but is slower",
				fmt.Sprintf("mtu=%d", tc.mtu), fmt.Sprintf("unfragmented_up_to=%d", tc.underlayMTU-offload.MaxOverhead),
				"underlay=eth0", fmt.Sprintf("underlay_mtu=%d", tc.underlayMTU)} {
				if !strings.Contains(got, want) {
					t.Errorf("-mtu %d on an underlay of %d: log %q does not say %q", tc.mtu, tc.underlayMTU, got, want)
				}
			}
		} else if got != "" {
			t.Errorf("-mtu %d on an underlay of %d: want no warning, got %q", tc.mtu, tc.underlayMTU, got)
		}
	}
}

// TestTUNBusy: the message for a TUN interface name another process
// holds says whether a vnic daemon answers on the name's socket, and to
// give -name; an EINVAL for a name no interface has stays as it is.
func TestTUNBusy(t *testing.T) {
	_, live := startTestDaemon(t)
	none := filepath.Join(t.TempDir(), "none.sock")
	busy := fmt.Errorf("create TUN interface vnic7: %w", unix.EBUSY)
	for _, tc := range []struct {
		name        string
		own, other  string // the daemon's socket, and the name's default one
		err         error
		want, avoid []string
	}{
		{"a daemon answers", "/run/vnic-test/x.sock", live, busy,
			[]string{"interface vnic7 is already in use by another vnic daemon, which answers on " + live,
				"`vnic --socket " + live + " caps`", "-name", "device or resource busy"}, []string{"probably"}},
		{"none answers", "/run/vnic-test/x.sock", none, busy,
			[]string{"interface vnic7 is already in use, probably by another vnic daemon (none answers on " + none, "-socket PATH",
				"give this one another interface name with -name", "device or resource busy"}, nil},
		// The daemon's own socket, which it holds, is not asked: it
		// would not answer before the device is up.
		{"own socket", live, live, busy, []string{"probably by another vnic daemon", "-name"}, []string{"which answers"}},
		{"other errors", "/run/vnic-test/x.sock", live, fmt.Errorf("create TUN interface vnic7: %w", unix.EPERM),
			[]string{"create TUN interface vnic7: operation not permitted"}, []string{"-name"}},
		{"invalid, no such interface", "/run/vnic-test/x.sock", live, fmt.Errorf("create TUN interface vnic-no-such: %w", unix.EINVAL),
			[]string{"create TUN interface vnic-no-such: invalid argument"}, []string{"-name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &upConfig{name: "vnic7", socket: tc.own}
			if strings.Contains(tc.err.Error(), "vnic-no-such") {
				cfg.name = "vnic-no-such"
			}
			start := time.Now()
			err := tunError(context.Background(), cfg, tc.other, tc.err)
			if !errors.Is(err, tc.err) {
				t.Errorf("%v does not wrap %v", err, tc.err)
			}
			checkSays(t, "error", err.Error(), tc.want, tc.avoid)
			if d := time.Since(start); d > probeTimeout {
				t.Errorf("took %v", d)
			}
		})
	}
}

// upInNetns is a config for serve in the test's own network namespace
// (testutil.EnterNetns): the underlay on loopback, files in a temporary
// directory.
func upInNetns(t *testing.T, args ...string) *upConfig {
	t.Helper()
	dir := t.TempDir()
	cfg, err := parseUp(append([]string{"-underlay", "127.0.0.1", "-socket", filepath.Join(dir, "vnic0.sock"),
		"-addr", "10.99.0.1/24"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serveErr runs serve, which is to fail at once, and returns its error.
func serveErr(t *testing.T, cfg *upConfig) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := serve(ctx, cfg, slog.New(slog.DiscardHandler))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("serve: %v, want it to fail at once", err)
	}
	return err
}

// TestServeRefusals: what `vnic up` says, in a network namespace of the
// test's own, when the underlay address is not there, when another daemon
// serves the socket, holds the UDP port or the interface, and when the
// interface name is taken by another kind of interface.
func TestServeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name        string
		setup       func(t *testing.T, cfg *upConfig) // before serve
		args        []string
		want, avoid []string
	}{
		{name: "underlay address not here", args: []string{"-underlay", "192.0.2.77"},
			want: []string{"no interface in this network namespace holds 192.0.2.77", "its addresses: ", "127.0.0.1 on lo", "::1 on lo",
				"give a local address that one of its interfaces holds"},
			avoid: []string{"invalid IP", "["}},
		{name: "underlay addresses not here", args: []string{"-underlay", "192.0.2.77", "-underlay", "2001:db8::77"},
			want: []string{"holds 192.0.2.77 or 2001:db8::77 ("}, avoid: []string{"invalid IP"}},
		{name: "socket served", setup: func(t *testing.T, cfg *upConfig) {
			_, cfg.socket = startTestDaemon(t)
		}, want: []string{"another vnic daemon is serving", "caps` asks it", "stop it first", "-name", "-socket PATH"}},
		{name: "UDP port taken", setup: func(t *testing.T, cfg *upConfig) {
			c, err := net.ListenPacket("udp4", "127.0.0.1:4500")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}, want: []string{"address already in use", "UDP port 4500", "another vnic daemon", "-udp-port"}},
		{name: "interface held", setup: func(t *testing.T, cfg *upConfig) {
			d, err := tun.Open(tun.Config{Name: "vnic0", MTU: 1400})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
		}, want: []string{"interface vnic0 is already in use, probably by another vnic daemon", "-name", "device or resource busy"}},
		{name: "interface of another kind", args: []string{"-name", "lo"},
			want: []string{"an interface named lo exists and is not a TUN interface", "-name"}},
		{name: "metrics port taken", args: []string{"-metrics", "9477"}, setup: func(t *testing.T, cfg *upConfig) {
			l, err := net.Listen("tcp", "127.0.0.1:9477")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, want: []string{"vnic up: -metrics 127.0.0.1:9477: cannot serve metrics: listen tcp 127.0.0.1:9477", "address already in use",
			"another socket holds that TCP port", "give -metrics another port"}},
		{name: "metrics address not here", args: []string{"-metrics", "192.0.2.77:9477"},
			want: []string{"-metrics 192.0.2.77:9477", "cannot assign requested address", "no interface in this network namespace holds that address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.EnterNetns(t)
			cfg := upInNetns(t, tc.args...)
			if tc.setup != nil {
				tc.setup(t, cfg)
			}
			err := serveErr(t, cfg).Error()
			checkSays(t, "error", err, tc.want, tc.avoid)
		})
	}
}

// TestServeNotify runs the daemon in a network namespace of the test's
// own under a pretend service manager: READY=1 comes once the socket
// answers, STOPPING=1 when the daemon stops; a manager that cannot be
// reached is logged and the daemon goes on. An -mtu above the underlay's
// is taken, with a warning.
func TestServeNotify(t *testing.T) {
	for _, tc := range []struct {
		name      string
		manager   bool // a notify socket the test holds; else one nobody listens on
		loMTU     int
		args      []string
		wantLog   []string
		avoidLogs []string
	}{
		{name: "notified, -mtu above the underlay's", manager: true, loMTU: 1500, args: []string{"-mtu", "20000"},
			wantLog:   []string{"level=WARN", "in fragments on the underlay", "mtu=20000", "unfragmented_up_to=1379", "underlay=lo"},
			avoidLogs: []string{"cannot tell"}},
		{name: "manager unreachable, default MTU", loMTU: 1500,
			wantLog:   []string{"mtu=1379", "cannot tell the service manager that vnic is ready", "cannot tell the service manager that vnic is stopping"},
			avoidLogs: []string{"fragments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo := testutil.EnterNetns(t)
			if err := netlink.LinkSetMTU(lo, tc.loMTU); err != nil {
				t.Fatal(err)
			}
			cfg := upInNetns(t, tc.args...)
			notifyPath := filepath.Join(t.TempDir(), "notify.sock")
			var mgr *net.UnixConn
			if tc.manager {
				var err error
				mgr, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
				if err != nil {
					t.Fatal(err)
				}
				defer mgr.Close()
			}
			t.Setenv(sdnotify.EnvSocket, notifyPath)
			var log testutil.LockedBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// The checks run beside the daemon: serve must run on the
			// test's goroutine, whose thread is in the test's network
			// namespace.
			checked := make(chan struct{})
			go func() {
				defer close(checked)
				defer cancel()
				if !tc.manager {
					if err := awaitDaemon(ctx, cfg.socket, 10*time.Second); err != nil {
						t.Errorf("a daemon that cannot notify does not answer: %v", err)
					}
					for i := 0; i < 1000 && !strings.Contains(log.String(), "cannot tell the service manager that vnic is ready"); i++ {
						time.Sleep(10 * time.Millisecond)
					}
					return
				}
				msg := readNotify(t, mgr)
				if !strings.HasPrefix(msg, "READY=1\nSTATUS=vnic0 up: MTU 20000, underlay [127.0.0.1] on lo, OID channel "+cfg.socket) {
					t.Errorf("first notification %q, want READY=1 and a status", msg)
				}
				// Ready means ready: the socket answers at once.
				qctx, qcancel := context.WithTimeout(ctx, time.Second)
				err := probe(qctx, cfg.socket)
				qcancel()
				if err != nil {
					t.Errorf("READY=1 came, but the socket does not answer at once: %v", err)
				}
				cancel()
				if msg := readNotify(t, mgr); msg != "STOPPING=1\nSTATUS=vnic0 stopping" {
					t.Errorf("second notification %q, want STOPPING=1", msg)
				}
			}()
			err := serve(ctx, cfg, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
			<-checked
			if err != nil {
				t.Errorf("serve: %v", err)
			}
			got := log.String()
			if t.Failed() {
				t.Logf("daemon log:\n%s", got)
			}
			checkSays(t, "log", got, tc.wantLog, tc.avoidLogs)
		})
	}
}

// TestServeMetrics runs the daemon with -metrics in a network namespace
// of the test's own: /metrics answers on loopback while it runs, with the
// device's counters, and the port is closed once it stops.
func TestServeMetrics(t *testing.T) {
	testutil.EnterNetns(t)
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Close()
	cfg := upInNetns(t, "-metrics", "9477")
	var log testutil.LockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// serve runs on the test's goroutine, whose thread is in the
	// namespace; the checks run on a thread of their own, which enters it.
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		defer cancel()
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		if err := awaitDaemon(ctx, cfg.socket, 10*time.Second); err != nil {
			t.Errorf("the daemon does not answer: %v", err)
			return
		}
		body, err := scrapeHere("127.0.0.1:9477")
		if err != nil {
			t.Errorf("GET /metrics: %v", err)
			return
		}
		for _, want := range []string{`vnic_packets_total{counter="InPackets"} 0`, "vnic_sa_offload_capacity 1024", "vnic_sas 0",
			`vnic_drops_total{counter="XfrmInNoStates"} 0`} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics does not say %q:\n%s", want, body)
			}
		}
	}()
	if err := serve(ctx, cfg, slog.New(slog.NewTextHandler(&log, nil))); err != nil {
		t.Errorf("serve: %v", err)
	}
	<-checked
	if !strings.Contains(log.String(), `msg="serving metrics" url=http://127.0.0.1:9477/metrics per_sa=true`) {
		t.Errorf("the log does not say where the metrics are:\n%s", log.String())
	}
	if c, err := net.Dial("tcp", "127.0.0.1:9477"); err == nil {
		c.Close()
		t.Error("127.0.0.1:9477 still listens after the daemon stopped")
	}
}

// scrapeHere GETs /metrics at addr over a connection made on the calling
// goroutine's thread, so in its network namespace (an http.Client would
// dial on a goroutine of its own).
func scrapeHere(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s", resp.Status)
	}
	return string(body), err
}

// readNotify reads one notification, waiting 10 s at most ("": none).
func readNotify(t *testing.T, c *net.UnixConn) string {
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Errorf("no notification: %v", err)
	}
	return string(buf[:n])
}

// checkSays fails the test for each of want that text (what it is: an
// error, a log) does not say, and each of avoid that it says.
func checkSays(t *testing.T, what, text string, want, avoid []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, text)
		}
	}
	for _, a := range avoid {
		if strings.Contains(text, a) {
			t.Errorf("%s says %q:\n%s", what, a, text)
		}
	}
}
