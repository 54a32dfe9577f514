package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestParseAddr: a bare port is loopback's, a host is taken as given, and
// anything else is refused with an example of what to give.
func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "9477", want: "127.0.0.1:9477"},
		{in: ":9477", want: "127.0.0.1:9477"},
		{in: "1", want: "127.0.0.1:1"},
		{in: "65535", want: "127.0.0.1:65535"},
		{in: "09477", want: "127.0.0.1:9477"},
		{in: "127.0.0.1:9477", want: "127.0.0.1:9477"},
		{in: "0.0.0.0:9477", want: "0.0.0.0:9477"},
		{in: "192.0.2.1:80", want: "192.0.2.1:80"},
		{in: "[::1]:9477", want: "[::1]:9477"},
		{in: "[::]:9477", want: "[::]:9477"},
		{in: "[fe80::1%eth0]:9477", want: "[fe80::1%eth0]:9477"},
		{in: "localhost:9477", want: "localhost:9477"},
		{in: "", err: `expected a port like 9477, or a host and port like 127.0.0.1:9477 or [::1]:9477, got ""`},
		{in: "localhost", err: `got "localhost"`},
		{in: "::1:9477", err: `[::1]:9477, got "::1:9477"`},
		{in: "0", err: `expected a port number from 1 to 65535, got "0" in "0"`},
		{in: ":0", err: `got "0" in ":0"`},
		{in: "65536", err: `got "65536" in "65536"`},
		{in: "99999999999999999999", err: `from 1 to 65535`},
		{in: "127.0.0.1:", err: `got "" in "127.0.0.1:"`},
		{in: ":http", err: `got "http" in ":http"`},
		{in: "-1", err: `got "-1"`},
		{in: "+9477", err: `got "+9477"`},
	} {
		got, err := ParseAddr(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseAddr(%q) = %q, %v; want an error that says %q", tc.in, got, err, tc.err)
		}
	}
}

// serveTest serves a registry of src on a loopback port until the test
// ends, and returns its base URL and a function that stops it and returns
// Serve's result.
func serveTest(t *testing.T, src Source) (string, func() error) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, NewHandler(NewRegistry(src, Options{PerSA: true}), log), log) }()
	var stopped bool
	var serr error
	stop := func() error {
		if !stopped {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(10 * time.Second):
				serr = errors.New("Serve did not return 10 s after its context ended")
			}
			stopped = true
		}
		return serr
	}
	t.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), stop
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// TestEndpoint scrapes the endpoint over HTTP, as Prometheus does, and
// parses what it serves: the device's series and the process's, / links
// to /metrics, nothing else is there, and the endpoint stops with its
// context.
func TestEndpoint(t *testing.T) {
	tab, out, _ := twoSAs(t)
	src := &fakeSource{table: tab, stats: map[string]uint64{"InPackets": 7, "XfrmInNoStates": 2}}
	base, stop := serveTest(t, src)

	resp, body := get(t, base+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %s, Content-Type %q:\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	got := series(list)
	outKey := saKey("vnic_sa_packets_total", out.Handle, "outbound", 0x1001, "192.0.2.1", "192.0.2.2", "tunnel")
	if got[`vnic_packets_total{counter="InPackets"}`] != 7 || got[`vnic_drops_total{counter="XfrmInNoStates"}`] != 2 ||
		got["vnic_sas"] != 2 || got[outKey] != 5 {
		t.Errorf("/metrics: InPackets %v, XfrmInNoStates %v, vnic_sas %v, %s %v; want 7, 2, 2, 5", got[`vnic_packets_total{counter="InPackets"}`],
			got[`vnic_drops_total{counter="XfrmInNoStates"}`], got["vnic_sas"], outKey, got[outKey])
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	// The counters move between scrapes: they are read at each.
	out.Counters.Packets.Add(1)
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "\n"+strings.Replace(outKey, "}", "} 6\n", 1)) {
		t.Errorf("after one more packet, /metrics does not show %s at 6:\n%s", outKey, body)
	}
	// Scrapes count themselves.
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, `promhttp_metric_handler_requests_total{code="200"} 2`) {
		t.Errorf("the third scrape does not count the two before it")
	}

	if resp, body := get(t, base+"/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `<a href="/metrics">`) {
		t.Errorf("/: %s:\n%s", resp.Status, body)
	}
	for _, path := range []string{"/debug/pprof/", "/metrics/x", "/index.html", "/favicon.ico"} {
		if resp, _ := get(t, base+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", path, resp.Status)
		}
	}

	if err := stop(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after the context ended", base)
	}
}

// TestListenTaken: an address another socket holds is refused with an
// error that says what failed and wraps the cause.
func TestListenTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ln, err := Listen(held.Addr().String())
	if err == nil {
		ln.Close()
		t.Fatalf("Listen(%s), which another socket holds: no error", held.Addr())
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), "cannot serve metrics: listen tcp "+held.Addr().String()) {
		t.Errorf("Listen(%s): %v; want EADDRINUSE, explained", held.Addr(), err)
	}
}

// TestServeShutdown: a scrape in progress when the daemon stops is
// finished, and Serve returns once it is.
func TestServeShutdown(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, slog.New(slog.DiscardHandler)) }()
	body := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			body <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body <- string(b)
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a scrape in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if b := <-body; b != "done" {
		t.Errorf("the scrape in progress got %q, want done", b)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
