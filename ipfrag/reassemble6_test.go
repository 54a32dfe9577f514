package ipfrag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"
)

// reassembly6Layouts are extension header chains of IPv6 packets that a
// Reassembler rebuilds from FragmentIPv6's fragments: none to three
// headers in the unfragmentable part, headers in the fragmentable part
// that the first fragment must hold, and the longest unfragmentable part
// a Reassembler takes (296 bytes).
var reassembly6Layouts = []struct {
	name string
	exts []ext
}{
	{"none", nil},
	{"hop-by-hop", []ext{{0, 8}}},
	{"hop-by-hop, routing", []ext{{0, 16}, {43, 24}}},
	{"hop-by-hop, destination, routing", []ext{{0, 8}, {60, 8}, {43, 24}}},
	{"destination after the fragment header", []ext{{60, 16}}},
	{"routing, then destination and AH", []ext{{43, 24}, {60, 8}, {51, 24}}},
	{"longest unfragmentable part", []ext{{0, 256}}},
}

// TestReassembleIPv6RoundTrip fragments IPv6 packets of many sizes,
// upper-layer protocols and header chains at many MTUs with FragmentIPv6,
// and reassembles them in several orders into the packet.
func TestReassembleIPv6RoundTrip(t *testing.T) {
	r := NewReassembler(Config{Headroom: 24, Tailroom: 30})
	now := time.Unix(1000, 0)
	datagrams := 0
	for _, l := range reassembly6Layouts {
		unfrag, _, _ := refUnfrag(ipv6Packet(l.exts, 59, nil))
		if unfrag > 296 {
			t.Fatalf("%s: a %d-byte unfragmentable part", l.name, unfrag)
		}
		for _, proto := range []byte{17, 6, 58, 50, 59, 253} {
			for _, size := range []int{1, 8, 9, 100, 1232, 1240, 1241, 1500, 8000, 65535 - 400} {
				for _, mtu := range []int{200, 1280, 1500, 9000} {
					pkt := ipv6Packet(l.exts, proto, pattern(size, byte(mtu)))
					name := fmt.Sprintf("%s/%d/%d/mtu%d", l.name, proto, len(pkt), mtu)
					frags, err := FragmentIPv6(pkt, mtu, uint32(size)<<16|uint32(mtu), make([]byte, ScratchSizeIPv6(len(pkt), mtu, unfrag)), nil)
					if errors.Is(err, ErrMTU) || len(pkt) <= mtu {
						continue
					}
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					datagrams += reassembleInOrders(t, r, name, frags, pkt, now)
				}
			}
		}
	}
	t.Logf("%d datagrams", datagrams)
	if datagrams < 1000 {
		t.Errorf("only %d datagrams reassembled", datagrams)
	}
}

// TestReassembleIPv6UnfragLimit: fragments whose unfragmentable part is
// longer than 296 bytes are refused, each by itself.
func TestReassembleIPv6UnfragLimit(t *testing.T) {
	if ipv6MaxUnfrag != 296 || maxHeader != 296 {
		t.Fatalf("the documentation says 296 bytes, the code %d and %d", ipv6MaxUnfrag, maxHeader)
	}
	pkt := ipv6Packet([]ext{{0, 256}, {43, 8}}, 17, pattern(3000, 1))
	frags, err := FragmentIPv6(pkt, 1280, 9, make([]byte, ScratchSizeIPv6(len(pkt), 1280, 304)), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReassembler(Config{})
	r.Add(frag6(nil, 17, 1, pattern(16, 0), 8, true), t0)
	for i, f := range frags {
		if !IsFragment(f) {
			t.Fatalf("fragment %d is not a fragment", i)
		}
		if _, res, n := r.Add(f, t0); res != Invalid || n != 0 || r.Len() != 1 {
			t.Fatalf("fragment %d of a 304-byte unfragmentable part: %v, %d dropped, %d held", i, res, n, r.Len())
		}
	}
}

// TestReassembleIPv6Malformed: malformed IPv6 fragments, and first
// fragments without the whole header chain (RFC 7112), are Invalid by
// themselves, leaving the datagram held alone; their like with what is
// missing are taken.
func TestReassembleIPv6Malformed(t *testing.T) {
	whole := pattern(65536+8, 4)
	good := func() []byte { return frag6([]ext{{0, 8}}, 17, 1, whole[8:24], 8, true) }
	// first builds a first fragment of datagram 3 whose data, n bytes, start
	// with the given headers after the Fragment header: each a type (its
	// next header comes from the one after it) and a length.
	first := func(next byte, n int, chain ...ext) []byte {
		data := bytes.Clone(whole[:n])
		off := 0
		for i, e := range chain {
			nh := next
			if i+1 < len(chain) {
				nh = chain[i+1].typ
			}
			if off+2 <= n {
				data[off] = nh
				if e.typ == 51 {
					data[off+1] = byte(e.len/4 - 2)
				} else {
					data[off+1] = byte(e.len/8 - 1)
				}
			}
			off += e.len
		}
		if len(chain) > 0 {
			return frag6(nil, chain[0].typ, 3, data, 0, true)
		}
		return frag6(nil, next, 3, data, 0, true)
	}
	cases := []struct {
		name string
		pkt  []byte
		want Result // Invalid, or Held for what is taken
	}{
		{"empty", nil, Invalid},
		{"short", good()[:39], Invalid},
		{"version 5", func() []byte { p := good(); p[0] = 0x5a; return p }(), Invalid},
		{"payload length 0 (jumbogram)", func() []byte { p := good(); p[4], p[5] = 0, 0; return p }(), Invalid},
		{"payload length beyond the packet", good()[:len(good())-1], Invalid},
		{"payload length cutting the Fragment header", func() []byte {
			p := good()
			binary.BigEndian.PutUint16(p[4:], 8+4)
			return p
		}(), Invalid},
		{"Hop-by-Hop header beyond the payload", func() []byte { p := good(); p[41] = 200; return p }(), Invalid},
		{"not a fragment", ipv6Packet([]ext{{0, 8}}, 17, whole[:100]), Invalid},
		{"Fragment header after AH", frag6([]ext{{51, 24}}, 17, 1, whole[8:24], 8, true), Invalid},
		{"Fragment header after ESP", func() []byte { p := good(); p[40] = 50; return p }(), Invalid},
		{"atomic fragment", frag6(nil, 17, 1, whole[:100], 0, false), Invalid},
		{"no data", frag6(nil, 17, 1, nil, 8, true), Invalid},
		{"no data, last", frag6(nil, 17, 1, nil, 8, false), Invalid},
		{"M, 12 bytes", frag6(nil, 17, 1, whole[8:20], 8, true), Invalid},
		{"ends beyond 65535", frag6(nil, 17, 1, whole[:8], 65528, false), Invalid},
		{"304-byte unfragmentable part", frag6([]ext{{0, 264}}, 17, 1, whole[8:24], 8, true), Invalid},
		{"296-byte unfragmentable part", frag6([]ext{{0, 128}, {60, 64}, {43, 64}}, 17, 3, whole[8:24], 8, true), Held},
		{"first, UDP", first(17, 8), Held},
		{"first, TCP header cut", first(6, 16), Invalid},
		{"first, TCP header whole", first(6, 24), Held},
		{"first, ICMPv6", first(58, 8), Held},
		{"first, ESP", first(50, 8), Held},
		{"first, No Next Header", first(59, 8), Held},
		{"first, unknown protocol", first(253, 8), Held},
		{"first, destination options cut", first(17, 16, ext{60, 24}), Invalid},
		{"first, destination options, UDP header cut", first(17, 24, ext{60, 24}), Invalid},
		{"first, destination options, UDP", first(17, 32, ext{60, 24}), Held},
		{"first, routing, AH, TCP cut", first(6, 48, ext{43, 16}, ext{51, 16}), Invalid},
		{"first, routing, AH, TCP", first(6, 56, ext{43, 16}, ext{51, 16}), Held},
		{"first, hop-by-hop after the Fragment header", first(59, 8, ext{0, 8}), Held},
		{"first, another Fragment header", first(17, 32, ext{44, 8}), Invalid},
		{"later fragment, TCP header cut", frag6(nil, 6, 3, whole[8:16], 8, true), Held},
		{"duplicate, other data", frag6([]ext{{0, 8}}, 17, 1, whole[40:48], 40, true), Invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReassembler(Config{})
			held := frag6([]ext{{0, 8}}, 17, 1, whole[40:48], 40, true)
			held[len(held)-1]++ // see "duplicate, other data": it drops the datagram
			if _, res, _ := r.Add(held, t0); res != Held {
				t.Fatal(res)
			}
			wantHeld, wantDropped := 1, 0
			switch {
			case c.want == Held:
				wantHeld = 2 // datagram 3
			case c.name == "duplicate, other data":
				wantHeld, wantDropped = 0, 1
			}
			if _, res, n := r.Add(c.pkt, t0); res != c.want || n != wantDropped || r.Len() != wantHeld {
				t.Errorf("%v, %d dropped, %d held; want %v, %d, %d", res, n, r.Len(), c.want, wantDropped, wantHeld)
			}
		})
	}
	// Bytes after the payload length are no part of the fragment.
	r := NewReassembler(Config{})
	r.Add(append(frag6(nil, 17, 1, whole[:8], 0, true), 1, 2, 3), t0)
	d, res, _ := r.Add(append(frag6(nil, 17, 1, whole[8:11], 8, false), 4, 5, 6), t0)
	if res != Complete || !bytes.Equal(d.Packet()[40:], whole[:11]) || binary.BigEndian.Uint16(d.Packet()[4:]) != 11 {
		t.Errorf("with trailing bytes: %v, % x", res, d.Packet())
	}
}

// TestReassembleIPv6TooLong: an IPv6 datagram whose payload (the
// unfragmentable part's extension headers and the fragmentable part)
// would be longer than 65535 bytes is dropped, whichever fragment comes
// last; without extension headers 65535 bytes of fragmentable part are
// fine.
func TestReassembleIPv6TooLong(t *testing.T) {
	whole := pattern(65535, 4)
	for _, firstFirst := range []bool{false, true} {
		r := NewReassembler(Config{})
		ps := [][]byte{frag6(nil, 17, 1, whole[65528:], 65528, false), frag6([]ext{{0, 8}}, 17, 1, whole[:8], 0, true)}
		if firstFirst {
			ps[0], ps[1] = ps[1], ps[0]
		}
		if _, res, _ := r.Add(ps[0], t0); res != Held {
			t.Fatal(res)
		}
		if _, res, n := r.Add(ps[1], t0); res != Invalid || n != 1 || r.Len() != 0 || r.Bytes() != 0 {
			t.Errorf("first first %v: %v, %d dropped, %d held", firstFirst, res, n, r.Len())
		}
	}
	// The largest datagram without extension headers.
	r := NewReassembler(Config{Headroom: 10, Tailroom: 10})
	r.Add(frag6(nil, 17, 1, whole[32768:], 32768, false), t0)
	d, res, _ := r.Add(frag6(nil, 17, 1, whole[:32768], 0, true), t0)
	if res != Complete || len(d.Packet()) != 40+65535 || binary.BigEndian.Uint16(d.Packet()[4:]) != 65535 || !bytes.Equal(d.Packet()[40:], whole) {
		t.Fatalf("the largest datagram: %v, %d bytes", res, len(d.Packet()))
	}
	if d.Start < 10 || cap(d.Buf)-d.End < 10 {
		t.Errorf("room %d, %d", d.Start, cap(d.Buf)-d.End)
	}
}

// TestReassembleIPv6FirstHeader: the datagram has the unfragmentable part
// of the fragment at offset 0, whatever the others' are (RFC 8200 §4.5),
// and of the first of its duplicates to arrive; only the Next Header field
// that named the Fragment header and the payload length change.
func TestReassembleIPv6FirstHeader(t *testing.T) {
	whole := pattern(100, 5)
	first := frag6([]ext{{0, 8}, {43, 24}}, 17, 9, whole[:48], 0, true) // 72 bytes of unfragmentable part
	first[7] = 33                                                       // hop limit
	dup := bytes.Clone(first)
	dup[7]--
	middle := frag6(nil, 59, 9, whole[48:72], 48, true)
	last := frag6([]ext{{0, 16}, {60, 8}, {43, 24}}, 6, 9, whole[72:], 72, false)
	for _, order := range [][][]byte{{middle, first, dup, last}, {first, dup, last, middle}, {dup, last, first, middle}} {
		r := NewReassembler(Config{})
		var d Datagram
		var kept []byte // the first of first and dup to arrive
		for i, p := range order {
			var res Result
			d, res, _ = r.Add(p, t0)
			want := Held
			switch {
			case i == 3:
				want = Complete
			case (&p[0] == &first[0] || &p[0] == &dup[0]) && kept != nil:
				want = Duplicate
			case &p[0] == &first[0] || &p[0] == &dup[0]:
				kept = p
			}
			if res != want {
				t.Fatalf("fragment %d: %v, want %v", i, res, want)
			}
		}
		if &order[3][0] == &first[0] || &order[3][0] == &dup[0] {
			kept = order[3]
		}
		want := bytes.Clone(kept[:72])
		want[48] = 17 // the Routing header's next header, 44 in the fragments
		binary.BigEndian.PutUint16(want[4:], 32+100)
		if !bytes.Equal(d.Packet()[:72], want) || !bytes.Equal(d.Packet()[72:], whole) {
			t.Fatalf("headers\n% x\nwant\n% x", d.Packet()[:72], want)
		}
	}
}

// TestReassembleFamilies: IPv4 and IPv6 fragments whose keys have the same
// bytes (the addresses, an identification and IPv4 protocol 0) belong to
// different datagrams, and so do IPv6 fragments whose identifications
// differ in their high 16 bits only.
func TestReassembleFamilies(t *testing.T) {
	d4, d6, d6b := pattern(64, 1), pattern(64, 2), pattern(64, 3)
	v4 := func(off, n int, more bool) []byte {
		p := ipv4Packet(nil, 0, 7, d4[off:off+n])
		setFrag4(p, off, more)
		return p
	}
	v6 := func(data []byte, id uint32, off, n int, more bool) []byte {
		p := frag6(nil, 17, id, data[off:off+n], off, more)
		clear(p[8:40])
		copy(p[8:], testSrc4[:])
		copy(p[24:], testDst4[:])
		return p
	}
	var f4, f6 fragment
	if !parseFragment(v4(0, 32, true), &f4) || !parseFragment(v6(d6, 7, 0, 32, true), &f6) {
		t.Fatal("the test's fragments do not parse")
	}
	if f4.key.v6 = true; f4.key != f6.key {
		t.Fatalf("the test's keys differ in more than their family: %+v, %+v", f4.key, f6.key)
	}
	r := NewReassembler(Config{})
	for i, p := range [][]byte{v4(0, 32, true), v6(d6, 7, 0, 32, true), v6(d6b, 0x10007, 0, 32, true)} {
		if _, res, _ := r.Add(p, t0); res != Held || r.Len() != i+1 {
			t.Fatalf("fragment %d: %v, %d held", i, res, r.Len())
		}
	}
	for _, c := range []struct {
		p    []byte
		hl   int
		want []byte
	}{
		{v6(d6b, 0x10007, 32, 32, false), 40, d6b},
		{v4(32, 32, false), 20, d4},
		{v6(d6, 7, 32, 32, false), 40, d6},
	} {
		d, res, _ := r.Add(c.p, t0)
		if res != Complete || !bytes.Equal(d.Packet()[c.hl:], c.want) {
			t.Fatalf("%v, % x", res, d.Packet())
		}
		r.Release(d)
	}
	if r.Len() != 0 || r.Bytes() != 0 {
		t.Errorf("%d datagrams left", r.Len())
	}
}

// TestReassembleIPv6Limits: the two families share MaxDatagrams,
// MaxBytes, Timeout and the buffers.
func TestReassembleIPv6Limits(t *testing.T) {
	whole := pattern(10000, 1)
	r := NewReassembler(Config{MaxDatagrams: 2, Timeout: time.Second})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	r.Add(frag6(nil, 17, 1, whole[:8], 0, true), t0.Add(time.Second/2))
	if _, res, _ := r.Add(frag6(nil, 17, 2, whole[:8], 0, true), t0.Add(time.Second/2)); res != Full {
		t.Fatalf("a third datagram: %v", res)
	}
	if d, f := r.Expire(t0.Add(time.Second)); d != 1 || f != 1 || r.Len() != 1 {
		t.Fatalf("expired %d, %d; %d left", d, f, r.Len())
	}
	if d, f := r.Expire(t0.Add(3 * time.Second / 2)); d != 1 || f != 1 || r.Len() != 0 {
		t.Fatalf("expired %d, %d; %d left", d, f, r.Len())
	}

	small := 296 + 2048
	r = NewReassembler(Config{MaxBytes: 2 * small})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	r.Add(frag6(nil, 17, 1, whole[:8], 0, true), t0)
	if _, res, n := r.Add(frag6(nil, 17, 2, whole[:8], 0, true), t0); res != Full || n != 0 {
		t.Fatalf("beyond MaxBytes: %v, %d", res, n)
	}
	if _, res, n := r.Add(frag6(nil, 17, 1, whole[8:3008], 8, true), t0); res != Full || n != 1 || r.Bytes() != small {
		t.Fatalf("growing beyond MaxBytes: %v, %d dropped, %d bytes", res, n, r.Bytes())
	}

	// A buffer released by one family serves the other.
	r = NewReassembler(Config{Headroom: 7, Tailroom: 9})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	d4, _, _ := r.Add(frag4(1, whole, 8, 8, false), t0)
	r.Release(d4)
	r.Add(frag6([]ext{{0, 256}}, 17, 1, whole[:8], 0, true), t0)
	d6, res, _ := r.Add(frag6(nil, 17, 1, whole[8:16], 8, false), t0)
	if res != Complete || &d6.Buf[0] != &d4.Buf[0] || d6.Start < 7 || cap(d6.Buf)-d6.End < 9 || len(d6.Packet()) != 296+16 {
		t.Errorf("%v, the same buffer %v, room %d, %d", res, &d6.Buf[0] == &d4.Buf[0], d6.Start, cap(d6.Buf)-d6.End)
	}
}

// TestIsFragmentIPv6 checks IsFragment on IPv6 packets.
func TestIsFragmentIPv6(t *testing.T) {
	whole := pattern(100, 0)
	for _, c := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"whole packet", ipv6Packet([]ext{{0, 8}, {60, 8}}, 17, whole), false},
		{"first", frag6(nil, 17, 1, whole[:16], 0, true), true},
		{"middle", frag6(nil, 17, 1, whole[:16], 16, true), true},
		{"last", frag6(nil, 17, 1, whole[:5], 16, false), true},
		{"after hop-by-hop, destination, routing", frag6([]ext{{0, 8}, {60, 16}, {43, 24}}, 17, 1, whole[:5], 16, false), true},
		{"atomic", frag6(nil, 17, 1, whole, 0, false), false},
		{"atomic, reserved bits set", func() []byte { p := frag6(nil, 17, 1, whole, 0, false); p[43] = 6; p[41] = 0xff; return p }(), false},
		{"after AH", frag6([]ext{{51, 16}}, 17, 1, whole[:16], 0, true), false},
		{"Fragment header beyond the payload length", func() []byte {
			p := frag6([]ext{{0, 8}}, 17, 1, whole[:16], 0, true)
			binary.BigEndian.PutUint16(p[4:], 8+7)
			return p
		}(), false},
		{"Fragment header cut", frag6(nil, 17, 1, nil, 8, true)[:47], false},
		{"jumbogram", func() []byte { p := frag6(nil, 17, 1, whole[:16], 0, true); p[4], p[5] = 0, 0; return p }(), false},
		{"short", frag6(nil, 17, 1, whole[:16], 8, true)[:39], false},
		{"no data", frag6(nil, 17, 1, nil, 8, true), true},
	} {
		if IsFragment(c.pkt) != c.want {
			t.Errorf("%s: IsFragment = %v", c.name, !c.want)
		}
	}
}
