package sadb

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestLookupInbound(t *testing.T) {
	tab := New(TableConfig{Capacity: 100})
	hs := mustAdd(t, tab,
		inCfg(1000, "10.0.0.1"),    // 0 exact
		inCfg(1000, ""),            // 1 wildcard
		inCfg(1001, "10.0.0.1"),    // 2 exact only
		inCfg(1002, ""),            // 3 wildcard only
		inCfg(1000, "2001:db8::1"), // 4 exact v6
		outCfg(1003, "10.0.0.1"),   // 5 outbound, never an inbound match
	)
	for _, tc := range []struct {
		spi  uint32
		dst  string
		want int // index into hs, -1 for nil
	}{
		{1000, "10.0.0.1", 0},
		{1000, "10.0.0.2", 1},
		{1000, "2001:db8::1", 4},
		{1000, "2001:db8::2", 1},
		{1001, "10.0.0.1", 2},
		{1001, "10.0.0.2", -1},
		{1002, "192.0.2.1", 3},
		{1002, "2001:db8::9", 3},
		{1003, "10.0.0.1", -1},
		{1004, "10.0.0.1", -1},
		{1000, "", 1},
	} {
		got := tab.LookupInbound(tc.spi, addr(tc.dst))
		var want *SA
		if tc.want >= 0 {
			want = tab.Get(hs[tc.want])
		}
		if got != want {
			t.Errorf("LookupInbound(%d, %q) = %v, want handle %v", tc.spi, tc.dst, handleOf(got), handleOf(want))
		}
	}

	// Deleting the exact SA uncovers the wildcard; a reader still on the
	// snapshot from before the delete does not see the dead SA either.
	old := tab.snap.Load()
	tab.Delete([]Handle{hs[0]})
	for name, s := range map[string]*snapshot{"new": tab.snap.Load(), "old": old} {
		if got := s.inLookup(1000, addr("10.0.0.1")); got != tab.Get(hs[1]) {
			t.Errorf("%s snapshot after Delete: handle %v, want the wildcard %d", name, handleOf(got), hs[1])
		}
	}
	tab.Delete([]Handle{hs[1]})
	if got := tab.LookupInbound(1000, addr("10.0.0.1")); got != nil {
		t.Errorf("after deleting both: handle %v", handleOf(got))
	}
}

func handleOf(sa *SA) any {
	if sa == nil {
		return "nil"
	}
	return sa.Handle
}

func flow(src, dst string, proto uint8, sport, dport uint16) Flow {
	return Flow{Src: addr(src), Dst: addr(dst), Proto: proto, SrcPort: sport, DstPort: dport}
}

func TestLookupOutbound(t *testing.T) {
	type sa struct {
		name string
		cfg  Config
	}
	sel := func(src, dst string, proto uint8, sp, dp uint16) Selector {
		return Selector{Src: pfx(src), Dst: pfx(dst), Proto: proto, SrcPort: sp, DstPort: dp}
	}
	transport := outCfg(1100, "198.51.100.7")
	transport.Mode, transport.Src = Transport, addr("192.0.2.7")
	sas := []sa{
		{"any", outCfg(1000, "192.0.2.1")}, // tunnel, no selectors: any packet, both families
		{"10/8", outCfg(1001, "192.0.2.1", sel("", "10.0.0.0/8", 0, 0, 0))},
		{"10.1/16", outCfg(1002, "192.0.2.1", sel("", "10.1.0.0/16", 0, 0, 0))},
		{"10.1/16 from 172.16/12", outCfg(1003, "192.0.2.1", sel("172.16.0.0/12", "10.1.0.0/16", 0, 0, 0))},
		{"10.1/16 tcp", outCfg(1004, "192.0.2.1", sel("", "10.1.0.0/16", 6, 0, 0))},
		{"10.1/16 tcp:443", outCfg(1005, "192.0.2.1", sel("", "10.1.0.0/16", 6, 0, 443))},
		{"10.1/16 tcp:443 twin", outCfg(1006, "192.0.2.1", sel("", "10.1.0.0/16", 6, 0, 443))},
		{"10.1.2.3/32 from v4 any", outCfg(1007, "192.0.2.1", sel("0.0.0.0/0", "10.1.2.3/32", 0, 0, 0))},
		{"src 192.168/16 any dst", outCfg(1008, "192.0.2.1", sel("192.168.0.0/16", "", 0, 0, 0))},
		{"v6 2001:db8::/32", outCfg(1010, "2001:db8:ffff::1", sel("", "2001:db8::/32", 0, 0, 0))},
		{"v6 2001:db8:1::/48 udp", outCfg(1011, "2001:db8:ffff::1", sel("", "2001:db8:1::/48", 17, 0, 0))},
		{"v6 2001:db8:1::/48 from fd00::/8", outCfg(1012, "2001:db8:ffff::1", sel("fd00::/8", "2001:db8:1::/48", 0, 0, 0))},
		{"v6 two selectors", outCfg(1013, "2001:db8:ffff::1", sel("", "2001:db8:2::/48", 0, 0, 0), sel("", "2001:db8:3::/64", 0, 0, 0))},
		{"transport", transport},
	}
	tab := New(TableConfig{Capacity: 100})
	var cfgs []Config
	for _, s := range sas {
		cfgs = append(cfgs, s.cfg)
	}
	hs := mustAdd(t, tab, cfgs...)
	byName := map[string]*SA{}
	for i, s := range sas {
		byName[s.name] = tab.Get(hs[i])
	}

	cases := []struct {
		name string
		f    Flow
		want string
	}{
		{"v4 default", flow("192.0.2.100", "8.8.8.8", 17, 1, 53), "any"},
		{"v6 default", flow("2001:db8:9::1", "2606:4700::1", 6, 1, 2), "any"},
		{"/8", flow("192.0.2.100", "10.2.0.1", 1, 0, 0), "10/8"},
		{"/16 beats /8", flow("192.0.2.100", "10.1.9.9", 1, 0, 0), "10.1/16"},
		{"source prefix beats protocol", flow("172.16.5.5", "10.1.9.9", 6, 1000, 443), "10.1/16 from 172.16/12"},
		{"port beats protocol, the newer wins a tie", flow("192.0.2.100", "10.1.9.9", 6, 1000, 443), "10.1/16 tcp:443 twin"},
		{"protocol beats nothing", flow("192.0.2.100", "10.1.9.9", 6, 1000, 80), "10.1/16 tcp"},
		{"udp is not tcp", flow("192.0.2.100", "10.1.9.9", 17, 1000, 443), "10.1/16"},
		{"/32 beats everything", flow("172.16.5.5", "10.1.2.3", 6, 1000, 443), "10.1.2.3/32 from v4 any"},
		{"source-only selector", flow("192.168.1.1", "8.8.8.8", 6, 1, 2), "src 192.168/16 any dst"},
		{"source-only is /0 dst: longer dst wins", flow("192.168.1.1", "10.2.0.1", 6, 1, 2), "10/8"},
		{"v6 /32", flow("2001:db8:9::1", "2001:db8:5::1", 58, 0, 0), "v6 2001:db8::/32"},
		{"v6 /48 udp", flow("2001:db8:9::1", "2001:db8:1::1", 17, 5, 6), "v6 2001:db8:1::/48 udp"},
		{"v6 /48 source", flow("fd00::5", "2001:db8:1::1", 17, 5, 6), "v6 2001:db8:1::/48 from fd00::/8"},
		{"v6 /48 no match falls back to /32", flow("2001:db8:9::1", "2001:db8:1::1", 6, 5, 6), "v6 2001:db8::/32"},
		{"second selector", flow("2001:db8:9::1", "2001:db8:3::1", 6, 5, 6), "v6 two selectors"},
		{"first selector", flow("2001:db8:9::1", "2001:db8:2:1::1", 6, 5, 6), "v6 two selectors"},
		{"transport implied selector", flow("192.0.2.7", "198.51.100.7", 6, 5, 6), "transport"},
		{"transport: other source", flow("192.0.2.8", "198.51.100.7", 6, 5, 6), "any"},
	}
	check := func(t *testing.T, skip map[string]bool) {
		t.Helper()
		for _, tc := range cases {
			if skip[tc.want] {
				continue
			}
			got := tab.LookupOutbound(tc.f)
			if want := byName[tc.want]; got != want {
				t.Errorf("%s: LookupOutbound(%+v) = handle %v, want %q (handle %v)", tc.name, tc.f, handleOf(got), tc.want, handleOf(want))
			}
			if got != nil && !got.Match(tc.f) {
				t.Errorf("%s: the chosen SA does not Match the flow", tc.name)
			}
		}
	}
	check(t, nil)

	for _, bad := range []Flow{
		{},
		flow("10.0.0.1", "", 6, 1, 2),
		flow("", "10.0.0.1", 6, 1, 2),
		flow("2001:db8::1", "10.1.2.3", 6, 1, 2),
	} {
		if got := tab.LookupOutbound(bad); got != nil {
			t.Errorf("LookupOutbound(%+v) = handle %d, want nil", bad, got.Handle)
		}
	}

	// Dead SAs are never returned: the next most specific takes over.
	tab.Delete([]Handle{byName["10.1/16 tcp:443 twin"].Handle, byName["10.1.2.3/32 from v4 any"].Handle})
	if got := tab.LookupOutbound(flow("192.0.2.100", "10.1.9.9", 6, 1000, 443)); got != byName["10.1/16 tcp:443"] {
		t.Errorf("after delete: handle %v, want the older twin", handleOf(got))
	}
	if got := tab.LookupOutbound(flow("192.0.2.100", "10.1.2.3", 1, 0, 0)); got != byName["10.1/16"] {
		t.Errorf("after deleting the /32: handle %v, want 10.1/16", handleOf(got))
	}
	tab.Delete([]Handle{byName["any"].Handle})
	if got := tab.LookupOutbound(flow("192.0.2.100", "8.8.8.8", 6, 1, 2)); got != nil {
		t.Errorf("no default left: handle %v", handleOf(got))
	}
	if got := tab.LookupOutbound(flow("2001:db8:9::1", "2001:db8:5::1", 6, 1, 2)); got != byName["v6 2001:db8::/32"] {
		t.Errorf("v6 after deleting the default: %v", handleOf(got))
	}
}

func TestLookupOutboundSkipsInbound(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	mustAdd(t, tab, inCfg(1000, "10.0.0.1"))
	if got := tab.LookupOutbound(flow("10.0.0.2", "10.0.0.1", 6, 1, 2)); got != nil {
		t.Errorf("inbound SA %d chosen for an outbound flow", got.Handle)
	}
}

// refLookup is the outbound choice by brute force over List, the
// specification LookupOutbound must meet.
func refLookup(tab *Table, f Flow) *SA {
	var best *SA
	var bk [6]int
	for _, sa := range tab.List() {
		if sa.Config.Direction != Outbound || sa.dead.Load() {
			continue
		}
		// Among equally specific SAs: one that can send before one
		// that cannot, one not dying before a dying one, then the newest.
		usable := 2
		switch {
		case sa.HardExpired.Load() || sa.Out.Remaining() == 0:
			usable = 0
		case sa.SoftExpired.Load() || sa.DeleteRequested.Load():
			usable = 1
		}
		for _, s := range sa.Selectors() {
			if !s.Match(f) {
				continue
			}
			ports := 0
			if s.SrcPort != 0 {
				ports++
			}
			if s.DstPort != 0 {
				ports++
			}
			proto := 0
			if s.Proto != 0 {
				proto = 1
			}
			k := [6]int{max(s.Dst.Bits(), 0), max(s.Src.Bits(), 0), proto, ports, usable, int(sa.Handle)}
			if best == nil || cmpKey(k, bk) > 0 {
				best, bk = sa, k
			}
		}
	}
	return best
}

func cmpKey(a, b [6]int) int {
	for i := range a {
		if a[i] != b[i] {
			return a[i] - b[i]
		}
	}
	return 0
}

// TestLookupOutboundRandom checks the trie against the brute-force
// reference through random batches of adds and deletes.
func TestLookupOutboundRandom(t *testing.T) {
	withFakeCipher(t)
	r := rand.New(rand.NewPCG(1, 2))
	// Addresses from a small space so that prefixes nest and collide.
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			b[2] = byte(r.IntN(4))
			b[15] = byte(r.IntN(4))
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(4))})
	}
	randPrefix := func(v6 bool) netip.Prefix {
		if r.IntN(5) == 0 {
			return netip.Prefix{}
		}
		a := randAddr(v6)
		p, _ := a.Prefix(r.IntN(a.BitLen() + 1))
		return p
	}
	randSel := func() Selector {
		v6 := r.IntN(2) == 0
		s := Selector{Src: randPrefix(v6), Dst: randPrefix(v6)}
		switch r.IntN(3) {
		case 1:
			s.Proto = 1
		case 2:
			s.Proto = 6
			if r.IntN(2) == 0 {
				s.DstPort = uint16(1 + r.IntN(2))
			}
			if r.IntN(2) == 0 {
				s.SrcPort = uint16(1 + r.IntN(2))
			}
		}
		return s
	}
	randFlow := func() Flow {
		v6 := r.IntN(2) == 0
		return Flow{Src: randAddr(v6), Dst: randAddr(v6), Proto: []uint8{1, 6, 17}[r.IntN(3)],
			SrcPort: uint16(r.IntN(3)), DstPort: uint16(r.IntN(3))}
	}

	tab := New(TableConfig{Capacity: 1 << 20})
	spi := uint32(1000)
	var live []Handle
	for round := 0; round < 60; round++ {
		var cfgs []Config
		for n := r.IntN(20); n > 0; n-- {
			var sels []Selector
			for k := r.IntN(3); k > 0; k-- {
				sels = append(sels, randSel())
			}
			spi++
			c := outCfg(spi, "192.0.2.1", sels...)
			if len(sels) == 0 && r.IntN(2) == 0 {
				c.Mode, c.Src, c.Dst = Transport, randAddr(false), randAddr(false)
			}
			cfgs = append(cfgs, c)
		}
		if len(cfgs) > 0 {
			live = append(live, mustAdd(t, tab, cfgs...)...)
		}
		r.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		n := r.IntN(len(live)/2 + 1)
		for _, e := range tab.Delete(live[:n]) {
			if e != nil {
				t.Fatal(e)
			}
		}
		live = live[n:]
		for k := 0; k < 200; k++ {
			f := randFlow()
			if got, want := tab.LookupOutbound(f), refLookup(tab, f); got != want {
				t.Fatalf("round %d: LookupOutbound(%+v) = %v, reference %v", round, f, handleOf(got), handleOf(want))
			}
		}
	}
	// Empty again: the tries must be empty too.
	tab.Delete(live)
	s := tab.snap.Load()
	if s.out[0] != nil || s.out[1] != nil || s.n != 0 {
		t.Errorf("tries not empty after deleting everything: %v %v n=%d", s.out[0], s.out[1], s.n)
	}
	for fam := range s.host {
		for i, m := range s.host[fam] {
			if len(m) != 0 {
				t.Errorf("host shard %d/%d not empty after deleting everything: %v", fam, i, m)
			}
		}
	}
}

func TestSelectorMatch(t *testing.T) {
	for _, tc := range []struct {
		s    Selector
		f    Flow
		want bool
	}{
		{Selector{}, flow("10.0.0.1", "10.0.0.2", 6, 1, 2), true},
		{Selector{}, flow("2001:db8::1", "2001:db8::2", 6, 1, 2), true},
		{Selector{Src: pfx("10.0.0.0/8")}, flow("10.0.0.1", "192.0.2.1", 6, 1, 2), true},
		{Selector{Src: pfx("10.0.0.0/8")}, flow("2001:db8::1", "2001:db8::2", 6, 1, 2), false},
		{Selector{Dst: pfx("::/0")}, flow("10.0.0.1", "10.0.0.2", 6, 1, 2), false},
		{Selector{Dst: pfx("0.0.0.0/0")}, flow("10.0.0.1", "10.0.0.2", 6, 1, 2), true},
		{Selector{Proto: 17, SrcPort: 500}, flow("10.0.0.1", "10.0.0.2", 17, 500, 2), true},
		{Selector{Proto: 17, SrcPort: 500}, flow("10.0.0.1", "10.0.0.2", 17, 501, 2), false},
		{Selector{Proto: 17}, flow("10.0.0.1", "10.0.0.2", 6, 1, 2), false},
		{Selector{}, flow("10.0.0.1", "2001:db8::2", 6, 1, 2), false},
		{Selector{}, Flow{}, false},
	} {
		if got := tc.s.Match(tc.f); got != tc.want {
			t.Errorf("%+v.Match(%+v) = %v, want %v", tc.s, tc.f, got, tc.want)
		}
	}
}

func TestZonedFlow(t *testing.T) {
	tab := New(TableConfig{Capacity: 4})
	h := mustAdd(t, tab, outCfg(1000, "2001:db8::9", Selector{Dst: pfx("fe80::/64")}))[0]
	f := flow("fe80::2%eth0", "fe80::1%eth0", 6, 1, 2)
	if got := tab.LookupOutbound(f); got == nil || got.Handle != h || !got.Match(f) {
		t.Errorf("zoned flow: LookupOutbound %v; Match must agree", handleOf(got))
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	mustAdd(t, tab, inCfg(1000, "10.0.0.1"), outCfg(1000, "10.0.0.1", Selector{Dst: pfx("10.1.0.0/16")}),
		outCfg(1001, "10.0.0.1", Selector{Dst: pfx("10.1.2.3/32"), Proto: 6}))
	f := flow("10.0.0.2", "10.1.2.3", 6, 1, 2)
	sa := tab.LookupOutbound(f)
	for name, fn := range map[string]func(){
		"LookupInbound":  func() { tab.LookupInbound(1000, addr("10.0.0.1")) },
		"LookupOutbound": func() { tab.LookupOutbound(f) },
		"Match":          func() { sa.Match(f) },
		"Get":            func() { tab.Get(1) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s allocates %v times per call", name, n)
		}
	}
}

// TestLookupOutboundRekey: while a host replaces an SA (adds the new one,
// then deletes the old), packets go on the SA in the best state, the
// newest of equals, as the kernel chooses among states: never on one that
// cannot send while an equal one can, and never on a less specific SA
// because the most specific ones cannot send.
func TestLookupOutboundRekey(t *testing.T) {
	tab := New(TableConfig{Capacity: 10})
	dst := Selector{Dst: pfx("10.1.0.0/16")}
	old := outCfg(2000, "192.0.2.1", dst)
	old.InitialSeq = 1<<32 - 1 // one number left
	hs := mustAdd(t, tab, outCfg(1999, "192.0.2.1", Selector{Dst: pfx("10.0.0.0/8")}), old, outCfg(2001, "192.0.2.1", dst))
	wide, a, b := tab.Get(hs[0]), tab.Get(hs[1]), tab.Get(hs[2])
	f := flow("192.0.2.100", "10.1.9.9", 6, 1000, 443)
	for _, step := range []struct {
		what string
		do   func()
		want *SA
	}{
		{"both good: the newer", func() {}, b},
		{"the newer dying (soft lifetime): the older", func() { b.SoftExpired.Store(true) }, a},
		{"both dying (deletion asked for): the newer", func() { a.DeleteRequested.Store(true) }, b},
		{"the newer past its hard lifetime: the dying older", func() { b.HardExpired.Store(true) }, a},
		{"the older exhausted too: none can send, the newer (its drop is counted)", func() {
			if _, _, err := a.Out.Next(); err != nil {
				t.Fatal(err)
			}
		}, b},
		{"the newer deleted: the older, still not the wider SA", func() { tab.Delete([]Handle{b.Handle}) }, a},
		{"both deleted: the wider SA", func() { tab.Delete([]Handle{a.Handle}) }, wide},
	} {
		step.do()
		if got := tab.LookupOutbound(f); got != step.want {
			t.Errorf("%s: handle %v, want %v", step.what, handleOf(got), handleOf(step.want))
		}
		if got, want := tab.LookupOutbound(f), refLookup(tab, f); got != want {
			t.Errorf("%s: handle %v, reference %v", step.what, handleOf(got), handleOf(want))
		}
	}
}
