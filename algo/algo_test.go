package algo

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"vnic/internal/testutil"
	"vnic/ndis"
)

func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

// specs is one Spec per supported transform.
func specs() map[string]Spec {
	return map[string]Spec{
		"gcm128":        {Encryption: ndis.EncryptionAESGCM128, EncryptionKey: key(20, 1)},
		"gcm192-icv12":  {Encryption: ndis.EncryptionAESGCM192, EncryptionKey: key(28, 2), ICVLen: 12},
		"gcm256-icv8":   {Encryption: ndis.EncryptionAESGCM256, EncryptionKey: key(36, 3), ICVLen: 8},
		"gmac128":       {Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationAESGMAC128, AuthenticationKey: key(20, 4)},
		"gmac256":       {Authentication: ndis.AuthenticationAESGMAC256, AuthenticationKey: key(36, 4)},
		"chacha":        {Encryption: ndis.EncryptionChaCha20Poly1305, EncryptionKey: key(36, 5)},
		"cbc128-sha1":   {Encryption: ndis.EncryptionAESCBC128, EncryptionKey: key(16, 6), Authentication: ndis.AuthenticationSHA1, AuthenticationKey: key(20, 7)},
		"cbc192-sha256": {Encryption: ndis.EncryptionAESCBC192, EncryptionKey: key(24, 6), Authentication: ndis.AuthenticationSHA256, AuthenticationKey: key(32, 7)},
		"cbc256-sha384": {Encryption: ndis.EncryptionAESCBC256, EncryptionKey: key(32, 6), Authentication: ndis.AuthenticationSHA384, AuthenticationKey: key(48, 7)},
		"cbc256-sha512": {Encryption: ndis.EncryptionAESCBC256, EncryptionKey: key(32, 6), Authentication: ndis.AuthenticationSHA512, AuthenticationKey: key(64, 7)},
		"null-sha256":   {Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationSHA256, AuthenticationKey: key(32, 8)},
		"3des-md5":      {Encryption: ndis.Encryption3DESCBC, EncryptionKey: key(24, 9), Authentication: ndis.AuthenticationMD5, AuthenticationKey: key(16, 9), AllowLegacy: true},
	}
}

// espPacket lays out an ESP packet for c with a payload of n bytes
// (already padded to c.Align()), 4 bytes of scratch before the header and
// tail capacity left as given.
// testESP is where test packets put the ESP header: after the 16 bytes
// of scratch a Cipher may use.
const testESP = 16

func espPacket(c Cipher, n, tailCap int) (pkt []byte, payload []byte) {
	total := testESP + 8 + c.IVLen() + n + c.ICVLen()
	buf := make([]byte, total, total+tailCap)
	copy(buf[testESP:], []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7})
	payload = buf[testESP+8+c.IVLen() : testESP+8+c.IVLen()+n]
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	return buf, append([]byte(nil), payload...)
}

func TestRoundTrip(t *testing.T) {
	for name, s := range specs() {
		for _, esnOn := range []bool{false, true} {
			for _, tail := range []int{0, 64} {
				t.Run(fmt.Sprintf("%s/esn=%v/tail=%d", name, esnOn, tail), func(t *testing.T) {
					s.ESN = esnOn
					c, err := New(s)
					if err != nil {
						t.Fatal(err)
					}
					seq := uint64(5)<<32 | 7
					pkt, want := espPacket(c, 64, tail)
					for i := range testESP {
						pkt[i] = byte(i + 1)
					}
					before := append([]byte(nil), pkt[:testESP]...)
					c.Seal(pkt, testESP, seq)
					if !bytes.Equal(pkt[:testESP], before) {
						t.Fatalf("scratch before the header not restored: %x", pkt[:testESP])
					}
					enc := s.Encryption != ndis.EncryptionNone && s.Encryption != 0
					if got := pkt[testESP+8+c.IVLen() : testESP+8+c.IVLen()+64]; enc == bytes.Equal(got, want) {
						t.Fatalf("encrypting cipher=%v but payload plain=%v", enc, bytes.Equal(got, want))
					}
					sealed := append([]byte(nil), pkt...)
					if err := c.Open(pkt, testESP, seq); err != nil {
						t.Fatalf("Open: %v", err)
					}
					if got := pkt[testESP+8+c.IVLen() : testESP+8+c.IVLen()+64]; !bytes.Equal(got, want) {
						t.Fatalf("payload after Open = %x, want %x", got, want)
					}
					// Every single-bit change to the authenticated bytes fails.
					for _, i := range []int{testESP, testESP + 4, testESP + 8, len(sealed) - c.ICVLen() - 1, len(sealed) - 1} {
						bad := append([]byte(nil), sealed...)
						bad[i] ^= 0x10
						if err := c.Open(bad, testESP, seq); !errors.Is(err, ErrAuth) {
							t.Errorf("flipped byte %d: Open = %v, want ErrAuth", i, err)
						}
					}
					// The high bits count only with ESN.
					bad := append([]byte(nil), sealed...)
					err = c.Open(bad, testESP, seq+1<<32)
					if esnOn && !errors.Is(err, ErrAuth) {
						t.Errorf("ESN: other high bits verified: %v", err)
					}
					if !esnOn && err != nil {
						t.Errorf("no ESN: high bits must not matter: %v", err)
					}
				})
			}
		}
	}
}

func TestIVsDifferPerSequenceAndSA(t *testing.T) {
	for name, s := range specs() {
		if s.Encryption == ndis.EncryptionNone || s.Encryption == 0 {
			continue
		}
		c1, _ := New(s)
		c2, _ := New(s)
		ivs := map[string]bool{}
		for _, c := range []Cipher{c1, c2} {
			for seq := uint64(1); seq <= 50; seq++ {
				pkt, _ := espPacket(c, 32, 16)
				c.Seal(pkt, testESP, seq)
				iv := string(pkt[testESP+8 : testESP+8+c.IVLen()])
				if ivs[iv] {
					t.Fatalf("%s: IV repeated at seq %d", name, seq)
				}
				ivs[iv] = true
			}
		}
	}
}

func TestTruncatedGCMTagIsPrefix(t *testing.T) {
	k := key(20, 1)
	full, _ := New(Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: k})
	short, _ := New(Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: k, ICVLen: 8})
	iv := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	type sealer interface {
		sealIV([]byte, int, uint64, []byte)
	}
	p1, _ := espPacket(full, 32, 0)
	p2, _ := espPacket(short, 32, 0)
	built(full).(sealer).sealIV(p1, testESP, 9, iv)
	built(short).(sealer).sealIV(p2, testESP, 9, iv)
	if !bytes.Equal(p1[:len(p2)], p2) {
		t.Fatalf("8-byte ICV packet is not the 16-byte one truncated:\n%x\n%x", p1, p2)
	}
}

func TestNewRefuses(t *testing.T) {
	cases := []struct {
		name   string
		spec   Spec
		status ndis.Status
		reason string
	}{
		{"des", Spec{Encryption: ndis.EncryptionDESCBC, EncryptionKey: key(8, 1), Authentication: ndis.AuthenticationSHA1, AuthenticationKey: key(20, 1)}, ndis.StatusNotSupported, "legacy"},
		{"3des", Spec{Encryption: ndis.Encryption3DESCBC, EncryptionKey: key(24, 1), Authentication: ndis.AuthenticationSHA1, AuthenticationKey: key(20, 1)}, ndis.StatusNotSupported, "legacy"},
		{"md5", Spec{Encryption: ndis.EncryptionAESCBC128, EncryptionKey: key(16, 1), Authentication: ndis.AuthenticationMD5, AuthenticationKey: key(16, 1)}, ndis.StatusNotSupported, "legacy"},
		{"gcm short key", Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: key(16, 1)}, ndis.StatusInvalidParameter, "20-byte key"},
		{"gcm bad icv", Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: key(20, 1), ICVLen: 10}, ndis.StatusInvalidParameter, "8, 12 or 16"},
		{"gcm with auth", Spec{Encryption: ndis.EncryptionAESGCM128, EncryptionKey: key(20, 1), Authentication: ndis.AuthenticationSHA1}, ndis.StatusInvalidParameter, "combined-mode"},
		{"cbc without auth", Spec{Encryption: ndis.EncryptionAESCBC128, EncryptionKey: key(16, 1)}, ndis.StatusInvalidParameter, "integrity"},
		{"cbc wrong key", Spec{Encryption: ndis.EncryptionAESCBC256, EncryptionKey: key(16, 1), Authentication: ndis.AuthenticationSHA256, AuthenticationKey: key(32, 1)}, ndis.StatusInvalidParameter, "32-byte key"},
		{"hmac short key", Spec{Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationSHA256, AuthenticationKey: key(8, 1)}, ndis.StatusInvalidParameter, "16 to 256"},
		{"hmac bad trunc", Spec{Encryption: ndis.EncryptionNone, Authentication: ndis.AuthenticationSHA1, AuthenticationKey: key(20, 1), ICVLen: 24}, ndis.StatusInvalidParameter, "multiple of 4"},
		{"unknown enc", Spec{Encryption: 0x400, EncryptionKey: key(16, 1), Authentication: ndis.AuthenticationSHA1, AuthenticationKey: key(20, 1)}, ndis.StatusNotSupported, "unknown encryption"},
		{"unknown auth", Spec{Encryption: ndis.EncryptionAESCBC128, EncryptionKey: key(16, 1), Authentication: 0x40}, ndis.StatusNotSupported, "unknown authentication"},
		{"gmac with enc", Spec{Encryption: ndis.EncryptionAESCBC128, Authentication: ndis.AuthenticationAESGMAC128, AuthenticationKey: key(20, 1)}, ndis.StatusInvalidParameter, "integrity only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.spec)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := ndis.StatusOf(err); got != tc.status {
				t.Errorf("status %v, want %v (%v)", got, tc.status, err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tc.reason)) {
				t.Errorf("reason %q does not say %q", err, tc.reason)
			}
		})
	}
}

// built returns the key schedule of a Cipher from New, building it.
func built(c Cipher) Cipher { return c.(*lazyCipher).cipher() }

// TestWipe: Wipe clears the keys New copied and those of the key schedule
// built from them, and a wiped Cipher refuses to work.
func TestWipe(t *testing.T) {
	s := specs()["gcm128"]
	c, _ := New(s)
	a := built(c).(*aeadCipher)
	c.Wipe()
	for _, b := range append(append(a.key, a.salt[:]...), c.(*lazyCipher).spec.EncryptionKey...) {
		if b != 0 {
			t.Fatalf("key not wiped: %x %x %x", a.key, a.salt, c.(*lazyCipher).spec.EncryptionKey)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Seal with a wiped Cipher did not panic")
			}
		}()
		pkt := make([]byte, 128)
		c.Seal(pkt, 20, 1)
	}()
	s = specs()["cbc128-sha1"]
	c, _ = New(s)
	h := built(c).(*hmacCipher)
	c.Wipe()
	for _, b := range append(h.macKey, c.(*lazyCipher).spec.AuthenticationKey...) {
		if b != 0 {
			t.Fatalf("MAC key not wiped: %x %x", h.macKey, c.(*lazyCipher).spec.AuthenticationKey)
		}
	}
	// Never used: wiped without ever being built.
	c, _ = New(s)
	c.Wipe()
	if b := c.(*lazyCipher).built.Load(); b != wiped {
		t.Error("a Cipher wiped before its first packet can still build its key schedule")
	}
}

// TestLazyKeySchedule: New builds no key schedule; the first packet does,
// once, even when many packets race to it, and all of them use the same.
func TestLazyKeySchedule(t *testing.T) {
	c, err := New(specs()["gcm128"])
	if err != nil {
		t.Fatal(err)
	}
	l := c.(*lazyCipher)
	if l.built.Load() != nil {
		t.Fatal("New built the key schedule")
	}
	var wg sync.WaitGroup
	got := make([]Cipher, 8)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = l.cipher() }()
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[i] == nil {
			t.Fatalf("packets used different key schedules: %p %p", got[i], got[0])
		}
	}
}

func TestNoAllocs(t *testing.T) {
	if testutil.RaceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items)")
	}
	for name, s := range specs() {
		s.ESN = true
		c, _ := New(s)
		pkt, _ := espPacket(c, 1024, 64)
		c.Seal(pkt, testESP, 1) // warm the pools
		c.Open(pkt, testESP, 1)
		n := testing.AllocsPerRun(100, func() {
			c.Seal(pkt, testESP, 1)
			if err := c.Open(pkt, testESP, 1); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %.1f allocations per Seal+Open", name, n)
		}
	}
}
