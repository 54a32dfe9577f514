package algo

import (
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// ErrLength is returned by Cipher.Open when the encrypted part is not a
// whole number of cipher blocks.
var ErrLength = errors.New("ESP payload is not a whole number of cipher blocks")

// blockCipher is a block cipher (AES, DES, 3DES).
type blockCipher = cipher.Block

// ivSetter is implemented by the standard library's AES CBC modes; it lets
// a pooled BlockMode be reused for another packet without allocating.
type ivSetter interface{ SetIV([]byte) }

// hmacCipher is ESP with a separate integrity algorithm: AES-CBC
// (RFC 3602) or NULL encryption (RFC 2410, blk == nil) with HMAC-SHA1-96
// (RFC 2404) or HMAC-SHA-2 (RFC 4868). With ESN the high-order 32 bits are
// appended to the ICV input after the payload (RFC 4303 §2.2.1).
type hmacCipher struct {
	name   string
	blk    cipher.Block // nil for NULL encryption
	bs     int          // IV and block length, 0 for NULL
	macKey []byte
	icv    int
	esn    bool
	ivMask uint64

	macs sync.Pool // hash.Hash (HMAC) states keyed with macKey
	encs sync.Pool // cipher.BlockMode CBC encrypters with SetIV
	decs sync.Pool // cipher.BlockMode CBC decrypters with SetIV
}

func newHMACCipher(blk cipher.Block, encName string, encKeyLen int, mac macInfo, macKey []byte, icv int, esn bool) (Cipher, error) {
	c := &hmacCipher{
		blk: blk, icv: icv, esn: esn, ivMask: randomMask(),
		macKey: append([]byte(nil), macKey...),
	}
	if blk != nil {
		c.bs = blk.BlockSize()
		c.name = fmt.Sprintf("%s %d-bit key with %s, %d-byte ICV", encName, encKeyLen*8, mac.name, icv)
		zero := make([]byte, c.bs)
		if _, ok := cipher.NewCBCEncrypter(blk, zero).(ivSetter); !ok {
			return nil, unsupported("%s: this Go runtime's CBC mode cannot be reused per packet", encName)
		}
		c.encs.New = func() any { return cipher.NewCBCEncrypter(blk, zero) }
		c.decs.New = func() any { return cipher.NewCBCDecrypter(blk, zero) }
	} else {
		c.name = fmt.Sprintf("%s with %s, %d-byte ICV", encName, mac.name, icv)
	}
	newH, key := mac.newH, c.macKey
	c.macs.New = func() any { return hmac.New(newH, key) }
	return c, nil
}

func (c *hmacCipher) Name() string { return c.name }
func (c *hmacCipher) IVLen() int   { return c.bs }
func (c *hmacCipher) ICVLen() int  { return c.icv }
func (c *hmacCipher) Align() int   { return max(c.bs, 4) }

func (c *hmacCipher) Seal(pkt []byte, esp int, seq uint64) {
	if c.blk == nil {
		c.sealIV(pkt, esp, seq, nil)
		return
	}
	// IV = E_K(seq XOR mask): unique per packet and unpredictable to
	// anyone without the key (NIST SP 800-38A, Appendix C).
	s := getScratch()
	in := s.buf[:c.bs]
	clear(in)
	binary.BigEndian.PutUint64(in, seq^c.ivMask)
	iv := s.buf[32 : 32+c.bs]
	c.blk.Encrypt(iv, in)
	c.sealIV(pkt, esp, seq, iv)
	putScratch(s)
}

// sealIV is Seal with a given IV, for known-answer tests.
func (c *hmacCipher) sealIV(pkt []byte, esp int, seq uint64, iv []byte) {
	start, end := esp+8+c.bs, len(pkt)-c.icv
	if c.blk != nil {
		copy(pkt[esp+8:start], iv)
		c.crypt(&c.encs, pkt[start:end], pkt[esp+8:start])
	}
	c.mac(pkt[esp:end], seq, pkt[end:])
}

func (c *hmacCipher) Open(pkt []byte, esp int, seq uint64) error {
	start, end := esp+8+c.bs, len(pkt)-c.icv
	if end < start {
		return ErrAuth
	}
	if c.bs > 0 && (end-start)%c.bs != 0 {
		return ErrLength
	}
	s := getScratch()
	ok := c.verify(s, pkt[esp:end], seq, pkt[end:])
	putScratch(s)
	if !ok {
		return ErrAuth
	}
	if c.blk != nil {
		c.crypt(&c.decs, pkt[start:end], pkt[esp+8:start])
	}
	return nil
}

// mac writes the truncated ICV of data (plus the ESN high bits) to icv.
func (c *hmacCipher) mac(data []byte, seq uint64, icv []byte) {
	s := getScratch()
	sum := c.sum(s, data, seq)
	copy(icv, sum[:c.icv])
	putScratch(s)
}

func (c *hmacCipher) verify(s *scratch, data []byte, seq uint64, icv []byte) bool {
	return hmac.Equal(c.sum(s, data, seq)[:c.icv], icv)
}

func (c *hmacCipher) sum(s *scratch, data []byte, seq uint64) []byte {
	h := c.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(data)
	if c.esn {
		binary.BigEndian.PutUint32(s.buf[:4], uint32(seq>>32))
		h.Write(s.buf[:4])
	}
	sum := h.Sum(s.buf[:0])
	c.macs.Put(h)
	return sum
}

// crypt runs CBC over data in place with a pooled, re-keyed BlockMode.
func (c *hmacCipher) crypt(pool *sync.Pool, data, iv []byte) {
	m := pool.Get().(cipher.BlockMode)
	m.(ivSetter).SetIV(iv)
	m.CryptBlocks(data, data)
	pool.Put(m)
}

func (c *hmacCipher) Wipe() {
	wipe(c.macKey)
	c.blk = nil
	c.macs = sync.Pool{}
	c.encs = sync.Pool{}
	c.decs = sync.Pool{}
}
