// Package grace tells a writer when every reader has moved past a moment:
// the grace period of read-copy-update. vnic's packet loops are the
// readers (each batch of packets is one read-side section) and DELETE_SA
// is the writer: once a deleted SA is unreachable, Wait returns when no
// batch that might still hold it is in flight, and only then are its keys
// wiped.
//
// Readers never block and never wait for a writer: entering and leaving a
// section are one atomic add each. A writer waits only for the sections
// that were in progress when it called Wait, each on its own, so a loop
// stuck in a slow send delays the deleter, never another loop.
package grace

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Domain is a set of readers that a writer can wait out. The zero value is
// ready to use.
type Domain struct {
	mu      sync.Mutex
	readers []*Reader
}

// Reader is one goroutine's read-side sections in a Domain. Its methods,
// other than Close, must be called from one goroutine at a time.
type Reader struct {
	d *Domain
	// n counts Enter and Exit calls: odd while a section is in progress.
	n atomic.Uint64
}

// NewReader registers a reader in d.
func (d *Domain) NewReader() *Reader {
	r := &Reader{d: d}
	d.mu.Lock()
	d.readers = append(d.readers, r)
	d.mu.Unlock()
	return r
}

// Close unregisters r; it must not be in a section.
func (r *Reader) Close() {
	d := r.d
	d.mu.Lock()
	d.readers = slices.DeleteFunc(d.readers, func(x *Reader) bool { return x == r })
	d.mu.Unlock()
}

// Enter starts a read-side section: what the reader finds reachable from
// now until Exit stays valid until then.
func (r *Reader) Enter() { r.n.Add(1) }

// Exit ends the section that Enter started.
func (r *Reader) Exit() { r.n.Add(1) }

// InSection reports whether r is between Enter and Exit.
func (r *Reader) InSection() bool { return r.n.Load()&1 == 1 }

// Wait returns once every section in progress when it was called has
// ended. Whatever the caller made unreachable before calling Wait is then
// held by no reader. Sections that start after the call are not waited
// for: they cannot reach what was made unreachable.
func (d *Domain) Wait() { d.WaitContext(context.Background()) }

// pollMax is the longest Wait sleeps between two looks at a reader.
const pollMax = time.Millisecond

// WaitContext is Wait that gives up when ctx ends, returning ctx's error.
func (d *Domain) WaitContext(ctx context.Context) error {
	type busy struct {
		r *Reader
		n uint64
	}
	var pending []busy
	d.mu.Lock()
	for _, r := range d.readers {
		if n := r.n.Load(); n&1 == 1 {
			pending = append(pending, busy{r, n})
		}
	}
	d.mu.Unlock()
	sleep := 5 * time.Microsecond
	for _, b := range pending {
		for b.r.n.Load() == b.n {
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(sleep)
			sleep = min(2*sleep, pollMax)
		}
	}
	return nil
}
