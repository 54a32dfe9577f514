package ipfrag

import "time"

// Config sets a Reassembler's limits. A zero or negative field takes its
// default.
type Config struct {
	// MaxDatagrams is how many incomplete datagrams, IPv4 and IPv6
	// together, are held at once (default 64). Each costs some 2 KiB of bookkeeping besides its
	// buffer.
	MaxDatagrams int
	// MaxBytes bounds the memory of the buffers of incomplete datagrams
	// (default 4 MiB); see Reassembler.Bytes. The free list of buffers
	// keeps at most as much again.
	MaxBytes int
	// Timeout is how long an incomplete datagram is kept after its first
	// fragment arrived (default 30 s, as Linux's ipfrag_time).
	Timeout time.Duration
	// Headroom and Tailroom are the bytes the caller needs before and
	// after a reassembled datagram in its buffer, to make it a bigger
	// packet in place.
	Headroom, Tailroom int
}

// Defaults of Config's fields.
const (
	DefaultMaxDatagrams = 64
	DefaultMaxBytes     = 4 << 20
	DefaultTimeout      = 30 * time.Second
)

// Result is what Reassembler.Add did with a fragment.
type Result int

const (
	// Held: the fragment is kept; its datagram is not complete yet.
	Held Result = iota
	// Complete: the fragment completed its datagram, which Add returns.
	Complete
	// Duplicate: the fragment is an exact duplicate of one held (same
	// offset, length, More Fragments bit or M flag, and data) and was
	// ignored.
	Duplicate
	// Invalid: the fragment is malformed, or inconsistent with those held
	// for its datagram, and was dropped (with the datagram, in the second
	// case).
	Invalid
	// Full: there is no room for the fragment (MaxDatagrams or MaxBytes
	// reached) and it was dropped (with its datagram, if that needed more
	// room than there is).
	Full
)

var resultNames = [...]string{"held", "complete", "duplicate", "invalid", "full"}

// String returns the result's name: held, complete, duplicate, invalid or
// full.
func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "Result(?)"
}

// Datagram is a reassembled IPv4 or IPv6 datagram in a buffer of the
// Reassembler's. Buf[Start:End] is the packet; at least Config.Headroom
// bytes before Start and Config.Tailroom after End are the caller's to
// use, with whatever they hold.
type Datagram struct {
	Buf        []byte
	Start, End int
}

// Packet returns the reassembled packet, Buf[Start:End].
func (d Datagram) Packet() []byte { return d.Buf[d.Start:d.End] }
