package ipfrag

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var optionSets = []struct {
	name string
	opts []opt
}{
	{"none", nil},
	{"copied", []opt{optRA}},
	{"not copied", []opt{optRR}},
	{"mixed", []opt{nop, optRR, optRA, optTS, optSec}},     // 60 bytes: the largest header
	{"copied after not copied", []opt{optTS, nop, optSec}}, // later fragments: 32 bytes
	{"end of list", []opt{optRA, {0, nil}}},
}

// arrival orders of n fragments.
var orders = []struct {
	name  string
	order func(n int) []int
}{
	{"in order", func(n int) []int { return seq(n) }},
	{"reversed", func(n int) []int { s := seq(n); slices.Reverse(s); return s }},
	{"last first", func(n int) []int { return append([]int{n - 1}, seq(n-1)...) }},
	{"shuffled", func(n int) []int {
		s := seq(n)
		rand.New(rand.NewPCG(uint64(n), 7)).Shuffle(n, func(i, j int) { s[i], s[j] = s[j], s[i] })
		return s
	}},
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestFragmentIPv4RoundTrip fragments packets of many sizes, with and
// without options, at many MTUs, checks the fragments, and reassembles
// them in several orders into the packet.
func TestFragmentIPv4RoundTrip(t *testing.T) {
	r := NewReassembler(Config{Headroom: 24, Tailroom: 30})
	now := time.Unix(1000, 0)
	for _, os := range optionSets {
		for _, size := range []int{1, 7, 8, 9, 100, 1472, 1480, 1481, 2000, 8000, 9000, 65515 - 40} {
			for _, mtu := range []int{68, 100, 576, 1280, 1500, 9000} {
				pkt := ipv4Packet(os.opts, 17, uint16(size), pattern(size, byte(mtu)))
				if len(pkt) > 65535 {
					continue
				}
				if mtu < 68 || (mtu < int(pkt[0]&15)*4+8) {
					continue
				}
				name := fmt.Sprintf("%s/%d/mtu%d", os.name, len(pkt), mtu)
				scratch := make([]byte, ScratchSizeIPv4(len(pkt), mtu, 60))
				frags, err := FragmentIPv4(pkt, mtu, scratch, nil)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(pkt) <= mtu {
					if len(frags) != 1 || &frags[0][0] != &pkt[0] || len(frags[0]) != len(pkt) {
						t.Fatalf("%s: a packet that fits was not returned as it is", name)
					}
					continue
				}
				if err := checkFragments4(pkt, mtu, frags); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				reassembleInOrders(t, r, name, frags, pkt, now)
			}
		}
	}
}

// TestFragmentIPv4Fits: a packet that fits is returned as it is, even
// with DF set, and without scratch.
func TestFragmentIPv4Fits(t *testing.T) {
	pkt := ipv4Packet([]opt{optRA}, 6, 1, pattern(100, 1))
	pkt[6] = 0x40
	fixChecksum4(pkt)
	out := [][]byte{{1}}
	out, err := FragmentIPv4(pkt, len(pkt), nil, out)
	if err != nil || len(out) != 2 || &out[1][0] != &pkt[0] || len(out[1]) != len(pkt) {
		t.Fatalf("got %d fragments, %v", len(out), err)
	}
}

// TestFragmentIPv4Errors: the refusals, and out left as it was.
func TestFragmentIPv4Errors(t *testing.T) {
	good := func() []byte { return ipv4Packet([]opt{optRA}, 17, 9, pattern(3000, 2)) }
	cases := []struct {
		name    string
		pkt     func() []byte
		mtu     int
		scratch int // -1: enough
		want    error
	}{
		{"short", func() []byte { return good()[:19] }, 576, -1, ErrMalformed},
		{"version 6", func() []byte { p := good(); p[0] = 0x66; return p }, 576, -1, ErrMalformed},
		{"header length 16", func() []byte { p := good(); p[0] = 0x44; return p }, 576, -1, ErrMalformed},
		{"header beyond the packet", func() []byte { p := good()[:24]; p[0] = 0x4f; p[2], p[3] = 0, 24; return p }, 20, -1, ErrMalformed},
		{"total length short", func() []byte { p := good(); p[3]--; return p }, 576, -1, ErrMalformed},
		{"total length long", func() []byte { return good()[:2000] }, 576, -1, ErrMalformed},
		{"DF", func() []byte { p := good(); p[6] |= 0x40; return p }, 576, -1, ErrDontFragment},
		{"mtu below header+8", good, 24 + 7, -1, ErrMTU},
		{"option length 1", func() []byte {
			p := ipv4Packet([]opt{optRA}, 17, 9, pattern(3000, 2))
			p[21] = 1
			return p
		}, 576, -1, ErrMalformed},
		{"option beyond the header", func() []byte {
			p := ipv4Packet([]opt{optRA}, 17, 9, pattern(3000, 2))
			p[21] = 5
			return p
		}, 576, -1, ErrMalformed},
		{"option length missing", func() []byte {
			p := ipv4Packet([]opt{nop, nop, nop, nop}, 17, 9, pattern(3000, 2))
			p[23] = 0x83 // a copied option's type, and no room for its length
			return p
		}, 576, -1, ErrMalformed},
		{"fragment ending beyond 65535", func() []byte {
			p := good()
			setFrag4(p, 65520-3000, false)
			return p
		}, 576, -1, ErrMalformed},
		{"scratch one byte short", good, 576, 3000 + 24 + 5*24 - 1, ErrScratch},
		{"scratch exact", good, 576, 3000 + 24 + 5*24, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkt := c.pkt()
			n := c.scratch
			if n < 0 {
				n = 1 << 17
			}
			out := [][]byte{{1}}
			out, err := FragmentIPv4(pkt, c.mtu, make([]byte, n), out)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil && len(out) != 1 {
				t.Fatalf("out changed on an error: %d elements", len(out))
			}
		})
	}
}

// TestFragmentIPv4OfFragment fragments fragments: their offsets continue
// from the fragment's own, the last keeps its MF bit, and the pieces of
// all the fragments reassemble into the datagram.
func TestFragmentIPv4OfFragment(t *testing.T) {
	for _, os := range optionSets {
		pkt := ipv4Packet(os.opts, 17, 77, pattern(5000, 9))
		frags, err := FragmentIPv4(pkt, 1500, make([]byte, ScratchSizeIPv4(len(pkt), 1500, 60)), nil)
		if err != nil {
			t.Fatal(err)
		}
		var pieces [][]byte
		for i, f := range frags {
			sub, err := FragmentIPv4(f, 300, make([]byte, ScratchSizeIPv4(len(f), 300, 60)), nil)
			if err != nil {
				t.Fatalf("%s: fragment %d: %v", os.name, i, err)
			}
			if err := checkFragments4(f, 300, sub); err != nil {
				t.Fatalf("%s: fragment %d: %v", os.name, i, err)
			}
			pieces = append(pieces, sub...)
		}
		r := NewReassembler(Config{})
		rand.New(rand.NewPCG(1, 2)).Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		for i, p := range pieces {
			d, res, _ := r.Add(p, time.Unix(0, 0))
			if i < len(pieces)-1 && res != Held || i == len(pieces)-1 && (res != Complete || !bytes.Equal(d.Packet(), pkt)) {
				t.Fatalf("%s: piece %d of %d: %v", os.name, i, len(pieces), res)
			}
		}
	}
}

// TestScratchSizeIPv4 checks that ScratchSizeIPv4 is enough for every
// packet it bounds, exactly enough or not, and 0 where none is needed.
func TestScratchSizeIPv4(t *testing.T) {
	opts := map[int][][]opt{
		20: {nil},
		24: {{optRA}, {nop, nop, nop, nop}},
		32: {{optRR, nop}, {optSec, nop}},
		60: {{nop, optRR, optRA, optTS, optSec}, {optTS, optTS, optSec, nop, nop, nop}},
	}
	for hl, sets := range opts {
		for _, o := range sets {
			if len(encodeOpts(o, false)) != hl-20 {
				t.Fatalf("test options for %d bytes are %d", hl, len(encodeOpts(o, false)))
			}
			for size := 1; size < 3000; size += 37 {
				pkt := ipv4Packet(o, 17, 1, pattern(size, 0))
				for mtu := hl + 8; mtu < len(pkt)+10; mtu += 3 {
					for _, bound := range []int{hl, 60} {
						n := ScratchSizeIPv4(len(pkt), mtu, bound)
						if len(pkt) <= mtu {
							if n != 0 {
								t.Fatalf("%d-byte packet fits in %d, scratch %d", len(pkt), mtu, n)
							}
							continue
						}
						if bound == 60 && mtu < 68 {
							continue
						}
						if _, err := FragmentIPv4(pkt, mtu, make([]byte, n), nil); err != nil {
							t.Fatalf("%d-byte packet, header %d, mtu %d: scratch %d for header %d: %v", len(pkt), hl, mtu, n, bound, err)
						}
					}
				}
			}
		}
	}
	if n := ScratchSizeIPv4(100, 27, 20); n != 0 {
		t.Errorf("no fragment fits, yet scratch %d", n)
	}
}

// reassembleInOrders gives r the fragments of pkt in each of orders (r was
// made with Headroom 24 and Tailroom 30): each order completes pkt on its
// last fragment, in a buffer with that room, and leaves r empty. It
// returns how many datagrams it completed.
func reassembleInOrders(t *testing.T, r *Reassembler, name string, frags [][]byte, pkt []byte, now time.Time) int {
	t.Helper()
	done := 0
	for _, o := range orders {
		order := o.order(len(frags))
		for i, k := range order {
			d, res, n := r.Add(frags[k], now)
			want := Held
			if i == len(order)-1 {
				want = Complete
			}
			if res != want || n != 0 {
				t.Fatalf("%s %s: fragment %d: %v, %d dropped; want %v", name, o.name, k, res, n, want)
			}
			if res == Complete {
				if !bytes.Equal(d.Packet(), pkt) {
					t.Fatalf("%s %s: reassembled packet differs", name, o.name)
				}
				if d.Start < 24 || cap(d.Buf)-d.End < 30 {
					t.Fatalf("%s %s: headroom %d, tailroom %d", name, o.name, d.Start, cap(d.Buf)-d.End)
				}
				r.Release(d)
				done++
			}
		}
		if r.Len() != 0 || r.Bytes() != 0 {
			t.Fatalf("%s %s: %d datagrams, %d bytes left", name, o.name, r.Len(), r.Bytes())
		}
	}
	return done
}
