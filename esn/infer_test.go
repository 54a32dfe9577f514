package esn

import (
	"fmt"
	"testing"
)

// hl builds a 64-bit number from its high and low halves.
func hl(hi, lo uint32) uint64 { return uint64(hi)<<32 | uint64(lo) }

func TestInferRFC4303AppendixA2(t *testing.T) {
	const max32 = ^uint32(0)
	tests := []struct {
		name   string
		top    uint64
		window uint32
		seqLow uint32
		want   uint64
	}{
		// Case A: Tl >= W-1, the window [Tl-W+1, Tl] lies in subspace Th.
		{"A/top itself", hl(5, 1000), 64, 1000, hl(5, 1000)},
		{"A/bottom Tl-W+1", hl(5, 1000), 64, 937, hl(5, 937)},
		{"A/just below bottom is Th+1", hl(5, 1000), 64, 936, hl(6, 936)},
		{"A/ahead in same subspace", hl(5, 1000), 64, 2000, hl(5, 2000)},
		{"A/low 0 is Th+1", hl(5, 1000), 64, 0, hl(6, 0)},
		{"A/highest low is Th", hl(5, 1000), 64, max32, hl(5, max32)},
		{"A/boundary Tl == W-1, low 0", hl(5, 63), 64, 0, hl(5, 0)},
		{"A/boundary Tl == W-1, low max", hl(5, 63), 64, max32, hl(5, max32)},
		{"A/top 0:W-1", hl(0, 31), 32, 1, 1},
		// Case B: Tl < W-1, the window spans subspaces Th-1 and Th.
		{"B/bottom in Th-1", hl(5, 10), 64, max32 - 52, hl(4, max32-52)},
		{"B/just below bottom is Th", hl(5, 10), 64, max32 - 53, hl(5, max32-53)},
		{"B/end of Th-1", hl(5, 10), 64, max32, hl(4, max32)},
		{"B/start of Th", hl(5, 10), 64, 0, hl(5, 0)},
		{"B/top itself", hl(5, 10), 64, 10, hl(5, 10)},
		{"B/ahead", hl(5, 11), 64, 12, hl(5, 12)},
		{"B/top low 0", hl(1, 0), 64, max32, hl(0, max32)},
		// Th-1 underflow: no such number, Infer returns 0.
		{"B/Th=0 underflow", hl(0, 10), 64, max32, 0},
		{"B/Th=0 bottom", hl(0, 10), 64, max32 - 52, 0},
		{"B/Th=0 below bottom is fine", hl(0, 10), 64, max32 - 53, hl(0, max32-53)},
		{"B/Th=0 low 0", hl(0, 0), 64, 0, 0},
		{"B/Th=0 in window", hl(0, 10), 64, 5, 5},
		// Th+1 overflow: no such number, Infer returns 0.
		{"A/Th=max overflow", hl(max32, 1000), 64, 5, 0},
		{"A/Th=max overflow low 0", hl(max32, 1000), 64, 0, 0},
		{"A/Th=max in window", hl(max32, 1000), 64, 999, hl(max32, 999)},
		{"A/Th=max ahead", hl(max32, 1000), 64, max32, ^uint64(0)},
		{"B/Th=max still fine", hl(max32, 3), 64, max32, hl(max32-1, max32)},
		// Window 0 is treated as 1.
		{"W=0 as 1, at top", hl(2, 7), 0, 7, hl(2, 7)},
		{"W=0 as 1, below top", hl(2, 7), 0, 6, hl(3, 6)},
		{"W=1, below top", hl(2, 7), 1, 6, hl(3, 6)},
		// Huge window (only Infer allows it).
		{"W=max32, case B", hl(3, 5), max32, 7, hl(2, 7)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Infer(tc.top, tc.window, tc.seqLow); got != tc.want {
				t.Errorf("Infer(%#x, %d, %#x) = %#x, want %#x", tc.top, tc.window, tc.seqLow, got, tc.want)
			}
			ref, ok := refInfer(tc.top, tc.window, tc.seqLow)
			if !ok {
				ref = 0
			}
			if ref != tc.want {
				t.Errorf("reference model disagrees with the table: %#x, want %#x", ref, tc.want)
			}
		})
	}
}

// TestInferStraddling2to32 checks, for each window size, the four edges of
// the inference range [top-W+1, top-W+1+2^32) with a window that straddles
// 2^32 (Case B) and one that does not (Case A).
func TestInferStraddling2to32(t *testing.T) {
	for _, w := range []uint32{32, 64, 100, 1024, 4096, 65536} {
		for _, top := range []uint64{
			1<<32 + 5,           // Case B: window straddles 2^32
			1<<32 + uint64(w)/2, // Case B
			1<<32 + uint64(w),   // Case A, just past the straddle
			1<<32 - 1,           // Case A, Th=0
			1<<32 + uint64(w-1), // Case A boundary: bottom is 2^32
		} {
			bottom := top - uint64(w) + 1
			// A number below the window is read as 2^32 further on.
			fold := func(seq uint64) uint64 {
				if seq < bottom {
					return seq + 1<<32
				}
				return seq
			}
			cases := []struct {
				seq  uint64 // the number the sender used
				want uint64 // what the receiver must infer
			}{
				{top, top},
				{bottom, bottom},
				{bottom - 1, bottom - 1 + 1<<32}, // too old: read as ahead
				{bottom + 1<<32 - 1, bottom + 1<<32 - 1},
				{top + 1, top + 1},
				{1 << 32, fold(1 << 32)},
				{1<<32 - 1, fold(1<<32 - 1)},
			}
			for _, c := range cases {
				t.Run(fmt.Sprintf("W=%d/top=%#x/seq=%#x", w, top, c.seq), func(t *testing.T) {
					got := Infer(top, w, uint32(c.seq))
					if got != c.want {
						t.Errorf("Infer(%#x, %d, %#x) = %#x, want %#x", top, w, uint32(c.seq), got, c.want)
					}
					if got < bottom || got-bottom >= 1<<32 {
						t.Errorf("Infer result %#x outside [%#x, %#x+2^32)", got, bottom, bottom)
					}
				})
			}
		}
	}
}

func FuzzInfer(f *testing.F) {
	f.Add(hl(5, 1000), uint32(64), uint32(936))
	f.Add(hl(5, 10), uint32(64), ^uint32(0))
	f.Add(hl(0, 10), uint32(1024), ^uint32(0))
	f.Add(hl(^uint32(0), 1000), uint32(65536), uint32(0))
	f.Add(uint64(0), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, top uint64, window uint32, seqLow uint32) {
		got := Infer(top, window, seqLow)
		want, ok := refInfer(top, window, seqLow)
		if !ok {
			want = 0
		}
		if got != want {
			t.Fatalf("Infer(%#x, %d, %#x) = %#x, reference %#x", top, window, seqLow, got, want)
		}
		if ok && uint32(got) != seqLow {
			t.Fatalf("Infer(%#x, %d, %#x) = %#x: low bits changed", top, window, seqLow, got)
		}
	})
}
