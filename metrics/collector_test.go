package metrics

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"vnic/internal/packettest"
	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/sadb"
)

// fakeSource is a Source with counters a test sets.
type fakeSource struct {
	stats map[string]uint64
	table *sadb.Table
}

func (f *fakeSource) Stats() map[string]uint64 { return maps.Clone(f.stats) }
func (f *fakeSource) Table() *sadb.Table       { return f.table }

// key names a series as the text format writes it, its labels sorted by
// name: vnic_sa_packets_total{direction="inbound",dst="192.0.2.2",...}.
func key(m *dto.Metric, name string) string {
	labels := slices.Clone(m.GetLabel())
	slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	var parts []string
	for _, l := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	if len(parts) == 0 {
		return name
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// series returns the value of every series of families by its key.
func series(families []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var v float64
			switch {
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Untyped != nil:
				v = m.GetUntyped().GetValue()
			}
			out[key(m, f.GetName())] = v
		}
	}
	return out
}

// gather collects c through a pedantic registry, which checks every
// metric against its description, and returns its series.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return series(fams)
}

// saKey is the key of a per-SA series of the SA a test added.
func saKey(name string, h sadb.Handle, dir string, spi uint32, src, dst, mode string, counter ...string) string {
	c := ""
	if len(counter) > 0 {
		c = fmt.Sprintf("counter=%q,", counter[0])
	}
	return fmt.Sprintf(`%s{%sdirection=%q,dst=%q,handle="%d",mode=%q,spi="0x%08x",src=%q}`, name, c, dir, dst, h, mode, spi, src)
}

// twoSAs returns a table with an outbound tunnel SA in ESP-in-UDP that
// sent 5 packets (500 bytes) and an inbound transport SA with a wildcard
// source over IPv6 that dropped 3 replayed packets.
func twoSAs(t *testing.T) (*sadb.Table, *sadb.SA, *sadb.SA) {
	t.Helper()
	tab := sadb.New(sadb.TableConfig{Capacity: 8, DefaultReplayWindow: 64, UDPPort: 4500})
	res, st := tab.Add([]sadb.Config{
		{Direction: sadb.Outbound, Mode: sadb.Tunnel, SPI: 0x1001, Src: packettest.V4A, Dst: packettest.V4B,
			Encap: sadb.Encap{UDP: true}, Algo: packettest.GCM128()},
		{Direction: sadb.Inbound, Mode: sadb.Transport, SPI: 0xdeadbeef, Dst: packettest.V6A, Algo: packettest.GCM128()},
	})
	if st != ndis.StatusSuccess || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("ADD_SA: %v %+v", st, res)
	}
	out, in := tab.Get(res[0].Handle), tab.Get(res[1].Handle)
	out.Counters.Packets.Add(5)
	out.Counters.Bytes.Add(500)
	in.Counters.Drop(sadb.InStateSeqError, 3)
	return tab, out, in
}

// TestCollectorExposition: the whole exposition of a device with two SAs,
// as the client library writes it: every global counter under its own
// name in the family of what it counts, the SA count and capacity, and
// per SA its packets, bytes and the drops that are not zero, labelled as
// VNIC_QUERY_SA shows the SA. Nothing key-like appears.
func TestCollectorExposition(t *testing.T) {
	tab, _, _ := twoSAs(t)
	src := &fakeSource{table: tab, stats: map[string]uint64{
		"InPackets": 7, "OutPackets": 5, "InBytes": 700, "OutBytes": 500, "XfrmInNoStates": 2, "VnicOutLinkLocal": 1,
		"CRYPTO_TUNNEL_ESP_AUTH_FAILED": 4, "VnicInNatKeepalive": 6,
	}}
	want := `
# HELP vnic_bytes_total Bytes of the packets in vnic_packets_total, as vnic0 reads and writes them: InBytes, OutBytes (VNIC_STATISTICS).
# TYPE vnic_bytes_total counter
vnic_bytes_total{counter="InBytes"} 700
vnic_bytes_total{counter="OutBytes"} 500
# HELP vnic_crypto_status_total Inbound packets that failed with an NDIS CryptoStatus (CRYPTO_TUNNEL_ESP_AUTH_FAILED, ...); each is also in vnic_drops_total.
# TYPE vnic_crypto_status_total counter
vnic_crypto_status_total{counter="CRYPTO_TUNNEL_ESP_AUTH_FAILED"} 4
# HELP vnic_drops_total Packets dropped, by the /proc/net/xfrm_stat counter (XfrmInNoStates, ...) or vnic's own (VnicOutTooBig, ...) that says why.
# TYPE vnic_drops_total counter
vnic_drops_total{counter="VnicOutLinkLocal"} 1
vnic_drops_total{counter="XfrmInNoStates"} 2
# HELP vnic_other_total The device's other counters (VNIC_STATISTICS): NAT keepalives received and sent, IKE packets dropped, ESP passed up, read and send errors.
# TYPE vnic_other_total counter
vnic_other_total{counter="VnicInNatKeepalive"} 6
# HELP vnic_packets_total Packets through the device: InPackets received and decrypted, OutPackets protected and sent (VNIC_STATISTICS).
# TYPE vnic_packets_total counter
vnic_packets_total{counter="InPackets"} 7
vnic_packets_total{counter="OutPackets"} 5
# HELP vnic_sa_bytes_total Bytes of the packets in vnic_sa_packets_total.
# TYPE vnic_sa_bytes_total counter
vnic_sa_bytes_total{direction="inbound",dst="2001:db8::1",handle="2",mode="transport",spi="0xdeadbeef",src="any"} 0
vnic_sa_bytes_total{direction="outbound",dst="192.0.2.2",handle="1",mode="tunnel",spi="0x00001001",src="192.0.2.1"} 500
# HELP vnic_sa_drops_total Packets of an SA dropped, by the counter that says why (as vnic_drops_total); only the counters that are not zero.
# TYPE vnic_sa_drops_total counter
vnic_sa_drops_total{counter="XfrmInStateSeqError",direction="inbound",dst="2001:db8::1",handle="2",mode="transport",spi="0xdeadbeef",src="any"} 3
# HELP vnic_sa_offload_capacity SaOffloadCapacity: how many SAs the device can hold (vnic up -capacity).
# TYPE vnic_sa_offload_capacity gauge
vnic_sa_offload_capacity 8
# HELP vnic_sa_packets_total Packets an SA protected (outbound) or accepted (inbound).
# TYPE vnic_sa_packets_total counter
vnic_sa_packets_total{direction="inbound",dst="2001:db8::1",handle="2",mode="transport",spi="0xdeadbeef",src="any"} 0
vnic_sa_packets_total{direction="outbound",dst="192.0.2.2",handle="1",mode="tunnel",spi="0x00001001",src="192.0.2.1"} 5
# HELP vnic_sas SAs the device holds.
# TYPE vnic_sas gauge
vnic_sas 2
`
	c := NewCollector(src, Options{PerSA: true})
	if err := promtest.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The library's own checks: the names follow Prometheus's rules, and
	// every metric matches its description.
	if problems, err := promtest.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
	gather(t, c)

	text, err := promtest.CollectAndFormat(c, expfmt.TypeTextPlain)
	if err != nil {
		t.Fatal(err)
	}
	if testutil.ContainsKey(text, packettest.GCM128().EncryptionKey) {
		t.Errorf("the exposition holds the SAs' key:\n%s", text)
	}
}

// TestCollectorWithoutPerSA: Options.PerSA false leaves every vnic_sa_*
// series out, and only them.
func TestCollectorWithoutPerSA(t *testing.T) {
	tab, _, _ := twoSAs(t)
	src := &fakeSource{table: tab, stats: map[string]uint64{"InPackets": 7, "XfrmInNoStates": 2}}
	got := gather(t, NewCollector(src, Options{}))
	want := map[string]float64{
		`vnic_packets_total{counter="InPackets"}`: 7, `vnic_drops_total{counter="XfrmInNoStates"}`: 2,
		"vnic_sas": 2, "vnic_sa_offload_capacity": 8,
	}
	if !maps.Equal(got, want) {
		t.Errorf("without per-SA series:\n got %v\nwant %v", got, want)
	}
	if n := promtest.CollectAndCount(NewCollector(src, Options{PerSA: true}), "vnic_sa_packets_total", "vnic_sa_bytes_total",
		"vnic_sa_drops_total"); n != 5 {
		t.Errorf("with per-SA series: %d of them, want 5", n)
	}
}

// TestFamily: each global counter name goes to the family of what it
// counts.
func TestFamily(t *testing.T) {
	for _, tc := range []struct {
		name string
		want *prometheus.Desc
	}{
		{"InPackets", packetsDesc}, {"OutPackets", packetsDesc},
		{"InBytes", bytesDesc}, {"OutBytes", bytesDesc},
		{"XfrmInNoStates", dropsDesc}, {"XfrmOutStateSeqError", dropsDesc}, {"VnicInDummy", dropsDesc},
		{"VnicOutTooBig", dropsDesc}, {"VnicOutLinkLocal", dropsDesc},
		{"CRYPTO_TUNNEL_ESP_AUTH_FAILED", cryptoDesc}, {"CRYPTO_INVALID_PACKET_SYNTAX", cryptoDesc},
		{"VnicInNatKeepalive", otherDesc}, {"VnicInIkeDropped", otherDesc}, {"VnicOutSendError", otherDesc},
		{"SomethingNew", otherDesc},
	} {
		if got := family(tc.name); got != tc.want {
			t.Errorf("%s: in %v, want %v", tc.name, got, tc.want)
		}
	}
	for r := range sadb.NumReasons {
		if family(r.String()) != dropsDesc {
			t.Errorf("drop counter %s is not in vnic_drops_total", r)
		}
	}
}

// TestCollectorDevice runs a whole device in the test, whose packets go
// out through an SA and come back in through another: the collector
// shows the device's counters move as packets are counted and dropped,
// every name the device counts under exactly once, and the per-SA series
// come with their SA and go with it.
func TestCollectorDevice(t *testing.T) {
	n := startNIC(t, 8)
	c := NewCollector(n.dev, Options{PerSA: true})

	got := gather(t, c)
	if got["vnic_sas"] != 0 || got["vnic_sa_offload_capacity"] != 8 || got[`vnic_packets_total{counter="InPackets"}`] != 0 {
		t.Errorf("a new device: %v", got)
	}
	if n := promtest.CollectAndCount(c, "vnic_sa_packets_total", "vnic_sa_bytes_total", "vnic_sa_drops_total"); n != 0 {
		t.Errorf("%d per-SA series with no SA", n)
	}
	// Every name the device counts under is there once, zero or not.
	var names []string
	for k := range got {
		if _, name, ok := strings.Cut(k, `{counter="`); ok {
			names = append(names, strings.TrimSuffix(name, `"}`))
		}
	}
	slices.Sort(names)
	if want := slices.Sorted(maps.Keys(n.dev.Stats())); !slices.Equal(names, want) {
		t.Errorf("counter names:\n got %v\nwant %v", names, want)
	}

	out, in := n.addLoop(t, 0x4001)
	src, dst := packettest.V4A.String(), packettest.V4B.String()
	outPackets := saKey("vnic_sa_packets_total", out, "outbound", 0x4001, src, dst, "tunnel")
	inPackets := saKey("vnic_sa_packets_total", in, "inbound", 0x4001, src, dst, "tunnel")
	inBytes := saKey("vnic_sa_bytes_total", in, "inbound", 0x4001, src, dst, "tunnel")
	replayed := saKey("vnic_sa_drops_total", in, "inbound", 0x4001, src, dst, "tunnel", "XfrmInStateSeqError")
	got = gather(t, c)
	if v, ok := got[outPackets]; !ok || v != 0 || got["vnic_sas"] != 2 {
		t.Errorf("after ADD_SA: %s = %v (there: %v), vnic_sas %v; want 0, there, 2", outPackets, v, ok, got["vnic_sas"])
	}
	if _, ok := got[replayed]; ok {
		t.Errorf("%s before any drop", replayed)
	}

	const pings = 3
	for range pings {
		n.ping(t)
	}
	waitFor(t, "OutPackets", func() bool { return n.dev.Stats()["OutPackets"] == pings })
	got = gather(t, c)
	for k, want := range map[string]float64{
		`vnic_packets_total{counter="InPackets"}`: pings, `vnic_packets_total{counter="OutPackets"}`: pings,
		outPackets: pings, inPackets: pings,
	} {
		if got[k] != want {
			t.Errorf("after %d pings: %s = %v, want %v", pings, k, got[k], want)
		}
	}
	stats := n.dev.Stats()
	if got[inBytes] == 0 || got[`vnic_bytes_total{counter="InBytes"}`] != float64(stats["InBytes"]) ||
		got[`vnic_bytes_total{counter="OutBytes"}`] != float64(stats["OutBytes"]) {
		t.Errorf("bytes: %s = %v, InBytes %v, OutBytes %v; the device counts %d and %d", inBytes, got[inBytes],
			got[`vnic_bytes_total{counter="InBytes"}`], got[`vnic_bytes_total{counter="OutBytes"}`], stats["InBytes"], stats["OutBytes"])
	}

	// A replayed packet is dropped on its SA.
	n.bind.replay()
	waitFor(t, "XfrmInStateSeqError", func() bool { return n.dev.Stats()["XfrmInStateSeqError"] == 1 })
	got = gather(t, c)
	if got[replayed] != 1 || got[`vnic_drops_total{counter="XfrmInStateSeqError"}`] != 1 || got[inPackets] != pings {
		t.Errorf("after a replay: %s = %v, XfrmInStateSeqError %v, %s = %v; want 1, 1, %d", replayed, got[replayed],
			got[`vnic_drops_total{counter="XfrmInStateSeqError"}`], inPackets, got[inPackets], pings)
	}

	// Deleted, the SAs' series go; the device's counters stay.
	if errs := n.dev.Table().Delete([]sadb.Handle{out, in}); errs[0] != nil || errs[1] != nil {
		t.Fatalf("DELETE_SA: %v", errs)
	}
	got = gather(t, c)
	if n := promtest.CollectAndCount(c, "vnic_sa_packets_total", "vnic_sa_bytes_total", "vnic_sa_drops_total"); n != 0 || got["vnic_sas"] != 0 {
		t.Errorf("after DELETE_SA: %d per-SA series, vnic_sas %v", n, got["vnic_sas"])
	}
	if got[`vnic_packets_total{counter="OutPackets"}`] != pings {
		t.Errorf("after DELETE_SA: OutPackets %v, want %d", got[`vnic_packets_total{counter="OutPackets"}`], pings)
	}
}

// manySAs returns a table of n inbound SAs, none of which dropped
// anything.
func manySAs(tb testing.TB, n int) *sadb.Table {
	tb.Helper()
	tab := sadb.New(sadb.TableConfig{Capacity: n, DefaultReplayWindow: 64})
	const batch = 1000
	for i := 0; i < n; i += batch {
		cfgs := make([]sadb.Config, min(batch, n-i))
		for j := range cfgs {
			cfgs[j] = sadb.Config{Direction: sadb.Inbound, Mode: sadb.Tunnel, SPI: uint32(0x1000 + i + j),
				Src: packettest.V4B, Dst: netip.AddrFrom4([4]byte{10, byte((i + j) >> 16), byte((i + j) >> 8), byte(i + j)}),
				Algo: packettest.GCM128()}
		}
		if _, st := tab.Add(cfgs); st != ndis.StatusSuccess {
			tb.Fatalf("ADD_SA at %d: %v", i, st)
		}
	}
	return tab
}

// collect runs c's Collect, its metrics thrown away.
func collect(c prometheus.Collector) {
	ch := make(chan prometheus.Metric, 1024)
	done := make(chan struct{})
	go func() {
		for range ch {
		}
		close(done)
	}()
	c.Collect(ch)
	close(ch)
	<-done
}

// TestCollectAllocs: the per-SA series cost the collector two allocations
// per SA (one for the SA's series and labels, one for its label values),
// where the client library's constant metrics take some thirty per
// series.
func TestCollectAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	const n = 2000
	c := NewCollector(&fakeSource{table: manySAs(t, n), stats: map[string]uint64{"InPackets": 1}}, Options{PerSA: true})
	perSA := testing.AllocsPerRun(5, func() { collect(c) }) / n
	if perSA > 2.1 {
		t.Errorf("%.2f allocations per SA, want 2", perSA)
	}
}

// benchSAs is how many SAs BenchmarkScrape's device holds. docs/metrics.md
// quotes it with this, and with 1_000_000 (a run of some five minutes).
const benchSAs = 100_000

// BenchmarkScrape measures a whole scrape of a device with benchSAs SAs
// that dropped nothing, as Prometheus makes it (gzip) and as curl does
// (no compression), with and without the per-SA series: the time one
// takes (ns/op), the memory it allocates and the size of the response,
// per SA.
//
//	go test -run='^$' -bench=Scrape -benchtime=3x ./metrics
func BenchmarkScrape(b *testing.B) {
	const n = benchSAs
	tab := manySAs(b, n)
	for _, perSA := range []bool{true, false} {
		h := NewHandler(NewRegistry(&fakeSource{table: tab, stats: map[string]uint64{"InPackets": 1}}, Options{PerSA: perSA}),
			slog.New(slog.DiscardHandler))
		for _, enc := range []string{"gzip", "identity"} {
			b.Run(fmt.Sprintf("perSA=%v/%s", perSA, enc), func(b *testing.B) {
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", enc)
				var body int
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for b.Loop() {
					w := &countingWriter{header: http.Header{}}
					h.ServeHTTP(w, req)
					if w.code != 0 && w.code != http.StatusOK {
						b.Fatalf("status %d", w.code)
					}
					body = w.n
				}
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/n, "alloc-B/SA")
				b.ReportMetric(float64(body)/n, "body-B/SA")
			})
		}
	}
}

// countingWriter is an http.ResponseWriter that counts the body.
type countingWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *countingWriter) Header() http.Header         { return w.header }
func (w *countingWriter) WriteHeader(code int)        { w.code = code }
func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
