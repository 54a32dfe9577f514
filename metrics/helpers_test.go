package metrics

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"vnic/device"
	"vnic/internal/packettest"
	"vnic/ndis"
	"vnic/sadb"
	"vnic/underlay"
)

// loopBind is an in-memory underlay that receives what it sends, each
// packet as the sockets deliver it; it keeps the last packet sent, which
// a test can send again.
type loopBind struct {
	in        chan []underlay.Packet
	closed    chan struct{}
	closeOnce sync.Once

	mu   sync.Mutex
	last underlay.Packet
}

func newLoopBind() *loopBind {
	return &loopBind{in: make(chan []underlay.Packet, 64), closed: make(chan struct{})}
}

// received returns p as the underlay delivers it: its bytes after
// underlay.Headroom in a buffer of their own, with room after them.
func received(p *underlay.Packet) underlay.Packet {
	n := p.End - p.Start
	b := make([]byte, underlay.Headroom+n+64)
	copy(b[underlay.Headroom:], p.Buf[p.Start:p.End])
	return underlay.Packet{Buf: b, Start: underlay.Headroom, End: underlay.Headroom + n, Outer: p.Outer}
}

func (l *loopBind) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	clear(failed[:len(pkts)])
	batch := make([]underlay.Packet, len(pkts))
	for i := range pkts {
		batch[i] = received(&pkts[i])
	}
	if len(batch) > 0 {
		l.mu.Lock()
		l.last = received(&batch[len(batch)-1])
		l.mu.Unlock()
	}
	l.deliver(batch)
	return len(pkts), nil
}

// replay receives the last packet sent once more.
func (l *loopBind) replay() {
	l.mu.Lock()
	p := received(&l.last)
	l.mu.Unlock()
	l.deliver([]underlay.Packet{p})
}

func (l *loopBind) deliver(batch []underlay.Packet) {
	select {
	case l.in <- batch:
	case <-l.closed:
	}
}

func (l *loopBind) Receivers() []underlay.ReceiveFunc {
	return []underlay.ReceiveFunc{func(deliver underlay.Deliver) error {
		select {
		case <-l.closed:
			return net.ErrClosed
		case batch := <-l.in:
			deliver(batch)
			return nil
		}
	}}
}

func (l *loopBind) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// testNIC is a whole device running in the test over a channel TUN and
// a loopBind: what its vnic0 sends comes back to it through the
// underlay.
type testNIC struct {
	dev  *device.Device
	tun  *tuntest.ChannelTUN
	bind *loopBind
}

// startNIC runs a device until the test ends.
func startNIC(t *testing.T, capacity int) *testNIC {
	t.Helper()
	n := &testNIC{tun: tuntest.NewChannelTUN(), bind: newLoopBind()}
	n.dev = device.New(n.tun.TUN(), n.bind, device.Config{Table: sadb.TableConfig{Capacity: capacity, DefaultReplayWindow: 64}},
		slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.dev.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("device: %v", err)
		}
	})
	return n
}

// addLoop offloads the SAs a packet of vnic0's takes out and back in: an
// outbound SA from V4A to V4B and the inbound SA of V4B with the same SPI
// and key. It returns their handles.
func (n *testNIC) addLoop(t *testing.T, spi uint32) (out, in sadb.Handle) {
	t.Helper()
	res, st := n.dev.Table().Add([]sadb.Config{
		{Direction: sadb.Outbound, Mode: sadb.Tunnel, SPI: spi, Src: packettest.V4A, Dst: packettest.V4B, Algo: packettest.GCM128()},
		{Direction: sadb.Inbound, Mode: sadb.Tunnel, SPI: spi, Src: packettest.V4A, Dst: packettest.V4B, Algo: packettest.GCM128()},
	})
	if st != ndis.StatusSuccess || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("ADD_SA: %v %+v", st, res)
	}
	return res[0].Handle, res[1].Handle
}

// ping sends a packet out of vnic0 and waits for it to come back in.
func (n *testNIC) ping(t *testing.T) {
	t.Helper()
	p := tuntest.Ping(packettest.In4B, packettest.In4A)
	n.tun.Outbound <- p
	select {
	case got := <-n.tun.Inbound:
		if !slices.Equal(got, p) {
			t.Fatalf("the packet came back changed:\n got %x\nwant %x", got, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the packet did not come back")
	}
}

// waitFor waits until cond holds, 5 s at most.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
