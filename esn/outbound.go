package esn

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Outbound is the outbound sequence counter of one SA. The zero value is not
// usable (it behaves as an exhausted counter); create it with NewOutbound.
// Safe for concurrent use: Next is lock-free except for the few calls that
// race for the one-time warning.
type Outbound struct {
	// next is the number the next call to Next hands out. 0 means the
	// counter is exhausted: 0 is never a valid outbound number, so the
	// 64-bit counter never has to hold 2^64.
	next atomic.Uint64
	// last is the highest number handed out, 0 if none.
	last atomic.Uint64
	// warned is set, under warnMu, by the one Next call that reports
	// warn=true.
	warned atomic.Bool
	warnMu sync.Mutex

	limit    uint64 // LastSeq(esn)
	warnFrom uint64 // the warning goes to the first number >= warnFrom
	esn      bool
}

// NewOutbound returns a counter whose first Next returns first (1 if first
// is 0). warnAt is how many numbers before the last usable one Next starts
// reporting warn=true (exactly once, on the first number at or beyond the
// threshold LastSeq(esn)-warnAt, which saturates at 0; warnAt 0 warns on the
// last number itself): the engine turns it into SaDeleteReq. A first beyond
// LastSeq(esn) gives a counter that is already exhausted.
func NewOutbound(esn bool, first uint64, warnAt uint64) *Outbound {
	o := &Outbound{esn: esn, limit: LastSeq(esn), warnFrom: WarnFrom(esn, warnAt)}
	if first == 0 {
		first = 1
	}
	if first <= o.limit {
		o.next.Store(first)
	}
	return o
}

// Next reserves and returns the next sequence number. It returns
// ErrExhausted, and never a number, once the last usable one was used.
// warn is true exactly once, when the threshold is crossed: for the lowest
// number at or beyond it that is handed out, even when several goroutines
// call Next at the same time.
func (o *Outbound) Next() (seq uint64, warn bool, err error) {
	for {
		cur := o.next.Load()
		if cur == 0 {
			return 0, false, ErrExhausted
		}
		if cur >= o.warnFrom && !o.warned.Load() {
			return o.nextWarn()
		}
		if o.next.CompareAndSwap(cur, o.after(cur)) {
			o.setLast(cur)
			return cur, false, nil
		}
	}
}

// nextWarn is the slow path of Next near the warning threshold. The mutex
// serializes every caller that may hand out a number at or beyond the
// threshold before the warning was given, so the warning goes to the lowest
// such number. Callers that saw warned already set take the fast path.
func (o *Outbound) nextWarn() (seq uint64, warn bool, err error) {
	o.warnMu.Lock()
	defer o.warnMu.Unlock()
	for {
		cur := o.next.Load()
		if cur == 0 {
			return 0, false, ErrExhausted
		}
		if o.next.CompareAndSwap(cur, o.after(cur)) {
			seq = cur
			break
		}
	}
	o.setLast(seq)
	// next only moves up (until it becomes 0), and this caller loaded a
	// value >= warnFrom before taking the lock, so seq >= warnFrom.
	warn = !o.warned.Load()
	o.warned.Store(true)
	return seq, warn, nil
}

// after returns the value of next once cur was handed out.
func (o *Outbound) after(cur uint64) uint64 {
	if cur >= o.limit {
		return 0
	}
	return cur + 1
}

// setLast raises last to seq.
func (o *Outbound) setLast(seq uint64) {
	for {
		l := o.last.Load()
		if l >= seq || o.last.CompareAndSwap(l, seq) {
			return
		}
	}
}

// Last returns the last (highest) number handed out; before the first,
// the number before the one Next will hand out, as ip xfrm's oseq shows a
// configured replay-oseq before any packet (0 for a counter that starts
// at 1, or that was exhausted from the start).
func (o *Outbound) Last() uint64 {
	if l := o.last.Load(); l != 0 {
		return l
	}
	if n := o.next.Load(); n != 0 {
		return n - 1
	}
	return 0
}

// Remaining returns how many numbers are left.
func (o *Outbound) Remaining() uint64 {
	n := o.next.Load()
	if n == 0 {
		return 0
	}
	return o.limit - n + 1
}

// ESN reports whether the counter is 64-bit.
func (o *Outbound) ESN() bool { return o.esn }

// SetHigh moves the high-order 32 bits to hi (UPDATE_SA) and keeps the low
// ones, as the kernel's XFRM_MSG_NEWAE does with oseq_hi and as the
// inbound window does (Window.SetHigh): two peers whose hosts update both
// ends keep agreeing. The next number becomes hi<<32 | its low bits (or
// stays, if its high-order bits already equal hi); a hi
// lower than the high bits of the next number to send returns an error
// wrapping ErrBackwards. Without ESN it returns ErrNotESN, and on an
// exhausted counter ErrExhausted.
func (o *Outbound) SetHigh(hi uint32) error {
	if !o.esn {
		return ErrNotESN
	}
	for {
		cur := o.next.Load()
		if cur == 0 {
			return ErrExhausted
		}
		curHi := uint32(cur >> 32)
		if hi < curHi {
			return fmt.Errorf("%w: requested high-order bits %d, but the next number to send already has %d", ErrBackwards, hi, curHi)
		}
		if hi == curHi {
			return nil
		}
		if o.next.CompareAndSwap(cur, uint64(hi)<<32|cur&0xFFFFFFFF) {
			return nil
		}
	}
}
