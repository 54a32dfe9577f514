// Package offload is vnic's ESP engine: it turns one plaintext IP packet
// into an ESP packet for the underlay and back (RFC 4303), in place in a
// buffer with headroom, in tunnel or transport mode, raw or encapsulated in
// UDP (RFC 3948), with the sequence-number, anti-replay, padding, trailer
// and selector rules of the RFCs. The ESP packet goes to and comes from
// the underlay as ESP bytes with their outer header as fields
// (header.Outer); the engine builds and parses no outer header bytes. The
// cryptography is the SA's algo.Cipher; the SA and its counters come from
// sadb.
//
// Every function here handles one packet and allocates nothing; the
// packet loops that read vnic0 and the underlay call them in batches.
package offload

import (
	"vnic/sadb"
)

// Event is a bit set of things a packet made happen to its SA that the
// host must hear about (they become OID-channel events).
type Event uint8

// Events.
const (
	// EventSeqNearExhaustion: an outbound SA crossed its warning
	// threshold before sequence-number exhaustion, or an inbound SA
	// received the first number past it from its peer (raise
	// SaDeleteReq).
	EventSeqNearExhaustion Event = 1 << iota
	// EventSoftLifetime: the SA reached a soft byte or packet limit.
	EventSoftLifetime
	// EventHardLifetime: the SA reached a hard byte or packet limit and
	// processes no more packets.
	EventHardLifetime
	// EventESNAdvanced: inbound inference moved the ESN high-order bits.
	EventESNAdvanced
)

// Span is where a packet lies in its buffer: buf[Start:End].
type Span struct{ Start, End int }

// Len returns the packet length.
func (s Span) Len() int { return s.End - s.Start }

// Room the engine must leave around a packet. An outbound packet needs
// Headroom bytes before it (ESP header, IV, and the outer IPv6 and UDP
// headers the underlay may write in front of them, which also cover the
// 16 bytes of scratch the ciphers use before the ESP header, and 8 to
// spare)
// and Tailroom bytes of capacity after it (padding, trailer, ICV and a
// full-length tag); inbound packets need neither beyond their own bytes,
// but Tailroom of spare capacity lets truncated-ICV ciphers decrypt in
// place.
const (
	Headroom = ipv6Header + udpHeader + espHeader + 16 + 8
	Tailroom = 15 + espTrailer + 32 + 16
)

// MaxOverhead is the most bytes ESP adds to a plaintext packet in tunnel
// mode: outer IPv6 header, UDP, ESP header, a 16-byte IV, up to 15 bytes of
// padding, the trailer and a 32-byte ICV. The device MTU is the underlay
// MTU minus this.
const MaxOverhead = ipv6Header + udpHeader + espHeader + 16 + 15 + espTrailer + 32

// account adds a packet of n bytes to sa's counters and returns the
// lifetime events it caused.
func account(sa *sadb.SA, n int) Event {
	p := sa.Counters.Packets.Add(1)
	b := sa.Counters.Bytes.Add(uint64(n))
	lt := &sa.Config.Lifetime
	var ev Event
	if reached(p, lt.SoftPackets) || reached(b, lt.SoftBytes) {
		if sa.SoftExpired.CompareAndSwap(false, true) {
			ev |= EventSoftLifetime
		}
	}
	if reached(p, lt.HardPackets) || reached(b, lt.HardBytes) {
		if sa.HardExpired.CompareAndSwap(false, true) {
			ev |= EventHardLifetime
		}
	}
	return ev
}

func reached(v, limit uint64) bool { return limit != 0 && v >= limit }
