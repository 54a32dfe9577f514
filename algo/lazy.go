package algo

import (
	"sync"
	"sync/atomic"
)

// lazyCipher is the Cipher New returns: it holds an SA's keys and what the
// data path asks before the cryptography (IV, ICV and block sizes), and
// builds the key schedule (AES round keys, GHASH tables, HMAC states: over
// a kilobyte) on the SA's first packet. A device holds up to a million
// SAs, most of them idle at any moment; an idle SA costs its keys only.
type lazyCipher struct {
	spec                 Spec // with copies of the keys
	name                 string
	ivLen, icvLen, align uint8 // none exceeds 32
	built                atomic.Pointer[builtCipher]
}

// builtCipher is a lazyCipher's key schedule, once built; wiped stands
// for one that was wiped.
type builtCipher struct{ c Cipher }

var wiped = new(builtCipher)

// newLazy returns a lazyCipher for s, whose Cipher c (built to validate s)
// it takes its sizes and name from and then wipes.
func newLazy(s Spec, c Cipher) *lazyCipher {
	l := &lazyCipher{spec: s, name: intern(c.Name()), ivLen: uint8(c.IVLen()), icvLen: uint8(c.ICVLen()), align: uint8(c.Align())}
	l.spec.EncryptionKey = append([]byte(nil), s.EncryptionKey...)
	l.spec.AuthenticationKey = append([]byte(nil), s.AuthenticationKey...)
	c.Wipe()
	return l
}

// cipher returns the key schedule, building it on first use. It is small
// enough to inline: the packets after the first take one atomic load.
func (l *lazyCipher) cipher() Cipher {
	if b := l.built.Load(); b != nil && b != wiped {
		return b.c
	}
	return l.build()
}

// build builds the key schedule, or returns the one a racing packet built
// first. A wiped Cipher panics.
func (l *lazyCipher) build() Cipher {
	b := l.built.Load()
	if b == nil {
		c, err := build(l.spec)
		if err != nil { // New built it from the same Spec
			panic("algo: a validated algorithm failed to build: " + err.Error())
		}
		b = &builtCipher{c}
		if !l.built.CompareAndSwap(nil, b) {
			c.Wipe()
			b = l.built.Load()
		}
	}
	if b == wiped {
		panic("algo: a Cipher used after Wipe")
	}
	return b.c
}

func (l *lazyCipher) Name() string { return l.name }
func (l *lazyCipher) IVLen() int   { return int(l.ivLen) }
func (l *lazyCipher) ICVLen() int  { return int(l.icvLen) }
func (l *lazyCipher) Align() int   { return int(l.align) }

func (l *lazyCipher) Seal(pkt []byte, esp int, seq uint64) { l.cipher().Seal(pkt, esp, seq) }

func (l *lazyCipher) Open(pkt []byte, esp int, seq uint64) error {
	return l.cipher().Open(pkt, esp, seq)
}

// Wipe wipes the keys and, if it was built, the key schedule; a later
// Seal or Open panics.
func (l *lazyCipher) Wipe() {
	if b := l.built.Swap(wiped); b != nil && b != wiped {
		b.c.Wipe()
	}
	wipe(l.spec.EncryptionKey)
	wipe(l.spec.AuthenticationKey)
}

// names holds one copy of each transform name: a million SAs share a
// handful.
var names sync.Map

func intern(s string) string {
	v, _ := names.LoadOrStore(s, s)
	return v.(string)
}
