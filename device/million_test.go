package device

import (
	"encoding/binary"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/sadb"
)

// BenchmarkMillionSAs holds a million inbound AES-GCM SAs, as a NIC holds
// them: each with a time lifetime (as IKE daemons give every SA) and its
// own key. It reports the heap the SAs take (heap-B/SA, after a garbage
// collection; the daemon's resident memory is about this plus the
// collector's headroom) and the cost of one timer tick with nothing due
// (tick-ns; idle-cpu-% is that cost once a second, as a share of a core).
//
//	go test -run='^$' -bench=MillionSAs -benchtime=100x ./device
func BenchmarkMillionSAs(b *testing.B) {
	const n = 1_000_000
	d := newDevice(Config{Table: sadb.TableConfig{Capacity: n, DefaultReplayWindow: 64}}, quiet)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const batch = 1000
	cfgs := make([]sadb.Config, batch)
	key := make([]byte, 20)
	for i := 0; i < n; i += batch {
		for j := range cfgs {
			binary.BigEndian.PutUint32(key, uint32(i+j))
			cfgs[j] = sadb.Config{Direction: sadb.Inbound, Mode: sadb.Tunnel, Src: v4b, Dst: v4a, SPI: uint32(0x1000 + i + j),
				Algo:     gcm128(),
				Lifetime: sadb.Lifetime{SoftAdd: 50 * time.Minute, HardAdd: time.Hour}}
			copy(cfgs[j].Algo.EncryptionKey, key)
		}
		if _, st := d.table.Add(cfgs); st != ndis.StatusSuccess {
			b.Fatalf("ADD_SA at %d: %v", i, st)
		}
	}
	now := time.Now()
	w := &sentWire{}
	d.tick(now, w) // schedules the million
	runtime.GC()
	runtime.ReadMemStats(&after)
	if d.table.Len() != n {
		b.Fatalf("%d SAs held, want %d", d.table.Len(), n)
	}
	heapPerSA := float64(after.HeapInuse-before.HeapInuse) / n
	debug.FreeOSMemory()
	rss, _ := testutil.ProcStatus(b, os.Getpid())
	b.ResetTimer()
	for b.Loop() {
		d.tick(now, w)
	}
	perTick := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perTick, "tick-ns")
	b.ReportMetric(heapPerSA, "heap-B/SA") // after ResetTimer, which clears metrics
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(perTick/float64(tickInterval.Nanoseconds())*100, "idle-cpu-%")
	runtime.KeepAlive(d)
}
