package sadb

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentReadersWriters runs lock-free readers against writers that
// add, delete and update SAs (run it with -race). Readers must only see SAs
// with the SPI they asked for, of the right direction, matching the flow,
// and never one whose Delete had returned before the lookup began.
func TestConcurrentReadersWriters(t *testing.T) {
	withFakeCipher(t)
	const (
		nSPI     = 64 // SPIs 1000..1063, each inbound and outbound
		maxH     = 1 << 16
		duration = 300 * time.Millisecond
	)
	tab := New(TableConfig{Capacity: 1 << 20})
	var (
		epoch     atomic.Uint64       // bumped after each Delete returns
		deletedAt [maxH]atomic.Uint64 // epoch at which a handle's Delete had returned
		stop      atomic.Bool
		lookups   atomic.Uint64
		wg        sync.WaitGroup
		failMu    sync.Mutex
		failures  []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	dstOf := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	seen := func(sa *SA, start uint64, what string) {
		if d := deletedAt[sa.Handle%maxH].Load(); d != 0 && d <= start {
			fail("%s: handle %d deleted at epoch %d seen by a lookup that started at %d", what, sa.Handle, d, start)
		}
	}

	// Readers.
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 7))
			for !stop.Load() {
				i := r.IntN(nSPI)
				spi := uint32(1000 + i)
				start := epoch.Load()
				if sa := tab.LookupInbound(spi, dstOf(i)); sa != nil {
					if sa.Config.SPI != spi || sa.Config.Direction != Inbound {
						fail("LookupInbound(%d) returned SPI %d direction %v", spi, sa.Config.SPI, sa.Config.Direction)
					}
					seen(sa, start, "inbound")
				}
				f := Flow{Src: netip.AddrFrom4([4]byte{192, 168, 0, 1}), Dst: dstOf(i), Proto: 17, SrcPort: 1, DstPort: 2}
				start = epoch.Load()
				if sa := tab.LookupOutbound(f); sa != nil {
					if sa.Config.Direction != Outbound || !sa.Match(f) {
						fail("LookupOutbound(%v) returned a non-matching SA %d", f.Dst, sa.Handle)
					}
					seen(sa, start, "outbound")
				}
				lookups.Add(1)
			}
		}(uint64(g))
	}

	// Writers: one adds and deletes, one updates ESN high bits.
	var live sync.Map // Handle -> spi
	wg.Add(2)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, 1))
		for !stop.Load() {
			var cfgs []Config
			for n := 1 + r.IntN(8); n > 0; n-- {
				i := r.IntN(nSPI)
				spi := uint32(1000 + i)
				if r.IntN(2) == 0 {
					c := inCfg(spi, dstOf(i).String())
					c.Algo.ESN = true
					cfgs = append(cfgs, c)
				} else {
					c := outCfg(spi, "192.0.2.1", Selector{Dst: netip.PrefixFrom(dstOf(i), 32)})
					c.Algo.ESN = true
					cfgs = append(cfgs, c)
				}
			}
			res, _ := tab.Add(cfgs) // duplicates fail, that is fine
			for i, rr := range res {
				if rr.Handle != 0 {
					if rr.Handle >= maxH {
						stop.Store(true)
						return
					}
					live.Store(rr.Handle, cfgs[i].SPI)
				}
			}
			var del []Handle
			live.Range(func(k, _ any) bool {
				if r.IntN(3) == 0 {
					del = append(del, k.(Handle))
				}
				return true
			})
			for _, h := range del {
				live.Delete(h)
			}
			for i, err := range tab.Delete(del) {
				if err != nil {
					fail("Delete(%d): %v", del[i], err)
				}
			}
			e := epoch.Add(1)
			for _, h := range del {
				deletedAt[h%maxH].Store(e)
			}
		}
	}()
	go func() {
		defer wg.Done()
		hi := uint32(0)
		for !stop.Load() {
			hi++
			live.Range(func(k, v any) bool {
				// The SA may be deleted meanwhile: then the error
				// must be INVALID_PARAMETER "unknown handle".
				if err := tab.UpdateESN(k.(Handle), v.(uint32), hi); err != nil {
					if tab.Get(k.(Handle)) != nil {
						fail("UpdateESN(%d): %v", k, err)
					}
				}
				return true
			})
		}
	}()

	time.Sleep(duration)
	stop.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if lookups.Load() == 0 || epoch.Load() == 0 {
		t.Fatalf("nothing ran: %d lookups, %d deletes", lookups.Load(), epoch.Load())
	}
	t.Logf("%d lookup rounds, %d delete batches", lookups.Load(), epoch.Load())
}
