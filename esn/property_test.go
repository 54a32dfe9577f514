package esn

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// harness feeds the same operations to a Window and to the reference model
// and fails on the first difference.
type harness struct {
	t    testing.TB
	w    *Window
	ref  *refWindow
	step int
	// counts of verdicts, so tests can assert the run covered each case.
	ok, replay, tooOld, zero, advanced int
}

func newHarness(t testing.TB, size int, esn bool, initial uint64) *harness {
	return &harness{t: t, w: mustWindow(t, size, esn, initial), ref: newRefWindow(size, esn, initial)}
}

func (h *harness) fail(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("step %d (size %d, esn %v): %s", h.step, h.ref.size, h.ref.esn, fmt.Sprintf(format, args...))
}

// check runs Check on both and returns the inferred number and verdict.
func (h *harness) check(seqLow uint32) (uint64, error) {
	h.t.Helper()
	h.step++
	topBefore := h.w.Top()
	seq, err := h.w.Check(seqLow)
	wantSeq, wantErr := h.ref.Check(seqLow)
	if seq != wantSeq || err != wantErr {
		h.fail("Check(%#x) at top %#x = %#x, %v; reference %#x, %v", seqLow, topBefore, seq, err, wantSeq, wantErr)
	}
	if h.w.Top() != topBefore {
		h.fail("Check(%#x) moved the top from %#x to %#x", seqLow, topBefore, h.w.Top())
	}
	if err == nil && uint32(seq) != seqLow {
		h.fail("Check(%#x) inferred %#x with other low bits", seqLow, seq)
	}
	switch err {
	case nil:
	case ErrReplay:
		h.replay++
	case ErrTooOld:
		h.tooOld++
	case ErrZero:
		h.zero++
	default:
		h.fail("Check(%#x): unexpected error %v", seqLow, err)
	}
	return seq, err
}

// accept runs Accept on both.
func (h *harness) accept(seq uint64) error {
	h.t.Helper()
	h.step++
	topBefore := h.w.Top()
	adv, err := h.w.Accept(seq)
	wantAdv, wantErr := h.ref.Accept(seq)
	if adv != wantAdv || !sameErr(err, wantErr) {
		h.fail("Accept(%#x) at top %#x = %v, %v; reference %v, %v", seq, topBefore, adv, err, wantAdv, wantErr)
	}
	if h.w.Top() != h.ref.top {
		h.fail("after Accept(%#x): Top() = %#x, reference %#x", seq, h.w.Top(), h.ref.top)
	}
	if err == nil {
		h.ok++
		if adv {
			h.advanced++
		}
		if h.w.Size() > 0 {
			if err := h.w.check(seq); err != ErrReplay {
				h.fail("Accept(%#x) did not mark it: recheck says %v", seq, err)
			}
		}
	}
	return err
}

func (h *harness) setHigh(hi uint32) {
	h.t.Helper()
	h.step++
	err, wantErr := h.w.SetHigh(hi), h.ref.SetHigh(hi)
	if err != wantErr {
		h.fail("SetHigh(%d) = %v, reference %v", hi, err, wantErr)
	}
	if h.w.Top() != h.ref.top {
		h.fail("after SetHigh(%d): Top() = %#x, reference %#x", hi, h.w.Top(), h.ref.top)
	}
}

// TestWindowMatchesReference drives long seeded random traffic (in order,
// reordered, duplicated, late, jumps, garbage, failed integrity checks,
// delayed accepts, UPDATE_SA) through Window and the reference model.
func TestWindowMatchesReference(t *testing.T) {
	type config struct {
		size  int
		esn   bool
		start uint64 // sender's first number - 1, and the window's initial top
	}
	var configs []config
	for _, size := range []int{0, 32, 64, 100, 1000, 1024, 4096, 65536} {
		for _, start := range []uint64{0, 1 << 31, 1<<32 - 1<<29} {
			configs = append(configs, config{size, false, start})
		}
		if size == 0 {
			continue
		}
		for _, start := range []uint64{0, 1<<32 - 3000, 5<<32 - 100, 1<<64 - 1<<32 - 3000, 1<<64 - 5000} {
			configs = append(configs, config{size, true, start})
		}
	}
	steps := 30000
	if testing.Short() {
		steps = 3000
	}
	for i, c := range configs {
		t.Run(fmt.Sprintf("size=%d/esn=%v/start=%#x", c.size, c.esn, c.start), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 0x6e5a))
			h := newHarness(t, c.size, c.esn, c.start)
			span := uint64(max(c.size, 64))
			s := c.start // highest number the sender used
			// The sender never wraps: without ESN it keeps below 2^32 (by
			// the choice of start and jumps), with ESN it saturates.
			bigJump := uint64(1 << 31)
			switch {
			case !c.esn:
				bigJump = 1 << 20
			case c.start > max64-1<<40:
				// Near the end of the 64-bit space: jumps small enough
				// that the sender does not saturate at once (UPDATE_SA
				// never moves the window back to make room).
				bigJump = 1 << 21
			}
			forward := func(d uint64) {
				if s+d < s {
					s = max64
					return
				}
				s += d
			}
			var recent []uint64
			var pending []uint64 // checked, not yet accepted
			send := func(n uint64, acceptIt bool) {
				seq, err := h.check(uint32(n))
				if err != nil {
					return
				}
				// The integrity check passes only when the receiver
				// derived the number the sender used (with ESN, A.2 reads
				// a number far too old as ahead, and the check fails).
				if acceptIt && seq == n {
					h.accept(seq)
				}
			}
			for range steps {
				r := rng.IntN(100)
				switch {
				case r < 45: // in order
					forward(1)
					send(s, true)
				case r < 60: // reordered or late, sometimes beyond the window
					send(s-rng.Uint64N(2*span), true)
				case r < 70: // duplicate
					if len(recent) > 0 {
						send(recent[rng.IntN(len(recent))], true)
					}
				case r < 74: // small jump ahead
					forward(1 + rng.Uint64N(3*span))
					send(s, true)
				case r < 75: // big jump, crossing 2^32 boundaries
					forward(rng.Uint64N(bigJump))
					send(s, true)
				case r < 76: // low bits 0: number 0 in the first subspace
					send(s&^0xFFFF_FFFF, true)
				case r < 80: // forged packet: garbage low bits, fails integrity
					send(uint64(rng.Uint32()), false)
				case r < 85: // failed integrity check: Check only
					send(s+rng.Uint64N(span)-span/2, false)
				case r < 92: // Check now, Accept later (another core)
					n := s - rng.Uint64N(span)
					if seq, err := h.check(uint32(n)); err == nil && seq == n {
						pending = append(pending, seq)
					}
				case r < 97: // delayed accepts
					for _, p := range pending {
						h.accept(p)
					}
					pending = pending[:0]
				case r < 98: // Accept of an arbitrary full number
					if d := uint64(rng.IntN(int(span) + 64)); h.ref.top > d {
						h.accept(h.ref.top - d + 32)
					}
				default: // UPDATE_SA: forward moves the sender too; back is refused
					if c.esn {
						up := 3 // back, same or forward
						if c.start > max64-1<<40 {
							up = 2 // forward would use up the last subspaces
						}
						hi := h.ref.top>>32 + uint64(rng.IntN(up)) - 1
						if hi <= 0xFFFF_FFFF { // no wrap to the other end
							before := h.ref.top
							h.setHigh(uint32(hi))
							if h.ref.top != before {
								s = h.ref.top
							}
						}
					} else {
						h.setHigh(1)
					}
				}
				recent = append(recent, s)
				if len(recent) > 64 {
					recent = recent[1:]
				}
			}
			t.Logf("ok %d replay %d tooOld %d zero %d highAdvanced %d", h.ok, h.replay, h.tooOld, h.zero, h.advanced)
			if c.start < 1<<64-1<<20 && h.ok < steps/4 {
				t.Errorf("only %d numbers accepted", h.ok)
			}
			if c.size > 0 && h.replay == 0 {
				t.Error("no replay detected: the generator does not exercise the window")
			}
			if !c.esn && c.size > 0 && h.tooOld == 0 {
				t.Error("no too-old number: the generator does not exercise the window")
			}
			if !c.esn && h.zero == 0 {
				t.Error("number 0 was never sent")
			}
			if c.esn && h.advanced == 0 && c.start>>32 != 0xFFFF_FFFF {
				t.Error("the high-order bits never advanced")
			}
		})
	}
}
