package oid

import (
	"vnic/event"
	"vnic/sadb"
)

// Device is what the OID server controls: the daemon's offload engine and
// its SA database. The daemon implements it; tests use a fake or a real
// engine without a TUN device.
type Device interface {
	// Table is the device's SA database (ADD_SA, DELETE_SA, UPDATE_SA and
	// the SA queries go straight to it).
	Table() *sadb.Table
	// Capabilities answers OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES.
	Capabilities() Capabilities
	// Stats returns the global counters by name: the /proc/net/xfrm_stat
	// names (XfrmInNoStates, ...) and the NDIS CryptoStatus names
	// (CRYPTO_TUNNEL_ESP_AUTH_FAILED, ...), plus packet totals.
	Stats() map[string]uint64
	// RequestDelete raises SaDeleteReq for the SA with handle h (operator
	// request); the SA keeps working until DELETE_SA.
	RequestDelete(h sadb.Handle) error
	// Events is the device's event stream.
	Events() *event.Bus
	// Generation identifies this daemon instance: it changes on every
	// start, so a host that sees a new value knows its SAs are gone.
	Generation() uint64
}

// Capabilities is the NDIS_IPSEC_OFFLOAD_V2 structure, with vnic's own
// extensions under a separate key.
type Capabilities struct {
	Encapsulation                uint32 `json:"Encapsulation"`
	IPv6Supported                bool   `json:"IPv6Supported"`
	IPv4Options                  bool   `json:"IPv4Options"`
	IPv6NonIPsecExtensionHeaders bool   `json:"IPv6NonIPsecExtensionHeaders"`
	Ah                           bool   `json:"Ah"`
	Esp                          bool   `json:"Esp"`
	AhEspCombined                bool   `json:"AhEspCombined"`
	Transport                    bool   `json:"Transport"`
	Tunnel                       bool   `json:"Tunnel"`
	TransportTunnelCombined      bool   `json:"TransportTunnelCombined"`
	LsoSupported                 bool   `json:"LsoSupported"`
	ExtendedSequenceNumbers      bool   `json:"ExtendedSequenceNumbers"`
	UdpEsp                       uint32 `json:"UdpEsp"`
	AuthenticationAlgorithms     uint32 `json:"AuthenticationAlgorithms"`
	EncryptionAlgorithms         uint32 `json:"EncryptionAlgorithms"`
	SaOffloadCapacity            uint32 `json:"SaOffloadCapacity"`

	Vnic Extensions `json:"vnic"`
}

// Extensions are capabilities NDIS has no field for.
type Extensions struct {
	// AuthenticationAlgorithms and EncryptionAlgorithms are the bitmasks
	// of vnic's extension identifiers (HMAC-SHA-384/512,
	// ChaCha20-Poly1305).
	AuthenticationAlgorithms uint32 `json:"AuthenticationAlgorithms"`
	EncryptionAlgorithms     uint32 `json:"EncryptionAlgorithms"`
	AesGcmIcvLengths         []int  `json:"AesGcmIcvLengths"`
	MinReplayWindow          int    `json:"MinReplayWindow"`
	MaxReplayWindow          int    `json:"MaxReplayWindow"`
	TrafficSelectors         bool   `json:"TrafficSelectors"`
	Lifetimes                bool   `json:"Lifetimes"`
	// PassUnknownSPI is true when ESP packets with no matching inbound SA
	// are passed up unprocessed (the NDIS behaviour) instead of dropped.
	PassUnknownSPI bool   `json:"PassUnknownSpi"`
	SaCount        int    `json:"SaCount"`
	Generation     uint64 `json:"Generation"`
}
