// Package metrics exports vnic's counters to Prometheus: a Collector that
// reads a device's global counters and its SAs' counters when Prometheus
// scrapes (the data path pays nothing for it), and the HTTP endpoint that
// serves them with the Prometheus client library (docs/metrics.md).
//
// Every counter keeps the name vnic gives it everywhere else (VNIC_STATISTICS,
// `vnic stats`, the logs, the events) as the value of a label, counter; the
// metric it belongs to says what it counts, so that adding up a metric's
// series means something:
//
//	vnic_packets_total{counter="InPackets"}
//	vnic_bytes_total{counter="OutBytes"}
//	vnic_drops_total{counter="XfrmInNoStates"}
//	vnic_crypto_status_total{counter="CRYPTO_TUNNEL_ESP_AUTH_FAILED"}
//	vnic_other_total{counter="VnicInNatKeepalive"}
//	vnic_sa_packets_total{handle="1",direction="outbound",spi="0x00001001",src="192.0.2.1",dst="192.0.2.2",mode="tunnel"}
//	vnic_sa_drops_total{handle="2",...,counter="XfrmInStateSeqError"}
package metrics

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"vnic/sadb"
)

// Source is what the collector reads: a device.Device (or any oid.Device).
type Source interface {
	// Stats returns the global counters by name, as VNIC_STATISTICS
	// does.
	Stats() map[string]uint64
	// Table is the SA database, whose SAs carry their own counters.
	Table() *sadb.Table
}

// Options choose what the collector exports.
type Options struct {
	// PerSA exports the per-SA series (vnic_sa_*): two for every SA, and
	// one more for each reason one of its packets was dropped for. With a
	// million SAs they make most of a scrape's size and cost.
	PerSA bool
}

// counterLabel is the label that carries vnic's name of a counter.
const counterLabel = "counter"

// saLabelNames are the labels that name the SA of a per-SA series, in
// the order NewDesc takes them.
var saLabelNames = []string{"handle", "direction", "spi", "src", "dst", "mode"}

// The metrics. The global counters are split by what they count, each
// under vnic's name in the counter label.
var (
	packetsDesc = prometheus.NewDesc("vnic_packets_total",
		"Packets through the device: InPackets received and decrypted, OutPackets protected and sent (VNIC_STATISTICS).",
		[]string{counterLabel}, nil)
	bytesDesc = prometheus.NewDesc("vnic_bytes_total",
		"Bytes of the packets in vnic_packets_total, as vnic0 reads and writes them: InBytes, OutBytes (VNIC_STATISTICS).",
		[]string{counterLabel}, nil)
	dropsDesc = prometheus.NewDesc("vnic_drops_total",
		"Packets dropped, by the /proc/net/xfrm_stat counter (XfrmInNoStates, ...) or vnic's own (VnicOutTooBig, ...) that says why.",
		[]string{counterLabel}, nil)
	cryptoDesc = prometheus.NewDesc("vnic_crypto_status_total",
		"Inbound packets that failed with an NDIS CryptoStatus (CRYPTO_TUNNEL_ESP_AUTH_FAILED, ...); each is also in vnic_drops_total.",
		[]string{counterLabel}, nil)
	otherDesc = prometheus.NewDesc("vnic_other_total",
		"The device's other counters (VNIC_STATISTICS): NAT keepalives received and sent, IKE packets dropped, ESP passed up, "+
			"read and send errors.",
		[]string{counterLabel}, nil)
	sasDesc = prometheus.NewDesc("vnic_sas",
		"SAs the device holds.", nil, nil)
	capacityDesc = prometheus.NewDesc("vnic_sa_offload_capacity",
		"SaOffloadCapacity: how many SAs the device can hold (vnic up -capacity).", nil, nil)

	saPacketsDesc = prometheus.NewDesc("vnic_sa_packets_total",
		"Packets an SA protected (outbound) or accepted (inbound).", saLabelNames, nil)
	saBytesDesc = prometheus.NewDesc("vnic_sa_bytes_total",
		"Bytes of the packets in vnic_sa_packets_total.", saLabelNames, nil)
	saDropsDesc = prometheus.NewDesc("vnic_sa_drops_total",
		"Packets of an SA dropped, by the counter that says why (as vnic_drops_total); only the counters that are not zero.",
		append([]string{counterLabel}, saLabelNames...), nil)
)

// Collector is a prometheus.Collector of one device's counters. It reads
// them when Prometheus scrapes; it keeps no state, and Collect may run in
// several scrapes at once.
type Collector struct {
	src  Source
	opts Options
}

// NewCollector returns a collector of src's counters.
func NewCollector(src Source, opts Options) *Collector {
	return &Collector{src: src, opts: opts}
}

// Describe sends the descriptions of every metric Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, dropsDesc, cryptoDesc, otherDesc, sasDesc, capacityDesc} {
		ch <- d
	}
	if c.opts.PerSA {
		ch <- saPacketsDesc
		ch <- saBytesDesc
		ch <- saDropsDesc
	}
}

// Collect sends the device's counters as they are now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for name, v := range c.src.Stats() {
		ch <- prometheus.MustNewConstMetric(family(name), prometheus.CounterValue, float64(v), name)
	}
	t := c.src.Table()
	ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, float64(t.Capacity()))
	if !c.opts.PerSA {
		ch <- prometheus.MustNewConstMetric(sasDesc, prometheus.GaugeValue, float64(t.Len()))
		return
	}
	sas := t.List()
	ch <- prometheus.MustNewConstMetric(sasDesc, prometheus.GaugeValue, float64(len(sas)))
	var buf []byte
	for _, sa := range sas {
		s := newSASeries(sa, &buf)
		ch <- &s.packets
		ch <- &s.bytes
		for r := range sadb.NumReasons {
			if n := sa.Counters.Dropped(r); n > 0 {
				ch <- s.drop(r, n)
			}
		}
	}
}

// reasons are the names of the drop counters (sadb.Reason).
var reasons = func() map[string]bool {
	m := make(map[string]bool, sadb.NumReasons)
	for r := range sadb.NumReasons {
		m[r.String()] = true
	}
	return m
}()

// family is the metric of the global counter name.
func family(name string) *prometheus.Desc {
	switch {
	case name == "InPackets" || name == "OutPackets":
		return packetsDesc
	case name == "InBytes" || name == "OutBytes":
		return bytesDesc
	case reasons[name]:
		return dropsDesc
	case strings.HasPrefix(name, "CRYPTO_"):
		return cryptoDesc
	}
	return otherDesc
}

// Per-SA series. A million SAs make two million series or more in one
// scrape, so they are built with few allocations: one block per SA holds
// its label pairs, which all its series share (a collected metric's labels
// are immutable, by the client library's contract), and both its
// always-present series; one string holds its label values. The library's
// constant metrics would take some thirty allocations per series, and
// twice the memory.

// labelName are the names of the label pairs: the client library's label
// pairs point to their strings.
var labelName = struct{ counter, direction, dst, handle, mode, spi, src string }{
	"counter", "direction", "dst", "handle", "mode", "spi", "src"}

// reasonPairs are the counter label pairs of the per-SA drop series,
// shared by every SA.
var reasonPairs = func() (p [sadb.NumReasons]*dto.LabelPair) {
	for r := range sadb.NumReasons {
		name := r.String()
		p[r] = &dto.LabelPair{Name: &labelName.counter, Value: &name}
	}
	return p
}()

// Indices of an SA's label pairs, sorted by name as the exposition wants
// them.
const (
	lDirection = iota
	lDst
	lHandle
	lMode
	lSPI
	lSrc
	numSALabels
)

// saSeries is one SA's labels and its packet and byte series.
type saSeries struct {
	direction, dst, handle, mode, spi, src string
	pairs                                  [numSALabels]dto.LabelPair
	labels                                 [numSALabels]*dto.LabelPair // &pairs[i], sorted by name
	packets, bytes                         counter
}

// newSASeries returns sa's series; buf is scratch space for the label
// values, kept between calls.
func newSASeries(sa *sadb.SA, buf *[]byte) *saSeries {
	s := &saSeries{direction: sa.Config.Direction.String(), mode: sa.Config.Mode.String()}
	b := strconv.AppendUint((*buf)[:0], uint64(sa.Handle), 10)
	nHandle := len(b)
	b = append(b, "0x"...)
	b = appendHex32(b, sa.Config.SPI)
	nSPI := len(b)
	b = appendAddr(b, sa.Config.Src)
	nSrc := len(b)
	b = appendAddr(b, sa.Config.Dst)
	*buf = b
	all := string(b) // the one allocation for the values
	s.handle, s.spi, s.src, s.dst = all[:nHandle], all[nHandle:nSPI], all[nSPI:nSrc], all[nSrc:]

	for i, p := range [numSALabels]struct{ name, value *string }{
		lDirection: {&labelName.direction, &s.direction},
		lDst:       {&labelName.dst, &s.dst},
		lHandle:    {&labelName.handle, &s.handle},
		lMode:      {&labelName.mode, &s.mode},
		lSPI:       {&labelName.spi, &s.spi},
		lSrc:       {&labelName.src, &s.src},
	} {
		s.pairs[i].Name, s.pairs[i].Value = p.name, p.value
		s.labels[i] = &s.pairs[i]
	}
	s.packets.init(saPacketsDesc, s.labels[:], sa.Counters.Packets.Load())
	s.bytes.init(saBytesDesc, s.labels[:], sa.Counters.Bytes.Load())
	return s
}

// drop returns the series of n packets of the SA dropped for r.
func (s *saSeries) drop(r sadb.Reason, n uint64) prometheus.Metric {
	d := &dropCounter{}
	d.labels[0] = reasonPairs[r] // "counter" sorts before the SA's labels
	copy(d.labels[1:], s.labels[:])
	d.init(saDropsDesc, d.labels[:], n)
	return &d.counter
}

// dropCounter is a per-SA drop series with room for its labels.
type dropCounter struct {
	counter
	labels [numSALabels + 1]*dto.LabelPair
}

// counter is a prometheus.Metric of a counter's value at the scrape.
type counter struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	value  float64
	sample dto.Counter
}

func (c *counter) init(desc *prometheus.Desc, labels []*dto.LabelPair, v uint64) {
	c.desc, c.labels, c.value = desc, labels, float64(v)
	c.sample.Value = &c.value
}

// Desc returns the metric's description.
func (c *counter) Desc() *prometheus.Desc { return c.desc }

// Write fills m with the counter: its labels and value, which m shares.
func (c *counter) Write(m *dto.Metric) error {
	m.Label = c.labels
	m.Counter = &c.sample
	return nil
}

// appendHex32 appends v as eight hex digits, as VNIC_QUERY_SA's spi_hex.
func appendHex32(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// appendAddr appends an SA endpoint as VNIC_QUERY_SA shows it: the
// wildcard as "any".
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "any"...)
	}
	return a.AppendTo(b)
}
