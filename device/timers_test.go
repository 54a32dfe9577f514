package device

import (
	"net/netip"
	"testing"
	"time"

	"vnic/event"
	"vnic/internal/packettest"
	"vnic/offload"
	"vnic/sadb"
)

// sentWire records what it is asked to send. It holds callers to the Wire
// contract as the underlay does: failed has room for every packet.
type sentWire struct{ pkts [][]byte }

func (w *sentWire) SendBatch(pkts [][]byte, failed []bool) (int, error) {
	for _, p := range pkts {
		w.pkts = append(w.pkts, append([]byte(nil), p...))
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
			e := newDevice(sadb.New(sadb.TableConfig{Capacity: 8}), &event.Bus{}, Config{}, quiet)
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
				e.natKeepalives(t0.Add(time.Duration(sec)*time.Second), w)
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
			if len(e.keepalives) != 0 {
				t.Errorf("state of %d SAs kept after deletion", len(e.keepalives))
			}

			// What went: a keepalive to the SA's peer port, from its own.
			for _, p := range w.pkts {
				h, kind, err := offload.Parse(p, 0, len(p))
				if err != nil || kind != offload.KindKeepalive || !h.UDP || h.Dst != fam.dst || h.Src != fam.src ||
					h.SrcPort != sadb.DefaultUDPPort || h.DstPort != 31000 {
					t.Fatalf("sent %x: offload.Parse = %+v, kind %d, %v; want a NAT keepalive %v:%d -> %v:31000",
						p, h, kind, err, fam.src, sadb.DefaultUDPPort, fam.dst)
				}
				if fam.dst.Is4() && packettest.Checksum(p[:20], 0) != 0 {
					t.Errorf("bad IPv4 header checksum in %x", p)
				}
				if fam.dst.Is6() && packettest.Checksum(p[40:], packettest.PseudoHeader(p, 17, len(p)-40)) != 0 {
					t.Errorf("bad UDP checksum in %x", p)
				}
			}
		})
	}
}
