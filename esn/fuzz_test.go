package esn

import (
	"encoding/binary"
	"testing"
)

var fuzzSizes = []int{0, 32, 33, 64, 65, 100, 127, 128, 1024, 4096, 65536}

// FuzzWindow interprets the input as a window configuration and a list of
// operations, runs them on Window and on the reference model, and demands
// identical results (see harness). Input layout: byte 0 picks the size,
// byte 1 bit 0 ESN, bytes 2..9 the initial top; then 5-byte operations:
// an opcode and a 32-bit argument.
func FuzzWindow(f *testing.F) {
	op := func(code byte, arg uint32) []byte {
		return binary.LittleEndian.AppendUint32([]byte{code}, arg)
	}
	seed := func(size, esn byte, initial uint64, ops ...[]byte) []byte {
		b := binary.LittleEndian.AppendUint64([]byte{size, esn}, initial)
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	f.Add(seed(3, 0, 0, op(0, 1), op(0, 1), op(0, 0), op(0, 0xFFFF_FFC0), op(2, 77)))
	f.Add(seed(5, 1, 1<<32-20, op(0, 10), op(0, 30), op(0, 0xFFFF_0000), op(1, 5), op(3, 0xFFFF_FFF0), op(4, 1)))
	f.Add(seed(10, 1, 0, op(2, 0xFFFF_FFFF), op(2, 0), op(2, 1), op(0, 100)))
	f.Add(seed(1, 1, 1<<64-1<<32+10, op(0, 0x8000_0000), op(2, 5), op(4, 0xFF)))
	f.Add(seed(0, 0, 0, op(0, 1), op(0, 1), op(3, 0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 10 {
			return
		}
		size := fuzzSizes[int(data[0])%len(fuzzSizes)]
		esn := data[1]&1 == 1
		initial := binary.LittleEndian.Uint64(data[2:10])
		if !esn {
			initial &= 0xFFFF_FFFF
		}
		w, err := NewWindow(size, esn, initial)
		if esn && size == 0 {
			if err == nil {
				t.Fatal("NewWindow accepted an ESN window of size 0")
			}
			return
		}
		if err != nil {
			t.Fatalf("NewWindow(%d, %v, %#x): %v", size, esn, initial, err)
		}
		h := &harness{t: t, w: w, ref: newRefWindow(size, esn, initial)}
		data = data[10:]
		for len(data) >= 5 && h.step < 4000 {
			code, arg := data[0], binary.LittleEndian.Uint32(data[1:5])
			data = data[5:]
			// Most operations use a number near the top, where the
			// interesting cases are.
			near := h.ref.top + uint64(int64(int16(arg))) // top ± 32K
			switch code % 6 {
			case 0: // Check, then Accept if it passed
				if seq, err := h.check(uint32(near)); err == nil {
					h.accept(seq)
				}
			case 1: // Check only (failed integrity check)
				h.check(uint32(near))
			case 2: // arbitrary low bits
				if seq, err := h.check(arg); err == nil {
					h.accept(seq)
				}
			case 3: // Accept of a full number without Check
				h.accept(near)
			case 4: // UPDATE_SA
				h.setHigh(uint32(h.ref.top>>32) + uint32(int8(arg)))
			case 5: // run of in-order numbers
				for k := range uint64(arg%200 + 1) {
					if seq, err := h.check(uint32(h.ref.top + 1 + k%3)); err == nil {
						h.accept(seq)
					}
				}
			}
		}
	})
}
