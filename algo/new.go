package algo

import (
	"crypto/aes"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"

	"vnic/ndis"
)

// ErrAuth is returned by Cipher.Open when the ICV does not verify.
var ErrAuth = errors.New("ESP integrity check failed")

// saltLen is the salt appended to AES-GCM, AES-GMAC and ChaCha20-Poly1305
// keys.
const saltLen = 4

// HMAC keys: RFC 2404 and RFC 4868 ask for keys as long as the digest;
// like Linux, vnic accepts other lengths, but none shorter than 128 bits.
const (
	minMACKey = 16
	maxMACKey = 256
)

// macInfo describes an HMAC integrity algorithm.
type macInfo struct {
	name   string // Linux XFRM name
	newH   func() hash.Hash
	keyLen int // recommended key length in bytes
	icv    int // default truncated length in bytes
	size   int // full digest length in bytes
	legacy bool
}

var macs = map[ndis.AuthenticationID]macInfo{
	ndis.AuthenticationMD5:    {"hmac(md5)", md5.New, 16, 12, 16, true},
	ndis.AuthenticationSHA1:   {"hmac(sha1)", sha1.New, 20, 12, 20, false},
	ndis.AuthenticationSHA256: {"hmac(sha256)", sha256.New, 32, 16, 32, false},
	ndis.AuthenticationSHA384: {"hmac(sha384)", sha512.New384, 48, 24, 48, false},
	ndis.AuthenticationSHA512: {"hmac(sha512)", sha512.New, 64, 32, 64, false},
}

// cbcInfo describes a CBC encryption algorithm.
type cbcInfo struct {
	name   string
	keyLen int
	legacy bool
}

var cbcs = map[ndis.EncryptionID]cbcInfo{
	ndis.EncryptionDESCBC:    {"cbc(des)", 8, true},
	ndis.Encryption3DESCBC:   {"cbc(des3_ede)", 24, true},
	ndis.EncryptionAESCBC128: {"cbc(aes)", 16, false},
	ndis.EncryptionAESCBC192: {"cbc(aes)", 24, false},
	ndis.EncryptionAESCBC256: {"cbc(aes)", 32, false},
}

var gcmKeyLen = map[ndis.EncryptionID]int{
	ndis.EncryptionAESGCM128: 16,
	ndis.EncryptionAESGCM192: 24,
	ndis.EncryptionAESGCM256: 32,
}

var gmacKeyLen = map[ndis.AuthenticationID]int{
	ndis.AuthenticationAESGMAC128: 16,
	ndis.AuthenticationAESGMAC192: 24,
	ndis.AuthenticationAESGMAC256: 32,
}

func invalid(format string, args ...any) error {
	return ndis.Errorf(ndis.StatusInvalidParameter, format, args...)
}

func unsupported(format string, args ...any) error {
	return ndis.Errorf(ndis.StatusNotSupported, format, args...)
}

// New validates s and returns its Cipher, with copies of the keys. Errors
// are *ndis.Error values with NDIS_STATUS_NOT_SUPPORTED (legacy or unknown
// algorithms) or NDIS_STATUS_INVALID_PARAMETER (key or ICV lengths).
func New(s Spec) (Cipher, error) {
	switch {
	case gcmKeyLen[s.Encryption] != 0:
		if s.Authentication != ndis.AuthenticationNone {
			return nil, invalid("AES-GCM is a combined-mode cipher: the authentication algorithm must be empty, got 0x%x", uint32(s.Authentication))
		}
		n := gcmKeyLen[s.Encryption]
		if len(s.EncryptionKey) != n+saltLen {
			return nil, invalid("AES-GCM-%d needs a %d-byte key (%d-byte AES key and 4-byte salt), got %d bytes", n*8, n+saltLen, n, len(s.EncryptionKey))
		}
		icv := s.ICVLen
		if icv == 0 {
			icv = 16
		}
		if icv != 8 && icv != 12 && icv != 16 {
			return nil, invalid("AES-GCM ICV length must be 8, 12 or 16 bytes, got %d", s.ICVLen)
		}
		return newGCM(s.EncryptionKey, icv, s.ESN)
	case s.Encryption == ndis.EncryptionChaCha20Poly1305:
		if s.Authentication != ndis.AuthenticationNone {
			return nil, invalid("ChaCha20-Poly1305 is a combined-mode cipher: the authentication algorithm must be empty, got 0x%x", uint32(s.Authentication))
		}
		if len(s.EncryptionKey) != chacha20poly1305.KeySize+saltLen {
			return nil, invalid("ChaCha20-Poly1305 needs a 36-byte key (32-byte key and 4-byte salt), got %d bytes", len(s.EncryptionKey))
		}
		if s.ICVLen != 0 && s.ICVLen != 16 {
			return nil, invalid("ChaCha20-Poly1305 has a 16-byte ICV, got %d", s.ICVLen)
		}
		return newChaCha(s.EncryptionKey, s.ESN)
	case gmacKeyLen[s.Authentication] != 0:
		if s.Encryption != ndis.EncryptionNone && s.Encryption != 0 {
			return nil, invalid("AES-GMAC provides integrity only: the encryption algorithm must be NONE, got 0x%x", uint32(s.Encryption))
		}
		n := gmacKeyLen[s.Authentication]
		if len(s.AuthenticationKey) != n+saltLen {
			return nil, invalid("AES-GMAC-%d needs a %d-byte key (%d-byte AES key and 4-byte salt), got %d bytes", n*8, n+saltLen, n, len(s.AuthenticationKey))
		}
		if s.ICVLen != 0 && s.ICVLen != 16 {
			return nil, invalid("AES-GMAC has a 16-byte ICV, got %d", s.ICVLen)
		}
		return newGMAC(s.AuthenticationKey, s.ESN)
	}

	mac, ok := macs[s.Authentication]
	if !ok {
		if s.Authentication == ndis.AuthenticationNone {
			return nil, invalid("encryption 0x%x needs an integrity algorithm: ESP without integrity is not offered", uint32(s.Encryption))
		}
		return nil, unsupported("unknown authentication algorithm 0x%x", uint32(s.Authentication))
	}
	if mac.legacy && !s.AllowLegacy {
		return nil, unsupported("%s (HMAC-MD5-96) is a legacy algorithm and is refused; use HMAC-SHA-256 or an AEAD", mac.name)
	}
	if n := len(s.AuthenticationKey); n < minMACKey || n > maxMACKey {
		return nil, invalid("%s key must be %d to %d bytes (%d recommended), got %d bytes", mac.name, minMACKey, maxMACKey, mac.keyLen, n)
	}
	icv := s.ICVLen
	if icv == 0 {
		icv = mac.icv
	}
	if icv < 12 || icv > mac.size || icv%4 != 0 {
		return nil, invalid("%s ICV length must be a multiple of 4 from 12 to %d bytes, got %d", mac.name, mac.size, s.ICVLen)
	}

	if s.Encryption == ndis.EncryptionNone {
		return newHMACCipher(nil, "ecb(cipher_null)", 0, mac, s.AuthenticationKey, icv, s.ESN)
	}
	enc, ok := cbcs[s.Encryption]
	if !ok {
		return nil, unsupported("unknown encryption algorithm 0x%x", uint32(s.Encryption))
	}
	if enc.legacy && !s.AllowLegacy {
		return nil, unsupported("%s is a legacy algorithm and is refused; use AES-GCM or AES-CBC", enc.name)
	}
	if len(s.EncryptionKey) != enc.keyLen {
		return nil, invalid("%s needs a %d-byte key here, got %d bytes", enc.name, enc.keyLen, len(s.EncryptionKey))
	}
	var blk blockCipher
	var err error
	switch s.Encryption {
	case ndis.EncryptionDESCBC:
		blk, err = des.NewCipher(s.EncryptionKey)
	case ndis.Encryption3DESCBC:
		blk, err = des.NewTripleDESCipher(s.EncryptionKey)
	default:
		blk, err = aes.NewCipher(s.EncryptionKey)
	}
	if err != nil {
		return nil, invalid("%s key: %v", enc.name, err)
	}
	return newHMACCipher(blk, enc.name, len(s.EncryptionKey), mac, s.AuthenticationKey, icv, s.ESN)
}
