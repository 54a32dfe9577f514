package grace

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitIdle: with no reader in a section, Wait returns at once.
func TestWaitIdle(t *testing.T) {
	var d Domain
	r := d.NewReader()
	r.Enter()
	r.Exit()
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait blocked with no section in progress")
	}
}

// TestWaitForSection: Wait returns only after a section in progress when
// it was called ends, and is not held up by sections that start later.
func TestWaitForSection(t *testing.T) {
	var d Domain
	slow, busy := d.NewReader(), d.NewReader()
	slow.Enter()
	var returned atomic.Bool
	done := make(chan struct{})
	go func() { d.Wait(); returned.Store(true); close(done) }()

	// Another reader keeps entering and leaving, and is never made to
	// wait by the writer.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	untilClosed(stop, &wg, func() { busy.Enter(); busy.Exit() })
	time.Sleep(20 * time.Millisecond)
	if returned.Load() {
		t.Fatal("Wait returned while a section that began before it was in progress")
	}
	slow.Exit()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the section ended")
	}
	close(stop)
	wg.Wait()
}

// TestWaitIgnoresLaterSections: a section that starts after Wait began
// does not hold it up, even if it never ends.
func TestWaitIgnoresLaterSections(t *testing.T) {
	var d Domain
	first, later := d.NewReader(), d.NewReader()
	first.Enter()
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	time.Sleep(5 * time.Millisecond) // Wait has taken its snapshot
	later.Enter()
	first.Exit()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait waited for a section that began after it")
	}
	later.Exit()
}

// TestWaitContext: a wait given up returns the context's error.
func TestWaitContext(t *testing.T) {
	var d Domain
	r := d.NewReader()
	r.Enter()
	defer r.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := d.WaitContext(ctx); err != context.DeadlineExceeded {
		t.Fatalf("WaitContext = %v, want %v", err, context.DeadlineExceeded)
	}
}

// TestClose: a closed reader is not waited for.
func TestClose(t *testing.T) {
	var d Domain
	r := d.NewReader()
	if r.InSection() {
		t.Fatal("a new reader is in a section")
	}
	r.Enter()
	if !r.InSection() {
		t.Fatal("InSection false after Enter")
	}
	r.Exit()
	r.Close()
	if len(d.readers) != 0 {
		t.Fatalf("%d readers after Close, want 0", len(d.readers))
	}
}

// TestNoUseAfterWait is the property DELETE_SA relies on: a value that a
// reader found reachable inside a section is never freed while it uses
// it.
func TestNoUseAfterWait(t *testing.T) {
	type obj struct{ freed atomic.Bool }
	var d Domain
	var cur atomic.Pointer[obj]
	cur.Store(new(obj))
	var bad atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		r := d.NewReader()
		untilClosed(stop, &wg, func() {
			r.Enter()
			o := cur.Load()
			for range 100 {
				if o.freed.Load() {
					bad.Add(1)
				}
			}
			r.Exit()
		})
	}
	for range 200 {
		old := cur.Swap(new(obj))
		d.Wait()
		old.freed.Store(true)
	}
	close(stop)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("readers used a freed value %d times", n)
	}
}

// untilClosed runs f over and over in a goroutine counted in wg until
// stop is closed.
func untilClosed(stop chan struct{}, wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			f()
		}
	}()
}

func BenchmarkSection(b *testing.B) {
	var d Domain
	r := d.NewReader()
	for b.Loop() {
		r.Enter()
		r.Exit()
	}
}
