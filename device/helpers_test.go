package device

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"vnic/event"
	"vnic/internal/packettest"
	"vnic/offload"
	"vnic/underlay"
)

// quiet is a logger that writes nothing.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// The shared addresses and packets (internal/packettest).
var (
	gcm128    = packettest.GCM128
	allSpecs  = packettest.Specs
	udpPacket = packettest.UDPPacket

	v4a, v4b = packettest.V4A, packettest.V4B
	v6a, v6b = packettest.V6A, packettest.V6B
	in4a     = packettest.In4A
	in4b     = packettest.In4B
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// received returns p as the underlay delivers it to the peer: its bytes
// after underlay.Headroom in a buffer of their own, with room after them,
// and the outer header it was sent with.
func received(p *underlay.Packet) *underlay.Packet {
	n := p.End - p.Start
	b := make([]byte, underlay.Headroom+n+64)
	copy(b[underlay.Headroom:], p.Buf[p.Start:p.End])
	return &underlay.Packet{Buf: b, Start: underlay.Headroom, End: underlay.Headroom + n, Outer: p.Outer}
}

// receivedJob is received for the packet j that offload encapsulated in
// buf.
func receivedJob(buf []byte, j offload.EncapJob) *underlay.Packet {
	return received(&underlay.Packet{Buf: buf, Start: j.Start, End: j.End, Outer: j.Outer})
}

// packetEvents subscribes to bus for the test and returns its events but
// those of the SA lifecycle (SaAdded, SaDeleted, SaUpdated), which every
// test that adds SAs causes: the events that packets and timers raise.
func packetEvents(t *testing.T, bus *event.Bus) <-chan event.Event {
	sub := bus.Subscribe()
	t.Cleanup(sub.Close)
	c := make(chan event.Event, 1024)
	go func() {
		defer close(c)
		for e := range sub.C {
			switch e.Type {
			case event.SaAdded, event.SaDeleted, event.SaUpdated:
				continue
			}
			c <- e
		}
	}()
	return c
}
