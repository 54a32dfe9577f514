package offload

import (
	"testing"

	"vnic/sadb"
)

// FuzzDecapsulate feeds arbitrary underlay packets through Parse and
// Decapsulate for SAs of several algorithms and modes, seeded with valid
// packets: nothing may panic, a rejected packet must be classified, and an
// accepted one must be a well-formed IP packet inside the buffer.
func FuzzDecapsulate(f *testing.F) {
	type sas struct{ out, in *sadb.SA }
	var all []sas
	for _, name := range []string{"gcm128", "gcm256-icv8", "cbc128-sha1", "chacha", "null-sha256"} {
		for _, tp := range []topo{topologies()[0], topologies()[3], topologies()[4]} {
			for _, udp := range []bool{false, true} {
				out, in := pair(f, sadb.Config{Mode: tp.mode, Src: tp.outerA, Dst: tp.outerB, SPI: 0x2000,
					Algo: allSpecs()[name], Encap: sadb.Encap{UDP: udp}})
				all = append(all, sas{out, in})
				buf := newBuf()
				end := udpPacket(buf, Headroom, tp.innerA, tp.innerB, 1, 2, 33)
				sp, _, err := Encapsulate(out, buf, Headroom, end)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(uint8(len(all)-1), buf[sp.Start:sp.End])
			}
		}
	}
	f.Add(uint8(0), []byte{0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		sa := all[int(which)%len(all)].in
		buf := make([]byte, len(data)+64)
		n := copy(buf[32:], data)
		h, kind, err := Parse(buf, 32, 32+n)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("unclassified Parse error %v", err)
			}
			return
		}
		if kind != KindESP {
			return
		}
		if h.ESP < 32 || h.End > 32+n || h.ESP > h.End {
			t.Fatalf("Parse returned offsets outside the packet: %+v", h)
		}
		sp, _, err := Decapsulate(sa, &h, buf, 32)
		if err != nil {
			if _, ok := ReasonOf(err); !ok {
				t.Fatalf("unclassified Decapsulate error %v", err)
			}
			return
		}
		if sp.Start < 0 || sp.End > len(buf) || sp.Len() < ipv4MinHeader {
			t.Fatalf("accepted packet outside the buffer: %+v", sp)
		}
		if _, ok := FlowOf(buf[sp.Start:sp.End]); !ok {
			t.Fatalf("accepted packet is not a valid IP packet: %x", buf[sp.Start:sp.End])
		}
	})
}

// FuzzFlowOf reads arbitrary plaintext packets: no panic, and ports only
// for protocols that have them.
func FuzzFlowOf(f *testing.F) {
	buf := newBuf()
	end := udpPacket(buf, 0, in4a, in4b, 1, 2, 10)
	f.Add(buf[:end])
	end = udpPacket(buf, 0, in6a, in6b, 1, 2, 10)
	f.Add(buf[:end])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fl, ok := FlowOf(pkt)
		if !ok {
			return
		}
		switch fl.Proto {
		case protoTCP, protoUDP, protoSCTP, protoUDPLite:
		default:
			if fl.SrcPort != 0 || fl.DstPort != 0 {
				t.Fatalf("ports for protocol %d: %+v", fl.Proto, fl)
			}
		}
		if !fl.Src.IsValid() || !fl.Dst.IsValid() {
			t.Fatalf("flow without addresses: %+v", fl)
		}
	})
}
