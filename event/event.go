// Package event is the device's event stream: what vnic tells the host
// stack without being asked (SaDeleteReq, lifetime expiry, ESN advance,
// crypto errors). The engine publishes; OID-channel subscribers receive.
//
// Publishing never blocks the data path: a subscriber that does not keep
// up loses events and sees the count of what it lost.
package event

import (
	"sync"
	"time"

	"vnic/sadb"
)

// Type names an event. The names are those of the OID channel.
type Type string

// Event types.
const (
	// SaDeleteReq: the device asks the host to delete this inbound SA and
	// its paired outbound SA (NDIS SaDeleteReq). It keeps both until
	// DELETE_SA arrives.
	SaDeleteReq Type = "SaDeleteReq"
	// SoftLifetime: a soft lifetime was reached: rekey now.
	SoftLifetime Type = "SoftLifetimeExpired"
	// HardLifetime: a hard lifetime was reached: the SA processes no more
	// packets.
	HardLifetime Type = "HardLifetimeExpired"
	// ESNAdvanced: inbound inference moved an SA's ESN high-order bits.
	ESNAdvanced Type = "EsnAdvanced"
	// CryptoError: packets failed on an SA (rate-limited: one event per SA
	// and drop counter per interval, with the count of failures since the
	// previous one; those of the interval after an event are reported when
	// it ends, even if no further packet fails).
	CryptoError Type = "CryptoError"
	// SaAdded, SaDeleted and SaUpdated follow an SA's life through
	// ADD_SA, DELETE_SA and UPDATE_SA, as ip xfrm monitor shows the
	// kernel's (SaUpdated carries the new ESN high-order bits).
	SaAdded   Type = "SaAdded"
	SaDeleted Type = "SaDeleted"
	SaUpdated Type = "SaUpdated"
)

// Event is one notification.
type Event struct {
	Type      Type        `json:"type"`
	Time      time.Time   `json:"time"`
	Handle    sadb.Handle `json:"handle,omitempty"`
	Pair      sadb.Handle `json:"pair,omitempty"`
	Direction string      `json:"direction,omitempty"`
	SPI       uint32      `json:"spi,omitempty"`
	// Src, Dst and Mode are the SA's endpoints ("any" for the wildcard)
	// and mode, so that an event says which tunnel it is about even
	// once the SA is gone.
	Src  string `json:"src,omitempty"`
	Dst  string `json:"dst,omitempty"`
	Mode string `json:"mode,omitempty"`
	// Reason says why, in words (for SaDeleteReq: "outbound sequence
	// numbers near exhaustion", "the peer's sequence numbers near
	// exhaustion", "hard lifetime reached", "operator request").
	Reason string `json:"reason,omitempty"`
	// SeqHigh is the new ESN high-order value (EsnAdvanced).
	SeqHigh uint32 `json:"seq_high,omitempty"`
	// CryptoStatus and Counter name a crypto error and its drop counter;
	// Count is how many packets it covers.
	CryptoStatus string `json:"crypto_status,omitempty"`
	Counter      string `json:"counter,omitempty"`
	Count        uint64 `json:"count,omitempty"`
}

// Bus fans events out to subscribers.
type Bus struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// Subscription receives events on C until Close.
type Subscription struct {
	// C delivers events. It is closed by Close.
	C       <-chan Event
	c       chan Event
	bus     *Bus
	mu      sync.Mutex
	dropped uint64
	closed  bool
}

// subscriberQueue is how many events a subscriber may fall behind.
const subscriberQueue = 1024

// Subscribe returns a new subscription.
func (b *Bus) Subscribe() *Subscription {
	c := make(chan Event, subscriberQueue)
	s := &Subscription{C: c, c: c, bus: b}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Publish sends e to every subscriber without blocking; a full subscriber
// loses it. A zero Time is set to now.
func (b *Bus) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
	}
}

// Dropped returns how many events this subscriber lost by falling behind.
func (s *Subscription) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Close ends the subscription and closes C.
func (s *Subscription) Close() {
	s.bus.mu.Lock()
	delete(s.bus.subs, s)
	s.bus.mu.Unlock()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.c)
	}
	s.mu.Unlock()
}
