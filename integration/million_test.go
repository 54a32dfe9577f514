package integration

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"vnic/internal/testutil"
	"vnic/ndis"
	"vnic/oid"
)

// BenchmarkDaemonMillionSAs measures the daemon as a NIC that holds a
// million SAs: `vnic up -capacity 1000000` (built without the race
// detector), a million inbound AES-GCM SAs with time lifetimes added over
// the OID socket in batches of 1000, then, with no traffic, its resident
// memory (rss-MiB) and the share of a core it uses over 125 s
// (idle-cpu-%). It needs root (namespaces) and takes about five minutes:
//
//	go test -run='^$' -bench=DaemonMillionSAs -benchtime=1x ./integration
func BenchmarkDaemonMillionSAs(b *testing.B) {
	const n, batch = 1_000_000, 1000
	const settle = 30 * time.Second
	bin := plainBin(b)
	tp := newTopology(b)
	tp.a.startBin(b, bin, append([]string{"-capacity", strconv.Itoa(n), "-log-level", "info"}, benchFlags...)...)
	c, err := oid.Dial(tp.a.sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	start := time.Now()
	sas := make([]oid.SA, batch)
	for i := 0; i < n; i += batch {
		for j := range sas {
			key := make([]byte, 20)
			binary.BigEndian.PutUint32(key, uint32(i+j))
			sas[j] = oid.SA{Direction: "in", SrcAddr: "192.168.77.2", DestAddr: "192.168.77.1", KeyData: key,
				SecAssoc: []oid.SecAssoc{{Operation: 2, Spi: uint32(0x1000 + i + j),
					EncryptionAlgorithm: oid.AlgorithmInfo{Identifier: uint32(ndis.EncryptionAESGCM128), AdditionalInfo: 16}}},
				Vnic: &oid.SAExtensions{Lifetime: &oid.Lifetime{SoftSeconds: 3000, HardSeconds: 3600}}}
		}
		res, err := c.AddSA(ctx, sas...)
		if err != nil {
			b.Fatalf("ADD_SA at %d: %v", i, err)
		}
		for k, r := range res {
			if r.Handle == 0 {
				b.Fatalf("ADD_SA element %d: %s %s", i+k, r.Status, r.Reason)
			}
		}
	}
	b.Logf("added %d SAs in %v", n, time.Since(start).Round(time.Millisecond))
	pid := tp.a.daemon.Process.Pid
	time.Sleep(settle) // the adds' garbage collected and returned
	b.ResetTimer()
	cpu0, t0 := cpuTicks(b, pid), time.Now()
	for b.Loop() {
		// Over two minutes: the Go runtime forces a collection every
		// two minutes, and a million SAs make it the biggest cost of an
		// idle daemon.
		time.Sleep(125 * time.Second)
	}
	cpu := float64(cpuTicks(b, pid)-cpu0) / 100 // clock ticks of 10 ms
	b.ReportMetric(cpu/time.Since(t0).Seconds()*100, "idle-cpu-%")
	rss, _ := testutil.ProcStatus(b, pid)
	b.ReportMetric(float64(rss)/mib, "rss-MiB")
}

// benchFlags are extra `vnic up` flags for the benchmark's daemon, from
// VNIC_BENCH_FLAGS (such as -cpuprofile FILE).
var benchFlags = strings.Fields(os.Getenv("VNIC_BENCH_FLAGS"))

// cpuTicks is the user and system time of process pid in clock ticks.
func cpuTicks(b *testing.B, pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, err1 := strconv.Atoi(f[11])
	stime, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	return utime + stime
}
