package offload

import (
	"encoding/binary"
	"sync"
	"testing"

	"vnic/sadb"
)

// TestConcurrentEncapsulateNumbersUnique has many goroutines protect
// packets with one SA at once: every number from the first up is used
// exactly once, and no IV repeats.
func TestConcurrentEncapsulateNumbersUnique(t *testing.T) {
	out, _ := pair(t, sadb.Config{Mode: sadb.Tunnel, Src: v4a, Dst: v4b, SPI: 0x200, Algo: gcm128()})
	const goroutines, each = 8, 2000
	seqs := make([][]uint32, goroutines)
	ivs := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := newBuf()
			for range each {
				end := udpPacket(buf, Headroom, in4a, in4b, 1, 2, 100)
				sp, _, err := encapWire(out, buf, Headroom, end)
				if err != nil {
					t.Error(err)
					return
				}
				esp := sp.Start + ipv4MinHeader
				seqs[g] = append(seqs[g], binary.BigEndian.Uint32(buf[esp+4:]))
				ivs[g] = append(ivs[g], binary.BigEndian.Uint64(buf[esp+8:]))
			}
		}()
	}
	wg.Wait()
	seen := make([]bool, goroutines*each+1)
	ivSeen := map[uint64]bool{}
	for g := range goroutines {
		for i, s := range seqs[g] {
			if s == 0 || int(s) > goroutines*each || seen[s] {
				t.Fatalf("number %d handed out twice or out of range", s)
			}
			if i > 0 && s <= seqs[g][i-1] {
				t.Fatalf("goroutine %d got %d after %d", g, s, seqs[g][i-1])
			}
			seen[s] = true
			if ivSeen[ivs[g][i]] {
				t.Fatalf("IV %016x used twice", ivs[g][i])
			}
			ivSeen[ivs[g][i]] = true
		}
	}
}
