// Package algo is the catalogue of ESP algorithms that vnic offloads: their
// NDIS identifiers, their Linux XFRM names, key and ICV sizes, and the
// per-SA Cipher that seals and opens an ESP packet in place.
//
// A Cipher knows the ESP layout (RFC 4303 §2): SPI, sequence number, IV,
// payload and trailer, ICV, and where the high-order 32 bits of an Extended
// Sequence Number enter the integrity check (RFC 4303 §2.2.1 for separate
// integrity algorithms, the AAD for AEADs: RFC 4106 §5, RFC 4543 §3.3,
// RFC 7634 §2.1). Framing (IP headers, padding, modes) is the engine's job.
package algo

import (
	"vnic/ndis"
)

// Spec is an ESP transform as a host configures it: NDIS identifiers and
// keys. For AES-GCM, AES-GMAC and ChaCha20-Poly1305 the encryption key is
// the cipher key followed by the 4-byte salt (RFC 4106 §8.1, RFC 4543 §3.2,
// RFC 7634 §4), as in `ip xfrm`.
type Spec struct {
	Encryption        ndis.EncryptionID
	Authentication    ndis.AuthenticationID
	EncryptionKey     []byte
	AuthenticationKey []byte
	// ICVLen is the AES-GCM ICV length in bytes: 8, 12 or 16 (0 means 16).
	// It is the AdditionalInfo of the NDIS algorithm info. Other
	// algorithms have a fixed ICV and require 0 or that length.
	ICVLen int
	// ESN puts the high-order 32 bits of the sequence number into the
	// integrity check.
	ESN bool
	// AllowLegacy permits DES, 3DES and HMAC-MD5-96, which are refused
	// otherwise.
	AllowLegacy bool
}

// Cipher is one SA's ESP cryptographic transform. It is safe for concurrent
// use: per-call state comes from pools.
//
// Both methods work in place on pkt, where the ESP header starts at offset
// esp and the packet ends at len(pkt):
//
//	pkt[esp-16:esp]  scratch: used during the call and restored (the AEAD
//	                 nonce, the ESN associated data)
//	pkt[esp:esp+8]   SPI and low 32 bits of the sequence number
//	pkt[esp+8:+IV]   IV (written by Seal)
//	...              payload, padding, pad length, next header
//	pkt[len-ICV:]    ICV (written by Seal)
//
// esp must be at least 16: on the wire an IP header always stands there,
// so the scratch costs no copy. A cipher with a truncated ICV (AES-GCM with an 8-
// byte ICV) may use up to 8 bytes of spare capacity after len(pkt) as
// scratch, and clears them; without spare capacity it works in a pooled
// buffer instead. Give every packet its own buffer.
type Cipher interface {
	// Name describes the transform for people, without any key bytes.
	Name() string
	// IVLen is the length of the IV field.
	IVLen() int
	// ICVLen is the length of the ICV field.
	ICVLen() int
	// Align is the block size the payload and trailer are padded to
	// (at least 4).
	Align() int
	// Seal writes the IV, encrypts the payload and trailer and writes
	// the ICV. seq is the full 64-bit sequence number; the IV derives
	// from it so that it never repeats under one key.
	Seal(pkt []byte, esp int, seq uint64)
	// Open verifies the ICV and decrypts the payload and trailer. seq is
	// the full (inferred) sequence number. On failure it returns
	// ErrAuth and leaves the payload undefined.
	Open(pkt []byte, esp int, seq uint64) error
	// Wipe overwrites the key material. The Cipher must not be used
	// afterwards.
	Wipe()
}
