package memlimit

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int64
	}{
		{0, 32 << 20},
		{100 << 20, 125<<20 + 32<<20},
		{800 << 20, 1000<<20 + 32<<20},
		{math.MaxUint64, math.MaxInt64},
	} {
		if got := Limit(tc.live); got != tc.want {
			t.Errorf("Limit(%d) = %d, want %d", tc.live, got, tc.want)
		}
	}
}

// TestRunRespectsEnvironment: with GOGC or GOMEMLIMIT set, Run returns at
// once and changes nothing.
func TestRunRespectsEnvironment(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(env, "100")
			done := make(chan struct{})
			go func() { Run(context.Background()); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("Run kept running with %s set", env)
			}
			if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
				t.Errorf("memory limit %d with %s set, want none", l, env)
			}
		})
	}
}

// TestRunSetsAndRestores: while Run runs, GOGC is off and the memory limit
// is Limit of the live heap; when its context ends, both are as before.
func TestRunSetsAndRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) == math.MaxInt64 {
		if time.Now().After(deadline) {
			t.Fatal("Run set no memory limit")
		}
		time.Sleep(time.Millisecond)
	}
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Errorf("GOGC %d while Run runs, want off (-1)", p)
	}
	if l := debug.SetMemoryLimit(-1); l < slack || l > 1<<30 {
		t.Errorf("memory limit %d for a test's heap, want from %d to 1 GiB", l, slack)
	}
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC %d after Run, want 100 as before", p)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d after Run, want none as before", l)
	}
}

// TestReleaseAfterQuiet: once the live heap moved (a table grew), the
// memory freed is returned to the system when no collection ran for a
// while, and not before; while the live heap stays where it was, freed
// memory is left for the next collection to reuse.
func TestReleaseAfterQuiet(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	free := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	garbage := func() {
		burst := make([][]byte, 0, 256)
		for range 256 {
			burst = append(burst, make([]byte, 1<<20))
		}
		runtime.KeepAlive(burst)
		runtime.GC()
	}
	// A table grows by 96 MiB, leaving 256 MiB of garbage.
	table := make([][]byte, 0, 96)
	for range 96 {
		table = append(table, make([]byte, 1<<20))
	}
	garbage()
	if f := free(); f < releaseMin {
		t.Skipf("only %d bytes free after the burst: the runtime returned them itself", f)
	}
	releases := 0
	defer func(f func()) { freeOSMemory = f }(freeOSMemory)
	freeOSMemory = func() { releases++; debug.FreeOSMemory() }
	var w watcher
	t0 := time.Now()
	if !w.update(t0) {
		t.Fatal("update found no live-heap metric in this runtime")
	}
	w.update(t0.Add(time.Second))
	if releases != 0 {
		t.Fatalf("memory returned %v after the last collection, before the quiet period", time.Second)
	}
	w.update(t0.Add(quiet))
	if f := free(); releases != 1 || f >= releaseMin {
		t.Errorf("%d releases, %d bytes still free after a quiet period; want 1, and them returned", releases, f)
	}

	// The same table, garbage again: the memory stays for reuse.
	garbage()
	t1 := t0.Add(time.Hour)
	w.update(t1)
	w.update(t1.Add(quiet))
	if releases != 1 {
		t.Errorf("%d releases: memory returned again though the live heap did not move", releases)
	}
	runtime.KeepAlive(table)
}
