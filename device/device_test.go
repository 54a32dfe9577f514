package device

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"vnic/event"
	"vnic/ndis"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// wireTo delivers what one engine sends to another engine's receiver, as
// a lossless underlay would: the ESP bytes with headroom before them and
// their outer header, one flush per batch. It keeps a record of every ESP packet, in
// order.
type wireTo struct {
	mu     sync.Mutex
	rx     *receiver
	tamper func(pkt []byte)
	sent   int
	log    []wireRecord
}

func (w *wireTo) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	clear(failed[:len(pkts)])
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range pkts {
		p := received(&pkts[i])
		if h, kind, err := offload.Parse(p.Buf, p.Start, p.End, &p.Outer); err == nil && kind == offload.KindESP {
			w.log = append(w.log, wireRecord{binary.BigEndian.Uint32(p.Buf[h.ESP:]),
				binary.BigEndian.Uint32(p.Buf[h.ESP+4:]), binary.BigEndian.Uint64(p.Buf[h.ESP+8:])})
		}
		if w.tamper != nil {
			w.tamper(p.Buf[p.Start:p.End])
		}
		w.sent++
		w.rx.add(p)
	}
	w.rx.flush()
	return len(pkts), nil
}

// records returns the ESP packets sent so far.
func (w *wireTo) records() []wireRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log
}

type peer struct {
	table *sadb.Table
	bus   *event.Bus
	dev   *Device
	tun   *tuntest.ChannelTUN
}

func newPeer() *peer { return newPeerTable(sadb.TableConfig{Capacity: 16}) }

// newPeerTable is newPeer with a table built with cfg.
func newPeerTable(cfg sadb.TableConfig) *peer {
	p := &peer{tun: tuntest.NewChannelTUN()}
	p.setDevice(newDevice(Config{Table: cfg, CryptoEventInterval: time.Hour}, quiet))
	return p
}

// setDevice makes d p's device.
func (p *peer) setDevice(d *Device) {
	p.dev, p.table, p.bus = d, d.Table(), d.Events()
}

func mustAdd(t *testing.T, tab *sadb.Table, cfgs ...sadb.Config) []sadb.Handle {
	t.Helper()
	res, st := tab.Add(cfgs)
	if st != ndis.StatusSuccess {
		t.Fatalf("add: %v", res[0].Err)
	}
	hs := make([]sadb.Handle, len(res))
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("add element %d: %v", i, r.Err)
		}
		hs[i] = r.Handle
	}
	return hs
}

// link sets up A -> B: an outbound SA at A and its inbound twin at B, and
// starts A's outbound loop with a wire into B's receiver.
func link(t *testing.T, ctx context.Context, a, b *peer, cfg sadb.Config) (*wireTo, sadb.Handle, sadb.Handle) {
	t.Helper()
	out, in := cfg, cfg
	out.Direction, in.Direction, in.ReplayWindow, in.Pair = sadb.Outbound, sadb.Inbound, 64, 0
	ho := mustAdd(t, a.table, out)[0]
	hi := mustAdd(t, b.table, in)[0]
	w := &wireTo{rx: b.dev.newReceiver(b.tun.TUN())}
	go a.dev.runOutbound(ctx, a.tun.TUN(), w)
	return w, ho, hi
}

func recvOrTimeout(t *testing.T, c chan []byte) []byte {
	t.Helper()
	select {
	case p := <-c:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet delivered")
		return nil
	}
}

func TestDevicePassesTraffic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(),
		Encap: sadb.Encap{UDP: true}})
	for i := range 5 {
		ping := tuntest.Ping(in4b, in4a)
		a.tun.Outbound <- ping
		got := recvOrTimeout(t, b.tun.Inbound)
		if string(got) != string(ping) {
			t.Fatalf("packet %d changed on the way:\n got %x\nwant %x", i, got, ping)
		}
	}
	// Counters move just after the hand-over.
	waitFor(t, func() bool { return a.dev.Stats()["OutPackets"] == 5 && b.dev.Stats()["InPackets"] == 5 })
}

func TestDeviceDropsWithoutSA(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	w, _, _ := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(),
		Selectors: []sadb.Selector{{Dst: mustPrefix("10.2.0.0/16")}}})
	a.tun.Outbound <- tuntest.Ping(in4a, in4b) // to 10.1.0.1: no SA
	a.tun.Outbound <- tuntest.Ping(in4b, in4a) // to 10.2.0.1: SA
	recvOrTimeout(t, b.tun.Inbound)
	if got := a.dev.Stats()["XfrmOutNoStates"]; got != 1 {
		t.Errorf("XfrmOutNoStates %d, want 1", got)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent != 1 {
		t.Errorf("%d packets on the wire, want 1: nothing goes out in the clear", w.sent)
	}
}

// TestLinkScopedCountedApart: packets vnic0's own stack sends on its link
// (router solicitations, MLD, mDNS: link-local or link-scoped multicast
// destinations) with no SA are dropped and counted as VnicOutLinkLocal,
// so that XfrmOutNoStates counts only traffic that wanted a tunnel, and
// an idle vnic0 does not look like one losing packets.
func TestLinkScopedCountedApart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	w, _, _ := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(),
		Selectors: []sadb.Selector{{Dst: mustPrefix("10.2.0.0/16")}}})
	udp := func(src, dst string) []byte {
		buf := make([]byte, 200)
		end := udpPacket(buf, 0, netip.MustParseAddr(src), netip.MustParseAddr(dst), 5353, 5353, 20)
		return buf[:end]
	}
	for _, p := range [][]byte{
		udp("fe80::1", "ff02::2"),         // where router solicitations go
		udp("fe80::1", "ff02::16"),        // MLDv2 reports
		udp("fe80::1", "fe80::2"),         // link-local unicast
		udp("10.1.0.1", "224.0.0.251"),    // mDNS
		udp("10.1.0.1", "169.254.1.1"),    // IPv4 link-local
		udp("2001:db8::1", "2001:db8::2"), // global, no SA
		udp("10.1.0.1", "10.3.0.1"),       // no SA
	} {
		a.tun.Outbound <- p
	}
	a.tun.Outbound <- tuntest.Ping(in4b, in4a) // to 10.2.0.1: SA
	recvOrTimeout(t, b.tun.Inbound)
	st := a.dev.Stats()
	if st["VnicOutLinkLocal"] != 5 || st["XfrmOutNoStates"] != 2 {
		t.Errorf("VnicOutLinkLocal %d, XfrmOutNoStates %d; want 5 and 2", st["VnicOutLinkLocal"], st["XfrmOutNoStates"])
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent != 1 {
		t.Errorf("%d packets on the wire, want 1", w.sent)
	}
}

// TestSALifecycleEvents: ADD_SA, UPDATE_SA, SaDeleteReq and DELETE_SA each
// raise an event naming the SA by handle, direction, SPI, endpoints, mode
// and pair, as ip xfrm monitor does, so that a log reader can tell which
// tunnel an event was about once the SA is gone.
func TestSALifecycleEvents(t *testing.T) {
	p := newPeer()
	sub := p.bus.Subscribe()
	defer sub.Close()
	spec := gcm128()
	spec.ESN = true
	out := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x5000, Algo: spec, Direction: sadb.Outbound}
	in := sadb.Config{Mode: sadb.Transport, Src: v6b, SPI: 0x5001, Algo: spec, Direction: sadb.Inbound, ReplayWindow: 64}
	hs := mustAdd(t, p.table, out)
	in.Pair = hs[0]
	hs = append(hs, mustAdd(t, p.table, in)...)
	if err := p.table.UpdateESN(hs[0], 0x5000, 7); err != nil {
		t.Fatal(err)
	}
	if err := p.dev.RequestDelete(hs[1]); err != nil {
		t.Fatal(err)
	}
	p.table.Delete(hs)
	type ev struct {
		typ                 event.Type
		h, pair             sadb.Handle
		dir, src, dst, mode string
		spi, seqHigh        uint32
	}
	want := []ev{
		{event.SaAdded, hs[0], 0, "outbound", "192.0.2.1", "192.0.2.2", "tunnel", 0x5000, 0},
		{event.SaAdded, hs[1], hs[0], "inbound", "2001:db8::2", "any", "transport", 0x5001, 0},
		{event.SaUpdated, hs[0], hs[1], "outbound", "192.0.2.1", "192.0.2.2", "tunnel", 0x5000, 7},
		{event.SaDeleteReq, hs[1], hs[0], "inbound", "2001:db8::2", "any", "transport", 0x5001, 0},
		{event.SaDeleted, hs[0], hs[1], "outbound", "192.0.2.1", "192.0.2.2", "tunnel", 0x5000, 0},
		{event.SaDeleted, hs[1], hs[0], "inbound", "2001:db8::2", "any", "transport", 0x5001, 0},
	}
	for i, w := range want {
		select {
		case e := <-sub.C:
			got := ev{e.Type, e.Handle, e.Pair, e.Direction, e.Src, e.Dst, e.Mode, e.SPI, e.SeqHigh}
			if got != w {
				t.Errorf("event %d: %+v\n want %+v", i, got, w)
			}
		case <-time.After(time.Second):
			t.Fatalf("event %d (%v) did not come", i, w.typ)
		}
	}
}

func TestDeviceCryptoErrorsCountedAndReported(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	sub := packetEvents(t, b.bus)
	w, _, hi := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128()})
	w.tamper = func(p []byte) { p[len(p)-1] ^= 1 }
	for range 3 {
		a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	}
	waitFor(t, func() bool { return b.dev.Stats()["XfrmInStateProtoError"] == 3 })
	st := b.dev.Stats()
	if st["CRYPTO_TUNNEL_ESP_AUTH_FAILED"] != 3 || st["InPackets"] != 0 {
		t.Errorf("stats %v", st)
	}
	if got := b.table.Get(hi).Counters.Dropped(sadb.InStateProtoError); got != 3 {
		t.Errorf("per-SA drops %d", got)
	}
	select {
	case e := <-sub:
		if e.Type != event.CryptoError || e.Handle != hi || e.CryptoStatus != "CRYPTO_TUNNEL_ESP_AUTH_FAILED" || e.Counter != "XfrmInStateProtoError" {
			t.Errorf("event %+v", e)
		}
	case <-time.After(time.Second):
		t.Fatal("no CryptoError event")
	}
	select {
	case e := <-sub:
		t.Errorf("a second event within the rate-limit interval: %+v", e)
	default:
	}
}

// TestDeviceCryptoErrorBurstReported: the errors of a burst that come
// within the rate-limit interval are not lost: once the interval is over,
// an event reports them though no further error comes, so the events'
// counts add up to exactly the packets dropped; and the events of one SA
// and counter are at least an interval apart. A second burst after the
// first one's report is reported the same way.
func TestDeviceCryptoErrorBurstReported(t *testing.T) {
	const interval = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	b.setDevice(newDevice(Config{Table: sadb.TableConfig{Capacity: 16}, CryptoEventInterval: interval}, quiet))
	sub := packetEvents(t, b.bus)
	w, _, hi := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128()})
	w.tamper = func(p []byte) { p[len(p)-1] ^= 1 }

	var events []event.Event
	var sum uint64
	// collect receives events until their counts add up to want; the
	// deadline is generous, the report being due one interval after the
	// first event.
	collect := func(want uint64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for sum < want {
			select {
			case e := <-sub:
				if e.Type != event.CryptoError || e.Handle != hi || e.Direction != "inbound" || e.SPI != 0x4000 ||
					e.CryptoStatus != "CRYPTO_TUNNEL_ESP_AUTH_FAILED" || e.Counter != "XfrmInStateProtoError" ||
					e.Reason != "ESP integrity check failed" || e.Count == 0 {
					t.Fatalf("event %+v", e)
				}
				if n := len(events); n > 0 && e.Time.Sub(events[n-1].Time) < interval {
					t.Errorf("events %v apart, less than the %v interval: %+v after %+v", e.Time.Sub(events[n-1].Time), interval, e, events[n-1])
				}
				events = append(events, e)
				sum += e.Count
			case <-deadline:
				t.Fatalf("after %d failed packets, the events %+v report %d", want, events, sum)
			}
		}
		if sum != want {
			t.Fatalf("after %d failed packets, the events %+v report %d", want, events, sum)
		}
	}

	const burst1, burst2 = 7, 4
	for range burst1 {
		a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	}
	waitFor(t, func() bool { return b.dev.Stats()["XfrmInStateProtoError"] == burst1 })
	collect(burst1)
	if events[0].Count != 1 {
		t.Errorf("first event %+v: the first error is reported at once, alone", events[0])
	}
	for range burst2 {
		a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	}
	waitFor(t, func() bool { return b.dev.Stats()["XfrmInStateProtoError"] == burst1+burst2 })
	collect(burst1 + burst2)
	// Nothing is left to report.
	select {
	case e := <-sub:
		t.Errorf("an event beyond the %d failed packets: %+v", burst1+burst2, e)
	case <-time.After(2 * interval):
	}
}

// TestDeviceDeleteRequestKeepsSA: near exhaustion the device raises
// SaDeleteReq for the inbound SA and its outbound twin, keeps both working
// until DELETE_SA, and refuses to send past the last number.
func TestDeviceDeleteRequestKeepsSA(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeerTable(sadb.TableConfig{Capacity: 16, WarnAt: 2}), newPeer()
	sub := packetEvents(t, a.bus)
	// A's inbound SA (from B) paired with A's outbound SA.
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4b, Dst: v4a, SPI: 0x5000, Algo: gcm128(), Direction: sadb.Inbound, ReplayWindow: 64}
	hin := mustAdd(t, a.table, cfg)[0]
	_, hout, _ := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(),
		InitialSeq: 1<<32 - 4, Pair: hin})
	for i := range 4 { // numbers 2^32-4 .. 2^32-1: the warning comes at 2^32-3
		a.tun.Outbound <- tuntest.Ping(in4b, in4a)
		recvOrTimeout(t, b.tun.Inbound)
		_ = i
	}
	select {
	case e := <-sub:
		if e.Type != event.SaDeleteReq || e.Handle != hin || e.Pair != hout {
			t.Fatalf("event %+v, want SaDeleteReq for inbound %d paired with %d", e, hin, hout)
		}
	case <-time.After(time.Second):
		t.Fatal("no SaDeleteReq")
	}
	if !a.table.Get(hin).DeleteRequested.Load() || !a.table.Get(hout).DeleteRequested.Load() {
		t.Error("both SAs must be marked delete-requested")
	}
	a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	waitFor(t, func() bool { return a.dev.Stats()["XfrmOutStateSeqError"] == 1 })
	if a.table.Get(hout) == nil || a.table.Get(hin) == nil {
		t.Fatal("the device removed an SA it asked the host to delete")
	}
}

// TestDeviceEventReasons: the reasons the engine gives its lifetime and
// SaDeleteReq events are the ones docs/oid-channel.md quotes.
func TestDeviceEventReasons(t *testing.T) {
	p := newPeer()
	sub := packetEvents(t, p.bus)
	h := mustAdd(t, p.table, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128()})[0]
	sa := p.table.Get(h)
	p.dev.publish(sa, offload.EventSoftLifetime|offload.EventHardLifetime|offload.EventSeqNearExhaustion)
	in := p.table.Get(mustAdd(t, p.table, sadb.Config{Mode: sadb.Tunnel, Src: v4b, Dst: v4a, SPI: 0x4001, Algo: gcm128(), Direction: sadb.Inbound})[0])
	p.dev.publish(in, offload.EventSeqNearExhaustion)
	want := []struct {
		typ    event.Type
		reason string
	}{
		{event.SoftLifetime, "soft lifetime reached: rekey now"},
		{event.HardLifetime, "hard lifetime reached: the SA processes no more packets"},
		{event.SaDeleteReq, "hard lifetime reached"},
		{event.SaDeleteReq, "outbound sequence numbers near exhaustion"},
		{event.SaDeleteReq, "the peer's sequence numbers near exhaustion"},
	}
	doc, err := os.ReadFile("../docs/oid-channel.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		select {
		case e := <-sub:
			if e.Type != w.typ || e.Reason != w.reason || e.Handle != h && e.Handle != in.Handle {
				t.Errorf("event %+v, want %s with reason %q", e, w.typ, w.reason)
			}
		case <-time.After(time.Second): // published already; packetEvents passes them on
			t.Fatalf("no %s event", w.typ)
		}
		if q := "`\"" + w.reason + "\"`"; !strings.Contains(string(doc), q) {
			t.Errorf("docs/oid-channel.md does not quote the %s reason %s", w.typ, q)
		}
	}
}

// TestDeviceDeleteWhileTrafficFlows deletes the SAs while packets stream:
// no crash (run with -race) and no packet is processed with an SA after
// Delete returns.
func TestDeviceDeleteWhileTrafficFlows(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	_, hout, hin := link(t, ctx, a, b, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128()})
	received, stop := stream(a, b)
	time.Sleep(50 * time.Millisecond)
	in, out := b.table.Get(hin), a.table.Get(hout)
	b.table.Delete([]sadb.Handle{hin})
	// The device finishes every packet it took with the SA before it lets
	// Delete wipe the keys: the SA's counters are final once Delete
	// returns.
	inAfter := in.Counters.Packets.Load()
	a.table.Delete([]sadb.Handle{hout})
	outAfter := out.Counters.Packets.Load()
	time.Sleep(50 * time.Millisecond)
	stop()
	if n := in.Counters.Packets.Load() - inAfter; n != 0 {
		t.Fatalf("%d packets decrypted with the inbound SA after it was deleted", n)
	}
	if n := out.Counters.Packets.Load() - outAfter; n != 0 {
		t.Fatalf("%d packets encrypted with the outbound SA after it was deleted", n)
	}
	if inAfter == 0 || received.Load() == 0 {
		t.Fatal("no traffic flowed before the delete: the test proves nothing")
	}
}

// stream sends pings from a's device to b's as fast as they go, counting
// those b's device receives, until stop is called.
func stream(a, b *peer) (received *atomic.Int64, stop func()) {
	received = new(atomic.Int64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-b.tun.Inbound:
				received.Add(1)
			case <-done:
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case a.tun.Outbound <- tuntest.Ping(in4b, in4a):
			case <-done:
				return
			}
		}
	}()
	return received, func() { close(done); wg.Wait() }
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// oddWire refuses the packets at odd positions of each batch, as an
// underlay does whose kernel takes part of a batch.
type oddWire struct {
	mu      sync.Mutex
	batches []int // the size of each batch
}

func (w *oddWire) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batches = append(w.batches, len(pkts))
	sent := 0
	for i := range pkts {
		failed[i] = i%2 == 1
		if !failed[i] {
			sent++
		}
	}
	if sent < len(pkts) {
		return sent, errors.New("refused")
	}
	return sent, nil
}

// TestDeviceCountsPartialSend: when the underlay sends part of a batch,
// OutPackets and OutBytes count the packets that went, VnicOutSendError
// the others; the SA counted every packet it numbered.
func TestDeviceCountsPartialSend(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newDevice(Config{Table: sadb.TableConfig{Capacity: 4}}, quiet)
	h := mustAdd(t, e.table, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x600, Algo: gcm128(),
		Direction: sadb.Outbound, Encap: sadb.Encap{UDP: true}})[0]
	dev, w := newBatchTUN(), &oddWire{}
	defer close(dev.in)
	go e.runOutbound(ctx, dev, w)
	plain := func(n int) []byte {
		buf := make([]byte, 2048)
		return buf[:udpPacket(buf, 0, in4a, in4b, 1, 2, n)]
	}
	batch, alone := [][]byte{plain(100), plain(200), plain(300), plain(400), plain(500)}, plain(600)
	dev.in <- batch
	dev.in <- [][]byte{alone} // at position 0: sent
	waitFor(t, func() bool { s := e.Stats(); return s["OutPackets"]+s["VnicOutSendError"] == 6 })
	s := e.Stats()
	wantBytes := uint64(len(batch[0]) + len(batch[2]) + len(batch[4]) + len(alone))
	if s["OutPackets"] != 4 || s["VnicOutSendError"] != 2 || s["OutBytes"] != wantBytes {
		t.Errorf("OutPackets %d, VnicOutSendError %d, OutBytes %d; want 4, 2, %d",
			s["OutPackets"], s["VnicOutSendError"], s["OutBytes"], wantBytes)
	}
	if n := e.table.Get(h).Counters.Packets.Load(); n != 6 {
		t.Errorf("the SA counted %d packets, want 6 (every packet it numbered)", n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.batches) != 2 || w.batches[0] != 5 {
		t.Errorf("batches of %v packets, want [5 1]", w.batches)
	}
}
