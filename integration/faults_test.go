package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"vnic/internal/testutil"
	"vnic/oid"
)

// Faults under load: the daemon killed or stopped while traffic runs, the
// underlay interface going down and up, vnic0's MTU changing, and the
// control socket's own faults (silent, endless and too many clients).
// Loads are bounded (a ping of at most a few thousand packets, an iperf3
// of a few seconds); nothing asserts a speed.

// group is a command run in its own process group, so that stopping it
// stops what it started too (ip netns exec, timeout, iperf3).
type group struct {
	cmd  *exec.Cmd
	out  bytes.Buffer // read it only once done is closed
	done chan struct{}
}

func startGroup(t *testing.T, name string, args ...string) *group {
	t.Helper()
	g := &group{cmd: exec.Command(name, args...), done: make(chan struct{})}
	g.cmd.Stdout, g.cmd.Stderr = &g.out, &g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	t.Cleanup(g.kill)
	return g
}

// kill kills the whole group, unless the command has ended, and waits
// for the command. (A command that ends by itself has waited for its
// children: timeout does.)
func (g *group) kill() {
	select {
	case <-g.done:
		return
	default:
	}
	syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.done
}

// wait waits up to d for the command to end, then kills the group; it
// returns the output.
func (g *group) wait(d time.Duration) string {
	select {
	case <-g.done:
	case <-time.After(d):
		g.kill()
	}
	return g.out.String()
}

// load is traffic from A to B through vnic0: a fast ping and an iperf3
// TCP transfer, both bounded in time.
type load struct {
	ping, client, server *group
}

// startLoad runs, from A to dst, a ping every 10 ms and an iperf3 TCP
// transfer of about seconds s, and waits until packets go through A's
// engine.
func (tp *topology) startLoad(t *testing.T, dst string, seconds int) *load {
	t.Helper()
	l := &load{}
	l.ping = startGroup(t, "ip", "netns", "exec", tp.a.ns, "ping", "-q", "-i", "0.01", "-w", fmt.Sprint(seconds), dst)
	l.server = startGroup(t, "ip", "netns", "exec", tp.b.ns, "timeout", fmt.Sprint(seconds+40), "iperf3", "-s", "-1", "-p", "5201")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := tryCmd("ip", "netns", "exec", tp.b.ns, "ss", "-Hltn", "sport = :5201")
		if strings.TrimSpace(out) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("iperf3 server did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.client = startGroup(t, "ip", "netns", "exec", tp.a.ns, "timeout", fmt.Sprint(seconds+30),
		"iperf3", "-c", dst, "-p", "5201", "-t", fmt.Sprint(seconds))
	tp.a.waitOut(t, 4<<20) // the ping alone sends 8 KB/s: this is iperf3 going
	return l
}

// wait waits for the load to end (bounded by its own timeouts) and returns
// the outputs of ping and iperf3.
func (l *load) wait() (ping, iperf string) {
	ping, iperf = l.ping.wait(60*time.Second), l.client.wait(60*time.Second)
	l.server.wait(10 * time.Second)
	return ping, iperf
}

// stop ends the load now.
func (l *load) stop() {
	l.ping.kill()
	l.client.kill()
	l.server.kill()
}

// waitOut waits until h's engine has sent n more bytes.
func (h *host) waitOut(t *testing.T, n uint64) {
	t.Helper()
	start := h.stats(t)["OutBytes"]
	deadline := time.Now().Add(30 * time.Second)
	for h.stats(t)["OutBytes"] < start+n {
		if time.Now().After(deadline) {
			t.Fatalf("no traffic through vnic in %s: %v", h.ns, h.stats(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// oidWatch asks h's OID channel for the capabilities every 100 ms, each
// time on a new connection, and records what fails.
type oidWatch struct {
	stopc chan struct{}
	done  chan struct{}
	ok    atomic.Int64
	mu    sync.Mutex
	fails []string
}

func (h *host) watchOID(t *testing.T) *oidWatch {
	w := &oidWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	sock := h.sock
	go func() {
		defer close(w.done)
		for {
			err := func() error {
				c, err := oid.Dial(sock)
				if err != nil {
					return err
				}
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err = c.Capabilities(ctx)
				return err
			}()
			if err != nil {
				w.mu.Lock()
				w.fails = append(w.fails, time.Now().Format("15:04:05.000")+" "+err.Error())
				w.mu.Unlock()
			} else {
				w.ok.Add(1)
			}
			select {
			case <-w.stopc:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { w.end() })
	return w
}

func (w *oidWatch) end() {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	<-w.done
}

// check stops the watch and fails the test if a request failed.
func (w *oidWatch) check(t *testing.T, what string) {
	t.Helper()
	w.end()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.fails) > 0 || w.ok.Load() == 0 {
		t.Errorf("the OID channel did not keep answering %s: %d answers, %d failures: %v", what, w.ok.Load(), len(w.fails), w.fails)
	}
	t.Logf("OID channel %s: %d answers, no failure", what, w.ok.Load())
}

// signal sends sig to h's daemon and waits (up to 30 s) for it to exit; it
// returns how the daemon exited and its log.
func (h *host) signal(t *testing.T, sig syscall.Signal) (*os.ProcessState, time.Duration, string) {
	t.Helper()
	t0 := time.Now()
	if err := h.daemon.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.daemon.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.daemon.Process.Kill()
		<-done
		t.Fatalf("vnic in %s did not exit within 30 s of %v:\n%s", h.ns, sig, h.log)
	}
	st, log := h.daemon.ProcessState, h.log.String()
	h.daemon = nil
	if strings.Contains(log, "DATA RACE") || strings.Contains(log, "panic:") {
		t.Errorf("vnic in %s:\n%s", h.ns, log)
	}
	return st, time.Since(t0), log
}

// linkGone reports whether ns has no vnic0 (waiting up to 5 s for it to
// go).
func linkGone(ns string) bool {
	for range 50 {
		if _, err := tryCmd("ip", "-n", ns, "link", "show", "vnic0"); err != nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// aFlags are the flags startPair gives A's daemon.
func (tp *topology) aFlags() []string {
	return []string{"-addr", "10.7.0.1/24", "-addr", "fd07::1/64", "-route", tp.b.u4 + "/32", "-route", tp.b.u6 + "/128"}
}

var tunnel44 = path{mode: "tunnel", outer: 4, inner: 4, udp: true, algo: "aead rfc4106(gcm(aes)) 0xKEY20 128"}

// TestFaultSIGTERMUnderLoad stops A's daemon with SIGTERM while ping and
// iperf3 run through it: it exits 0 without delay, and takes vnic0 and
// its socket with it.
func TestFaultSIGTERMUnderLoad(t *testing.T) {
	needTool(t, "ping", "iperf3", "ss")
	tp := newTopology(t)
	tp.startPair(t)
	tp.install(t, tunnel44, 0x5000) // A's SAs go with A; B's stay
	l := tp.startLoad(t, "10.7.0.2", 8)

	st, took, log := tp.a.signal(t, syscall.SIGTERM)
	t.Logf("SIGTERM to exit: %v", took)
	if !st.Success() {
		t.Errorf("vnic exited with %v after SIGTERM under load:\n%s", st, log)
	}
	if !strings.Contains(log, `msg="vnic down"`) {
		t.Errorf("no clean shutdown in the log:\n%s", log)
	}
	if !linkGone(tp.a.ns) {
		t.Errorf("vnic0 is still there after the daemon exited")
	}
	if _, err := os.Lstat(tp.a.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is still there after the daemon exited: %v", err)
	}
	l.stop()
	if _, err := tp.b.try("caps"); err != nil {
		t.Errorf("B stopped answering: %v", err)
	}
}

// TestFaultSIGKILLRestart kills A's daemon with SIGKILL under load and
// starts it again: the stale socket does not stop it, it holds no SA, and
// every answer carries a new generation, so that a host can tell. A new
// pair of SAs then carries traffic again.
func TestFaultSIGKILLRestart(t *testing.T) {
	needTool(t, "ping", "iperf3", "ss")
	tp := newTopology(t)
	a, b := tp.a, tp.b
	tp.startPair(t)
	tp.install(t, tunnel44, 0x5100)
	gen1 := a.generation(t)
	old, err := oid.Dial(a.sock) // a host's connection, open across the kill
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.Capabilities(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := tp.startLoad(t, "10.7.0.2", 8)

	st, _, _ := a.signal(t, syscall.SIGKILL)
	if st.Success() {
		t.Fatalf("vnic exited with %v after SIGKILL", st)
	}
	fi, err := os.Lstat(a.sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("expected a stale socket after SIGKILL: %v", err)
	}
	if !linkGone(a.ns) {
		t.Fatalf("vnic0 outlived its daemon")
	}
	l.stop()
	// The host's connection is dead, and says so.
	if _, err := old.Capabilities(context.Background()); err == nil {
		t.Error("a connection to the killed daemon still answers")
	}

	a.start(t, tp.aFlags()...)
	var caps oid.CapabilitiesResponse
	out := a.vnic(t, "--json", "caps")
	if err := json.Unmarshal([]byte(out), &caps); err != nil {
		t.Fatalf("caps --json: %v\n%s", err, out)
	}
	gen2 := caps.Generation
	if caps.Capabilities.Vnic.SaCount != 0 || gen2 == gen1 || caps.Capabilities.Vnic.Generation != gen2 || gen2 == 0 {
		t.Errorf("after a restart: SaCount %d, generation %d (capabilities %d), before %d: want 0 SAs and a new generation",
			caps.Capabilities.Vnic.SaCount, gen2, caps.Capabilities.Vnic.Generation, gen1)
	}
	if out := a.vnic(t, "sa", "list"); strings.Contains(out, "0x0000510") {
		t.Errorf("the restarted daemon lists SAs:\n%s", out)
	}
	// Every answer carries the generation: successes, failures, bad lines,
	// an over-long line.
	reqs := []string{
		`{"id":1,"oid":"OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"}`,
		`{"id":2,"oid":"VNIC_QUERY_SA"}`,
		`{"id":3,"oid":"VNIC_STATISTICS"}`,
		`{"id":4,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA","handles":[1]}`,
		`{"id":5,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA","handle":1,"Spi":4096,"SequenceNumberHighOrder":1}`,
		`{"id":6,"oid":"VNIC_REQUEST_DELETE","handle":1}`,
		`{"id":7,"oid":"OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA","sas":[{"direction":"out"}]}`,
		`{"id":8,"oid":"OID_NOPE"}`,
		`not json`,
		`{"id":9,"pad":"` + strings.Repeat("x", oid.MaxRequest) + `"}`,
		`{"id":10,"oid":"VNIC_SUBSCRIBE_EVENTS"}`,
	}
	want := strconv.FormatUint(gen2, 10)
	for i, m := range rawExchange(t, a.sock, reqs...) {
		if g, _ := m["generation"].(json.Number); g.String() != want {
			t.Errorf("answer to request %d has generation %v, want %s: %v", i, m["generation"], want, m)
		}
	}
	var seen oid.Header
	for _, args := range [][]string{{"--json", "stats"}, {"--json", "sa", "list"}, {"--json", "sa", "show", "1"}} {
		out, _ := a.try(args...) // stdout and stderr: the JSON line comes first
		if err := json.NewDecoder(strings.NewReader(out)).Decode(&seen); err != nil || seen.Generation != gen2 {
			t.Errorf("vnic %s: generation %d, want %d (%v)\n%s", strings.Join(args, " "), seen.Generation, gen2, err, out)
		}
	}

	// The host rekeys: B drops its SAs, both get a new pair, and traffic
	// flows through the new daemon.
	var list oid.QuerySAResponse
	if err := json.Unmarshal([]byte(b.vnic(t, "--json", "sa", "list")), &list); err != nil {
		t.Fatal(err)
	}
	for _, sa := range list.SAs {
		b.vnic(t, "sa", "del", fmt.Sprint(sa.Handle))
	}
	tp.install(t, tunnel44, 0x5200)
	pingUntil(t, tp, a, "10.7.0.2", 60*time.Second)
}

// rawExchange sends each line on one connection to sock and returns the
// answers, decoded.
func rawExchange(t *testing.T, sock string, reqs ...string) []map[string]any {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 1<<20)
	var out []map[string]any
	for _, req := range reqs {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		// The daemon may answer before it has read all of a long line.
		written := make(chan error, 1)
		go func() {
			_, err := c.Write([]byte(req + "\n"))
			written <- err
		}()
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("no answer to %.60s...: %v", req, err)
		}
		if err := <-written; err != nil {
			t.Fatalf("send %.60s...: %v", req, err)
		}
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("answer is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// TestFaultUnderlayDownUp takes A's underlay interface down and up while
// traffic runs: the daemon stays up and keeps answering, and traffic
// resumes once the interface is back.
func TestFaultUnderlayDownUp(t *testing.T) {
	needTool(t, "ping", "iperf3", "ss")
	tp := newTopology(t)
	a := tp.a
	tp.startPair(t)
	del := tp.install(t, tunnel44, 0x5300)
	w := a.watchOID(t)
	l := tp.startLoad(t, "10.7.0.2", 8)

	tp.exec(t, a, "ip", "link", "set", a.veth, "down")
	time.Sleep(2 * time.Second)
	before := a.stats(t)
	time.Sleep(time.Second)
	during := a.stats(t)
	t.Logf("while the underlay is down: VnicOutSendError %d -> %d, OutPackets %d -> %d",
		before["VnicOutSendError"], during["VnicOutSendError"], before["OutPackets"], during["OutPackets"])
	tp.exec(t, a, "ip", "link", "set", a.veth, "up")
	pingUntil(t, tp, a, "10.7.0.2", 60*time.Second)
	l.wait()
	w.check(t, "across the underlay going down and up")

	// Going down flushed the IPv6 underlay address (the kernel's default,
	// keep_addr_on_down=0); once an operator puts it back, the daemon's
	// IPv6 sockets carry ESP again.
	if out := tp.exec(t, a, "ip", "-6", "addr", "show", "dev", a.veth); !strings.Contains(out, a.u6) {
		t.Logf("the kernel removed %s from %s when it went down; adding it again", a.u6, a.veth)
		tp.exec(t, a, "ip", "addr", "add", a.u6+"/64", "dev", a.veth, "nodad")
	}
	del()
	p6 := tunnel44
	p6.outer = 6
	defer tp.install(t, p6, 0x5310)()
	pingUntil(t, tp, a, "10.7.0.2", 60*time.Second)
}

// pingUntil pings dst from h until 3 replies come back in one run of
// ping, for at most d.
func pingUntil(t *testing.T, tp *topology, h *host, dst string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, _ := tryCmd("ip", "netns", "exec", h.ns, "ping", "-c", "3", "-i", "0.2", "-w", "10", dst)
		if received(out) >= 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping %s did not work again within %v:\n%s\nstats: %v", dst, d, out, h.stats(t))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

var (
	mtuRE      = regexp.MustCompile(`\bmtu (\d+)`)
	receivedRE = regexp.MustCompile(`(\d+) received`)
)

// received is how many replies ping says came back.
func received(out string) int {
	m := receivedRE.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func (tp *topology) mtu(t *testing.T, h *host) int {
	t.Helper()
	m := mtuRE.FindStringSubmatch(tp.exec(t, h, "ip", "link", "show", "vnic0"))
	if m == nil {
		t.Fatal("no MTU in ip link show vnic0")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestFaultMTUChange lowers A's vnic0 MTU to 1300 while traffic runs,
// raises it to 9000 (far above the underlay's), and puts it back, each
// while traffic runs: the daemon stays up, the OID channel answers, and
// packets that fit go through. A packet larger than the lowered MTU never
// reaches the daemon from the kernel (refused with DF, fragmented
// without); a peer's packet larger than A's new MTU is still delivered
// into vnic0; at 9000 an 8028-byte packet crosses, its ESP-in-UDP datagram
// fragmented on the underlay.
func TestFaultMTUChange(t *testing.T) {
	needTool(t, "ping", "iperf3", "ss")
	tp := newTopology(t)
	a, b := tp.a, tp.b
	tp.startPair(t)
	tp.install(t, tunnel44, 0x5400)
	orig := tp.mtu(t, a)
	w := a.watchOID(t)
	pingSize := func(h *host, dst string, size int, df bool) (string, bool) {
		args := []string{"netns", "exec", h.ns, "ping", "-c", "3", "-i", "0.2", "-w", "20", "-s", fmt.Sprint(size)}
		if df {
			args = append(args, "-M", "do")
		}
		out, err := tryCmd("ip", append(args, dst)...)
		// With -w, ping may send a fourth before the third reply is in.
		return out, err == nil && received(out) >= 3
	}

	l := tp.startLoad(t, "10.7.0.2", 6)
	time.Sleep(time.Second)
	tp.exec(t, a, "ip", "link", "set", "vnic0", "mtu", "1300")
	if _, iperf := l.wait(); !strings.Contains(iperf, "receiver") {
		t.Errorf("iperf3 across the change to MTU 1300:\n%s", iperf)
	}
	sendErr := a.stats(t)["VnicOutSendError"]
	if out, ok := pingSize(a, "10.7.0.2", 1300-28, true); !ok {
		t.Errorf("a 1300-byte packet with DF through vnic0 at MTU 1300:\n%s", out)
	}
	out, ok := pingSize(a, "10.7.0.2", 1300-28+1, true)
	if ok || !strings.Contains(out, "mtu=1300") {
		t.Errorf("a 1301-byte packet with DF: want the kernel's local error naming mtu=1300:\n%s", out)
	}
	if out, ok := pingSize(a, "10.7.0.2", 3000, false); !ok {
		t.Errorf("a 3028-byte ping, fragmented to the new MTU:\n%s", out)
	}
	// B sends full-size packets (its MTU is still orig): A's daemon hands
	// them to a vnic0 whose MTU is now smaller, and the kernel takes them.
	if out, ok := pingSize(b, "10.7.0.1", orig-28, true); !ok {
		t.Errorf("a %d-byte packet from B into A's vnic0 at MTU 1300:\n%s", orig, out)
	}
	if got := a.stats(t)["VnicOutSendError"]; got != sendErr {
		t.Errorf("A failed to send %d packets at MTU 1300 (something oversize?)", got-sendErr)
	}

	// Raised far above the underlay's: the daemon reads packets of any
	// size, and its ESP-in-UDP datagrams larger than the underlay MTU go
	// out as IP fragments, which B reassembles.
	l = tp.startLoad(t, "10.7.0.2", 6)
	time.Sleep(time.Second)
	tp.exec(t, a, "ip", "link", "set", "vnic0", "mtu", "9000")
	l.wait()
	if out, ok := pingSize(a, "10.7.0.2", 8000, true); !ok {
		t.Errorf("an 8028-byte packet with DF through vnic0 at MTU 9000:\n%s", out)
	}

	l = tp.startLoad(t, "10.7.0.2", 6)
	time.Sleep(time.Second)
	tp.exec(t, a, "ip", "link", "set", "vnic0", "mtu", fmt.Sprint(orig))
	if _, iperf := l.wait(); !strings.Contains(iperf, "receiver") {
		t.Errorf("iperf3 across the change back to MTU %d:\n%s", orig, iperf)
	}
	if out, ok := pingSize(a, "10.7.0.2", orig-28, true); !ok {
		t.Errorf("a %d-byte packet with DF after the MTU went back to %d:\n%s", orig, orig, out)
	}
	w.check(t, "across the MTU changes")
}

const mib = 1 << 20

// plainBin builds vnic without the race detector, whose shadow memory
// would swamp the memory figures.
func plainBin(t testing.TB) string {
	t.Helper()
	bin := t.TempDir() + "/vnic"
	if out, err := exec.Command("go", "build", "-o", bin, "vnic/cmd/vnic").CombinedOutput(); err != nil {
		t.Fatalf("build vnic: %v\n%s", err, out)
	}
	return bin
}

// TestControlSocketFaults runs the control socket's faults against a real
// daemon (built without the race detector, so that its memory figures
// mean something; the unit tests in oid/ run the same server code with
// it): a client that connects and never sends stays connected (the idle
// timeout is 5 minutes) without holding anyone up; a 100 MB line without
// a newline is refused early and skipped; 1000 clients at once, each in
// the middle of a 256 KiB request, are served up to the connection limit
// and refused clearly beyond it (the CLI too); and the daemon's memory
// stays bounded through all of it.
func TestControlSocketFaults(t *testing.T) {
	tp := newTopology(t)
	a := tp.a
	a.startBin(t, plainBin(t))
	pid := a.daemon.Process.Pid // ip netns exec execs vnic: this is the daemon
	for range 5 {
		a.vnic(t, "stats") // warm up
	}
	rss0, hwm0 := testutil.ProcStatus(t, pid)

	silent, err := net.Dial("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// 100 MB without a newline.
	huge, err := net.Dial("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		chunk := bytes.Repeat([]byte("k"), 64<<10)
		copy(chunk, `{"id":1,"oid":"VNIC_STATISTICS","pad":"`)
		huge.SetWriteDeadline(time.Now().Add(5 * time.Minute))
		for n := 0; n < 100<<20; n += len(chunk) {
			if _, err := huge.Write(chunk); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	r := bufio.NewReader(huge)
	huge.SetReadDeadline(time.Now().Add(5 * time.Minute))
	line, err := r.ReadBytes('\n')
	var m map[string]any
	if err != nil || json.Unmarshal(line, &m) != nil || m["status"] != "NDIS_STATUS_INVALID_DATA" ||
		!strings.Contains(fmt.Sprint(m["reason"]), "longer than 1048576 bytes") {
		t.Errorf("answer to a 100 MB line: %v %q", err, line)
	}
	if _, err := a.try("caps"); err != nil {
		t.Errorf("the CLI during a 100 MB line: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending 100 MB: %v", err)
	}
	huge.Write([]byte("\n" + `{"id":2,"oid":"VNIC_STATISTICS"}` + "\n"))
	line, err = r.ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), `"id":2,"status":"NDIS_STATUS_SUCCESS"`) {
		t.Errorf("the request after a 100 MB line: %v %.200s", err, line)
	}
	huge.Close()
	rss1, hwm1 := testutil.ProcStatus(t, pid)

	// 1000 clients at once, each sending the first 256 KiB of a request
	// (a capabilities request padded with blanks), then, once all have,
	// the rest of it.
	const clients = 1000
	crowd := testutil.NewCrowd(a.sock, clients, 256<<10, time.Minute)
	// All connected: the CLI is refused, and says why.
	out, err := a.try("caps")
	if err == nil || !strings.Contains(out, "too many connections") || !strings.Contains(out, "NDIS_STATUS_RESOURCES") {
		t.Errorf("the CLI with %d connections open: %v\n%s", clients, err, out)
	}
	t.Logf("the CLI with %d connections open: %s", clients, strings.TrimSpace(out))
	time.Sleep(500 * time.Millisecond) // let the daemon read what is on its sockets
	rss2, hwm2 := testutil.ProcStatus(t, pid)
	served, refused, other := crowd.Finish()
	crowd.Close()
	t.Logf("%d clients: %d served, %d refused", clients, served, refused)
	for _, o := range other {
		t.Errorf("a client got neither an answer nor a refusal: %s", o)
	}
	// The silent client holds a slot; so may, for a moment, the 100 MB
	// client and a CLI call that have just closed.
	if served > oid.DefaultMaxConns-1 || served < oid.DefaultMaxConns-3 || served+refused != clients {
		t.Errorf("served %d, refused %d: want %d served (the limit, less the silent client) and the rest refused", served, refused, oid.DefaultMaxConns-1)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := a.try("caps"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon does not serve again after the 1000 clients left")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The silent client is still connected, and was never in anyone's
	// way.
	silent.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the silent client: %v, want it still connected", err)
	}
	silent.Close()
	rss3, hwm3 := testutil.ProcStatus(t, pid)
	t.Logf("daemon VmRSS/VmHWM MiB: start %.1f/%.1f, after the 100 MB line %.1f/%.1f, 1000 clients connected %.1f/%.1f, after %.1f/%.1f",
		float64(rss0)/mib, float64(hwm0)/mib, float64(rss1)/mib, float64(hwm1)/mib, float64(rss2)/mib, float64(hwm2)/mib, float64(rss3)/mib, float64(hwm3)/mib)
	// The bounds. The 100 MB line: a 64 KiB buffer and a line of at most
	// 1 MiB (append doubles it on the way: 2 MiB at most); 16 MiB leaves
	// room for the runtime. The 1000 clients: 64 served (the limit), each
	// with a 64 KiB buffer, a 256 KiB line (up to 512 KiB as append grows
	// it) and, once it ends, the JSON decoder's copy of it: under 80 MiB
	// live, and 128 MiB of peak RSS leaves room for the garbage
	// collector's slack, while the 1000 lines and buffers of a server
	// without the limit (over 600 MiB) do not fit.
	if hwm1-hwm0 > 16*mib {
		t.Errorf("a 100 MB line raised the daemon's peak RSS by %.1f MiB, want less than 16 MiB", float64(hwm1-hwm0)/mib)
	}
	if hwm3-hwm0 > 128*mib {
		t.Errorf("the daemon's peak RSS grew by %.1f MiB through the control socket's faults, want less than 128 MiB", float64(hwm3-hwm0)/mib)
	}
	a.stop(t)
}

// TestUnprivilegedCLI runs the CLI as user nobody against a real daemon:
// the socket (mode 0600, owned by root) keeps it out, and when the socket
// is opened up, the daemon's SO_PEERCRED check does; both say so clearly.
func TestUnprivilegedCLI(t *testing.T) {
	tp := newTopology(t)
	a := tp.a
	// A socket directory nobody may enter but not list, so that only the
	// socket's own mode decides.
	dir, err := os.MkdirTemp("/run", "vnic-it-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	a.sock = dir + "/vnic0.sock" // removed with the topology
	a.start(t)
	fi, err := os.Stat(a.sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Errorf("socket %s: %v owned by uid %d, want a socket with mode 0600 owned by root", a.sock, fi.Mode(), st.Uid)
	}
	// A copy of the CLI that nobody may run (the test's build directory
	// is private).
	bdir, err := os.MkdirTemp("", "vnic-it-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bdir)
	os.Chmod(bdir, 0o755)
	bin := bdir + "/vnic"
	b, err := os.ReadFile(vnicBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"--socket", a.sock}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return out.String(), 0
		case errors.As(err, &ee):
			return out.String(), ee.ExitCode()
		}
		t.Fatalf("run the CLI as nobody: %v", err)
		return "", 0
	}
	// Sanity: nobody can run it.
	if out, code := asNobody("--help"); code != 0 {
		t.Fatalf("the CLI does not run as nobody (%d):\n%s", code, out)
	}

	// The socket's mode refuses.
	for _, args := range [][]string{{"caps"}, {"--json", "caps"}, {"sa", "list"}} {
		out, code := asNobody(args...)
		if code == 0 || !strings.Contains(out, "permission denied") || !strings.Contains(out, "root") {
			t.Errorf("vnic %s as nobody, socket 0600: exit %d, want a failure saying permission denied, for root:\n%s", strings.Join(args, " "), code, out)
		}
		t.Logf("vnic %s as nobody, socket 0600: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(out))
	}

	// Opened up, the socket lets nobody connect; SO_PEERCRED refuses.
	if err := os.Chmod(a.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"caps"}, {"sa", "list"}, {"sa", "del", "1"}} {
		out, code := asNobody(args...)
		if code == 0 || !strings.Contains(out, oid.ReasonPermission) {
			t.Errorf("vnic %s as nobody, socket 0666: exit %d, want the daemon's refusal %q:\n%s", strings.Join(args, " "), code, oid.ReasonPermission, out)
		}
		t.Logf("vnic %s as nobody, socket 0666: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(out))
	}
	os.Chmod(a.sock, 0o600)
	// Root is served all along.
	a.vnic(t, "caps")
	log := a.log
	a.stop(t)
	if !strings.Contains(log.String(), "connection refused") || !strings.Contains(log.String(), "uid=65534") {
		t.Errorf("the daemon did not log the refusals:\n%s", log)
	}
}
