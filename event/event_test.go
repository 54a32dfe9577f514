package event

import (
	"testing"
	"time"
)

func TestBusFansOut(t *testing.T) {
	var b Bus
	s1, s2 := b.Subscribe(), b.Subscribe()
	b.Publish(Event{Type: SaDeleteReq, Handle: 7})
	for i, s := range []*Subscription{s1, s2} {
		select {
		case e := <-s.C:
			if e.Type != SaDeleteReq || e.Handle != 7 || e.Time.IsZero() {
				t.Errorf("subscriber %d got %+v", i, e)
			}
		case <-time.After(time.Second):
			t.Fatalf("subscriber %d got nothing", i)
		}
	}
	s1.Close()
	if _, ok := <-s1.C; ok {
		t.Fatal("C not closed by Close")
	}
	b.Publish(Event{Type: SoftLifetime}) // must not panic on the closed one
	if e := <-s2.C; e.Type != SoftLifetime {
		t.Fatalf("got %+v", e)
	}
	s2.Close()
	s2.Close() // twice is harmless
}

// TestSlowSubscriberLoses: Publish never blocks; what a full subscriber
// misses is counted.
func TestSlowSubscriberLoses(t *testing.T) {
	var b Bus
	s := b.Subscribe()
	defer s.Close()
	done := make(chan struct{})
	go func() {
		for range subscriberQueue + 10 {
			b.Publish(Event{Type: CryptoError})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	if got := s.Dropped(); got != 10 {
		t.Fatalf("Dropped = %d, want 10", got)
	}
}
