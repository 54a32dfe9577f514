package device

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"vnic/algo"
	"vnic/header"
	"vnic/internal/packettest"
	"vnic/internal/testutil"
	"vnic/ipfrag"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// batchTUN is a device whose reads return whole batches, as vnic0 does
// with its offloads on, and whose writes are kept in order.
type batchTUN struct {
	in  chan [][]byte
	mu  sync.Mutex
	got [][]byte
}

func newBatchTUN() *batchTUN { return &batchTUN{in: make(chan [][]byte)} }

func (d *batchTUN) BatchSize() int { return 128 }

func (d *batchTUN) Close() error { return nil }

func (d *batchTUN) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	b, ok := <-d.in
	if !ok {
		return 0, os.ErrClosed
	}
	for i, p := range b {
		sizes[i] = copy(bufs[i][off:], p)
	}
	return len(b), nil
}

func (d *batchTUN) Write(bufs [][]byte, off int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range bufs {
		d.got = append(d.got, bytes.Clone(b[off:]))
	}
	return len(bufs), nil
}

func (d *batchTUN) received() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.got
}

// wireRecord is what the underlay saw of one ESP packet: its SPI, the low
// 32 bits of its sequence number and its IV (8 bytes).
type wireRecord struct {
	spi, seq uint32
	iv       uint64
}

// parallelPeer is an engine with crypto workers running.
func parallelPeer(ctx context.Context, workers int) *peer {
	p := &peer{}
	p.setDevice(newDevice(Config{Table: sadb.TableConfig{Capacity: 16}, CryptoEventInterval: time.Hour, CryptoWorkers: workers}, quiet))
	go p.dev.runCrypto(ctx)
	return p
}

// flowPacket is packet i of flow f: a UDP packet to 10.2.0.(f+1) whose
// payload starts with the flow and the index.
func flowPacket(f, i int, size int) []byte {
	buf := make([]byte, 2048)
	end := udpPacket(buf, 0, in4a, netip.AddrFrom4([4]byte{10, 2, 0, byte(f + 1)}), 1000, 2000, size)
	binary.BigEndian.PutUint32(buf[28:], uint32(f))
	binary.BigEndian.PutUint32(buf[32:], uint32(i))
	return buf[:end]
}

// TestParallelKeepsOrderAndNumbers sends thousands of packets of three SAs
// (three algorithms, one with ESN crossing 2^32 and an UPDATE_SA on the
// way) through two engines whose crypto workers seal and open batches in
// parallel. It checks what parallel crypto must not break: every SA's
// sequence numbers leave strictly increasing and no IV (the nonce) is ever
// used twice, and every packet reaches the peer's device intact and in the
// order it was sent, with nothing dropped.
func TestParallelKeepsOrderAndNumbers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := parallelPeer(ctx, 4), parallelPeer(ctx, 4)
	devA, devB := newBatchTUN(), newBatchTUN()
	defer close(devA.in)
	specs := []algo.Spec{allSpecs()["gcm128"], allSpecs()["chacha"], allSpecs()["cbc256-sha512"]}
	specs[0].ESN = true
	var esnOut, esnIn sadb.Handle
	for f, spec := range specs {
		cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: uint32(0x100 + f), Algo: spec,
			Selectors: []sadb.Selector{{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, 0, byte(f + 1)}), 32)}}}
		out, in := cfg, cfg
		out.Direction, in.Direction, in.ReplayWindow = sadb.Outbound, sadb.Inbound, 1024
		if spec.ESN {
			out.InitialSeq, in.InitialSeq = 1<<32-3000, 1<<32-3001
		}
		ho, hi := mustAdd(t, a.table, out)[0], mustAdd(t, b.table, in)[0]
		if spec.ESN {
			esnOut, esnIn = ho, hi
		}
	}
	w := &wireTo{rx: b.dev.newReceiver(devB)}
	go a.dev.runOutbound(ctx, devA, w)

	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	next := make([]int, len(specs))
	send := func(n int) {
		for sent := 0; sent < n; {
			batch := make([][]byte, min(1+rng.IntN(128), n-sent))
			for i := range batch {
				f := rng.IntN(len(specs))
				batch[i] = flowPacket(f, next[f], 64+rng.IntN(1300))
				next[f]++
				want = append(want, batch[i])
			}
			devA.in <- batch
			sent += len(batch)
		}
		waitFor(t, func() bool { return len(devB.received()) == len(want) })
	}
	send(6000)
	// UPDATE_SA between two bursts, as a host does it: both ends.
	for _, u := range []struct {
		tab *sadb.Table
		h   sadb.Handle
	}{{a.table, esnOut}, {b.table, esnIn}} {
		if err := u.tab.UpdateESN(u.h, 0x100, 2); err != nil {
			t.Fatal(err)
		}
	}
	send(6000)

	got := devB.received()
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d arrived as\n%x\nwant\n%x", i, got[i], want[i])
		}
	}
	for _, p := range []*peer{a, b} {
		for name, n := range p.dev.Stats() {
			if n != 0 && name != "InPackets" && name != "InBytes" && name != "OutPackets" && name != "OutBytes" {
				t.Errorf("counter %s = %d, want 0", name, n)
			}
		}
	}

	// Per SA: increasing numbers (the ESN SA's low bits start again at 0
	// once, at 2^32; the UPDATE_SA keeps them), distinct IVs.
	recs := w.records()
	if len(recs) != len(want) {
		t.Fatalf("%d packets on the wire, want %d", len(recs), len(want))
	}
	last := map[uint32]uint64{}
	high := map[uint32]uint64{}
	ivs := map[uint32]map[uint64]bool{}
	resets := 0
	for i, r := range recs {
		if ivs[r.spi] == nil {
			ivs[r.spi] = map[uint64]bool{}
		}
		if ivs[r.spi][r.iv] {
			t.Fatalf("packet %d: SPI 0x%x used IV %016x twice", i, r.spi, r.iv)
		}
		ivs[r.spi][r.iv] = true
		full := high[r.spi] | uint64(r.seq)
		if prev, ok := last[r.spi]; ok && full <= prev {
			if r.spi != 0x100 || r.seq != 0 {
				t.Fatalf("packet %d: SPI 0x%x sent number %d after %d", i, r.spi, full, prev)
			}
			resets++
			high[r.spi] += 1 << 32
			full = high[r.spi]
		}
		last[r.spi] = full
	}
	if resets != 1 {
		t.Errorf("the ESN SA's low bits started again %d times, want once (at 2^32)", resets)
	}
	if got := a.table.Get(esnOut).Counters.Packets.Load(); got != uint64(len(ivs[0x100])) {
		t.Errorf("ESN SA counted %d packets, the wire saw %d", got, len(ivs[0x100]))
	}
}

// TestParallelExhaustion runs an SA into its last sequence number with
// crypto workers on: each remaining number goes out once, in order, and
// every packet beyond is dropped and counted, never sent.
func TestParallelExhaustion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := parallelPeer(ctx, 4), parallelPeer(ctx, 4)
	devA, devB := newBatchTUN(), newBatchTUN()
	defer close(devA.in)
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x300, Algo: gcm128(), InitialSeq: 1<<32 - 50}
	out, in := cfg, cfg
	out.Direction, in.Direction, in.ReplayWindow, in.InitialSeq = sadb.Outbound, sadb.Inbound, 64, 1<<32-51
	mustAdd(t, a.table, out)
	mustAdd(t, b.table, in)
	w := &wireTo{rx: b.dev.newReceiver(devB)}
	go a.dev.runOutbound(ctx, devA, w)
	for range 2 {
		batch := make([][]byte, 100)
		for i := range batch {
			batch[i] = flowPacket(1, i, 200)
		}
		devA.in <- batch
	}
	waitFor(t, func() bool { return a.dev.Stats()["XfrmOutStateSeqError"] == 150 })
	recs := w.records()
	if len(recs) != 50 {
		t.Fatalf("%d packets sent, want the 50 numbers left", len(recs))
	}
	for i, r := range recs {
		if want := uint32(1<<32 - 50 + i); r.seq != want {
			t.Fatalf("packet %d has number %d, want %d", i, r.seq, want)
		}
	}
	if got := len(devB.received()); got != 50 {
		t.Errorf("peer received %d packets, want 50", got)
	}
	if st := a.dev.Stats(); st["OutPackets"] != 50 {
		t.Errorf("OutPackets %d, want 50", st["OutPackets"])
	}
}

// TestCryptAllWithoutWorkers: a loop whose engine has workers configured
// but not running still finishes every batch (it runs the ranges it handed
// over itself), so a stopping engine never hangs.
func TestCryptAllWithoutWorkers(t *testing.T) {
	e := newDevice(Config{Table: sadb.TableConfig{Capacity: 1}, CryptoWorkers: 3}, quiet)
	b := &countBatch{n: make([]int, 100)}
	var wg sync.WaitGroup
	e.cryptAll(b, len(b.n), &wg)
	for i, n := range b.n {
		if n != 1 {
			t.Fatalf("packet %d processed %d times", i, n)
		}
	}
}

// countBatch counts how often each packet's cryptography ran.
type countBatch struct{ n []int }

func (b *countBatch) crypt(lo, hi int) {
	for i := lo; i < hi; i++ {
		b.n[i]++
	}
}

// nullTUN is a device that takes every write and reads nothing.
type nullTUN struct{}

func (nullTUN) BatchSize() int                          { return 128 }
func (nullTUN) Close() error                            { return nil }
func (nullTUN) Read([][]byte, []int, int) (int, error)  { return 0, os.ErrClosed }
func (nullTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// TestDeviceBatchNoAllocs: the loops' batch work, with crypto workers
// sharing it, allocates nothing per batch: numbering and sealing a batch
// of 64 packets, and opening, finishing and writing one.
func TestDeviceBatchNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := parallelPeer(ctx, 2), parallelPeer(ctx, 2)
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x400, Algo: gcm128()}
	out, in := cfg, cfg
	out.Direction, in.Direction, in.ReplayWindow = sadb.Outbound, sadb.Inbound, 4096
	mustAdd(t, a.table, out)
	mustAdd(t, b.table, in)

	const batch, runs = 64, 100
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, offload.Headroom+1500+offload.Tailroom)
	}
	ob := &outBatch{jobs: make([]offload.EncapJob, 0, batch), bufs: make([][]byte, 0, batch), sizes: make([]int, 0, batch)}
	var sealed []*underlay.Packet // every packet sealed, for the inbound half
	n := testing.AllocsPerRun(runs, func() {
		ob.jobs, ob.bufs, ob.sizes = ob.jobs[:0], ob.bufs[:0], ob.sizes[:0]
		for _, buf := range bufs {
			end := udpPacket(buf, offload.Headroom, in4a, in4b, 1, 2, 1300)
			a.dev.outbound(ob, buf, offload.Headroom, end)
		}
		a.dev.cryptAll(ob, len(ob.jobs), &ob.done)
		if len(ob.jobs) != batch {
			t.Fatalf("%d of %d packets sealed", len(ob.jobs), batch)
		}
	})
	if n != 0 {
		t.Errorf("sealing a batch: %v allocations, want 0", n)
	}
	for range runs + 1 {
		for _, buf := range bufs {
			end := udpPacket(buf, offload.Headroom, in4a, in4b, 1, 2, 1300)
			j, _, err := offload.Encapsulate(a.table.Get(1), buf, offload.Headroom, end)
			if err != nil {
				t.Fatal(err)
			}
			sealed = append(sealed, receivedJob(buf, j))
		}
	}
	rx := b.dev.newReceiver(nullTUN{})
	k := 0
	n = testing.AllocsPerRun(runs, func() {
		for range batch {
			p := sealed[k]
			k++
			rx.add(p)
		}
		rx.flush()
	})
	if n != 0 {
		t.Errorf("opening a batch: %v allocations, want 0", n)
	}
	if got, want := b.dev.Stats()["InPackets"], uint64((runs+1)*batch); got != want {
		t.Errorf("%d packets delivered, want %d", got, want)
	}
}

// TestPassUpRebuildsHeaders: with PassUnknownSPI, ESP for an unknown SPI
// reaches the device as it came on the wire: the outer IP (and UDP)
// headers the sockets took off are written back in front of it, with
// valid checksums (the kernel drops a packet without).
func TestPassUpRebuildsHeaders(t *testing.T) {
	e := newDevice(Config{Table: sadb.TableConfig{Capacity: 1}, PassUnknownSPI: true}, quiet)
	dev := newBatchTUN()
	rx := e.newReceiver(dev)
	cases := []header.Outer{
		{Src: v4a, Dst: v4b, UDP: true, SrcPort: 31000, DstPort: 4500, TOS: 0xb8, TTL: 61},
		{Src: v6a, Dst: v6b, UDP: true, SrcPort: 31000, DstPort: 4500, TOS: 0x02, TTL: 9},
		{Src: v4a, Dst: v4b, TTL: 64},
		{Src: v6a, Dst: v6b, TTL: 64},
	}
	for _, o := range cases {
		esp := make([]byte, 40)
		binary.BigEndian.PutUint32(esp, 0x0badbeef) // the SPI
		for i := range esp[4:] {
			esp[4+i] = byte(i)
		}
		p := received(&underlay.Packet{Buf: esp, Start: 0, End: len(esp), Outer: o})
		rx.add(p)
		rx.flush()
		got := dev.received()
		if len(got) == 0 {
			t.Fatalf("%+v: not passed up", o)
		}
		pkt := got[len(got)-1]
		back, payload, end, err := header.ParseOuter(pkt)
		if err != nil || back != o || end != len(pkt) || !bytes.Equal(pkt[payload:], esp) {
			t.Fatalf("passed up %x: ParseOuter = %+v, %d, %d, %v; want %+v and the ESP bytes", pkt, back, payload, end, err, o)
		}
		if o.Is6() {
			if o.UDP {
				if c := packettest.Checksum(pkt[40:], packettest.PseudoHeader(pkt, 17, len(pkt)-40)); c != 0 {
					t.Errorf("IPv6 UDP checksum invalid (%04x): %x", c, pkt[40:48])
				}
			}
		} else if packettest.Checksum(pkt[:20], 0) != 0 {
			t.Errorf("IPv4 header checksum invalid: %x", pkt[:20])
		}
	}
	if n := e.Stats()["VnicInPassedUp"]; n != uint64(len(cases)) {
		t.Errorf("VnicInPassedUp %d, want %d", n, len(cases))
	}
}

// overflowTUN returns its batch with tun.ErrTooManySegments once, as the
// TUN layer does when a super-packet has more segments than a batch holds,
// then the batches of a batchTUN.
type overflowTUN struct {
	*batchTUN
	once sync.Once
}

func (d *overflowTUN) Read(bufs [][]byte, sizes []int, off int) (n int, err error) {
	n, err = d.batchTUN.Read(bufs, sizes, off)
	d.once.Do(func() { err = wgtun.ErrTooManySegments })
	return n, err
}

// TestDeviceReadsAnyMTU: packets up to the IP limit go through (vnic0's
// MTU may be raised while the daemon runs), and a read that lost segments
// is counted and the loop goes on with the packets it did get.
func TestDeviceReadsAnyMTU(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := parallelPeer(ctx, 2), parallelPeer(ctx, 2)
	devA, devB := &overflowTUN{batchTUN: newBatchTUN()}, newBatchTUN()
	defer close(devA.in)
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x500, Algo: gcm128()}
	out, in := cfg, cfg
	out.Direction, in.Direction, in.ReplayWindow = sadb.Outbound, sadb.Inbound, 64
	mustAdd(t, a.table, out)
	mustAdd(t, b.table, in)
	w := &wireTo{rx: b.dev.newReceiver(devB)}
	go a.dev.runOutbound(ctx, devA, w)
	big := func(n int) []byte {
		buf := make([]byte, offload.Headroom+n+offload.Tailroom)
		end := udpPacket(buf, 0, in4a, in4b, 1, 2, n-28)
		return buf[:end]
	}
	// The largest packet that fits in an outer IPv4 packet with 20 bytes
	// of IP header, 8 of ESP header, 8 of IV, 2 of trailer and 16 of ICV
	// (65478 needs no padding to 4 bytes; the next three need 3, 2 and 1,
	// and each makes 65536 bytes): one byte more is refused, as VnicOutTooBig.
	largest := 0xFFFF - 20 - 8 - 8 - 2 - 16 - 3
	want := [][]byte{big(1400), big(9000), big(largest)}
	devA.in <- want[:1] // read with offload.ErrTooManySegments
	devA.in <- append(want[1:], big(largest+1))
	waitFor(t, func() bool { return len(devB.received()) == len(want) && a.dev.Stats()["VnicOutTooBig"] == 1 })
	for i, p := range devB.received() {
		if !bytes.Equal(p, want[i]) {
			t.Errorf("packet %d (%d bytes) changed on the way", i, len(want[i]))
		}
	}
	if n := a.dev.Stats()["VnicOutReadError"]; n != 1 {
		t.Errorf("VnicOutReadError %d, want 1", n)
	}
}

// TestDeviceTransportFragments: the IPv4 and IPv6 fragments of a datagram
// that a transport-mode SA carries are reassembled and protected once
// whole (RFC 4303 §3.3.4), across device reads and in any order, and reach
// the peer as the datagram they were cut from; overlapping fragments are dropped
// and counted on the SA, with those of their datagram held until then; a
// tunnel-mode SA protects each fragment as it comes.
func TestDeviceTransportFragments(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := parallelPeer(ctx, 0), parallelPeer(ctx, 0)
	devA, devB := newBatchTUN(), newBatchTUN()
	defer close(devA.in)
	cfg := sadb.Config{Mode: sadb.Transport, Src: v4a, Dst: v4b, SPI: 0x600, Algo: gcm128()}
	out, in := cfg, cfg
	out.Direction, in.Direction, in.ReplayWindow = sadb.Outbound, sadb.Inbound, 64
	hOut := mustAdd(t, a.table, out)[0]
	mustAdd(t, b.table, in)
	w := &wireTo{rx: b.dev.newReceiver(devB)}
	go a.dev.runOutbound(ctx, devA, w)

	datagram := func(id uint16, n int) []byte {
		buf := make([]byte, 20+8+n)
		end := udpPacket(buf, 0, v4a, v4b, 1000, 2000, n)
		p := buf[:end]
		binary.BigEndian.PutUint16(p[4:], id)
		binary.BigEndian.PutUint16(p[6:], 0) // DF clear: the host may fragment it
		packettest.SetIPv4Checksum(p)
		return p
	}
	fragments := func(p []byte, mtu int) [][]byte {
		frags, err := ipfrag.FragmentIPv4(p, mtu, make([]byte, ipfrag.ScratchSizeIPv4(len(p), mtu, 60)), nil)
		if err != nil || len(frags) < 3 {
			t.Fatalf("fragment: %d fragments, %v", len(frags), err)
		}
		return frags
	}

	// Reversed, across two reads, then a second datagram in order.
	d1, d2 := datagram(7, 5000), datagram(8, 3000)
	f1, f2 := fragments(d1, 1400), fragments(d2, 1300)
	slices.Reverse(f1)
	devA.in <- f1[:2]
	devA.in <- f1[2:]
	devA.in <- f2
	waitFor(t, func() bool { return len(devB.received()) == 2 })
	for i, want := range [][]byte{d1, d2} {
		if got := devB.received()[i]; !bytes.Equal(got, want) {
			t.Errorf("datagram %d: the peer got %d bytes, want the %d-byte datagram intact", i, len(got), len(want))
		}
	}
	if n := len(w.records()); n != 2 {
		t.Errorf("%d ESP packets on the wire, want 2 (one per datagram)", n)
	}

	// Two fragments held, then one overlapping them: all three dropped.
	f3 := fragments(datagram(9, 4000), 1400)
	devA.in <- f3[:2]
	over := slices.Clone(f3[1])
	binary.BigEndian.PutUint16(over[6:], binary.BigEndian.Uint16(over[6:])-1) // 8 bytes earlier
	packettest.SetIPv4Checksum(over)
	devA.in <- [][]byte{over}
	waitFor(t, func() bool { return a.dev.Stats()["VnicOutFragInvalid"] == 3 })
	if n := a.table.Get(hOut).Counters.Dropped(sadb.OutFragInvalid); n != 3 {
		t.Errorf("the SA counted %d VnicOutFragInvalid, want 3", n)
	}

	// IPv6 as well: the fragments become one ESP packet that carries the
	// datagram without its Fragment header.
	c6 := sadb.Config{Mode: sadb.Transport, Src: v6a, Dst: v6b, SPI: 0x602, Algo: gcm128()}
	out6, in6 := c6, c6
	out6.Direction, in6.Direction, in6.ReplayWindow = sadb.Outbound, sadb.Inbound, 64
	mustAdd(t, a.table, out6)
	mustAdd(t, b.table, in6)
	d6 := make([]byte, 40+8+3000)
	d6 = d6[:udpPacket(d6, 0, v6a, v6b, 1000, 2000, 3000)]
	f6, err := ipfrag.FragmentIPv6(d6, 1280, 0x1234, make([]byte, 3*len(d6)), nil)
	if err != nil || len(f6) < 3 {
		t.Fatalf("fragment IPv6: %d fragments, %v", len(f6), err)
	}
	slices.Reverse(f6)
	devA.in <- f6
	waitFor(t, func() bool { return len(devB.received()) == 3 })
	if got := devB.received()[2]; !bytes.Equal(got, d6) {
		t.Errorf("IPv6: the peer got %d bytes, want the %d-byte datagram intact", len(got), len(d6))
	}
	if n := len(w.records()); n != 3 {
		t.Errorf("%d ESP packets on the wire, want 3 (one per datagram)", n)
	}

	// Tunnel mode: each fragment goes on its own.
	tun := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x601, Algo: gcm128(),
		Selectors: []sadb.Selector{{Src: netip.MustParsePrefix(in4a.String() + "/32")}}}
	tout, tin := tun, tun
	tout.Direction, tin.Direction, tin.ReplayWindow = sadb.Outbound, sadb.Inbound, 64
	mustAdd(t, a.table, tout)
	mustAdd(t, b.table, tin)
	inner := make([]byte, 20+8+4000)
	end := udpPacket(inner, 0, in4a, in4b, 1, 2, 4000)
	binary.BigEndian.PutUint16(inner[6:], 0)
	packettest.SetIPv4Checksum(inner[:end])
	ft := fragments(inner[:end], 1400)
	devA.in <- ft
	waitFor(t, func() bool { return len(devB.received()) == 3+len(ft) })
	for i, f := range ft {
		if !bytes.Equal(devB.received()[3+i], f) {
			t.Errorf("tunnel mode: fragment %d changed on the way", i)
		}
	}
}
