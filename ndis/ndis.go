// Package ndis holds the vocabulary of the Windows NDIS "IPsec Offload
// Version 2" contract that vnic implements: status names, SA flags,
// algorithm identifiers and receive-path CryptoStatus values, with the
// numeric values of the Microsoft headers.
//
// The package has no behaviour beyond naming: the SA database, the engine
// and the OID channel all speak these names so that a host written against
// NDIS recognises them.
package ndis

import (
	"errors"
	"fmt"
)

// Status is an NDIS_STATUS value.
type Status uint32

// NDIS status values used by vnic (ntddndis.h / ndis.h numbering).
const (
	StatusSuccess          Status = 0x00000000
	StatusFailure          Status = 0xC0000001
	StatusInvalidParameter Status = 0xC000000D
	StatusResources        Status = 0xC000009A
	StatusNotSupported     Status = 0xC00000BB
	StatusInvalidData      Status = 0xC0010015
)

var statusNames = map[Status]string{
	StatusSuccess:          "NDIS_STATUS_SUCCESS",
	StatusFailure:          "NDIS_STATUS_FAILURE",
	StatusInvalidParameter: "NDIS_STATUS_INVALID_PARAMETER",
	StatusResources:        "NDIS_STATUS_RESOURCES",
	StatusNotSupported:     "NDIS_STATUS_NOT_SUPPORTED",
	StatusInvalidData:      "NDIS_STATUS_INVALID_DATA",
}

// String returns the NDIS name of the status, for example
// "NDIS_STATUS_RESOURCES".
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("NDIS_STATUS_0x%08X", uint32(s))
}

// ParseStatus returns the Status with the given NDIS name.
func ParseStatus(name string) (Status, bool) {
	for s, n := range statusNames {
		if n == name {
			return s, true
		}
	}
	return 0, false
}

// Error is why an NDIS request, or one element of it, failed: the status
// a host should see, the element it concerns (see At), a sentence for a
// person saying what was wrong (Reason, without the element), and the
// error that caused it, if any (Unwrap). Error assembles the text; the
// parts stay apart for code.
type Error struct {
	Status Status
	Reason string
	// Err is the cause, or nil.
	Err error
	// elem is the index of the element concerned plus one; 0 when the
	// error concerns the request as a whole.
	elem int
}

// Error returns the reason, after "element I: " when the error concerns
// element I.
func (e *Error) Error() string {
	if i, ok := e.Element(); ok {
		return fmt.Sprintf("element %d: %s", i, e.Reason)
	}
	return e.Reason
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Element returns the 0-based index of the request's element the error
// concerns, and false when it concerns the request as a whole.
func (e *Error) Element() (int, bool) { return e.elem - 1, e.elem > 0 }

// At returns a copy of e that concerns element i (replacing the element it
// concerned, if any: a batch's element i may be a request's element j).
func (e *Error) At(i int) *Error {
	c := *e
	c.elem = i + 1
	return &c
}

// WithoutElement returns a copy of e about the request as a whole: for a
// caller that sent one element, to whom its index says nothing.
func (e *Error) WithoutElement() *Error {
	c := *e
	c.elem = 0
	return &c
}

// Errorf returns an *Error with the given status and a formatted reason,
// about the request as a whole. As with fmt.Errorf, the operand of a %w
// verb becomes the cause.
func Errorf(s Status, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Status: s, Reason: err.Error(), Err: errors.Unwrap(err)}
}

// AsError returns err as an *Error: err itself if it is one; else, when err
// wraps one, an *Error with that one's status and err's text, caused by
// err; else one with StatusFailure, caused by err. err must not be nil.
func AsError(err error) *Error {
	if e, ok := err.(*Error); ok {
		return e
	}
	var inner *Error
	if errors.As(err, &inner) {
		return &Error{Status: inner.Status, Reason: err.Error(), Err: err, elem: inner.elem}
	}
	return &Error{Status: StatusFailure, Reason: err.Error(), Err: err}
}

// StatusOf returns the NDIS status carried by err: StatusSuccess for nil,
// the status of an *Error found with errors.As, and StatusFailure otherwise.
func StatusOf(err error) Status {
	if err == nil {
		return StatusSuccess
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusFailure
}

// ADD_SA flags (IPSEC_OFFLOAD_V2_ADD_SA.Flags).
const (
	FlagInbound uint32 = 0x00000001 // IPSEC_OFFLOAD_V2_INBOUND
	FlagIPv6    uint32 = 0x00000010 // IPSEC_OFFLOAD_V2_IPv6
)

// FlagESN is IPSEC_OFFLOAD_V2_ESN_SA in IPSEC_OFFLOAD_V2_SECURITY_ASSOCIATION.Flags.
const FlagESN uint32 = 0x00000001

// Operation is IPSEC_OFFLOAD_V2_OPERATION: which SA of a bundle.
type Operation uint32

// Operation values.
const (
	OperationAH  Operation = 1 // IPsecOffloadV2Ah
	OperationESP Operation = 2 // IPsecOffloadV2Esp
)

// UDP-ESP encapsulation types (IPSEC_OFFLOAD_V2_*UDP_ESP_ENCAPSULATION_*).
const (
	UDPESPNone                   uint32 = 0x0
	UDPESPTransport              uint32 = 0x1
	UDPESPTunnel                 uint32 = 0x2
	UDPESPTransportOverTunnel    uint32 = 0x4
	UDPESPTransportOverUDPTunnel uint32 = 0x8
)

// EncryptionID is an IPSEC_OFFLOAD_V2_ENCRYPTION_* identifier, also used as
// a bit in the EncryptionAlgorithms capability mask. Values at or above
// 0x10000 are vnic extensions that NDIS does not define.
type EncryptionID uint32

// Encryption algorithm identifiers.
const (
	EncryptionNone      EncryptionID = 0x001 // ESP with integrity only
	EncryptionDESCBC    EncryptionID = 0x002 // legacy, refused
	Encryption3DESCBC   EncryptionID = 0x004 // legacy, refused
	EncryptionAESGCM128 EncryptionID = 0x008 // RFC 4106 combined mode
	EncryptionAESGCM192 EncryptionID = 0x010
	EncryptionAESGCM256 EncryptionID = 0x020
	EncryptionAESCBC128 EncryptionID = 0x040 // RFC 3602
	EncryptionAESCBC192 EncryptionID = 0x080
	EncryptionAESCBC256 EncryptionID = 0x100

	// EncryptionChaCha20Poly1305 is a vnic extension (RFC 7634).
	EncryptionChaCha20Poly1305 EncryptionID = 0x10000
)

// AuthenticationID is an IPSEC_OFFLOAD_V2_AUTHENTICATION_* identifier, also
// used as a bit in the AuthenticationAlgorithms capability mask. Values at
// or above 0x10000 are vnic extensions.
type AuthenticationID uint32

// Authentication algorithm identifiers.
const (
	AuthenticationNone       AuthenticationID = 0x00 // no integrity algorithm (combined-mode ciphers)
	AuthenticationMD5        AuthenticationID = 0x01 // legacy, refused
	AuthenticationSHA1       AuthenticationID = 0x02 // HMAC-SHA1-96 (RFC 2404)
	AuthenticationSHA256     AuthenticationID = 0x04 // HMAC-SHA-256-128 (RFC 4868)
	AuthenticationAESGMAC128 AuthenticationID = 0x08 // AES-GMAC (RFC 4543), NDIS "AES_GCM_128"
	AuthenticationAESGMAC192 AuthenticationID = 0x10
	AuthenticationAESGMAC256 AuthenticationID = 0x20

	// vnic extensions (RFC 4868).
	AuthenticationSHA384 AuthenticationID = 0x10000 // HMAC-SHA-384-192
	AuthenticationSHA512 AuthenticationID = 0x20000 // HMAC-SHA-512-256
)

// CryptoStatus is the NDIS receive-path CryptoStatus value.
type CryptoStatus uint16

// CryptoStatus values (NDIS numbering, not the Linux xfrm_offload bits).
const (
	CryptoSuccess                CryptoStatus = 0
	CryptoGenericError           CryptoStatus = 1
	CryptoTransportAHAuthFailed  CryptoStatus = 2
	CryptoTransportESPAuthFailed CryptoStatus = 3
	CryptoTunnelAHAuthFailed     CryptoStatus = 4
	CryptoTunnelESPAuthFailed    CryptoStatus = 5
	CryptoInvalidPacketSyntax    CryptoStatus = 6
	CryptoInvalidProtocol        CryptoStatus = 7
)

var cryptoNames = [...]string{
	"CRYPTO_SUCCESS",
	"CRYPTO_GENERIC_ERROR",
	"CRYPTO_TRANSPORT_AH_AUTH_FAILED",
	"CRYPTO_TRANSPORT_ESP_AUTH_FAILED",
	"CRYPTO_TUNNEL_AH_AUTH_FAILED",
	"CRYPTO_TUNNEL_ESP_AUTH_FAILED",
	"CRYPTO_INVALID_PACKET_SYNTAX",
	"CRYPTO_INVALID_PROTOCOL",
}

// String returns the NDIS name, for example "CRYPTO_TUNNEL_ESP_AUTH_FAILED".
func (c CryptoStatus) String() string {
	if int(c) < len(cryptoNames) {
		return cryptoNames[c]
	}
	return fmt.Sprintf("CRYPTO_%d", uint16(c))
}
