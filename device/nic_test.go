package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"vnic/event"
	"vnic/ndis"
	"vnic/offload"
	"vnic/oid"
	"vnic/sadb"
	"vnic/underlay"
)

// memBind is an in-memory underlay: what one side sends, the other
// receives, a batch at a time, each packet as the sockets deliver it (see
// received).
type memBind struct {
	peer      *memBind
	in        chan []underlay.Packet
	closed    chan struct{}
	closeOnce sync.Once
	sent      atomic.Int64
}

// newMemBinds returns the two ends of an in-memory underlay.
func newMemBinds() (*memBind, *memBind) {
	a := &memBind{in: make(chan []underlay.Packet, 256), closed: make(chan struct{})}
	b := &memBind{in: make(chan []underlay.Packet, 256), closed: make(chan struct{}), peer: a}
	a.peer = b
	return a, b
}

func (m *memBind) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	clear(failed[:len(pkts)])
	batch := make([]underlay.Packet, len(pkts))
	for i := range pkts {
		batch[i] = *received(&pkts[i])
	}
	select {
	case m.peer.in <- batch:
	case <-m.peer.closed:
	}
	m.sent.Add(int64(len(pkts)))
	return len(pkts), nil
}

func (m *memBind) Receivers() []underlay.ReceiveFunc {
	return []underlay.ReceiveFunc{func(deliver underlay.Deliver) error {
		select {
		case <-m.closed:
			return net.ErrClosed
		case batch := <-m.in:
			deliver(batch)
			return nil
		}
	}}
}

func (m *memBind) Close() error {
	m.closeOnce.Do(func() { close(m.closed) })
	return nil
}

// nic is a device running in-process: its vnic0 is a channel TUN, its OID
// channel a socket in a temporary directory.
type nic struct {
	dev    *Device
	tun    *tuntest.ChannelTUN
	client *oid.Client
	socket string
	stop   func() error
}

// startNIC runs a device over bind, with its OID channel, until the test
// ends.
func startNIC(t *testing.T, bind Bind, cfg Config) *nic {
	t.Helper()
	n := &nic{tun: tuntest.NewChannelTUN(), socket: filepath.Join(t.TempDir(), "vnic.sock")}
	n.dev = New(n.tun.TUN(), bind, cfg, quiet)
	ln, err := oid.Listen(n.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	srvErr := make(chan error, 1)
	go func() { runErr <- n.dev.Run(ctx) }()
	go func() { srvErr <- oid.NewServer(n.dev, quiet).Serve(ctx, ln) }()
	var once sync.Once
	var stopErr error
	n.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = errors.Join(<-runErr, <-srvErr)
		})
		return stopErr
	}
	t.Cleanup(func() { n.stop() })
	if n.client, err = oid.Dial(n.socket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.client.Close() })
	return n
}

// addSA offloads one AES-GCM SA over n's OID channel and returns its
// handle.
func (n *nic) addSA(t *testing.T, dir string, spi uint32, src, dst string, pair uint64) uint64 {
	t.Helper()
	key := make([]byte, 20)
	for i := range key {
		key[i] = byte(spi) + byte(i)
	}
	res, err := n.client.AddSA(context.Background(), oid.SA{
		Direction: dir, SrcAddr: src, DestAddr: dst, KeyData: key,
		SecAssoc: []oid.SecAssoc{{Operation: 2, Spi: spi,
			EncryptionAlgorithm: oid.AlgorithmInfo{Identifier: uint32(ndis.EncryptionAESGCM128), AdditionalInfo: 16}}},
		Vnic: &oid.SAExtensions{Pair: pair},
	})
	if err != nil || len(res) != 1 || res[0].Handle == 0 {
		t.Fatalf("ADD_SA %s %#x: %v %+v", dir, spi, err, res)
	}
	return res[0].Handle
}

func (n *nic) stats(t *testing.T) map[string]uint64 {
	t.Helper()
	st, err := n.client.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestTwoDevicesInProcess runs two whole devices in one process, joined
// by an in-memory underlay, and drives them as a host stack would, over
// their OID channels: SAs offloaded both ways, packets from one vnic0
// reach the other intact, the counters say so, SaDeleteReq arrives as an
// event, and after DELETE_SA the packets stop and are counted as drops.
func TestTwoDevicesInProcess(t *testing.T) {
	ba, bb := newMemBinds()
	cfg := Config{Table: sadb.TableConfig{Capacity: 8, DefaultReplayWindow: 64}}
	a, b := startNIC(t, ba, cfg), startNIC(t, bb, cfg)
	ctx := context.Background()

	caps, err := a.client.Capabilities(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if caps.SaOffloadCapacity != 8 || caps.Vnic.SaCount != 0 || caps.Vnic.Generation != a.dev.Generation() {
		t.Errorf("capabilities: capacity %d, count %d, generation %d; want 8, 0, %d",
			caps.SaOffloadCapacity, caps.Vnic.SaCount, caps.Vnic.Generation, a.dev.Generation())
	}

	outA := a.addSA(t, "out", 0x1000, "192.0.2.1", "192.0.2.2", 0)
	inB := b.addSA(t, "in", 0x1000, "192.0.2.1", "192.0.2.2", 0)
	b.addSA(t, "out", 0x2000, "192.0.2.2", "192.0.2.1", inB)
	inA := a.addSA(t, "in", 0x2000, "192.0.2.2", "192.0.2.1", outA)
	if caps, _ := a.client.Capabilities(ctx); caps.Vnic.SaCount != 2 {
		t.Errorf("SaCount %d after two ADD_SA, want 2", caps.Vnic.SaCount)
	}

	for i := range 3 {
		ping := tuntest.Ping(in4b, in4a)
		a.tun.Outbound <- ping
		if got := recvOrTimeout(t, b.tun.Inbound); !slices.Equal(got, ping) {
			t.Fatalf("A->B packet %d changed on the way:\n got %x\nwant %x", i, got, ping)
		}
		pong := tuntest.Ping(in4a, in4b)
		b.tun.Outbound <- pong
		if got := recvOrTimeout(t, a.tun.Inbound); !slices.Equal(got, pong) {
			t.Fatalf("B->A packet %d changed on the way:\n got %x\nwant %x", i, got, pong)
		}
	}
	waitFor(t, func() bool {
		sa, sb := a.stats(t), b.stats(t)
		return sa["OutPackets"] == 3 && sa["InPackets"] == 3 && sb["OutPackets"] == 3 && sb["InPackets"] == 3
	})
	if ba.sent.Load() != 3 {
		t.Errorf("A's underlay carried %d packets, want 3", ba.sent.Load())
	}

	// SaDeleteReq, end to end: the event names the inbound SA and its
	// pair, and both keep working until DELETE_SA.
	sub, err := oid.Dial(a.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	events := make(chan oid.EventMessage, 8)
	subCtx, endSub := context.WithCancel(ctx)
	defer endSub()
	go sub.Subscribe(subCtx, func(m oid.EventMessage) { events <- m })
	// Ask until the subscription, made in the background, is in place.
	var got *oid.EventMessage
	for deadline := time.Now().Add(5 * time.Second); got == nil && time.Now().Before(deadline); {
		if err := a.client.RequestDelete(ctx, inA); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-events:
			got = &m
		case <-time.After(50 * time.Millisecond):
		}
	}
	switch {
	case got == nil:
		t.Fatal("no SaDeleteReq event")
	case got.Event.Type != event.SaDeleteReq || got.Event.Handle != sadb.Handle(inA) || got.Event.Pair != sadb.Handle(outA):
		t.Errorf("event %+v, want SaDeleteReq for handle %d paired with %d", got.Event, inA, outA)
	}

	// DELETE_SA at B: A's packets are now dropped there, and counted.
	if res, err := b.client.DeleteSA(ctx, inB); err != nil || len(res) != 1 || res[0].Status != "NDIS_STATUS_SUCCESS" {
		t.Fatalf("DELETE_SA: %v %+v", err, res)
	}
	a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	waitFor(t, func() bool { return b.stats(t)["XfrmInNoStates"] == 1 })
	select {
	case p := <-b.tun.Inbound:
		t.Fatalf("a packet for a deleted SA was delivered: %x", p)
	default:
	}
	if err := a.stop(); err != nil {
		t.Errorf("Run after the context ended: %v, want nil", err)
	}
}

// TestReadErrorsBackOff: an underlay socket whose reads keep failing is
// counted (VnicInReadError) and retried less and less often, not in a busy
// loop, and reads that succeed again are delivered.
func TestReadErrorsBackOff(t *testing.T) {
	var calls atomic.Int64
	var fail atomic.Bool
	fail.Store(true)
	var delivered atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	recv := func(deliver underlay.Deliver) error {
		if ctx.Err() != nil {
			return net.ErrClosed // as a closed Bind does
		}
		calls.Add(1)
		if fail.Load() {
			return errors.New("no buffer space available")
		}
		time.Sleep(time.Millisecond)
		buf := make([]byte, 200)
		deliver([]underlay.Packet{{Buf: buf, Start: 100, End: 104}}) // malformed: counted, not delivered
		delivered.Add(1)
		return nil
	}
	d := newDevice(Config{Table: sadb.TableConfig{Capacity: 1}}, quiet)
	d.tun = nullTUN{}
	done := make(chan struct{})
	go func() { defer close(done); d.runInbound(ctx, recv) }()
	time.Sleep(300 * time.Millisecond)
	n := calls.Load()
	// Pauses of 1, 2, 4 ... 256 ms fill 300 ms after about ten reads; a
	// busy loop makes hundreds of thousands.
	if n < 3 || n > 20 {
		t.Errorf("%d reads in 300 ms of failures, want a few (backing off)", n)
	}
	if e := d.Stats()["VnicInReadError"]; e != uint64(n) {
		t.Errorf("VnicInReadError %d, %d reads failed", e, n)
	}
	fail.Store(false)
	waitFor(t, func() bool { return delivered.Load() > 0 })
	cancel()
	<-done
	if d.Stats()["XfrmInHdrError"] == 0 {
		t.Error("the packet read after the errors was not processed")
	}
}

// failingTUN fails the writes of the packets whose first payload byte is
// bad, as wireguard's tun does: it writes every packet and joins the error
// of each failed write to those before, one errors.Join at a time.
type failingTUN struct {
	nullTUN
	bad byte
}

func (f failingTUN) Write(bufs [][]byte, off int) (int, error) {
	var errs error
	written := 0
	for _, b := range bufs {
		if b[off+28] == f.bad {
			errs = errors.Join(errs, errors.New("write: no buffer space available"))
		} else {
			written++
		}
	}
	return written, errs
}

// TestWriteFailures: how many packets of a batch a TUN write error stands
// for.
func TestWriteFailures(t *testing.T) {
	one := errors.New("write failed")
	nested := errors.Join(errors.Join(errors.Join(nil, one), one), one)
	for _, tc := range []struct {
		name string
		err  error
		want uint64
	}{
		{"one failed write", errors.Join(nil, one), 1},
		{"three, joined one at a time", nested, 3},
		{"three, joined at once", errors.Join(one, one, one), 3},
		{"more than the batch", errors.Join(nested, nested, nested, nested), 10},
		{"the batch could not be prepared", one, 10},
		{"closed", fmt.Errorf("write: %w", os.ErrClosed), 10},
	} {
		if got := writeFailures(tc.err, 10); got != tc.want {
			t.Errorf("%s: %d of 10 failed, want %d", tc.name, got, tc.want)
		}
	}
}

// writeCounter is the counter of packets vnic0 did not take.
var writeCounter = offload.ErrDeviceWrite.Reason.String()

// TestWriteFailuresPerPacket: when some packets of a batch fail to reach
// vnic0, exactly those count as dropped (writeCounter) and the rest as
// delivered.
func TestWriteFailuresPerPacket(t *testing.T) {
	a, b := newPeer(), newPeer()
	out := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(), Direction: sadb.Outbound}
	in := out
	in.Direction, in.ReplayWindow = sadb.Inbound, 64
	ho := mustAdd(t, a.table, out)[0]
	mustAdd(t, b.table, in)
	rx := b.dev.newReceiver(failingTUN{bad: 0xee})
	defer rx.close()
	const n, bad = 10, 3
	for i := range n {
		buf := make([]byte, offload.Headroom+200+offload.Tailroom)
		end := udpPacket(buf, offload.Headroom, in4a, in4b, 1, 2, 40)
		buf[offload.Headroom+28] = byte(i)
		if i < bad {
			buf[offload.Headroom+28] = 0xee
		}
		j, _, err := offload.Encapsulate(a.table.Get(ho), buf, offload.Headroom, end)
		if err != nil {
			t.Fatal(err)
		}
		rx.add(receivedJob(buf, j))
	}
	rx.flush()
	st := b.dev.Stats()
	if got := st[writeCounter]; got != bad {
		t.Errorf("%s %d, want %d", writeCounter, got, bad)
	}
	if got := st["InPackets"]; got != n-bad {
		t.Errorf("InPackets %d, want %d", got, n-bad)
	}
}
