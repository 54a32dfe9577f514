package device

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"vnic/header"
	"vnic/internal/testutil"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// TestDropLog: drops are logged at debug with the packet's flow and why,
// at most one line per counter per interval, the next line saying how
// many went unlogged; at info, nothing.
func TestDropLog(t *testing.T) {
	var logBuf testutil.LockedBuffer
	d := newDevice(Config{Table: sadb.TableConfig{Capacity: 4}},
		slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	d.dropLogEvery = 100 * time.Millisecond
	pkt := make([]byte, 200)
	end := udpPacket(pkt, 0, netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.3.0.1"), 5000, 53, 20)
	b := &outBatch{}
	for range 100 {
		d.outbound(b, pkt, 0, end) // no SA
	}
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
			if strings.Contains(l, "packet dropped") {
				out = append(out, l)
			}
		}
		return out
	}
	got := lines()
	if len(got) != 1 {
		t.Fatalf("%d lines for 100 drops within the interval, want 1:\n%s", len(got), logBuf.String())
	}
	for _, w := range []string{"level=DEBUG", "counter=XfrmOutNoStates", "dir=out", "src=10.1.0.1", "dst=10.3.0.1",
		"proto=17", "sport=5000", "dport=53", "unlogged_since_last=0"} {
		if !strings.Contains(got[0], w) {
			t.Errorf("line lacks %s: %s", w, got[0])
		}
	}
	time.Sleep(d.dropLogEvery)
	d.outbound(b, pkt, 0, end)
	if got = lines(); len(got) != 2 || !strings.Contains(got[1], "unlogged_since_last=99") {
		t.Errorf("after the interval: %q, want a second line counting 99 unlogged drops", got)
	}

	// Inbound: by the outer header and SPI.
	rx := d.newReceiver(nullTUN{})
	defer rx.close()
	esp := make([]byte, 64)
	binary.BigEndian.PutUint32(esp, 0xabcd)
	rx.add(received(&underlay.Packet{Buf: esp, Start: 0, End: len(esp),
		Outer: header.Outer{Src: v4a, Dst: v4b, UDP: true, SrcPort: 31000, DstPort: 4500}}))
	rx.flush()
	if got = lines(); len(got) != 3 {
		t.Fatalf("no line for an inbound drop: %q", got)
	}
	for _, w := range []string{"counter=XfrmInNoStates", "dir=in", "src=192.0.2.1", "dst=192.0.2.2", "spi=0x0000abcd", "sport=31000", "dport=4500"} {
		if !strings.Contains(got[2], w) {
			t.Errorf("inbound line lacks %s: %s", w, got[2])
		}
	}

	// At info, the drops are counted and not logged.
	var infoBuf bytes.Buffer
	q := newDevice(Config{Table: sadb.TableConfig{Capacity: 4}}, slog.New(slog.NewTextHandler(&infoBuf, nil)))
	q.outbound(b, pkt, 0, end)
	if infoBuf.Len() != 0 || q.Stats()["XfrmOutNoStates"] != 1 {
		t.Errorf("at info: log %q, XfrmOutNoStates %d", infoBuf.String(), q.Stats()["XfrmOutNoStates"])
	}
}

// TestSendErrorLog: packets the underlay did not send are logged at debug
// at most once per interval, a line for the first failed packet of its
// batch with how many failed, the next counting those left unlogged.
func TestSendErrorLog(t *testing.T) {
	var logBuf testutil.LockedBuffer
	d := newDevice(Config{Table: sadb.TableConfig{Capacity: 4}},
		slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	d.dropLogEvery = 100 * time.Millisecond
	h := mustAdd(t, d.table, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x6000, Algo: gcm128(), Direction: sadb.Outbound})[0]
	b := &outBatch{}
	for range 4 {
		buf := make([]byte, offload.Headroom+200+offload.Tailroom)
		end := udpPacket(buf, offload.Headroom, in4a, in4b, 1, 2, 40)
		j, _, err := offload.EncapBegin(d.table.Get(h), buf, offload.Headroom, end)
		if err != nil {
			t.Fatal(err)
		}
		b.jobs, b.bufs = append(b.jobs, j), append(b.bufs, buf)
	}
	failed := []bool{false, true, false, true}
	count := func() int { return strings.Count(logBuf.String(), "outbound packets not sent") }
	d.logSendErrors(b, failed, errors.New("no buffer space available"))
	d.logSendErrors(b, failed, errors.New("no buffer space available"))
	if n := count(); n != 1 || !strings.Contains(logBuf.String(), "packets=2") || !strings.Contains(logBuf.String(), "spi=24576") {
		t.Fatalf("%d lines for two failing batches within the interval, want 1 naming 2 packets of SPI 0x6000:\n%s", n, logBuf.String())
	}
	time.Sleep(d.dropLogEvery)
	d.logSendErrors(b, failed, errors.New("no buffer space available"))
	if n := count(); n != 2 || !strings.Contains(logBuf.String(), "unlogged_since_last=2") {
		t.Errorf("after the interval: %d lines, want 2, the second counting the 2 unlogged:\n%s", n, logBuf.String())
	}
}

// TestReassemblyDropLog: the lines about fragments reassembly dropped
// share their counter's limit, the next line counting those unlogged.
func TestReassemblyDropLog(t *testing.T) {
	var logBuf testutil.LockedBuffer
	d := newDevice(Config{Table: sadb.TableConfig{Capacity: 4}},
		slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	d.dropLogEvery = 100 * time.Millisecond
	h := mustAdd(t, d.table, sadb.Config{Mode: sadb.Transport, Src: v4a, Dst: v4b, SPI: 0x6001, Algo: gcm128(), Direction: sadb.Outbound})[0]
	sa := d.table.Get(h)
	count := func() int { return strings.Count(logBuf.String(), "outbound packets dropped") }
	d.dropOnSA(sa, offload.ErrFragInvalid, 3)
	d.dropOnSA(sa, offload.ErrFragInvalid, 3)
	if n := count(); n != 1 || !strings.Contains(logBuf.String(), "packets=3") {
		t.Fatalf("%d lines for two drops within the interval, want 1:\n%s", n, logBuf.String())
	}
	time.Sleep(d.dropLogEvery)
	d.dropOnSA(sa, offload.ErrFragInvalid, 1)
	if n := count(); n != 2 || !strings.Contains(logBuf.String(), "unlogged_since_last=3") {
		t.Errorf("after the interval: %d lines, want 2, the second counting the 3 unlogged:\n%s", n, logBuf.String())
	}
	if got := sa.Counters.Dropped(sadb.OutFragInvalid); got != 7 {
		t.Errorf("%d drops counted on the SA, want 7", got)
	}
}
