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

// BenchmarkReassemble reassembles an 8000-byte UDP datagram from its six
// fragments at MTU 1500, in order, and releases it.
func BenchmarkReassemble(b *testing.B) {
	pkt := ipv4Packet(nil, 17, 1, pattern(8000-20, 1))
	frags, err := FragmentIPv4(pkt, 1500, make([]byte, ScratchSizeIPv4(len(pkt), 1500, 20)), nil)
	if err != nil {
		b.Fatal(err)
	}
	r := NewReassembler(Config{Headroom: 64, Tailroom: 64})
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range frags {
			if d, res, _ := r.Add(f, t0); res == Complete {
				r.Release(d)
			} else if res != Held {
				b.Fatal(res)
			}
		}
	}
}
