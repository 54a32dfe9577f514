package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vnic/oid"
)

// events subscribes to h's event stream and collects the events.
type events struct {
	mu   sync.Mutex
	list []oid.EventMessage
}

func (h *host) subscribe(t *testing.T) *events {
	t.Helper()
	c, err := oid.Dial(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{}
	ready := make(chan struct{})
	go func() {
		close(ready)
		c.Subscribe(ctx, func(m oid.EventMessage) {
			ev.mu.Lock()
			ev.list = append(ev.list, m)
			ev.mu.Unlock()
		})
	}()
	<-ready
	time.Sleep(100 * time.Millisecond) // let the subscription reach the daemon
	t.Cleanup(func() { cancel(); c.Close() })
	return ev
}

// wait returns the first event of type typ for handle h (0: any), waiting
// up to 5 s.
func (ev *events) wait(t *testing.T, typ string, h uint64) oid.EventMessage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ev.mu.Lock()
		for _, m := range ev.list {
			if string(m.Event.Type) == typ && (h == 0 || uint64(m.Event.Handle) == h) {
				ev.mu.Unlock()
				return m
			}
		}
		ev.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	t.Fatalf("no %s event for handle %d; events: %+v", typ, h, ev.list)
	return oid.EventMessage{}
}

// saJSON returns h's view of SA handle.
func (h *host) saJSON(t *testing.T, handle string) oid.SAInfo {
	t.Helper()
	var resp oid.QuerySAResponse
	out := h.vnic(t, "--json", "sa", "show", handle)
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.SAs) != 1 {
		t.Fatalf("sa show %s: %v\n%s", handle, err, out)
	}
	return resp.SAs[0]
}

func atoi(t *testing.T, s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOIDSemantics checks the NDIS contract end to end, through the CLI
// and the Go client against a running daemon with traffic.
func TestOIDSemantics(t *testing.T) {
	needTool(t, "ping")
	tp := newTopology(t)
	tp.startPair(t, "-capacity", "3")
	p := path{mode: "tunnel", outer: 4, inner: 4, udp: true, algo: algorithms[0].words}

	t.Run("capacity", func(t *testing.T) {
		del := tp.install(t, p, 0x3000) // two SAs in A
		defer del()
		c, err := oid.Dial(tp.a.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bundle := func(spi uint32) oid.SA {
			return oid.SA{Direction: "in", SrcAddr: tp.b.u4, DestAddr: tp.a.u4,
				SecAssoc: []oid.SecAssoc{{Spi: spi, EncryptionAlgorithm: oid.AlgorithmInfo{Identifier: 0x8}}},
				KeyData:  oid.Key(make([]byte, 20))}
		}
		res, err := c.AddSA(context.Background(), bundle(0x3100), bundle(0x3101))
		if err != nil {
			t.Fatalf("ADD_SA with one element over capacity must succeed overall: %v", err)
		}
		if len(res) != 2 || res[0].Handle == 0 || res[0].Status != "NDIS_STATUS_SUCCESS" {
			t.Fatalf("first element: %+v", res)
		}
		if res[1].Handle != 0 || res[1].Status != "NDIS_STATUS_RESOURCES" || !strings.Contains(res[1].Reason, "3") {
			t.Fatalf("second element must get a null handle and NDIS_STATUS_RESOURCES: %+v", res[1])
		}
		if _, err := c.DeleteSA(context.Background(), res[0].Handle); err != nil {
			t.Fatal(err)
		}
		if out, ok := tp.ping(tp.a, "10.7.0.2", 2); !ok {
			t.Fatalf("traffic stopped at capacity:\n%s", out)
		}
	})

	t.Run("update-esn", func(t *testing.T) {
		q := p
		q.extraWords = []string{"flag", "esn", "seq-hi", "5"}
		del := tp.install(t, q, 0x3200)
		defer del()
		if out, ok := tp.ping(tp.a, "10.7.0.2", 2); !ok {
			t.Fatalf("ping before UPDATE_SA:\n%s", out)
		}
		aOut, bIn := tp.handleOf(t, tp.a, "out", 0x3200), tp.handleOf(t, tp.b, "in", 0x3200)
		tp.a.vnic(t, "sa", "update", aOut, "seq-hi", "9")
		tp.b.vnic(t, "sa", "update", bIn, "seq-hi", "9")
		if out, ok := tp.ping(tp.a, "10.7.0.2", 3); !ok {
			t.Fatalf("ping after UPDATE_SA:\n%s\nB: %v", out, tp.b.stats(t))
		}
		if got := tp.a.saJSON(t, aOut).SeqHigh; got != 9 {
			t.Errorf("A's outbound SA sends with high bits %d, want 9", got)
		}
		if got := tp.b.saJSON(t, bIn).SeqHigh; got != 9 {
			t.Errorf("B's inbound SA is at high bits %d, want 9", got)
		}
		if out, err := tp.a.try("sa", "update", aOut, "seq-hi", "8"); err == nil || !strings.Contains(out, "NDIS_STATUS_INVALID_PARAMETER") && !strings.Contains(out, "backwards") {
			t.Errorf("moving the high bits back must fail with INVALID_PARAMETER: %v %s", err, out)
		}
	})

	t.Run("update-non-esn-refused", func(t *testing.T) {
		del := tp.install(t, p, 0x3300)
		defer del()
		out, err := tp.a.try("sa", "update", tp.handleOf(t, tp.a, "out", 0x3300), "seq-hi", "1")
		if err == nil || !strings.Contains(out, "extended sequence numbers") {
			t.Fatalf("UPDATE_SA on a non-ESN SA: %v %s", err, out)
		}
	})

	t.Run("exhaustion", func(t *testing.T) {
		ev := tp.a.subscribe(t)
		q := p
		q.extraWords = []string{"seq", "0xfffffff6"} // 10 numbers left, below the warning threshold
		del := tp.install(t, q, 0x3400)
		aOut := tp.handleOf(t, tp.a, "out", 0x3400)
		if out, ok := tp.ping(tp.a, "10.7.0.2", 3); !ok {
			t.Fatalf("an SA near exhaustion must keep working:\n%s", out)
		}
		m := ev.wait(t, "SaDeleteReq", atoi(t, aOut))
		if !strings.Contains(m.Event.Reason, "exhaustion") {
			t.Errorf("SaDeleteReq reason %q", m.Event.Reason)
		}
		if !tp.a.saJSON(t, aOut).DeleteRequested {
			t.Error("the SA is not marked delete-requested")
		}
		// Use up the rest: 10 numbers in all, so the 11th echo fails.
		tp.ping(tp.a, "10.7.0.2", 7)
		before := tp.a.stats(t)["XfrmOutStateSeqError"]
		if out, err := tryCmd("ip", "netns", "exec", tp.a.ns, "ping", "-c", "1", "-w", "1", "10.7.0.2"); err == nil {
			t.Fatalf("a ping went out past the last sequence number:\n%s", out)
		}
		if got := tp.a.stats(t)["XfrmOutStateSeqError"]; got <= before {
			t.Errorf("XfrmOutStateSeqError %d, want more than %d", got, before)
		}
		if last := tp.a.saJSON(t, aOut).Seq; last != 0xffffffff {
			t.Errorf("last sequence number %#x, want 0xffffffff", last)
		}
		del() // the host deletes; the device kept the SA until now
		if out := tp.a.vnic(t, "sa", "list"); strings.Contains(out, "0x00003400") {
			t.Errorf("SA still listed after DELETE_SA:\n%s", out)
		}
	})

	t.Run("request-delete", func(t *testing.T) {
		ev := tp.a.subscribe(t)
		del := tp.install(t, p, 0x3500)
		defer del()
		aIn := tp.handleOf(t, tp.a, "in", 0x3501)
		tp.a.vnic(t, "sa", "request-delete", aIn)
		m := ev.wait(t, "SaDeleteReq", atoi(t, aIn))
		if m.Event.Reason != "operator request" {
			t.Errorf("reason %q", m.Event.Reason)
		}
		if out, ok := tp.ping(tp.a, "10.7.0.2", 2); !ok {
			t.Fatalf("the device must keep an SA it asked to delete:\n%s", out)
		}
	})

	t.Run("delete-while-traffic-flows", func(t *testing.T) {
		del := tp.install(t, p, 0x3600)
		flood := startBackground(t, "ip", "netns", "exec", tp.a.ns, "ping", "-c", "400", "-i", "0.005", "-w", "4", "-q", "10.7.0.2")
		time.Sleep(500 * time.Millisecond)
		del()
		flood.wait(t, 15*time.Second)
		in := tp.b.stats(t)["InPackets"]
		tryCmd("ip", "netns", "exec", tp.a.ns, "ping", "-c", "1", "-w", "1", "10.7.0.2")
		if got := tp.b.stats(t)["InPackets"]; got != in {
			t.Errorf("B received %d packets after the SAs were deleted", got-in)
		}
		if _, err := tp.a.try("caps"); err != nil {
			t.Fatalf("daemon A stopped answering: %v\n%s", err, tp.a.log)
		}
		if !strings.Contains(flood.out.String(), "received") {
			t.Errorf("ping flood output: %s", flood.out)
		}
	})
}

// handleOf finds the handle of h's SA with direction dir and SPI spi.
func (tp *topology) handleOf(t *testing.T, h *host, dir string, spi int) string {
	t.Helper()
	var resp oid.QuerySAResponse
	out := h.vnic(t, "--json", "sa", "list")
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("sa list --json: %v\n%s", err, out)
	}
	for _, sa := range resp.SAs {
		if sa.SPI == uint32(spi) && strings.HasPrefix(sa.Direction, dir) {
			return strconv.FormatUint(sa.Handle, 10)
		}
	}
	t.Fatalf("no %s SA with SPI %#x in %s:\n%s", dir, spi, h.ns, out)
	return ""
}

// TestDaemonLifecycle: SIGTERM removes the device and the socket; a
// daemon killed with SIGKILL leaves a stale socket that does not stop the
// next start, which begins with no SAs and a new generation.
func TestDaemonLifecycle(t *testing.T) {
	tp := newTopology(t)
	a := tp.a
	a.start(t)
	fi, err := os.Stat(a.sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v, want a socket with mode 0600", a.sock, err, fi.Mode())
	}
	tp.exec(t, a, "ip", "link", "show", "vnic0")
	gen1 := a.generation(t)
	a.stop(t)
	if _, err := os.Stat(a.sock); !os.IsNotExist(err) {
		t.Errorf("socket left after SIGINT: %v", err)
	}
	if out, err := tryCmd("ip", "netns", "exec", a.ns, "ip", "link", "show", "vnic0"); err == nil {
		t.Errorf("vnic0 left after SIGINT:\n%s", out)
	}

	a.start(t)
	a.addSA(t, append([]string{"dir", "out", "src", a.u4, "dst", tp.b.u4, "spi", "0x3700", "mode", "tunnel"},
		withKeys(algorithms[0].words)...)...)
	gen2 := a.generation(t)
	// SIGKILL the daemon (the ip netns exec process execs vnic, so its pid
	// is the daemon's).
	a.daemon.Process.Kill()
	a.daemon.Wait()
	a.daemon = nil
	if _, err := os.Stat(a.sock); err != nil {
		t.Fatalf("expected a stale socket after SIGKILL: %v", err)
	}
	a.start(t)
	gen3 := a.generation(t)
	if gen1 == gen2 || gen2 == gen3 {
		t.Errorf("generation did not change across restarts: %d %d %d", gen1, gen2, gen3)
	}
	if out := a.vnic(t, "sa", "list"); strings.Contains(out, "0x00003700") {
		t.Errorf("a restarted daemon still lists SAs:\n%s", out)
	}
	// A second daemon on the same socket is refused while the first lives.
	out, err := exec.Command("ip", "netns", "exec", a.ns, vnicBin, "up", "-underlay", a.u4, "-name", "vnic1", "-socket", a.sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another vnic daemon") {
		t.Errorf("second daemon on a live socket: %v\n%s", err, out)
	}
}

func (h *host) generation(t *testing.T) uint64 {
	t.Helper()
	var resp oid.CapabilitiesResponse
	out := h.vnic(t, "--json", "caps")
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("caps --json: %v\n%s", err, out)
	}
	return resp.Generation
}
