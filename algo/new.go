package algo

import (
	"crypto/aes"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"slices"

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

// macInfo is an HMAC integrity algorithm: its catalogue entry and its
// hash.
type macInfo struct {
	name   string // Linux XFRM name
	newH   func() hash.Hash
	keyLen int // recommended key length in bytes: the digest's
	icv    int // default truncated length in bytes
	size   int // full digest length in bytes
	legacy bool
}

// hashes are the HMACs' hash functions, by identifier: the one part of an
// HMAC algorithm that Catalogue does not hold.
var hashes = map[ndis.AuthenticationID]func() hash.Hash{
	ndis.AuthenticationMD5:    md5.New,
	ndis.AuthenticationSHA1:   sha1.New,
	ndis.AuthenticationSHA256: sha256.New,
	ndis.AuthenticationSHA384: sha512.New384,
	ndis.AuthenticationSHA512: sha512.New,
}

// hmacOf returns the HMAC algorithm of an identifier.
func hmacOf(id ndis.AuthenticationID) (macInfo, bool) {
	a, ok := AuthenticationAlgorithm(id)
	newH := hashes[id]
	if !ok || newH == nil {
		return macInfo{}, false
	}
	return macInfo{name: a.Name, newH: newH, keyLen: a.Digest, icv: a.DefaultICV, size: a.Digest, legacy: a.Legacy}, true
}

// The combined-mode algorithms' Linux names, which New tells them by.
const (
	nameGCM    = "rfc4106(gcm(aes))"
	nameGMAC   = "rfc4543(gcm(aes))"
	nameChaCha = "rfc7539esp(chacha20,poly1305)"
)

func invalid(format string, args ...any) error {
	return ndis.Errorf(ndis.StatusInvalidParameter, format, args...)
}

func unsupported(format string, args ...any) error {
	return ndis.Errorf(ndis.StatusNotSupported, format, args...)
}

// New validates s and returns its Cipher, with copies of the keys; the key
// schedule is built on the first Seal or Open. Errors are *ndis.Error
// values with NDIS_STATUS_NOT_SUPPORTED (legacy or unknown algorithms) or
// NDIS_STATUS_INVALID_PARAMETER (key or ICV lengths).
func New(s Spec) (Cipher, error) {
	c, err := build(s)
	if err != nil {
		return nil, err
	}
	return newLazy(s, c), nil
}

// build validates s and returns its Cipher with its key schedule built.
func build(s Spec) (Cipher, error) {
	enc, _ := EncryptionAlgorithm(s.Encryption)
	auth, _ := AuthenticationAlgorithm(s.Authentication)
	switch {
	case enc.Name == nameGCM:
		if s.Authentication != ndis.AuthenticationNone {
			return nil, invalid("AES-GCM is a combined-mode cipher: the authentication algorithm must be empty, got 0x%x", uint32(s.Authentication))
		}
		n := enc.KeyLen - enc.SaltLen
		if len(s.EncryptionKey) != enc.KeyLen {
			return nil, invalid("AES-GCM-%d needs a %d-byte key (%d-byte AES key and 4-byte salt), got %d bytes", n*8, enc.KeyLen, n, len(s.EncryptionKey))
		}
		icv := s.ICVLen
		if icv == 0 {
			icv = enc.ICVs[0]
		}
		if !slices.Contains(enc.ICVs, icv) {
			return nil, invalid("AES-GCM ICV length must be 8, 12 or 16 bytes, got %d", s.ICVLen)
		}
		return newGCM(s.EncryptionKey, icv, s.ESN)
	case enc.Name == nameChaCha:
		if s.Authentication != ndis.AuthenticationNone {
			return nil, invalid("ChaCha20-Poly1305 is a combined-mode cipher: the authentication algorithm must be empty, got 0x%x", uint32(s.Authentication))
		}
		if len(s.EncryptionKey) != enc.KeyLen {
			return nil, invalid("ChaCha20-Poly1305 needs a 36-byte key (32-byte key and 4-byte salt), got %d bytes", len(s.EncryptionKey))
		}
		if s.ICVLen != 0 && !slices.Contains(enc.ICVs, s.ICVLen) {
			return nil, invalid("ChaCha20-Poly1305 has a 16-byte ICV, got %d", s.ICVLen)
		}
		return newChaCha(s.EncryptionKey, s.ESN)
	case auth.Name == nameGMAC:
		if s.Encryption != ndis.EncryptionNone && s.Encryption != 0 {
			return nil, invalid("AES-GMAC provides integrity only: the encryption algorithm must be NONE, got 0x%x", uint32(s.Encryption))
		}
		n := auth.KeyLen - auth.SaltLen
		if len(s.AuthenticationKey) != auth.KeyLen {
			return nil, invalid("AES-GMAC-%d needs a %d-byte key (%d-byte AES key and 4-byte salt), got %d bytes", n*8, auth.KeyLen, n, len(s.AuthenticationKey))
		}
		if s.ICVLen != 0 && !slices.Contains(auth.ICVs, s.ICVLen) {
			return nil, invalid("AES-GMAC has a 16-byte ICV, got %d", s.ICVLen)
		}
		return newGMAC(s.AuthenticationKey, s.ESN)
	}

	mac, ok := hmacOf(s.Authentication)
	if !ok {
		if s.Authentication == ndis.AuthenticationNone {
			name := enc.Name
			if name == "" {
				name = fmt.Sprintf("encryption 0x%x", uint32(s.Encryption))
			}
			return nil, invalid("%s needs an integrity algorithm: ESP without integrity is not offered", name)
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
		if len(s.EncryptionKey) != 0 {
			return nil, invalid("%s takes no key, got %d bytes", enc.Name, len(s.EncryptionKey))
		}
		return newHMACCipher(nil, "ecb(cipher_null)", 0, mac, s.AuthenticationKey, icv, s.ESN)
	}
	if enc.Name == "" || enc.Combined {
		return nil, unsupported("unknown encryption algorithm 0x%x", uint32(s.Encryption))
	}
	if enc.Legacy && !s.AllowLegacy {
		return nil, unsupported("%s is a legacy algorithm and is refused; use AES-GCM or AES-CBC", enc.Name)
	}
	if len(s.EncryptionKey) != enc.KeyLen {
		return nil, invalid("%s needs a %d-byte key here, got %d bytes", enc.Name, enc.KeyLen, len(s.EncryptionKey))
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
		return nil, invalid("%s key: %v", enc.Name, err)
	}
	return newHMACCipher(blk, enc.Name, len(s.EncryptionKey), mac, s.AuthenticationKey, icv, s.ESN)
}
