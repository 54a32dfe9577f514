package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// metricsPort is the port TestMetrics gives -metrics: a bare port, which
// is 127.0.0.1's.
const metricsPort = "9477"

// TestMetrics runs daemon A with -metrics and B without, offloads a
// tunnel SA pair, pings B through vnic0 and scrapes A's /metrics from
// inside A's namespace, as Prometheus on that host would: InPackets,
// OutPackets and both SAs' packets moved, as `vnic stats` and `vnic sa
// show` count them. A's endpoint listens on loopback only; B, without
// the flag, listens on no TCP port at all.
func TestMetrics(t *testing.T) {
	needTool(t, "ping")
	tp := newTopology(t)
	a, b := tp.a, tp.b
	a.start(t, "-addr", "10.7.0.1/24", "-metrics", metricsPort)
	b.start(t, "-addr", "10.7.0.2/24")

	// Only A's endpoint listens, on 127.0.0.1 only.
	if got, want := tcpListeners(t, tp, a), []string{"127.0.0.1:" + metricsPort}; !slices.Equal(got, want) {
		t.Errorf("A (-metrics %s) listens on TCP %v, want %v", metricsPort, got, want)
	}
	if got := tcpListeners(t, tp, b); len(got) != 0 {
		t.Errorf("B (no -metrics) listens on TCP %v, want nothing", got)
	}
	if _, err := scrapeIn(b.ns, "127.0.0.1:"+metricsPort); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("scraping B, which has no -metrics: %v, want connection refused", err)
	}

	keyAB, keyBA := withKeys("0xKEY20"), withKeys("0xKEY20")
	add := func(h *host, dir, src, dst, spi string, key []string) string {
		return h.addSA(t, "dir", dir, "src", src, "dst", dst, "proto", "esp", "spi", spi, "mode", "tunnel",
			"aead", "rfc4106(gcm(aes))", key[0], "128")
	}
	outA := add(a, "out", a.u4, b.u4, "0x7100", keyAB)
	add(b, "in", a.u4, b.u4, "0x7100", keyAB)
	add(b, "out", b.u4, a.u4, "0x7101", keyBA)
	inA := add(a, "in", b.u4, a.u4, "0x7101", keyBA)
	outSeries := fmt.Sprintf(`vnic_sa_packets_total{direction="outbound",dst=%q,handle=%q,mode="tunnel",spi="0x00007100",src=%q}`, b.u4, outA, a.u4)
	inSeries := fmt.Sprintf(`vnic_sa_packets_total{direction="inbound",dst=%q,handle=%q,mode="tunnel",spi="0x00007101",src=%q}`, a.u4, inA, b.u4)

	before := scrapeSeries(t, a)
	for k, want := range map[string]float64{"vnic_sas": 2, "vnic_sa_offload_capacity": 1024, outSeries: 0, inSeries: 0,
		`vnic_packets_total{counter="OutPackets"}`: 0, `vnic_packets_total{counter="InPackets"}`: 0} {
		if got, ok := before[k]; !ok || got != want {
			t.Errorf("before the pings: %s = %v (there: %v), want %v", k, got, ok, want)
		}
	}

	const pings = 3
	if out, ok := tp.ping(a, "10.7.0.2", pings); !ok {
		t.Fatalf("ping A -> B through vnic0:\n%s\nA's log:\n%s", out, a.log)
	}
	after := scrapeSeries(t, a)
	stats := a.stats(t)
	for _, k := range []string{`vnic_packets_total{counter="OutPackets"}`, `vnic_packets_total{counter="InPackets"}`, outSeries, inSeries} {
		if after[k] < pings {
			t.Errorf("after %d pings: %s = %v, want %d or more", pings, k, after[k], pings)
		}
	}
	// The same counters as the OID channel's, read after the scrape:
	// as many, or a few more if a packet went by in between.
	for _, c := range []struct{ series, name string }{
		{`vnic_packets_total{counter="OutPackets"}`, "OutPackets"}, {`vnic_packets_total{counter="InPackets"}`, "InPackets"},
		{`vnic_bytes_total{counter="OutBytes"}`, "OutBytes"}, {`vnic_bytes_total{counter="InBytes"}`, "InBytes"},
		{`vnic_drops_total{counter="XfrmInNoStates"}`, "XfrmInNoStates"},
	} {
		if got, ok := after[c.series]; !ok || got > float64(stats[c.name]) || (strings.HasPrefix(c.series, "vnic_packets") && got < pings) {
			t.Errorf("%s: /metrics says %v (there: %v), vnic stats then %d", c.name, got, ok, stats[c.name])
		}
	}
	for series, handle := range map[string]string{outSeries: outA, inSeries: inA} {
		if sa := a.saJSON(t, handle); after[series] > float64(sa.Packets) {
			t.Errorf("SA %s: /metrics counts %v packets, VNIC_QUERY_SA after it %d", handle, after[series], sa.Packets)
		}
	}

	// Deleted, A's SAs' series go.
	a.vnic(t, "sa", "del", outA, inA)
	gone := scrapeSeries(t, a)
	if _, ok := gone[outSeries]; ok || gone["vnic_sas"] != 0 {
		t.Errorf("after sa del: %s still there (%v), vnic_sas %v", outSeries, ok, gone["vnic_sas"])
	}
}

// tcpListeners returns the addresses TCP sockets listen on in h's
// namespace, from /proc/net/tcp and tcp6 as seen there.
func tcpListeners(t *testing.T, tp *topology, h *host) []string {
	t.Helper()
	var out []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for _, l := range lines(tp.exec(t, h, "cat", file))[1:] {
			f := strings.Fields(l)
			if len(f) < 4 || f[3] != "0A" { // TCP_LISTEN
				continue
			}
			out = append(out, procAddr(t, f[1]))
		}
	}
	slices.Sort(out)
	return out
}

// procAddr decodes an address of /proc/net/tcp: the IP's bytes as
// host-order 32-bit words in hex, a colon, the port in hex.
func procAddr(t *testing.T, s string) string {
	t.Helper()
	hexIP, hexPort, _ := strings.Cut(s, ":")
	var port uint16
	var ip []byte
	if _, err := fmt.Sscanf(hexPort, "%X", &port); err != nil || len(hexIP)%8 != 0 {
		t.Fatalf("address %q of /proc/net/tcp", s)
	}
	for i := 0; i < len(hexIP); i += 8 {
		var w uint32
		fmt.Sscanf(hexIP[i:i+8], "%X", &w)
		ip = append(ip, byte(w), byte(w>>8), byte(w>>16), byte(w>>24)) // little-endian words
	}
	return net.JoinHostPort(net.IP(ip).String(), fmt.Sprint(port))
}

// scrapeIn GETs /metrics at addr from inside the named namespace: on a
// thread of its own that enters it (and ends with the goroutine), with a
// connection dialled there and then.
func scrapeIn(ns, addr string) (string, error) {
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is not put back
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
			done <- result{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		done <- result{string(body), err}
	}()
	r := <-done
	return r.body, r.err
}

// scrapeSeries scrapes h's /metrics, parses it as Prometheus does, and
// returns every series' value by its name and labels (sorted by name):
// vnic_packets_total{counter="InPackets"}.
func scrapeSeries(t *testing.T, h *host) map[string]float64 {
	t.Helper()
	body, err := scrapeIn(h.ns, "127.0.0.1:"+metricsPort)
	if err != nil {
		t.Fatalf("scrape %s: %v\ndaemon log:\n%s", h.ns, err, h.log)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s's /metrics does not parse: %v\n%s", h.ns, err, body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := slices.Clone(m.GetLabel())
			slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			var parts []string
			for _, l := range labels {
				parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			k := name
			if len(parts) > 0 {
				k += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[k] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[k] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[k] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}
