package esn

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

const max64 = ^uint64(0)

func TestLastSeq(t *testing.T) {
	if got := LastSeq(false); got != 1<<32-1 {
		t.Errorf("LastSeq(false) = %#x, want 2^32-1", got)
	}
	if got := LastSeq(true); got != max64 {
		t.Errorf("LastSeq(true) = %#x, want 2^64-1", got)
	}
}

func TestOutboundFirst(t *testing.T) {
	tests := []struct {
		esn         bool
		first, want uint64
	}{
		{false, 0, 1},
		{false, 1, 1},
		{false, 77, 77},
		{true, 0, 1},
		{true, 1 << 32, 1 << 32},
		{true, max64, max64},
		{false, 1<<32 - 1, 1<<32 - 1},
	}
	for _, tc := range tests {
		o := NewOutbound(tc.esn, tc.first, 0)
		if o.ESN() != tc.esn {
			t.Errorf("ESN() = %v, want %v", o.ESN(), tc.esn)
		}
		if o.Last() != tc.want-1 {
			t.Errorf("esn=%v first=%d: Last() before Next = %d, want %d (the one before the first)", tc.esn, tc.first, o.Last(), tc.want-1)
		}
		if got, want := o.Remaining(), LastSeq(tc.esn)-tc.want+1; got != want {
			t.Errorf("esn=%v first=%d: Remaining() = %d, want %d", tc.esn, tc.first, got, want)
		}
		seq, _, err := o.Next()
		if err != nil || seq != tc.want {
			t.Errorf("esn=%v first=%d: Next() = %d, %v; want %d, nil", tc.esn, tc.first, seq, err, tc.want)
		}
		if o.Last() != tc.want {
			t.Errorf("esn=%v first=%d: Last() = %d, want %d", tc.esn, tc.first, o.Last(), tc.want)
		}
	}
}

// drain calls Next until ErrExhausted (at most limit times) and returns the
// numbers and the ones that came with warn=true.
func drain(t *testing.T, o *Outbound, limit int) (seqs, warns []uint64) {
	t.Helper()
	for range limit {
		seq, warn, err := o.Next()
		if errors.Is(err, ErrExhausted) {
			return seqs, warns
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		seqs = append(seqs, seq)
		if warn {
			warns = append(warns, seq)
		}
	}
	t.Fatalf("counter not exhausted after %d numbers", limit)
	return nil, nil
}

func TestOutboundExhaustion(t *testing.T) {
	tests := []struct {
		name  string
		esn   bool
		first uint64
		want  []uint64
	}{
		{"32-bit", false, 1<<32 - 3, []uint64{1<<32 - 3, 1<<32 - 2, 1<<32 - 1}},
		{"32-bit last only", false, 1<<32 - 1, []uint64{1<<32 - 1}},
		{"32-bit beyond", false, 1 << 32, nil},
		{"32-bit far beyond", false, max64, nil},
		{"64-bit", true, max64 - 2, []uint64{max64 - 2, max64 - 1, max64}},
		{"64-bit last only", true, max64, []uint64{max64}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOutbound(tc.esn, tc.first, 0)
			if got := o.Remaining(); got != uint64(len(tc.want)) {
				t.Errorf("Remaining() = %d, want %d", got, len(tc.want))
			}
			seqs, _ := drain(t, o, 10)
			if !slices.Equal(seqs, tc.want) {
				t.Errorf("numbers = %#x, want %#x", seqs, tc.want)
			}
			for range 3 {
				seq, warn, err := o.Next()
				if err != ErrExhausted || seq != 0 || warn {
					t.Errorf("Next() after exhaustion = %d, %v, %v; want 0, false, ErrExhausted", seq, warn, err)
				}
			}
			if o.Remaining() != 0 {
				t.Errorf("Remaining() after exhaustion = %d, want 0", o.Remaining())
			}
			wantLast := uint64(0)
			if len(tc.want) > 0 {
				wantLast = tc.want[len(tc.want)-1]
			}
			if o.Last() != wantLast {
				t.Errorf("Last() = %#x, want %#x", o.Last(), wantLast)
			}
		})
	}
}

func TestOutboundCrosses2to32WithESN(t *testing.T) {
	o := NewOutbound(true, 1<<32-1, 0)
	want := []uint64{1<<32 - 1, 1 << 32, 1<<32 + 1}
	for _, w := range want {
		if seq, _, err := o.Next(); seq != w || err != nil {
			t.Fatalf("Next() = %#x, %v; want %#x, nil", seq, err, w)
		}
	}
}

func TestOutboundWarnOnce(t *testing.T) {
	tests := []struct {
		name          string
		esn           bool
		first, warnAt uint64
		want          uint64 // the one number that warns
	}{
		{"32-bit warnAt 0 warns on last", false, 1<<32 - 10, 0, 1<<32 - 1},
		{"32-bit warnAt 3", false, 1<<32 - 10, 3, 1<<32 - 4},
		{"32-bit threshold is first", false, 1<<32 - 10, 9, 1<<32 - 10},
		{"32-bit first beyond threshold", false, 1<<32 - 10, 100, 1<<32 - 10},
		{"32-bit warnAt saturates", false, 1<<32 - 10, max64, 1<<32 - 10},
		{"64-bit warnAt 0 warns on last", true, max64 - 10, 0, max64},
		{"64-bit warnAt 5", true, max64 - 10, 5, max64 - 5},
		{"64-bit warnAt saturates", true, max64 - 10, max64, max64 - 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOutbound(tc.esn, tc.first, tc.warnAt)
			seqs, warns := drain(t, o, 100)
			if want := LastSeq(tc.esn) - tc.first + 1; uint64(len(seqs)) != want {
				t.Errorf("got %d numbers, want %d", len(seqs), want)
			}
			if !slices.Equal(warns, []uint64{tc.want}) {
				t.Errorf("warned on %#x, want exactly [%#x]", warns, tc.want)
			}
		})
	}
}

func TestOutboundWarnSmallFirstIsQuiet(t *testing.T) {
	o := NewOutbound(false, 0, 1000)
	for range 10000 {
		if _, warn, err := o.Next(); warn || err != nil {
			t.Fatalf("Next() far from the end: warn=%v err=%v", warn, err)
		}
	}
}

func TestOutboundSetHigh(t *testing.T) {
	t.Run("without ESN", func(t *testing.T) {
		o := NewOutbound(false, 5, 0)
		if err := o.SetHigh(1); !errors.Is(err, ErrNotESN) {
			t.Errorf("SetHigh on a 32-bit counter = %v, want ErrNotESN", err)
		}
		if seq, _, _ := o.Next(); seq != 5 {
			t.Errorf("Next() after refused SetHigh = %d, want 5", seq)
		}
	})
	tests := []struct {
		name    string
		first   uint64
		hi      uint32
		wantErr error
		next    uint64
	}{
		{"forward from 0", 1, 1, nil, hl(1, 1)},
		{"forward by many", hl(2, 99), 7, nil, hl(7, 99)},
		{"low bits 0", hl(2, 0), 3, nil, hl(3, 0)},
		{"to the last subspace", 1, ^uint32(0), nil, hl(^uint32(0), 1)},
		{"equal", hl(3, 99), 3, nil, hl(3, 99)},
		{"equal at 0", 1, 0, nil, 1},
		{"backwards", hl(3, 99), 2, ErrBackwards, hl(3, 99)},
		{"backwards to 0", hl(3, 0), 0, ErrBackwards, hl(3, 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOutbound(true, tc.first, 0)
			err := o.SetHigh(tc.hi)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("SetHigh(%d) = %v, want %v", tc.hi, err, tc.wantErr)
			}
			if o.Last() != tc.next-1 {
				t.Errorf("Last() after SetHigh = %#x, want %#x (the one before the next)", o.Last(), tc.next-1)
			}
			if seq, _, err := o.Next(); seq != tc.next || err != nil {
				t.Errorf("Next() = %#x, %v; want %#x, nil", seq, err, tc.next)
			}
			if got, want := o.Remaining(), max64-tc.next; got != want {
				t.Errorf("Remaining() = %d, want %d", got, want)
			}
		})
	}
	t.Run("after numbers were used", func(t *testing.T) {
		o := NewOutbound(true, 1, 0)
		o.Next()
		o.Next()
		if err := o.SetHigh(4); err != nil {
			t.Fatal(err)
		}
		if o.Last() != 2 {
			t.Errorf("Last() = %d, want 2 until the next Next", o.Last())
		}
		if seq, _, _ := o.Next(); seq != hl(4, 3) {
			t.Errorf("Next() = %#x, want %#x: the high bits move, the low bits go on", seq, hl(4, 3))
		}
		if err := o.SetHigh(3); !errors.Is(err, ErrBackwards) {
			t.Errorf("SetHigh(3) after 4 = %v, want ErrBackwards", err)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		o := NewOutbound(true, max64, 0)
		o.Next()
		if err := o.SetHigh(^uint32(0)); err != ErrExhausted {
			t.Errorf("SetHigh on an exhausted counter = %v, want ErrExhausted", err)
		}
		if _, _, err := o.Next(); err != ErrExhausted {
			t.Errorf("Next() = %v, want ErrExhausted", err)
		}
	})
	t.Run("jump over the warning threshold", func(t *testing.T) {
		o := NewOutbound(true, 1, 1<<32+100) // threshold in subspace 2^32-2
		if _, warn, _ := o.Next(); warn {
			t.Fatal("warned far from the end")
		}
		if err := o.SetHigh(^uint32(0)); err != nil {
			t.Fatal(err)
		}
		var warns []uint64
		for range 1000 {
			seq, warn, err := o.Next()
			if err != nil {
				t.Fatal(err)
			}
			if warn {
				warns = append(warns, seq)
			}
		}
		if !slices.Equal(warns, []uint64{hl(^uint32(0), 2)}) {
			t.Errorf("warned on %#x, want exactly the first number after the jump", warns)
		}
	})
	t.Run("jump after the warning", func(t *testing.T) {
		o := NewOutbound(true, max64-1<<33, 1<<34) // warns on the first number
		if _, warn, _ := o.Next(); !warn {
			t.Fatal("no warning on the first number beyond the threshold")
		}
		if err := o.SetHigh(^uint32(0)); err != nil {
			t.Fatal(err)
		}
		if _, warn, _ := o.Next(); warn {
			t.Error("warned a second time after SetHigh")
		}
	})
}

// TestOutboundConcurrentExhaustion drives 8 goroutines into the end of the
// counter: every number is handed out exactly once, none after the last,
// and exactly one caller gets the warning, on the threshold itself.
func TestOutboundConcurrentExhaustion(t *testing.T) {
	const (
		workers = 8
		total   = 100000
		warnAt  = 1000
	)
	for _, esn := range []bool{false, true} {
		last := LastSeq(esn)
		first := last - total + 1
		o := NewOutbound(esn, first, warnAt)
		var wg sync.WaitGroup
		got := make([][]uint64, workers)
		warned := make([][]uint64, workers)
		for i := range workers {
			wg.Go(func() {
				prev := uint64(0)
				for {
					seq, warn, err := o.Next()
					if err == ErrExhausted {
						return
					}
					if err != nil {
						t.Errorf("Next: %v", err)
						return
					}
					if seq <= prev {
						t.Errorf("goroutine %d: %#x after %#x", i, seq, prev)
					}
					prev = seq
					got[i] = append(got[i], seq)
					if warn {
						warned[i] = append(warned[i], seq)
					}
				}
			})
		}
		wg.Wait()
		all := slices.Concat(got...)
		slices.Sort(all)
		if len(all) != total {
			t.Fatalf("esn=%v: %d numbers handed out, want %d", esn, len(all), total)
		}
		for i, s := range all {
			if s != first+uint64(i) {
				t.Fatalf("esn=%v: number %d is %#x, want %#x (duplicate or gap)", esn, i, s, first+uint64(i))
			}
		}
		if w := slices.Concat(warned...); !slices.Equal(w, []uint64{last - warnAt}) {
			t.Errorf("esn=%v: warned on %#x, want exactly [%#x]", esn, w, last-warnAt)
		}
		if o.Last() != last || o.Remaining() != 0 {
			t.Errorf("esn=%v: Last()=%#x Remaining()=%d, want %#x, 0", esn, o.Last(), o.Remaining(), last)
		}
	}
}

// TestOutboundConcurrentSetHigh runs SetHigh while 8 goroutines call Next:
// numbers stay unique and increasing per goroutine, and after SetHigh(hi)
// returns every new number has high bits >= hi.
func TestOutboundConcurrentSetHigh(t *testing.T) {
	const workers, perWorker = 8, 20000
	o := NewOutbound(true, 1, 0)
	var wg sync.WaitGroup
	got := make([][]uint64, workers)
	for i := range workers {
		wg.Go(func() {
			for range perWorker {
				seq, warn, err := o.Next()
				if err != nil || warn {
					t.Errorf("Next() = %#x, %v, %v", seq, warn, err)
					return
				}
				if n := len(got[i]); n > 0 && seq <= got[i][n-1] {
					t.Errorf("goroutine %d: %#x after %#x", i, seq, got[i][n-1])
				}
				got[i] = append(got[i], seq)
			}
		})
	}
	wg.Go(func() {
		for hi := uint32(1); hi <= 64; hi++ {
			if err := o.SetHigh(hi); err != nil {
				t.Errorf("SetHigh(%d) = %v", hi, err)
			}
			if seq, _, err := o.Next(); err != nil || uint32(seq>>32) < hi {
				t.Errorf("Next() after SetHigh(%d) = %#x, %v", hi, seq, err)
			}
			if err := o.SetHigh(hi - 1); !errors.Is(err, ErrBackwards) {
				t.Errorf("SetHigh(%d) after SetHigh(%d) = %v, want ErrBackwards", hi-1, hi, err)
			}
		}
	})
	wg.Wait()
	all := slices.Concat(got...)
	slices.Sort(all)
	if n := len(slices.Compact(slices.Clone(all))); n != len(all) {
		t.Errorf("%d duplicate numbers", len(all)-n)
	}
	if len(all) != workers*perWorker {
		t.Errorf("%d numbers, want %d", len(all), workers*perWorker)
	}
}

func TestOutboundZeroValueIsExhausted(t *testing.T) {
	var o Outbound
	if _, _, err := o.Next(); err != ErrExhausted {
		t.Errorf("zero Outbound Next() = %v, want ErrExhausted", err)
	}
	if o.Remaining() != 0 {
		t.Errorf("zero Outbound Remaining() = %d, want 0", o.Remaining())
	}
}

// TestOutboundConcurrentWarn starts 8 goroutines together right at the
// warning threshold, many times over, so that several of them race for the
// warning: exactly one gets it, and on the threshold number itself.
func TestOutboundConcurrentWarn(t *testing.T) {
	const workers, rounds, perWorker = 8, 300, 4
	for r := range rounds {
		esn := r%2 == 1
		threshold := LastSeq(esn) - 100
		o := NewOutbound(esn, threshold-2, 100)
		start := make(chan struct{})
		var mu sync.Mutex
		var warns, seqs []uint64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				<-start
				for range perWorker {
					seq, warn, err := o.Next()
					if err != nil {
						t.Errorf("Next: %v", err)
						return
					}
					mu.Lock()
					seqs = append(seqs, seq)
					if warn {
						warns = append(warns, seq)
					}
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if !slices.Equal(warns, []uint64{threshold}) {
			t.Fatalf("round %d: warned on %#x, want exactly [%#x]", r, warns, threshold)
		}
		slices.Sort(seqs)
		if len(slices.Compact(seqs)) != workers*perWorker {
			t.Fatalf("round %d: duplicate numbers", r)
		}
	}
}

// TestOutboundLastBeforeFirst: before any number is handed out, Last is
// the one before the first (ip xfrm's replay-oseq as configured), also
// after UPDATE_SA moved the high-order bits; then the last handed out.
func TestOutboundLastBeforeFirst(t *testing.T) {
	o := NewOutbound(true, 17, 0)
	if got := o.Last(); got != 16 {
		t.Errorf("Last before the first packet = %d, want 16", got)
	}
	if err := o.SetHigh(4); err != nil {
		t.Fatal(err)
	}
	if got := o.Last(); got != 4<<32|16 {
		t.Errorf("Last after SetHigh(4) = %#x, want %#x", got, uint64(4<<32|16))
	}
	if seq, _, _ := o.Next(); seq != 4<<32|17 || o.Last() != seq {
		t.Errorf("Next = %#x, Last %#x", seq, o.Last())
	}
	if got := NewOutbound(false, 0, 0).Last(); got != 0 {
		t.Errorf("Last of a fresh counter from 1 = %d, want 0", got)
	}
	if got := NewOutbound(false, 1<<32, 0).Last(); got != 0 {
		t.Errorf("Last of a counter exhausted from the start = %d, want 0", got)
	}
}
