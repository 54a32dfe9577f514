package esn

import (
	"errors"
	"math/big"
)

// This file holds a deliberately naive reference model of the inbound side,
// written independently of infer.go and window.go: big-integer inference
// and a map of received numbers. The property and fuzz tests demand that
// Window and Infer agree with it exactly.

var two32 = new(big.Int).Lsh(big.NewInt(1), 32)

// refInfer is RFC 4303 Appendix A.2 stated as its intent: the full number
// is the one congruent to seqLow modulo 2^32 in [bottom, bottom+2^32), with
// bottom = top-window+1 computed without wrapping. ok is false when that
// number is negative or above 2^64-1.
func refInfer(top uint64, window uint32, seqLow uint32) (seq uint64, ok bool) {
	w := int64(window)
	if w == 0 {
		w = 1
	}
	bottom := new(big.Int).SetUint64(top)
	bottom.Sub(bottom, big.NewInt(w-1))
	off := new(big.Int).Sub(big.NewInt(int64(seqLow)), bottom)
	off.Mod(off, two32) // Euclidean: 0 <= off < 2^32
	n := off.Add(off, bottom)
	if n.Sign() < 0 || n.BitLen() > 64 {
		return 0, false
	}
	return n.Uint64(), true
}

// refWindow is the reference anti-replay window.
type refWindow struct {
	size uint64
	esn  bool
	top  uint64
	seen map[uint64]bool
}

func newRefWindow(size int, esn bool, initial uint64) *refWindow {
	return &refWindow{size: uint64(size), esn: esn, top: initial, seen: map[uint64]bool{}}
}

// verdict is RFC 4303 §3.4.3 on a full number.
func (r *refWindow) verdict(n uint64) error {
	if n == 0 {
		return ErrZero
	}
	if r.size == 0 || n > r.top {
		return nil
	}
	// n <= top: it is in the window when top-size < n, i.e. n+size > top.
	inWindow := new(big.Int).Add(new(big.Int).SetUint64(n), new(big.Int).SetUint64(r.size)).Cmp(new(big.Int).SetUint64(r.top)) > 0
	if !inWindow {
		return ErrTooOld
	}
	if r.seen[n] {
		return ErrReplay
	}
	return nil
}

func (r *refWindow) Check(seqLow uint32) (uint64, error) {
	n := uint64(seqLow)
	if r.esn {
		var ok bool
		if n, ok = refInfer(r.top, uint32(r.size), seqLow); !ok {
			return 0, ErrTooOld
		}
	}
	return n, r.verdict(n)
}

// errRefNot32 stands for "any error that is not one of the sentinels".
var errRefNot32 = errors.New("reference: not 32 bits")

func (r *refWindow) Accept(n uint64) (bool, error) {
	if !r.esn && n > 1<<32-1 {
		return false, errRefNot32
	}
	if err := r.verdict(n); err != nil {
		return false, err
	}
	adv := false
	if n > r.top {
		adv = n>>32 > r.top>>32
		r.top = n
	}
	if r.size == 0 {
		return adv, nil // nothing to remember
	}
	r.seen[n] = true
	if len(r.seen) > 4*int(r.size)+4096 {
		r.prune()
	}
	return adv, nil
}

// prune forgets numbers that are too old to matter any more.
func (r *refWindow) prune() {
	for n := range r.seen {
		if r.verdict(n) == ErrTooOld {
			delete(r.seen, n)
		}
	}
}

func (r *refWindow) SetHigh(hi uint32) error {
	if !r.esn {
		return ErrNotESN
	}
	if hi < uint32(r.top>>32) {
		return ErrWindowBackwards
	}
	if uint32(r.top>>32) != hi {
		r.top = uint64(hi)<<32 | r.top&0xFFFFFFFF
		r.seen = map[uint64]bool{}
	}
	return nil
}

// sameErr reports whether got and want are the same verdict: identical
// sentinels, or both errors that are not sentinels (errNot32 and its
// reference stand-in).
func sameErr(got, want error) bool {
	if got == want {
		return true
	}
	return errors.Is(got, errNot32) && errors.Is(want, errRefNot32)
}
