package algo

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// aeadCipher is ESP with a combined-mode cipher whose nonce is
// salt(4)||IV(8) and whose 8-byte IV follows the ESP header: AES-GCM
// (RFC 4106), ChaCha20-Poly1305 (RFC 7634), and with gmac set AES-GMAC
// (RFC 4543), where everything is authenticated and nothing encrypted.
type aeadCipher struct {
	name   string
	aead   cipher.AEAD // full 16-byte tag, or the ICV length when supported
	salt   [saltLen]byte
	key    []byte // our copy, wiped by Wipe
	icv    int
	esn    bool
	gmac   bool
	ivMask uint64
}

const aeadIVLen = 8

func newGCM(keySalt []byte, icv int, esn bool) (Cipher, error) {
	n := len(keySalt) - saltLen
	c := &aeadCipher{
		name: fmt.Sprintf("rfc4106(gcm(aes)) %d-bit key, %d-byte ICV", n*8, icv),
		icv:  icv, esn: esn, ivMask: randomMask(),
	}
	c.key = append([]byte(nil), keySalt[:n]...)
	copy(c.salt[:], keySalt[n:])
	blk, err := aes.NewCipher(c.key)
	if err != nil {
		return nil, invalid("AES-GCM key: %v", err)
	}
	tag := icv
	if tag < 12 { // Go's GCM has no 8-byte tags: seal with 16, truncate
		tag = 16
	}
	if c.aead, err = cipher.NewGCMWithTagSize(blk, tag); err != nil {
		return nil, invalid("AES-GCM: %v", err)
	}
	return c, nil
}

func newGMAC(keySalt []byte, esn bool) (Cipher, error) {
	n := len(keySalt) - saltLen
	c := &aeadCipher{
		name: fmt.Sprintf("rfc4543(gcm(aes)) %d-bit key, 16-byte ICV", n*8),
		icv:  16, esn: esn, gmac: true, ivMask: randomMask(),
	}
	c.key = append([]byte(nil), keySalt[:n]...)
	copy(c.salt[:], keySalt[n:])
	blk, err := aes.NewCipher(c.key)
	if err != nil {
		return nil, invalid("AES-GMAC key: %v", err)
	}
	if c.aead, err = cipher.NewGCM(blk); err != nil {
		return nil, invalid("AES-GMAC: %v", err)
	}
	return c, nil
}

func newChaCha(keySalt []byte, esn bool) (Cipher, error) {
	n := chacha20poly1305.KeySize
	c := &aeadCipher{
		name: "rfc7539esp(chacha20,poly1305) 256-bit key, 16-byte ICV",
		icv:  16, esn: esn, ivMask: randomMask(),
	}
	c.key = append([]byte(nil), keySalt[:n]...)
	copy(c.salt[:], keySalt[n:])
	var err error
	if c.aead, err = chacha20poly1305.New(c.key); err != nil {
		return nil, invalid("ChaCha20-Poly1305 key: %v", err)
	}
	return c, nil
}

func (c *aeadCipher) Name() string { return c.name }
func (c *aeadCipher) IVLen() int   { return aeadIVLen }
func (c *aeadCipher) ICVLen() int  { return c.icv }
func (c *aeadCipher) Align() int   { return 4 }

func (c *aeadCipher) Seal(pkt []byte, esp int, seq uint64) {
	var iv [aeadIVLen]byte
	binary.BigEndian.PutUint64(iv[:], seq^c.ivMask)
	c.sealIV(pkt, esp, seq, iv[:])
}

// sealIV is Seal with a given IV, for known-answer tests.
func (c *aeadCipher) sealIV(pkt []byte, esp int, seq uint64, iv []byte) {
	copy(pkt[esp+8:esp+8+aeadIVLen], iv)
	nonce, savedN := c.nonce(pkt, esp)
	a, saved := espAAD(pkt, esp, seq, c.esn)
	end := len(pkt) - c.icv
	switch {
	case c.gmac:
		// Everything up to the ICV is associated data.
		c.aead.Seal(pkt[end:end], nonce, nil, pkt[a:end])
	case c.aead.Overhead() == c.icv:
		pt := pkt[esp+8+aeadIVLen : end]
		c.aead.Seal(pt[:0], nonce, pt, pkt[a:esp+8])
	default:
		c.sealTruncated(pkt, esp, a, nonce)
	}
	undoAAD(pkt, esp, c.esn, saved)
	undoNonce(pkt, esp, savedN)
}

// sealTruncated seals with a 16-byte tag and keeps its first c.icv bytes
// (RFC 4106 §6: a shorter ICV is the truncated tag).
func (c *aeadCipher) sealTruncated(pkt []byte, esp, a int, nonce []byte) {
	start, end := esp+8+aeadIVLen, len(pkt)-c.icv
	extra := c.aead.Overhead() - c.icv
	if cap(pkt)-len(pkt) >= extra {
		pt := pkt[start:end]
		c.aead.Seal(pt[:0], nonce, pt, pkt[a:esp+8])
		clear(pkt[len(pkt) : len(pkt)+extra])
		return
	}
	bp := bigPool.Get().(*[]byte)
	out := c.aead.Seal((*bp)[:0], nonce, pkt[start:end], pkt[a:esp+8])
	copy(pkt[start:], out[:len(pkt)-start])
	clear(out)
	bigPool.Put(bp)
}

func (c *aeadCipher) Open(pkt []byte, esp int, seq uint64) error {
	if esp < 16 || len(pkt) < esp+8+aeadIVLen+c.icv {
		return ErrAuth
	}
	nonce, savedN := c.nonce(pkt, esp)
	a, saved := espAAD(pkt, esp, seq, c.esn)
	var err error
	switch {
	case c.gmac:
		tag := pkt[len(pkt)-c.icv:]
		_, err = c.aead.Open(tag[:0], nonce, tag, pkt[a:len(pkt)-c.icv])
	case c.aead.Overhead() == c.icv:
		ct := pkt[esp+8+aeadIVLen:]
		_, err = c.aead.Open(ct[:0], nonce, ct, pkt[a:esp+8])
	default:
		err = c.openTruncated(pkt, esp, a, nonce)
	}
	undoAAD(pkt, esp, c.esn, saved)
	undoNonce(pkt, esp, savedN)
	if err != nil {
		return ErrAuth
	}
	return nil
}

// openTruncated verifies a truncated GCM tag. Go's GCM verifies only full
// tags, so it computes the full tag itself from the GCM primitives: since
// GCM encrypts with a counter-mode keystream, sealing the ciphertext yields
// the plaintext, and sealing that plaintext yields the ciphertext again
// with its full tag, whose prefix must equal the received ICV. A third
// pass recovers the plaintext.
func (c *aeadCipher) openTruncated(pkt []byte, esp, a int, nonce []byte) error {
	start, end := esp+8+aeadIVLen, len(pkt)-c.icv
	extra := c.aead.Overhead() - c.icv
	var icv [16]byte
	copy(icv[:], pkt[end:])
	aad := pkt[a : esp+8]

	buf, bp := pkt[start:end], (*[]byte)(nil)
	if cap(pkt)-len(pkt) < extra {
		bp = bigPool.Get().(*[]byte)
		buf = append((*bp)[:0], pkt[start:end]...)
		defer bigPool.Put(bp)
	}
	n := len(buf)
	c.aead.Seal(buf[:0], nonce, buf, aad)         // ciphertext -> plaintext
	full := c.aead.Seal(buf[:0], nonce, buf, aad) // plaintext -> ciphertext || tag
	ok := subtle.ConstantTimeCompare(full[n:n+c.icv], icv[:c.icv]) == 1
	// Never leave the computed tag behind: it would be a valid ICV for
	// whatever bytes a forger sent.
	copy(full[n:], icv[:c.icv])
	clear(full[n+c.icv : n+c.aead.Overhead()])
	if ok {
		c.aead.Seal(buf[:0], nonce, buf, aad) // ciphertext -> plaintext
		clear(full[n : n+c.aead.Overhead()])
		copy(full[n:], icv[:c.icv])
		if bp != nil {
			copy(pkt[start:end], buf[:n])
		}
	}
	if bp != nil {
		clear(full)
	}
	if !ok {
		return ErrAuth
	}
	return nil
}

// nonce builds salt||IV in pkt[esp-16:esp-4], the scratch before the ESP
// header (the ESN associated data may use pkt[esp-4:esp]), and returns it
// with the bytes it replaced, for undoNonce.
func (c *aeadCipher) nonce(pkt []byte, esp int) (nonce []byte, saved [12]byte) {
	nonce = pkt[esp-16 : esp-4]
	copy(saved[:], nonce)
	copy(nonce[:saltLen], c.salt[:])
	copy(nonce[saltLen:], pkt[esp+8:esp+8+aeadIVLen])
	return nonce, saved
}

func undoNonce(pkt []byte, esp int, saved [12]byte) { copy(pkt[esp-16:esp-4], saved[:]) }

func (c *aeadCipher) Wipe() {
	wipe(c.key)
	wipe(c.salt[:])
	c.aead = nil
}
