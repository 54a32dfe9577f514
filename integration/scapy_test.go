package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// python is the interpreter with scapy (Debian's python3-scapy): the
// python3 first on PATH may be another one without it.
const python = "/usr/bin/python3"

// needPython skips (or fails, with VNIC_REQUIRE_ROOT_TESTS=1) when
// /usr/bin/python3 cannot import the given modules.
func needPython(t *testing.T, modules ...string) {
	t.Helper()
	needTool(t, python)
	code := "import " + strings.Join(modules, ", ")
	if out, err := exec.Command(python, "-c", code).CombinedOutput(); err != nil {
		testutil.Unavailable(t, "%s cannot %q (apt-get install -y python3-scapy python3-cryptography): %v\n%s", python, code, err, out)
	}
}

// testdataScript returns the absolute path of a script in testdata.
func testdataScript(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// nsProc is a program running in a namespace while the test goes on; its
// stdout comes line by line on lines, and everything it printed is kept
// for failure messages.
type nsProc struct {
	name   string
	cmd    *exec.Cmd
	lines  chan string
	done   chan error
	mu     sync.Mutex
	out    bytes.Buffer // stdout and stderr
	stdout []string
}

type lockedWriter struct{ p *nsProc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// startInNS runs args in namespace ns and kills it when the test ends
// (if it has not exited by then).
func startInNS(t *testing.T, ns string, args ...string) *nsProc {
	t.Helper()
	p := &nsProc{name: filepath.Base(args[0]), lines: make(chan string, 1024), done: make(chan error, 1)}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	p.cmd.Stderr = lockedWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", args, ns, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			p.mu.Lock()
			p.out.WriteString(l + "\n")
			p.stdout = append(p.stdout, l)
			p.mu.Unlock()
			select {
			case p.lines <- l:
			default:
			}
		}
		close(p.lines)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // only our own child, by its pid; harmless once it has exited
		p.exit(5 * time.Second)
	})
	return p
}

// output is everything the program printed so far.
func (p *nsProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitLine waits up to d for a stdout line that starts with prefix.
func (p *nsProc) waitLine(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s exited before printing %q:\n%s", p.name, prefix, p.output())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("%s printed no %q within %v:\n%s", p.name, prefix, d, p.output())
		}
	}
}

// exit waits up to d for the program to exit, killing it after that,
// and returns how it ended.
func (p *nsProc) exit(d time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err // for the next caller and the cleanup
		return err
	case <-time.After(d):
		p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		return fmt.Errorf("killed after %v (%v)", d, err)
	}
}

// stdoutLines is every stdout line the program printed so far.
func (p *nsProc) stdoutLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// terminate waits up to grace for the program to exit by itself, then
// sends it SIGTERM and, 3 s later, SIGKILL; it returns how it ended.
func (p *nsProc) terminate(grace time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(grace):
	}
	p.cmd.Process.Signal(syscall.SIGTERM) // our own child, by its pid
	return p.exit(3 * time.Second)
}

// finish waits up to d for the program to exit successfully and returns
// its last stdout line that starts with prefix.
func (p *nsProc) finish(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	if err := p.exit(d); err != nil {
		t.Fatalf("%s: %v\n%s", p.name, err, p.output())
	}
	ls := p.stdoutLines()
	for i := len(ls) - 1; i >= 0; i-- {
		if strings.HasPrefix(ls[i], prefix) {
			return ls[i]
		}
	}
	t.Fatalf("%s printed no %q:\n%s", p.name, prefix, p.output())
	return ""
}

// pingResult is testdata/pinger.py's summary.
type pingResult struct {
	Sent       int     `json:"sent"`
	Received   int     `json:"received"`
	Duplicates int     `json:"duplicates"`
	MaxRTTms   float64 `json:"max_rtt_ms"`
}

// pingArgs is the command line of testdata/pinger.py: exactly count echo
// requests to dst, one every interval seconds, then a wait of at most 3 s
// for the last replies.
func pingArgs(t *testing.T, dst string, count int, interval string) []string {
	return []string{python, testdataScript(t, "pinger.py"), "--dst", dst, "--count", fmt.Sprint(count),
		"--interval", interval, "--timeout", "3"}
}

func parsePing(t *testing.T, line string) pingResult {
	t.Helper()
	var r pingResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("pinger.py printed %q: %v", line, err)
	}
	return r
}

// pingN sends exactly count echo requests from h to dst and returns how
// many were answered (unlike ping -c -W, it waits for a late last reply).
// opts are more pinger.py options.
func pingN(t *testing.T, h *host, dst string, count int, interval string, opts ...string) (int, string) {
	t.Helper()
	out := sh(t, "ip", append(append([]string{"netns", "exec", h.ns}, pingArgs(t, dst, count, interval)...), opts...)...)
	l := lines(out)
	if len(l) == 0 {
		t.Fatalf("pinger.py printed nothing")
	}
	r := parsePing(t, l[len(l)-1])
	return r.Received, out
}

// counters returns the daemon's global counters from `vnic stats --json`.
func counters(t *testing.T, h *host) map[string]uint64 {
	t.Helper()
	out := h.vnic(t, "stats", "--json")
	var wrapped struct {
		Stats map[string]uint64 `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &wrapped); err == nil && len(wrapped.Stats) > 0 {
		return wrapped.Stats
	}
	var flat map[string]uint64
	if err := json.Unmarshal([]byte(out), &flat); err != nil || len(flat) == 0 {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return flat
}

// delta is after minus before, for every counter in after.
func delta(before, after map[string]uint64) map[string]uint64 {
	d := make(map[string]uint64, len(after))
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

// isInboundDrop says whether a counter counts dropped inbound packets.
func isInboundDrop(name string) bool {
	return strings.HasPrefix(name, "XfrmIn") || name == "VnicInDummy" ||
		(strings.HasPrefix(name, "CRYPTO_") && name != "CRYPTO_SUCCESS")
}

// scapyCase is one way of talking to the scapy responder.
type scapyCase struct {
	name string
	algo string // the responder's --algo: gcm or cbc-sha256
	udp  bool   // ESP-in-UDP (RFC 3948) rather than raw ESP
	esn  bool   // extended sequence numbers, started just below 2^32
	v6   bool   // IPv6 underlay
	// ce: the pings are ECN-capable (ECT(0)) and the responder marks its
	// ESP packets CE, as a congested router would: the replies on vnic0
	// must carry CE (RFC 6040).
	ce bool
	// keepalive: vnic's outbound SA has nat-keepalive-interval 1, and the
	// responder stays a while after the last reply to count keepalives.
	keepalive bool
}

var scapyCases = []scapyCase{
	{name: "gcm-raw", algo: "gcm"},
	{name: "gcm-udp", algo: "gcm", udp: true, keepalive: true},
	{name: "gcm-raw-esn", algo: "gcm", esn: true},
	{name: "gcm-udp-esn", algo: "gcm", udp: true, esn: true},
	{name: "gcm-udp-esn-v6", algo: "gcm", udp: true, esn: true, v6: true},
	{name: "cbc-sha256-udp", algo: "cbc-sha256", udp: true},
	{name: "cbc-sha256-raw-esn", algo: "cbc-sha256", esn: true},
	{name: "gcm-raw-ce", algo: "gcm", ce: true},
	{name: "gcm-udp-ce", algo: "gcm", udp: true, ce: true},
	{name: "gcm-udp-ce-v6", algo: "gcm", udp: true, v6: true, ce: true},
}

const (
	scapyPings = 24         // enough to cross 2^32 from scapyLow
	scapyHigh  = 7          // SequenceNumberHighOrder of the ESN cases
	scapyLow   = 0xfffffff0 // the first low-order sequence number of the ESN cases
)

// TestScapyInterop pings from vnic to an independent ESP implementation
// (scapy, in the peer namespace with no vnic daemon) that answers each
// echo request with its own SA: every reply must come back, vnic must
// count no inbound drop, and with ESN the numbers must cross 2^32 both
// ways (vnic's SAs and the responder both report high bits H+1).
func TestScapyInterop(t *testing.T) {
	needRoot(t)
	needPython(t, "scapy.layers.ipsec", "cryptography")
	quickRaceExit(t)
	responder := testdataScript(t, "esp_responder.py")
	for i, c := range scapyCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			scapyInterop(t, c, responder, 0x3000+16*i)
		})
	}
}

func scapyInterop(t *testing.T, c scapyCase, responder string, spi int) {
	tp := newTopology(t)
	a, b := tp.a, tp.b
	a.start(t, "-addr", "10.7.0.1/24")
	ua, ub := a.u4, b.u4
	if c.v6 {
		ua, ub = a.u6, b.u6
	}

	// Keys, as vnic words and as the responder's hex.
	var algoAB, algoBA []string
	var respKeys []string
	if c.algo == "gcm" {
		kAB, kBA := randHex(20), randHex(20)
		algoAB = []string{"aead", "rfc4106(gcm(aes))", "0x" + kAB, "128"}
		algoBA = []string{"aead", "rfc4106(gcm(aes))", "0x" + kBA, "128"}
		respKeys = []string{"--in-key", kAB, "--key", kBA}
	} else {
		eAB, aAB, eBA, aBA := randHex(16), randHex(32), randHex(16), randHex(32)
		algoAB = []string{"enc", "cbc(aes)", "0x" + eAB, "auth-trunc", "hmac(sha256)", "0x" + aAB, "128"}
		algoBA = []string{"enc", "cbc(aes)", "0x" + eBA, "auth-trunc", "hmac(sha256)", "0x" + aBA, "128"}
		respKeys = []string{"--in-key", eAB, "--in-auth-key", aAB, "--key", eBA, "--auth-key", aBA}
	}
	common := []string{"proto", "esp", "mode", "tunnel"}
	if c.udp {
		common = append(common, "encap", "espinudp", "4500", "4500", "0.0.0.0")
	}
	outWords := append([]string{"dir", "out", "src", ua, "dst", ub, "spi", fmt.Sprintf("0x%x", spi)}, common...)
	outWords = append(outWords, algoAB...)
	outWords = append(outWords, "sel", "src", "10.7.0.1/32", "dst", "10.7.0.2/32")
	if c.keepalive {
		outWords = append(outWords, "nat-keepalive-interval", "1")
	}
	inWords := append([]string{"dir", "in", "src", ub, "dst", ua, "spi", fmt.Sprintf("0x%x", spi+1)}, common...)
	inWords = append(inWords, algoBA...)
	inWords = append(inWords, "replay-window", "64", "sel", "src", "10.7.0.2/32", "dst", "10.7.0.1/32")
	first := uint64(1) // the first number each side sends
	if c.esn {
		first = scapyHigh<<32 | scapyLow
		// Outbound: the first number is H<<32 | 0xfffffff0. Inbound: the
		// highest number already received is the one before the
		// responder's first.
		outWords = append(outWords, "flag", "esn", "seq-hi", fmt.Sprint(scapyHigh), "seq", fmt.Sprintf("0x%x", scapyLow))
		inWords = append(inWords, "flag", "esn", "seq-hi", fmt.Sprint(scapyHigh), "seq", fmt.Sprintf("0x%x", scapyLow-1))
	}
	outH := a.addSA(t, outWords...)
	inH := a.addSA(t, inWords...)

	args := []string{python, responder, "--local", ub, "--peer", ua,
		"--in-spi", fmt.Sprint(spi), "--out-spi", fmt.Sprint(spi + 1), "--algo", c.algo,
		"--out-seq", fmt.Sprint(first), "--in-top", fmt.Sprint(first - 1),
		"--count", fmt.Sprint(scapyPings), "--timeout", "30"}
	args = append(args, respKeys...)
	if c.esn {
		args = append(args, "--esn")
	}
	if c.keepalive {
		args = append(args, "--linger", "3")
	}
	var pingOpts []string
	var capture *pcapCapture
	if c.ce {
		args = append(args, "--outer-tos", fmt.Sprint(ecnCE))
		pingOpts = []string{"--tos", fmt.Sprint(ecnECT0)}
		capture = startPcap(t, a.ns, "vnic0")
	}
	// Counted from before the responder listens: an SA idle for a
	// second, on a loaded machine, may send a keepalive before the
	// first ping, and the responder counts it.
	before := counters(t, a)
	resp := startInNS(t, b.ns, args...)
	resp.waitLine(t, "ready", 20*time.Second)

	got, pingOut := pingN(t, a, "10.7.0.2", scapyPings, "0.02", pingOpts...)
	// The responder exits once it has answered them all (and lingered); if
	// some are missing, SIGTERM makes it print its summary.
	if c.keepalive {
		if err := resp.exit(15 * time.Second); err != nil {
			t.Errorf("responder: %v", err)
		}
	} else if err := resp.terminate(3 * time.Second); err != nil {
		t.Errorf("responder: %v", err)
	}
	summary := resp.finish(t, "{", time.Second)
	after := counters(t, a)
	d := delta(before, after)

	if got != scapyPings {
		t.Errorf("%d of %d pings answered:\n%s\nresponder:\n%s\nvnic stats delta: %v\nvnic log:\n%s",
			got, scapyPings, pingOut, resp.output(), nonZero(d), a.log)
	}
	for k, v := range d {
		if isInboundDrop(k) && v != 0 {
			t.Errorf("vnic counted %d inbound drops as %s", v, k)
		}
	}
	if capture != nil {
		checkECN(t, capture, scapyPings)
	}

	var rs struct {
		Received   int      `json:"received"`
		Replied    int      `json:"replied"`
		AuthFailed int      `json:"auth_failed"`
		Replayed   int      `json:"replayed"`
		WrongSPI   int      `json:"wrong_spi"`
		NotEcho    int      `json:"not_echo"`
		BadTrailer int      `json:"bad_trailer"`
		Raw        int      `json:"raw"`
		UDP        int      `json:"udp"`
		MaxInSeq   uint64   `json:"max_in_seq"`
		MaxOutSeq  uint64   `json:"max_out_seq"`
		InSeqs     []uint64 `json:"in_seqs"`
		Keepalives uint64   `json:"keepalives"`
	}
	if err := json.Unmarshal([]byte(summary), &rs); err != nil {
		t.Fatalf("responder summary %q: %v", summary, err)
	}
	if rs.AuthFailed != 0 || rs.WrongSPI != 0 || rs.Replayed != 0 {
		t.Errorf("the responder could not verify vnic's packets: %+v\n%s", rs, resp.output())
	}
	if rs.BadTrailer != 0 {
		t.Errorf("%d of vnic's packets had a bad ESP trailer (padding, alignment or next header):\n%s", rs.BadTrailer, resp.output())
	}
	if rs.NotEcho != 0 {
		t.Errorf("vnic sent %d packets that are not echo requests through the SA:\n%s", rs.NotEcho, resp.output())
	}
	if via := map[bool]int{false: rs.Raw, true: rs.UDP}; via[c.udp] != rs.Received || rs.Received < scapyPings {
		t.Errorf("vnic's ESP came raw %d, in UDP %d times; want all %d via udp=%v", rs.Raw, rs.UDP, scapyPings, c.udp)
	}
	switch {
	case c.keepalive && (rs.Keepalives == 0 || d["VnicOutNatKeepalive"] < rs.Keepalives):
		t.Errorf("idle for 3 s with nat-keepalive-interval 1: the responder got %d NAT keepalives, vnic counted %d sent; want at least one, all counted",
			rs.Keepalives, d["VnicOutNatKeepalive"])
	case !c.keepalive && (rs.Keepalives != 0 || d["VnicOutNatKeepalive"] != 0):
		t.Errorf("no keepalive interval, yet %d NAT keepalives arrived (%d counted)", rs.Keepalives, d["VnicOutNatKeepalive"])
	}
	if len(rs.InSeqs) > 0 && rs.InSeqs[0] != first {
		t.Errorf("vnic's first sequence number is %#x, want %#x", rs.InSeqs[0], first)
	}
	if c.esn {
		if hi := rs.MaxInSeq >> 32; hi != scapyHigh+1 {
			t.Errorf("vnic's numbers reached %#x (high bits %d) at the responder, want high bits %d", rs.MaxInSeq, hi, scapyHigh+1)
		}
		if hi := rs.MaxOutSeq >> 32; hi != scapyHigh+1 {
			t.Errorf("the responder's numbers reached %#x, want high bits %d", rs.MaxOutSeq, scapyHigh+1)
		}
	}

	// vnic's own view of the sequence numbers.
	outInfo, inInfo := saInfo(t, a, outH), saInfo(t, a, inH)
	outSeq, inSeq := outInfo.Seq, inInfo.Seq
	if outInfo.SeqHigh != uint32(outSeq>>32) || inInfo.SeqHigh != uint32(inSeq>>32) {
		t.Errorf("seq_high disagrees with seq: outbound %d/%#x, inbound %d/%#x", outInfo.SeqHigh, outSeq, inInfo.SeqHigh, inSeq)
	}
	if len(inInfo.Drops) != 0 {
		t.Errorf("inbound SA %s dropped packets: %v", inH, inInfo.Drops)
	}
	wantOut := first + uint64(rs.Received) - 1 // the last number vnic sent
	wantIn := first + uint64(rs.Replied) - 1   // the highest number vnic received
	if outSeq != wantOut {
		t.Errorf("outbound SA %s: sequence number %#x, want %#x (the last sent)", outH, outSeq, wantOut)
	}
	if inSeq != wantIn {
		t.Errorf("inbound SA %s: highest sequence number %#x, want %#x", inH, inSeq, wantIn)
	}
	if c.esn && (outSeq>>32 != scapyHigh+1 || inSeq>>32 != scapyHigh+1) {
		t.Errorf("vnic's SAs did not cross into high bits %d: outbound %#x, inbound %#x", scapyHigh+1, outSeq, inSeq)
	}
}

// ECN codepoints (RFC 3168).
const (
	ecnECT0 = 2
	ecnCE   = 3
)

// checkECN stops the capture on vnic0 and checks the echo traffic there:
// count requests sent ECT(0), and count replies, which came in ESP marked
// CE, delivered with CE.
func checkECN(t *testing.T, capture *pcapCapture, count int) {
	t.Helper()
	link, frames := capture.stop(t)
	ecn := map[byte]map[byte]int{8: {}, 0: {}} // ICMP type -> ECN -> packets
	for _, f := range frames {
		ip, _ := ipOf(link, f)
		if len(ip) < 21 || ip[0]>>4 != 4 || ip[9] != 1 {
			continue
		}
		if m, ok := ecn[ip[(ip[0]&0x0f)*4]]; ok {
			m[ip[1]&3]++
		}
	}
	if ecn[8][ecnECT0] != count {
		t.Errorf("echo requests on vnic0 by ECN codepoint: %v, want %d ECT(0)", ecn[8], count)
	}
	if ecn[0][ecnCE] != count {
		t.Errorf("echo replies on vnic0 by ECN codepoint: %v, want %d CE (the outer header was CE)", ecn[0], count)
	}
}

// nonZero keeps the counters that are not zero, for messages.
func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// saView is the part of `vnic sa show --json` these tests read.
type saView struct {
	Handle  uint64            `json:"handle"`
	Seq     uint64            `json:"seq"`
	SeqHigh uint32            `json:"seq_high"`
	Packets uint64            `json:"packets"`
	Drops   map[string]uint64 `json:"drops"`
}

func saInfo(t *testing.T, h *host, handle string) saView {
	t.Helper()
	out := h.vnic(t, "sa", "show", handle, "--json")
	var list struct {
		SAs []saView `json:"sas"`
	}
	if err := json.Unmarshal([]byte(out), &list); err == nil && len(list.SAs) > 0 {
		for _, s := range list.SAs {
			if fmt.Sprint(s.Handle) == handle {
				return s
			}
		}
	}
	var one saView
	if err := json.Unmarshal([]byte(out), &one); err != nil || fmt.Sprint(one.Handle) != handle {
		t.Fatalf("sa show %s --json: %v\n%s", handle, err, out)
	}
	return one
}

// quickRaceExit turns off the race runtime's one-second sleep at exit
// (GORACE atexit_sleep_ms, default 1000) for the programs this test runs:
// the harness builds vnic with -race, so without this every CLI call,
// including each poll while a daemon starts, takes a second.
func quickRaceExit(t *testing.T) {
	if os.Getenv("GORACE") == "" {
		t.Setenv("GORACE", "atexit_sleep_ms=0")
	}
}
