package device

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// blockingWire is an underlay whose sends block until release is closed,
// as a sendmmsg on a full socket buffer does; entered is closed when the
// first send starts.
type blockingWire struct {
	entered, release chan struct{}
	once             sync.Once
}

func (w *blockingWire) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	clear(failed[:len(pkts)])
	return len(pkts), nil
}

// TestDeleteDoesNotStallOtherLoop: while the outbound loop is stuck in a
// send, a DELETE_SA of an unrelated SA waits for that batch (it may hold
// the SA), but the inbound loop's batches go through untouched: the batch
// completes while the delete is still provably waiting, so it waited for
// nothing. (With one lock for all loops, the waiting delete blocked every
// new batch behind the stuck send.)
func TestDeleteDoesNotStallOtherLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	// A's outbound SA to B, whose sends block.
	mustAdd(t, a.table, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(),
		Direction: sadb.Outbound})
	wire := &blockingWire{entered: make(chan struct{}), release: make(chan struct{})}
	go a.dev.runOutbound(ctx, a.tun.TUN(), wire)
	// A's inbound SA from B, and B's outbound twin that makes packets.
	mustAdd(t, a.table, sadb.Config{Mode: sadb.Tunnel, Src: v4b, Dst: v4a, SPI: 0x5000, Algo: gcm128(),
		Direction: sadb.Inbound, ReplayWindow: 64})
	hb := mustAdd(t, b.table, sadb.Config{Mode: sadb.Tunnel, Src: v4b, Dst: v4a, SPI: 0x5000, Algo: gcm128(),
		Direction: sadb.Outbound})[0]
	// The SA to delete: unrelated to both.
	victim := mustAdd(t, a.table, sadb.Config{Mode: sadb.Tunnel, Src: v6a, Dst: v6b, SPI: 0x6000, Algo: gcm128(),
		Direction: sadb.Inbound, ReplayWindow: 64})[0]

	a.tun.Outbound <- tuntest.Ping(in4b, in4a)
	select {
	case <-wire.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the outbound loop never reached its send")
	}
	deleted := make(chan struct{})
	go func() {
		a.table.Delete([]sadb.Handle{victim})
		close(deleted)
	}()
	// Let the delete reach its wait (a lock it queues on would now
	// block every new batch).
	time.Sleep(20 * time.Millisecond)

	rx := a.dev.newReceiver(a.tun.TUN())
	defer rx.close()
	flushed := make(chan time.Duration)
	go func() {
		for i := range 3 {
			buf := make([]byte, offload.Headroom+200+offload.Tailroom)
			ping := tuntest.Ping(in4a, in4b)
			copy(buf[offload.Headroom:], ping)
			j, _, err := offload.Encapsulate(b.table.Get(hb), buf, offload.Headroom, offload.Headroom+len(ping))
			if err != nil {
				t.Errorf("encapsulate %d: %v", i, err)
			}
			p := receivedJob(buf, j)
			start := time.Now()
			rx.add(p)
			rx.flush()
			if i == 2 {
				flushed <- time.Since(start)
			}
		}
	}()
	// The device hands each packet over as it is written.
	for range 3 {
		select {
		case <-a.tun.Inbound:
		case <-time.After(5 * time.Second):
			t.Fatal("the inbound loop stalled behind a DELETE_SA waiting for the outbound loop's send")
		}
	}
	t.Logf("an inbound batch took %v with a DELETE_SA waiting on a stuck send", <-flushed)
	select {
	case <-deleted:
		t.Fatal("DELETE_SA returned while a batch that may hold the SA was still in flight")
	default:
	}
	close(wire.release)
	select {
	case <-deleted:
	case <-time.After(5 * time.Second):
		t.Fatal("DELETE_SA did not return after the stuck send finished")
	}
}

// TestNoPacketUsesWipedKey deletes and re-adds SAs on both sides, over
// and over, while packets stream: a wiped AES-GCM cipher has no key
// schedule left (using it panics, and -race reports the wipe racing the
// use), so the test fails if any packet is sealed or opened with keys
// Delete has wiped.
func TestNoPacketUsesWipedKey(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newPeer(), newPeer()
	out := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x4000, Algo: gcm128(), Direction: sadb.Outbound}
	in := out
	in.Direction, in.ReplayWindow = sadb.Inbound, 64
	link(t, ctx, a, b, out)

	received, stop := stream(a, b)
	const rounds = 200
	for i := range rounds {
		// Wait for traffic on the current pair before replacing it.
		before := received.Load()
		waitFor(t, func() bool { return received.Load() > before })
		side, cfg := a.table, out
		if i%2 == 1 {
			side, cfg = b.table, in
		}
		hs := side.List()
		side.Delete([]sadb.Handle{hs[0].Handle})
		mustAdd(t, side, cfg)
	}
	stop()
	if received.Load() < rounds {
		t.Fatalf("%d packets received over %d rounds: the test proves nothing", received.Load(), rounds)
	}
}
