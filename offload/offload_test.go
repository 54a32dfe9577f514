package offload

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"vnic/header"

	"vnic/internal/packettest"
	"vnic/internal/testutil"
	"vnic/sadb"
)

type topo struct {
	name           string
	mode           sadb.Mode
	outerA, outerB netip.Addr
	innerA, innerB netip.Addr
}

func topologies() []topo {
	return []topo{
		{"tunnel-4in4", sadb.Tunnel, v4a, v4b, in4a, in4b},
		{"tunnel-6in4", sadb.Tunnel, v4a, v4b, in6a, in6b},
		{"tunnel-4in6", sadb.Tunnel, v6a, v6b, in4a, in4b},
		{"tunnel-6in6", sadb.Tunnel, v6a, v6b, in6a, in6b},
		{"transport-4", sadb.Transport, v4a, v4b, v4a, v4b},
		{"transport-6", sadb.Transport, v6a, v6b, v6a, v6b},
	}
}

// TestRoundTrip sends packets of several sizes through Encapsulate and
// Decapsulate for every algorithm, mode, family, encapsulation and ESN
// setting, and checks the plaintext comes back byte for byte.
func TestRoundTrip(t *testing.T) {
	for aname, spec := range allSpecs() {
		for _, tp := range topologies() {
			for _, udp := range []bool{false, true} {
				for _, esnOn := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/udp=%v/esn=%v", aname, tp.name, udp, esnOn)
					t.Run(name, func(t *testing.T) {
						spec.ESN = esnOn
						cfg := sadb.Config{Mode: tp.mode, Src: tp.outerA, Dst: tp.outerB, SPI: 0x1000, Algo: spec,
							Encap: sadb.Encap{UDP: udp}}
						if esnOn {
							cfg.SeqHigh = 7
							cfg.InitialSeq = 0xfffffffe // crosses 2^32 on the third packet
						}
						out, in := pair(t, cfg)
						for i, n := range []int{0, 1, 2, 3, 100, 1400, 1401, 1402, 1403} {
							buf := newBuf()
							end := udpPacket(buf, Headroom, tp.innerA, tp.innerB, 1000, 2000, n)
							want := append([]byte(nil), buf[Headroom:end]...)
							sp, _, err := encapWire(out, buf, Headroom, end)
							if err != nil {
								t.Fatalf("packet %d: Encapsulate: %v", i, err)
							}
							wire := append([]byte(nil), buf[sp.Start:sp.End]...)
							checkOuter(t, wire, tp, udp, cfg.SPI)
							h, kind, err := parseWire(buf, sp.Start, sp.End)
							if err != nil || kind != KindESP || h.SPI != cfg.SPI || h.Dst != tp.outerB || h.Src != tp.outerA || h.UDP != udp {
								t.Fatalf("packet %d: Parse = %+v %v %v", i, h, kind, err)
							}
							got, _, err := Decapsulate(in, &h, buf)
							if err != nil {
								t.Fatalf("packet %d (%d bytes): Decapsulate: %v", i, n, err)
							}
							if !bytes.Equal(buf[got.Start:got.End], want) {
								t.Fatalf("packet %d: plaintext differs:\n got %x\nwant %x", i, buf[got.Start:got.End], want)
							}
							// The same wire bytes again are a replay.
							copy(buf[sp.Start:], wire)
							if _, _, err := Decapsulate(in, &h, buf); !errors.Is(err, ErrReplay) {
								t.Fatalf("packet %d replayed: %v", i, err)
							}
						}
						if esnOn && in.In.Top()>>32 != 8 {
							t.Errorf("inbound window top %#x did not cross into high bits 8", in.In.Top())
						}
						if p := in.Counters.Packets.Load(); p != 9 {
							t.Errorf("inbound packet counter %d, want 9", p)
						}
					})
				}
			}
		}
	}
}

// checkOuter checks the outer headers a peer sees.
func checkOuter(t *testing.T, wire []byte, tp topo, udp bool, spi uint32) {
	t.Helper()
	var proto uint8
	var l4 []byte
	if tp.outerA.Is4() {
		h := header.IPv4(wire)
		if h.TotalLen() != len(wire) {
			t.Fatalf("outer total length %d, packet %d", h.TotalLen(), len(wire))
		}
		if header.Fold(header.Sum(wire[:h.HeaderLen()], 0)) != 0xffff {
			t.Fatalf("bad outer IPv4 header checksum")
		}
		if h.Src() != tp.outerA || h.Dst() != tp.outerB {
			t.Fatalf("outer addresses %v -> %v", h.Src(), h.Dst())
		}
		proto, l4 = h.Protocol(), wire[h.HeaderLen():]
	} else {
		h := header.IPv6(wire)
		if h.PayloadLen()+40 != len(wire) || h.Src() != tp.outerA || h.Dst() != tp.outerB {
			t.Fatalf("bad outer IPv6 header %x", wire[:40])
		}
		proto, l4 = h.NextHeader(), wire[40:]
	}
	if udp {
		if proto != header.ProtoUDP || int(l4[4])<<8|int(l4[5]) != len(l4) || l4[2] != 0x11 || l4[3] != 0x94 {
			t.Fatalf("bad UDP header %x", l4[:8])
		}
		if tp.outerA.Is6() && packettest.Checksum(l4, packettest.PseudoHeader(wire, header.ProtoUDP, len(l4))) != 0 {
			t.Fatalf("bad UDP checksum over IPv6")
		}
		l4 = l4[8:]
	} else if proto != header.ProtoESP {
		t.Fatalf("outer protocol %d, want ESP", proto)
	}
	if got := uint32(l4[0])<<24 | uint32(l4[1])<<16 | uint32(l4[2])<<8 | uint32(l4[3]); got != spi {
		t.Fatalf("SPI %#x", got)
	}
}

// TestNoAllocs: protecting and opening a packet allocates nothing, for
// every algorithm (the race detector's sync.Pool makes counts meaningless,
// so scripts/test.sh runs this once more without it).
func TestNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	for name, spec := range allSpecs() {
		spec.ESN = true
		out, in := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x1000, Algo: spec,
			Encap: sadb.Encap{UDP: true}, ReplayWindow: 1024})
		buf := newBuf()
		var errs int
		n := testing.AllocsPerRun(200, func() {
			end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 1000)
			sp, _, err := encapWire(out, buf, Headroom, end)
			if err != nil {
				errs++
				return
			}
			h, _, err := parseWire(buf, sp.Start, sp.End)
			if err == nil {
				_, _, err = Decapsulate(in, &h, buf)
			}
			if err != nil {
				errs++
			}
		})
		if errs != 0 {
			t.Fatalf("%s: %d packets failed", name, errs)
		}
		if n != 0 {
			t.Errorf("%s: %.1f allocations per packet out and in", name, n)
		}
	}
}
