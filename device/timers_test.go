package device

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"vnic/event"
	"vnic/offload"
	"vnic/sadb"
	"vnic/underlay"
)

// sentWire records what it is asked to send. It holds callers to the Wire
// contract as the underlay does: failed has room for every packet.
type sentWire struct{ pkts []*underlay.Packet }

func (w *sentWire) SendBatch(pkts []underlay.Packet, failed []bool) (int, error) {
	for i := range pkts {
		w.pkts = append(w.pkts, received(&pkts[i]))
	}
	clear(failed[:len(pkts)])
	return len(pkts), nil
}

// TestNATKeepalives drives the keepalive timer with chosen times: an
// outbound ESP-in-UDP SA with an interval sends a keepalive (one 0xFF byte
// in UDP to its peer's port) after that long idle and every interval while
// idle, none while it sends; SAs without an interval, raw or inbound SAs
// never do.
func TestNATKeepalives(t *testing.T) {
	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
	}{{"v4", v4a, v4b}, {"v6", v6a, v6b}} {
		t.Run(fam.name, func(t *testing.T) {
			e := newDevice(Config{Table: sadb.TableConfig{Capacity: 8}}, quiet)
			udp := sadb.Encap{UDP: true, DstPort: 31000, KeepaliveInterval: 5 * time.Second}
			out := sadb.Config{Mode: sadb.Tunnel, Src: fam.src, Dst: fam.dst, SPI: 0x700, Algo: gcm128(), Direction: sadb.Outbound, Encap: udp}
			plainUDP := out
			plainUDP.SPI, plainUDP.Encap.KeepaliveInterval = 0x701, 0
			raw := out
			raw.SPI, raw.Encap = 0x702, sadb.Encap{}
			in := out
			in.SPI, in.Direction, in.Encap = 0x703, sadb.Inbound, sadb.Encap{UDP: true}
			hs := mustAdd(t, e.table, out, plainUDP, raw, in)
			sa := e.table.Get(hs[0])

			w := &sentWire{}
			t0 := time.Unix(1_000_000, 0)
			at := func(sec int, want int, what string) {
				t.Helper()
				before := len(w.pkts)
				e.tick(t0.Add(time.Duration(sec)*time.Second), w)
				if got := len(w.pkts) - before; got != want {
					t.Fatalf("t=%ds (%s): %d keepalives, want %d", sec, what, got, want)
				}
			}
			at(0, 0, "first look")
			at(4, 0, "idle 4 s")
			at(5, 1, "idle 5 s")
			at(6, 0, "just sent one")
			at(10, 1, "idle another 5 s")
			sa.Counters.Packets.Add(1) // traffic
			at(11, 0, "sending")
			at(15, 0, "idle 4 s since")
			at(16, 1, "idle 5 s since")
			if n := e.Stats()["VnicOutNatKeepalive"]; n != 3 {
				t.Errorf("VnicOutNatKeepalive %d, want 3", n)
			}
			e.table.Delete([]sadb.Handle{sa.Handle})
			at(30, 0, "SA deleted")
			if len(e.timers.keepalives) != 0 {
				t.Errorf("state of %d SAs kept after deletion", len(e.timers.keepalives))
			}

			// What went: a keepalive to the SA's peer port, from its own.
			for _, p := range w.pkts {
				h, kind, err := offload.Parse(p.Buf, p.Start, p.End, &p.Outer)
				if err != nil || kind != offload.KindKeepalive || !h.UDP || h.Dst != fam.dst || h.Src != fam.src ||
					h.SrcPort != sadb.DefaultUDPPort || h.DstPort != 31000 {
					t.Fatalf("sent %x: offload.Parse = %+v, kind %d, %v; want a NAT keepalive %v:%d -> %v:31000",
						p.Buf[p.Start:p.End], h, kind, err, fam.src, sadb.DefaultUDPPort, fam.dst)
				}
			}
		})
	}
}

// TestTimeLifetimes drives the timers with chosen times: the soft lifetime
// event comes at SoftAdd after the SA was added, the hard one (with
// SaDeleteReq) at HardAdd, each once; a deleted SA raises none; and SAs
// without time lifetimes or keepalives cost the timers nothing: they are
// never on the heap nor among the keepalive SAs.
func TestTimeLifetimes(t *testing.T) {
	e := newDevice(Config{Table: sadb.TableConfig{Capacity: 2000}}, quiet)
	lt := sadb.Lifetime{SoftAdd: 10 * time.Second, HardAdd: 20 * time.Second}
	timed := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x800, Algo: gcm128(), Direction: sadb.Outbound,
		Lifetime: lt}
	gone := timed
	gone.SPI = 0x801
	hs := mustAdd(t, e.table, timed, gone)
	var plain []sadb.Config
	for i := range 1000 {
		plain = append(plain, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: uint32(0x1000 + i), Algo: gcm128(),
			Direction: sadb.Inbound, ReplayWindow: 64})
	}
	mustAdd(t, e.table, plain...)
	e.table.Delete([]sadb.Handle{hs[1]})
	// Subscribed once the SAs are in place: only the timers' events
	// follow, each published before tick returns.
	sub := e.bus.Subscribe()
	t.Cleanup(sub.Close)
	t0 := e.table.Get(hs[0]).Added()
	w := &sentWire{}

	events := func(sec int) []event.Type {
		t.Helper()
		e.tick(t0.Add(time.Duration(sec)*time.Second), w)
		var got []event.Type
		for {
			select {
			case ev := <-sub.C:
				if ev.Handle != hs[0] {
					t.Errorf("t=%ds: event %+v for another SA than %d", sec, ev, hs[0])
				}
				got = append(got, ev.Type)
			default:
				return got
			}
		}
	}
	if got := events(9); len(got) != 0 {
		t.Errorf("t=9s: events %v before the soft lifetime", got)
	}
	if n := e.timers.deadlines.Len(); n != 2 {
		t.Errorf("%d deadlines on the heap, want 2 (the soft ones of two SAs): the others have none", n)
	}
	if got := events(10); !slices.Equal(got, []event.Type{event.SoftLifetime}) {
		t.Errorf("t=10s: events %v, want [%v]", got, event.SoftLifetime)
	}
	if got := events(19); len(got) != 0 {
		t.Errorf("t=19s: events %v", got)
	}
	if got := events(20); !slices.Equal(got, []event.Type{event.HardLifetime, event.SaDeleteReq}) {
		t.Errorf("t=20s: events %v, want [%v %v]", got, event.HardLifetime, event.SaDeleteReq)
	}
	if got := events(60); len(got) != 0 {
		t.Errorf("t=60s: events %v after both lifetimes were reported", got)
	}
	if sa := e.table.Get(hs[0]); !sa.SoftExpired.Load() || !sa.HardExpired.Load() {
		t.Error("the SA's expiry flags are not set")
	}
	if n := e.timers.deadlines.Len(); n != 0 || len(e.timers.keepalives) != 0 {
		t.Errorf("%d deadlines and %d keepalive SAs left, want none", n, len(e.timers.keepalives))
	}
}

// TestStaleDeadlinesDropped: the deadlines of deleted SAs do not pile up
// while SAs with long lifetimes come and go.
func TestStaleDeadlinesDropped(t *testing.T) {
	e := newDevice(Config{Table: sadb.TableConfig{Capacity: 8}}, quiet)
	w := &sentWire{}
	cfg := sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, Algo: gcm128(), Direction: sadb.Outbound,
		Lifetime: sadb.Lifetime{HardAdd: time.Hour}}
	kept := cfg
	kept.SPI = 0x100
	mustAdd(t, e.table, kept)
	for i := range 1000 {
		cfg.SPI = uint32(0x1000 + i)
		h := mustAdd(t, e.table, cfg)[0]
		e.tick(time.Now(), w)
		e.table.Delete([]sadb.Handle{h})
	}
	if n := e.timers.deadlines.Len(); n > 2*e.table.Len()+64+1 {
		t.Errorf("%d deadlines for %d SAs: those of deleted SAs pile up", n, e.table.Len())
	}
	e.tick(time.Now(), w)
	found := false
	for _, dl := range e.timers.deadlines {
		found = found || dl.handle() == e.table.List()[0].Handle
	}
	if !found {
		t.Error("the deadline of the SA still held was dropped")
	}
}
