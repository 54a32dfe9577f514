// Package oid is vnic's OID channel: the control protocol through which a
// host stack (the vnic CLI, a script, an IKE daemon) offloads security
// associations to the device, queries it and receives its events. It
// carries the NDIS "IPsec Offload Version 2" requests
// (OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA and friends) as JSON over a Unix
// socket, one request and one response per line.
//
// The package has three parts: the wire types (this file), the Server that
// the daemon runs over a Device, and the Client that the CLI uses. The
// protocol is documented for people in docs/oid-channel.md.
package oid

import (
	"encoding/json"
	"time"

	"vnic/event"
)

// OID names: the NDIS requests and vnic's extensions.
const (
	OIDCapabilities = "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES"
	OIDAddSA        = "OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA"
	OIDAddSAEx      = "OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA_EX"
	OIDDeleteSA     = "OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA"
	OIDUpdateSA     = "OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA"

	OIDQuerySA         = "VNIC_QUERY_SA"
	OIDStatistics      = "VNIC_STATISTICS"
	OIDRequestDelete   = "VNIC_REQUEST_DELETE"
	OIDSubscribeEvents = "VNIC_SUBSCRIBE_EVENTS"
)

// MaxRequest is the longest request line the server reads, newline
// excluded. A longer line is refused with NDIS_STATUS_INVALID_DATA as soon
// as it passes MaxRequest bytes, and skipped up to its newline; the
// connection keeps serving.
const MaxRequest = 1 << 20

// Request is the envelope every request shares. ID is any JSON value; the
// response echoes it. Requests embed it and add their parameters.
type Request struct {
	ID  any    `json:"id,omitempty"`
	OID string `json:"oid"`
}

// Header is the part every response shares.
type Header struct {
	// ID is the request's id, as sent (null when the request had none or
	// could not be read).
	ID json.RawMessage `json:"id"`
	// Status is an NDIS status name, for example "NDIS_STATUS_SUCCESS".
	Status string `json:"status"`
	// Reason says, on failure, what was wrong.
	Reason string `json:"reason,omitempty"`
	// Element is, when Reason concerns one element of the request (the
	// first refused element of ADD_SA), its 0-based index.
	Element *int `json:"element,omitempty"`
	// Generation identifies the daemon instance: it changes on every
	// start, so a host that sees a new value knows its SAs are gone.
	Generation uint64 `json:"generation"`
}

// CapabilitiesResponse answers OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES.
type CapabilitiesResponse struct {
	Header
	Capabilities Capabilities `json:"capabilities"`
}

// SA is one SA bundle as a host offloads it: the members of the NDIS
// IPSEC_OFFLOAD_V2_ADD_SA structure, with NDIS names, and vnic's
// extensions under "vnic". Field names are matched case-insensitively.
type SA struct {
	// Flags holds IPSEC_OFFLOAD_V2_INBOUND (1) and IPSEC_OFFLOAD_V2_IPv6
	// (0x10).
	Flags uint32 `json:"Flags,omitempty"`
	// Direction, "in" or "out" ("inbound", "outbound"), may replace the
	// INBOUND flag; when both are given they must agree.
	Direction string `json:"direction,omitempty"`
	// SrcAddr and DestAddr are the outer endpoints; empty, "0.0.0.0" or
	// "::" is the NDIS wildcard.
	SrcAddr  string `json:"SrcAddr,omitempty"`
	DestAddr string `json:"DestAddr,omitempty"`
	// UdpEspEncapsulation is 0 (none), 1 (UDP-ESP transport) or 2
	// (UDP-ESP tunnel).
	UdpEspEncapsulation uint32 `json:"UdpEspEncapsulation,omitempty"`
	// NumExtHdrs is 1, or 0 to count SecAssoc; 2 (AH plus ESP) is not
	// supported.
	NumExtHdrs uint32     `json:"NumExtHdrs,omitempty"`
	SecAssoc   []SecAssoc `json:"SecAssoc"`
	// KeyLength, when not 0, must be the number of bytes in KeyData.
	KeyLength uint32 `json:"KeyLength,omitempty"`
	// KeyData is the key buffer in hex; see docs/oid-channel.md for how
	// each algorithm's key is found in it.
	KeyData Key `json:"KeyData,omitempty"`
	// Vnic holds what NDIS has no member for.
	Vnic *SAExtensions `json:"vnic,omitempty"`
}

// SecAssoc is IPSEC_OFFLOAD_V2_SECURITY_ASSOCIATION.
type SecAssoc struct {
	// Flags holds IPSEC_OFFLOAD_V2_ESN_SA (1).
	Flags uint32 `json:"Flags,omitempty"`
	// Operation is 2 (ESP; 0 means ESP too) or 1 (AH, not supported).
	Operation               uint32        `json:"Operation,omitempty"`
	Spi                     uint32        `json:"Spi"`
	AuthenticationAlgorithm AlgorithmInfo `json:"AuthenticationAlgorithm"`
	EncryptionAlgorithm     AlgorithmInfo `json:"EncryptionAlgorithm"`
	SequenceNumberHighOrder uint32        `json:"SequenceNumberHighOrder,omitempty"`
}

// AlgorithmInfo is IPSEC_OFFLOAD_V2_ALGORITHM_INFO.
type AlgorithmInfo struct {
	Identifier     uint32 `json:"Identifier"`
	KeyLength      uint32 `json:"KeyLength,omitempty"`
	KeyOffsetBytes uint32 `json:"KeyOffsetBytes,omitempty"`
	// AdditionalInfo is the ICV length in bytes (AES-GCM; for an HMAC
	// the truncated length, 0 for the default).
	AdditionalInfo uint32 `json:"AdditionalInfo,omitempty"`
}

// SAExtensions are an SA's settings that NDIS has no member for.
type SAExtensions struct {
	// Mode is "tunnel" or "transport"; empty means transport when
	// UdpEspEncapsulation is 1, tunnel otherwise.
	Mode      string     `json:"mode,omitempty"`
	Selectors []Selector `json:"selectors,omitempty"`
	// ReplayWindow is the inbound anti-replay window in packets: absent
	// means the daemon's default, 0 turns replay protection off.
	ReplayWindow *int      `json:"replay_window,omitempty"`
	Lifetime     *Lifetime `json:"lifetime,omitempty"`
	// InitialSeq is the first outbound sequence number (low 32 bits),
	// or for an inbound SA the highest one already received.
	InitialSeq uint64    `json:"initial_seq,omitempty"`
	UDP        *UDPPorts `json:"udp,omitempty"`
	// Pair is the handle of the opposite-direction SA this one pairs
	// with.
	Pair uint64 `json:"pair,omitempty"`
	// AllowLegacy permits DES, 3DES and HMAC-MD5.
	AllowLegacy bool `json:"allow_legacy,omitempty"`
}

// Selector is a traffic selector: inner source and destination prefixes
// (empty for any), IP protocol (a number or a name such as "tcp"; 0 for
// any) and ports (0 for any).
type Selector struct {
	Src   string  `json:"src,omitempty"`
	Dst   string  `json:"dst,omitempty"`
	Proto IPProto `json:"proto,omitempty"`
	SPort uint16  `json:"sport,omitempty"`
	DPort uint16  `json:"dport,omitempty"`
}

// Lifetime holds soft and hard limits; 0 is no limit. Seconds count from
// the moment the SA was added.
type Lifetime struct {
	SoftBytes   uint64 `json:"soft_bytes,omitempty"`
	HardBytes   uint64 `json:"hard_bytes,omitempty"`
	SoftPackets uint64 `json:"soft_packets,omitempty"`
	HardPackets uint64 `json:"hard_packets,omitempty"`
	SoftSeconds uint64 `json:"soft_seconds,omitempty"`
	HardSeconds uint64 `json:"hard_seconds,omitempty"`
}

// UDPPorts are the outer UDP ports of ESP-in-UDP, as the SA's Src and Dst:
// the local one (an outbound SA's SPort, an inbound SA's DPort) is the
// daemon's -udp-port when 0 and must be it; the peer's is 4500 when 0.
// KeepaliveInterval (outbound only) is the NAT keepalive interval in
// seconds, ip xfrm's nat-keepalive-interval: an SA idle that long sends a
// one-byte keepalive, and one per interval after (RFC 3948 §2.3).
type UDPPorts struct {
	SPort             uint16 `json:"sport,omitempty"`
	DPort             uint16 `json:"dport,omitempty"`
	KeepaliveInterval uint32 `json:"nat_keepalive_interval,omitempty"`
}

// AddSARequest is OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA: a list of bundles.
type AddSARequest struct {
	Request
	SAs []SA `json:"sas"`
}

// AddResult is the outcome of one ADD_SA element: its handle (0, the NDIS
// null handle, on failure), status and reason (the element is the
// result's place in the list).
type AddResult struct {
	Handle uint64 `json:"handle"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// AddSAResponse answers ADD_SA: one result per element, in order. Its
// status is success if any element was added.
type AddSAResponse struct {
	Header
	Results []AddResult `json:"results"`
}

// AddSAExRequest is OID_TCP_TASK_IPSEC_OFFLOAD_V2_ADD_SA_EX: one bundle.
type AddSAExRequest struct {
	Request
	SA SA `json:"sa"`
}

// AddSAExResponse answers ADD_SA_EX; Handle is 0 on failure.
type AddSAExResponse struct {
	Header
	Handle uint64 `json:"handle"`
}

// DeleteSARequest is OID_TCP_TASK_IPSEC_OFFLOAD_V2_DELETE_SA.
type DeleteSARequest struct {
	Request
	Handles []uint64 `json:"handles"`
}

// DeleteResult is the outcome for one handle of DELETE_SA.
type DeleteResult struct {
	Handle uint64 `json:"handle"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// DeleteSAResponse answers DELETE_SA: one result per handle, in order. Its
// status is success if any SA was deleted.
type DeleteSAResponse struct {
	Header
	Results []DeleteResult `json:"results"`
}

// UpdateSARequest is OID_TCP_TASK_IPSEC_OFFLOAD_V2_UPDATE_SA. Spi and
// SequenceNumberHighOrder are required; Operation 0 means ESP.
type UpdateSARequest struct {
	Request
	Handle                  uint64  `json:"handle"`
	Operation               uint32  `json:"Operation,omitempty"`
	Spi                     *uint32 `json:"Spi"`
	SequenceNumberHighOrder *uint32 `json:"SequenceNumberHighOrder"`
}

// HandleRequest is a request about one SA (VNIC_QUERY_SA,
// VNIC_REQUEST_DELETE); for VNIC_QUERY_SA handle 0 means all SAs.
type HandleRequest struct {
	Request
	Handle uint64 `json:"handle,omitempty"`
}

// QuerySAResponse answers VNIC_QUERY_SA, in handle order.
type QuerySAResponse struct {
	Header
	SAs []SAInfo `json:"sas"`
}

// SAInfo describes an offloaded SA, keys redacted.
type SAInfo struct {
	Handle    uint64 `json:"handle"`
	Direction string `json:"direction"` // "inbound" or "outbound"
	SPI       uint32 `json:"spi"`
	SPIHex    string `json:"spi_hex"`
	Mode      string `json:"mode"`
	// Src and Dst are the outer endpoints, "any" for the wildcard.
	Src string `json:"src"`
	Dst string `json:"dst"`
	// Encapsulation is "esp" or "espinudp"; UDP gives the ports.
	Encapsulation string    `json:"encapsulation"`
	UDP           *UDPPorts `json:"udp,omitempty"`
	// Transform describes the whole transform in words.
	Transform      string         `json:"transform"`
	Encryption     *AlgorithmUsed `json:"encryption,omitempty"`
	Authentication *AlgorithmUsed `json:"authentication,omitempty"`
	ESN            bool           `json:"esn"`
	// Seq is, outbound, the last sequence number sent (before the first
	// packet, the one before the first it will send: ip xfrm's
	// replay-oseq as configured) and, inbound, the highest one
	// accepted; SeqHigh is its top 32 bits.
	Seq     uint64 `json:"seq"`
	SeqHigh uint32 `json:"seq_high"`
	// ReplayWindow is the inbound window in packets (0: off).
	ReplayWindow int        `json:"replay_window,omitempty"`
	Selectors    []Selector `json:"selectors"`
	Lifetime     Lifetime   `json:"lifetime"`
	Used         Usage      `json:"used"`
	Packets      uint64     `json:"packets"`
	Bytes        uint64     `json:"bytes"`
	// Drops counts dropped packets by counter name; zero counts are left
	// out. The server always sends it: {} when the SA has dropped
	// nothing, never null.
	Drops           map[string]uint64 `json:"drops"`
	DeleteRequested bool              `json:"delete_requested"`
	SoftExpired     bool              `json:"soft_expired"`
	HardExpired     bool              `json:"hard_expired"`
	// Pair is the paired opposite-direction SA, 0 if none.
	Pair  uint64    `json:"pair,omitempty"`
	Added time.Time `json:"added"`
}

// AlgorithmUsed names one algorithm of an SA; the key is never shown.
type AlgorithmUsed struct {
	Name       string `json:"name"` // Linux XFRM name, e.g. "rfc4106(gcm(aes))"
	NDIS       string `json:"ndis"` // e.g. "IPSEC_OFFLOAD_V2_ENCRYPTION_AES_GCM_128"
	Identifier uint32 `json:"Identifier"`
	KeyBits    int    `json:"key_bits"`
	// Key is always "[redacted N bits]".
	Key     string `json:"key"`
	ICVBits int    `json:"icv_bits,omitempty"`
}

// Usage is how much of its lifetime an SA has used.
type Usage struct {
	Bytes   uint64 `json:"bytes"`
	Packets uint64 `json:"packets"`
	Seconds uint64 `json:"seconds"`
}

// StatisticsResponse answers VNIC_STATISTICS: the global counters by name.
type StatisticsResponse struct {
	Header
	Stats map[string]uint64 `json:"stats"`
}

// EventMessage is one line of an event subscription. Lost, when not 0,
// is how many events this subscriber has lost so far by falling behind.
type EventMessage struct {
	Event event.Event `json:"event"`
	Lost  uint64      `json:"lost,omitempty"`
}
