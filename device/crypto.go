package device

import (
	"context"
	"sync"
)

// The device's loops spread the cryptography of a batch over the cores
// and keep everything else in order (wireguard-go's device/send.go and
// device/receive.go are the model):
//
//   - the loop that read the batch takes each packet's sequence number
//     (outbound) or makes the replay pre-check (inbound), in arrival order;
//   - the batch's packets are cut into ranges, and the crypto workers seal
//     or open the ranges in parallel, the loop itself taking the first;
//   - when every range is done, the loop finishes the packets in arrival
//     order (inbound: the replay window update, the trailer and selector
//     checks) and sends or writes the batch in that order.
//
// So each SA's packets leave with increasing sequence numbers and reach
// vnic0 in the order they arrived, whichever core did their crypto. The
// loops hand work over without blocking: when the workers are busy, the
// loop does the range itself, and a loop that waits for its ranges runs
// those that no worker has taken.

// cryptoBatch is a batch whose packets' cryptography can run in any order.
type cryptoBatch interface {
	// crypt does the cryptography of packets lo to hi-1.
	crypt(lo, hi int)
}

// cryptoRange is a range of a batch's packets for one worker.
type cryptoRange struct {
	b      cryptoBatch
	lo, hi int
	done   *sync.WaitGroup
}

// minRange is the fewest packets handed to a worker at once: below that,
// waking a worker costs more than the cryptography it would save (about a
// microsecond for a 1400-byte AES-GCM packet).
const minRange = 8

// runCrypto runs Config.CryptoWorkers crypto workers until ctx ends.
// Without it (or with no workers) each loop does its batches' cryptography
// itself.
func (d *Device) runCrypto(ctx context.Context) {
	var wg sync.WaitGroup
	for range d.cfg.CryptoWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case r := <-d.work:
					r.b.crypt(r.lo, r.hi)
					r.done.Done()
				}
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
}

// cryptAll runs the cryptography of b's n packets, in ranges spread over
// the workers and the calling goroutine, and returns when all are done.
func (d *Device) cryptAll(b cryptoBatch, n int, done *sync.WaitGroup) {
	size := n
	if w := d.cfg.CryptoWorkers; w > 0 && n >= 2*minRange {
		size = max(minRange, (n+w)/(w+1))
	}
	for lo := size; lo < n; lo += size {
		hi := min(lo+size, n)
		done.Add(1)
		select {
		case d.work <- cryptoRange{b, lo, hi, done}:
		default:
			b.crypt(lo, hi)
			done.Done()
		}
	}
	b.crypt(0, min(size, n))
	// Help while waiting: run whatever ranges no worker has taken yet
	// (ours or another loop's), so that a batch never waits on a worker
	// that has stopped. The ranges workers did take are finished whatever
	// happens.
	for {
		select {
		case r := <-d.work:
			r.b.crypt(r.lo, r.hi)
			r.done.Done()
		default:
			done.Wait()
			return
		}
	}
}
