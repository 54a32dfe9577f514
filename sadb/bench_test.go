package sadb

import (
	"net/netip"
	"testing"
)

// benchSizes are the table sizes the lookup benchmarks run with.
var benchSizes = []struct {
	name string
	n    int
}{{"1", 1}, {"1k", 1000}, {"1M", 1000000}}

// benchDst is the i-th distinct destination: 10.0.0.0/8 holds 16M.
func benchDst(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// buildBench fills a table with n SAs made by mk, in batches of 10k, with
// the fake cipher (so that setup measures the table, not key schedules).
func buildBench(b *testing.B, n int, mk func(i int) Config) *Table {
	b.Helper()
	if n >= 1000000 && testing.Short() {
		b.Skip("1M-SA setup skipped in -short mode")
	}
	withFakeCipher(b)
	tab := New(TableConfig{Capacity: n})
	const batch = 10000
	cfgs := make([]Config, 0, batch)
	for i := 0; i < n; i += batch {
		cfgs = cfgs[:0]
		for j := i; j < min(i+batch, n); j++ {
			cfgs = append(cfgs, mk(j))
		}
		if _, st := tab.Add(cfgs); st != 0 {
			b.Fatalf("Add: %v", st)
		}
	}
	if tab.Len() != n {
		b.Fatalf("Len %d, want %d", tab.Len(), n)
	}
	return tab
}

func BenchmarkLookupInbound(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			tab := buildBench(b, size.n, func(i int) Config {
				c := inCfg(uint32(256+i), benchDst(i).String())
				c.ReplayWindow = 0
				return c
			})
			dsts := make([]netip.Addr, min(size.n, 4096))
			for i := range dsts {
				dsts[i] = benchDst(i * (size.n / len(dsts)))
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				k := i * (size.n / len(dsts))
				if tab.LookupInbound(uint32(256+k), dsts[i]) == nil {
					b.Fatal("miss")
				}
				if i++; i == len(dsts) {
					i = 0
				}
			}
		})
	}
}

func BenchmarkLookupOutbound(b *testing.B) {
	benchOutbound(b, 32, func(i int) netip.Addr { return benchDst(i) })
}

// BenchmarkLookupOutboundPrefix is BenchmarkLookupOutbound with /28
// destination prefixes instead of single addresses: it measures the trie
// rather than the host index in front of it.
func BenchmarkLookupOutboundPrefix(b *testing.B) {
	benchOutbound(b, 28, func(i int) netip.Addr { return benchDst(i<<4 | 5) })
}

// benchOutbound looks up flows in tables of outbound SAs whose selectors
// are the bits-long prefixes of benchDst(i<<(32-bits)); dst(i) is a
// destination inside SA i's prefix.
func benchOutbound(b *testing.B, bits int, dst func(i int) netip.Addr) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			tab := buildBench(b, size.n, func(i int) Config {
				return outCfg(uint32(256+i), "192.0.2.1", Selector{Dst: netip.PrefixFrom(benchDst(i<<(32-bits)), bits)})
			})
			flows := make([]Flow, min(size.n, 4096))
			for i := range flows {
				flows[i] = Flow{Src: netip.AddrFrom4([4]byte{192, 168, 0, 1}), Dst: dst(i * (size.n / len(flows))),
					Proto: 17, SrcPort: 4000, DstPort: 53}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if tab.LookupOutbound(flows[i]) == nil {
					b.Fatal("miss")
				}
				if i++; i == len(flows) {
					i = 0
				}
			}
		})
	}
}

// BenchmarkAddDelete1M measures one ADD_SA and one DELETE_SA of a single SA
// in a table holding a million: the copy-on-write cost of a small write.
func BenchmarkAddDelete1M(b *testing.B) {
	tab := buildBench(b, 1000000, func(i int) Config {
		return outCfg(uint32(256+i), "192.0.2.1", Selector{Dst: netip.PrefixFrom(benchDst(i), 32)})
	})
	tab.cfg.Capacity++
	c := inCfg(1<<31, "192.0.2.1")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, _ := tab.Add([]Config{c})
		tab.Delete([]Handle{res[0].Handle})
	}
}
