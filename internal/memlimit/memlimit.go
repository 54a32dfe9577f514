// Package memlimit runs the garbage collector the way vnic's daemon needs
// it. The data path allocates nothing, so the heap is what the SA table
// holds (a million SAs take most of a gigabyte) and garbage comes only
// from the control plane. Go's defaults suit that badly: GOGC=100 lets the
// heap double before a collection, and the runtime forces a full
// collection every two minutes, which marks the whole table (over a second
// of CPU with a million SAs) while the daemon has nothing to do.
//
// Instead, the collector runs when the heap outgrows a memory limit set a
// quarter (plus 32 MiB) above the live heap, kept up to date once a
// second; with GOGC off, the runtime's two-minute collection does not run.
// And once the collector has been quiet for a while after the table grew
// or shrank (a million ADD_SA elements leave their decoded requests and
// the table's old snapshots behind), the memory freed is given back to the
// system at once, rather than by the runtime's background scavenger:
// slowly, for a little CPU all along, and never below the limit.
package memlimit

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The limit is the live heap plus a growth-th of it plus slack bytes.
// When no collection ran for quiet after the live heap moved by an eighth
// (at least releaseMin) since memory was last returned, and at least
// releaseMin bytes of the heap are free, they are returned to the system.
const (
	growth     = 4
	slack      = 32 << 20
	interval   = time.Second
	quiet      = 5 * time.Second
	releaseMin = 64 << 20
)

// Limit returns the memory limit for a live heap of live bytes.
func Limit(live uint64) int64 {
	if live >= math.MaxInt64/2 {
		return math.MaxInt64
	}
	return int64(live + live/growth + slack)
}

// Run keeps the memory limit at Limit of the live heap, with GOGC off,
// and returns freed memory after bursts, until ctx ends; then it restores
// the settings it found. It does nothing when the environment sets GOGC or
// GOMEMLIMIT: the operator's choice stands.
func Run(ctx context.Context) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	oldLimit := debug.SetMemoryLimit(-1) // a negative limit only reads it
	var w watcher
	if !w.update(time.Now()) {
		return // no live-heap metric to follow: Go's policy stays
	}
	oldPercent := debug.SetGCPercent(-1)
	defer func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.update(now)
		}
	}
}

// freeOSMemory returns free memory to the system; tests count the calls.
var freeOSMemory = debug.FreeOSMemory

// watcher is Run's view of the collector.
type watcher struct {
	samples  [3]metrics.Sample
	cycles   uint64    // collections so far, when last looked at
	lastGC   time.Time // when cycles was seen to change
	released uint64    // the live heap when memory was last returned
}

// update sets the limit from the live heap and, once the collector has
// been quiet for a while after the live heap moved, returns free memory to
// the system. It reports false, changing nothing, when the runtime lacks
// the metrics.
func (w *watcher) update(now time.Time) bool {
	s := &w.samples
	s[0].Name, s[1].Name, s[2].Name = "/gc/heap/live:bytes", "/gc/cycles/total:gc-cycles", "/memory/classes/heap/free:bytes"
	metrics.Read(s[:])
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return false
		}
	}
	live, cycles, free := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	debug.SetMemoryLimit(Limit(live))
	if cycles != w.cycles {
		w.cycles, w.lastGC = cycles, now
		return true
	}
	// Only after the table grew or shrank: in a steady state, the free
	// memory is the limit's headroom, which the next collection reuses,
	// and returning it would cost a full collection each time.
	moved := max(live, w.released)-min(live, w.released) >= max(live/8, releaseMin)
	if moved && now.Sub(w.lastGC) >= quiet && free >= releaseMin {
		w.released = live
		freeOSMemory()
	}
	return true
}
