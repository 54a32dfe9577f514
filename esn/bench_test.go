package esn

import (
	"fmt"
	"testing"
)

// TestNoAllocations asserts the per-packet calls never allocate.
func TestNoAllocations(t *testing.T) {
	for _, esn := range []bool{false, true} {
		w := mustWindow(t, 1024, esn, 0)
		s := uint32(0)
		if a := testing.AllocsPerRun(1000, func() {
			s++
			seq, err := w.Check(s)
			if err == nil {
				w.Accept(seq)
			}
			w.Check(s) // a replay
		}); a != 0 {
			t.Errorf("esn=%v: Check+Accept allocate %.1f times per packet", esn, a)
		}
		o := NewOutbound(esn, 0, 0)
		if a := testing.AllocsPerRun(1000, func() { o.Next() }); a != 0 {
			t.Errorf("esn=%v: Outbound.Next allocates %.1f times", esn, a)
		}
		ex := NewOutbound(esn, LastSeq(esn), 0)
		if a := testing.AllocsPerRun(1000, func() { ex.Next() }); a != 0 {
			t.Errorf("esn=%v: Outbound.Next at exhaustion allocates %.1f times", esn, a)
		}
	}
}

func BenchmarkWindowCheckAccept(b *testing.B) {
	for _, esn := range []bool{false, true} {
		for _, size := range []int{64, 1024, 65536} {
			b.Run(fmt.Sprintf("esn=%v/size=%d", esn, size), func(b *testing.B) {
				w := mustWindow(b, size, esn, 0)
				b.ReportAllocs()
				s := uint32(0)
				for b.Loop() {
					s++
					if s == 0 {
						s = 1
					}
					// In order, with a late packet every 8.
					low := s
					if s&7 == 0 && s > 4 {
						low = s - 4
					}
					seq, err := w.Check(low)
					if err == nil {
						if _, err := w.Accept(seq); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func BenchmarkOutboundNext(b *testing.B) {
	for _, esn := range []bool{false, true} {
		b.Run(fmt.Sprintf("esn=%v", esn), func(b *testing.B) {
			o := NewOutbound(esn, 0, 0)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := o.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		o := NewOutbound(true, 0, 0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := o.Next(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
