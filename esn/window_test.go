package esn

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestNewWindowValidation(t *testing.T) {
	tests := []struct {
		size    int
		esn     bool
		initial uint64
		ok      bool
	}{
		{0, false, 0, true},
		{0, true, 0, false},
		{-1, false, 0, false},
		{1, false, 0, false},
		{MinWindow - 1, false, 0, false},
		{MinWindow, false, 0, true},
		{MinWindow, true, 0, true},
		{100, true, 0, true},
		{MaxWindow, true, 0, true},
		{MaxWindow + 1, true, 0, false},
		{MaxWindow + 1, false, 0, false},
		{64, false, 1<<32 - 1, true},
		{64, false, 1 << 32, false},
		{0, false, 1 << 32, false},
		{64, true, max64, true},
	}
	for _, tc := range tests {
		w, err := NewWindow(tc.size, tc.esn, tc.initial)
		if (err == nil) != tc.ok {
			t.Errorf("NewWindow(%d, %v, %#x) error = %v, want ok=%v", tc.size, tc.esn, tc.initial, err, tc.ok)
			continue
		}
		if err != nil {
			if w != nil {
				t.Errorf("NewWindow(%d, %v, %#x) returned a window with an error", tc.size, tc.esn, tc.initial)
			}
			if tc.initial == 0 && (!strings.Contains(err.Error(), "32") || !strings.Contains(err.Error(), "65536")) {
				t.Errorf("NewWindow(%d, %v) error %q does not give the allowed range", tc.size, tc.esn, err)
			}
			continue
		}
		if w.Size() != tc.size || w.ESN() != tc.esn || w.Top() != tc.initial {
			t.Errorf("NewWindow(%d, %v, %#x) = size %d esn %v top %#x", tc.size, tc.esn, tc.initial, w.Size(), w.ESN(), w.Top())
		}
	}
}

func mustWindow(t testing.TB, size int, esn bool, initial uint64) *Window {
	t.Helper()
	w, err := NewWindow(size, esn, initial)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// checkAccept runs Check then, if it passed, Accept, as the data path does.
func checkAccept(w *Window, seqLow uint32) (uint64, error) {
	seq, err := w.Check(seqLow)
	if err != nil {
		return seq, err
	}
	_, err = w.Accept(seq)
	return seq, err
}

// TestWindowEdges checks the edges of the window for each size, without
// and with ESN, at a top below 2^32 and (ESN) one straddling 2^32.
func TestWindowEdges(t *testing.T) {
	for _, size := range []int{32, 64, 100, 1024, 4096, 65536} {
		for _, esn := range []bool{false, true} {
			// The last step jumps by size+65; without ESN it must stay
			// below 2^32.
			tops := []uint64{1 << 20, 1<<32 - 1 - 2*MaxWindow}
			if esn {
				tops = append(tops, 1<<32-1, 1<<32+uint64(size)/3, 7<<32+5)
			}
			for _, top := range tops {
				t.Run(fmt.Sprintf("size=%d/esn=%v/top=%#x", size, esn, top), func(t *testing.T) {
					w := mustWindow(t, size, esn, 0)
					if !esn {
						if _, err := w.Accept(top); err != nil {
							t.Fatal(err)
						}
					} else {
						w = mustWindow(t, size, esn, top-1)
						if _, err := w.Accept(top); err != nil {
							t.Fatal(err)
						}
					}
					bottom := top - uint64(size) + 1
					steps := []struct {
						seq  uint64
						want error
					}{
						{top, ErrReplay},
						{bottom, nil},
						{bottom, ErrReplay},
						{bottom + 1, nil},
						{top - 1, nil},
						{top - 1, ErrReplay},
						{bottom + 1, ErrReplay},
					}
					if !esn {
						// Without ESN the number below the window is too old;
						// with ESN it is read as 2^32 further on (A.2).
						steps = append(steps, struct {
							seq  uint64
							want error
						}{bottom - 1, ErrTooOld})
					}
					for _, s := range steps {
						seq, err := checkAccept(w, uint32(s.seq))
						if err != s.want {
							t.Errorf("seq %#x: err %v, want %v", s.seq, err, s.want)
						}
						if seq != s.seq {
							t.Errorf("seq %#x: inferred %#x", s.seq, seq)
						}
					}
					if w.Top() != top {
						t.Errorf("Top() = %#x, want %#x", w.Top(), top)
					}
					// Moving the top by one pushes bottom out of the window.
					if _, err := w.Accept(top + 1); err != nil {
						t.Fatal(err)
					}
					if _, err := w.Accept(bottom); err != ErrTooOld {
						t.Errorf("Accept(old bottom %#x) = %v, want ErrTooOld", bottom, err)
					}
					if _, err := w.Accept(bottom + 1); err != ErrReplay {
						t.Errorf("Accept(%#x) = %v, want ErrReplay", bottom+1, err)
					}
					// A jump of more than the window forgets everything.
					far := top + 1 + uint64(size) + 64
					if _, err := w.Accept(far); err != nil {
						t.Fatal(err)
					}
					if _, err := w.Accept(far - uint64(size) + 1); err != nil {
						t.Errorf("Accept(new bottom) after a jump = %v", err)
					}
					if _, err := w.Accept(far - uint64(size)); err != ErrTooOld {
						t.Errorf("Accept(below new bottom) = %v, want ErrTooOld", err)
					}
				})
			}
		}
	}
}

func TestWindowZero(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		esn     bool
		initial uint64
		seqLow  uint32
		wantSeq uint64
		wantErr error
	}{
		{"32-bit", 64, false, 0, 0, 0, ErrZero},
		{"32-bit high top", 64, false, 1<<32 - 1, 0, 0, ErrZero},
		{"off", 0, false, 0, 0, 0, ErrZero},
		{"ESN top 0", 64, true, 0, 0, 0, ErrZero},
		{"ESN top 5", 64, true, 5, 0, 0, ErrZero},
		{"ESN low 0 in subspace 1 is valid", 64, true, hl(1, 5), 0, hl(1, 0), nil},
		{"ESN low 0 ahead is valid", 64, true, hl(0, 1000), 0, hl(1, 0), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := mustWindow(t, tc.size, tc.esn, tc.initial)
			seq, err := w.Check(tc.seqLow)
			if seq != tc.wantSeq || err != tc.wantErr {
				t.Errorf("Check(%d) = %#x, %v; want %#x, %v", tc.seqLow, seq, err, tc.wantSeq, tc.wantErr)
			}
			if _, err := w.Accept(0); err != ErrZero {
				t.Errorf("Accept(0) = %v, want ErrZero", err)
			}
		})
	}
}

// TestWindowESNEdges covers the Th-1 and Th+1 edges as seen through Check.
func TestWindowESNEdges(t *testing.T) {
	const max32 = ^uint32(0)
	tests := []struct {
		name    string
		initial uint64
		seqLow  uint32
		wantSeq uint64
		wantErr error
	}{
		{"Th=0 Case B upper low is too old", hl(0, 10), max32, 0, ErrTooOld},
		{"Th=0 Case B bottom is too old", hl(0, 10), max32 - 52, 0, ErrTooOld},
		{"Th=0 Case B below bottom is ahead", hl(0, 10), max32 - 53, hl(0, max32-53), nil},
		{"Th=max Case A wrap is too old", hl(max32, 1000), 5, 0, ErrTooOld},
		{"Th=max Case A ahead", hl(max32, 1000), max32, max64, nil},
		{"Th=1 Case B previous subspace", hl(1, 10), max32, hl(0, max32), nil},
		{"Case A next subspace", hl(1, 1000), 5, hl(2, 5), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := mustWindow(t, 64, true, tc.initial)
			seq, err := w.Check(tc.seqLow)
			if seq != tc.wantSeq || err != tc.wantErr {
				t.Errorf("Check(%#x) = %#x, %v; want %#x, %v", tc.seqLow, seq, err, tc.wantSeq, tc.wantErr)
			}
		})
	}
}

func TestWindowHighAdvanced(t *testing.T) {
	w := mustWindow(t, 64, true, hl(0, ^uint32(0)-2))
	steps := []struct {
		seqLow  uint32
		seq     uint64
		advance bool
	}{
		{^uint32(0) - 1, hl(0, ^uint32(0)-1), false},
		{^uint32(0), hl(0, ^uint32(0)), false},
		{1, hl(1, 1), true},
		{^uint32(0) - 3, hl(0, ^uint32(0)-3), false}, // late, old subspace
		{0, hl(1, 0), false},                         // low 0 with high 1
		{2, hl(1, 2), false},
	}
	for _, s := range steps {
		seq, err := w.Check(s.seqLow)
		if err != nil || seq != s.seq {
			t.Fatalf("Check(%#x) = %#x, %v; want %#x", s.seqLow, seq, err, s.seq)
		}
		adv, err := w.Accept(seq)
		if err != nil || adv != s.advance {
			t.Errorf("Accept(%#x) = %v, %v; want %v, nil", seq, adv, err, s.advance)
		}
	}
	w32 := mustWindow(t, 64, false, 0)
	for _, s := range []uint64{1, 1<<32 - 1} {
		if adv, err := w32.Accept(s); adv || err != nil {
			t.Errorf("32-bit Accept(%#x) = %v, %v; want false, nil", s, adv, err)
		}
	}
	if _, err := w32.Accept(1 << 32); err == nil || errors.Is(err, ErrReplay) || errors.Is(err, ErrTooOld) {
		t.Errorf("32-bit Accept(2^32) = %v, want a range error", err)
	}
}

func TestWindowCheckChangesNothing(t *testing.T) {
	w := mustWindow(t, 64, true, hl(3, 100))
	for range 3 {
		seq, err := w.Check(200)
		if seq != hl(3, 200) || err != nil {
			t.Fatalf("Check(200) = %#x, %v", seq, err)
		}
		if w.Top() != hl(3, 100) {
			t.Fatalf("Check moved the top to %#x", w.Top())
		}
	}
	if _, err := w.Accept(hl(3, 200)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Check(200); err != ErrReplay {
		t.Errorf("Check after Accept = %v, want ErrReplay", err)
	}
}

// TestWindowAcceptRechecks covers the race Check/Check/Accept/Accept of two
// cores: the second Accept must fail.
func TestWindowAcceptRechecks(t *testing.T) {
	w := mustWindow(t, 32, false, 0)
	a, errA := w.Check(10)
	b, errB := w.Check(10)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if _, err := w.Accept(a); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Accept(b); err != ErrReplay {
		t.Errorf("second Accept = %v, want ErrReplay", err)
	}
	old, err := w.Check(5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Accept(1000); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Accept(old); err != ErrTooOld {
		t.Errorf("Accept after the window moved on = %v, want ErrTooOld", err)
	}
}

func TestWindowOff(t *testing.T) {
	for _, w := range []*Window{mustWindow(t, 0, false, 0), new(Window)} {
		for _, s := range []uint32{5, 5, 1, 1 << 31, 5} {
			seq, err := checkAccept(w, s)
			if err != nil || seq != uint64(s) {
				t.Errorf("window off: %d → %d, %v; want accepted", s, seq, err)
			}
		}
		if w.Top() != 1<<31 {
			t.Errorf("Top() = %d, want %d", w.Top(), 1<<31)
		}
		if _, err := w.Check(0); err != ErrZero {
			t.Errorf("window off: Check(0) = %v, want ErrZero", err)
		}
	}
}

func TestWindowSetHigh(t *testing.T) {
	if err := mustWindow(t, 64, false, 0).SetHigh(1); !errors.Is(err, ErrNotESN) {
		t.Errorf("SetHigh without ESN = %v, want ErrNotESN", err)
	}
	w := mustWindow(t, 64, true, 0)
	for _, s := range []uint64{hl(1, 100), hl(1, 99)} {
		if _, err := w.Accept(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetHigh(1); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Check(99); err != ErrReplay {
		t.Errorf("after SetHigh to the same high bits: Check = %v, want ErrReplay (bitmap kept)", err)
	}
	if err := w.SetHigh(4); err != nil {
		t.Fatal(err)
	}
	if w.Top() != hl(4, 100) {
		t.Errorf("Top() = %#x, want %#x", w.Top(), hl(4, 100))
	}
	for _, low := range []uint32{99, 100} {
		if seq, err := checkAccept(w, low); seq != hl(4, low) || err != nil {
			t.Errorf("after SetHigh(4): %d → %#x, %v; want accepted in subspace 4", low, seq, err)
		}
	}
	if _, err := w.Check(99); err != ErrReplay {
		t.Errorf("Check(99) = %v, want ErrReplay", err)
	}
	// Backwards is refused and changes nothing: it would let numbers
	// already received in again.
	if err := w.SetHigh(2); err != ErrWindowBackwards || w.Top() != hl(4, 100) {
		t.Errorf("SetHigh(2) = %v, top %#x; want ErrWindowBackwards, top %#x", err, w.Top(), hl(4, 100))
	}
	if _, err := w.Check(99); err != ErrReplay {
		t.Errorf("after a refused SetHigh(2): Check(99) = %v, want ErrReplay", err)
	}
}

// TestWindowConcurrent has 8 goroutines Check+Accept the same numbers:
// each number is accepted exactly once.
func TestWindowConcurrent(t *testing.T) {
	const workers, n = 8, 20000
	for _, esn := range []bool{false, true} {
		w := mustWindow(t, 1024, esn, 1<<32-n/2)
		start := uint64(1<<32 - n/2)
		if !esn {
			w = mustWindow(t, 1024, esn, 0)
			start = 0
		}
		accepted := make([][]uint64, workers)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				for k := range uint64(n) {
					// Small reordering that differs per goroutine.
					s := start + 1 + k ^ uint64(i&3)
					seq, err := w.Check(uint32(s))
					if err != nil {
						continue
					}
					if seq != s {
						// This goroutine lags so far behind that A.2 reads
						// its number as 2^32 ahead; the integrity check
						// would fail, so it must not be accepted.
						continue
					}
					if _, err := w.Accept(seq); err == nil {
						accepted[i] = append(accepted[i], seq)
					}
				}
			})
		}
		wg.Wait()
		seen := map[uint64]int{}
		for _, a := range accepted {
			for _, s := range a {
				seen[s]++
			}
		}
		for s, c := range seen {
			if c != 1 {
				t.Errorf("esn=%v: %#x accepted %d times", esn, s, c)
			}
		}
		if len(seen) < n*9/10 {
			t.Errorf("esn=%v: only %d of %d numbers accepted", esn, len(seen), n)
		}
	}
}
