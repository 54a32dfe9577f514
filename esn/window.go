package esn

import (
	"errors"
	"fmt"
	"sync"
)

// errNot32 is returned by Accept when a number above 2^32-1 is offered to a
// window without ESN; Check never infers such a number.
var errNot32 = errors.New("sequence number does not fit in 32 bits, and the SA does not use extended sequence numbers")

// Window is an anti-replay window (RFC 6479 bitmap) with optional ESN
// inference. Safe for concurrent use. Size 0 (only without ESN) disables
// replay protection but still refuses sequence number 0.
//
// A number is acceptable (RFC 4303 §3.4.3) when it is above the top (the
// highest number accepted), or within (top-size, top] and not yet received.
type Window struct {
	mu  sync.Mutex
	top uint64
	// bitmap holds one bit per number, number n at bit n%64 of block
	// (n/64)%len(bitmap). It has one block more than the window needs, so
	// moving the top forward only clears whole blocks.
	bitmap []uint64
	size   uint64 // 0: replay protection off
	esn    bool
}

// NewWindow returns a window of size packets (0, or MinWindow..MaxWindow;
// ESN requires a non-zero size). initial is the initial top: the highest
// number already seen (normally 0; UPDATE_SA or an SA installed mid-stream
// sets it). No number is marked as received, so those in
// (initial-size, initial] are still accepted once. Without ESN, initial
// must fit in 32 bits.
func NewWindow(size int, esn bool, initial uint64) (*Window, error) {
	if size < 0 || (size > 0 && size < MinWindow) || size > MaxWindow {
		return nil, fmt.Errorf("replay window size %d is out of range: use 0 to turn replay protection off, or %d to %d packets", size, MinWindow, MaxWindow)
	}
	if esn && size == 0 {
		return nil, fmt.Errorf("replay window size 0 (off) is not allowed with extended sequence numbers: use %d to %d packets", MinWindow, MaxWindow)
	}
	if !esn && initial > LastSeq(false) {
		return nil, fmt.Errorf("initial sequence number %d does not fit in 32 bits, as an SA without extended sequence numbers requires", initial)
	}
	w := &Window{top: initial, size: uint64(size), esn: esn}
	if size > 0 {
		w.bitmap = make([]uint64, (size+63)/64+1)
	}
	return w, nil
}

// Check is the pre-check done before the integrity check: it infers the
// full number for seqLow and says whether it may be new. It changes nothing.
// seq is the inferred number, also when err is ErrReplay; it is 0 with
// ErrZero, and with ErrTooOld when no 64-bit number fits (see Infer).
func (w *Window) Check(seqLow uint32) (seq uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq = uint64(seqLow)
	if w.esn {
		var ok bool
		if seq, ok = infer(w.top, uint32(w.size), seqLow); !ok {
			return 0, ErrTooOld
		}
	}
	return seq, w.check(seq)
}

// check returns the verdict on the full number seq; w.mu is held.
func (w *Window) check(seq uint64) error {
	switch {
	case seq == 0:
		return ErrZero
	case w.size == 0 || seq > w.top:
		return nil
	case w.top-seq >= w.size:
		return ErrTooOld
	case w.bitmap[w.block(seq)]&(1<<(seq&63)) != 0:
		return ErrReplay
	}
	return nil
}

// block returns the index in w.bitmap of the block holding seq.
func (w *Window) block(seq uint64) uint64 {
	return (seq >> 6) % uint64(len(w.bitmap))
}

// Accept marks seq as received after the integrity check passed. It checks
// again (another core may have accepted it meanwhile) and returns ErrReplay
// or ErrTooOld in that case, and ErrZero for 0. highAdvanced is true when
// the top's high-order 32 bits moved forward (an ESN event).
func (w *Window) Accept(seq uint64) (highAdvanced bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.esn && seq > LastSeq(false) {
		return false, errNot32
	}
	if err := w.check(seq); err != nil {
		return false, err
	}
	if seq > w.top {
		highAdvanced = seq>>32 > w.top>>32
		if w.size > 0 {
			w.advance(seq)
		}
		w.top = seq
	}
	if w.size > 0 {
		w.bitmap[w.block(seq)] |= 1 << (seq & 63)
	}
	return highAdvanced, nil
}

// advance clears the blocks that the top moving to seq brings into the
// window; w.mu is held and seq > w.top.
func (w *Window) advance(seq uint64) {
	from, to := w.top>>6, seq>>6
	n := uint64(len(w.bitmap))
	if to-from >= n {
		clear(w.bitmap)
		return
	}
	for b := from + 1; b <= to; b++ {
		w.bitmap[b%n] = 0
	}
}

// Top returns the highest number accepted (or the initial top).
func (w *Window) Top() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.top
}

// Size returns the window size.
func (w *Window) Size() int { return int(w.size) }

// ESN reports whether the window infers high-order bits.
func (w *Window) ESN() bool { return w.esn }

// SetHigh moves the window's high-order bits forward to hi (UPDATE_SA
// inbound): the top becomes hi<<32 | (top's low bits) and the bitmap is
// cleared when the high bits change. Without ESN it returns ErrNotESN; hi
// below the current high bits returns ErrWindowBackwards and changes
// nothing, since numbers already received would be accepted again.
func (w *Window) SetHigh(hi uint32) error {
	if !w.esn {
		return ErrNotESN
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch cur := uint32(w.top >> 32); {
	case hi == cur:
		return nil
	case hi < cur:
		return ErrWindowBackwards
	}
	w.top = uint64(hi)<<32 | w.top&0xFFFFFFFF
	clear(w.bitmap)
	return nil
}
