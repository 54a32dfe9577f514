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

// TestReleaseAfterQuiet: memory a burst freed is returned to the system
// once no collection ran for a while, and not before.
func TestReleaseAfterQuiet(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	free := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	burst := make([][]byte, 0, 256)
	for range 256 {
		burst = append(burst, make([]byte, 1<<20))
	}
	runtime.KeepAlive(burst)
	burst = nil
	runtime.GC()
	if f := free(); f < releaseMin {
		t.Skipf("only %d bytes free after the burst: the runtime returned them itself", f)
	}
	var w watcher
	t0 := time.Now()
	w.update(t0)
	w.update(t0.Add(time.Second))
	if f := free(); f < releaseMin {
		t.Fatalf("memory returned %v after the last collection, before the quiet period", time.Second)
	}
	w.update(t0.Add(quiet))
	if f := free(); f >= releaseMin {
		t.Errorf("%d bytes still free after a quiet period, want them returned", f)
	}
}
