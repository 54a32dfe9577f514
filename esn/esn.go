// Package esn holds the sequence-number state of an IPsec SA: the outbound
// 64-bit counter that never wraps, the inbound Extended Sequence Number
// inference of RFC 4303 Appendix A.2, and the anti-replay window of
// RFC 4303 §3.4.3 kept as an RFC 6479 bitmap.
//
// The types are small, have no dependencies beyond the standard library and
// are safe for concurrent use: the data path calls them from several cores.
package esn

import "errors"

// Errors returned by the counters and windows. They are sentinel values so
// that the data path can compare and count them without allocating.
var (
	// ErrExhausted: the outbound counter has used its last number.
	ErrExhausted = errors.New("sequence numbers exhausted: the SA must be replaced")
	// ErrReplay: the number was already received.
	ErrReplay = errors.New("replayed sequence number")
	// ErrTooOld: the number lies to the left of the window.
	ErrTooOld = errors.New("sequence number left of the replay window")
	// ErrZero: sequence number 0 is never sent (with ESN: the 64-bit
	// number 0; low bits 0 with non-zero high bits are valid).
	ErrZero = errors.New("sequence number 0 is invalid")
	// ErrBackwards: UPDATE_SA would move an outbound counter backwards.
	ErrBackwards = errors.New("outbound sequence numbers never go backwards")
	// ErrWindowBackwards: UPDATE_SA would move a replay window's high-order
	// bits down, which would let numbers it already passed in again.
	ErrWindowBackwards = errors.New("the replay window never moves back: numbers already received would be accepted again")
	// ErrNotESN: SetHigh was called on a counter or window of an SA that
	// does not use Extended Sequence Numbers.
	ErrNotESN = errors.New("the SA does not use extended sequence numbers: it has no high-order bits to set")
)

// Limits on the anti-replay window size, in packets.
const (
	MinWindow = 32
	MaxWindow = 65536
)

// LastSeq returns the last usable outbound sequence number: 2^32-1 without
// ESN, 2^64-1 with ESN.
func LastSeq(esn bool) uint64 {
	if esn {
		return ^uint64(0)
	}
	return 1<<32 - 1
}

// WarnFrom returns the first sequence number that is within warnAt of the
// last usable one, LastSeq(esn)-warnAt, or 0 when warnAt reaches back to
// the start: from there an SA asks to be replaced.
func WarnFrom(esn bool, warnAt uint64) uint64 {
	if last := LastSeq(esn); warnAt < last {
		return last - warnAt
	}
	return 0
}
