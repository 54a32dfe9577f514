// Package integration runs vnic daemons in network namespaces it creates
// and checks them end to end: vnic to vnic, vnic to an independent ESP
// implementation (scapy), the OID channel's semantics, and hostile
// underlay traffic. The tests need root; without it they skip, unless
// VNIC_REQUIRE_ROOT_TESTS=1 (as in CI), which turns the skip into a
// failure.
package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// vnicBin is the vnic binary TestMain builds.
var vnicBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("VNIC_REQUIRE_ROOT_TESTS") == "1" {
			fmt.Fprintln(os.Stderr, "integration tests need root, and VNIC_REQUIRE_ROOT_TESTS=1 forbids skipping them")
			return 1
		}
		fmt.Fprintln(os.Stderr, "integration: not root, skipping (set VNIC_REQUIRE_ROOT_TESTS=1 to fail instead)")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "vnic-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	vnicBin = filepath.Join(dir, "vnic")
	// The race runtime sleeps a second at exit by default: every CLI call
	// would take a second.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	out, err := exec.Command("go", "build", "-race", "-o", vnicBin, "vnic/cmd/vnic").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build vnic: %v\n%s", err, out)
		return 1
	}
	defer closeKernelPeer()
	return m.Run()
}

// needRoot skips (or, in CI, fails) a test that needs root.
func needRoot(t testing.TB) {
	t.Helper()
	testutil.NeedRoot(t, "network namespaces")
}

// needTool skips (or fails, with VNIC_REQUIRE_ROOT_TESTS=1) when a program
// the test runs is missing.
func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testutil.Unavailable(t, "%s is not installed", n)
		}
	}
}

// sh runs a command and fails the test if it fails.
func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tryCmd runs a command and returns its output and error.
func tryCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// host is one end: a network namespace with an underlay veth and,
// once started, a vnic daemon.
type host struct {
	ns     string
	veth   string
	u4, u6 string // underlay addresses
	sock   string
	daemon *exec.Cmd
	log    *testutil.LockedBuffer
}

// topology is two hosts joined by a veth.
type topology struct {
	a, b *host
}

// newTopology creates two namespaces with unique names, joined by a veth
// with IPv4 and IPv6 underlay addresses, and removes them when the test
// ends.
func newTopology(t testing.TB) *topology {
	t.Helper()
	needRoot(t)
	id := randHex(3)
	tp := &topology{
		a: &host{ns: "vnicA-" + id, veth: "ula", u4: "192.168.77.1", u6: "fd77::1"},
		b: &host{ns: "vnicB-" + id, veth: "ulb", u4: "192.168.77.2", u6: "fd77::2"},
	}
	t.Cleanup(func() { tp.close(t) })
	for _, h := range []*host{tp.a, tp.b} {
		sh(t, "ip", "netns", "add", h.ns)
		h.sock = filepath.Join("/run/vnic-it", h.ns, "vnic0.sock")
	}
	sh(t, "ip", "link", "add", "ula", "netns", tp.a.ns, "type", "veth", "peer", "name", "ulb", "netns", tp.b.ns)
	for _, h := range []*host{tp.a, tp.b} {
		tp.exec(t, h, "ip", "link", "set", "lo", "up")
		tp.exec(t, h, "ip", "link", "set", h.veth, "up")
		tp.exec(t, h, "ip", "addr", "add", h.u4+"/24", "dev", h.veth)
		tp.exec(t, h, "ip", "addr", "add", h.u6+"/64", "dev", h.veth, "nodad")
		// Transport mode delivers packets for the underlay address
		// through vnic0: a strict reverse-path filter would drop them.
		for _, k := range []string{"all", "default", h.veth} {
			tp.exec(t, h, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
		}
	}
	return tp
}

func (tp *topology) exec(t testing.TB, h *host, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"netns", "exec", h.ns}, args...)...)
}

func (tp *topology) close(t testing.TB) {
	for _, h := range []*host{tp.a, tp.b} {
		h.stop(t)
		exec.Command("ip", "netns", "del", h.ns).Run()
		os.RemoveAll(filepath.Dir(h.sock))
	}
}

// start runs `vnic up` in h's namespace with the given extra flags and
// waits until its OID channel answers.
func (h *host) start(t testing.TB, flags ...string) {
	t.Helper()
	h.startBin(t, vnicBin, flags...)
}

// startBin is start with the vnic binary bin.
func (h *host) startBin(t testing.TB, bin string, flags ...string) {
	t.Helper()
	args := append([]string{"netns", "exec", h.ns, bin, "up", "-underlay", h.u4, "-underlay", h.u6,
		"-socket", h.sock, "-log-level", "debug"}, flags...)
	h.log = &testutil.LockedBuffer{}
	h.daemon = exec.Command("ip", args...)
	h.daemon.Stdout, h.daemon.Stderr = h.log, h.log
	if err := h.daemon.Start(); err != nil {
		t.Fatalf("start vnic in %s: %v", h.ns, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := h.try("caps"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("vnic in %s did not come up:\n%s", h.ns, h.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon with SIGTERM and fails the test if it does not exit
// cleanly.
func (h *host) stop(t testing.TB) {
	if h.daemon == nil || h.daemon.Process == nil {
		return
	}
	h.daemon.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- h.daemon.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("vnic in %s exited with %v:\n%s", h.ns, err, h.log)
		}
	case <-time.After(10 * time.Second):
		h.daemon.Process.Kill()
		t.Errorf("vnic in %s did not stop on SIGINT:\n%s", h.ns, h.log)
	}
	if strings.Contains(h.log.String(), "DATA RACE") || strings.Contains(h.log.String(), "panic:") {
		t.Errorf("vnic in %s:\n%s", h.ns, h.log)
	}
	h.daemon = nil
}

// try runs the vnic CLI against h's daemon.
func (h *host) try(args ...string) (string, error) {
	return tryCmd(vnicBin, append([]string{"--socket", h.sock}, args...)...)
}

// vnic runs the vnic CLI against h's daemon and fails the test on error.
func (h *host) vnic(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.try(args...)
	if err != nil {
		t.Fatalf("vnic %s: %v\n%s\ndaemon log:\n%s", redact(strings.Join(args, " ")), err, out, h.log)
	}
	return out
}

// longHex is a run of hex digits long enough to be key material.
var longHex = regexp.MustCompile(`(0x)?[0-9a-fA-F]{16,}`)

// redact hides key material in a command line before it is printed.
func redact(s string) string { return longHex.ReplaceAllString(s, "[key]") }

// stats returns the daemon's global counters.
func (h *host) stats(t testing.TB) map[string]uint64 {
	t.Helper()
	var resp struct {
		Stats map[string]uint64 `json:"stats"`
	}
	out := h.vnic(t, "stats", "--json")
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return resp.Stats
}

// ping pings dst from h's namespace until count replies came back (10 s
// at most) and reports whether they did. src, when given, is the source
// address.
func (tp *topology) ping(h *host, dst string, count int, src ...string) (string, bool) {
	args := []string{"netns", "exec", h.ns, "ping", "-c", fmt.Sprint(count), "-i", "0.2", "-w", "10", "-q"}
	for _, s := range src {
		args = append(args, "-I", s)
	}
	out, err := tryCmd("ip", append(args, dst)...)
	return out, err == nil && strings.Contains(out, fmt.Sprintf("%d received", count))
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

var _ = context.Background
