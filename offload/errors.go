package offload

import (
	"errors"

	"vnic/ndis"
	"vnic/sadb"
)

// Error is why the engine dropped a packet: the counter it is counted
// under and, for inbound packets, the NDIS CryptoStatus a NIC would report.
// The data path returns the package's preallocated values, so classifying
// a drop costs no allocation.
type Error struct {
	Reason sadb.Reason
	Crypto ndis.CryptoStatus
	msg    string
}

func (e *Error) Error() string { return e.msg }

func newErr(r sadb.Reason, c ndis.CryptoStatus, msg string) *Error {
	return &Error{Reason: r, Crypto: c, msg: msg}
}

// Drop classifications.
var (
	ErrNoSA           = newErr(sadb.InNoStates, ndis.CryptoGenericError, "no inbound SA for this SPI and destination")
	ErrSADead         = newErr(sadb.InNoStates, ndis.CryptoGenericError, "the SA was deleted")
	ErrInExpired      = newErr(sadb.InStateExpired, ndis.CryptoGenericError, "the SA reached its hard lifetime")
	ErrMalformed      = newErr(sadb.InHdrError, ndis.CryptoInvalidPacketSyntax, "malformed outer IP, UDP or ESP header")
	ErrEncapMismatch  = newErr(sadb.InStateMismatch, ndis.CryptoInvalidProtocol, "encapsulation (UDP or raw ESP) does not match the SA")
	ErrReplay         = newErr(sadb.InStateSeqError, ndis.CryptoGenericError, "replayed or too old sequence number")
	ErrAuthTunnel     = newErr(sadb.InStateProtoError, ndis.CryptoTunnelESPAuthFailed, "ESP integrity check failed")
	ErrAuthTransport  = newErr(sadb.InStateProtoError, ndis.CryptoTransportESPAuthFailed, "ESP integrity check failed")
	ErrBadLength      = newErr(sadb.InStateProtoError, ndis.CryptoInvalidPacketSyntax, "ESP payload length does not fit the cipher")
	ErrBadPadding     = newErr(sadb.InStateProtoError, ndis.CryptoInvalidPacketSyntax, "bad ESP padding or pad length")
	ErrBadNextHeader  = newErr(sadb.InStateModeError, ndis.CryptoInvalidPacketSyntax, "ESP next header does not fit the SA's mode")
	ErrBadInner       = newErr(sadb.InStateModeError, ndis.CryptoInvalidPacketSyntax, "malformed inner IP packet")
	ErrSelector       = newErr(sadb.InTmplMismatch, ndis.CryptoInvalidProtocol, "inner packet is outside the SA's traffic selectors")
	ErrDummy          = newErr(sadb.InDummy, ndis.CryptoSuccess, "dummy packet (next header 59)")
	ErrNoRoomIn       = newErr(sadb.InBufferError, ndis.CryptoGenericError, "no room in the buffer")
	ErrDeviceWrite    = newErr(sadb.InError, ndis.CryptoSuccess, "writing the packet to the device failed")
	ErrNoOutSA        = newErr(sadb.OutNoStates, 0, "no outbound SA for this packet")
	ErrLinkLocal      = newErr(sadb.OutLinkLocal, 0, "no outbound SA for a link-scoped packet: it never leaves vnic0's link")
	ErrOutDead        = newErr(sadb.OutNoStates, 0, "the outbound SA was deleted")
	ErrOutExpired     = newErr(sadb.OutStateExpired, 0, "the outbound SA reached its hard lifetime")
	ErrSeqExhausted   = newErr(sadb.OutStateSeqError, 0, "the outbound SA used its last sequence number")
	ErrNoRoomOut      = newErr(sadb.OutBufferError, 0, "no headroom or tailroom in the buffer")
	ErrBadPlaintext   = newErr(sadb.OutError, 0, "malformed plaintext IP packet")
	ErrTooBig         = newErr(sadb.OutTooBig, 0, "the protected packet would be longer than an IP packet can be")
	ErrFragInvalid    = newErr(sadb.OutFragInvalid, 0, "transport mode: a malformed or overlapping IP fragment (its datagram's fragments are dropped with it)")
	ErrFragFull       = newErr(sadb.OutFragFull, 0, "transport mode: no room to reassemble another IP datagram")
	ErrFragTimeout    = newErr(sadb.OutFragTimeout, 0, "transport mode: the fragments of an IP datagram did not all come within 30 s")
	ErrFamilyMismatch = newErr(sadb.OutError, 0, "transport mode: the packet's address family differs from the SA's")
)

// ReasonOf returns the counter under which err is counted, and false when
// err is not a drop classification of this package.
func ReasonOf(err error) (sadb.Reason, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason, true
	}
	return 0, false
}
