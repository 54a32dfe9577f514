package ipfrag

import (
	"errors"
	"fmt"
	"testing"
)

// ipv6Layouts are extension header chains, with the length of their
// unfragmentable part and where its last next header field is, worked out
// by hand from RFC 8200 §4.5.
var ipv6Layouts = []struct {
	name           string
	exts           []ext
	unfrag, nextAt int
}{
	{"none", nil, 40, 6},
	{"hop-by-hop", []ext{{0, 8}}, 48, 40},
	{"hop-by-hop, routing", []ext{{0, 16}, {43, 24}}, 80, 56},
	{"destination before routing", []ext{{0, 8}, {60, 8}, {43, 24}, {60, 16}}, 80, 56},
	{"destination only", []ext{{60, 8}}, 40, 6},
	{"routing, destination", []ext{{43, 24}, {60, 8}}, 64, 40},
	{"hop-by-hop, AH, routing", []ext{{0, 8}, {51, 24}, {43, 24}}, 48, 40},
	{"large hop-by-hop", []ext{{0, 1024}}, 1064, 40},
}

// TestFragmentIPv6 fragments packets of many sizes and header chains at
// many MTUs, and checks the fragments by reassembling them.
func TestFragmentIPv6(t *testing.T) {
	for _, l := range ipv6Layouts {
		for _, proto := range []byte{17, 50, 59} {
			for _, size := range []int{1, 8, 9, 1000, 1232, 1240, 1241, 1500, 4000, 9000, 65535 - 40 - 1100} {
				for _, mtu := range []int{100, 1280, 1500, 1501, 9000} {
					pkt := ipv6Packet(l.exts, proto, pattern(size, byte(size)))
					name := fmt.Sprintf("%s/%d/%d/mtu%d", l.name, proto, len(pkt), mtu)
					if u, at, ok := refUnfrag(pkt); !ok || u != l.unfrag || at != l.nextAt {
						t.Fatalf("%s: the test's own walk finds %d, %d, %v: the table is wrong", name, u, at, ok)
					}
					need := ScratchSizeIPv6(len(pkt), mtu, l.unfrag)
					if got := ScratchSizeIPv6Packet(pkt, mtu); got != need {
						t.Fatalf("%s: ScratchSizeIPv6Packet %d, ScratchSizeIPv6 with the unfragmentable part %d", name, got, need)
					}
					scratch := make([]byte, need)
					frags, err := FragmentIPv6(pkt, mtu, 0xdeadbeef, scratch, nil)
					if len(pkt) <= mtu {
						if err != nil || len(frags) != 1 || &frags[0][0] != &pkt[0] || len(frags[0]) != len(pkt) {
							t.Fatalf("%s: a packet that fits was not returned as it is: %v", name, err)
						}
						continue
					}
					// The first fragment must hold the header chain: the
					// headers after the unfragmentable part, and UDP's or
					// ESP's 8 bytes.
					chain := len(pkt) - size - l.unfrag
					if proto != 59 {
						chain += 8
					}
					if mtu < l.unfrag+16 || chain > (mtu-l.unfrag-8)&^7 {
						if !errors.Is(err, ErrMTU) {
							t.Fatalf("%s: %v, want ErrMTU", name, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if err := checkFragments6(pkt, mtu, 0xdeadbeef, l.unfrag, l.nextAt, frags); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
			}
		}
	}
}

// TestFragmentIPv6Errors: the refusals, and out left as it was.
func TestFragmentIPv6Errors(t *testing.T) {
	good := func() []byte { return ipv6Packet([]ext{{0, 8}}, 17, pattern(3000, 2)) }
	cases := []struct {
		name    string
		pkt     func() []byte
		mtu     int
		scratch int // -1: enough
		want    error
	}{
		{"short", func() []byte { return good()[:39] }, 1280, -1, ErrMalformed},
		{"version 4", func() []byte { p := good(); p[0] = 0x40; return p }, 1280, -1, ErrMalformed},
		{"payload length short", func() []byte { p := good(); p[5]--; return p }, 1280, -1, ErrMalformed},
		{"jumbogram", func() []byte { p := good(); p[4], p[5] = 0, 0; return p }, 1280, -1, ErrMalformed},
		{"extension header beyond the packet", func() []byte {
			p := ipv6Packet([]ext{{0, 8}, {60, 8}}, 17, nil)
			p[49] = 200
			return append(p, make([]byte, 2000)...)
		}, 1280, -1, ErrMalformed},
		{"extension header cut", func() []byte {
			p := ipv6Packet(nil, 60, nil)
			p = append(p, make([]byte, 1)...)
			p[5] = 1
			return p
		}, 40, -1, ErrMalformed},
		{"already a fragment", func() []byte {
			p := ipv6Packet([]ext{{0, 8}, {44, 8}}, 17, pattern(3000, 2))
			return p
		}, 1280, -1, ErrFragmented},
		{"fragment header after destination options", func() []byte {
			return ipv6Packet([]ext{{60, 8}, {44, 8}}, 17, pattern(3000, 2))
		}, 1280, -1, ErrFragmented},
		{"mtu below headers+16", good, 48 + 15, -1, ErrMTU},
		{"mtu at headers+16", good, 48 + 16, -1, nil},
		{"header chain beyond the first fragment", func() []byte {
			return ipv6Packet([]ext{{60, 1280}}, 17, pattern(3000, 2))
		}, 1280, -1, ErrMTU},
		{"UDP header beyond the first fragment", func() []byte {
			return ipv6Packet([]ext{{60, 8}}, 17, pattern(3000, 2))
		}, 40 + 8 + 8, -1, ErrMTU},
		{"UDP header in the first fragment", func() []byte {
			return ipv6Packet([]ext{{60, 8}}, 17, pattern(3000, 2))
		}, 40 + 8 + 16, -1, nil},
		{"scratch one byte short", good, 1280, 3000 + 3*56 - 1, ErrScratch},
		{"scratch exact", good, 1280, 3000 + 3*56, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkt := c.pkt()
			n := c.scratch
			if n < 0 {
				n = 1 << 17
			}
			out := [][]byte{{1}}
			out, err := FragmentIPv6(pkt, c.mtu, 1, make([]byte, n), out)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil && len(out) != 1 {
				t.Fatalf("out changed on an error: %d elements", len(out))
			}
		})
	}
}

// TestScratchSizeIPv6 checks that ScratchSizeIPv6 is enough for every
// packet it bounds, and 0 where none is needed.
func TestScratchSizeIPv6(t *testing.T) {
	for _, l := range ipv6Layouts[:3] {
		for size := 1; size < 3000; size += 41 {
			pkt := ipv6Packet(l.exts, 59, pattern(size, 0))
			for mtu := l.unfrag + 16; mtu < len(pkt)+10; mtu += 5 {
				for _, bound := range []int{l.unfrag, 200} {
					n := ScratchSizeIPv6(len(pkt), mtu, bound)
					if len(pkt) <= mtu {
						if n != 0 {
							t.Fatalf("%d-byte packet fits in %d, scratch %d", len(pkt), mtu, n)
						}
						continue
					}
					if mtu < bound+16 {
						continue
					}
					if _, err := FragmentIPv6(pkt, mtu, 0, make([]byte, n), nil); err != nil {
						t.Fatalf("%s: %d-byte packet, mtu %d: scratch %d for %d: %v", l.name, len(pkt), mtu, n, bound, err)
					}
				}
			}
		}
	}
	if n := ScratchSizeIPv6(2000, 55, 40); n != 0 {
		t.Errorf("no fragment fits, yet scratch %d", n)
	}
}
