package ipfrag

import "testing"

// BenchmarkFragmentIPv4 splits an 8000-byte ESP packet at MTU 1500.
func BenchmarkFragmentIPv4(b *testing.B) {
	pkt := ipv4Packet(nil, 50, 1, pattern(8000-20, 1))
	scratch := make([]byte, ScratchSizeIPv4(len(pkt), 1500, 20))
	out := make([][]byte, 0, 8)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = FragmentIPv4(pkt, 1500, scratch, out[:0])
	}
}

// BenchmarkFragmentIPv6 splits an 8000-byte ESP packet at MTU 1500.
func BenchmarkFragmentIPv6(b *testing.B) {
	pkt := ipv6Packet(nil, 50, pattern(8000-40, 1))
	scratch := make([]byte, ScratchSizeIPv6(len(pkt), 1500, 40))
	out := make([][]byte, 0, 8)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = FragmentIPv6(pkt, 1500, 1, scratch, out[:0])
	}
}

// BenchmarkReassemble reassembles an 8000-byte UDP datagram from its
// fragments at MTU 1500 (IPv4: six; IPv6, with a Hop-by-Hop Options
// header: six too), in order, and releases it.
func BenchmarkReassemble(b *testing.B) {
	pkt4 := ipv4Packet(nil, 17, 1, pattern(8000-20, 1))
	frags4, err := FragmentIPv4(pkt4, 1500, make([]byte, ScratchSizeIPv4(len(pkt4), 1500, 20)), nil)
	if err != nil {
		b.Fatal(err)
	}
	pkt6 := ipv6Packet([]ext{{0, 8}}, 17, pattern(8000-48, 1))
	frags6, err := FragmentIPv6(pkt6, 1500, 1, make([]byte, ScratchSizeIPv6(len(pkt6), 1500, 48)), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		pkt   []byte
		frags [][]byte
	}{{"IPv4", pkt4, frags4}, {"IPv6", pkt6, frags6}} {
		b.Run(c.name, func(b *testing.B) {
			r := NewReassembler(Config{Headroom: 64, Tailroom: 64})
			b.SetBytes(int64(len(c.pkt)))
			b.ReportAllocs()
			for b.Loop() {
				for _, f := range c.frags {
					if d, res, _ := r.Add(f, t0); res == Complete {
						r.Release(d)
					} else if res != Held {
						b.Fatal(res)
					}
				}
			}
		})
	}
}
