package esn

// Infer returns the full 64-bit sequence number for the received low 32
// bits seqLow, given the highest number received so far (top) and the
// window size, per RFC 4303 Appendix A.2: the result is the number with low
// bits seqLow in [top-window+1, top-window+1+2^32). A window of 0 is treated
// as 1.
//
// When that number does not exist, Infer returns 0, which is never a valid
// sequence number: this happens when the high-order bits of top are 0 and
// the RFC would take them minus one (the number would be negative, that is
// older than the first one), or when they are 2^32-1 and the RFC would take
// them plus one (the number would exceed 2^64-1). Window.Check reports both
// cases as ErrTooOld.
func Infer(top uint64, window uint32, seqLow uint32) uint64 {
	seq, ok := infer(top, window, seqLow)
	if !ok {
		return 0
	}
	return seq
}

// infer is Infer with an explicit ok, false when no 64-bit number fits.
func infer(top uint64, window uint32, seqLow uint32) (seq uint64, ok bool) {
	if window == 0 {
		window = 1
	}
	th, tl := uint32(top>>32), uint32(top)
	bl := tl - window + 1 // bottom of the window, modulo 2^32
	hi := th
	if tl >= window-1 {
		// Case A: the window lies within one 2^32 subspace.
		if seqLow < bl {
			if th == ^uint32(0) {
				return 0, false
			}
			hi = th + 1
		}
	} else {
		// Case B: the window spans two subspaces.
		if seqLow >= bl {
			if th == 0 {
				return 0, false
			}
			hi = th - 1
		}
	}
	return uint64(hi)<<32 | uint64(seqLow), true
}
