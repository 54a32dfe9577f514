// Package sadb is vnic's database of offloaded security associations: the
// SA records, their handles, the device's capacity (SaOffloadCapacity), and
// the lookups the data path makes on every packet.
//
// Writers (the OID channel) serialise on a mutex and publish immutable
// snapshots; readers (the engine, on every packet) load the current
// snapshot with one atomic load and take no lock.
package sadb

import (
	"net/netip"
	"sync/atomic"
	"time"

	"vnic/algo"
	"vnic/esn"
	"vnic/ndis"
)

// Handle identifies an offloaded SA (the NDIS OffloadHandle). Handles are
// never zero and never reused while the process lives.
type Handle uint64

// Direction says whether an SA protects traffic leaving or entering vnic0.
type Direction uint8

// Directions.
const (
	Outbound Direction = iota
	Inbound
)

// Mode is the ESP mode.
type Mode uint8

// Modes.
const (
	Tunnel Mode = iota
	Transport
)

// Encap is the underlay framing of the SA's ESP packets.
type Encap struct {
	// UDP is true for ESP-in-UDP (RFC 3948).
	UDP bool
	// SrcPort and DstPort are the outer UDP ports. The local one (an
	// outbound SA's SrcPort, an inbound SA's DstPort) is the table's
	// UDPPort, the port the device really uses: 0 means it, and another
	// value is refused. The peer's port is 4500 when zero.
	SrcPort, DstPort uint16
	// KeepaliveInterval, for an outbound ESP-in-UDP SA, is how long the SA
	// may send nothing before the device sends a NAT keepalive (RFC 3948
	// §2.3: one 0xFF byte in UDP, from the SA's source port to its
	// destination), and then one per interval while it stays idle, so
	// that a NAT on the path keeps its mapping: ip xfrm's
	// nat-keepalive-interval. Whole seconds; 0: none.
	KeepaliveInterval time.Duration
}

// Selector is a traffic selector (RFC 4301 §4.4.1): the inner packets an SA
// carries. A zero prefix means any address of the other prefix's family,
// or any at all when both are zero; Proto 0 means any protocol; a port of 0
// means any port.
type Selector struct {
	Src, Dst         netip.Prefix
	Proto            uint8
	SrcPort, DstPort uint16
}

// Lifetime holds the soft and hard limits of an SA. Zero means no limit.
type Lifetime struct {
	SoftBytes, HardBytes     uint64
	SoftPackets, HardPackets uint64
	SoftAdd, HardAdd         time.Duration // since the SA was added
}

// Config is an SA as a host offloads it (one element of ADD_SA): the NDIS
// fields and vnic's extensions.
type Config struct {
	Direction Direction
	Mode      Mode
	// Proto is the operation: only ndis.OperationESP is supported; AH
	// and AH+ESP bundles are refused with NDIS_STATUS_NOT_SUPPORTED.
	Proto ndis.Operation
	SPI   uint32
	// SeqHigh is SequenceNumberHighOrder: the initial high 32 bits (ESN).
	SeqHigh uint32
	// Src and Dst are the outer endpoints (tunnel endpoints in tunnel
	// mode, the hosts in transport mode). An invalid (zero) Addr is the
	// NDIS wildcard; an outbound SA needs Dst.
	Src, Dst netip.Addr
	Encap    Encap
	// Algorithms and keys; Spec.ESN is the IPSEC_OFFLOAD_V2_ESN_SA flag.
	Algo algo.Spec
	// ReplayWindow is the anti-replay window of an inbound SA: 0 means
	// the table's DefaultReplayWindow, ReplayOff turns replay protection
	// off (not allowed with ESN), and outbound SAs must leave it 0.
	ReplayWindow int
	Lifetime     Lifetime
	// InitialSeq is the first outbound sequence number (low bits; the
	// high bits come from SeqHigh). 0 means 1. For an inbound SA it is
	// the low bits of the highest number already received (as ip xfrm's
	// replay-seq): the replay window starts at SeqHigh<<32|InitialSeq.
	InitialSeq uint64
	// Selectors choose the outbound SA for a packet and check decrypted
	// inbound packets. None means: any packet in tunnel mode, packets
	// between Src and Dst in transport mode.
	Selectors []Selector
	// Pair is the handle of the opposite-direction SA this one pairs with
	// (0 = none).
	Pair Handle
}

// ReplayOff as Config.ReplayWindow turns an inbound SA's replay
// protection off, as `ip xfrm state ... replay-window 0` does.
const ReplayOff = -1

// Counters are an SA's live counters; the data path updates them
// atomically.
type Counters struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64
	// drops are the SA's drop counters by reason, made at its first drop:
	// most SAs never drop a packet, and a device holds a million.
	drops atomic.Pointer[[NumReasons]atomic.Uint64]
}

// Drop counts n packets of the SA dropped for r.
func (c *Counters) Drop(r Reason, n uint64) {
	d := c.drops.Load()
	if d == nil {
		c.drops.CompareAndSwap(nil, new([NumReasons]atomic.Uint64))
		d = c.drops.Load()
	}
	d[r].Add(n)
}

// Dropped returns how many packets of the SA were dropped for r.
func (c *Counters) Dropped(r Reason) uint64 {
	if d := c.drops.Load(); d != nil {
		return d[r].Load()
	}
	return 0
}

// SA is an offloaded SA. Its configuration is immutable after Add; state
// that changes (sequence numbers, counters, flags) is safe for concurrent
// use.
type SA struct {
	Handle Handle
	Config Config // keys in Config.Algo are wiped on Delete
	// added is when the SA was added, as time since epoch (Added): on
	// the monotonic clock, so that a step of the wall clock does not
	// expire SAs.
	added time.Duration

	Cipher algo.Cipher
	// Out is the outbound counter (outbound SAs only).
	Out *esn.Outbound
	// In is the replay window (inbound SAs only).
	In *esn.Window

	Counters Counters

	// DeleteRequested is set once the device asked the host to delete
	// this SA (SaDeleteReq); the SA keeps working until DELETE_SA.
	DeleteRequested atomic.Bool
	// SoftExpired is set once a soft lifetime was reached.
	SoftExpired atomic.Bool
	// HardExpired is set once a hard lifetime was reached: the SA then
	// processes no more packets.
	HardExpired atomic.Bool
	// dead is set when the SA is deleted; a packet already holding the
	// SA drops when it sees it.
	dead atomic.Bool
	// peerWarnFrom (inbound SAs) is the number from which a received
	// packet says the peer nears the end of its sequence numbers (the
	// table's WarnAt before the last usable one); peerWarned is set by
	// the first such packet.
	peerWarnFrom uint64
	peerWarned   atomic.Bool
	// all is true when one of sels is the any-selector.
	all bool

	// pair is the opposite-direction twin (see Table.Paired); both links
	// are set and cleared under the table's writer mutex.
	pair atomic.Pointer[SA]
	// sels are the effective selectors: Config.Selectors, or the implied
	// one when there are none. Immutable after Add.
	sels []Selector
}

// epoch is the process's start, which SA.added counts from.
var epoch = time.Now()

// Added returns when the SA was added. The time carries a monotonic clock
// reading: durations measured from it ignore steps of the wall clock.
func (sa *SA) Added() time.Time { return epoch.Add(sa.added) }

// PeerNearExhaustion reports, for an inbound SA, whether the packet
// numbered seq (which passed its integrity check) is the first to show
// that the peer nears the end of its sequence numbers, so that the device
// asks for a rekey (SaDeleteReq) while the peer can still send. It is true
// once per SA.
func (sa *SA) PeerNearExhaustion(seq uint64) bool {
	return sa.peerWarnFrom != 0 && seq >= sa.peerWarnFrom && sa.peerWarned.CompareAndSwap(false, true)
}

// Selectors returns the SA's effective traffic selectors: Config.Selectors,
// or, when there are none, the implied one (any packet in tunnel mode;
// Src/32 or /128 to Dst/32 or /128 in transport mode). The slice is shared:
// do not modify it.
func (sa *SA) Selectors() []Selector { return sa.sels }

// Match reports whether f matches any of the SA's effective selectors. The
// engine uses it to check decrypted inbound packets (RFC 4301 §5.2,
// XfrmInTmplMismatch). It does not allocate.
func (sa *SA) Match(f Flow) bool {
	for i := range sa.sels {
		if sa.sels[i].Match(f) {
			return true
		}
	}
	return false
}

// MatchesAll reports whether the SA's selectors admit every packet, so that
// the engine can skip reading the flow of a decrypted packet.
func (sa *SA) MatchesAll() bool { return sa.all }

// Alive reports whether the SA may still process packets: not deleted and
// not past a hard lifetime.
func (sa *SA) Alive() bool { return !sa.dead.Load() && !sa.HardExpired.Load() }

// Reason is why the data path dropped a packet. Names follow the Linux
// /proc/net/xfrm_stat counters where one exists.
type Reason uint8

// Drop reasons.
const (
	InError           Reason = iota // XfrmInError: other inbound error
	InBufferError                   // XfrmInBufferError: no room in the buffer
	InHdrError                      // XfrmInHdrError: malformed outer or ESP header
	InNoStates                      // XfrmInNoStates: no SA for SPI/destination
	InStateProtoError               // XfrmInStateProtoError: ICV failure, bad padding, bad trailer
	InStateModeError                // XfrmInStateModeError: next header does not fit the mode
	InStateSeqError                 // XfrmInStateSeqError: replayed or too old
	InStateExpired                  // XfrmInStateExpired: hard lifetime reached
	InStateMismatch                 // XfrmInStateMismatch: encapsulation does not match the SA
	InTmplMismatch                  // XfrmInTmplMismatch: inner packet fails the selectors
	InDummy                         // vnic: dummy packet (next header 59), dropped as RFC 4303 says
	OutError                        // XfrmOutError: other outbound error
	OutBufferError                  // XfrmOutBufferError: no room in the buffer
	OutNoStates                     // XfrmOutNoStates: no outbound SA for the packet
	OutStateSeqError                // XfrmOutStateSeqError: sequence numbers exhausted
	OutStateExpired                 // XfrmOutStateExpired: hard lifetime reached
	OutTooBig                       // vnic: the protected packet would exceed 65535 bytes
	OutFragInvalid                  // vnic: transport mode, a malformed or overlapping IP fragment
	OutFragFull                     // vnic: transport mode, no room to reassemble another datagram
	OutFragTimeout                  // vnic: transport mode, fragments of a datagram that never completed
	OutLinkLocal                    // vnic: no outbound SA for a link-scoped packet (vnic0's own router solicitations, MLD, neighbour discovery)
	NumReasons
)

var reasonNames = [NumReasons]string{
	"XfrmInError", "XfrmInBufferError", "XfrmInHdrError", "XfrmInNoStates",
	"XfrmInStateProtoError", "XfrmInStateModeError", "XfrmInStateSeqError",
	"XfrmInStateExpired", "XfrmInStateMismatch", "XfrmInTmplMismatch",
	"VnicInDummy",
	"XfrmOutError", "XfrmOutBufferError", "XfrmOutNoStates",
	"XfrmOutStateSeqError", "XfrmOutStateExpired",
	"VnicOutTooBig", "VnicOutFragInvalid", "VnicOutFragFull", "VnicOutFragTimeout",
	"VnicOutLinkLocal",
}

// String returns the counter name, for example "XfrmInStateSeqError".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "XfrmUnknown"
}
