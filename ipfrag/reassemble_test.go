package ipfrag

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// frag4 builds a fragment of datagram id: the bytes off to off+n of
// whole, with MF set if more, and the given options.
func frag4(id uint16, whole []byte, off, n int, more bool, opts ...opt) []byte {
	p := ipv4Packet(opts, 17, id, whole[off:off+n])
	setFrag4(p, off, more)
	return p
}

// step is one fragment of a datagram of the test and what Add should say.
type step struct {
	off, n  int
	more    bool
	alter   bool // other data than the datagram's
	want    Result
	dropped int
}

// A family builds fragments of one family for tests that run on both:
// frag makes a fragment of datagram id with the bytes off to off+n of
// whole, with More Fragments (or M) set if more, whose datagram will have
// hl bytes of header; check checks the header of such a reassembled
// datagram.
type family struct {
	name  string
	frag  func(id uint32, whole []byte, off, n int, more bool) []byte
	hl    int
	check func(t *testing.T, p []byte, id uint32)
}

var families = []family{
	{
		"IPv4",
		func(id uint32, whole []byte, off, n int, more bool) []byte {
			return frag4(uint16(id), whole, off, n, more)
		},
		20,
		func(t *testing.T, p []byte, id uint32) { t.Helper(); checkHeader(t, p, uint16(id)) },
	},
	{
		"IPv6",
		func(id uint32, whole []byte, off, n int, more bool) []byte {
			return frag6([]ext{{0, 8}}, 17, id, whole[off:off+n], off, more)
		},
		48,
		func(t *testing.T, p []byte, _ uint32) {
			t.Helper()
			want := ipv6Packet([]ext{{0, 8}}, 17, make([]byte, len(p)-48))
			if !bytes.Equal(p[:48], want[:48]) {
				t.Fatalf("bad reassembled headers % x, want % x", p[:48], want[:48])
			}
		},
	},
}

// TestReassembleSteps runs fragment sequences for one datagram of each
// family, with another datagram held that they must leave alone:
// duplicates, overlaps, inconsistent last fragments and malformed
// fragments.
func TestReassembleSteps(t *testing.T) {
	const M, L = true, false
	cases := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{0, 16, M, false, Held, 0}, {16, 16, M, false, Held, 0}, {32, 8, L, false, Complete, 0}}},
		{"duplicate in the middle", []step{{0, 16, M, false, Held, 0}, {16, 16, M, false, Held, 0}, {16, 16, M, false, Duplicate, 0}, {32, 8, L, false, Complete, 0}}},
		{"duplicate of the last", []step{{32, 5, L, false, Held, 0}, {32, 5, L, false, Duplicate, 0}, {0, 32, M, false, Complete, 0}}},
		{"duplicate of the first", []step{{0, 8, M, false, Held, 0}, {0, 8, M, false, Duplicate, 0}, {8, 8, L, false, Complete, 0}}},
		{"same range, other data", []step{{0, 16, M, false, Held, 0}, {0, 16, M, true, Invalid, 1}}},
		{"last, same range, other data", []step{{8, 8, M, false, Held, 0}, {16, 3, L, false, Held, 0}, {16, 3, L, true, Invalid, 2}}},
		{"same start, shorter", []step{{0, 16, M, false, Held, 0}, {16, 8, M, false, Held, 0}, {0, 8, M, false, Invalid, 2}}},
		{"same start, longer", []step{{0, 8, M, false, Held, 0}, {0, 16, M, false, Invalid, 1}}},
		{"partial overlap", []step{{0, 16, M, false, Held, 0}, {8, 16, M, false, Invalid, 1}}},
		{"partial overlap before", []step{{8, 16, M, false, Held, 0}, {0, 16, M, false, Invalid, 1}}},
		{"covers two, same data", []step{{0, 8, M, false, Held, 0}, {8, 8, M, false, Held, 0}, {0, 16, M, false, Invalid, 2}}},
		{"inside another, same data", []step{{0, 24, M, false, Held, 0}, {8, 8, M, false, Invalid, 1}}},
		{"same range, MF set on the last", []step{{8, 8, M, false, Held, 0}, {16, 8, L, false, Held, 0}, {16, 8, M, false, Invalid, 2}}},
		{"same range, MF clear on a middle one", []step{{8, 8, M, false, Held, 0}, {16, 8, M, false, Held, 0}, {16, 8, L, false, Invalid, 2}}},
		{"two last fragments disagree", []step{{32, 8, L, false, Held, 0}, {40, 8, L, false, Invalid, 1}}},
		{"two last fragments disagree, shorter", []step{{8, 8, M, false, Held, 0}, {32, 8, L, false, Held, 0}, {24, 3, L, false, Invalid, 2}}},
		{"last fragment before data held", []step{{32, 16, M, false, Held, 0}, {16, 8, L, false, Invalid, 1}}},
		{"data beyond the last", []step{{16, 8, L, false, Held, 0}, {24, 8, M, false, Invalid, 1}}},
		{"into the last's partial block", []step{{16, 5, L, false, Held, 0}, {16, 8, M, false, Invalid, 1}}},
		{"MF set, not a multiple of 8", []step{{0, 16, M, false, Held, 0}, {16, 12, M, false, Invalid, 0}, {16, 12, L, false, Complete, 0}}},
		{"far apart", []step{{60000, 8, L, false, Held, 0}, {8, 59992, M, false, Held, 0}, {0, 8, M, false, Complete, 0}}},
		{"reversed, with a dropped duplicate", []step{{24, 1, L, false, Held, 0}, {16, 8, M, false, Held, 0}, {8, 8, M, false, Held, 0}, {16, 8, M, false, Duplicate, 0}, {0, 8, M, false, Complete, 0}}},
	}
	for _, c := range cases {
		for _, fam := range families {
			t.Run(fam.name+"/"+c.name, func(t *testing.T) { runSteps(t, fam, c.steps) })
		}
	}
}

func runSteps(t *testing.T, fam family, steps []step) {
	r := NewReassembler(Config{})
	whole := pattern(65515, 3)
	other := pattern(32, 1)
	if _, res, _ := r.Add(fam.frag(2, other, 0, 16, true), t0); res != Held {
		t.Fatalf("the other datagram: %v", res)
	}
	var fragments int
	for i, s := range steps {
		p := fam.frag(1, whole, s.off, s.n, s.more)
		if s.alter {
			p[len(p)-1]++
		}
		d, res, n := r.Add(p, t0)
		if res != s.want || n != s.dropped {
			t.Fatalf("step %d: %v, %d dropped; want %v, %d", i, res, n, s.want, s.dropped)
		}
		switch res {
		case Held:
			fragments++
		case Complete:
			if !bytes.Equal(d.Packet()[fam.hl:], whole[:d.End-d.Start-fam.hl]) {
				t.Fatalf("step %d: reassembled data differ", i)
			}
			fam.check(t, d.Packet(), 1)
			fragments = 0
		case Invalid:
			if n > 0 {
				fragments = 0
			}
		}
		want := 1
		if fragments > 0 {
			want = 2
		}
		if r.Len() != want {
			t.Fatalf("step %d: %d datagrams held, want %d", i, r.Len(), want)
		}
	}
	// The other datagram is still there, whole.
	if d, res, _ := r.Add(fam.frag(2, other, 16, 16, false), t0); res != Complete || !bytes.Equal(d.Packet()[fam.hl:], other) {
		t.Fatalf("the other datagram: %v", res)
	}
}

// checkHeader checks the header of a reassembled datagram: version,
// identification, offset and MF clear, total length and checksum.
func checkHeader(t *testing.T, p []byte, id uint16) {
	t.Helper()
	hl := int(p[0]&15) * 4
	if p[0]>>4 != 4 || int(binary.BigEndian.Uint16(p[2:])) != len(p) || binary.BigEndian.Uint16(p[4:]) != id ||
		binary.BigEndian.Uint16(p[6:])&0x3fff != 0 || sum16(p[:hl]) != 0xffff {
		t.Fatalf("bad reassembled header % x", p[:hl])
	}
}

// TestReassembleFirstHeader: the datagram has the header of the first
// fragment, even when a later one has other options or a duplicate of
// the first another TTL.
func TestReassembleFirstHeader(t *testing.T) {
	whole := pattern(100, 5)
	r := NewReassembler(Config{})
	first := frag4(9, whole, 0, 48, true, optRR, optRA)
	dup := bytes.Clone(first)
	dup[8]--
	fixChecksum4(dup)
	for i, p := range [][]byte{frag4(9, whole, 48, 24, true, optRA), first, dup, frag4(9, whole, 72, 28, false)} {
		d, res, _ := r.Add(p, t0)
		if i < 3 {
			continue
		}
		if res != Complete {
			t.Fatalf("%v", res)
		}
		want := bytes.Clone(first[:36])
		want[3], want[6] = 136, 0
		fixChecksum4(want)
		if !bytes.Equal(d.Packet()[:36], want) || !bytes.Equal(d.Packet()[36:], whole) {
			t.Fatalf("header % x, want % x", d.Packet()[:36], want)
		}
	}
}

// TestReassembleMalformed: malformed fragments are Invalid by
// themselves, leaving the datagram held alone.
func TestReassembleMalformed(t *testing.T) {
	whole := pattern(65536+8, 4)
	good := func() []byte { return frag4(1, whole, 8, 16, true) }
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"empty", nil},
		{"short", good()[:19]},
		{"version 6", func() []byte { p := good(); p[0] = 0x65; fixChecksum4(p); return p }()},
		{"header length 16", func() []byte { p := good(); p[0] = 0x44; return p }()},
		{"header beyond the packet", good()[:20]},
		{"bad checksum", func() []byte { p := good(); p[10]++; return p }()},
		{"total length beyond the packet", good()[:35]},
		{"no data", func() []byte { p := good()[:20]; p[3] = 20; fixChecksum4(p); return p }()},
		{"not a fragment", frag4(1, whole, 0, 16, false)},
		{"MF, 12 bytes", frag4(1, whole, 8, 12, true)},
		{"ends beyond 65515", frag4(1, whole, 65512, 8, false)},
		{"ends beyond 65535", frag4(1, whole, 65528, 8, true)},
	}
	for _, c := range cases {
		r := NewReassembler(Config{})
		if _, res, _ := r.Add(frag4(1, whole, 40, 8, true), t0); res != Held {
			t.Fatal(res)
		}
		if _, res, n := r.Add(c.pkt, t0); res != Invalid || n != 0 || r.Len() != 1 {
			t.Errorf("%s: %v, %d dropped, %d held", c.name, res, n, r.Len())
		}
	}
	// Bytes after the total length are no part of the fragment.
	r := NewReassembler(Config{})
	r.Add(append(frag4(1, whole, 0, 8, true), 1, 2, 3), t0)
	d, res, _ := r.Add(append(frag4(1, whole, 8, 3, false), 4, 5, 6), t0)
	if res != Complete || !bytes.Equal(d.Packet()[20:], whole[:11]) {
		t.Errorf("with trailing bytes: %v, % x", res, d.Packet())
	}
}

// TestReassembleTooLong: a datagram longer than 65535 bytes with its
// first fragment's header is dropped, whichever fragment comes last.
func TestReassembleTooLong(t *testing.T) {
	whole := pattern(65535, 4)
	big := []opt{nop, optRR, optRA, optTS, optSec} // a 60-byte header
	if len(encodeOpts(big, false)) != 40 {
		t.Fatal(len(encodeOpts(big, false)))
	}
	for _, firstFirst := range []bool{false, true} {
		r := NewReassembler(Config{})
		ps := [][]byte{frag4(1, whole, 65480, 24, false), frag4(1, whole, 0, 8, true, big...)}
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
	// With a 20-byte header the same last fragment is fine.
	r := NewReassembler(Config{})
	r.Add(frag4(1, whole, 65480, 24, false), t0)
	if _, res, _ := r.Add(frag4(1, whole, 0, 8, true), t0); res != Held {
		t.Error(res)
	}
}

// TestReassembleTimeout: Expire drops the datagrams Timeout old or more,
// oldest first, and counts their fragments.
func TestReassembleTimeout(t *testing.T) {
	whole := pattern(100, 1)
	r := NewReassembler(Config{})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	r.Add(frag4(1, whole, 16, 8, true), t0.Add(5*time.Second))
	r.Add(frag4(2, whole, 0, 8, true), t0.Add(10*time.Second))
	if d, f := r.Expire(t0.Add(30*time.Second - 1)); d != 0 || f != 0 {
		t.Fatalf("expired %d, %d early", d, f)
	}
	if d, f := r.Expire(t0.Add(30 * time.Second)); d != 1 || f != 2 || r.Len() != 1 {
		t.Fatalf("expired %d datagrams, %d fragments; %d left", d, f, r.Len())
	}
	// A fragment of the expired datagram starts it anew.
	if _, res, _ := r.Add(frag4(1, whole, 8, 8, true), t0.Add(31*time.Second)); res != Held {
		t.Fatal(res)
	}
	if d, f := r.Expire(t0.Add(time.Hour)); d != 2 || f != 2 || r.Len() != 0 || r.Bytes() != 0 {
		t.Fatalf("expired %d datagrams, %d fragments; %d left", d, f, r.Len())
	}
	r = NewReassembler(Config{Timeout: time.Second})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	if d, _ := r.Expire(t0.Add(time.Second)); d != 1 {
		t.Fatalf("a 1 s timeout: %d expired", d)
	}
}

// TestReassembleFull: beyond MaxDatagrams or MaxBytes new datagrams are
// refused while those held go on; one that would grow beyond MaxBytes is
// dropped.
func TestReassembleFull(t *testing.T) {
	whole := pattern(10000, 1)
	r := NewReassembler(Config{MaxDatagrams: 2})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	r.Add(frag4(2, whole, 0, 8, true), t0)
	if _, res, n := r.Add(frag4(3, whole, 0, 8, true), t0); res != Full || n != 0 || r.Len() != 2 {
		t.Fatalf("a third datagram: %v, %d", res, n)
	}
	if _, res, _ := r.Add(frag4(1, whole, 8, 8, false), t0); res != Complete {
		t.Fatalf("a datagram held: %v", res)
	}
	if _, res, _ := r.Add(frag4(3, whole, 0, 8, true), t0); res != Held {
		t.Fatalf("room again: %v", res)
	}

	small := 296 + 2048 // a buffer for 2 KiB of data
	r = NewReassembler(Config{MaxBytes: 2 * small})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	r.Add(frag4(2, whole, 8, 8, true), t0)
	if r.Bytes() != 2*small {
		t.Fatalf("%d bytes held, want %d", r.Bytes(), 2*small)
	}
	if _, res, n := r.Add(frag4(3, whole, 0, 8, true), t0); res != Full || n != 0 {
		t.Fatalf("beyond MaxBytes: %v, %d", res, n)
	}
	if _, res, n := r.Add(frag4(2, whole, 16, 3000, true), t0); res != Full || n != 1 || r.Len() != 1 || r.Bytes() != small {
		t.Fatalf("growing beyond MaxBytes: %v, %d dropped, %d held in %d bytes", res, n, r.Len(), r.Bytes())
	}
	if _, res, _ := r.Add(frag4(5, whole, 0, 8, true), t0); res != Held {
		t.Fatalf("room again: %v", res)
	}
	if _, res, _ := r.Add(frag4(1, whole, 8, 2040, true), t0); res != Held {
		t.Fatalf("filling a buffer: %v", res)
	}
	if _, res, n := r.Add(frag4(1, whole, 2048, 1, false), t0); res != Full || n != 2 || r.Bytes() != small {
		t.Fatalf("one byte beyond the buffer: %v, %d dropped", res, n)
	}
	// A datagram that needs a 64 KiB buffer from its first fragment.
	r = NewReassembler(Config{MaxBytes: 296 + 65536 - 1})
	if _, res, _ := r.Add(frag4(1, pattern(65515, 0), 65000, 10, false), t0); res != Full {
		t.Fatalf("a 64 KiB buffer beyond MaxBytes: %v", res)
	}
}

// TestReassembleRoom: Headroom and Tailroom are there with any header
// length, and released buffers are reused.
func TestReassembleRoom(t *testing.T) {
	whole := pattern(5000, 1)
	for _, room := range [][2]int{{0, 0}, {1, 1}, {73, 200}, {4096, 16}} {
		r := NewReassembler(Config{Headroom: room[0], Tailroom: room[1]})
		var bufs [][]byte
		for _, opts := range [][]opt{nil, {optRA}, {nop, optRR, optRA, optTS, optSec}} {
			r.Add(frag4(1, whole, 0, 1000, true, opts...), t0)
			d, res, _ := r.Add(frag4(1, whole, 1000, 4000, false), t0)
			if res != Complete {
				t.Fatal(res)
			}
			if d.Start < room[0] || cap(d.Buf)-d.End < room[1] || len(d.Buf) != cap(d.Buf) {
				t.Errorf("room %v: %d before, %d after", room, d.Start, cap(d.Buf)-d.End)
			}
			bufs = append(bufs, d.Buf)
			r.Release(d)
		}
		if &bufs[0][0] != &bufs[1][0] || &bufs[1][0] != &bufs[2][0] {
			t.Errorf("room %v: a released buffer was not reused", room)
		}
	}
	r := NewReassembler(Config{})
	r.Release(Datagram{})
	r.Release(Datagram{Buf: make([]byte, 100)})
	r.Add(frag4(1, whole, 0, 8, true), t0)
	d, _, _ := r.Add(frag4(1, whole, 8, 8, false), t0)
	if len(d.Buf) == 100 {
		t.Error("a foreign buffer was taken")
	}
}

// TestConfigDefaults: zero and negative limits take the defaults.
func TestConfigDefaults(t *testing.T) {
	for _, cfg := range []Config{{}, {MaxDatagrams: -1, MaxBytes: -1, Timeout: -1, Headroom: -1, Tailroom: -1}} {
		r := NewReassembler(cfg)
		if r.cfg != (Config{MaxDatagrams: 64, MaxBytes: 4 << 20, Timeout: 30 * time.Second}) {
			t.Errorf("%+v became %+v", cfg, r.cfg)
		}
	}
}

// TestIsFragment checks IsFragment.
func TestIsFragment(t *testing.T) {
	whole := pattern(100, 0)
	for _, c := range []struct {
		pkt  []byte
		want bool
	}{
		{ipv4Packet(nil, 17, 1, whole), false},
		{frag4(1, whole, 0, 8, true), true},
		{frag4(1, whole, 8, 8, false), true},
		{func() []byte { p := ipv4Packet(nil, 17, 1, whole); p[6] = 0x40; return p }(), false},
		{ipv6Packet(nil, 17, whole), false},
		{nil, false},
	} {
		if IsFragment(c.pkt) != c.want {
			t.Errorf("IsFragment(% x...) = %v", c.pkt[:min(len(c.pkt), 8)], !c.want)
		}
	}
}

// TestResultString names the results.
func TestResultString(t *testing.T) {
	got := fmt.Sprint(Held, Complete, Duplicate, Invalid, Full, Result(-1), Result(5))
	if want := "held complete duplicate invalid full Result(?) Result(?)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

// TestTable runs random insertions and removals on a small table, where
// searches collide, against a map.
func TestTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 50 {
		tab := newTable(4) // 8 slots
		if round%2 == 0 {
			tab.seeds = [5]uint64{} // the addresses hash to nothing
		}
		ref := map[key]*entry{}
		for range 2000 {
			k := tableKey(rng.IntN(12), rng.IntN(2))
			if e := ref[k]; e != nil {
				tab.remove(e)
				delete(ref, k)
			} else if len(ref) < 7 {
				e := &entry{key: k, hash: tab.hash(&k)}
				tab.insert(e)
				ref[k] = e
			}
			for id := range 12 {
				for proto := range 2 {
					k := tableKey(id, proto)
					if got := tab.find(&k, tab.hash(&k)); got != ref[k] {
						t.Fatalf("find %v: %p, want %p", k, got, ref[k])
					}
				}
			}
		}
	}
}

// tableKey returns TestTable's key number id of a kind: IPv4 with
// protocol 0, or IPv6 with the same bytes.
func tableKey(id, kind int) key {
	k := key{id: uint32(id) << (id % 2 * 16), v6: kind == 1}
	k.src[3], k.dst[15] = byte(id%3), byte(id%2)
	return k
}

// TestFragmentEnd checks the end of a fragment found from the block sets.
func TestFragmentEnd(t *testing.T) {
	var starts, covered blockSet
	add := func(lo, hi int) { starts.add(lo); covered.addRange(lo, hi) }
	add(0, 63)
	add(63, 64)
	add(64, 200)
	add(300, maxBlocks)
	for _, c := range [][2]int{{0, 63}, {63, 64}, {64, 200}, {300, maxBlocks}} {
		if got := fragmentEnd(&starts, &covered, c[0]); got != c[1] {
			t.Errorf("fragment at %d ends at %d, want %d", c[0], got, c[1])
		}
	}
	if !covered.anyIn(199, 201) || covered.anyIn(200, 300) || !covered.has(8191) {
		t.Error("anyIn or has is wrong")
	}
	covered.clearBelow(maxBlocks)
	if covered.anyIn(0, maxBlocks) {
		t.Error("clearBelow left blocks")
	}
}
