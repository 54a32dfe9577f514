package ipfrag

import (
	"slices"
	"testing"
	"time"

	"vnic/internal/testutil"
)

// TestFragmentAllocs: the fragmenters write into the caller's buffers
// only.
func TestFragmentAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	pkt4 := ipv4Packet([]opt{optRR, optRA}, 50, 1, pattern(8000, 1))
	pkt6 := ipv6Packet([]ext{{0, 8}}, 50, pattern(8000, 1))
	scratch := make([]byte, ScratchSizeIPv4(len(pkt4), 1500, 60)+ScratchSizeIPv6(len(pkt6), 1280, 48))
	out := make([][]byte, 0, 16)
	var err error
	n := testing.AllocsPerRun(100, func() {
		out, err = FragmentIPv4(pkt4, 1500, scratch, out[:0])
		if err != nil || len(out) != 6 {
			t.Fatalf("%d fragments, %v", len(out), err)
		}
		out, err = FragmentIPv6(pkt6, 1280, 7, scratch, out[:0])
		if err != nil || len(out) != 7 {
			t.Fatalf("%d fragments, %v", len(out), err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per run, want 0", n)
	}
}

// TestReassembleAllocs: once warmed up, a Reassembler allocates nothing,
// whatever happens to the IPv4 and IPv6 datagrams: completed in any
// order, grown from 2 KiB to 64 KiB, dropped for an overlap, refused for
// want of room or as malformed, expired.
func TestReassembleAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("the race detector allocates")
	}
	var packets [][]byte
	for i, size := range []int{3000, 60000, 1500, 20000} {
		pkt := ipv4Packet([]opt{optRA}, 17, uint16(i), pattern(size, byte(i)))
		frags, err := FragmentIPv4(pkt, 1500, make([]byte, ScratchSizeIPv4(len(pkt), 1500, 60)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			slices.Reverse(frags)
		}
		packets = append(packets, frags...)
		pkt = ipv6Packet([]ext{{0, 8}, {43, 24}, {60, 16}}[:i%4], 17, pattern(size, byte(i)))
		frags, err = FragmentIPv6(pkt, 1280, uint32(i), make([]byte, ScratchSizeIPv6(len(pkt), 1280, 72)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			slices.Reverse(frags)
		}
		packets = append(packets, frags...)
	}
	whole := pattern(100, 0)
	stale := frag4(101, whole, 0, 8, true)
	kept := frag6(nil, 17, 102, whole[:8], 0, true)
	refused := frag4(103, whole, 0, 8, true)
	overlapping := [][]byte{
		frag4(100, whole, 0, 16, true), frag4(100, whole, 8, 16, true),
		frag6(nil, 17, 100, whole[:16], 0, true), frag6(nil, 17, 100, whole[8:24], 8, true),
	}
	truncated := frag6(nil, 6, 104, whole[:16], 0, true) // TCP's header cut (RFC 7112)
	r := NewReassembler(Config{MaxDatagrams: 3, Headroom: 32, Tailroom: 32})
	now := t0
	var results [Full + 1]int
	cycle := func() {
		now = now.Add(10 * time.Second)
		add := func(p []byte, at time.Time) {
			d, res, _ := r.Add(p, at)
			results[res]++
			if res == Complete {
				r.Release(d)
			}
		}
		add(stale, now.Add(-time.Hour)) // expires below
		add(kept, now)                  // held, then a duplicate, until it expires
		add(overlapping[0], now)
		add(refused, now) // beyond MaxDatagrams
		add(overlapping[1], now)
		add(overlapping[2], now)
		add(overlapping[3], now)
		add(truncated, now)
		for _, p := range packets {
			add(p, now)
		}
		r.Expire(now)
	}
	cycle()
	results = [Full + 1]int{}
	n := testing.AllocsPerRun(100, cycle)
	if n != 0 {
		t.Errorf("%v allocations per cycle, want 0", n)
	}
	if results[Complete] != 8*101 || results[Duplicate] == 0 || results[Invalid] != 3*101 || results[Full] != 101 {
		t.Errorf("results %v: want 808 complete, some duplicates, 303 invalid, 101 full", results)
	}
}
